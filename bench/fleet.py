"""Issue 14's comparison: every system as separate processes, CPU per workflow by role.

Linear workflows of 4 steps, 32 in flight, 4 worker processes, each system on
a fresh database of the same PostgreSQL. Every process of a system is metered
separately (user + system CPU over the measured window, from /proc):

- **server**: `sayiir-grpc serve` (with `--workers N`, the supervisor and its
  N server processes);
- **workers**: the 4 worker processes;
- **submitter**: this harness process (it keeps 32 workflows in flight);
- **PostgreSQL**: the backends serving the run's database
  (`pg_stat_activity.datname`, their /proc times).

Systems (rows): the service with `--workers 1` and `--workers 2` (Python
worker processes on the fast path: long-poll `claim_tasks`, then
`complete_task_and_continue` step after step, so a linear workflow costs one
claim), a DBOS queue fleet (4 worker processes, each its own `executor_id`,
its default 1 s queue polling; the pinned `dbos` 3.x), and DBOS in process
(8 threads). Workers report each finished workflow to the harness with one
loopback datagram, which starts the next one.

    .venv/bin/python bench/fleet.py                       # all rows, ~2 minutes
    .venv/bin/python bench/fleet.py --only service_w1 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

STEPS = 4
INFLIGHT = 32
WORKER_PROCESSES = 4
CLAIM_TTL_S = 30.0
LONG_POLL_S = 1.0
DBOS_THREADS = 8
# The service's pool budget for the whole run (max_connections is shared).
SERVICE_POOL = 12
DBOS_POOL = 4


def step_ids() -> list[Any]:
    from sayiir_client import TaskId

    return [TaskId.sha256(f"step-{i}") for i in range(1, STEPS + 1)]


# -- the worker processes ---------------------------------------------------------


# This process's worker sessions: their message counts are written out on SIGTERM.
SESSIONS: list[Any] = []


def _write_session_counts(path: str | None) -> None:
    if path:
        counts = {
            # getattr: the same harness drives older clients, which count nothing.
            "messages": sum(getattr(s, "messages_written", 0) for s in SESSIONS),
            "requests": sum(getattr(s, "requests_written", 0) for s in SESSIONS),
        }
        Path(path).write_text(json.dumps(counts))


def _reporter(port: int) -> Callable[[str], None]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def done(instance_id: str) -> None:
        sock.sendto(instance_id.encode(), ("127.0.0.1", port))

    return done


async def _service_worker(target: str, worker_id: str, report_port: int, concurrency: int, session: bool) -> None:
    """A fast-path worker: long-poll for tasks, keep each workflow to its end;
    on a worker session (one stream), or with unary calls."""
    from sayiir_client import connect

    steps = step_ids()
    following = dict(itertools.pairwise(steps))
    done = _reporter(report_port)

    async with contextlib.AsyncExitStack() as stack:
        backend = await stack.enter_async_context(connect(target, watch_wakeups=False))
        client: Any = await stack.enter_async_context(backend.worker_session()) if session else backend
        if session:
            SESSIONS.append(client)

        async def run(task: Any) -> None:
            while task is not None:
                output = str(int(task.input or b"0") + 1).encode()
                after = following.get(task.task_id)
                if after is None:
                    await client.complete_task(task.instance_id, task.task_id, worker_id, output)
                    done(task.instance_id)
                    return
                _, task = await client.complete_task_and_continue(
                    task.instance_id, task.task_id, worker_id, output, after, CLAIM_TTL_S
                )

        running: set[asyncio.Task[None]] = set()
        # Set when a workflow ends: room for another (cheaper than an
        # asyncio.wait over every running job each time).
        freed = asyncio.Event()

        def finished(job: asyncio.Task[None]) -> None:
            running.discard(job)
            freed.set()

        while True:
            room = concurrency - len(running)
            if room <= 0:
                freed.clear()
                await freed.wait()
                continue
            for task in await client.claim_tasks(worker_id, room, CLAIM_TTL_S, wait=LONG_POLL_S):
                job = asyncio.create_task(run(task))
                running.add(job)
                job.add_done_callback(finished)


async def _classic_worker(target: str, worker_id: str, report_port: int, concurrency: int) -> None:
    """The loop of issue 7's bench, as a process: woken by the wakeup stream,
    `claim_available_tasks` (full snapshots), one `complete_task` per step;
    every step goes back through dispatch."""
    from sayiir_client import connect

    steps = step_ids()
    following = dict(itertools.pairwise(steps))
    done = _reporter(report_port)
    async with connect(target) as client:
        while True:
            client.drop_wakeups()
            tasks = await client.claim_available_tasks(worker_id, concurrency, CLAIM_TTL_S)
            if not tasks:
                await client.wait_for_wakeup(0.5)
                continue

            async def run(task: Any) -> None:
                output = str(int(task.input or b"0") + 1).encode()
                after = following.get(task.task_id)
                await client.complete_task(task.instance_id, task.task_id, worker_id, output, next_task_id=after)
                if after is None:
                    done(task.instance_id)

            await asyncio.gather(*(run(task) for task in tasks))


def _dbos_app(url: str, executor_id: str, report_port: int | None) -> Any:
    from dbos import DBOS

    report = _reporter(report_port) if report_port else None
    DBOS(
        config={
            "name": "sayiir-bench",
            "system_database_url": url,
            "executor_id": executor_id,
            "sys_db_pool_size": DBOS_POOL,
            "log_level": "WARNING",
        }
    )

    @DBOS.step(name="step")
    def step(x: int) -> int:
        return x + 1

    @DBOS.workflow(name="linear")
    def linear(x: int) -> int:
        for _ in range(STEPS):
            x = step(x)
        if report is not None:
            report(DBOS.workflow_id or "")
        return x

    DBOS.launch()
    DBOS.register_queue("bench", worker_concurrency=INFLIGHT // WORKER_PROCESSES)
    return linear


def _dbos_in_process(url: str, report_port: int, threads: int) -> None:
    linear = _dbos_app(url, "in-process", None)
    report = _reporter(report_port)

    def loop() -> None:
        while True:
            linear(0)
            report("x")

    for _ in range(threads):
        threading.Thread(target=loop, daemon=True).start()
    threading.Event().wait()


CHILD_ROLES = ("service-worker", "service-worker-unary", "service-worker-classic", "dbos-worker", "dbos-in-process")


def child_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=CHILD_ROLES)
    parser.add_argument("--target")
    parser.add_argument("--url")
    parser.add_argument("--id", default="w")
    parser.add_argument("--report-port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=INFLIGHT // WORKER_PROCESSES)
    parser.add_argument("--counts-file", help="where a service worker writes its session's message counts on SIGTERM")
    args = parser.parse_args(argv)

    def stop(*_: object) -> None:
        _write_session_counts(args.counts_file)
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    if args.role in ("service-worker", "service-worker-unary"):
        from sayiir_grpc.cli import run_event_loop

        session = args.role == "service-worker"
        run_event_loop(_service_worker(args.target, args.id, args.report_port, args.concurrency, session))
    elif args.role == "service-worker-classic":
        from sayiir_grpc.cli import run_event_loop

        run_event_loop(_classic_worker(args.target, args.id, args.report_port, args.concurrency))
    elif args.role == "dbos-worker":
        _dbos_app(args.url, args.id, args.report_port)
        threading.Event().wait()
    else:
        _dbos_in_process(args.url, args.report_port, DBOS_THREADS)


# -- metering -------------------------------------------------------------------


def _cpu_of(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    import psutil

    total = 0.0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
    except psutil.Error:
        pass
    return total


@dataclass
class Roles:
    """Process ids per role; CPU seconds read for all of them at once."""

    pids: dict[str, list[int]]
    database: str

    def read(self) -> dict[str, float]:
        import psutil

        import common

        values = {role: sum(_cpu_of(pid) for pid in pids) for role, pids in self.pids.items()}
        own = psutil.Process().cpu_times()  # this process alone: submitting and counting
        values["submitter"] = own.user + own.system
        values["postgres"] = sum(
            t.user + t.system for t in (_safe_times(p) for p in common._postgres_backends(self.database)) if t
        )
        return values


def _requests_per_message(files: list[Path]) -> float | None:
    """The workers' requests per session message, over their whole run."""
    counts = [json.loads(f.read_text()) for f in files if f.exists()]
    messages = sum(c["messages"] for c in counts)
    return round(sum(c["requests"] for c in counts) / messages, 2) if messages else None


