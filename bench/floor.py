"""The floor under the service's CPU per workflow: a bare grpc.aio server and
asyncpg pool making the same round trips, with no store logic at all.

Per linear workflow of 4 steps the fleet run makes 6 RPCs (SaveSnapshot,
one ClaimAvailableTasks, CompleteTask x 4 with the claim continued) and the
server runs, per RPC, the same number of database round trips as the real
handlers: a save is a transaction of 2 statements, a claim one statement, a
completion a transaction of 3 (lock and read, write, move the claim). Here
each handler runs that many `SELECT $1::bytea` on a pooled connection and
answers 200 bytes: gRPC, HTTP/2, the event loop, the pool and the protocol,
nothing else. The server and the client are separate processes (uvloop for
both, as the service); their CPU over the window, divided by the workflows,
is the floor of the server and worker-client roles.

    .venv/bin/python bench/floor.py --url postgresql://postgres@127.0.0.1:5432/postgres
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

STATEMENTS = {"Save": 2, "Claim": 1, "Complete": 3}
TRANSACTION = {"Save": True, "Claim": False, "Complete": True}
PAYLOAD = b"x" * 200
CALLS_PER_WF = ["Save", "Claim", "Complete", "Complete", "Complete", "Complete"]


def _loop() -> None:
    import uvloop

    uvloop.install()


async def serve(url: str, pool_size: int) -> None:
    import asyncpg
    import grpc

    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)

    def handler(name: str) -> Any:
        count, in_tx = STATEMENTS[name], TRANSACTION[name]

        async def call(request: bytes, context: Any) -> bytes:
            async with pool.acquire() as conn:
                if in_tx:
                    async with conn.transaction():
                        for _ in range(count):
                            await conn.fetchval("SELECT $1::bytea", request)
                else:
                    for _ in range(count):
                        await conn.fetchval("SELECT $1::bytea", request)
            return PAYLOAD

        return grpc.unary_unary_rpc_method_handler(call)

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("floor.Floor", {name: handler(name) for name in STATEMENTS}),)
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(port, flush=True)
    await server.wait_for_termination()


async def drive(port: int, inflight: int, channels: int, warmup: float, duration: float) -> dict[str, float]:
    import grpc

    chans = [grpc.aio.insecure_channel(f"127.0.0.1:{port}") for _ in range(channels)]
    stubs = [{name: ch.unary_unary(f"/floor.Floor/{name}") for name in STATEMENTS} for ch in chans]
    done = 0

    async def workflow_loop(k: int) -> None:
        nonlocal done
        stub = stubs[k % channels]
        while True:
            for name in CALLS_PER_WF:
                await stub[name](PAYLOAD)
            done += 1

    tasks = [asyncio.create_task(workflow_loop(k)) for k in range(inflight)]
    await asyncio.sleep(warmup)
    before, start = done, time.monotonic()
    own = os.times()
    await asyncio.sleep(duration)
    after, end = done, time.monotonic()
    own_after = os.times()
    for task in tasks:
        task.cancel()
    for ch in chans:
        await ch.close()
    return {
        "workflows": after - before,
        "seconds": end - start,
        "client_cpu_s": (own_after.user + own_after.system) - (own.user + own.system),
    }


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(url: str, inflight: int = 32, warmup: float = 3.0, duration: float = 15.0) -> dict[str, Any]:
    """Run the floor server and client as processes; CPU ms per workflow of each."""
    server = subprocess.Popen(
        [sys.executable, __file__, "serve", "--url", url], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        client = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "drive",
                "--port",
                str(port),
                "--inflight",
                str(inflight),
                "--warmup",
                str(warmup),
                "--duration",
                str(duration),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(warmup)
        server_before = _cpu(server.pid)
        out, _ = client.communicate(timeout=warmup + duration + 60)
        server_after = _cpu(server.pid)
        result = json.loads(out.strip().splitlines()[-1])
        # The server's window is a little longer than the client's (read after it): an upper bound.
        workflows = max(1, result["workflows"])
        return {
            "label": "bare grpc.aio + asyncpg, same round trips",
            "wf_per_s": round(result["workflows"] / result["seconds"], 1),
            "rpcs_per_wf": len(CALLS_PER_WF),
            "statements_per_wf": sum(STATEMENTS[name] for name in CALLS_PER_WF),
            "server_cpu_ms_per_wf": round(1000 * (server_after - server_before) / workflows, 2),
            "client_cpu_ms_per_wf": round(1000 * result["client_cpu_s"] / workflows, 2),
        }
    finally:
        server.terminate()
        server.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", nargs="?", default="measure", choices=["measure", "serve", "drive"])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--port", type=int)
    parser.add_argument("--inflight", type=int, default=32)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--duration", type=float, default=15.0)
    args = parser.parse_args()
    _loop()
    if args.mode == "serve":
        asyncio.run(serve(args.url, 12))
    elif args.mode == "drive":
        print(json.dumps(asyncio.run(drive(args.port, args.inflight, 4, args.warmup, args.duration))), flush=True)
    else:
        print(json.dumps(measure(args.url, args.inflight, args.warmup, args.duration), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
