"""The Sayiir workflow snapshot model, with the Rust names.

Mirrors `sayiir_core::snapshot`: a `WorkflowSnapshot` holds a
`WorkflowSnapshotState` (InProgress, Completed, Failed, Cancelled, Paused);
in-progress and paused states hold an `ExecutionPosition` (NotStarted, AtTask,
AtFork, AtJoin, AtDelay, AtSignal, InLoop). Every variant is a class of its own
and is also reachable through its family, so `ExecutionPosition.AtTask(...)`
and `AtTask(...)` are the same thing.

Times keep nanosecond precision (`Timestamp`), because the engine writes
nanoseconds and a snapshot must survive a round trip byte for byte.
Maps keep insertion order for the same reason.
"""

from __future__ import annotations

import base64
import enum
import functools
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Self

from sayiir_common.engine_order import fx_hash_32_bytes, insert_in_engine_order
from sayiir_common.ids import DefinitionHash, TaskId

NANOS_PER_SECOND = 1_000_000_000
# chrono's DateTime<Utc> spans more, but the RFC 3339 text the engine writes
# (four-digit years) and protobuf's Timestamp both stop at these bounds.
MIN_TIMESTAMP_SECONDS = -62_135_596_800  # 0001-01-01T00:00:00Z
MAX_TIMESTAMP_SECONDS = 253_402_300_799  # 9999-12-31T23:59:59Z
DEFAULT_TASK_PRIORITY = 3


