"""The benchmark of issue 7: sayiir-grpc against its anchors, in one run.

    .venv/bin/python bench/run.py            # full comparison (under 10 minutes)
    .venv/bin/python bench/run.py --quick    # smoke run (about a minute)
    .venv/bin/python bench/run.py --publish  # also refresh docs/benchmarks.md, docs/bench/*.png, README

Scenarios through the service (a separate `sayiir-grpc serve` process, real
worker loops in this process, one gRPC client per worker): linear (4 steps),
fanout (pickup, 4 branches, join), signal-driven and sleeping (a wake
storm). Anchors, on the same PostgreSQL with the same workflow shape: the
service's store code in process (no gRPC), the sayiir 1.0.0 engine in
process and its distributed Worker fleet, and `pgbench -N` (the commit
ceiling). Each system gets a fresh database, dropped afterwards.

Writes bench/results/<stamp>/report.json, report.md and the PNG plots.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import engine  # noqa: E402
import fleet  # noqa: E402
import floor  # noqa: E402
import processes  # noqa: E402
import report  # noqa: E402
import workloads  # noqa: E402

import common  # noqa: E402
from common import REPO, CpuMeter, Progress, latency_block  # noqa: E402

LINEAR_STEPS = 4
MAIN_INFLIGHT = 32
MAIN_WORKERS = 4
FLEET_POLL_S = 0.01
# After the window, in-flight workflows get this long to finish (normally well under a second).
DRAIN_S = 5.0


def missing_packages(plots: bool) -> list[str]:
    wanted = ["psutil", "tqdm"] + (["matplotlib"] if plots else [])
    return [name for name in wanted if importlib.util.find_spec(name) is None]


# The database round trips of the service per linear workflow, as
# bench/floor.py models them: a save is one statement with its idempotency
# key (stores/snapshot_store.SAVE_SNAPSHOT_KEYED); a claim is one statement
# of the claims with their key (stores/dispatch.CLAIM_AVAILABLE_KEYED: a
# long poll looks for readiness first only when its first claim found
# nothing); a completion of a continued workflow is one statement
# (stores/continuation.py), pipelined with the others of its event-loop
# turn in one round trip. 6 statements in all, fewer round trips.
SERVICE_ROUND_TRIPS: dict[str, Any] = {
    "statements": {"Save": 1, "Claim": 1, "Complete": 1},
    "transaction": {"Save": False, "Claim": False, "Complete": False},
}


class Scale:
    """Durations (seconds) and sizes of one mode."""

    def __init__(self, quick: bool, factor: float) -> None:
        def d(full: float, fast: float) -> float:
            return max(1.0, round((fast if quick else full) * factor, 1))

        self.quick = quick
        self.warmup = d(3, 1)
        self.main = d(25, 5)
        self.standard = d(20, 4)
        self.sweep = d(10, 3)
        self.engine = d(15, 4)
        self.engine_one = d(10, 3)
        self.fleet = d(20, 5)
        self.fleet_one = d(10, 3)
        self.pgbench = d(15, 4)
        self.scenario = d(15, 4)
        self.sleepers = max(20, int((600 if not quick else 120) * factor))
        self.sleep_s = d(10, 4)
        self.sweep_points = [1, 8] if not quick else [1]


# -- one system on a fresh database --------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.admin = args.admin_url
        self.scale = Scale(args.quick, args.scale)
        self.fast_client = workloads.client_has_fast_path()
        self.fast_store = workloads.store_has_fast_path()
        self.runs: dict[str, Any] = {}

    def progress(self, label: str, seconds: float) -> Progress:
        return Progress(label, seconds, quiet=self.args.quiet)

    async def _database(self, label: str) -> str:
        return await common.create_database(self.admin, label)

    async def _finish_db(self, url: str, before: common.PgCounters, extra_reads: int) -> dict[str, Any]:
        after = await common.flush_and_read_counters(self.admin, url)
        tables = await _has_tables(url)
        completed = await common.count_completed(url) if tables else 0
        leftover = await common.leftover_claims(url) if tables else {}
        await common.drop_database(self.admin, url)
        commits = after.xact_commit - before.xact_commit - extra_reads
        return {
            "completed_in_db": completed,
            "transactions": commits,
            "write_transactions_cluster": after.next_xid - before.next_xid,
            "rollbacks": after.xact_rollback - before.xact_rollback,
            **leftover,
        }

    # -- the service and the in-process store ----------------------------------

    async def closed_loop(
        self,
        key: str,
        label: str,
        *,
        via: str,
        fast: bool,
        scenario: workloads.Scenario,
        inflight: int,
        workers: int,
        warmup: float,
        duration: float,
        probe: bool = False,
    ) -> dict[str, Any]:
        url = await self._database(key)
        service = None
        prober = None
        try:
            if via == "service":
                service = await asyncio.to_thread(common.start_service, url)
                ops: workloads.Ops = workloads.GrpcOps(service.target, fast)
                pid = service.pid
            else:
                ops = workloads.StoreOps(url, fast)
                pid = os.getpid()
                common.reset_peak_rss(pid)
            before = await common.read_counters(self.admin, url)
            run = workloads.Run(ops, scenario, workers, inflight, prefix=key)
            meter = CpuMeter(pid, common.db_name(url))
            client_meter = CpuMeter(os.getpid() if via == "service" else None, common.db_name(url))
            marks: dict[str, Any] = {}
            if probe and service is not None:
                prober = await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(HERE / "prober.py"),
                    "--target",
                    service.target,
                    "--delay",
                    str(warmup + 0.5),
                    "--duration",
                    str(duration - 1.0),
                    stdout=asyncio.subprocess.PIPE,
                )

            async def window_start() -> None:
                meter.start()
                client_meter.start()
                marks["xid0"] = (await common.read_counters(self.admin, url)).next_xid
                marks["others0"] = await common.other_sessions(self.admin, common.db_name(url))
                if service is not None:
                    marks["hist0"] = common.scrape_histogram(
                        service.metrics_url, "sayiir_grpc_call_duration_seconds", "LoadSnapshot"
                    )

            async def window_end() -> None:
                meter.stop()
                client_meter.stop()
                marks["xid1"] = (await common.read_counters(self.admin, url)).next_xid
                marks["others1"] = await common.other_sessions(self.admin, common.db_name(url))
                if service is not None:
                    marks["hist1"] = common.scrape_histogram(
                        service.metrics_url, "sayiir_grpc_call_duration_seconds", "LoadSnapshot"
                    )

            bar = self.progress(label, warmup + duration)
            outcome = await workloads.run_closed_loop(
                run,
                warmup,
                duration,
                on_tick=bar.update,
                on_window=window_start,
                on_window_end=window_end,
                drain_timeout=DRAIN_S,
            )
            stats = run.stats
            bar.update(stats.completed_total)
            bar.close(f"{stats.completed_window / duration:.0f} wf/s")
            probe_result: dict[str, Any] | None = None
            extra_reads = 0
            if prober is not None:
                out, _ = await asyncio.wait_for(prober.communicate(), 60)
                prober = None
                data = json.loads(out.decode().strip().splitlines()[-1])
                extra_reads = int(data["load_calls"]) + int(data["list_calls"])
                probe_result = {
                    "client": latency_block(data["latencies"]),
                    "server": common.histogram_summary(marks.get("hist0", {}), marks.get("hist1", {})),
                    "interval_ms": 10,
                    "samples": data["latencies"],
                }
            rss = common.peak_rss_mb(pid)
        finally:
            if prober is not None:
                with contextlib.suppress(ProcessLookupError):
                    prober.kill()
                await prober.wait()
            if service is not None:
                await asyncio.to_thread(service.stop)
        db = await self._finish_db(url, before, extra_reads)
        completed = max(1, stats.completed_total)
        calls = sum(ops.calls.values())
        result = {
            "system": label,
            "via": via,
            "path": "fast" if fast else "standard",
            "scenario": scenario.name,
            "workers": workers,
            "inflight": inflight,
            "window_s": duration,
            "completed_window": stats.completed_window,
            "completed_total": stats.completed_total,
            "drained": outcome["drained"],
            "unfinished_after_drain": outcome["unfinished"],
            "wf_per_s": round(stats.completed_window / duration, 1),
            "e2e": latency_block(stats.e2e),
            "pickup": latency_block(stats.pickup),
            "handoff": latency_block(stats.handoff),
            **{name: latency_block(values) for name, values in stats.extra.items()},
            "calls": dict(ops.calls),
            "calls_per_wf": round(calls / completed, 2),
            "empty_claims": ops.empty_claims,
            "lost_claims": ops.lost_claims,
            "errors": dict(run.errors),
            "call_latency": {name: latency_block(values) for name, values in sorted(ops.latency.items())},
            "call_samples": dict(ops.latency),
            "transactions_per_wf": round(db["transactions"] / completed, 2),
            "write_tx_per_wf": round(db["write_transactions_cluster"] / completed, 2),
            "write_tx_per_s_window": round((marks.get("xid1", 0) - marks.get("xid0", 0)) / duration, 1),
            "db": db,
            "process": "service" if via == "service" else "bench (in process)",
            "cpu_s": meter.process_cpu_s,
            "cpu_pct_of_core": _pct(meter.process_cpu_s, duration),
            "pg_cpu_s": meter.pg_cpu_s,
            "bench_client_cpu_s": client_meter.process_cpu_s,
            "machine_busy_pct": meter.machine_busy_pct,
            "unattributed_cores": _unattributed(meter, duration, meter.process_cpu_s, client_meter.process_cpu_s),
            "peak_rss_mb": rss,
            "other_active_sessions": max(marks.get("others0", 0), marks.get("others1", 0)),
        }
        if probe_result is not None:
            result["load_snapshot_probe"] = probe_result
        self.runs[key] = result
        return result

    async def sleeping(self, key: str, fast: bool) -> dict[str, Any]:
        s = self.scale
        url = await self._database(key)
        service = await asyncio.to_thread(common.start_service, url)
        try:
            before = await common.read_counters(self.admin, url)
            wake_at = time.time() + s.sleep_s
            scenario = workloads.Sleeping(wake_at)
            ops = workloads.GrpcOps(service.target, fast)
            run = workloads.Run(ops, scenario, MAIN_WORKERS, MAIN_INFLIGHT, poll=0.2, prefix=key)
            meter = CpuMeter(service.pid, common.db_name(url))
            meter.start()
            rss: dict[str, Any] = {}
            bar = self.progress(f"sleeping x{s.sleepers} (service)", s.sleep_s + 5)

            async def parked() -> None:
                rss["parked_rss_mb"] = _rss_now(service.pid)

            outcome = await workloads.run_sleeping(run, scenario, s.sleepers, on_tick=bar.update, on_parked=parked)
            meter.stop()
            bar.close(f"{run.stats.completed_total} woke")
            peak = common.peak_rss_mb(service.pid)
        finally:
            await asyncio.to_thread(service.stop)
        db = await self._finish_db(url, before, 0)
        wake = run.stats.extra.get("wake_to_done", [])
        storm_s = (max(wake) if wake else 0.0) or 1e-9
        completed = max(1, run.stats.completed_total)
        result = {
            "system": "service: sleeping + wake storm",
            "via": "service",
            "path": "fast" if fast else "standard",
            "scenario": "sleeping",
            "workers": MAIN_WORKERS,
            "workflows": s.sleepers,
            "sleep_s": s.sleep_s,
            "poll_s": run.poll,
            "completed_total": run.stats.completed_total,
            **outcome,
            "park_rate_wf_per_s": round(run.parked_count / max(outcome["park_s"], 1e-9), 1),
            "wake_storm_s": round(storm_s, 2),
            "wake_rate_wf_per_s": round(run.stats.completed_total / storm_s, 1),
            "wake_to_done": latency_block(wake),
            "calls": dict(ops.calls),
            "calls_per_wf": round(sum(ops.calls.values()) / completed, 2),
            "empty_claims": ops.empty_claims,
            "errors": dict(run.errors),
            "transactions_per_wf": round(db["transactions"] / completed, 2),
            "write_tx_per_wf": round(db["write_transactions_cluster"] / completed, 2),
            "db": db,
            "cpu_s": meter.process_cpu_s,
            "pg_cpu_s": meter.pg_cpu_s,
            "peak_rss_mb": peak,
            **rss,
        }
        self.runs[key] = result
        return result

    # -- the engine ---------------------------------------------------------

    async def engine_run(
        self, key: str, label: str, kind: str, concurrency: int, duration: float, shared_engine: bool = True
    ) -> dict[str, Any]:
        url = await self._database(key)
        pid = os.getpid()
        common.reset_peak_rss(pid)
        before = await common.read_counters(self.admin, url)
        meter = CpuMeter(pid, common.db_name(url))
        warmup = self.scale.warmup
        bar = self.progress(label, warmup + duration)
        loop = asyncio.get_running_loop()
        xids: dict[str, int] = {}

        def tick(done: int) -> None:
            bar.update(done)

        async def window_marks() -> None:
            await asyncio.sleep(warmup)
            meter.start()
            xids["0"] = (await common.read_counters(self.admin, url)).next_xid
            await asyncio.sleep(duration)
            meter.stop()
            xids["1"] = (await common.read_counters(self.admin, url)).next_xid

        marks = loop.create_task(window_marks())
        try:
            if kind == "in-process":
                res = await asyncio.to_thread(
                    engine.run_in_process, url, LINEAR_STEPS, concurrency, warmup, duration, tick, shared_engine
                )
            else:
                res = await asyncio.to_thread(
                    engine.run_fleet, url, LINEAR_STEPS, MAIN_WORKERS, concurrency, FLEET_POLL_S, warmup, duration, tick
                )
        finally:
            await marks
        summary = res.summary()
        bar.close(f"{summary['wf_per_s']:.0f} wf/s")
        db = await self._finish_db(url, before, 0)
        completed = max(1, res.completed_total)
        result = {
            "system": label,
            "via": "engine",
            "path": kind,
            "scenario": "linear",
            "workers": concurrency if kind == "in-process" else MAIN_WORKERS,
            "inflight": concurrency,
            **summary,
            "handoff": latency_block([]),
            "calls_per_wf": None,
            "transactions_per_wf": round(db["transactions"] / completed, 2),
            "write_tx_per_wf": round(db["write_transactions_cluster"] / completed, 2),
            "write_tx_per_s_window": round((xids.get("1", 0) - xids.get("0", 0)) / duration, 1),
            "db": db,
            "process": "bench (in process)",
            "cpu_s": meter.process_cpu_s,
            "cpu_pct_of_core": _pct(meter.process_cpu_s, duration),
            "pg_cpu_s": meter.pg_cpu_s,
            "machine_busy_pct": meter.machine_busy_pct,
            "unattributed_cores": _unattributed(meter, duration, meter.process_cpu_s, None),
            "peak_rss_mb": common.peak_rss_mb(pid),
            "fleet_poll_s": FLEET_POLL_S if kind == "fleet" else None,
        }
        self.runs[key] = result
        return result

    async def fleet_run(self, key: str) -> dict[str, Any]:
        duration = self.scale.fleet
        bar = self.progress(f"fleet: {key}", self.scale.warmup + duration)
        result: dict[str, Any] = await fleet.SYSTEMS[key](self.admin, self.scale.warmup, duration)
        bar.close(f"{result.get('wf_per_s', 0):.0f} wf/s")
        result["system"] = result["label"]
        self.runs[f"fleet_{key}"] = result
        return result

    async def processes_run(self) -> dict[str, Any]:
        """`--workers 1` against `--workers 2` on a load the service bounds (bench/processes.py)."""
        rounds = 1 if self.scale.quick else 2
        round_s = self.scale.fleet / 2
        bar = self.progress("more service processes: LoadSnapshot calls", rounds * 2 * (round_s + 5))
        result: dict[str, Any] = await asyncio.to_thread(
            processes.run, self.admin, rounds, min(2.0, self.scale.warmup), round_s, True
        )
        bar.close(f"--workers 2 / --workers 1: {result['summary']['ratio_2_to_1']}")
        result["system"] = "service --workers 1 and 2, LoadSnapshot calls"
        self.runs["processes"] = result
        return result

    async def floor_run(self, key: str = "floor", transport: str = "unary", sql: str = "select") -> dict[str, Any]:
        """The floor of the service's round trips (SERVICE_ROUND_TRIPS), its
        load clients laid out as the fleet's worker processes: `floor` with
        unary calls, `floor_session` with claims and completions as messages
        of a session stream, each statement `SELECT $1::bytea`; `floor_sql`
        as `floor_session`, with the service's own statements on a database
        of its own, whose PostgreSQL CPU it counts."""
        duration = self.scale.fleet
        what = "the service's statements" if sql == "service" else "SELECT $1"
        bar = self.progress(f"floor ({transport}, {what}): bare grpc.aio + asyncpg", self.scale.warmup + duration)
        result: dict[str, Any] = await asyncio.to_thread(
            functools.partial(
                floor.measure,
                self.admin,
                MAIN_INFLIGHT,
                self.scale.warmup,
                duration,
                transport=transport,
                sql=sql,
                client_processes=fleet.WORKER_PROCESSES,
                **SERVICE_ROUND_TRIPS,
            )
        )
        bar.close(f"{result['wf_per_s']:.0f} wf/s")
        result["system"] = result["label"]
        self.runs[key] = result
        return result

    # -- pgbench --------------------------------------------------------------

    async def pgbench(self, duration: float, clients: int = 16) -> dict[str, Any]:
        binary = shutil.which("pgbench") or _packaged_pgbench()
        if binary is None:
            result: dict[str, Any] = {"system": "pgbench -N", "skipped": "pgbench not found"}
            self.runs["pgbench"] = result
            return result
        url = await self._database("pgbench")
        parts = urllib.parse.urlsplit(url)
        base = [
            "-h",
            parts.hostname or "127.0.0.1",
            "-p",
            str(parts.port or 5432),
            "-U",
            urllib.parse.unquote(parts.username or "postgres"),
        ]
        name = common.db_name(url)
        bar = self.progress(f"pgbench -N, {clients} clients", duration + 2)
        try:
            init = await asyncio.create_subprocess_exec(
                binary,
                "-i",
                "-s",
                "1",
                "-q",
                *base,
                name,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            await init.communicate()
            proc = await asyncio.create_subprocess_exec(
                binary,
                "-n",
                "-N",
                "-c",
                str(clients),
                "-j",
                "2",
                "-T",
                str(max(1, round(duration))),
                *base,
                name,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            started = time.monotonic()
            waiter = asyncio.create_task(proc.communicate())
            while not waiter.done():
                await asyncio.sleep(0.25)
                bar.update(0)
            out, err = await waiter
            text = out.decode() + err.decode()
            match = re.search(r"tps = ([\d.]+) \(without initial connection time\)", text) or re.search(
                r"tps = ([\d.]+)", text
            )
            tps = float(match.group(1)) if match else None
            bar.close(f"{tps or 0:.0f} tps")
        finally:
            await common.drop_database(self.admin, url)
        result = {
            "system": f"pgbench -N, {clients} clients",
            "clients": clients,
            "duration_s": round(time.monotonic() - started, 1),
            "tps": tps,
            "scale": 1,
        }
        if tps is None:
            result["output"] = text[-2000:]
        self.runs["pgbench"] = result
        return result


def _packaged_pgbench() -> str | None:
    """pgbench of the newest PostgreSQL under /usr/lib/postgresql (Debian layout)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pgbench"), reverse=True)
    return str(found[0]) if found else None


