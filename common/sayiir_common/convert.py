"""Model <-> protobuf conversion of every message of the RPCs, both ways, with
validation of everything that arrives (through the checks of `checks`).

`snapshot_from_proto` is the one gate every incoming snapshot passes: it
rejects what the database or the engine could not hold (wrong id lengths,
unset oneofs, NUL characters in text columns, duplicate map keys, times
outside years 1 to 9999) with `InvalidField`, whose message names the field.
The server turns that into INVALID_ARGUMENT before touching the database.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from google.protobuf import duration_pb2, timestamp_pb2

from sayiir_common.checks import (
    MAX_SIGNAL_NAME_BYTES,
    MAX_SIGNAL_TEXT_BYTES,
    MAX_TRACE_PARENT_BYTES,
    InvalidField,
    check_instance_id,
    check_priority,
    check_tags,
    check_text,
    optional_task_id,
    task_id_from,
)
from sayiir_common.ids import HASH_LEN, DefinitionHash, TaskId
from sayiir_common.model import (
    MAX_TIMESTAMP_SECONDS,
    MIN_TIMESTAMP_SECONDS,
    NANOS_PER_SECOND,
    AtDelay,
    AtFork,
    AtJoin,
    AtSignal,
    AtTask,
    AvailableTask,
    Cancelled,
    ClaimedTask,
    Completed,
    ControlSignal,
    Duration,
    ExecutionPosition,
    Failed,
    InLoop,
    InProgress,
    NotStarted,
    Paused,
    RetryPolicy,
    SignalKind,
    SignalRequest,
    TaskClaim,
    TaskDeadline,
    TaskResult,
    TaskRetryState,
    TaskWakeupHint,
    Timestamp,
    WorkflowSnapshot,
    WorkflowSnapshotState,
)
from sayiir_common.proto.sayiir.v1 import signal_store_pb2 as sig_pb
from sayiir_common.proto.sayiir.v1 import snapshot_pb2 as pb
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as claim_pb

U32_MAX = 2**32 - 1


# Enum values on the wire, both ways; the one place client and server map them.
STATUS_TO_PROTO: dict[str, pb.SnapshotStatus] = {
    "InProgress": pb.SNAPSHOT_STATUS_IN_PROGRESS,
    "Completed": pb.SNAPSHOT_STATUS_COMPLETED,
    "Failed": pb.SNAPSHOT_STATUS_FAILED,
    "Cancelled": pb.SNAPSHOT_STATUS_CANCELLED,
    "Paused": pb.SNAPSHOT_STATUS_PAUSED,
}
PROTO_TO_STATUS: dict[int, str] = {v: k for k, v in STATUS_TO_PROTO.items()}
SIGNAL_KIND_TO_PROTO: dict[SignalKind, sig_pb.SignalKind] = {
    SignalKind.CANCEL: sig_pb.SIGNAL_KIND_CANCEL,
    SignalKind.PAUSE: sig_pb.SIGNAL_KIND_PAUSE,
}
PROTO_TO_SIGNAL_KIND: dict[int, SignalKind] = {v: k for k, v in SIGNAL_KIND_TO_PROTO.items()}
CONTROL_SIGNAL_TO_PROTO: dict[ControlSignal | None, sig_pb.ControlSignal] = {
    None: sig_pb.CONTROL_SIGNAL_NONE,
    ControlSignal.CANCELLED: sig_pb.CONTROL_SIGNAL_CANCELLED,
    ControlSignal.PAUSED: sig_pb.CONTROL_SIGNAL_PAUSED,
}
PROTO_TO_CONTROL_SIGNAL: dict[int, ControlSignal | None] = {v: k for k, v in CONTROL_SIGNAL_TO_PROTO.items()}


def _definition_hash(field: str, raw: bytes) -> DefinitionHash:
    if len(raw) != HASH_LEN:
        raise InvalidField(field, f"must be {HASH_LEN} bytes, got {len(raw)}")
    return DefinitionHash(raw)


# The first and last microsecond of years 1 to 9999 are the `datetime` values
# the database driver writes as -infinity and +infinity: a stored timestamp
# must lie strictly between them to read back as itself.
FIRST_MICROSECOND_NANOS = 1_000
LAST_MICROSECOND_NANOS = 999_999_000
TIMESTAMP_RANGE = "after 0001-01-01T00:00:00.000001Z and before 9999-12-31T23:59:59.999999Z"


def _timestamp(field: str, message: timestamp_pb2.Timestamp) -> Timestamp:
    if not 0 <= message.nanos < NANOS_PER_SECOND:
        raise InvalidField(field, "nanos must be in [0, 999999999]")
    seconds, nanos = message.seconds, message.nanos
    if (
        not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS
        or (seconds == MIN_TIMESTAMP_SECONDS and nanos < FIRST_MICROSECOND_NANOS)
        or (seconds == MAX_TIMESTAMP_SECONDS and nanos >= LAST_MICROSECOND_NANOS)
    ):
        raise InvalidField(field, f"must be {TIMESTAMP_RANGE}")
    return Timestamp(seconds, nanos)


def _required_timestamp(parent: object, name: str, path: str) -> Timestamp:
    if not parent.HasField(name):  # type: ignore[attr-defined]
        raise InvalidField(f"{path}.{name}", "is required")
    return _timestamp(f"{path}.{name}", getattr(parent, name))


def _duration(field: str, message: duration_pb2.Duration) -> Duration:
    if message.seconds < 0 or message.nanos < 0 or message.nanos >= NANOS_PER_SECOND:
        raise InvalidField(field, "must be a non-negative duration")
    return Duration(message.seconds, message.nanos)


def _task_results(path: str, items: Iterable[pb.TaskResult]) -> dict[TaskId, TaskResult]:
    out: dict[TaskId, TaskResult] = {}
    for index, item in enumerate(items):
        tid = task_id_from(f"{path}[{index}].task_id", item.task_id)
        if tid in out:
            raise InvalidField(f"{path}[{index}].task_id", f"duplicate task id {tid.to_hex()}")
        out[tid] = TaskResult(tid, item.output)
    return out


def _branches(path: str, items: Iterable[pb.BranchResult]) -> dict[str, TaskResult]:
    out: dict[str, TaskResult] = {}
    for index, item in enumerate(items):
        label = item.label
        if label in out:
            raise InvalidField(f"{path}[{index}].label", f"duplicate branch label {label!r}")
        result = item.result
        out[label] = TaskResult(task_id_from(f"{path}[{index}].result.task_id", result.task_id), result.output)
    return out


# --------------------------------------------------------------------------
# proto -> model
# --------------------------------------------------------------------------


def position_from_proto(path: str, message: pb.ExecutionPosition) -> ExecutionPosition:
    kind = message.WhichOneof("kind")
    if kind is None:
        raise InvalidField(path, "no position kind is set (or the kind is unknown to this server)")
    p = f"{path}.{kind}"
    if kind == "not_started":
        return NotStarted()
    if kind == "at_task":
        return AtTask(task_id_from(f"{p}.task_id", message.at_task.task_id))
    if kind == "at_fork":
        m = message.at_fork
        return AtFork(
            task_id_from(f"{p}.fork_id", m.fork_id),
            _branches(f"{p}.completed_branches", m.completed_branches),
            _required_timestamp(m, "wake_at", p),
        )
    if kind == "at_join":
        j = message.at_join
        return AtJoin(
            task_id_from(f"{p}.join_id", j.join_id), _branches(f"{p}.completed_branches", j.completed_branches)
        )
    if kind == "at_delay":
        d = message.at_delay
        return AtDelay(
            task_id_from(f"{p}.delay_id", d.delay_id),
            _required_timestamp(d, "entered_at", p),
            _required_timestamp(d, "wake_at", p),
            optional_task_id(d, "next_task_id", p),
        )
    if kind == "at_signal":
        s = message.at_signal
        return AtSignal(
            task_id_from(f"{p}.signal_id", s.signal_id),
            check_text(f"{p}.signal_name", s.signal_name, required=True, max_bytes=MAX_SIGNAL_NAME_BYTES),
            _timestamp(f"{p}.wake_at", s.wake_at) if s.HasField("wake_at") else None,
            optional_task_id(s, "next_task_id", p),
        )
    loop = message.in_loop
    return InLoop(task_id_from(f"{p}.loop_id", loop.loop_id), loop.iteration, optional_task_id(loop, "next_task_id", p))


def state_from_proto(path: str, message: pb.WorkflowSnapshotState) -> WorkflowSnapshotState:
    kind = message.WhichOneof("state")
    if kind is None:
        raise InvalidField(path, "no state is set (or the state is unknown to this server)")
    p = f"{path}.{kind}"
    if kind == "in_progress":
        m = message.in_progress
        if not m.HasField("position"):
            raise InvalidField(f"{p}.position", "is required")
        return InProgress(
            position_from_proto(f"{p}.position", m.position),
            _task_results(f"{p}.completed_tasks", m.completed_tasks),
            optional_task_id(m, "last_completed_task_id", p),
        )
    if kind == "completed":
        return Completed(message.completed.final_output)
    if kind == "failed":
        return Failed(check_text(f"{p}.error", message.failed.error))
    if kind == "cancelled":
        c = message.cancelled
        return Cancelled(
            check_text(f"{p}.reason", c.reason) if c.HasField("reason") else None,
            check_text(f"{p}.cancelled_by", c.cancelled_by) if c.HasField("cancelled_by") else None,
            _required_timestamp(c, "cancelled_at", p),
            _task_results(f"{p}.completed_tasks", c.completed_tasks),
            optional_task_id(c, "interrupted_at_task", p),
        )
    z = message.paused
    if not z.HasField("position"):
        raise InvalidField(f"{p}.position", "is required")
    return Paused(
        check_text(f"{p}.reason", z.reason) if z.HasField("reason") else None,
        check_text(f"{p}.paused_by", z.paused_by) if z.HasField("paused_by") else None,
        _required_timestamp(z, "paused_at", p),
        _task_results(f"{p}.completed_tasks", z.completed_tasks),
        position_from_proto(f"{p}.position", z.position),
        optional_task_id(z, "last_completed_task_id", p),
    )


def snapshot_from_proto(message: pb.WorkflowSnapshot, path: str = "snapshot") -> WorkflowSnapshot:
    """Validate and convert a snapshot message; raises `InvalidField`."""
    instance_id = check_instance_id(f"{path}.instance_id", message.instance_id)
    definition_hash = _definition_hash(f"{path}.definition_hash", message.definition_hash)
    if not message.HasField("state"):
        raise InvalidField(f"{path}.state", "is required")
    state = state_from_proto(f"{path}.state", message.state)
    deadline = None
    if message.HasField("task_deadline"):
        d = message.task_deadline
        deadline = TaskDeadline(
            task_id_from(f"{path}.task_deadline.task_id", d.task_id),
            _required_timestamp(d, "deadline", f"{path}.task_deadline"),
            d.timeout_ms,
        )
    retries: dict[TaskId, TaskRetryState] = {}
    for index, r in enumerate(message.task_retries):
        p = f"{path}.task_retries[{index}]"
        tid = task_id_from(f"{p}.task_id", r.task_id)
        if tid in retries:
            raise InvalidField(f"{p}.task_id", f"duplicate task id {tid.to_hex()}")
        if not r.HasField("policy"):
            raise InvalidField(f"{p}.policy", "is required")
        pol = r.policy
        if not pol.HasField("initial_delay"):
            raise InvalidField(f"{p}.policy.initial_delay", "is required")
        if not math.isfinite(pol.backoff_multiplier):
            # JSON (serde's and ours) writes NaN and infinities as null, which
            # no reader accepts back: the snapshot would be stored unreadable.
            raise InvalidField(f"{p}.policy.backoff_multiplier", "must be a finite number")
        policy = RetryPolicy(
            pol.max_retries,
            _duration(f"{p}.policy.initial_delay", pol.initial_delay),
            pol.backoff_multiplier,
            _duration(f"{p}.policy.max_delay", pol.max_delay) if pol.HasField("max_delay") else None,
        )
        retries[tid] = TaskRetryState(
            attempts=r.attempts,
            policy=policy,
            last_error=r.last_error,
            next_retry_at=_required_timestamp(r, "next_retry_at", p),
            last_failed_worker=r.last_failed_worker if r.HasField("last_failed_worker") else None,
        )
    loops: dict[TaskId, int] = {}
    for index, loop in enumerate(message.loop_iterations):
        lid = task_id_from(f"{path}.loop_iterations[{index}].loop_id", loop.loop_id)
        if lid in loops:
            raise InvalidField(f"{path}.loop_iterations[{index}].loop_id", f"duplicate loop id {lid.to_hex()}")
        loops[lid] = loop.iteration
    priority = None
    if message.HasField("task_priority"):
        priority = check_priority(f"{path}.task_priority", message.task_priority)
    tags = check_tags(f"{path}.task_tags", list(message.task_tags))
    trace_parent = None
    if message.HasField("trace_parent"):
        trace_parent = check_text(f"{path}.trace_parent", message.trace_parent, max_bytes=MAX_TRACE_PARENT_BYTES)
    return WorkflowSnapshot(
        instance_id=instance_id,
        definition_hash=definition_hash,
        state=state,
        created_at=message.created_at,
        updated_at=message.updated_at,
        initial_input=message.initial_input if message.HasField("initial_input") else None,
        task_deadline=deadline,
        task_retries=retries,
        loop_iterations=loops,
        task_priority=priority,
        task_tags=tags,
        trace_parent=trace_parent,
    )


# --------------------------------------------------------------------------
# model -> proto
# --------------------------------------------------------------------------


def _set_ts(target: timestamp_pb2.Timestamp, value: Timestamp) -> None:
    target.seconds = value.seconds
    target.nanos = value.nanos


def _set_duration(target: duration_pb2.Duration, value: Duration) -> None:
    target.seconds = value.secs
    target.nanos = value.nanos


def _fill_results(target: Iterable[pb.TaskResult], tasks: dict[TaskId, TaskResult]) -> None:
    add = target.add  # type: ignore[attr-defined]
    for tid, result in tasks.items():
        add(task_id=tid.as_bytes(), output=result.output)


def _fill_branches(target: Iterable[pb.BranchResult], branches: dict[str, TaskResult]) -> None:
    add = target.add  # type: ignore[attr-defined]
    for label, result in branches.items():
        add(label=label, result=pb.TaskResult(task_id=result.task_id.as_bytes(), output=result.output))


def fill_position(target: pb.ExecutionPosition, position: ExecutionPosition) -> None:
    if isinstance(position, NotStarted):
        target.not_started.SetInParent()
    elif isinstance(position, AtTask):
        target.at_task.task_id = position.task_id.as_bytes()
    elif isinstance(position, AtFork):
        f = target.at_fork
        f.fork_id = position.fork_id.as_bytes()
        _fill_branches(f.completed_branches, position.completed_branches)
        _set_ts(f.wake_at, position.wake_at)
    elif isinstance(position, AtJoin):
        target.at_join.join_id = position.join_id.as_bytes()
        target.at_join.SetInParent()
        _fill_branches(target.at_join.completed_branches, position.completed_branches)
    elif isinstance(position, AtDelay):
        d = target.at_delay
        d.delay_id = position.delay_id.as_bytes()
        _set_ts(d.entered_at, position.entered_at)
        _set_ts(d.wake_at, position.wake_at)
        if position.next_task_id is not None:
            d.next_task_id = position.next_task_id.as_bytes()
    elif isinstance(position, AtSignal):
        s = target.at_signal
        s.signal_id = position.signal_id.as_bytes()
        s.signal_name = position.signal_name
        if position.wake_at is not None:
            _set_ts(s.wake_at, position.wake_at)
        if position.next_task_id is not None:
            s.next_task_id = position.next_task_id.as_bytes()
    elif isinstance(position, InLoop):
        loop = target.in_loop
        loop.loop_id = position.loop_id.as_bytes()
        loop.iteration = position.iteration
        loop.SetInParent()
        if position.next_task_id is not None:
            loop.next_task_id = position.next_task_id.as_bytes()
    else:
        raise TypeError(f"unknown position {type(position).__name__}")


def fill_state(target: pb.WorkflowSnapshotState, state: WorkflowSnapshotState) -> None:
    if isinstance(state, InProgress):
        m = target.in_progress
        fill_position(m.position, state.position)
        _fill_results(m.completed_tasks, state.completed_tasks)
        if state.last_completed_task_id is not None:
            m.last_completed_task_id = state.last_completed_task_id.as_bytes()
    elif isinstance(state, Completed):
        target.completed.final_output = state.final_output
        target.completed.SetInParent()
    elif isinstance(state, Failed):
        target.failed.error = state.error
        target.failed.SetInParent()
    elif isinstance(state, Cancelled):
        c = target.cancelled
        if state.reason is not None:
            c.reason = state.reason
        if state.cancelled_by is not None:
            c.cancelled_by = state.cancelled_by
        _set_ts(c.cancelled_at, state.cancelled_at)
        _fill_results(c.completed_tasks, state.completed_tasks)
        if state.interrupted_at_task is not None:
            c.interrupted_at_task = state.interrupted_at_task.as_bytes()
    elif isinstance(state, Paused):
        z = target.paused
        if state.reason is not None:
            z.reason = state.reason
        if state.paused_by is not None:
            z.paused_by = state.paused_by
        _set_ts(z.paused_at, state.paused_at)
        _fill_results(z.completed_tasks, state.completed_tasks)
        fill_position(z.position, state.position)
        if state.last_completed_task_id is not None:
            z.last_completed_task_id = state.last_completed_task_id.as_bytes()
    else:
        raise TypeError(f"unknown state {type(state).__name__}")


def fill_snapshot(target: pb.WorkflowSnapshot, snapshot: WorkflowSnapshot) -> None:
    target.instance_id = snapshot.instance_id
    target.definition_hash = snapshot.definition_hash.as_bytes()
    fill_state(target.state, snapshot.state)
    target.created_at = snapshot.created_at
    target.updated_at = snapshot.updated_at
    if snapshot.initial_input is not None:
        target.initial_input = snapshot.initial_input
    if snapshot.task_deadline is not None:
        d = target.task_deadline
        d.task_id = snapshot.task_deadline.task_id.as_bytes()
        _set_ts(d.deadline, snapshot.task_deadline.deadline)
        d.timeout_ms = snapshot.task_deadline.timeout_ms
    for tid, retry in snapshot.task_retries.items():
        r = target.task_retries.add(task_id=tid.as_bytes(), attempts=retry.attempts, last_error=retry.last_error)
        r.policy.max_retries = retry.policy.max_retries
        _set_duration(r.policy.initial_delay, retry.policy.initial_delay)
        r.policy.backoff_multiplier = retry.policy.backoff_multiplier
        if retry.policy.max_delay is not None:
            _set_duration(r.policy.max_delay, retry.policy.max_delay)
        if retry.last_failed_worker is not None:
            r.last_failed_worker = retry.last_failed_worker
        _set_ts(r.next_retry_at, retry.next_retry_at)
    for lid, iteration in snapshot.loop_iterations.items():
        target.loop_iterations.add(loop_id=lid.as_bytes(), iteration=iteration)
    if snapshot.task_priority is not None:
        target.task_priority = snapshot.task_priority
    target.task_tags.extend(snapshot.task_tags)
    if snapshot.trace_parent is not None:
        target.trace_parent = snapshot.trace_parent


def snapshot_to_proto(snapshot: WorkflowSnapshot) -> pb.WorkflowSnapshot:
    message = pb.WorkflowSnapshot()
    fill_snapshot(message, snapshot)
    return message


# --------------------------------------------------------------------------
# The other messages of the RPCs, both ways
# --------------------------------------------------------------------------


def duration_to_proto(seconds: float) -> duration_pb2.Duration:
    whole = int(seconds // 1)
    return duration_pb2.Duration(seconds=whole, nanos=round((seconds - whole) * 1e9))


def signal_kind_from(field: str, value: int) -> SignalKind:
    if value not in PROTO_TO_SIGNAL_KIND:
        raise InvalidField(field, f"must be SIGNAL_KIND_CANCEL or SIGNAL_KIND_PAUSE, got {value}")
    return PROTO_TO_SIGNAL_KIND[value]


def signal_request_to_proto(request: SignalRequest) -> sig_pb.SignalRequest:
    message = sig_pb.SignalRequest()
    if request.reason is not None:
        message.reason = request.reason
    if request.requested_by is not None:
        message.requested_by = request.requested_by
    _set_ts(message.requested_at, request.requested_at)
    return message


def signal_request_from_proto(message: sig_pb.SignalRequest, path: str) -> SignalRequest:
    """The request's texts, checked; `requested_at` is the server's to set, so
    a time a StoreSignal sends is ignored rather than checked."""
    reason = message.reason if message.HasField("reason") else None
    by = message.requested_by if message.HasField("requested_by") else None
    for field, value in ((f"{path}.reason", reason), (f"{path}.requested_by", by)):
        if value is not None:
            check_text(field, value, max_bytes=MAX_SIGNAL_TEXT_BYTES)
    at = message.requested_at
    try:
        requested_at = Timestamp(at.seconds, at.nanos) if message.HasField("requested_at") else Timestamp.now()
    except ValueError:
        requested_at = Timestamp.now()
    return SignalRequest(reason, by, requested_at)


def task_claim_to_proto(claim: TaskClaim) -> claim_pb.TaskClaim:
    message = claim_pb.TaskClaim(
        instance_id=claim.instance_id,
        task_id=claim.task_id.as_bytes(),
        worker_id=claim.worker_id,
        claimed_at=claim.claimed_at,
    )
    if claim.expires_at is not None:
        message.expires_at = claim.expires_at
    return message


def task_claim_from_proto(message: claim_pb.TaskClaim) -> TaskClaim:
    return TaskClaim(
        message.instance_id,
        task_id_from("claim.task_id", message.task_id),
        message.worker_id,
        message.claimed_at,
        message.expires_at if message.HasField("expires_at") else None,
    )


def available_task_to_proto(task: AvailableTask, with_snapshot: bool = True) -> claim_pb.AvailableTask:
    """`with_snapshot=False`: the light form (omit_snapshot, a continued claim)."""
    message = claim_pb.AvailableTask()
    fill_available_task(message, task, with_snapshot)
    return message


def fill_available_task(message: claim_pb.AvailableTask, task: AvailableTask, with_snapshot: bool = True) -> None:
    """`available_task_to_proto` into an existing message (e.g. one added to a reply, never copied)."""
    message.instance_id = task.instance_id
    message.task_id = task.task_id.as_bytes()
    message.workflow_definition_hash = task.workflow_definition_hash.as_bytes()
    message.version = task.version
    if task.input is not None:
        message.input = task.input
    if task.trace_parent is not None:
        message.trace_parent = task.trace_parent
    if with_snapshot:
        fill_snapshot(message.snapshot, task.snapshot)


def claimed_task_from_proto(message: claim_pb.AvailableTask, path: str = "task") -> ClaimedTask:
    """The light form of an AvailableTask: its snapshot, if any, is not decoded."""
    return ClaimedTask(
        instance_id=message.instance_id,
        task_id=task_id_from(f"{path}.task_id", message.task_id),
        input=message.input if message.HasField("input") else None,
        workflow_definition_hash=_definition_hash(f"{path}.workflow_definition_hash", message.workflow_definition_hash),
        trace_parent=message.trace_parent if message.HasField("trace_parent") else None,
        version=message.version,
    )


def available_task_from_proto(message: claim_pb.AvailableTask, path: str = "task") -> AvailableTask:
    return AvailableTask(
        instance_id=message.instance_id,
        task_id=task_id_from(f"{path}.task_id", message.task_id),
        input=message.input if message.HasField("input") else None,
        workflow_definition_hash=_definition_hash(f"{path}.workflow_definition_hash", message.workflow_definition_hash),
        trace_parent=message.trace_parent if message.HasField("trace_parent") else None,
        snapshot=snapshot_from_proto(message.snapshot, f"{path}.snapshot"),
        version=message.version,
    )


def wakeup_hint_to_proto(hint: TaskWakeupHint) -> claim_pb.TaskWakeupHint:
    return claim_pb.TaskWakeupHint(
        instance_id=hint.instance_id,
        task_id=hint.task_id.as_bytes(),
        definition_hash=hint.definition_hash.as_bytes(),
        tags=list(hint.tags),
    )


def wakeup_hint_from_proto(message: claim_pb.TaskWakeupHint, path: str = "hint") -> TaskWakeupHint:
    return TaskWakeupHint(
        check_instance_id(f"{path}.instance_id", message.instance_id),
        task_id_from(f"{path}.task_id", message.task_id),
        _definition_hash(f"{path}.definition_hash", message.definition_hash),
        tuple(check_tags(f"{path}.tags", list(message.tags))),
    )
