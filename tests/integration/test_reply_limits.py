"""Every reply stays within the message limit, and no write makes a workflow unreadable.

A service with a small limit (256 KiB) makes the sizes cheap: snapshots
that would not fit a reply are refused with RESOURCE_EXHAUSTED naming both
sizes; find, claim and list replies stop before the limit and say more
remain; a claim left out of a reply is never committed.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import grpc
import pytest

from conftest import SAYIIR_TABLES, start_service
from sayiir_client import AtTask, GrpcBackend, TaskId, WorkflowSnapshot, connect
from sayiir_common.errors import ResourceExhaustedError
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2 as snap_pb
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2_grpc as snap_grpc
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as claim_pb
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2_grpc as claim_grpc
from sayiir_grpc import limits

LIMIT = 256 * 1024
T1 = TaskId.sha256("limit-task")


@pytest.fixture(scope="module")
async def small_service(make_database: Callable[[], Awaitable[str]]) -> AsyncIterator[tuple[str, str]]:
    url = await make_database()
    running = await start_service(url, max_message_bytes=LIMIT)
    try:
        yield f"127.0.0.1:{running.port}", url
    finally:
        await running.stop(grace=1)
        limits.set_max_reply_bytes(limits.DEFAULT_MAX_REPLY_BYTES)


@pytest.fixture
async def pg(small_service: tuple[str, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(small_service[1])
    await conn.execute(f"TRUNCATE {', '.join(SAYIIR_TABLES)}")
    yield conn
    await conn.close()


@pytest.fixture
async def client(small_service: tuple[str, str], pg: asyncpg.Connection) -> AsyncIterator[GrpcBackend]:
    async with connect(small_service[0], watch_wakeups=False) as backend:
        yield backend


def at_task(instance_id: str, size: int) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "limits", os.urandom(size))
    snapshot.update_position(AtTask(T1))
    return snapshot


async def test_a_snapshot_no_reply_could_carry_is_refused(client: GrpcBackend, pg: asyncpg.Connection) -> None:
    with pytest.raises(ResourceExhaustedError) as refused:
        await client.save_snapshot(at_task("too-big", 150 * 1024))
    assert str(LIMIT) in refused.value.message and "SAYIIR_MAX_MESSAGE_BYTES" in refused.value.message
    assert await pg.fetchval("SELECT count(*) FROM sayiir_workflow_snapshots") == 0


async def test_results_that_would_outgrow_the_limit_are_refused_and_the_snapshot_stays_readable(
    client: GrpcBackend,
) -> None:
    await client.save_snapshot(at_task("growing", 1024))
    outputs = [os.urandom(60 * 1024) for _ in range(4)]
    await client.save_task_result("growing", TaskId.sha256("a"), outputs[0])
    await client.save_task_result("growing", TaskId.sha256("b"), outputs[1])
    with pytest.raises(ResourceExhaustedError):
        for k, output in enumerate(outputs[2:]):
            await client.save_task_result("growing", TaskId.sha256(f"c{k}"), output)
    loaded = await client.load_snapshot("growing")
    assert loaded.get_task_result(TaskId.sha256("a")) is not None


async def test_find_and_claim_stop_before_the_limit_and_claim_only_what_they_return(
    small_service: tuple[str, str], client: GrpcBackend, pg: asyncpg.Connection
) -> None:
    for k in range(4):
        await client.save_snapshot(at_task(f"ready-{k}", 50 * 1024))  # about 100 KiB per task in a reply
    async with grpc.aio.insecure_channel(small_service[0]) as channel:
        claims = claim_grpc.TaskClaimStoreStub(channel)
        found = await claims.FindAvailableTasks(claim_pb.FindAvailableTasksRequest(worker_id="w", limit=10))
        assert 1 <= len(found.tasks) < 4 and found.more_ready
        assert found.ByteSize() <= LIMIT
        claimed = await claims.ClaimAvailableTasks(claim_pb.ClaimAvailableTasksRequest(worker_id="w", limit=10))
        assert 1 <= len(claimed.tasks) < 4 and claimed.more_ready
        rows = await pg.fetch("SELECT instance_id FROM sayiir_workflow_claims WHERE worker_id = 'w'")
        assert sorted(r["instance_id"] for r in rows) == sorted(t.instance_id for t in claimed.tasks)
        seen = {t.instance_id for t in claimed.tasks}
        while True:
            more = await claims.ClaimAvailableTasks(claim_pb.ClaimAvailableTasksRequest(worker_id="w", limit=10))
            seen |= {t.instance_id for t in more.tasks}
            if not more.more_ready:
                break
        assert seen == {f"ready-{k}" for k in range(4)}


async def test_list_pages_stop_before_the_limit(
    small_service: tuple[str, str], client: GrpcBackend, pg: asyncpg.Connection
) -> None:
    ids = [f"{k:04d}-" + "x" * 1000 for k in range(300)]  # 300 KB of ids
    for instance_id in ids:
        await client.save_snapshot(WorkflowSnapshot.new(instance_id, "h"))
    async with grpc.aio.insecure_channel(small_service[0]) as channel:
        stub = snap_grpc.SnapshotStoreStub(channel)
        listed: list[str] = []
        after = ""
        while True:
            page = await stub.ListSnapshots(snap_pb.ListSnapshotsRequest(after_instance_id=after, page_size=10_000))
            assert page.ByteSize() <= LIMIT
            listed += page.instance_ids
            after = page.next_after_instance_id
            if not after:
                break
    assert listed == ids