async def _has_tables(url: str) -> bool:
    import asyncpg

    conn = await asyncpg.connect(url, timeout=10)
    try:
        return bool(await conn.fetchval("SELECT to_regclass('sayiir_workflow_snapshots') IS NOT NULL"))
    finally:
        await conn.close()


def _unattributed(meter: CpuMeter, seconds: float, *processes: float | None) -> float | None:
    """Cores busy in the window beyond the measured processes and this database's
    PostgreSQL backends: other work on the machine (noise), or PostgreSQL's own
    background processes (WAL writer, checkpointer)."""
    if meter.machine_busy_pct is None or not seconds:
        return None
    busy = meter.machine_busy_pct / 100.0 * (os.cpu_count() or 1)
    known = (sum(p for p in processes if p) + (meter.pg_cpu_s or 0.0)) / seconds
    return round(busy - known, 2)


def _pct(cpu_s: float | None, seconds: float) -> float | None:
    return None if cpu_s is None or not seconds else round(100.0 * cpu_s / seconds, 1)


def _rss_now(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+) kB", text, re.MULTILINE)
    return None if match is None else round(int(match.group(1)) / 1024.0, 1)


# -- the plan ---------------------------------------------------------------------


async def run_all(bench: Bench) -> None:
    s = bench.scale
    linear = workloads.Linear(LINEAR_STEPS)
    primary_fast = bench.fast_client
    label_main = "service, fast path" if primary_fast else "service, standard calls"
    steps: list[tuple[str, Callable[[], Awaitable[Any]]]] = []

    def add(name: str, fn: Callable[[], Awaitable[Any]]) -> None:
        steps.append((name, fn))

    add("pgbench", lambda: bench.pgbench(s.pgbench))
    # The headline: linear, 4 steps, 32 in flight, 4 workers, with the load_snapshot probe.
    add(
        "service",
        lambda: bench.closed_loop(
            "service",
            label_main,
            via="service",
            fast=primary_fast,
            scenario=linear,
            inflight=MAIN_INFLIGHT,
            workers=MAIN_WORKERS,
            warmup=s.warmup,
            duration=s.main,
            probe=True,
        ),
    )
    if primary_fast:
        add(
            "service_standard",
            lambda: bench.closed_loop(
                "service_standard",
                "service, standard calls",
                via="service",
                fast=False,
                scenario=linear,
                inflight=MAIN_INFLIGHT,
                workers=MAIN_WORKERS,
                warmup=s.warmup,
                duration=s.standard,
            ),
        )
    store_fast = primary_fast and bench.fast_store
    add(
        "store",
        lambda: bench.closed_loop(
            "store",
            "store code in process" + (", fast path" if store_fast else ", standard calls"),
            via="store",
            fast=store_fast,
            scenario=linear,
            inflight=MAIN_INFLIGHT,
            workers=MAIN_WORKERS,
            warmup=s.warmup,
            duration=s.standard,
        ),
    )
    if store_fast:
        add(
            "store_standard",
            lambda: bench.closed_loop(
                "store_standard",
                "store code in process, standard calls",
                via="store",
                fast=False,
                scenario=linear,
                inflight=MAIN_INFLIGHT,
                workers=MAIN_WORKERS,
                warmup=s.warmup,
                duration=s.standard,
            ),
        )
    add("engine_1", lambda: bench.engine_run("engine_1", "engine in process, 1 thread", "in-process", 1, s.engine_one))
    add(
        "engine_32",
        lambda: bench.engine_run(
            "engine_32", f"engine in process, {MAIN_INFLIGHT} threads", "in-process", MAIN_INFLIGHT, s.engine
        ),
    )
    if not s.quick:
        add(
            "engine_rdw_1",
            lambda: bench.engine_run(
                "engine_rdw_1",
                "engine, run_durable_workflow() per call",
                "in-process",
                1,
                s.engine_one,
                shared_engine=False,
            ),
        )
    add("fleet_1", lambda: bench.engine_run("fleet_1", "engine Worker fleet, 1 in flight", "fleet", 1, s.fleet_one))
    add(
        "fleet_32",
        lambda: bench.engine_run(
            "fleet_32", f"engine Worker fleet, {MAIN_INFLIGHT} in flight", "fleet", MAIN_INFLIGHT, s.fleet
        ),
    )
    # The sweep (32 in flight is the main run above).
    for n in s.sweep_points:
        workers = min(MAIN_WORKERS, n)
        add(
            f"service_sweep_{n}",
            lambda n=n, workers=workers: bench.closed_loop(
                f"service_sweep_{n}",
                f"{label_main}, {n} in flight",
                via="service",
                fast=primary_fast,
                scenario=linear,
                inflight=n,
                workers=workers,
                warmup=s.warmup,
                duration=s.sweep,
            ),
        )
        add(
            f"store_sweep_{n}",
            lambda n=n, workers=workers: bench.closed_loop(
                f"store_sweep_{n}",
                f"store in process, {n} in flight",
                via="store",
                fast=store_fast,
                scenario=linear,
                inflight=n,
                workers=workers,
                warmup=s.warmup,
                duration=s.sweep,
            ),
        )
        if n == 8 and not s.quick:
            add(
                "engine_8",
                lambda: bench.engine_run("engine_8", "engine in process, 8 threads", "in-process", 8, s.sweep),
            )
            add("fleet_8", lambda: bench.engine_run("fleet_8", "engine Worker fleet, 8 in flight", "fleet", 8, s.sweep))
    # The other scenarios, through the service.
    for key, scenario in (("fanout", workloads.Fanout(4)), ("signal", workloads.SignalDriven())):
        add(
            key,
            lambda key=key, scenario=scenario: bench.closed_loop(
                key,
                f"service: {scenario.name}",
                via="service",
                fast=primary_fast,
                scenario=scenario,
                inflight=MAIN_INFLIGHT,
                workers=MAIN_WORKERS,
                warmup=s.warmup,
                duration=s.scenario,
            ),
        )
    add("sleeping", lambda: bench.sleeping("sleeping", primary_fast))
    # Issue 14: every system as separate processes, CPU per workflow by role.
    for key in fleet.SYSTEMS:
        add(f"fleet_{key}", lambda key=key: bench.fleet_run(key))
    add("floor", lambda: bench.floor_run())
    add("floor_session", lambda: bench.floor_run("floor_session", "stream"))
    add("floor_sql", lambda: bench.floor_run("floor_sql", "stream", "service"))
    add("processes", lambda: bench.processes_run())

    only = [o.strip() for o in bench.args.only.split(",")] if bench.args.only else None
    for name, fn in steps:
        if only is not None and not any(name == o or (o.endswith("*") and name.startswith(o[:-1])) for o in only):
            continue
        try:
            await fn()
        except Exception as exc:
            bench.runs[name] = {"system": name, "failed": f"{type(exc).__name__}: {exc}"}
            print(f"\n{name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)


def machine() -> dict[str, Any]:
    import grpc
    import psutil

    def version(pkg: str) -> str | None:
        from importlib.metadata import PackageNotFoundError
        from importlib.metadata import version as v

        try:
            return v(pkg)
        except PackageNotFoundError:
            return None

    cpu = None
    with contextlib.suppress(OSError):
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.MULTILINE)
        cpu = m.group(1) if m else None
    commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain"], capture_output=True, text=True)
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "sayiir": version("sayiir"),
        "sayiir_grpc": version("sayiir-grpc"),
        "git": commit.stdout.strip() + (" (with local changes)" if dirty.stdout.strip() else ""),
        "python_loop_ms": python_loop_ms(),
    }


