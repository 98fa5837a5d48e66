"""When the service is the bottleneck, do more service processes serve more?

The fleet benchmark (`fleet.py`) cannot show it on a small machine: there
the service spends about a third of the CPU per workflow, the workers and
PostgreSQL the rest, and no core is left for a second service process. This
one loads the service alone. Client processes call LoadSnapshot on workflows
of many completed tasks through raw stubs and only parse the replies (C
code), so the server's work (decoding the stored JSON, building the reply)
is most of the CPU per call. Rounds of `--workers 1` and `--workers 2`
alternate on one database, so a change of the machine's speed shows as a
spread between rounds of one setting, not as a difference between settings.

    python bench/processes.py                      # 2 rounds of 10 s each
    python bench/processes.py --rounds 1 --duration 2 --json /tmp/p.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

# Workflows the clients read, and their size: 80 completed tasks of 256-byte
# outputs make a stored blob of about 40 KB.
WORKFLOWS = 200
COMPLETED_TASKS = 80
OUTPUT_BYTES = 256
CLIENT_PROCESSES = 2
CONCURRENCY = 16
DEFINITION = "bench-processes"


def _snapshot(instance_id: str) -> Any:
    from sayiir_client import AtTask, TaskId, WorkflowSnapshot

    snapshot = WorkflowSnapshot.with_initial_input(instance_id, DEFINITION, b'"input"')
    output = json.dumps("x" * (OUTPUT_BYTES - 2)).encode()
    for n in range(COMPLETED_TASKS):
        snapshot.mark_task_completed(TaskId.sha256(f"step-{n}"), output)
    snapshot.update_position(AtTask(TaskId.sha256(f"step-{COMPLETED_TASKS}")))
    return snapshot


async def _seed(target: str, ids: list[str]) -> None:
    from sayiir_client import connect

    async with connect(target) as backend:
        for instance_id in ids:
            await backend.save_snapshot(_snapshot(instance_id))


# -- a client process -----------------------------------------------------------


def _ids() -> list[str]:
    return [f"read-{n}" for n in range(WORKFLOWS)]


async def _client(target: str, concurrency: int) -> None:
    """Call LoadSnapshot without pause; count the calls between the parent's
    "measure" and "stop" lines on stdin, print the count, exit."""
    import grpc

    from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2 as rpc_pb
    from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2_grpc as rpc_grpc

    ids = _ids()
    loop = asyncio.get_running_loop()
    measuring = asyncio.Event()
    stopping = asyncio.Event()
    counted = 0

    def read_commands() -> None:
        for line in sys.stdin:
            event = {"measure": measuring, "stop": stopping}.get(line.strip())
            if event is not None:
                loop.call_soon_threadsafe(event.set)
        loop.call_soon_threadsafe(stopping.set)

    async def call(stub: Any) -> None:
        nonlocal counted
        rng = random.Random()
        while not stopping.is_set():
            await stub.LoadSnapshot(rpc_pb.LoadSnapshotRequest(instance_id=rng.choice(ids)), timeout=30)
            if measuring.is_set():
                counted += 1

    async with grpc.aio.insecure_channel(target) as channel:
        stub = rpc_grpc.SnapshotStoreStub(channel)
        await stub.LoadSnapshot(rpc_pb.LoadSnapshotRequest(instance_id=ids[0]), timeout=30)
        threading.Thread(target=read_commands, daemon=True).start()
        print("ready", flush=True)
        callers = [asyncio.create_task(call(stub)) for _ in range(concurrency)]
        await stopping.wait()
        await asyncio.gather(*callers)
    print(json.dumps({"calls": counted}), flush=True)


# -- one round ------------------------------------------------------------------


def _round(url: str, database: str, workers: int, warmup: float, duration: float) -> dict[str, Any]:
    from fleet import _cpu_of, _safe_times

    import common

    service = common.start_service(url, ["--workers", str(workers)])
    clients: list[subprocess.Popen[str]] = []
    try:
        for _ in range(CLIENT_PROCESSES):
            clients.append(
                subprocess.Popen(
                    [sys.executable, __file__, "client", "--target", service.target],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                )
            )
        for client in clients:
            assert client.stdout is not None
            if client.stdout.readline().strip() != "ready":
                raise RuntimeError("a client process did not start")
        time.sleep(warmup)

        def cpu() -> dict[str, float]:
            return {
                "server": _cpu_of(service.pid),
                "clients": sum(_cpu_of(c.pid) for c in clients),
                "postgres": sum(
                    t.user + t.system for t in (_safe_times(p) for p in common._postgres_backends(database)) if t
                ),
            }

        for client in clients:
            assert client.stdin is not None
            client.stdin.write("measure\n")
            client.stdin.flush()
        before, started = cpu(), time.monotonic()
        time.sleep(duration)
        after, seconds = cpu(), time.monotonic() - started
        calls = 0
        for client in clients:
            assert client.stdin is not None and client.stdout is not None
            client.stdin.write("stop\n")
            client.stdin.close()
            calls += int(json.loads(client.stdout.readline())["calls"])
            client.wait(30)
    finally:
        for client in clients:
            if client.poll() is None:
                client.kill()
        service.stop()
    per_call = {role: round(1000.0 * (after[role] - before[role]) / max(calls, 1), 3) for role in after}
    return {
        "workers": workers,
        "calls_per_s": round(calls / seconds, 1),
        "cpu_ms_per_call": per_call,
        "cores_busy": round(sum(after[r] - before[r] for r in after) / seconds, 2),
    }


async def _prepare(admin_url: str) -> str:
    import common

    url = await common.create_database(admin_url, "sayiir_processes")
    service = common.start_service(url)
    try:
        await _seed(service.target, _ids())
    finally:
        service.stop()
    return url


def run(admin_url: str, rounds: int, warmup: float, duration: float, quiet: bool = False) -> dict[str, Any]:
    """Alternate `--workers 1` and `--workers 2` rounds on one fresh database (dropped at the end)."""
    import common
    from sayiir_grpc.cli import run_event_loop

    url = run_event_loop(_prepare(admin_url))
    rows = []
    try:
        for n in range(rounds):
            for workers in (1, 2):
                row = _round(url, common.db_name(url), workers, warmup, duration)
                row["round"] = n + 1
                if not quiet:
                    print(_line(row), flush=True)
                rows.append(row)
    finally:
        run_event_loop(common.drop_database(admin_url, url))
    return {"workload": _workload(), "rows": rows, "summary": summarise(rows)}


def _workload() -> dict[str, Any]:
    return {
        "workflows": WORKFLOWS,
        "completed_tasks": COMPLETED_TASKS,
        "output_bytes": OUTPUT_BYTES,
        "client_processes": CLIENT_PROCESSES,
        "concurrency_per_client": CONCURRENCY,
    }


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean calls/s per setting and the ratio of --workers 2 to --workers 1."""
    mean = {}
    for workers in (1, 2):
        rates = [r["calls_per_s"] for r in rows if r["workers"] == workers]
        mean[workers] = round(sum(rates) / len(rates), 1) if rates else 0.0
    return {"calls_per_s": mean, "ratio_2_to_1": round(mean[2] / mean[1], 2) if mean[1] else None}


def _line(row: dict[str, Any]) -> str:
    cpu = row["cpu_ms_per_call"]
    return (
        f"round {row['round']}  --workers {row['workers']}: {row['calls_per_s']:8.1f} calls/s  "
        f"CPU ms per call: server {cpu['server']:.3f}, clients {cpu['clients']:.3f}, "
        f"PostgreSQL {cpu['postgres']:.3f}  ({row['cores_busy']:.2f} cores busy)"
    )


def main(argv: list[str] | None = None) -> int:
    import common

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("role", nargs="?", choices=["run", "client"], default="run")
    parser.add_argument("--admin-url", default=common.DEFAULT_ADMIN_URL)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--json", type=Path, default=None, help="write the rows and the summary here")
    parser.add_argument("--target", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    from sayiir_grpc.cli import run_event_loop

    if args.role == "client":
        run_event_loop(_client(args.target, CONCURRENCY))
        return 0
    result = run(args.admin_url, args.rounds, args.warmup, args.duration)
    summary = result["summary"]
    print(
        f"mean calls/s: --workers 1 {summary['calls_per_s'][1]}, --workers 2 {summary['calls_per_s'][2]}; "
        f"ratio {summary['ratio_2_to_1']}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