@dataclass(frozen=True, eq=False, slots=True)
class Timestamp:
    """A UTC instant with nanosecond precision (Rust `DateTime<Utc>`).

    Compares with other Timestamps and with timezone-aware datetimes.
    """

    seconds: int
    nanos: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.nanos < NANOS_PER_SECOND:
            raise ValueError(f"Timestamp nanos must be in [0, 1e9), got {self.nanos}")
        if not MIN_TIMESTAMP_SECONDS <= self.seconds <= MAX_TIMESTAMP_SECONDS:
            raise ValueError(f"Timestamp is outside years 1 to 9999: {self.seconds} s")

    @classmethod
    def now(cls) -> Self:
        return cls.from_unix_nanos(time.time_ns())

    @classmethod
    def from_unix_nanos(cls, total: int) -> Self:
        seconds, nanos = divmod(total, NANOS_PER_SECOND)
        return cls(seconds, nanos)

    @classmethod
    def from_datetime(cls, value: datetime) -> Self:
        if value.tzinfo is None:
            raise ValueError("naive datetime: give a timezone-aware datetime (UTC)")
        delta = value - datetime(1970, 1, 1, tzinfo=UTC)
        total_us = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
        return cls.from_unix_nanos(total_us * 1_000)

    @classmethod
    def coerce(cls, value: Timestamp | datetime) -> Timestamp:
        if isinstance(value, Timestamp):
            return value
        if isinstance(value, datetime):
            return cls.from_datetime(value)
        raise TypeError(f"expected a Timestamp or datetime, not {type(value).__name__}")

    @property
    def unix_nanos(self) -> int:
        return self.seconds * NANOS_PER_SECOND + self.nanos

    @staticmethod
    def _nanos_of(other: object) -> int | None:
        if isinstance(other, Timestamp):
            return other.unix_nanos
        if isinstance(other, datetime) and other.tzinfo is not None:
            return Timestamp.from_datetime(other).unix_nanos
        return None

    def __eq__(self, other: object) -> bool:
        theirs = self._nanos_of(other)
        return NotImplemented if theirs is None else self.unix_nanos == theirs

    def __hash__(self) -> int:
        return hash(self.unix_nanos)

    def __lt__(self, other: object) -> bool:
        theirs = self._nanos_of(other)
        return NotImplemented if theirs is None else self.unix_nanos < theirs

    def __le__(self, other: object) -> bool:
        theirs = self._nanos_of(other)
        return NotImplemented if theirs is None else self.unix_nanos <= theirs

    def __gt__(self, other: object) -> bool:
        theirs = self._nanos_of(other)
        return NotImplemented if theirs is None else self.unix_nanos > theirs

    def __ge__(self, other: object) -> bool:
        theirs = self._nanos_of(other)
        return NotImplemented if theirs is None else self.unix_nanos >= theirs

    def to_datetime(self) -> datetime:
        """As a `datetime` (microsecond precision: nanoseconds are truncated)."""
        epoch = datetime(1970, 1, 1, tzinfo=UTC)
        return epoch + timedelta(seconds=self.seconds, microseconds=self.nanos // 1_000)

    def __add__(self, other: timedelta | Duration) -> Timestamp:
        extra = other.total_nanos if isinstance(other, Duration) else _timedelta_nanos(other)
        return Timestamp.from_unix_nanos(self.unix_nanos + extra)


@dataclass(frozen=True, slots=True)
class Duration:
    """A non-negative span with nanosecond precision (Rust `std::time::Duration`)."""

    secs: int
    nanos: int = 0

    def __post_init__(self) -> None:
        if self.secs < 0 or not 0 <= self.nanos < NANOS_PER_SECOND:
            raise ValueError(f"invalid Duration(secs={self.secs}, nanos={self.nanos})")

    @classmethod
    def from_timedelta(cls, value: timedelta) -> Duration:
        return cls.from_nanos(_timedelta_nanos(value))

    @classmethod
    def from_secs_f64(cls, seconds: float) -> Duration:
        return cls.from_nanos(round(seconds * NANOS_PER_SECOND))

    @classmethod
    def from_millis(cls, millis: int) -> Duration:
        return cls.from_nanos(millis * 1_000_000)

    @classmethod
    def from_nanos(cls, total: int) -> Duration:
        secs, nanos = divmod(total, NANOS_PER_SECOND)
        return cls(secs, nanos)

    @classmethod
    def coerce(cls, value: Duration | timedelta | float | int) -> Duration:
        if isinstance(value, Duration):
            return value
        if isinstance(value, timedelta):
            return cls.from_timedelta(value)
        return cls.from_secs_f64(float(value))

    @property
    def total_nanos(self) -> int:
        return self.secs * NANOS_PER_SECOND + self.nanos

    def to_timedelta(self) -> timedelta:
        return timedelta(seconds=self.secs, microseconds=self.nanos // 1_000)


def _timedelta_nanos(value: timedelta) -> int:
    return ((value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds) * 1_000


# Memoized: placing one new task in engine order rehashes every task of the
# snapshot (a pure-Python hash), which made a result on a large workflow
# cost seconds of the event loop.
@functools.lru_cache(maxsize=1 << 16)
def _task_hash(task_id: TaskId) -> int:
    return fx_hash_32_bytes(task_id.as_bytes())


def _task_id(value: TaskId | bytes | str) -> TaskId:
    return TaskId.coerce(value)


def _optional_task_id(value: TaskId | bytes | str | None) -> TaskId | None:
    return None if value is None else TaskId.coerce(value)


# --------------------------------------------------------------------------
# Task results, retries, deadlines
# --------------------------------------------------------------------------


@dataclass(slots=True)
class TaskResult:
    """The output of one completed task."""

    task_id: TaskId
    output: bytes

    def __post_init__(self) -> None:
        self.task_id = _task_id(self.task_id)
        self.output = bytes(self.output)


@dataclass(slots=True)
class RetryPolicy:
    """How a failed task is retried (delays grow by `backoff_multiplier`)."""

    max_retries: int
    initial_delay: Duration = field(default_factory=lambda: Duration(1))
    backoff_multiplier: float = 2.0
    max_delay: Duration | None = None

    def __post_init__(self) -> None:
        # Rust stores the multiplier as an f32; holding the f32 value here
        # keeps the model equal to itself across every codec.
        try:
            self.backoff_multiplier = struct.unpack("<f", struct.pack("<f", self.backoff_multiplier))[0]
        except OverflowError:
            raise ValueError(f"backoff_multiplier {self.backoff_multiplier} does not fit a 32-bit float") from None
        self.initial_delay = Duration.coerce(self.initial_delay)
        if self.max_delay is not None:
            self.max_delay = Duration.coerce(self.max_delay)


@dataclass(slots=True)
class TaskRetryState:
    """Durable retry state of a task waiting for its next attempt."""

    attempts: int
    policy: RetryPolicy
    last_error: str
    next_retry_at: Timestamp
    last_failed_worker: str | None = None

    def __post_init__(self) -> None:
        self.next_retry_at = Timestamp.coerce(self.next_retry_at)


@dataclass(slots=True)
class TaskDeadline:
    """The durable deadline of the running task."""

    task_id: TaskId
    deadline: Timestamp
    timeout_ms: int

    def __post_init__(self) -> None:
        self.task_id = _task_id(self.task_id)
        self.deadline = Timestamp.coerce(self.deadline)


# --------------------------------------------------------------------------
# Execution positions
# --------------------------------------------------------------------------


class ExecutionPosition:
    """Where a workflow resumes. Subclasses are the seven Rust variants."""

    __slots__ = ()
    NotStarted: ClassVar[type[NotStarted]]
    AtTask: ClassVar[type[AtTask]]
    AtFork: ClassVar[type[AtFork]]
    AtJoin: ClassVar[type[AtJoin]]
    AtDelay: ClassVar[type[AtDelay]]
    AtSignal: ClassVar[type[AtSignal]]
    InLoop: ClassVar[type[InLoop]]

    @property
    def kind(self) -> str:
        """The variant name, as stored in the `position_kind` column."""
        return type(self).__name__


@dataclass(slots=True)
class NotStarted(ExecutionPosition):
    """The workflow has not started yet."""


@dataclass(slots=True)
class AtTask(ExecutionPosition):
    """The next step is the task `task_id`."""

    task_id: TaskId

    def __post_init__(self) -> None:
        self.task_id = _task_id(self.task_id)


def _branches(value: Mapping[str, TaskResult]) -> dict[str, TaskResult]:
    return dict(value)


@dataclass(slots=True)
class AtFork(ExecutionPosition):
    """Parked at a fork until `wake_at`; finished branches are cached by label."""

    fork_id: TaskId
    completed_branches: dict[str, TaskResult]
    wake_at: Timestamp

    def __post_init__(self) -> None:
        self.fork_id = _task_id(self.fork_id)
        self.completed_branches = _branches(self.completed_branches)
        self.wake_at = Timestamp.coerce(self.wake_at)


@dataclass(slots=True)
class AtJoin(ExecutionPosition):
    """Waiting at a join; branch results are keyed by branch label."""

    join_id: TaskId
    completed_branches: dict[str, TaskResult] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.join_id = _task_id(self.join_id)
        self.completed_branches = _branches(self.completed_branches)


@dataclass(slots=True)
class AtDelay(ExecutionPosition):
    """Parked on a durable delay until `wake_at`."""

    delay_id: TaskId
    entered_at: Timestamp
    wake_at: Timestamp
    next_task_id: TaskId | None = None

    def __post_init__(self) -> None:
        self.delay_id = _task_id(self.delay_id)
        self.entered_at = Timestamp.coerce(self.entered_at)
        self.wake_at = Timestamp.coerce(self.wake_at)
        self.next_task_id = _optional_task_id(self.next_task_id)


@dataclass(slots=True)
class AtSignal(ExecutionPosition):
    """Parked until an event named `signal_name` arrives (or `wake_at`)."""

    signal_id: TaskId
    signal_name: str
    wake_at: Timestamp | None = None
    next_task_id: TaskId | None = None

    def __post_init__(self) -> None:
        self.signal_id = _task_id(self.signal_id)
        if self.wake_at is not None:
            self.wake_at = Timestamp.coerce(self.wake_at)
        self.next_task_id = _optional_task_id(self.next_task_id)


@dataclass(slots=True)
class InLoop(ExecutionPosition):
    """Inside the loop `loop_id`, at `iteration` (0-based)."""

    loop_id: TaskId
    iteration: int = 0
    next_task_id: TaskId | None = None

    def __post_init__(self) -> None:
        self.loop_id = _task_id(self.loop_id)
        self.next_task_id = _optional_task_id(self.next_task_id)


ExecutionPosition.NotStarted = NotStarted
ExecutionPosition.AtTask = AtTask
ExecutionPosition.AtFork = AtFork
ExecutionPosition.AtJoin = AtJoin
ExecutionPosition.AtDelay = AtDelay
ExecutionPosition.AtSignal = AtSignal
ExecutionPosition.InLoop = InLoop

POSITION_KINDS: tuple[type[ExecutionPosition], ...] = (
    NotStarted,
    AtTask,
    AtFork,
    AtJoin,
    AtDelay,
    AtSignal,
    InLoop,
)


# --------------------------------------------------------------------------
# Snapshot states
# --------------------------------------------------------------------------


def _completed(value: Mapping[TaskId, TaskResult] | None) -> dict[TaskId, TaskResult]:
    return {} if value is None else {TaskId.coerce(k): v for k, v in value.items()}


class WorkflowSnapshotState:
    """The state of a workflow. Subclasses are the five Rust variants."""

    __slots__ = ()
    InProgress: ClassVar[type[InProgress]]
    Completed: ClassVar[type[Completed]]
    Failed: ClassVar[type[Failed]]
    Cancelled: ClassVar[type[Cancelled]]
    Paused: ClassVar[type[Paused]]

    @property
    def kind(self) -> str:
        """The variant name, as stored in the `status` column."""
        return type(self).__name__

    def is_terminal(self) -> bool:
        """Completed, Failed and Cancelled are terminal; Paused is not."""
        return isinstance(self, (Completed, Failed, Cancelled))

    def is_in_progress(self) -> bool:
        return isinstance(self, InProgress)

    def is_completed(self) -> bool:
        return isinstance(self, Completed)

    def is_failed(self) -> bool:
        return isinstance(self, Failed)

    def is_cancelled(self) -> bool:
        return isinstance(self, Cancelled)

    def is_paused(self) -> bool:
        return isinstance(self, Paused)


@dataclass(slots=True)
class InProgress(WorkflowSnapshotState):
    """Running or parked, resumable."""

    position: ExecutionPosition = field(default_factory=NotStarted)
    completed_tasks: dict[TaskId, TaskResult] = field(default_factory=dict)
    last_completed_task_id: TaskId | None = None

    def __post_init__(self) -> None:
        self.completed_tasks = _completed(self.completed_tasks)
        self.last_completed_task_id = _optional_task_id(self.last_completed_task_id)


@dataclass(slots=True)
class Completed(WorkflowSnapshotState):
    """Finished successfully with `final_output`."""

    final_output: bytes = b""


@dataclass(slots=True)
class Failed(WorkflowSnapshotState):
    """Finished with `error`."""

    error: str = ""


@dataclass(slots=True)
class Cancelled(WorkflowSnapshotState):
    """Cancelled; keeps the results of the tasks that completed before."""

    reason: str | None = None
    cancelled_by: str | None = None
    cancelled_at: Timestamp = field(default_factory=Timestamp.now)
    completed_tasks: dict[TaskId, TaskResult] = field(default_factory=dict)
    interrupted_at_task: TaskId | None = None

    def __post_init__(self) -> None:
        self.cancelled_at = Timestamp.coerce(self.cancelled_at)
        self.completed_tasks = _completed(self.completed_tasks)
        self.interrupted_at_task = _optional_task_id(self.interrupted_at_task)


@dataclass(slots=True)
class Paused(WorkflowSnapshotState):
    """Paused; keeps its position so it resumes exactly there."""

    reason: str | None = None
    paused_by: str | None = None
    paused_at: Timestamp = field(default_factory=Timestamp.now)
    completed_tasks: dict[TaskId, TaskResult] = field(default_factory=dict)
    position: ExecutionPosition = field(default_factory=NotStarted)
    last_completed_task_id: TaskId | None = None

    def __post_init__(self) -> None:
        self.paused_at = Timestamp.coerce(self.paused_at)
        self.completed_tasks = _completed(self.completed_tasks)
        self.last_completed_task_id = _optional_task_id(self.last_completed_task_id)


WorkflowSnapshotState.InProgress = InProgress
WorkflowSnapshotState.Completed = Completed
WorkflowSnapshotState.Failed = Failed
WorkflowSnapshotState.Cancelled = Cancelled
WorkflowSnapshotState.Paused = Paused

STATUS_NAMES = ("InProgress", "Completed", "Failed", "Cancelled", "Paused")
TERMINAL_STATUSES = frozenset({"Completed", "Failed", "Cancelled"})


# --------------------------------------------------------------------------
# Signals
# --------------------------------------------------------------------------


class SignalKind(enum.Enum):
    """A control signal: cancel or pause (the `kind` column)."""

    CANCEL = "Cancel"
    PAUSE = "Pause"
    # The Rust spellings, as aliases of the same members.
    Cancel = "Cancel"
    Pause = "Pause"


class ControlSignal(enum.Enum):
    """What `check_control_signals` applied (Rust `ControlSignal`)."""

    CANCELLED = "Cancelled"
    PAUSED = "Paused"
    Cancelled = "Cancelled"
    Paused = "Paused"


@dataclass(slots=True)
class SignalRequest:
    """A pending cancel or pause request (Rust `SignalRequest`)."""

    reason: str | None = None
    requested_by: str | None = None
    requested_at: Timestamp = field(default_factory=Timestamp.now)

    def __post_init__(self) -> None:
        self.requested_at = Timestamp.coerce(self.requested_at)


class CancellationRequest(SignalRequest):
    """Rust `CancellationRequest`: a cancel request (same fields as SignalRequest)."""

    __slots__ = ()


class PauseRequest(SignalRequest):
    """Rust `PauseRequest`: a pause request (same fields as SignalRequest)."""

    __slots__ = ()


# --------------------------------------------------------------------------
# The snapshot
# --------------------------------------------------------------------------


def _unix_now() -> int:
    return int(time.time())


@dataclass(slots=True)
class WorkflowSnapshot:
    """A complete checkpoint of one workflow instance (Rust `WorkflowSnapshot`)."""

    instance_id: str
    definition_hash: DefinitionHash
    state: WorkflowSnapshotState = field(default_factory=InProgress)
    created_at: int = field(default_factory=_unix_now)
    updated_at: int = field(default_factory=_unix_now)
    initial_input: bytes | None = None
    task_deadline: TaskDeadline | None = None
    task_retries: dict[TaskId, TaskRetryState] = field(default_factory=dict)
    loop_iterations: dict[TaskId, int] = field(default_factory=dict)
    task_priority: int | None = None
    task_tags: list[str] = field(default_factory=list)
    # Not part of the blob: stored in its own column, like the Rust backend.
    trace_parent: str | None = None

    def __post_init__(self) -> None:
        self.definition_hash = DefinitionHash.coerce(self.definition_hash)
        self.task_retries = {TaskId.coerce(k): v for k, v in self.task_retries.items()}
        self.loop_iterations = {TaskId.coerce(k): v for k, v in self.loop_iterations.items()}
        self.task_tags = list(self.task_tags)

    # -- construction -------------------------------------------------------

    @classmethod
    def new(cls, instance_id: str, definition_hash: DefinitionHash | bytes | str) -> Self:
        """A new in-progress snapshot at NotStarted (a string hash is hashed)."""
        return cls(instance_id=instance_id, definition_hash=DefinitionHash.coerce(definition_hash))

    @classmethod
    def with_initial_input(
        cls,
        instance_id: str,
        definition_hash: DefinitionHash | bytes | str,
        initial_input: bytes,
    ) -> Self:
        snapshot = cls.new(instance_id, definition_hash)
        snapshot.initial_input = bytes(initial_input)
        return snapshot

    # -- reads --------------------------------------------------------------

    def _completed_tasks(self) -> dict[TaskId, TaskResult] | None:
        if isinstance(self.state, (InProgress, Cancelled, Paused)):
            return self.state.completed_tasks
        return None

    def get_task_result(self, task_id: TaskId | bytes | str) -> TaskResult | None:
        tasks = self._completed_tasks()
        return None if tasks is None else tasks.get(TaskId.coerce(task_id))

    def get_all_task_results(self) -> dict[TaskId, TaskResult] | None:
        return self._completed_tasks()

    def last_completed_task_id(self) -> TaskId | None:
        if isinstance(self.state, (InProgress, Paused)):
            return self.state.last_completed_task_id
        return None

    def get_last_task_output(self) -> bytes | None:
        if isinstance(self.state, InProgress) and self.state.last_completed_task_id is not None:
            result = self.state.completed_tasks.get(self.state.last_completed_task_id)
            return None if result is None else result.output
        return None

    def final_output_bytes(self) -> bytes | None:
        return self.state.final_output if isinstance(self.state, Completed) else None

    def current_task_id(self) -> TaskId | None:
        """The task to run next: set only when in progress at a task."""
        if isinstance(self.state, InProgress) and isinstance(self.state.position, AtTask):
            return self.state.position.task_id
        return None

    def completed_task_count(self) -> int:
        tasks = self._completed_tasks()
        return 0 if tasks is None else len(tasks)

    def error_message(self) -> str | None:
        return self.state.error if isinstance(self.state, Failed) else None

    def position(self) -> ExecutionPosition | None:
        if isinstance(self.state, (InProgress, Paused)):
            return self.state.position
        return None

    def position_kind(self) -> str | None:
        """The position variant name, or None in a terminal state."""
        position = self.position()
        return None if position is None else position.kind

    def delay_wake_at(self) -> Timestamp | None:
        """When a parked in-progress workflow can next make progress."""
        if not isinstance(self.state, InProgress):
            return None
        position = self.state.position
        if isinstance(position, (AtDelay, AtFork)):
            return position.wake_at
        if isinstance(position, AtSignal):
            return position.wake_at
        return None

    def awaited_signal_name(self) -> str | None:
        if isinstance(self.state, InProgress) and isinstance(self.state.position, AtSignal):
            return self.state.position.signal_name
        return None

    def current_task_priority(self) -> int:
        return DEFAULT_TASK_PRIORITY if self.task_priority is None else self.task_priority

    def current_task_tags(self) -> list[str]:
        return self.task_tags

    def get_retry_state(self, task_id: TaskId | bytes | str) -> TaskRetryState | None:
        return self.task_retries.get(TaskId.coerce(task_id))

    def has_failed_on_worker(self, task_id: TaskId | bytes | str, worker_id: str) -> bool:
        state = self.get_retry_state(task_id)
        return state is not None and state.last_failed_worker == worker_id

    def loop_iteration(self, loop_id: TaskId | bytes | str) -> int:
        return self.loop_iterations.get(TaskId.coerce(loop_id), 0)

    # -- mutations ----------------------------------------------------------

    def _touch(self) -> None:
        self.updated_at = _unix_now()

    def mark_task_completed(self, task_id: TaskId | bytes | str, output: bytes) -> None:
        """Record a task's output (only while in progress, as in Rust).

        A new task takes the place the engine's hash table would give it, so
        the snapshot serializes to the engine's bytes (see `engine_order`).
        """
        if isinstance(self.state, InProgress):
            tid = TaskId.coerce(task_id)
            tasks = self.state.completed_tasks
            if tid in tasks:
                tasks[tid] = TaskResult(tid, bytes(output))
            else:
                order = insert_in_engine_order(list(tasks), tid, _task_hash)
                results = {**tasks, tid: TaskResult(tid, bytes(output))}
                self.state.completed_tasks = {key: results[key] for key in order}
            self.state.last_completed_task_id = tid
            self._touch()

    def remove_task_result(self, task_id: TaskId | bytes | str) -> None:
        if isinstance(self.state, InProgress):
            self.state.completed_tasks.pop(TaskId.coerce(task_id), None)
            self._touch()

    def update_position(self, position: ExecutionPosition) -> None:
        """Move an in-progress workflow to `position`."""
        if isinstance(self.state, InProgress):
            self.state.position = position
            self._touch()

    def set_task_hint(self, priority: int | None, tags: list[str]) -> None:
        self.task_priority = priority
        self.task_tags = list(tags)

    def set_task_deadline(self, task_id: TaskId | bytes | str, timeout: Duration | timedelta | float) -> None:
        span = Duration.coerce(timeout)
        self.task_deadline = TaskDeadline(TaskId.coerce(task_id), Timestamp.now() + span, span.total_nanos // 1_000_000)

    def clear_task_deadline(self) -> None:
        self.task_deadline = None

    def record_retry(
        self,
        task_id: TaskId | bytes | str,
        policy: RetryPolicy,
        error: str,
        worker_id: str | None = None,
    ) -> Timestamp:
        """Count a failed attempt and schedule the next one by exponential backoff."""
        tid = TaskId.coerce(task_id)
        entry = self.task_retries.get(tid)
        if entry is None:
            entry = TaskRetryState(0, policy, "", Timestamp.now())
            self.task_retries[tid] = entry
        entry.attempts += 1
        entry.last_error = error
        entry.last_failed_worker = worker_id
        entry.policy = policy
        multiplier = policy.backoff_multiplier ** max(entry.attempts - 1, 0)
        delay_ms = int(policy.initial_delay.total_nanos // 1_000_000 * multiplier)
        entry.next_retry_at = Timestamp.now() + Duration.from_millis(delay_ms)
        self._touch()
        return entry.next_retry_at

    def clear_retry_state(self, task_id: TaskId | bytes | str) -> None:
        self.task_retries.pop(TaskId.coerce(task_id), None)

    def retries_exhausted(self, task_id: TaskId | bytes | str) -> bool:
        state = self.get_retry_state(task_id)
        return state is not None and state.attempts >= state.policy.max_retries

    def set_loop_iteration(self, loop_id: TaskId | bytes | str, iteration: int) -> None:
        self.loop_iterations[TaskId.coerce(loop_id)] = iteration
        self._touch()

    def clear_loop_iteration(self, loop_id: TaskId | bytes | str) -> None:
        self.loop_iterations.pop(TaskId.coerce(loop_id), None)

    def _clear_runtime_state(self) -> None:
        self.task_deadline = None
        self.task_retries.clear()
        self.loop_iterations.clear()

    def mark_completed(self, final_output: bytes = b"") -> None:
        self._clear_runtime_state()
        self.state = Completed(bytes(final_output))
        self._touch()

    def mark_failed(self, error: str) -> None:
        self._clear_runtime_state()
        self.state = Failed(error)
        self._touch()

    def mark_cancelled(
        self,
        reason: str | None = None,
        cancelled_by: str | None = None,
        interrupted_at_task: TaskId | bytes | str | None = None,
    ) -> None:
        """Cancel, keeping the results of the tasks completed so far."""
        completed = dict(self.state.completed_tasks) if isinstance(self.state, InProgress) else {}
        self.task_deadline = None
        self.state = Cancelled(
            reason=reason,
            cancelled_by=cancelled_by,
            cancelled_at=Timestamp.now(),
            completed_tasks=completed,
            interrupted_at_task=_optional_task_id(interrupted_at_task),
        )
        self._touch()

    def mark_paused(
        self,
        request: SignalRequest | str | None = None,
        paused_by: str | None = None,
        *,
        reason: str | None = None,
    ) -> None:
        """Pause an in-progress workflow, keeping its position.

        Takes a `SignalRequest` (as Rust's `mark_paused(&PauseRequest)`) or a
        reason and the requester.
        """
        if isinstance(request, SignalRequest):
            reason, paused_by = request.reason, request.requested_by
        elif isinstance(request, str):
            reason = request
        if isinstance(self.state, InProgress):
            self.task_deadline = None
            self.state = Paused(
                reason=reason,
                paused_by=paused_by,
                paused_at=Timestamp.now(),
                completed_tasks=dict(self.state.completed_tasks),
                position=self.state.position,
                last_completed_task_id=self.state.last_completed_task_id,
            )
            self._touch()

    def mark_unpaused(self) -> None:
        """Return a paused workflow to InProgress at the position it paused at."""
        if isinstance(self.state, Paused):
            self.state = InProgress(
                position=self.state.position,
                completed_tasks=dict(self.state.completed_tasks),
                last_completed_task_id=self.state.last_completed_task_id,
            )
            self._touch()

    def take_task_outputs(self) -> list[tuple[TaskId, bytes]]:
        """Empty every completed task's output and return the non-empty ones."""
        tasks = self._completed_tasks()
        if tasks is None:
            return []
        taken = [(tid, result.output) for tid, result in tasks.items() if result.output]
        for result in tasks.values():
            result.output = b""
        return taken

    def hydrate_task_outputs(self, outputs: Any) -> None:
        """Put outputs back on completed tasks; outputs of unknown tasks are ignored."""
        tasks = self._completed_tasks()
        if tasks is None:
            return
        for task_id, output in outputs:
            result = tasks.get(task_id)
            if result is not None:
                result.output = output


# --------------------------------------------------------------------------
# Distributed workers
# --------------------------------------------------------------------------


@dataclass(slots=True)
class TaskClaim:
    """A worker's claim on an instance's current task (Rust `TaskClaim`)."""

    instance_id: str
    task_id: TaskId
    worker_id: str
    claimed_at: int  # Unix seconds
    expires_at: int | None = None  # Unix seconds; None: never expires

    def is_expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= int(time.time())


@dataclass(slots=True)
class AvailableTask:
    """A task a worker may claim and run (Rust `AvailableTask`)."""

    instance_id: str
    task_id: TaskId
    input: bytes | None
    workflow_definition_hash: DefinitionHash
    trace_parent: str | None
    snapshot: WorkflowSnapshot
    version: int = 0  # the snapshot's history version the task was read at (0: unknown)


@dataclass(frozen=True, slots=True)
class ClaimedTask:
    """A task claimed for this worker, in the fast path's light form: what
    running it takes, without the snapshot (load it when a task needs it)."""

    instance_id: str
    task_id: TaskId
    input: bytes | None
    workflow_definition_hash: DefinitionHash
    trace_parent: str | None
    version: int  # the snapshot's history version the task was read at


class HintFormatError(ValueError):
    """A notification payload that is not a task-ready hint."""


# The engine's wakeup payload layout version (the first byte).
HINT_WIRE_VERSION = 2
# More tags than this in a payload means it is not a hint.
MAX_HINT_TAGS = 1024


@dataclass(frozen=True, slots=True)
class TaskWakeupHint:
    """A task became claimable (Rust `TaskWakeupHint`).

    `encode` and `decode` are the `sayiir_task_ready` NOTIFY payload the
    engine's listeners read: a version byte (2), then nanoserde's binary form
    of (instance_id: String, task_id: [u8; 32], definition_hash: [u8; 32],
    tags: Vec<String>), where strings and vectors carry a little-endian u64
    length; base64 without padding.
    """

    instance_id: str
    task_id: TaskId
    definition_hash: DefinitionHash
    tags: tuple[str, ...] = ()

    @classmethod
    def of_snapshot(cls, snapshot: WorkflowSnapshot) -> TaskWakeupHint | None:
        """The hint a write of `snapshot` sends: only a snapshot at a task is worth one."""
        task_id = snapshot.current_task_id()
        if task_id is None:
            return None
        return cls(snapshot.instance_id, task_id, snapshot.definition_hash, tuple(snapshot.task_tags))

    def encode(self) -> str:
        def string(value: str) -> bytes:
            raw = value.encode("utf-8")
            return struct.pack("<Q", len(raw)) + raw

        body = bytearray(HINT_WIRE_VERSION.to_bytes(1, "little"))
        body += string(self.instance_id)
        body += self.task_id.as_bytes()
        body += self.definition_hash.as_bytes()
        body += struct.pack("<Q", len(self.tags))
        for tag in self.tags:
            body += string(tag)
        return base64.b64encode(bytes(body)).decode("ascii").rstrip("=")

    @classmethod
    def decode(cls, payload: str) -> TaskWakeupHint:
        """Parse a payload; raises `HintFormatError` when it is not a hint."""
        try:
            raw = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
        except ValueError as exc:
            raise HintFormatError(f"not base64: {exc}") from None
        if not raw or raw[0] != HINT_WIRE_VERSION:
            raise HintFormatError(f"unsupported hint version {raw[:1]!r}")
        offset = 1

        def take(size: int) -> bytes:
            nonlocal offset
            if offset + size > len(raw):
                raise HintFormatError("truncated hint")
            chunk = raw[offset : offset + size]
            offset += size
            return chunk

        def string() -> str:
            (length,) = struct.unpack("<Q", take(8))
            try:
                return take(length).decode("utf-8")
            except UnicodeDecodeError as exc:
                raise HintFormatError(f"invalid UTF-8 in hint: {exc}") from None

        instance_id = string()
        task_id = TaskId(take(32))
        definition_hash = DefinitionHash(take(32))
        (count,) = struct.unpack("<Q", take(8))
        if count > MAX_HINT_TAGS:
            raise HintFormatError("too many tags in hint")
        tags = tuple(string() for _ in range(count))
        return cls(instance_id, task_id, definition_hash, tags)
