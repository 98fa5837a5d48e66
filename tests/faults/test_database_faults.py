"""PostgreSQL goes away under load and comes back: nothing acknowledged is lost.

The test runs a PostgreSQL of its own (embedded, driven from a helper
process, on a port it fixes so the service reconnects to the same address), the service on it, and eight
workers for about ten seconds, while it stops PostgreSQL (fast shutdown:
every session is cut) and starts it again, twice. Calls in flight either
succeed or fail with UNAVAILABLE; nothing else comes back and no answer
contradicts the ledger. Afterwards every acknowledged write is in the
database, the invariant checker is green, health is SERVING again and the
wakeup stream delivers hints again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import start_service
from faults.support import ExternalPostgres, Figures, Ledger, free_port, run_load, verify, without_client_retries
from sayiir_client import AtTask, TaskId, WorkflowSnapshot, connect

pytestmark = [pytest.mark.faults, pytest.mark.embedded, pytest.mark.timeout(180)]

WORKERS = 8
LOAD_SECONDS = 10.0
RESTARTS_AT = (2.5, 6.0)  # seconds into the load
DOWN_FOR = 1.0


async def test_database_restarts_under_load_lose_no_acknowledged_write(tmp_path: Path) -> None:
    figures = Figures()
    ledger = Ledger()
    postgres = ExternalPostgres(tmp_path / "data", port=free_port())
    server = None
    try:
        url = await postgres.start()
        server = await start_service(url, health_probe_interval=0.2, pool_max_connections=16)
        target = f"127.0.0.1:{server.port}"

        async def restarts() -> None:
            started = time.monotonic()
            for at in RESTARTS_AT:
                await asyncio.sleep(max(0.0, at - (time.monotonic() - started)))
                await postgres.stop()
                figures.faults_injected += 1
                await asyncio.sleep(DOWN_FOR)
                await postgres.start()

        async with contextlib.AsyncExitStack() as stack:
            clients = [
                without_client_retries(await stack.enter_async_context(connect(target, watch_wakeups=False)))
                for _ in range(WORKERS)
            ]
            await run_load(clients, figures, ledger, LOAD_SECONDS, restarts)

        problems = await verify(url, ledger, figures)

        # Health follows the database back to SERVING.
        assert await _health_becomes_serving(target)

        # The wakeup listener reconnected: a fresh stream hears a new save.
        recovered_after = await _wakeups_work_again(target)
        figures.extra.update(
            listener_reconnects=server.hub.reconnects,
            server_transient_retries=server.db.transient_retries,
            wakeup_recovered_after_s=round(recovered_after, 2),
        )
        figures.record("database_faults")
        assert figures.unexpected == [], figures.unexpected
        assert problems == [], problems
        assert figures.faults_injected == len(RESTARTS_AT)
        assert figures.unavailable > 0, "the restarts were not felt: the test proves nothing"
        assert figures.acknowledged_writes > 200
    finally:
        if server is not None:
            await server.stop(grace=1)
        await asyncio.to_thread(postgres.close)


async def _health_becomes_serving(target: str, within: float = 10.0) -> bool:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            response = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            if response.status == health_pb2.HealthCheckResponse.SERVING:
                return True
            await asyncio.sleep(0.1)
    return False


async def _wakeups_work_again(target: str) -> float:
    """Seconds until a save made after the restarts reaches a fresh wakeup stream."""
    started = time.monotonic()
    async with connect(target) as client:
        attempt = 0
        while time.monotonic() - started < 20:
            attempt += 1
            instance_id = f"wakeup-after-restart-{attempt}"
            snapshot = WorkflowSnapshot.new(instance_id, "fault-wakeup")
            snapshot.update_position(AtTask(TaskId.sha256("first")))
            await client.save_snapshot(snapshot)
            hint = await client.wait_for_wakeup(timeout=2)
            while hint is not None and hint.instance_id != instance_id:
                hint = await client.wait_for_wakeup(timeout=2)
            if hint is not None:
                return time.monotonic() - started
    raise AssertionError("no wakeup hint reached a fresh stream within 20 s of the last restart")
