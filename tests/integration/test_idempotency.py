"""Idempotency keys are checked optimistically (`sayiir_grpc.idempotency`).

A first keyed call runs no lookup of its key: only the INSERT of its reply.
A repeat of a committed key is still answered with the first reply and
applies nothing twice, whether the repeat's own run would have succeeded
(its INSERT hits the stored key, and the rerun replays) or been refused (its
refusal looks the key up in the same transaction and replays). The key with
another request is refused with INVALID_ARGUMENT naming x-request-id on both
paths. The statements each call's transaction runs are recorded from the
service's own connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2

from conftest import SAYIIR_TABLES
from sayiir_client import AtTask, Duration, GrpcBackend, RetryPolicy, TaskId, WorkflowSnapshot, connect
from sayiir_common import convert
from sayiir_common.errors import NotFoundError, error_info
from sayiir_common.proto.sayiir.v1 import signal_store_pb2 as sig_pb
from sayiir_common.proto.sayiir.v1 import signal_store_pb2_grpc as sig_grpc
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2 as snap_pb
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2_grpc as snap_grpc
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as claim_pb
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2_grpc as claim_grpc
from sayiir_grpc.app import RunningServer
from sayiir_grpc.db import Database
from sayiir_grpc.idempotency import idempotent
from sayiir_grpc.stores import claim_replay
from sayiir_grpc.stores import idempotency as key_store

T1 = TaskId.sha256("idem-task")
# The generated stubs are untyped.
SignalStoreStub: Any = sig_grpc.SignalStoreStub
TaskClaimStoreStub: Any = claim_grpc.TaskClaimStoreStub
SnapshotStoreStub: Any = snap_grpc.SnapshotStoreStub
T = TypeVar("T")


@dataclass
class Run:
    """The statements one `Database.one_transaction` of the service ran (BEGIN/COMMIT aside)."""

    statements: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def log(self, record: asyncpg.connection.LoggedQuery) -> None:
        if record.exception is not None:
            self.failures.append(type(record.exception).__name__)
        if "sayiir_" in record.query:  # not asyncpg's own type introspection
            self.statements.append(record.query)

    @property
    def lookups(self) -> int:
        return self.statements.count(key_store.LOOKUP)

    @property
    def records(self) -> int:
        return self.statements.count(key_store.RECORD)


@pytest.fixture
async def runs(isolated_service: tuple[RunningServer, str], monkeypatch: pytest.MonkeyPatch) -> list[Run]:
    """Every call transaction of the service from now on, with its statements."""
    db = isolated_service[0].db
    original = db.one_transaction
    recorded: list[Run] = []

    async def recording(op: str, body: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        run = Run()
        recorded.append(run)

        async def logged(conn: asyncpg.Connection) -> T:
            conn.add_query_logger(run.log)
            try:
                return await body(conn)
            finally:
                conn.remove_query_logger(run.log)

        return await original(op, logged)

    monkeypatch.setattr(db, "one_transaction", recording)
    return recorded


@pytest.fixture
async def client(isolated_service: tuple[RunningServer, str]) -> AsyncIterator[GrpcBackend]:
    async with connect(f"127.0.0.1:{isolated_service[0].port}", watch_wakeups=False) as backend:
        yield backend


@pytest.fixture
async def channel(isolated_service: tuple[RunningServer, str]) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{isolated_service[0].port}") as opened:
        yield opened


@pytest.fixture
async def db_conn(isolated_service: tuple[RunningServer, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(isolated_service[1])
    yield conn
    await conn.close()


def new_key() -> tuple[tuple[str, str], ...]:
    return (("x-request-id", uuid.uuid4().hex),)


def new_instance() -> str:
    return f"idem-{uuid.uuid4().hex[:10]}"


def at_first_task(instance_id: str) -> WorkflowSnapshot:
    """A new workflow waiting at T1."""
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "idem-def", b'"input"')
    snapshot.update_position(AtTask(T1))
    return snapshot


async def claimed(client: GrpcBackend, instance_id: str) -> None:
    await client.save_snapshot(at_first_task(instance_id))
    assert await client.claim_task(instance_id, T1, "worker", 60) is not None


async def events(conn: asyncpg.Connection, instance_id: str) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM sayiir_workflow_events WHERE instance_id = $1", instance_id))


async def history_entries(conn: asyncpg.Connection, instance_id: str) -> int:
    return int(
        await conn.fetchval("SELECT count(*) FROM sayiir_workflow_snapshot_history WHERE instance_id = $1", instance_id)
    )


async def stored_keys(conn: asyncpg.Connection, key: tuple[tuple[str, str], ...]) -> int:
    return int(
        await conn.fetchval("SELECT count(*) FROM sayiir_grpc_idempotency_keys WHERE request_key = $1", key[0][1])
    )


def complete_request(instance_id: str, worker_id: str = "worker") -> claim_pb.CompleteTaskRequest:
    return claim_pb.CompleteTaskRequest(
        instance_id=instance_id, task_id=T1.as_bytes(), worker_id=worker_id, output=b'"out"', final_output=b'"done"'
    )


def release_request(instance_id: str, worker_id: str = "worker") -> claim_pb.ReleaseTaskClaimRequest:
    return claim_pb.ReleaseTaskClaimRequest(instance_id=instance_id, task_id=T1.as_bytes(), worker_id=worker_id)


async def refused_for_the_key(call: Awaitable[Any]) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await call
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value
    assert "x-request-id" in (refused.value.details() or "")
    info = error_info(refused.value.trailing_metadata())
    assert info is not None and info.metadata["field"] == "x-request-id"


# -- the first attempt --------------------------------------------------------


async def test_a_first_keyed_call_runs_no_lookup_only_the_insert(
    runs: list[Run], channel: grpc.aio.Channel, db_conn: asyncpg.Connection
) -> None:
    stub = SignalStoreStub(channel)
    unkeyed, keyed = new_instance(), new_instance()
    await stub.SendEvent(sig_pb.SendEventRequest(instance_id=unkeyed, signal_name="go", payload=b"p"))
    key = new_key()
    await stub.SendEvent(sig_pb.SendEventRequest(instance_id=keyed, signal_name="go", payload=b"p"), metadata=key)
    plain, with_key = runs
    assert (with_key.lookups, with_key.records) == (0, 1)
    # The key costs exactly one statement: the INSERT of the reply.
    assert with_key.statements == [*plain.statements, key_store.RECORD]
    assert await stored_keys(db_conn, key) == 1


async def test_a_first_keyed_complete_task_runs_no_lookup(
    runs: list[Run], client: GrpcBackend, channel: grpc.aio.Channel
) -> None:
    instance_id = new_instance()
    await claimed(client, instance_id)
    del runs[:]
    reply = await TaskClaimStoreStub(channel).CompleteTask(complete_request(instance_id), metadata=new_key())
    assert reply.completed
    (run,) = runs
    assert (run.lookups, run.records, run.failures) == (0, 1, [])


# -- a repeat whose own run would succeed ------------------------------------


async def test_a_repeated_send_event_replays_and_stores_one_event(
    runs: list[Run], channel: grpc.aio.Channel, db_conn: asyncpg.Connection
) -> None:
    stub = SignalStoreStub(channel)
    instance_id, key = new_instance(), new_key()
    request = sig_pb.SendEventRequest(instance_id=instance_id, signal_name="go", payload=b"p")
    first = await stub.SendEvent(request, metadata=key)
    del runs[:]
    again = await stub.SendEvent(request, metadata=key)
    assert again == first
    assert await events(db_conn, instance_id) == 1
    # The optimistic run stored a second event, then met the key and rolled
    # back; the rerun looked the key up first and replayed.
    optimistic, rerun = runs
    assert optimistic.lookups == 0 and optimistic.failures == ["UniqueViolationError"]
    assert rerun.statements == [key_store.LOOKUP]


async def test_concurrent_repeats_apply_once_and_share_one_reply(
    channel: grpc.aio.Channel, db_conn: asyncpg.Connection
) -> None:
    stub = SignalStoreStub(channel)
    instance_id, key = new_instance(), new_key()
    request = sig_pb.SendEventRequest(instance_id=instance_id, signal_name="go", payload=b"p")
    # Each waits at its INSERT for the one ahead; the first to commit wins,
    # the others meet its key and replay its reply.
    replies = await asyncio.gather(*(stub.SendEvent(request, metadata=key) for _ in range(4)))
    assert all(reply == replies[0] for reply in replies)
    assert await events(db_conn, instance_id) == 1
    assert await stored_keys(db_conn, key) == 1


async def test_a_repeated_complete_task_replays_completed_not_not_applied(
    runs: list[Run], client: GrpcBackend, channel: grpc.aio.Channel, db_conn: asyncpg.Connection
) -> None:
    instance_id = new_instance()
    await claimed(client, instance_id)
    stub = TaskClaimStoreStub(channel)
    key = new_key()
    first = await stub.CompleteTask(complete_request(instance_id), metadata=key)
    assert first.completed
    history = await history_entries(db_conn, instance_id)
    del runs[:]
    # The claim is gone (the first attempt released it): run again, CompleteTask
    # would answer completed=false; the repeat answers the first reply.
    again = await stub.CompleteTask(complete_request(instance_id), metadata=key)
    assert again == first
    assert [run.failures for run in runs] == [["UniqueViolationError"], []]
    assert await history_entries(db_conn, instance_id) == history
    status = await db_conn.fetchval("SELECT status FROM sayiir_workflow_snapshots WHERE instance_id = $1", instance_id)
    assert status == "Completed"


async def test_the_key_with_another_request_is_refused_after_a_success(
    runs: list[Run], channel: grpc.aio.Channel, db_conn: asyncpg.Connection
) -> None:
    stub = SignalStoreStub(channel)
    instance_id, key = new_instance(), new_key()
    await stub.SendEvent(sig_pb.SendEventRequest(instance_id=instance_id, signal_name="go", payload=b"p"), metadata=key)
    del runs[:]
    other = sig_pb.SendEventRequest(instance_id=instance_id, signal_name="go", payload=b"other")
    await refused_for_the_key(stub.SendEvent(other, metadata=key))
    # Found by the optimistic run's INSERT, refused by the rerun's lookup.
    assert [run.failures for run in runs] == [["UniqueViolationError"], []]
    assert runs[1].statements == [key_store.LOOKUP]
    # Another method under the key is refused too.
    await refused_for_the_key(
        SignalStoreStub(channel).ConsumeEvent(
            sig_pb.ConsumeEventRequest(instance_id=instance_id, signal_name="go"), metadata=key
        )
    )
    assert await events(db_conn, instance_id) == 1


# -- a repeat whose own run is refused ---------------------------------------


async def test_a_repeated_release_is_answered_the_first_reply_not_the_refusal(
    runs: list[Run], client: GrpcBackend, channel: grpc.aio.Channel, db_conn: asyncpg.Connection
) -> None:
    instance_id = new_instance()
    await claimed(client, instance_id)
    stub = TaskClaimStoreStub(channel)
    key = new_key()
    first = await stub.ReleaseTaskClaim(release_request(instance_id), metadata=key)
    del runs[:]
    again = await stub.ReleaseTaskClaim(release_request(instance_id), metadata=key)
    assert again == first
    # One transaction: the release was refused (no claim), the key was
    # looked up right after in the same transaction, and nothing written.
    (run,) = runs
    assert run.statements[0] != key_store.LOOKUP and run.statements[-1] == key_store.LOOKUP
    assert run.records == 0
    assert await stored_keys(db_conn, key) == 1
    # Without the key the same repeat is refused, as it always was.
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.ReleaseTaskClaim(release_request(instance_id))
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_repeated_delete_is_answered_the_first_reply(
    client: GrpcBackend, channel: grpc.aio.Channel, db_conn: asyncpg.Connection
) -> None:
    instance_id = new_instance()
    await claimed(client, instance_id)
    stub = SnapshotStoreStub(channel)
    key = new_key()
    first = await stub.DeleteSnapshot(snap_pb.DeleteSnapshotRequest(instance_id=instance_id), metadata=key)
    again = await stub.DeleteSnapshot(snap_pb.DeleteSnapshotRequest(instance_id=instance_id), metadata=key)
    assert again == first
    assert (
        await db_conn.fetchval("SELECT count(*) FROM sayiir_workflow_snapshots WHERE instance_id = $1", instance_id)
        == 0
    )


async def test_a_refusal_with_a_new_key_stores_nothing(
    runs: list[Run], channel: grpc.aio.Channel, db_conn: asyncpg.Connection
) -> None:
    key = new_key()
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await TaskClaimStoreStub(channel).ReleaseTaskClaim(release_request(new_instance()), metadata=key)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    # Looked up after the refusal, in the same transaction.
    (run,) = runs
    assert run.statements[0] != key_store.LOOKUP and run.statements[-1] == key_store.LOOKUP
    assert await stored_keys(db_conn, key) == 0


async def test_the_key_with_another_request_is_refused_on_the_refusal_path(
    runs: list[Run], client: GrpcBackend, channel: grpc.aio.Channel
) -> None:
    instance_id = new_instance()
    await claimed(client, instance_id)
    stub = TaskClaimStoreStub(channel)
    key = new_key()
    await stub.ReleaseTaskClaim(release_request(instance_id), metadata=key)
    del runs[:]
    # Another worker's release of the (gone) claim is refused by the store,
    # and the stored outcome under its key belongs to another request.
    await refused_for_the_key(stub.ReleaseTaskClaim(release_request(instance_id, "another"), metadata=key))
    (run,) = runs
    assert run.statements[0] != key_store.LOOKUP and run.statements[-1] == key_store.LOOKUP
    # So is another method, refused by its store, under the same key.
    await refused_for_the_key(
        stub.ExtendTaskClaim(
            claim_pb.ExtendTaskClaimRequest(
                instance_id=instance_id, task_id=T1.as_bytes(), worker_id="worker", ttl=duration_pb2.Duration(seconds=5)
            ),
            metadata=key,
        )
    )


# -- a refusal after a PostgreSQL error aborted the transaction ---------------


class _KeyOnly:
    def __init__(self, key: str) -> None:
        self.key = key

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("x-request-id", self.key),)


def key_context(key: str) -> Any:
    """A servicer context carrying only the call's key."""
    return _KeyOnly(key)


