"""The backlog gauges, scraped from /metrics and checked against the rows the test created."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
from test_operations import scrape

from conftest import start_service
from sayiir_client import AtDelay, AtTask, GrpcBackend, SignalKind, SignalRequest, TaskId, Timestamp, WorkflowSnapshot
from sayiir_client import connect as connect_client
from sayiir_common.model import STATUS_NAMES

STEP = TaskId.sha256("step")


async def at_task(client: GrpcBackend, instance_id: str) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "gauges-v1", b'"in"')
    snapshot.update_position(AtTask(STEP))
    await client.save_snapshot(snapshot)
    return snapshot


async def at_delay(client: GrpcBackend, instance_id: str, wake_in_s: int) -> None:
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "gauges-v1", b'"in"')
    now = Timestamp.now()
    snapshot.update_position(AtDelay(TaskId.sha256("nap"), now, now + timedelta(seconds=wake_in_s), STEP))
    await client.save_snapshot(snapshot)


async def wait_for_gauges(port: int, expected: dict[str, float]) -> dict[str, float]:
    """The scraped samples once they show `expected` (the loop refreshes every 0.1 s)."""
    metrics: dict[str, float] = {}
    for _ in range(100):
        metrics = await asyncio.to_thread(scrape, port)
        if all(metrics.get(name) == value for name, value in expected.items()):
            return metrics
        await asyncio.sleep(0.1)
    return metrics


async def test_gauges_count_the_rows_created(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    running = await start_service(url, gauge_interval=0.1)
    pg = await asyncpg.connect(url)
    try:
        assert running.metrics_port
        empty = await wait_for_gauges(running.metrics_port, {'sayiir_grpc_workflows{status="InProgress"}': 0})
        assert {empty[f'sayiir_grpc_workflows{{status="{s}"}}'] for s in STATUS_NAMES} == {0}
        assert empty["sayiir_grpc_oldest_runnable_task_age_seconds"] == 0
        assert empty["sayiir_grpc_expired_claims"] == 0

        async with connect_client(f"127.0.0.1:{running.port}", watch_wakeups=False) as client:
            # Runnable: three unclaimed at a task (one waiting for 2 minutes),
            # one whose claim expired, one whose delay is over.
            for i in range(3):
                await at_task(client, f"ready-{i}")
            await pg.execute(
                "UPDATE sayiir_workflow_snapshots SET updated_at = now() - interval '120 seconds' "
                "WHERE instance_id = 'ready-0'"
            )
            await at_task(client, "abandoned")
            assert await client.claim_task("abandoned", STEP, "dead-worker", 0.2)
            await at_delay(client, "woken", -5)
            # In progress but not runnable: claimed, a delay still running, a pending cancel.
            for i in range(2):
                await at_task(client, f"claimed-{i}")
                assert await client.claim_task(f"claimed-{i}", STEP, "busy-worker", 300)
            await at_delay(client, "sleeping", 3600)
            await at_task(client, "cancelling")
            await client.store_signal("cancelling", SignalKind.CANCEL, SignalRequest("stop", "ops"))
            # Not in progress.
            for i, mark in enumerate(["completed", "completed", "failed", "cancelled", "paused", "paused"]):
                snapshot = await at_task(client, f"{mark}-{i}")
                if mark == "completed":
                    snapshot.mark_completed(b'"done"')
                elif mark == "failed":
                    snapshot.mark_failed("boom")
                elif mark == "cancelled":
                    snapshot.mark_cancelled("stop", "ops")
                else:
                    snapshot.mark_paused(reason="wait", paused_by="ops")
                await client.save_snapshot(snapshot)
        await asyncio.sleep(0.3)  # the abandoned claim expires

        expected = {
            'sayiir_grpc_workflows{status="InProgress"}': 9,
            'sayiir_grpc_workflows{status="Completed"}': 2,
            'sayiir_grpc_workflows{status="Failed"}': 1,
            'sayiir_grpc_workflows{status="Cancelled"}': 1,
            'sayiir_grpc_workflows{status="Paused"}': 2,
            "sayiir_grpc_runnable_tasks": 5,
            "sayiir_grpc_expired_claims": 1,
        }
        metrics = await wait_for_gauges(running.metrics_port, expected)
        assert {name: metrics.get(name) for name in expected} == expected
        assert 120 <= metrics["sayiir_grpc_oldest_runnable_task_age_seconds"] < 180
        # Exactly the statuses of the engine: a bounded label set.
        assert sorted(k for k in metrics if k.startswith("sayiir_grpc_workflows{")) == sorted(
            f'sayiir_grpc_workflows{{status="{s}"}}' for s in STATUS_NAMES
        )

        # The runnable tasks get claimed: the backlog empties, the age drops to 0.
        async with connect_client(f"127.0.0.1:{running.port}", watch_wakeups=False) as client:
            claimed = await client.claim_available_tasks("fresh-worker", 10, 300)
        assert sorted(t.instance_id for t in claimed) == ["abandoned", "ready-0", "ready-1", "ready-2", "woken"]
        drained = await wait_for_gauges(
            running.metrics_port,
            {"sayiir_grpc_runnable_tasks": 0, "sayiir_grpc_expired_claims": 0},
        )
        assert drained["sayiir_grpc_runnable_tasks"] == 0
        assert drained["sayiir_grpc_oldest_runnable_task_age_seconds"] == 0
        assert drained["sayiir_grpc_expired_claims"] == 0
    finally:
        await pg.close()
        await running.stop(grace=1)
