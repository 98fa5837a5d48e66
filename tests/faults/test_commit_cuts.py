"""The connection to PostgreSQL is cut right after a COMMIT succeeded.

The service sits behind `CommitCuttingProxy`, which drops the
service-to-PostgreSQL connection after PostgreSQL answered COMMIT and
before the service reads that answer. For each call whose repetition would
do harm (an event stored twice or lost, a claim that never expires, a
cancel or a completion reported as not applied):

- the Python client (one `x-request-id` per logical call) gets the true
  answer, and the call is applied exactly once;
- a raw stub sending its own key gets the true answer, and a repeat of the
  key answers the same without applying anything again; the key with
  another request is refused;
- a raw stub without a key gets UNKNOWN, never a "safe to retry" status.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import grpc
import pytest

from conftest import SAYIIR_TABLES, start_service
from faults.pg_proxy import CommitCuttingProxy
from faults.support import record_figures
from sayiir_client import AtTask, GrpcBackend, SignalKind, TaskId, WorkflowSnapshot, connect
from sayiir_common import convert
from sayiir_common.proto.sayiir.v1 import signal_store_pb2 as sig_pb
from sayiir_common.proto.sayiir.v1 import signal_store_pb2_grpc as sig_grpc
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2 as snap_pb
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2_grpc as snap_grpc
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as claim_pb
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2_grpc as claim_grpc
from sayiir_grpc.app import RunningServer

pytestmark = [pytest.mark.faults, pytest.mark.timeout(120)]

T1 = TaskId.sha256("cut-task")


@dataclass
class Setup:
    proxy: CommitCuttingProxy
    server: RunningServer
    url: str

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server.port}"


@pytest.fixture(scope="module")
async def setup(make_database: Callable[[], Awaitable[str]]) -> AsyncIterator[Setup]:
    url = await make_database()
    parts = urlsplit(url)
    proxy = CommitCuttingProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    port = await proxy.start()
    user = f"{parts.username}@" if parts.username else ""
    proxied = urlunsplit((parts.scheme, f"{user}127.0.0.1:{port}", parts.path, "sslmode=disable", ""))
    server = await start_service(proxied, listener_database_url=url, pool_max_connections=4)
    try:
        yield Setup(proxy, server, url)
    finally:
        await server.stop(grace=1)
        await proxy.stop()


@pytest.fixture
async def pg(setup: Setup) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(setup.url)
    await conn.execute(f"TRUNCATE {', '.join(SAYIIR_TABLES)}")
    yield conn
    await conn.close()


@pytest.fixture
async def client(setup: Setup, pg: asyncpg.Connection) -> AsyncIterator[GrpcBackend]:
    async with connect(setup.target, watch_wakeups=False) as backend:
        yield backend


async def seed(backend: GrpcBackend, instance_id: str) -> None:
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "cut-def", b'"input"')
    snapshot.update_position(AtTask(T1))
    await backend.save_snapshot(snapshot)


async def status_of(pg: asyncpg.Connection, instance_id: str) -> str | None:
    value: str | None = await pg.fetchval(
        "SELECT status FROM sayiir_workflow_snapshots WHERE instance_id = $1", instance_id
    )
    return value


async def count(pg: asyncpg.Connection, table: str, instance_id: str) -> int:
    return int(await pg.fetchval(f"SELECT count(*) FROM {table} WHERE instance_id = $1", instance_id))


@dataclass(frozen=True)
class Case:
    rpc: str
    service: str  # "signals", "claims" or "snapshots"
    prepare: Callable[[GrpcBackend, str], Awaitable[None]]
    request: Callable[[str], Any]
    client_call: Callable[[GrpcBackend, str], Awaitable[Any]]
    # The reply (raw) and the client's return value of the one true outcome.
    reply_ok: Callable[[Any, str], bool]
    client_ok: Callable[[Any, str], bool]
    # The database holds the effect of exactly one application.
    applied_once: Callable[[asyncpg.Connection, str], Awaitable[bool]]


async def _nothing(backend: GrpcBackend, instance_id: str) -> None:
    return None


async def _event_buffered(backend: GrpcBackend, instance_id: str) -> None:
    await backend.send_event(instance_id, "go", b"payload")


async def _cancel_requested(backend: GrpcBackend, instance_id: str) -> None:
    await seed(backend, instance_id)
    await backend.store_signal(instance_id, SignalKind.CANCEL)


async def _claimed(backend: GrpcBackend, instance_id: str) -> None:
    await seed(backend, instance_id)
    assert await backend.claim_task(instance_id, T1, "worker", 60) is not None


def _new_snapshot(instance_id: str) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "cut-def", b'"input"')
    snapshot.update_position(AtTask(T1))
    return snapshot


async def _saved_once(pg: asyncpg.Connection, instance_id: str) -> bool:
    # A second application would have written version 2.
    return await count(pg, "sayiir_workflow_snapshot_history", instance_id) == 1


async def _one_event(pg: asyncpg.Connection, instance_id: str) -> bool:
    return await count(pg, "sayiir_workflow_events", instance_id) == 1


async def _no_event(pg: asyncpg.Connection, instance_id: str) -> bool:
    return await count(pg, "sayiir_workflow_events", instance_id) == 0


async def _one_claim(pg: asyncpg.Connection, instance_id: str) -> bool:
    rows = await pg.fetch("SELECT worker_id FROM sayiir_workflow_claims WHERE instance_id = $1", instance_id)
    return [r["worker_id"] for r in rows] == ["worker"]


async def _cancelled(pg: asyncpg.Connection, instance_id: str) -> bool:
    return await status_of(pg, instance_id) == "Cancelled"


async def _completed(pg: asyncpg.Connection, instance_id: str) -> bool:
    done = await status_of(pg, instance_id) == "Completed"
    return done and await count(pg, "sayiir_workflow_claims", instance_id) == 0


CASES = [
    Case(
        # A keyed save is one autocommit statement (no COMMIT sent): the cut follows it.
        "SaveSnapshot",
        "snapshots",
        _nothing,
        lambda i: snap_pb.SaveSnapshotRequest(snapshot=convert.snapshot_to_proto(_new_snapshot(i))),
        lambda b, i: b.save_snapshot_written(_new_snapshot(i)),
        lambda reply, i: reply.written is True and reply.history_version == 1,
        lambda result, i: result is True,
        _saved_once,
    ),
    Case(
        "SendEvent",
        "signals",
        _nothing,
        lambda i: sig_pb.SendEventRequest(instance_id=i, signal_name="go", payload=b"payload"),
        lambda b, i: b.send_event(i, "go", b"payload"),
        lambda reply, i: reply.resumed is False,
        lambda result, i: result is False,
        _one_event,
    ),
    Case(
        "ConsumeEvent",
        "signals",
        _event_buffered,
        lambda i: sig_pb.ConsumeEventRequest(instance_id=i, signal_name="go"),
        lambda b, i: b.consume_event(i, "go"),
        lambda reply, i: reply.HasField("payload") and reply.payload == b"payload",
        lambda result, i: result == b"payload",
        _no_event,
    ),
    Case(
        "ClaimAvailableTasks",
        "claims",
        lambda b, i: seed(b, i),
        # No TTL: a claim the caller never hears of would never expire.
        # (The instance id only makes the refused "other request" differ.)
        lambda i: claim_pb.ClaimAvailableTasksRequest(worker_id="worker", limit=9 if i.endswith("-other") else 10),
        lambda b, i: b.claim_available_tasks("worker", 10),
        lambda reply, i: [t.instance_id for t in reply.tasks] == [i],
        lambda result, i: [t.instance_id for t in result] == [i],
        _one_claim,
    ),
    Case(
        "CheckAndCancel",
        "signals",
        _cancel_requested,
        lambda i: sig_pb.CheckAndCancelRequest(instance_id=i),
        lambda b, i: b.check_and_cancel(i),
        lambda reply, i: reply.cancelled is True,
        lambda result, i: result is True,
        _cancelled,
    ),
    Case(
        "CompleteTask",
        "claims",
        _claimed,
        lambda i: claim_pb.CompleteTaskRequest(
            instance_id=i, task_id=T1.as_bytes(), worker_id="worker", output=b'"out"', final_output=b'"done"'
        ),
        lambda b, i: b.complete_task(i, T1, "worker", b'"out"', final_output=b'"done"'),
        lambda reply, i: reply.completed is True,
        lambda result, i: result is True,
        _completed,
    ),
]


def stub_method(channel: grpc.aio.Channel, case: Case) -> Any:
    stubs = {"signals": sig_grpc.SignalStoreStub, "claims": claim_grpc.TaskClaimStoreStub}
    stub = stubs.get(case.service, snap_grpc.SnapshotStoreStub)(channel)
    return getattr(stub, case.rpc)


FIGURES: dict[str, Any] = {"cuts": 0, "applied_once": 0, "unknown_without_key": 0, "replays_checked": 0}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.rpc)
async def test_python_client_gets_the_true_answer_after_a_cut_commit(
    case: Case, setup: Setup, pg: asyncpg.Connection, client: GrpcBackend
) -> None:
    instance_id = f"cut-client-{case.rpc}-{uuid.uuid4().hex[:6]}"
    await case.prepare(client, instance_id)
    cuts = setup.proxy.cuts
    setup.proxy.cut_next_commit()
    result = await case.client_call(client, instance_id)
    assert setup.proxy.cuts == cuts + 1, "the proxy did not cut the commit"
    assert case.client_ok(result, instance_id), result
    assert await case.applied_once(pg, instance_id)
    FIGURES["cuts"] += 1
    FIGURES["applied_once"] += 1


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.rpc)
async def test_raw_stub_with_a_key_gets_the_stored_reply(
    case: Case, setup: Setup, pg: asyncpg.Connection, client: GrpcBackend
) -> None:
    instance_id = f"cut-key-{case.rpc}-{uuid.uuid4().hex[:6]}"
    await case.prepare(client, instance_id)
    key = (("x-request-id", uuid.uuid4().hex),)
    async with grpc.aio.insecure_channel(setup.target) as channel:
        method = stub_method(channel, case)
        setup.proxy.cut_next_commit()
        cuts = setup.proxy.cuts
        # One request for both sends: a retry resends the same bytes (a snapshot
        # made again could carry a later second in its timestamps).
        request = case.request(instance_id)
        first = await method(request, metadata=key)
        assert setup.proxy.cuts == cuts + 1
        assert case.reply_ok(first, instance_id), first
        # The client's own retry, as after a reply lost on the network.
        again = await method(request, metadata=key)
        assert again == first
        assert await case.applied_once(pg, instance_id)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await method(case.request(instance_id + "-other"), metadata=key)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "x-request-id" in (refused.value.details() or "")
    FIGURES["cuts"] += 1
    FIGURES["replays_checked"] += 1


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.rpc)
async def test_raw_stub_without_a_key_gets_unknown(
    case: Case, setup: Setup, pg: asyncpg.Connection, client: GrpcBackend
) -> None:
    instance_id = f"cut-nokey-{case.rpc}-{uuid.uuid4().hex[:6]}"
    await case.prepare(client, instance_id)
    async with grpc.aio.insecure_channel(setup.target) as channel:
        setup.proxy.cut_next_commit()
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await stub_method(channel, case)(case.request(instance_id))
    assert failed.value.code() == grpc.StatusCode.UNKNOWN, failed.value
    trailing = dict(failed.value.trailing_metadata() or ())
    assert trailing.get("sayiir-error") == "OutcomeUnknown"
    # It did commit: the answer was right not to invite a blind retry.
    assert await case.applied_once(pg, instance_id)
    FIGURES["cuts"] += 1
    FIGURES["unknown_without_key"] += 1
    if FIGURES["unknown_without_key"] == len(CASES):
        record_figures("commit_cuts", FIGURES)
