"""Hostile input: every RPC of every service (read from the
protobuf descriptors, so a new RPC is covered: by a hand-written strategy, else by one
read from its request's descriptor), fed what a careless or malicious
client could send, through the raw generated stubs (no client-side checks).

Requests are built by hypothesis: random and very long strings (NUL
characters, multi-byte text past the byte limits), ids of every wrong
length, random enum numbers, zero, negative and huge limits, TTLs and aging
intervals, corrupted snapshots (wrong id lengths, unset oneofs, duplicate
keys, out-of-range times and durations, NaN floats, bit-flipped wire bytes),
plus messages past the size limit and raw garbage bytes.

Asserted for every call: the status is OK, INVALID_ARGUMENT, NOT_FOUND,
FAILED_PRECONDITION, ABORTED or RESOURCE_EXHAUSTED (never INTERNAL or
UNKNOWN, never DATA_LOSS); a rejected call changes nothing (a fingerprint of
every table is the same before and after); the server still answers its
health check; and at the end the invariant checker is green, so the calls
that were accepted stored nothing unreadable.

Bytes that are not a valid protobuf encoding of the request (corrupt wire
format, invalid UTF-8 in a string field) would be answered UNKNOWN by
grpc.aio's runtime; the service's interceptor parses them itself and
answers INVALID_ARGUMENT, and the tests check that too.
"""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import grpc
import pytest
from google.protobuf import duration_pb2
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import SAYIIR_TABLES
from faults.support import Figures
from sayiir_client import AtSignal, AtTask, RetryPolicy, SignalKind, TaskId, WorkflowSnapshot, connect, convert
from sayiir_common.errors import error_from_status
from sayiir_common.proto.sayiir.v1 import operator_pb2 as op_pb
from sayiir_common.proto.sayiir.v1 import operator_pb2_grpc as op_grpc
from sayiir_common.proto.sayiir.v1 import signal_store_pb2 as sig_pb
from sayiir_common.proto.sayiir.v1 import signal_store_pb2_grpc as sig_grpc
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2 as snap_pb
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2_grpc as snap_grpc
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as claim_pb
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2_grpc as claim_grpc
from sayiir_grpc.app import RunningServer
from sayiir_grpc.invariants import check_invariants
from strategies.snapshots import snapshots

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

OK = grpc.StatusCode.OK
ALLOWED = {
    OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
}
EXAMPLES = 50
GARBAGE_EXAMPLES = 25
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
)

# -- seeded instances, so that many hostile calls reach the database ------------

T_RUN = TaskId.sha256("hostile-task")
EXISTING = ["h-running", "h-paused", "h-done", "h-parked"]


async def seed(target: str) -> None:
    async with connect(target, watch_wakeups=False) as client:
        for instance_id in EXISTING:
            snapshot = WorkflowSnapshot.with_initial_input(instance_id, "hostile-def", b'"in"')
            snapshot.update_position(AtTask(T_RUN))
            if instance_id == "h-parked":
                snapshot.update_position(AtSignal(TaskId.sha256("sig"), "go", None, T_RUN))
            await client.save_snapshot(snapshot)
        await client.claim_task("h-running", T_RUN, "w-1", 3600)
        await client.store_signal("h-paused", SignalKind.PAUSE)
        await client.check_and_pause("h-paused")
        done = await client.load_snapshot("h-done")
        done.mark_completed(b'"out"')
        await client.save_snapshot(done)


# -- field strategies --------------------------------------------------------------

texts = st.text(max_size=30)  # any code point but lone surrogates, NUL included


def _noise(size_and_seed: tuple[int, int]) -> str:
    """Incompressible text: PostgreSQL compresses a repetitive value and may then accept it."""
    size, seed = size_and_seed
    rng = random.Random(seed)
    return "".join(chr(rng.randrange(0x21, 0x7F)) for _ in range(size))


