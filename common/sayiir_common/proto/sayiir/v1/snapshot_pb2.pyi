import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SnapshotStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SNAPSHOT_STATUS_UNSPECIFIED: _ClassVar[SnapshotStatus]
    SNAPSHOT_STATUS_IN_PROGRESS: _ClassVar[SnapshotStatus]
    SNAPSHOT_STATUS_COMPLETED: _ClassVar[SnapshotStatus]
    SNAPSHOT_STATUS_FAILED: _ClassVar[SnapshotStatus]
    SNAPSHOT_STATUS_CANCELLED: _ClassVar[SnapshotStatus]
    SNAPSHOT_STATUS_PAUSED: _ClassVar[SnapshotStatus]
SNAPSHOT_STATUS_UNSPECIFIED: SnapshotStatus
SNAPSHOT_STATUS_IN_PROGRESS: SnapshotStatus
SNAPSHOT_STATUS_COMPLETED: SnapshotStatus
SNAPSHOT_STATUS_FAILED: SnapshotStatus
SNAPSHOT_STATUS_CANCELLED: SnapshotStatus
SNAPSHOT_STATUS_PAUSED: SnapshotStatus

class TaskResult(_message.Message):
    __slots__ = ("task_id", "output")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    output: bytes
    def __init__(self, task_id: _Optional[bytes] = ..., output: _Optional[bytes] = ...) -> None: ...

class BranchResult(_message.Message):
    __slots__ = ("label", "result")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    label: str
    result: TaskResult
    def __init__(self, label: _Optional[str] = ..., result: _Optional[_Union[TaskResult, _Mapping]] = ...) -> None: ...

class ExecutionPosition(_message.Message):
    __slots__ = ("not_started", "at_task", "at_fork", "at_join", "at_delay", "at_signal", "in_loop")
    NOT_STARTED_FIELD_NUMBER: _ClassVar[int]
    AT_TASK_FIELD_NUMBER: _ClassVar[int]
    AT_FORK_FIELD_NUMBER: _ClassVar[int]
    AT_JOIN_FIELD_NUMBER: _ClassVar[int]
    AT_DELAY_FIELD_NUMBER: _ClassVar[int]
    AT_SIGNAL_FIELD_NUMBER: _ClassVar[int]
    IN_LOOP_FIELD_NUMBER: _ClassVar[int]
    not_started: NotStarted
    at_task: AtTask
    at_fork: AtFork
    at_join: AtJoin
    at_delay: AtDelay
    at_signal: AtSignal
    in_loop: InLoop
    def __init__(self, not_started: _Optional[_Union[NotStarted, _Mapping]] = ..., at_task: _Optional[_Union[AtTask, _Mapping]] = ..., at_fork: _Optional[_Union[AtFork, _Mapping]] = ..., at_join: _Optional[_Union[AtJoin, _Mapping]] = ..., at_delay: _Optional[_Union[AtDelay, _Mapping]] = ..., at_signal: _Optional[_Union[AtSignal, _Mapping]] = ..., in_loop: _Optional[_Union[InLoop, _Mapping]] = ...) -> None: ...

