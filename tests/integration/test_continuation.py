"""A continued workflow's completion in one statement (stores/continuation.py):
it writes what the transaction path writes, and anything it cannot vouch
for (another version stored, the claim gone) goes the transaction path."""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator

import asyncpg
import grpc
import pytest

from conftest import submit_at
from sayiir_client import GrpcBackend, TaskId
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as pb
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2_grpc as pb_grpc
from sayiir_grpc.app import RunningServer

STEPS = [TaskId.sha256(f"c-step-{i}") for i in range(1, 5)]


@pytest.fixture
async def db(isolated: tuple[RunningServer, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(isolated[1])
    yield conn
    await conn.close()


def paths(running: RunningServer) -> dict[str, float]:
    counted = running.metrics.completions
    return {path: counted.labels(path)._value.get() for path in ("one_statement", "transaction")}


async def submit(client: GrpcBackend, instance_id: str) -> None:
    await submit_at(client, instance_id, STEPS[0])


def complete_request(instance_id: str, step: int, output: bytes, keep: bool) -> pb.CompleteTaskRequest:
    request = pb.CompleteTaskRequest(
        instance_id=instance_id, task_id=STEPS[step].as_bytes(), worker_id="w1", output=output
    )
    if step + 1 < len(STEPS):
        request.next_task_id = STEPS[step + 1].as_bytes()
        if keep:
            request.claim_next_ttl.seconds = 30
    return request


def _comparable(blob: bytes, instance_id: str) -> bytes:
    """A blob without what differs between two runs of the same steps: the
    instance id and the clock (the seconds of created_at and updated_at)."""
    blob = blob.replace(instance_id.encode(), b"<id>")
    return re.sub(rb'"(created_at|updated_at)":\d+', rb'"\1":<t>', blob)


async def stored(db: asyncpg.Connection, instance_id: str) -> tuple[list[object], list[object], object]:
    """What the database holds of a workflow, with its instance id taken out of the blobs."""
    history = await db.fetch(
        "SELECT version, status, current_task_id, data FROM sayiir_workflow_snapshot_history"
        " WHERE instance_id = $1 ORDER BY version",
        instance_id,
    )
    tasks = await db.fetch(
        "SELECT task_id, status, output FROM sayiir_workflow_tasks WHERE instance_id = $1 ORDER BY task_id",
        instance_id,
    )
    row = await db.fetchrow(
        "SELECT status, current_task_id, completed_task_count, position_kind, history_version, data_hash IS NOT NULL"
        " FROM sayiir_workflow_snapshots WHERE instance_id = $1",
        instance_id,
    )
    blobs = [
        (r["version"], r["status"], r["current_task_id"], _comparable(bytes(r["data"]), instance_id)) for r in history
    ]
    return blobs, [tuple(t) for t in tasks], tuple(row)


async def test_one_statement_writes_what_the_transaction_path_writes(
    client: GrpcBackend, isolated: tuple[RunningServer, str], db: asyncpg.Connection
) -> None:
    running = isolated[0]
    for name in ("by-session", "by-calls"):
        await submit(client, name)
    before = paths(running)
    # The session's requests are keyed: steps 1 to 4 each in one statement.
    async with client.worker_session() as session:
        (task,) = await session.claim_tasks("w1", 1, 30)
        assert task.instance_id == "by-session"
        for step, after in itertools.pairwise(STEPS):
            completed, following = await session.complete_task_and_continue(
                "by-session", step, "w1", str(STEPS.index(step)).encode(), after, 30
            )
            assert completed and following is not None and following.task_id == after
        assert await session.complete_task("by-session", STEPS[-1], "w1", b"3")
    after_session = paths(running)
    assert after_session["one_statement"] - before["one_statement"] == 4
    # Unkeyed raw calls: the transaction path, step by step.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.TaskClaimStoreStub(channel)
        claimed = await stub.ClaimAvailableTasks(
            pb.ClaimAvailableTasksRequest(worker_id="w1", limit=1, omit_snapshot=True)
        )
        assert claimed.tasks[0].instance_id == "by-calls"
        for step in range(len(STEPS)):
            reply = await stub.CompleteTask(complete_request("by-calls", step, str(step).encode(), keep=True))
            assert reply.completed
    after_calls = paths(running)
    assert after_calls["one_statement"] == after_session["one_statement"]
    assert after_calls["transaction"] - after_session["transaction"] == 4
    assert await stored(db, "by-session") == await stored(db, "by-calls")


async def test_a_snapshot_changed_meanwhile_is_completed_by_the_transaction_path(
    client: GrpcBackend, isolated: tuple[RunningServer, str]
) -> None:
    running = isolated[0]
    await submit(client, "cancelled-meanwhile")
    async with client.worker_session() as session:
        (_task,) = await session.claim_tasks("w1", 1, 30)
        completed, following = await session.complete_task_and_continue(
            "cancelled-meanwhile", STEPS[0], "w1", b"1", STEPS[1], 30
        )
        assert completed and following is not None
        # Another writer moves the workflow on: the kept snapshot is stale.
        await client.store_signal("cancelled-meanwhile", "Cancel")
        assert await client.check_and_cancel("cancelled-meanwhile", STEPS[1])
        before = paths(running)
        completed, following = await session.complete_task_and_continue(
            "cancelled-meanwhile", STEPS[1], "w1", b"2", STEPS[2], 30
        )
    assert (completed, following) == (False, None)
    assert paths(running)["transaction"] - before["transaction"] == 1
    assert (await client.load_snapshot("cancelled-meanwhile")).state.kind == "Cancelled"


async def test_a_claim_taken_by_another_worker_is_not_completed(
    client: GrpcBackend, isolated: tuple[RunningServer, str], db: asyncpg.Connection
) -> None:
    await submit(client, "stolen")
    async with client.worker_session() as session:
        await session.claim_tasks("w1", 1, 30)
        completed, following = await session.complete_task_and_continue("stolen", STEPS[0], "w1", b"1", STEPS[1], 30)
        assert completed and following is not None
        # The claim expires and another worker takes the task.
        await db.execute("UPDATE sayiir_workflow_claims SET expires_at = now() - interval '1 second'")
        assert await client.claim_task("stolen", STEPS[1], "w2", 30) is not None
        completed, following = await session.complete_task_and_continue("stolen", STEPS[1], "w1", b"2", STEPS[2], 30)
        assert (completed, following) == (False, None)
    loaded = await client.load_snapshot("stolen")
    assert loaded.current_task_id() == STEPS[1]
    assert await db.fetchval("SELECT worker_id FROM sayiir_workflow_claims WHERE instance_id = 'stolen'") == "w2"


async def test_a_repeat_of_a_one_statement_completion_replays_its_reply(
    client: GrpcBackend, isolated: tuple[RunningServer, str], db: asyncpg.Connection
) -> None:
    running = isolated[0]
    await submit(client, "replayed")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.TaskClaimStoreStub(channel)
        await stub.ClaimAvailableTasks(pb.ClaimAvailableTasksRequest(worker_id="w1", limit=1, omit_snapshot=True))
        before = paths(running)
        keyed = (("x-request-id", "replayed-step-1"),)
        first = await stub.CompleteTask(complete_request("replayed", 0, b"1", keep=True), metadata=keyed)
        assert paths(running)["one_statement"] - before["one_statement"] == 1
        again = await stub.CompleteTask(complete_request("replayed", 0, b"1", keep=True), metadata=keyed)
    assert first.completed and first.next.task_id == STEPS[1].as_bytes()
    assert again == first
    assert (
        await db.fetchval("SELECT history_version FROM sayiir_workflow_snapshots WHERE instance_id = 'replayed'") == 2
    )


def continue_in_session(instance_id: str) -> pb.WorkerSessionRequest:
    """Step 1 of `instance_id` completed for w1 and continued, keyed by its instance id."""
    return pb.WorkerSessionRequest(
        request_id=f"batched-{instance_id}", complete_task=complete_request(instance_id, 0, b"1", keep=True)
    )


async def session_batch(
    client: GrpcBackend, running: RunningServer, names: list[str]
) -> dict[str, pb.WorkerSessionReply]:
    """The names' workflows submitted and claimed by w1 (light form), then
    step 1 of each completed and continued in one session message."""
    await asyncio.gather(*(submit(client, name) for name in names))
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub = pb_grpc.TaskClaimStoreStub(channel)
        claimed = await stub.ClaimAvailableTasks(
            pb.ClaimAvailableTasksRequest(worker_id="w1", limit=len(names), omit_snapshot=True)
        )
        assert sorted(t.instance_id for t in claimed.tasks) == sorted(names)
        call = stub.WorkerSession()
        await call.write(pb.WorkerSessionRequest(batch=[continue_in_session(name) for name in names]))
        await call.done_writing()
        replies = [one async for reply in call for one in (reply.batch or (reply,))]
    return {reply.request_id.removeprefix("batched-"): reply for reply in replies}


def continued(reply: pb.WorkerSessionReply) -> bool:
    """Whether `reply` says step 1 was completed and step 2 claimed for the worker."""
    answer = reply.complete_task
    return not reply.HasField("error") and answer.completed and answer.next.task_id == STEPS[1].as_bytes()


async def history_versions(db: asyncpg.Connection, names: list[str]) -> dict[str, int]:
    rows = await db.fetch(
        "SELECT instance_id, history_version FROM sayiir_workflow_snapshots WHERE instance_id = ANY($1)", names
    )
    return {r["instance_id"]: r["history_version"] for r in rows}


async def test_the_completions_of_one_message_commit_in_one_round_trip(
    client: GrpcBackend, isolated: tuple[RunningServer, str], db: asyncpg.Connection
) -> None:
    running = isolated[0]
    names = ["batch-a", "batch-b", "batch-c"]
    before = paths(running)
    replies = await session_batch(client, running, names)
    assert all(continued(replies[name]) for name in names), replies
    assert paths(running)["one_statement"] - before["one_statement"] == len(names)
    # One pipelined round trip, one implicit transaction: the rows share their writer.
    writers = await db.fetch(
        "SELECT DISTINCT xmin::text FROM sayiir_workflow_snapshots WHERE instance_id = ANY($1::text[])", names
    )
    assert len(writers) == 1
    assert await history_versions(db, names) == dict.fromkeys(names, 2)


async def test_a_batch_postgresql_refuses_completes_each_of_its_requests_alone(
    client: GrpcBackend, isolated: tuple[RunningServer, str], db: asyncpg.Connection
) -> None:
    from sayiir_grpc.idempotency import request_hash

    running = isolated[0]
    names = ["alone-a", "alone-b", "alone-c"]
    # alone-b's key is already stored (as an answer lost on its way would
    # leave it), with an outcome the service would not give now: its
    # statement's key insert fails, and with it the whole batch.
    stored_reply = pb.CompleteTaskResponse(completed=False).SerializeToString()
    await db.execute(
        "INSERT INTO sayiir_grpc_idempotency_keys (request_key, rpc, request_hash, outcome)"
        " VALUES ($1, 'CompleteTask', $2, $3)",
        "batched-alone-b",
        request_hash(continue_in_session("alone-b").complete_task),
        stored_reply,
    )
    before = paths(running)
    replies = await session_batch(client, running, names)
    # The other two still in one statement each; the repeat by its key.
    after = paths(running)
    assert after["one_statement"] - before["one_statement"] == 2
    assert after["transaction"] - before["transaction"] == 1
    assert continued(replies["alone-a"]) and continued(replies["alone-c"]), replies
    # The repeat is answered with what its key stored, and wrote nothing.
    assert not replies["alone-b"].HasField("error"), replies["alone-b"]
    assert replies["alone-b"].complete_task.SerializeToString() == stored_reply
    assert await history_versions(db, names) == {"alone-a": 2, "alone-b": 1, "alone-c": 2}
