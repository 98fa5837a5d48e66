"""Model <-> protobuf conversion, with validation of everything that arrives.

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
    Cancelled,
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
    TaskDeadline,
    TaskResult,
    TaskRetryState,
    Timestamp,
    WorkflowSnapshot,
    WorkflowSnapshotState,
)
from sayiir_common.proto.sayiir.v1 import signal_store_pb2 as sig_pb
from sayiir_common.proto.sayiir.v1 import snapshot_pb2 as pb

MAX_INSTANCE_ID_BYTES = 1024
# Tags and the instance id travel in the wakeup NOTIFY payload, which
# PostgreSQL caps at 8000 bytes: 1024 + 32 x 128 bytes stays below it after
# base64, so every valid snapshot can be saved.
MAX_TAG_BYTES = 128
MAX_TAGS = 32
# Events are keyed by signal name in a btree index; past this the index
# entry outgrows PostgreSQL's limit.
MAX_SIGNAL_NAME_BYTES = 1024
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


class InvalidField(ValueError):
    """A request field fails validation; `field` is its dotted path."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


# --------------------------------------------------------------------------
# Validation helpers (also used by the server for scalar request fields)
# --------------------------------------------------------------------------


def check_text(field: str, value: str, *, required: bool = False, max_bytes: int | None = None) -> str:
    """A string PostgreSQL TEXT can hold: no NUL, within `max_bytes`."""
    if required and not value:
        raise InvalidField(field, "must not be empty")
    if "\x00" in value:
        raise InvalidField(field, "must not contain NUL characters")
    if max_bytes is not None and len(value.encode("utf-8", "surrogatepass")) > max_bytes:
        raise InvalidField(field, f"must be at most {max_bytes} bytes")
    return value


def check_instance_id(field: str, value: str) -> str:
    return check_text(field, value, required=True, max_bytes=MAX_INSTANCE_ID_BYTES)


def task_id_from(field: str, raw: bytes) -> TaskId:
    if len(raw) != HASH_LEN:
        raise InvalidField(field, f"must be {HASH_LEN} bytes, got {len(raw)}")
    return TaskId(raw)


def _optional_task_id(message: object, name: str, path: str) -> TaskId | None:
    if not message.HasField(name):  # type: ignore[attr-defined]
        return None
    return task_id_from(f"{path}.{name}", getattr(message, name))


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
            _optional_task_id(d, "next_task_id", p),
        )
    if kind == "at_signal":
        s = message.at_signal
        return AtSignal(
            task_id_from(f"{p}.signal_id", s.signal_id),
            check_text(f"{p}.signal_name", s.signal_name, required=True, max_bytes=MAX_SIGNAL_NAME_BYTES),
            _timestamp(f"{p}.wake_at", s.wake_at) if s.HasField("wake_at") else None,
            _optional_task_id(s, "next_task_id", p),
        )
    loop = message.in_loop
    return InLoop(
        task_id_from(f"{p}.loop_id", loop.loop_id), loop.iteration, _optional_task_id(loop, "next_task_id", p)
    )


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
            _optional_task_id(m, "last_completed_task_id", p),
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
            _optional_task_id(c, "interrupted_at_task", p),
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
        _optional_task_id(z, "last_completed_task_id", p),
    )


def snapshot_from_proto(message: pb.WorkflowSnapshot, path: str = "snapshot") -> WorkflowSnapshot:
    """Validate and convert a snapshot message; raises `InvalidField`."""
    instance_id = check_instance_id(f"{path}.instance_id", message.instance_id)
    if len(message.definition_hash) != HASH_LEN:
        raise InvalidField(f"{path}.definition_hash", f"must be {HASH_LEN} bytes, got {len(message.definition_hash)}")
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
        priority = message.task_priority
        if not 1 <= priority <= 5:
            raise InvalidField(f"{path}.task_priority", f"must be 1 (critical) to 5 (minimal), got {priority}")
    if len(message.task_tags) > MAX_TAGS:
        raise InvalidField(f"{path}.task_tags", f"at most {MAX_TAGS} tags")
    tags = [
        check_text(f"{path}.task_tags[{i}]", t, required=True, max_bytes=MAX_TAG_BYTES)
        for i, t in enumerate(message.task_tags)
    ]
    trace_parent = None
    if message.HasField("trace_parent"):
        trace_parent = check_text(f"{path}.trace_parent", message.trace_parent, max_bytes=1024)
    return WorkflowSnapshot(
        instance_id=instance_id,
        definition_hash=DefinitionHash(message.definition_hash),
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