class _Servicer:
    """A mutating method that, when told to, swallows a PostgreSQL error and then refuses."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.break_then_refuse = False

    @idempotent(sig_pb.SendEventResponse)
    async def SendEvent(self, request: sig_pb.SendEventRequest, context: Any) -> sig_pb.SendEventResponse:
        if self.break_then_refuse:
            with contextlib.suppress(asyncpg.DivisionByZeroError):
                await self.db.run("break", lambda c: c.execute("SELECT 1 / 0"))
            raise NotFoundError("refused after the transaction was aborted")
        return sig_pb.SendEventResponse(resumed=True)


async def test_a_refusal_in_an_aborted_transaction_still_finds_the_stored_outcome(
    runs: list[Run], isolated_service: tuple[RunningServer, str], db_conn: asyncpg.Connection
) -> None:
    servicer = _Servicer(isolated_service[0].db)
    request = sig_pb.SendEventRequest(instance_id=new_instance(), signal_name="go")
    key = uuid.uuid4().hex
    first = await servicer.SendEvent(request, key_context(key))
    servicer.break_then_refuse = True
    del runs[:]
    # The lookup after the refusal cannot run (the transaction is aborted):
    # the call runs again looking the key up first, and replays.
    assert await servicer.SendEvent(request, key_context(key)) == first
    assert [run.failures for run in runs] == [["DivisionByZeroError", "InFailedSQLTransactionError"], []]
    assert runs[1].statements == [key_store.LOOKUP]
    # With a new key there is nothing to replay: the refusal is the answer.
    fresh = uuid.uuid4().hex
    with pytest.raises(NotFoundError):
        await servicer.SendEvent(request, key_context(fresh))
    assert await stored_keys(db_conn, (("x-request-id", fresh),)) == 0


# -- a keyed save is one statement ----------------------------------------------


async def test_a_keyed_save_is_one_statement_with_its_key_and_a_repeat_replays_it(
    runs: list[Run], channel: grpc.aio.Channel, db_conn: asyncpg.Connection
) -> None:
    instance_id, key = new_instance(), new_key()
    snapshot = at_first_task(instance_id)
    request = snap_pb.SaveSnapshotRequest(snapshot=convert.snapshot_to_proto(snapshot))
    stub = SnapshotStoreStub(channel)
    first = await stub.SaveSnapshot(request, metadata=key)
    assert (first.written, first.history_version) == (True, 1)
    # No call transaction: the save and its key were one autocommit statement.
    assert runs == []
    stored = await db_conn.fetchrow(
        "SELECT rpc, outcome FROM sayiir_grpc_idempotency_keys WHERE request_key = $1", key[0][1]
    )
    assert (stored["rpc"], bytes(stored["outcome"])) == ("SaveSnapshot", first.SerializeToString())
    # A repeat: the statement finds the key taken, writes nothing; the
    # transaction path answers the stored reply.
    again = await stub.SaveSnapshot(request, metadata=key)
    assert again == first
    assert await history_entries(db_conn, instance_id) == 1


async def test_a_keyed_save_over_a_terminal_snapshot_is_answered_not_written_with_its_version(
    channel: grpc.aio.Channel, db_conn: asyncpg.Connection
) -> None:
    instance_id = new_instance()
    snapshot = at_first_task(instance_id)
    stub = SnapshotStoreStub(channel)
    await stub.SaveSnapshot(snap_pb.SaveSnapshotRequest(snapshot=convert.snapshot_to_proto(snapshot)))
    snapshot.mark_completed(b'"done"')
    finished = await stub.SaveSnapshot(snap_pb.SaveSnapshotRequest(snapshot=convert.snapshot_to_proto(snapshot)))
    assert (finished.written, finished.history_version) == (True, 2)
    # The workflow again from its start: a finished workflow is never overwritten.
    restarted = at_first_task(instance_id)
    key = new_key()
    request = snap_pb.SaveSnapshotRequest(snapshot=convert.snapshot_to_proto(restarted))
    kept = await stub.SaveSnapshot(request, metadata=key)
    assert (kept.written, kept.history_version) == (False, 2)
    assert await stub.SaveSnapshot(request, metadata=key) == kept
    assert await history_entries(db_conn, instance_id) == 2


# -- a keyed claim is one statement ---------------------------------------------


async def only_these_workflows(conn: asyncpg.Connection) -> None:
    """Clear the workflows of earlier tests: a claim takes whatever is ready."""
    await conn.execute(f"TRUNCATE {', '.join(SAYIIR_TABLES)}")


async def test_a_keyed_claim_is_one_statement_with_its_outline_and_a_repeat_gets_the_tasks_still_held(
    runs: list[Run], client: GrpcBackend, channel: grpc.aio.Channel, db_conn: asyncpg.Connection
) -> None:
    await only_these_workflows(db_conn)
    instance_ids = sorted(new_instance() for _ in range(2))
    for instance_id in instance_ids:
        snapshot = at_first_task(instance_id)
        await client.save_snapshot(snapshot)
    request = claim_pb.ClaimAvailableTasksRequest(worker_id="claimer", limit=10, ttl=duration_pb2.Duration(seconds=60))
    stub, key = TaskClaimStoreStub(channel), new_key()
    del runs[:]
    first = await stub.ClaimAvailableTasks(request, metadata=key)
    assert sorted(t.instance_id for t in first.tasks) == instance_ids
    assert all(t.input == b'"input"' and t.snapshot.instance_id for t in first.tasks)
    # No call transaction: the claims and the key were one autocommit statement.
    assert runs == []
    stored = await db_conn.fetchrow(
        "SELECT rpc, outcome FROM sayiir_grpc_idempotency_keys WHERE request_key = $1", key[0][1]
    )
    in_order = claim_pb.ClaimAvailableTasksResponse(tasks=sorted(first.tasks, key=lambda t: t.instance_id))
    assert (stored["rpc"], bytes(stored["outcome"])) == (claim_replay.CLAIM_RPC, claim_replay.outline_of(in_order))
    # A repeat claims nothing more; it reads the outlined tasks again, whole.
    again = await stub.ClaimAvailableTasks(request, metadata=key)
    assert sorted(again.tasks, key=lambda t: t.instance_id) == list(in_order.tasks)
    # The statement found the key taken, so the transaction path looked it up
    # first: no second claim scan, nothing recorded.
    (repeat,) = runs
    assert repeat.statements[0] == key_store.LOOKUP and repeat.records == 0
    assert not any(claim_replay.CLAIM_RPC in q or "INSERT INTO sayiir_workflow_claims" in q for q in repeat.statements)
    claims = await db_conn.fetch(
        "SELECT instance_id, worker_id FROM sayiir_workflow_claims WHERE instance_id = ANY($1) ORDER BY 1",
        instance_ids,
    )
    assert [(r["instance_id"], r["worker_id"]) for r in claims] == [(i, "claimer") for i in instance_ids]
    # A key stored before outlines (the whole reply, under the method's old
    # name) is still answered.
    await db_conn.execute(
        "UPDATE sayiir_grpc_idempotency_keys SET rpc = $2, outcome = $3 WHERE request_key = $1",
        key[0][1],
        claim_replay.CLAIM_RPC_FULL_REPLY,
        first.SerializeToString(),
    )
    assert sorted(t.instance_id for t in (await stub.ClaimAvailableTasks(request, metadata=key)).tasks) == instance_ids
    # A task the worker no longer holds is no longer its answer.
    await client.release_task_claim(instance_ids[0], T1, "claimer")
    after_release = await stub.ClaimAvailableTasks(request, metadata=key)
    assert [t.instance_id for t in after_release.tasks] == instance_ids[1:]


async def test_a_keyed_claim_that_finds_nothing_stores_its_key_so_a_repeat_cannot_claim_anew(
    client: GrpcBackend, channel: grpc.aio.Channel, db_conn: asyncpg.Connection
) -> None:
    await only_these_workflows(db_conn)
    request = claim_pb.ClaimAvailableTasksRequest(worker_id="claimer", limit=10)
    stub, key = TaskClaimStoreStub(channel), new_key()
    assert list((await stub.ClaimAvailableTasks(request, metadata=key)).tasks) == []
    assert await stored_keys(db_conn, key) == 1
    instance_id = new_instance()
    snapshot = at_first_task(instance_id)
    await client.save_snapshot(snapshot)
    # The repeat answers what the first attempt did: nothing, and claims nothing.
    assert list((await stub.ClaimAvailableTasks(request, metadata=key)).tasks) == []
    assert (
        await db_conn.fetchval("SELECT count(*) FROM sayiir_workflow_claims WHERE instance_id = $1", instance_id) == 0
    )


async def test_a_repeated_claim_gives_back_a_claimed_task_that_cannot_run(
    client: GrpcBackend, channel: grpc.aio.Channel, db_conn: asyncpg.Connection
) -> None:
    """A claim's releases run after its one statement; had one been lost (the
    call cancelled, say), a repeat checks again: a task backing off is given
    back, not answered."""
    await only_these_workflows(db_conn)
    instance_id = new_instance()
    snapshot = at_first_task(instance_id)
    snapshot.record_retry(T1, RetryPolicy(3, initial_delay=Duration(3600)), "boom")
    await client.save_snapshot(snapshot)
    request = claim_pb.ClaimAvailableTasksRequest(worker_id="claimer", limit=10, ttl=duration_pb2.Duration(seconds=60))
    stub, key = TaskClaimStoreStub(channel), new_key()
    # The statement claims it (the backoff is in the blob); the call gives it back.
    assert list((await stub.ClaimAvailableTasks(request, metadata=key)).tasks) == []
    outcome = "SELECT outcome FROM sayiir_grpc_idempotency_keys WHERE request_key = $1"
    stored = await db_conn.fetchval(outcome, key[0][1])
    assert [t.instance_id for t in claim_pb.ClaimAvailableTasksResponse.FromString(stored).tasks] == [instance_id]
    claims = "SELECT count(*) FROM sayiir_workflow_claims WHERE instance_id = $1"
    assert await db_conn.fetchval(claims, instance_id) == 0
    # As if that release had been lost.
    await db_conn.execute(
        "INSERT INTO sayiir_workflow_claims (instance_id, task_id, worker_id, claimed_at, expires_at)"
        " VALUES ($1, $2, 'claimer', now(), now() + interval '1 minute')",
        instance_id,
        T1.as_bytes(),
    )
    assert list((await stub.ClaimAvailableTasks(request, metadata=key)).tasks) == []
    assert await db_conn.fetchval(claims, instance_id) == 0