def _safe_times(proc: Any) -> Any:
    import psutil

    try:
        return proc.cpu_times()
    except psutil.Error:
        return None


# -- one system --------------------------------------------------------------------


@dataclass
class Completions(asyncio.DatagramProtocol):
    """Finished workflows, as datagrams from the workers."""

    count: int = 0
    waiter: asyncio.Queue[str] = field(default_factory=asyncio.Queue)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.count += 1
        self.waiter.put_nowait(data.decode())


def _spawn(args: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _stop(processes: list[subprocess.Popen[bytes]]) -> None:
    for proc in processes:
        if proc.poll() is None:
            proc.terminate()
    for proc in processes:
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def _measure(
    label: str,
    roles: Roles,
    completions: Completions,
    submit: Callable[[int], Any],
    warmup: float,
    duration: float,
    tail: float = 0.0,
) -> dict[str, Any]:
    """Keep INFLIGHT workflows going; meter the window after the warm-up.
    The load goes on `tail` seconds more (for the load_snapshot probe)."""
    submitted = 0
    submitting: set[asyncio.Task[Any]] = set()

    async def refill() -> None:
        # Each finished workflow is replaced at once, not after the
        # replacements before it: a serial refill would hold workflows out
        # of flight, and measure the submitter's latency instead of the system.
        nonlocal submitted
        while True:
            await completions.waiter.get()
            submitted += 1
            job = asyncio.create_task(submit(submitted))
            submitting.add(job)
            job.add_done_callback(submitting.discard)

    for _ in range(INFLIGHT):
        submitted += 1
        await submit(submitted)
    feeder = asyncio.create_task(refill())
    try:
        await asyncio.sleep(warmup)
        before, done_before, started = roles.read(), completions.count, time.monotonic()
        await asyncio.sleep(duration)
        after, done_after, ended = roles.read(), completions.count, time.monotonic()
        await asyncio.sleep(tail)
    finally:
        feeder.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await feeder
    finished = done_after - done_before
    seconds = ended - started
    cpu = {role: after[role] - before.get(role, 0.0) for role in after}
    per_wf = {role: round(1000 * value / finished, 2) if finished else None for role, value in cpu.items()}
    total = round(1000 * sum(cpu.values()) / finished, 2) if finished else None
    print(f"{label}: {finished / seconds:.1f} wf/s, CPU ms/wf {total} {per_wf}", flush=True)
    return {
        "label": label,
        "wf_per_s": round(finished / seconds, 1),
        "completed_in_window": finished,
        "window_s": round(seconds, 1),
        "cpu_ms_per_wf": total,
        "cpu_ms_per_wf_by_role": per_wf,
        "cpu_s_by_role": {role: round(v, 2) for role, v in cpu.items()},
    }


async def run_service(
    admin: str, workers: int, warmup: float, duration: float, classic: bool = False, unary: bool = False
) -> dict[str, Any]:
    import common
    from sayiir_client import AtTask, WorkflowSnapshot, connect

    url = await common.create_database(admin, f"fleet_service_w{workers}")
    first = step_ids()[0]
    service = common.start_service(
        url,
        # --workers 1 is the default: left out, so the same harness drives an older service for comparison.
        [*(["--workers", str(workers)] if workers > 1 else []), "--pool-max-connections", str(SERVICE_POOL)],
    )
    loop = asyncio.get_running_loop()
    transport, completions = await loop.create_datagram_endpoint(Completions, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    worker_role = "service-worker-classic" if classic else "service-worker-unary" if unary else "service-worker"
    counts_dir = tempfile.TemporaryDirectory(prefix="fleet-counts-")
    counts_files = [Path(counts_dir.name) / f"w{i}.json" for i in range(WORKER_PROCESSES)]
    procs = [
        _spawn(
            [
                *(worker_role, "--target", service.target, "--id", f"w{i}", "--report-port", str(port)),
                *("--counts-file", str(counts_files[i])),
            ]
        )
        for i in range(WORKER_PROCESSES)
    ]
    probe_s = max(3.0, duration / 2)
    # The load_snapshot probe runs in a window of its own, after the CPU
    # window: its calls would otherwise count as workflow CPU.
    prober = subprocess.Popen(  # noqa: ASYNC220 (a child that runs on its own)
        [
            sys.executable,
            str(HERE / "prober.py"),
            "--target",
            service.target,
            "--delay",
            str(warmup + duration + 1),
            "--duration",
            str(probe_s),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        async with connect(service.target, watch_wakeups=False) as client:

            async def submit(n: int) -> None:
                snapshot = WorkflowSnapshot.with_initial_input(f"wf-{n}", "bench-linear", b"0")
                snapshot.update_position(AtTask(first))
                await client.save_snapshot(snapshot)

            roles = Roles({"server": [service.pid], "workers": [p.pid for p in procs]}, common.db_name(url))
            histogram_before = common.scrape_histogram(
                service.metrics_url, "sayiir_grpc_call_duration_seconds", "LoadSnapshot"
            )
            label = f"service --workers {workers}" + (
                ", issue 7's loop (stream + claim per step)"
                if classic
                else ", unary calls instead of the worker session"
                if unary
                else ""
            )
            result = await _measure(label, roles, completions, submit, warmup, duration, probe_s + 2)
            histogram_after = common.scrape_histogram(
                service.metrics_url, "sayiir_grpc_call_duration_seconds", "LoadSnapshot"
            )
        out, _ = prober.communicate(timeout=duration + warmup + 30)
        probe = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"latencies": []}
        result["load_snapshot_server"] = common.histogram_summary(histogram_before, histogram_after)
        result["load_snapshot_client"] = common.latency_block(probe["latencies"])
        _stop(procs)
        if not (classic or unary):
            result["session_requests_per_message"] = _requests_per_message(counts_files)
        return result
    finally:
        if prober.poll() is None:
            prober.kill()
        _stop(procs)
        counts_dir.cleanup()
        transport.close()
        service.stop()
        await common.drop_database(admin, url)


async def run_dbos_queue(admin: str, warmup: float, duration: float) -> dict[str, Any]:
    import common

    url = await common.create_database(admin, "fleet_dbos_queue")
    loop = asyncio.get_running_loop()
    transport, completions = await loop.create_datagram_endpoint(Completions, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    # The first worker creates DBOS's schema; the others start once it exists.
    procs = [_spawn(["dbos-worker", "--url", url, "--id", "w0", "--report-port", str(port)])]
    await _wait_for_table(url, "dbos", "workflow_status")
    procs += [
        _spawn(["dbos-worker", "--url", url, "--id", f"w{i}", "--report-port", str(port)])
        for i in range(1, WORKER_PROCESSES)
    ]
    from dbos import DBOSClient

    client = DBOSClient(system_database_url=url, system_database_pool_size=DBOS_POOL)
    try:

        async def submit(n: int) -> None:
            await asyncio.to_thread(client.enqueue, {"queue_name": "bench", "workflow_name": "linear"}, 0)

        roles = Roles({"workers": [p.pid for p in procs]}, common.db_name(url))
        return await _measure(
            f"DBOS queue, {WORKER_PROCESSES} worker processes", roles, completions, submit, warmup, duration
        )
    finally:
        client.destroy()
        _stop(procs)
        transport.close()
        await common.drop_database(admin, url)


async def run_dbos_in_process(admin: str, warmup: float, duration: float) -> dict[str, Any]:
    import common

    url = await common.create_database(admin, "fleet_dbos_inproc")
    loop = asyncio.get_running_loop()
    transport, completions = await loop.create_datagram_endpoint(Completions, local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    procs = [_spawn(["dbos-in-process", "--url", url, "--report-port", str(port)])]
    try:

        async def submit(n: int) -> None:
            return None  # the threads start their own workflows

        roles = Roles({"workers": [p.pid for p in procs]}, common.db_name(url))
        await _wait_for_table(url, "dbos", "workflow_status")
        return await _measure(f"DBOS in process, {DBOS_THREADS} threads", roles, completions, submit, warmup, duration)
    finally:
        _stop(procs)
        transport.close()
        await common.drop_database(admin, url)


async def _wait_for_table(url: str, schema: str, table: str, timeout: float = 60.0) -> None:
    import asyncpg

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        conn = await asyncpg.connect(url)
        try:
            if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{schema}.{table}"):
                return
        finally:
            await conn.close()
        await asyncio.sleep(0.5)
    raise TimeoutError(f"{schema}.{table} never appeared")


SYSTEMS: dict[str, Callable[[str, float, float], Any]] = {
    "service_w1": lambda admin, w, d: run_service(admin, 1, w, d),
    "service_w2": lambda admin, w, d: run_service(admin, 2, w, d),
    "service_w1_unary": lambda admin, w, d: run_service(admin, 1, w, d, unary=True),
    "service_w1_classic": lambda admin, w, d: run_service(admin, 1, w, d, classic=True),
    "dbos_queue": run_dbos_queue,
    "dbos_in_process": run_dbos_in_process,
}


async def run_all(admin: str, warmup: float, duration: float, only: list[str] | None = None) -> dict[str, Any]:
    rows: dict[str, Any] = {}
    for key, run in SYSTEMS.items():
        if only and key not in only:
            continue
        try:
            rows[key] = await run(admin, warmup, duration)
        except Exception as exc:  # one failing system must not lose the others
            rows[key] = {"label": key, "failed": f"{type(exc).__name__}: {exc}"}
            print(f"{key} failed: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in CHILD_ROLES:
        child_main(argv)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=20.0)
    parser.add_argument("--only", default="")
    parser.add_argument("--json", default=None, help="write the rows here")
    args = parser.parse_args(argv)
    only = [o.strip() for o in args.only.split(",") if o.strip()] or None
    from sayiir_grpc.cli import run_event_loop

    rows = run_event_loop(run_all(args.admin_url, args.warmup, args.duration, only))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    else:
        print(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
