"""The load_snapshot probe, as its own process (a separate client, so its
latencies are not those of the bench's busy event loop).

After `--delay` seconds, it loads the snapshot of a random in-progress
workflow every `--interval` seconds for `--duration` seconds (the ids are
refreshed once a second with one ListSnapshots call) and prints a JSON line:
{"latencies": [seconds...], "load_calls": n, "list_calls": m}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import time

from sayiir_client import connect
from sayiir_grpc.cli import run_event_loop


async def probe(target: str, delay: float, duration: float, interval: float) -> dict[str, object]:
    latencies: list[float] = []
    loads = lists = 0
    async with connect(target, watch_wakeups=False) as client:
        await asyncio.sleep(delay)
        end = time.monotonic() + duration
        ids: list[str] = []
        refreshed = 0.0
        next_at = time.monotonic()
        while time.monotonic() < end:
            if time.monotonic() - refreshed > 1.0:
                with contextlib.suppress(Exception):
                    page, _ = await client.list_snapshots_page(None, 200, ("InProgress",))
                    lists += 1
                    ids = page or ids
                    if not ids:
                        ids, _ = await client.list_snapshots_page(None, 200)
                        lists += 1
                refreshed = time.monotonic()
            if ids:
                started = time.perf_counter()
                with contextlib.suppress(Exception):
                    await client.load_snapshot(random.choice(ids))
                    latencies.append(time.perf_counter() - started)
                loads += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return {"latencies": latencies, "load_calls": loads, "list_calls": lists}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--target", required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--duration", type=float, required=True)
    parser.add_argument("--interval", type=float, default=0.01)
    args = parser.parse_args()
    print(json.dumps(run_event_loop(probe(args.target, args.delay, args.duration, args.interval))), flush=True)


if __name__ == "__main__":
    main()