long_texts = st.one_of(
    st.sampled_from([1025, 4097, 70_000]).map(lambda n: "é" * (n // 2 + 1)),
    st.tuples(st.sampled_from([257, 1025, 2000, 2800, 4096, 5000]), st.integers(0, 2**16)).map(_noise),
)
ids = st.one_of(st.sampled_from(EXISTING), texts, st.just(""), long_texts, texts.map(lambda t: t + "\x00"))
task_ids = st.one_of(st.just(T_RUN.as_bytes()), st.binary(max_size=40), st.binary(min_size=32, max_size=32))
int32s = st.integers(-(2**31), 2**31 - 1)
int64s = st.integers(-(2**63), 2**63 - 1)
uint32s = st.integers(0, 2**32 - 1)
payloads = st.binary(max_size=64) | st.sampled_from([b"", b"\x00" * 1000, b"\xff" * 3])


@st.composite
def durations(draw: st.DrawFn) -> duration_pb2.Duration:
    seconds = draw(st.one_of(st.integers(-10, 10), st.integers(-(2**40), 2**40), int64s))
    return duration_pb2.Duration(seconds=seconds, nanos=draw(st.one_of(st.integers(-10, 10), int32s)))


def _corrupt_snapshot(message: Any, draw: st.DrawFn) -> None:
    """Apply one of many targeted corruptions to a WorkflowSnapshot message."""
    choice = draw(st.integers(0, 15))
    if choice == 0:
        message.definition_hash = draw(st.binary(max_size=40))
    elif choice == 1:
        message.ClearField("state")
    elif choice == 2:
        message.state.in_progress.position.at_task.task_id = draw(task_ids)
    elif choice == 3:
        tid = draw(task_ids)
        for _ in range(2):
            message.state.in_progress.completed_tasks.add(task_id=tid, output=draw(payloads))
    elif choice == 4:
        message.state.paused.paused_at.seconds = draw(int64s)
        message.state.paused.paused_at.nanos = draw(int32s)
    elif choice == 5:
        message.task_priority = draw(uint32s)
    elif choice == 6:
        message.task_tags.extend(draw(st.lists(texts, max_size=70)))
    elif choice == 7:
        message.trace_parent = draw(st.one_of(texts, long_texts))
    elif choice == 8:
        retry = message.task_retries.add(task_id=draw(task_ids), attempts=draw(uint32s))
        retry.policy.initial_delay.CopyFrom(draw(durations()))
        retry.policy.backoff_multiplier = draw(st.floats(width=32))
        if draw(st.booleans()):
            retry.policy.max_delay.CopyFrom(draw(durations()))
        retry.next_retry_at.seconds = draw(int64s)
    elif choice == 9:
        lid = draw(task_ids)
        message.loop_iterations.add(loop_id=lid, iteration=draw(uint32s))
        message.loop_iterations.add(loop_id=lid, iteration=draw(uint32s))
    elif choice == 10:
        message.state.in_progress.position.at_signal.signal_name = draw(st.one_of(texts, long_texts))
        message.state.in_progress.position.at_signal.signal_id = draw(task_ids)
    elif choice == 11:
        message.state.failed.error = draw(st.one_of(texts, long_texts))
    elif choice == 12:
        message.task_deadline.task_id = draw(task_ids)
        message.task_deadline.deadline.seconds = draw(int64s)
    elif choice == 13:
        message.state.in_progress.position.at_delay.delay_id = draw(task_ids)
        message.state.in_progress.position.at_delay.wake_at.nanos = draw(int32s)
    elif choice == 14:
        branch = message.state.in_progress.position.at_join.completed_branches.add(label=draw(texts))
        branch.result.task_id = draw(task_ids)
    else:
        message.state.cancelled.cancelled_by = draw(texts)
        message.state.cancelled.interrupted_at_task = draw(task_ids)


@st.composite
def snapshot_messages(draw: st.DrawFn) -> Any:
    message = convert.snapshot_to_proto(draw(snapshots()))
    message.instance_id = draw(ids)
    for _ in range(draw(st.integers(0, 3))):
        _corrupt_snapshot(message, draw)
    if draw(st.integers(0, 4)) == 0:
        # Bit flips on the wire form; kept when it still parses.
        raw = bytearray(message.SerializeToString())
        for _ in range(draw(st.integers(1, 4))):
            if raw:
                raw[draw(st.integers(0, len(raw) - 1))] ^= 1 << draw(st.integers(0, 7))
        flipped = type(message)()
        try:
            flipped.ParseFromString(bytes(raw))
        except DecodeError:
            return message
        return flipped
    return message


def _hint(draw: st.DrawFn) -> Any:
    return claim_pb.TaskWakeupHint(
        instance_id=draw(ids),
        task_id=draw(task_ids),
        definition_hash=draw(st.binary(max_size=40)),
        tags=draw(st.lists(texts, max_size=3)),
    )


def _optional(draw: st.DrawFn, message: Message, field: str, value: Any) -> None:
    if draw(st.booleans()):
        target = getattr(message, field)
        if isinstance(target, Message):
            target.CopyFrom(value)
        else:
            setattr(message, field, value)


def request_strategy(name: str) -> st.SearchStrategy[Message]:
    @st.composite
    def build(draw: st.DrawFn) -> Message:
        if name == "SaveSnapshot":
            message: Message = snap_pb.SaveSnapshotRequest()
            _optional(draw, message, "snapshot", draw(snapshot_messages()))
        elif name == "SaveTaskResult":
            message = snap_pb.SaveTaskResultRequest(
                instance_id=draw(ids), task_id=draw(task_ids), output=draw(payloads)
            )
        elif name in ("LoadSnapshot", "DeleteSnapshot"):
            message = getattr(snap_pb, f"{name}Request")(instance_id=draw(ids))
        elif name == "ListSnapshots":
            message = snap_pb.ListSnapshotsRequest(
                after_instance_id=draw(ids),
                page_size=draw(st.one_of(st.integers(0, 3), st.just(10_001), uint32s)),
                statuses=draw(st.lists(int32s, max_size=4)),
            )
        elif name == "StoreSignal":
            message = sig_pb.StoreSignalRequest(instance_id=draw(ids), kind=draw(int32s))
            if draw(st.booleans()):
                message.request.reason = draw(st.one_of(texts, long_texts))
            if draw(st.booleans()):
                message.request.requested_by = draw(st.one_of(texts, long_texts))
            if draw(st.booleans()):
                message.request.requested_at.seconds = draw(int64s)
        elif name in ("GetSignal", "ClearSignal"):
            message = getattr(sig_pb, f"{name}Request")(instance_id=draw(ids), kind=draw(int32s))
        elif name == "SendEvent":
            message = sig_pb.SendEventRequest(
                instance_id=draw(ids),
                signal_name=draw(st.one_of(st.just("go"), texts, long_texts)),
                payload=draw(payloads),
            )
        elif name == "ConsumeEvent":
            message = sig_pb.ConsumeEventRequest(
                instance_id=draw(ids), signal_name=draw(st.one_of(st.just("go"), texts, long_texts))
            )
        elif name in ("CheckAndCancel", "CheckControlSignals"):
            message = getattr(sig_pb, f"{name}Request")(instance_id=draw(ids))
            _optional(draw, message, "interrupted_at_task", draw(task_ids))
        elif name in ("CheckAndPause", "Unpause"):
            message = getattr(sig_pb, f"{name}Request")(instance_id=draw(ids))
        elif name in ("ClaimTask", "ExtendTaskClaim"):
            message = getattr(claim_pb, f"{name}Request")(
                instance_id=draw(ids), task_id=draw(task_ids), worker_id=draw(st.one_of(st.just("w-1"), ids))
            )
            _optional(draw, message, "ttl", draw(durations()))
        elif name == "ReleaseTaskClaim":
            message = claim_pb.ReleaseTaskClaimRequest(
                instance_id=draw(ids), task_id=draw(task_ids), worker_id=draw(st.one_of(st.just("w-1"), ids))
            )
        elif name == "FindAvailableTasks":
            message = claim_pb.FindAvailableTasksRequest(
                worker_id=draw(ids),
                limit=draw(st.one_of(st.integers(0, 3), st.just(1001), uint32s)),
                worker_tags=draw(st.lists(st.one_of(texts, long_texts), max_size=70)),
            )
            _optional(draw, message, "aging_interval", draw(durations()))
        elif name == "FindHintedTask":
            message = claim_pb.FindHintedTaskRequest()
            _optional(draw, message, "hint", _hint(draw))
        elif name == "SaveSnapshotFenced":
            message = claim_pb.SaveSnapshotFencedRequest(task_id=draw(task_ids), worker_id=draw(ids))
            _optional(draw, message, "snapshot", draw(snapshot_messages()))
        elif name == "WatchWakeups":
            message = claim_pb.WatchWakeupsRequest(
                worker_tags=draw(st.lists(st.one_of(texts, long_texts), max_size=70))
            )
        elif name == "ClaimAvailableTasks":
            message = claim_pb.ClaimAvailableTasksRequest(
                worker_id=draw(ids),
                limit=draw(st.one_of(st.integers(0, 3), st.just(1001), uint32s)),
                worker_tags=draw(st.lists(st.one_of(texts, long_texts), max_size=70)),
            )
            _optional(draw, message, "ttl", draw(durations()))
            _optional(draw, message, "aging_interval", draw(durations()))
        elif name == "CompleteTask":
            message = claim_pb.CompleteTaskRequest(
                instance_id=draw(ids),
                task_id=draw(task_ids),
                worker_id=draw(st.one_of(st.just("w-1"), ids)),
                output=draw(payloads),
                next_task_tags=draw(st.lists(st.one_of(texts, long_texts), max_size=70)),
            )
            _optional(draw, message, "next_task_id", draw(task_ids))
            _optional(draw, message, "next_task_priority", draw(uint32s))
            _optional(draw, message, "final_output", draw(payloads))
        elif name == "WorkerSession":
            message = claim_pb.WorkerSessionRequest(request_id=draw(st.one_of(ids, st.just(""), long_texts)))
            calls = [draw(request_strategy(kind)) for kind in ("ClaimAvailableTasks", "CompleteTask")]
            choice = draw(st.integers(0, 3))
            if choice == 0:
                message.claim_available_tasks.CopyFrom(calls[0])
            elif choice == 1:
                message.complete_task.CopyFrom(calls[1])
            elif choice == 2:  # a batch, maybe with a nested one
                for call in calls:
                    item = message.batch.add(request_id=draw(ids))
                    getattr(item, "claim_available_tasks" if call is calls[0] else "complete_task").CopyFrom(call)
                if draw(st.booleans()):
                    message.batch.add().batch.add(request_id="nested")
        elif name == "LoadTaskResult":
            message = claim_pb.LoadTaskResultRequest(instance_id=draw(ids), task_id=draw(task_ids))
        else:
            message = _empty_request(name)
            _fill_generic(draw, message)
        return message

    return build()


def _field_values(name: str, field: FieldDescriptor) -> st.SearchStrategy[Any]:
    """The hostile values of one scalar field, by its type (and its name for ids)."""
    kind = field.type
    if kind == FieldDescriptor.TYPE_STRING:
        return ids if name.endswith("_id") else st.one_of(texts, long_texts)
    if kind == FieldDescriptor.TYPE_BYTES:
        return task_ids if name.endswith("_id") or name.endswith("_hash") else payloads
    if kind == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if kind in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return st.floats(width=32)
    if kind in (FieldDescriptor.TYPE_UINT32, FieldDescriptor.TYPE_FIXED32):
        return uint32s
    if kind in (FieldDescriptor.TYPE_UINT64, FieldDescriptor.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if kind in (FieldDescriptor.TYPE_INT64, FieldDescriptor.TYPE_SINT64, FieldDescriptor.TYPE_SFIXED64):
        return int64s
    return int32s  # int32, sint32, sfixed32 and enums (any number, known or not)


def _fill_generic(draw: st.DrawFn, message: Message, depth: int = 0) -> None:
    """Hostile values for every field of a request no hand-written strategy covers,
    read from its descriptor: a new RPC is fuzzed from the day it is added."""
    for field in message.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        repeated = field.is_repeated
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            known = {"Duration": durations(), "WorkflowSnapshot": snapshot_messages()}
            for _ in range(draw(st.integers(1, 3)) if repeated else 1):
                target = getattr(message, field.name).add() if repeated else getattr(message, field.name)
                if field.message_type.name in known:
                    target.CopyFrom(draw(known[field.message_type.name]))
                elif depth < 3:
                    target.SetInParent()
                    _fill_generic(draw, target, depth + 1)
        elif repeated:
            getattr(message, field.name).extend(draw(st.lists(_field_values(field.name, field), max_size=40)))
        else:
            setattr(message, field.name, draw(_field_values(field.name, field)))


SERVICES: dict[str, tuple[Callable[[grpc.aio.Channel], Any], Any]] = {
    "SnapshotStore": (snap_grpc.SnapshotStoreStub, snap_pb),
    "SignalStore": (sig_grpc.SignalStoreStub, sig_pb),
    "TaskClaimStore": (claim_grpc.TaskClaimStoreStub, claim_pb),
    "TaskResultStore": (claim_grpc.TaskResultStoreStub, claim_pb),
    # No hand-written strategy: its requests are drawn from the descriptors.
    "WorkflowOperator": (op_grpc.WorkflowOperatorStub, op_pb),
}
RPCS = [
    (service, method.name)
    for service, (_, module) in SERVICES.items()
    for method in module.DESCRIPTOR.services_by_name[service].methods
]
STREAMING = {"WatchWakeups"}
# Client-and-server streams: the request is written on the stream, and the
# answer is the stream's status, or the status carried by an error reply.
SESSIONS = {"WorkerSession"}


def test_every_rpc_of_every_service_is_covered() -> None:
    # Read from the descriptors, so a new RPC without a strategy fails here.
    assert len(RPCS) >= 22
    for _, name in RPCS:
        request_strategy(name)  # raises for an RPC without a strategy


# -- harness ---------------------------------------------------------------------

FINGERPRINT = """
SELECT (SELECT count(*) FROM sayiir_workflow_snapshots) AS snapshots,
       (SELECT coalesce(sum(history_version), 0) FROM sayiir_workflow_snapshots) AS versions,
       (SELECT max(updated_at) FROM sayiir_workflow_snapshots) AS updated,
       (SELECT count(*) FROM sayiir_workflow_snapshot_history) AS history,
       (SELECT count(*) FROM sayiir_workflow_tasks) AS tasks,
       (SELECT max(completed_at) FROM sayiir_workflow_tasks) AS task_done,
       (SELECT count(*) FROM sayiir_workflow_signals) AS signals,
       (SELECT max(created_at) FROM sayiir_workflow_signals) AS signal_at,
       (SELECT count(*) FROM sayiir_workflow_claims) AS claims,
       (SELECT max(expires_at) FROM sayiir_workflow_claims) AS claim_expiry,
       (SELECT count(*) FROM sayiir_workflow_events) AS events
"""


class Harness:
    def __init__(self, channel: grpc.aio.Channel, pg: asyncpg.Connection) -> None:
        self.channel = channel
        self.pg = pg
        self.stubs = {service: factory(channel) for service, (factory, _) in SERVICES.items()}
        self.codes: dict[str, int] = {}
        self.rejected_unchanged = 0

    async def fingerprint(self) -> tuple[Any, ...]:
        return tuple(await self.pg.fetchrow(FINGERPRINT))

    async def invoke_session(self, method: Callable[..., Any], request: Any) -> tuple[grpc.StatusCode, str]:
        """Write `request` on a session, close it, read every reply: the first error's status, or OK."""
        call = method(timeout=10)
        await call.write(request)
        await call.done_writing()
        for reply in [reply async for reply in call]:
            if isinstance(reply, bytes):
                reply = claim_pb.WorkerSessionReply.FromString(reply)
            for one in reply.batch or (reply,):
                if one.WhichOneof("result") == "error":
                    error = error_from_status(one.error)
                    assert error.code is not None
                    return error.code, error.message
        return OK, ""

    async def invoke(
        self, method: Callable[..., Any], request: Any, streaming: bool, session: bool = False
    ) -> tuple[grpc.StatusCode, str]:
        try:
            if session:
                return await self.invoke_session(method, request)
            if streaming:
                call = method(request, timeout=10)
                try:
                    async for _ in call:
                        break  # the first event: the subscription is live
                finally:
                    call.cancel()
            else:
                await method(request, timeout=30)
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        return OK, ""

    async def check(
        self, label: str, method: Callable[..., Any], request: Any, streaming: bool, *, undecodable: bool = False
    ) -> grpc.StatusCode:
        before = await self.fingerprint()
        # Labels start with "Service.Method".
        session = label.split(" ")[0].rsplit(".", 1)[-1] in SESSIONS
        code, details = await self.invoke(method, request, streaming, session)
        self.codes[code.name] = self.codes.get(code.name, 0) + 1
        assert code in ALLOWED, f"{label}: {code.name}: {details}"
        if undecodable:
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "not a valid message" in details, (label, details)
        if code != OK:
            assert await self.fingerprint() == before, f"{label}: rejected with {code.name} but changed the database"
            self.rejected_unchanged += 1
        return code


@pytest.fixture(scope="module")
async def harness(isolated_service: tuple[RunningServer, str]) -> AsyncIterator[Harness]:
    running, url = isolated_service
    conn = await asyncpg.connect(url)
    await conn.execute(f"TRUNCATE {', '.join(SAYIIR_TABLES)}")
    target = f"127.0.0.1:{running.port}"
    await seed(target)
    options = [("grpc.max_receive_message_length", 64 * 1024 * 1024), ("grpc.max_send_message_length", -1)]
    channel = grpc.aio.insecure_channel(target, options=options)
    harness = Harness(channel, conn)
    try:
        yield harness
        # After everything: the service is up, and nothing it accepted broke an invariant.
        health = health_pb2_grpc.HealthStub(channel)
        response = await health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING
        violations = await check_invariants(conn)
        assert violations == [], [str(v) for v in violations]
        calls = sum(harness.codes.values())
        figures = Figures(calls=calls, succeeded=harness.codes.get("OK", 0))
        figures.extra.update(
            statuses=dict(sorted(harness.codes.items())),
            rejected_calls_checked_unchanged=harness.rejected_unchanged,
            rpcs=len(RPCS),
        )
        figures.record("hostile_input")
    finally:
        await channel.close()
        await conn.close()


async def assert_serving(channel: grpc.aio.Channel) -> None:
    response = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert response.status == health_pb2.HealthCheckResponse.SERVING


# -- the tests -----------------------------------------------------------------------


@pytest.mark.parametrize(("service", "name"), RPCS, ids=[f"{s}.{n}" for s, n in RPCS])
@SETTINGS
@given(data=st.data())
async def test_hostile_requests(harness: Harness, service: str, name: str, data: st.DataObject) -> None:
    request = data.draw(request_strategy(name), label="request")
    await harness.check(f"{service}.{name}", getattr(harness.stubs[service], name), request, name in STREAMING)
    await assert_serving(harness.channel)


@pytest.mark.parametrize(("service", "name"), RPCS, ids=[f"{s}.{n}" for s, n in RPCS])
@settings(SETTINGS, max_examples=10)
@given(data=st.data())
async def test_requests_read_from_the_descriptor(
    harness: Harness, service: str, name: str, data: st.DataObject
) -> None:
    # The strategy a new RPC gets until it has a hand-written one, run on every RPC.
    request = _empty_request(name)
    data.draw(st.composite(lambda draw: _fill_generic(draw, request))(), label="fields")
    await harness.check(f"{service}.{name}", getattr(harness.stubs[service], name), request, name in STREAMING)
    await assert_serving(harness.channel)


def _oversized(name: str) -> Message:
    """A request of `name` past the message limit (one huge text or bytes field)."""
    huge_text = "x" * (17 * 1024 * 1024)
    request = _empty_request(name)
    descriptor = request.DESCRIPTOR
    for field in descriptor.fields:
        if field.type == field.TYPE_STRING:
            if isinstance(getattr(request, field.name), str):
                setattr(request, field.name, huge_text)
            else:
                getattr(request, field.name).append(huge_text)
            return request
    # SaveSnapshot and FindHintedTask: the text sits one message down.
    for field in descriptor.fields:
        if field.type == field.TYPE_MESSAGE:
            getattr(request, field.name).instance_id = huge_text
            return request
    raise AssertionError(name)


def _empty_request(name: str) -> Message:
    for _, module in SERVICES.values():
        cls = getattr(module, f"{name}Request", None)
        if cls is not None:
            return cls()  # type: ignore[no-any-return]
    raise AssertionError(name)


@pytest.mark.parametrize(("service", "name"), RPCS, ids=[f"{s}.{n}" for s, n in RPCS])
async def test_requests_past_the_message_limit(harness: Harness, service: str, name: str) -> None:
    method = getattr(harness.stubs[service], name)
    code = await harness.check(f"{service}.{name} oversized", method, _oversized(name), name in STREAMING)
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def _field_bytes(number: int, payload: bytes) -> bytes:
    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload


def _invalid_utf8(descriptor: Any) -> bytes | None:
    """Wire bytes of a request whose first string field (maybe nested) is not UTF-8."""
    for field in descriptor.fields:
        if field.type == field.TYPE_STRING:
            return _field_bytes(field.number, b"ok\xc3\x28\xff")
    for field in descriptor.fields:
        if field.type == field.TYPE_MESSAGE:
            inner = _invalid_utf8(field.message_type)
            if inner is not None:
                return _field_bytes(field.number, inner)
    return None


def _raw_method(channel: grpc.aio.Channel, service: str, name: str) -> Callable[..., Any]:
    path = f"/sayiir.v1.{service}/{name}"
    if name in SESSIONS:
        return channel.stream_stream(path, request_serializer=None, response_deserializer=None)
    if name in STREAMING:
        return channel.unary_stream(path, request_serializer=None, response_deserializer=None)
    return channel.unary_unary(path, request_serializer=None, response_deserializer=None)


@pytest.mark.parametrize(("service", "name"), RPCS, ids=[f"{s}.{n}" for s, n in RPCS])
async def test_invalid_utf8_is_refused_before_any_handler(harness: Harness, service: str, name: str) -> None:
    invalid = _invalid_utf8(_empty_request(name).DESCRIPTOR)
    assert invalid is not None
    method = _raw_method(harness.channel, service, name)
    code = await harness.check(f"{service}.{name} invalid UTF-8", method, invalid, name in STREAMING, undecodable=True)
    assert code == grpc.StatusCode.INVALID_ARGUMENT  # refused before any handler runs
    await assert_serving(harness.channel)


@pytest.mark.parametrize(("service", "name"), RPCS, ids=[f"{s}.{n}" for s, n in RPCS])
@settings(
    max_examples=GARBAGE_EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(raw=st.binary(max_size=200))
async def test_garbage_bytes(harness: Harness, service: str, name: str, raw: bytes) -> None:
    try:
        _empty_request(name).FromString(raw)
        parses = True
    except DecodeError:
        parses = False
    method = _raw_method(harness.channel, service, name)
    code = await harness.check(
        f"{service}.{name} garbage {raw.hex()}", method, raw, name in STREAMING, undecodable=not parses
    )
    if not parses:
        assert code == grpc.StatusCode.INVALID_ARGUMENT


# -- what the fuzzing found (kept as plain regressions) --------------------------


@pytest.mark.parametrize("multiplier", [math.nan, math.inf, -math.inf])
async def test_a_non_finite_backoff_multiplier_is_refused(harness: Harness, multiplier: float) -> None:
    """Was accepted and stored as JSON null, which no reader decodes: every
    later load of the instance answered DATA_LOSS. Now INVALID_ARGUMENT."""
    snapshot = WorkflowSnapshot.new("h-nan", "hostile-def")
    snapshot.update_position(AtTask(T_RUN))
    snapshot.record_retry(T_RUN, RetryPolicy(3), "boom")
    message = convert.snapshot_to_proto(snapshot)
    message.task_retries[0].policy.backoff_multiplier = multiplier
    method = harness.stubs["SnapshotStore"].SaveSnapshot
    code = await harness.check("SaveSnapshot NaN", method, snap_pb.SaveSnapshotRequest(snapshot=message), False)
    assert code == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize(("id_bytes", "name_bytes"), [(10, 2800), (1024, 1025), (1024, 4096)])
async def test_a_signal_name_too_long_to_index_is_refused(harness: Harness, id_bytes: int, name_bytes: int) -> None:
    """Was INTERNAL: the buffered event's index entry (instance id, signal
    name) outgrew PostgreSQL's btree limit. Now INVALID_ARGUMENT, and a name
    as long as the limit allows, with the longest instance id, is buffered."""
    request = sig_pb.SendEventRequest(
        instance_id=_noise((id_bytes, 1)), signal_name=_noise((name_bytes, 2)), payload=b"x"
    )
    code = await harness.check("SendEvent long name", harness.stubs["SignalStore"].SendEvent, request, False)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    longest = sig_pb.SendEventRequest(instance_id=_noise((1024, 3)), signal_name=_noise((1024, 4)), payload=b"x")
    assert await harness.check("SendEvent longest", harness.stubs["SignalStore"].SendEvent, longest, False) == OK
