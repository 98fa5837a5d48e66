"""Background sweeps: each server process applies the pending cancel/pause of
idle workflows and advances due delays on its own, within a bounded delay,
without any claim call doing it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

from conftest import start_service
from sayiir_client import AtDelay, AtTask, SignalKind, SignalRequest, TaskId, Timestamp, WorkflowSnapshot, connect

SWEEP_INTERVAL_S = 0.2
# How late a sweep may act: one interval, plus the sweep's own work and the
# scheduling jitter of a loaded machine.
LATENESS_BOUND_S = SWEEP_INTERVAL_S + 0.8


async def test_sweeps_apply_idle_signals_and_due_delays_within_the_bound(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    running = await start_service(await make_database(), sweep_interval=SWEEP_INTERVAL_S, pool_max_connections=4)
    try:
        async with connect(f"127.0.0.1:{running.port}", watch_wakeups=False) as client:
            idle = WorkflowSnapshot.with_initial_input("idle", "h", b"0")
            idle.update_position(AtTask(TaskId.sha256("t")))
            await client.save_snapshot(idle)
            now = Timestamp.now()
            wake_at = now + timedelta(seconds=1)
            sleeper = WorkflowSnapshot.with_initial_input("sleeper", "h", b"0")
            sleeper.update_position(AtDelay(TaskId.sha256("d"), now, wake_at, TaskId.sha256("after")))
            await client.save_snapshot(sleeper)
            asked = time.monotonic()
            await client.store_signal("idle", SignalKind.CANCEL, SignalRequest("stop", "ops"))

            cancelled_after = woke_after = None
            deadline = asked + 5
            while time.monotonic() < deadline and (cancelled_after is None or woke_after is None):
                if cancelled_after is None and (await client.load_snapshot("idle")).state.is_cancelled():
                    cancelled_after = time.monotonic() - asked
                if woke_after is None and (await client.load_snapshot("sleeper")).position_kind() == "AtTask":
                    woke_after = time.time() - wake_at.to_datetime().timestamp()
                await asyncio.sleep(0.02)
            assert cancelled_after is not None and cancelled_after <= LATENESS_BOUND_S, cancelled_after
            assert woke_after is not None and 0 <= woke_after <= LATENESS_BOUND_S, woke_after
    finally:
        await running.stop(grace=1)


async def test_without_the_sweeper_claims_do_the_sweeping(make_database: Callable[[], Awaitable[str]]) -> None:
    running = await start_service(await make_database(), sweep_interval=0, pool_max_connections=4)
    try:
        async with connect(f"127.0.0.1:{running.port}", watch_wakeups=False) as client:
            idle = WorkflowSnapshot.with_initial_input("idle", "h", b"0")
            idle.update_position(AtTask(TaskId.sha256("t")))
            await client.save_snapshot(idle)
            await client.store_signal("idle", SignalKind.CANCEL, SignalRequest("stop", "ops"))
            await asyncio.sleep(SWEEP_INTERVAL_S * 3)
            assert (await client.load_snapshot("idle")).state.is_in_progress()  # nobody swept
            assert await client.claim_tasks("w", 5, 30) == []
            assert (await client.load_snapshot("idle")).state.is_cancelled()
    finally:
        await running.stop(grace=1)
