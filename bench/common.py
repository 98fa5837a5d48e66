"""Shared pieces of the benchmark: databases, statistics, process metering,
the service subprocess and the progress line.

Everything here is measurement plumbing; the workloads live in
`workloads.py` (service and in-process store) and `engine.py` (sayiir 1.0.0).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import psutil

REPO = Path(__file__).resolve().parent.parent
DEFAULT_ADMIN_URL = os.environ.get("SAYIIR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


# -- statistics ----------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1000.0, 2)


def latency_block(values: list[float]) -> dict[str, Any]:
    """count, p50, p90, p99, max in milliseconds."""
    return {
        "count": len(values),
        "p50_ms": ms(percentile(values, 0.50)),
        "p90_ms": ms(percentile(values, 0.90)),
        "p99_ms": ms(percentile(values, 0.99)),
        "max_ms": ms(max(values) if values else None),
    }


# -- databases -------------------------------------------------------------------


def database_url(admin_url: str, name: str) -> str:
    base, _, _ = admin_url.rpartition("/")
    return f"{base}/{name}"


async def create_database(admin_url: str, prefix: str) -> str:
    name = f"bench_{prefix}_{uuid.uuid4().hex[:8]}"
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return database_url(admin_url, name)


def db_name(url: str) -> str:
    return url.rpartition("/")[2].partition("?")[0]


async def drop_database(admin_url: str, url: str) -> None:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{db_name(url)}" WITH (FORCE)')
    finally:
        await conn.close()


@dataclass
class PgCounters:
    """pg_stat_database counters of one database, plus the cluster's next xid."""

    xact_commit: int
    xact_rollback: int
    next_xid: int
    at: float


async def read_counters(admin_url: str, url: str) -> PgCounters:
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        row = await conn.fetchrow(
            "SELECT xact_commit, xact_rollback, pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS next_xid "
            "FROM pg_stat_database WHERE datname = $1",
            db_name(url),
        )
    finally:
        await conn.close()
    assert row is not None
    return PgCounters(int(row["xact_commit"]), int(row["xact_rollback"]), int(row["next_xid"]), time.monotonic())


async def flush_and_read_counters(admin_url: str, url: str) -> PgCounters:
    """Terminate the database's backends (each flushes its statistics as it
    exits), then read the counters: the whole run's transactions, counted."""
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
            db_name(url),
        )
        for _ in range(50):
            left = await conn.fetchval("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", db_name(url))
            if not left:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.2)
    finally:
        await conn.close()
    return await read_counters(admin_url, url)


async def other_sessions(admin_url: str, own_db: str) -> int:
    """Active backends of other databases right now (a noisy neighbour check)."""
    conn = await asyncpg.connect(admin_url, timeout=10)
    try:
        value = await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND datname IS NOT NULL "
            "AND datname <> $1 AND pid <> pg_backend_pid()",
            own_db,
        )
    finally:
        await conn.close()
    return int(value or 0)


async def count_completed(url: str) -> int:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM sayiir_workflow_snapshots WHERE status = 'Completed'"))
    finally:
        await conn.close()


async def leftover_claims(url: str) -> dict[str, int]:
    """What the run left behind once every worker stopped: in-progress
    workflows, and claims still held on them (a claim nobody works on)."""
    conn = await asyncpg.connect(url, timeout=10)
    try:
        row = await conn.fetchrow(
            "SELECT (SELECT count(*) FROM sayiir_workflow_snapshots WHERE status = 'InProgress') AS in_progress, "
            "(SELECT count(*) FROM sayiir_workflow_claims c JOIN sayiir_workflow_snapshots s USING (instance_id) "
            " WHERE s.status = 'InProgress' AND (c.expires_at IS NULL OR c.expires_at > now())) AS live_claims"
        )
    finally:
        await conn.close()
    return {"in_progress_at_end": int(row["in_progress"]), "live_claims_at_end": int(row["live_claims"])}


# -- process metering ------------------------------------------------------------