def python_loop_ms() -> float:
    """CPU ms of one fixed pure-Python loop (10 million additions), the best
    of 3: how fast this machine runs Python on the day of the run. Every
    CPU figure of a run moves with it; the engine fleet's throughput, bound
    by its 10 ms poll, much less, so ratios against it do too."""
    best = float("inf")
    for _ in range(3):
        started, total = time.process_time(), 0
        for i in range(10_000_000):
            total += i
        best = min(best, time.process_time() - started)
    return round(1000 * best, 1)


async def pg_version(admin: str) -> str:
    import asyncpg

    conn = await asyncpg.connect(admin, timeout=10)
    try:
        settings = {
            r["name"]: r["setting"]
            for r in await conn.fetch(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('fsync', 'synchronous_commit', 'shared_buffers', 'max_connections', 'wal_level')"
            )
        }
        return str(await conn.fetchval("SHOW server_version")) + " " + json.dumps(settings)
    finally:
        await conn.close()


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    bench = Bench(args)
    started = time.monotonic()
    meta = {
        "command": args.command_line,
        "mode": "quick" if args.quick else "full",
        "scale": args.scale,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "postgres": await pg_version(bench.admin),
        "fast_path": {"client": bench.fast_client, "store": bench.fast_store},
        "shape": {
            "linear_steps": LINEAR_STEPS,
            "inflight": MAIN_INFLIGHT,
            "workers": MAIN_WORKERS,
            "fleet_poll_s": FLEET_POLL_S,
        },
    }
    await run_all(bench)
    meta["elapsed_s"] = round(time.monotonic() - started, 1)
    return {"meta": meta, "runs": bench.runs}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="short smoke run (about a minute)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every duration and size (tests use 0.3)")
    parser.add_argument("--admin-url", default=common.DEFAULT_ADMIN_URL, help="a maintenance database URL")
    parser.add_argument("--out", default=None, help="output directory (default bench/results/<stamp>)")
    parser.add_argument(
        "--only", default=None, help="comma-separated run names (service,store,engine_1,...; a trailing * = prefix)"
    )
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots (no matplotlib needed)")
    parser.add_argument("--publish", action="store_true", help="refresh docs/benchmarks.md, docs/bench/ and README")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    args.command_line = ".venv/bin/python bench/run.py" + "".join(f" {a}" for a in (argv or sys.argv[1:]))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_packages(not args.no_plots)
    if missing:
        print(
            f"bench: missing Python package(s): {', '.join(missing)}.\n"
            f"Install them with:  .venv/bin/pip install -e '.[bench]'"
            + ("\n(or run with --no-plots to skip the plots)" if "matplotlib" in missing else ""),
            file=sys.stderr,
        )
        if "matplotlib" in missing or "psutil" in missing:
            return 2
        print("bench: going on with a plain progress line", file=sys.stderr)
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = Path(args.out) if args.out else HERE / "results" / stamp
    out.mkdir(parents=True, exist_ok=True)
    from sayiir_grpc.log_setup import configure

    configure("WARNING")  # the in-process store anchor would log at info
    from sayiir_grpc.cli import run_event_loop

    data = run_event_loop(main_async(args))
    data["summary"] = report.summarise(data)
    (out / "report.json").write_text(json.dumps(report.without_samples(data), indent=2) + "\n")
    pngs = [] if args.no_plots else report.plots(data, out)
    markdown = report.markdown(data, [p.name for p in pngs])
    (out / "report.md").write_text(markdown)
    print(markdown)
    print(f"report: {out / 'report.json'}, {out / 'report.md'}" + (f", {len(pngs)} plot(s)" if pngs else ""))
    if args.publish:
        report.publish(data, out, pngs)
        print("published to docs/benchmarks.md, docs/bench/ and README.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