class NotStarted(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class AtTask(_message.Message):
    __slots__ = ("task_id",)
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    def __init__(self, task_id: _Optional[bytes] = ...) -> None: ...

class AtFork(_message.Message):
    __slots__ = ("fork_id", "completed_branches", "wake_at")
    FORK_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_BRANCHES_FIELD_NUMBER: _ClassVar[int]
    WAKE_AT_FIELD_NUMBER: _ClassVar[int]
    fork_id: bytes
    completed_branches: _containers.RepeatedCompositeFieldContainer[BranchResult]
    wake_at: _timestamp_pb2.Timestamp
    def __init__(self, fork_id: _Optional[bytes] = ..., completed_branches: _Optional[_Iterable[_Union[BranchResult, _Mapping]]] = ..., wake_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AtJoin(_message.Message):
    __slots__ = ("join_id", "completed_branches")
    JOIN_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_BRANCHES_FIELD_NUMBER: _ClassVar[int]
    join_id: bytes
    completed_branches: _containers.RepeatedCompositeFieldContainer[BranchResult]
    def __init__(self, join_id: _Optional[bytes] = ..., completed_branches: _Optional[_Iterable[_Union[BranchResult, _Mapping]]] = ...) -> None: ...

class AtDelay(_message.Message):
    __slots__ = ("delay_id", "entered_at", "wake_at", "next_task_id")
    DELAY_ID_FIELD_NUMBER: _ClassVar[int]
    ENTERED_AT_FIELD_NUMBER: _ClassVar[int]
    WAKE_AT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    delay_id: bytes
    entered_at: _timestamp_pb2.Timestamp
    wake_at: _timestamp_pb2.Timestamp
    next_task_id: bytes
    def __init__(self, delay_id: _Optional[bytes] = ..., entered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., wake_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_task_id: _Optional[bytes] = ...) -> None: ...

class AtSignal(_message.Message):
    __slots__ = ("signal_id", "signal_name", "wake_at", "next_task_id")
    SIGNAL_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_NAME_FIELD_NUMBER: _ClassVar[int]
    WAKE_AT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    signal_id: bytes
    signal_name: str
    wake_at: _timestamp_pb2.Timestamp
    next_task_id: bytes
    def __init__(self, signal_id: _Optional[bytes] = ..., signal_name: _Optional[str] = ..., wake_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., next_task_id: _Optional[bytes] = ...) -> None: ...

class InLoop(_message.Message):
    __slots__ = ("loop_id", "iteration", "next_task_id")
    LOOP_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    NEXT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    loop_id: bytes
    iteration: int
    next_task_id: bytes
    def __init__(self, loop_id: _Optional[bytes] = ..., iteration: _Optional[int] = ..., next_task_id: _Optional[bytes] = ...) -> None: ...

class WorkflowSnapshotState(_message.Message):
    __slots__ = ("in_progress", "completed", "failed", "cancelled", "paused")
    IN_PROGRESS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    in_progress: InProgress
    completed: Completed
    failed: Failed
    cancelled: Cancelled
    paused: Paused
    def __init__(self, in_progress: _Optional[_Union[InProgress, _Mapping]] = ..., completed: _Optional[_Union[Completed, _Mapping]] = ..., failed: _Optional[_Union[Failed, _Mapping]] = ..., cancelled: _Optional[_Union[Cancelled, _Mapping]] = ..., paused: _Optional[_Union[Paused, _Mapping]] = ...) -> None: ...

class InProgress(_message.Message):
    __slots__ = ("position", "completed_tasks", "last_completed_task_id")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_TASKS_FIELD_NUMBER: _ClassVar[int]
    LAST_COMPLETED_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    position: ExecutionPosition
    completed_tasks: _containers.RepeatedCompositeFieldContainer[TaskResult]
    last_completed_task_id: bytes
    def __init__(self, position: _Optional[_Union[ExecutionPosition, _Mapping]] = ..., completed_tasks: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ..., last_completed_task_id: _Optional[bytes] = ...) -> None: ...

class Completed(_message.Message):
    __slots__ = ("final_output",)
    FINAL_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    final_output: bytes
    def __init__(self, final_output: _Optional[bytes] = ...) -> None: ...

class Failed(_message.Message):
    __slots__ = ("error",)
    ERROR_FIELD_NUMBER: _ClassVar[int]
    error: str
    def __init__(self, error: _Optional[str] = ...) -> None: ...

class Cancelled(_message.Message):
    __slots__ = ("reason", "cancelled_by", "cancelled_at", "completed_tasks", "interrupted_at_task")
    REASON_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_BY_FIELD_NUMBER: _ClassVar[int]
    CANCELLED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_TASKS_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_AT_TASK_FIELD_NUMBER: _ClassVar[int]
    reason: str
    cancelled_by: str
    cancelled_at: _timestamp_pb2.Timestamp
    completed_tasks: _containers.RepeatedCompositeFieldContainer[TaskResult]
    interrupted_at_task: bytes
    def __init__(self, reason: _Optional[str] = ..., cancelled_by: _Optional[str] = ..., cancelled_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_tasks: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ..., interrupted_at_task: _Optional[bytes] = ...) -> None: ...

class Paused(_message.Message):
    __slots__ = ("reason", "paused_by", "paused_at", "completed_tasks", "position", "last_completed_task_id")
    REASON_FIELD_NUMBER: _ClassVar[int]
    PAUSED_BY_FIELD_NUMBER: _ClassVar[int]
    PAUSED_AT_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_TASKS_FIELD_NUMBER: _ClassVar[int]
    POSITION_FIELD_NUMBER: _ClassVar[int]
    LAST_COMPLETED_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    reason: str
    paused_by: str
    paused_at: _timestamp_pb2.Timestamp
    completed_tasks: _containers.RepeatedCompositeFieldContainer[TaskResult]
    position: ExecutionPosition
    last_completed_task_id: bytes
    def __init__(self, reason: _Optional[str] = ..., paused_by: _Optional[str] = ..., paused_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., completed_tasks: _Optional[_Iterable[_Union[TaskResult, _Mapping]]] = ..., position: _Optional[_Union[ExecutionPosition, _Mapping]] = ..., last_completed_task_id: _Optional[bytes] = ...) -> None: ...

class RetryPolicy(_message.Message):
    __slots__ = ("max_retries", "initial_delay", "backoff_multiplier", "max_delay")
    MAX_RETRIES_FIELD_NUMBER: _ClassVar[int]
    INITIAL_DELAY_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    MAX_DELAY_FIELD_NUMBER: _ClassVar[int]
    max_retries: int
    initial_delay: _duration_pb2.Duration
    backoff_multiplier: float
    max_delay: _duration_pb2.Duration
    def __init__(self, max_retries: _Optional[int] = ..., initial_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., backoff_multiplier: _Optional[float] = ..., max_delay: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class TaskRetryState(_message.Message):
    __slots__ = ("task_id", "attempts", "policy", "last_error", "last_failed_worker", "next_retry_at")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILED_WORKER_FIELD_NUMBER: _ClassVar[int]
    NEXT_RETRY_AT_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    attempts: int
    policy: RetryPolicy
    last_error: str
    last_failed_worker: str
    next_retry_at: _timestamp_pb2.Timestamp
    def __init__(self, task_id: _Optional[bytes] = ..., attempts: _Optional[int] = ..., policy: _Optional[_Union[RetryPolicy, _Mapping]] = ..., last_error: _Optional[str] = ..., last_failed_worker: _Optional[str] = ..., next_retry_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class TaskDeadline(_message.Message):
    __slots__ = ("task_id", "deadline", "timeout_ms")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_MS_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    deadline: _timestamp_pb2.Timestamp
    timeout_ms: int
    def __init__(self, task_id: _Optional[bytes] = ..., deadline: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., timeout_ms: _Optional[int] = ...) -> None: ...

class LoopIteration(_message.Message):
    __slots__ = ("loop_id", "iteration")
    LOOP_ID_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    loop_id: bytes
    iteration: int
    def __init__(self, loop_id: _Optional[bytes] = ..., iteration: _Optional[int] = ...) -> None: ...

class WorkflowSnapshot(_message.Message):
    __slots__ = ("instance_id", "definition_hash", "state", "created_at", "updated_at", "initial_input", "task_deadline", "task_retries", "loop_iterations", "task_priority", "task_tags", "trace_parent")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_HASH_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    INITIAL_INPUT_FIELD_NUMBER: _ClassVar[int]
    TASK_DEADLINE_FIELD_NUMBER: _ClassVar[int]
    TASK_RETRIES_FIELD_NUMBER: _ClassVar[int]
    LOOP_ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    TASK_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    TASK_TAGS_FIELD_NUMBER: _ClassVar[int]
    TRACE_PARENT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    definition_hash: bytes
    state: WorkflowSnapshotState
    created_at: int
    updated_at: int
    initial_input: bytes
    task_deadline: TaskDeadline
    task_retries: _containers.RepeatedCompositeFieldContainer[TaskRetryState]
    loop_iterations: _containers.RepeatedCompositeFieldContainer[LoopIteration]
    task_priority: int
    task_tags: _containers.RepeatedScalarFieldContainer[str]
    trace_parent: str
    def __init__(self, instance_id: _Optional[str] = ..., definition_hash: _Optional[bytes] = ..., state: _Optional[_Union[WorkflowSnapshotState, _Mapping]] = ..., created_at: _Optional[int] = ..., updated_at: _Optional[int] = ..., initial_input: _Optional[bytes] = ..., task_deadline: _Optional[_Union[TaskDeadline, _Mapping]] = ..., task_retries: _Optional[_Iterable[_Union[TaskRetryState, _Mapping]]] = ..., loop_iterations: _Optional[_Iterable[_Union[LoopIteration, _Mapping]]] = ..., task_priority: _Optional[int] = ..., task_tags: _Optional[_Iterable[str]] = ..., trace_parent: _Optional[str] = ...) -> None: ...