def _cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def peak_rss_mb(pid: int) -> float | None:
    """VmHWM (the peak resident set) of a process, in MiB."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmHWM:\s+(\d+) kB", text, re.MULTILINE)
    return None if match is None else round(int(match.group(1)) / 1024.0, 1)


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux: write 5 to clear_refs)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _postgres_backends(name: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            cmdline = " ".join(proc.info["cmdline"] or [])
        except (psutil.Error, TypeError):
            continue
        if cmdline.startswith("postgres:") and f" {name} " in cmdline:
            found.append(proc)
    return found


@dataclass
class CpuMeter:
    """CPU seconds of a process, of one database's PostgreSQL backends and of
    the whole machine, between start() and stop()."""

    pid: int | None
    database: str
    process_cpu_s: float | None = None
    pg_cpu_s: float | None = None
    machine_busy_pct: float | None = None
    _start: dict[str, Any] = field(default_factory=dict)

    def _pg(self) -> dict[int, float]:
        values: dict[int, float] = {}
        for proc in _postgres_backends(self.database):
            with contextlib.suppress(psutil.Error):
                values[proc.pid] = _cpu_seconds(proc)
        return values

    def start(self) -> None:
        self._start = {
            "proc": _cpu_seconds(psutil.Process(self.pid)) if self.pid else None,
            "pg": self._pg(),
            "machine": psutil.cpu_times(),
            "at": time.monotonic(),
        }

    def stop(self) -> None:
        if self.pid and self._start.get("proc") is not None:
            with contextlib.suppress(psutil.Error):
                self.process_cpu_s = round(_cpu_seconds(psutil.Process(self.pid)) - self._start["proc"], 2)
        before: dict[int, float] = self._start["pg"]
        self.pg_cpu_s = round(sum(v - before.get(pid, 0.0) for pid, v in self._pg().items()), 2)
        now = psutil.cpu_times()
        then = self._start["machine"]
        total = sum(now) - sum(then)
        idle = (now.idle + getattr(now, "iowait", 0.0)) - (then.idle + getattr(then, "iowait", 0.0))
        self.machine_busy_pct = round(100.0 * (total - idle) / total, 1) if total > 0 else None


# -- the service under test ------------------------------------------------------


@dataclass
class ServiceProcess:
    """`sayiir-grpc serve` as a child process."""

    process: subprocess.Popen[str]
    target: str
    metrics_url: str | None

    @property
    def pid(self) -> int:
        return self.process.pid

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _service_binary() -> list[str]:
    script = Path(sys.executable).parent / "sayiir-grpc"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "sayiir_grpc"]


def start_service(url: str, extra_args: list[str] | None = None, timeout: float = 30.0) -> ServiceProcess:
    """Start the service on free ports and wait until it listens."""
    command = [
        *_service_binary(),
        "serve",
        "--database-url",
        url,
        "--listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--log-level",
        "warning",
        *(extra_args or []),
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SAYIIR_")}
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    target = metrics = None
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if m := re.search(r"listening on (\S+)", line):
            target = m.group(1)
        if m := re.search(r"metrics on (http://\S+)", line):
            metrics = m.group(1)
        if target and metrics:
            break
    if target is None:
        process.kill()
        err = process.stderr.read() if process.stderr else ""
        raise RuntimeError(f"the service did not start: {''.join(lines)} {err[-2000:]}")
    # Keep draining the pipes so the child never blocks on a full one.
    for stream in (process.stdout, process.stderr):
        threading.Thread(target=_drain, args=(stream,), daemon=True).start()
    return ServiceProcess(process, target, metrics)


def _drain(stream: Any) -> None:
    with contextlib.suppress(Exception):
        for _ in stream:
            pass


def scrape_histogram(metrics_url: str | None, metric: str, method: str) -> dict[str, float]:
    """Cumulative bucket counts {le: count} of one method's latency histogram."""
    if metrics_url is None:
        return {}
    import urllib.request

    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return {}
    buckets: dict[str, float] = {}
    pattern = re.compile(rf"^{metric}_bucket\{{(.*?)\}} (\S+)$", re.MULTILINE)
    for labels, value in pattern.findall(text):
        le = re.search(r'le="([^"]+)"', labels)
        if f'method="{method}"' in labels and le:
            buckets[le.group(1)] = float(value)
    return buckets


def histogram_summary(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """Server-side view from two scrapes: count, share under 5 ms, and the
    bucket the p99 falls in."""
    delta = {le: after.get(le, 0.0) - before.get(le, 0.0) for le in after}
    total = delta.get("+Inf", 0.0)
    if total <= 0:
        return {"count": 0}
    bounds = sorted((float(le), n) for le, n in delta.items() if le != "+Inf")
    under_5ms = next((n for le, n in bounds if abs(le - 0.005) < 1e-9), None)
    p99_bucket = next((le for le, n in bounds if n >= 0.99 * total), float("inf"))
    return {
        "count": int(total),
        "share_under_5ms": None if under_5ms is None else round(under_5ms / total, 4),
        "p99_at_most_ms": None if p99_bucket == float("inf") else round(p99_bucket * 1000, 2),
    }


# -- progress ------------------------------------------------------------------


class Progress:
    """One line per measured run: tqdm when installed, else a plain \\r line."""

    def __init__(self, label: str, seconds: float, quiet: bool = False) -> None:
        self.label = label
        self.seconds = seconds
        self.quiet = quiet
        self.started = time.monotonic()
        self._bar: Any = None
        self.tty = sys.stderr.isatty()
        if quiet or not self.tty:
            return
        try:
            from tqdm import tqdm
        except ImportError:
            self._bar = None
        else:
            self._bar = tqdm(
                total=round(seconds, 1),
                desc=f"{label:<34}",
                unit="s",
                bar_format="{desc} {bar:20} {n:>5.1f}/{total:.0f}s {postfix}",
                leave=True,
                file=sys.stderr,
            )

    def update(self, completed: int) -> None:
        if self.quiet or not self.tty:
            return
        elapsed = time.monotonic() - self.started
        rate = completed / elapsed if elapsed > 0 else 0.0
        if self._bar is not None:
            self._bar.n = round(min(elapsed, self.seconds), 1)
            self._bar.set_postfix_str(f"{completed} wf, {rate:.0f} wf/s", refresh=True)
        else:
            sys.stderr.write(f"\r{self.label:<34} {elapsed:5.1f}/{self.seconds:.0f}s  {completed} wf, {rate:.0f} wf/s")
            sys.stderr.flush()

    def close(self, note: str = "") -> None:
        if self.quiet:
            return
        if not self.tty:
            sys.stderr.write(f"{self.label:<40} {time.monotonic() - self.started:6.1f} s  {note}\n")
            sys.stderr.flush()
        elif self._bar is not None:
            if note:
                self._bar.set_postfix_str(note, refresh=True)
            self._bar.close()
        else:
            sys.stderr.write(f"  {note}\n")
            sys.stderr.flush()


@contextlib.contextmanager
def progress_thread(progress: Progress, counter: Any, interval: float = 0.5) -> Iterator[None]:
    """Update `progress` from a thread with counter() every `interval` seconds."""
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(interval):
            progress.update(counter())

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        progress.update(counter())
