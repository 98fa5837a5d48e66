import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from sayiir_common.proto.sayiir.v1 import snapshot_pb2 as _snapshot_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskClaim(_message.Message):
    __slots__ = ("instance_id", "task_id", "worker_id", "claimed_at", "expires_at")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    task_id: bytes
    worker_id: str
    claimed_at: int
    expires_at: int
    def __init__(self, instance_id: _Optional[str] = ..., task_id: _Optional[bytes] = ..., worker_id: _Optional[str] = ..., claimed_at: _Optional[int] = ..., expires_at: _Optional[int] = ...) -> None: ...

class AvailableTask(_message.Message):
    __slots__ = ("instance_id", "task_id", "input", "workflow_definition_hash", "trace_parent", "snapshot", "version")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    WORKFLOW_DEFINITION_HASH_FIELD_NUMBER: _ClassVar[int]
    TRACE_PARENT_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    task_id: bytes
    input: bytes
    workflow_definition_hash: bytes
    trace_parent: str
    snapshot: _snapshot_pb2.WorkflowSnapshot
    version: int
    def __init__(self, instance_id: _Optional[str] = ..., task_id: _Optional[bytes] = ..., input: _Optional[bytes] = ..., workflow_definition_hash: _Optional[bytes] = ..., trace_parent: _Optional[str] = ..., snapshot: _Optional[_Union[_snapshot_pb2.WorkflowSnapshot, _Mapping]] = ..., version: _Optional[int] = ...) -> None: ...

class TaskWakeupHint(_message.Message):
    __slots__ = ("instance_id", "task_id", "definition_hash", "tags")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_HASH_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    task_id: bytes
    definition_hash: bytes
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, instance_id: _Optional[str] = ..., task_id: _Optional[bytes] = ..., definition_hash: _Optional[bytes] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class WakeupEvent(_message.Message):
    __slots__ = ("subscribed", "hint")
    SUBSCRIBED_FIELD_NUMBER: _ClassVar[int]
    HINT_FIELD_NUMBER: _ClassVar[int]
    subscribed: Subscribed
    hint: TaskWakeupHint
    def __init__(self, subscribed: _Optional[_Union[Subscribed, _Mapping]] = ..., hint: _Optional[_Union[TaskWakeupHint, _Mapping]] = ...) -> None: ...

class Subscribed(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ClaimTaskRequest(_message.Message):
    __slots__ = ("instance_id", "task_id", "worker_id", "ttl")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    task_id: bytes
    worker_id: str
    ttl: _duration_pb2.Duration
    def __init__(self, instance_id: _Optional[str] = ..., task_id: _Optional[bytes] = ..., worker_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ClaimTaskResponse(_message.Message):
    __slots__ = ("claim",)
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    claim: TaskClaim
    def __init__(self, claim: _Optional[_Union[TaskClaim, _Mapping]] = ...) -> None: ...

class ReleaseTaskClaimRequest(_message.Message):
    __slots__ = ("instance_id", "task_id", "worker_id")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    task_id: bytes
    worker_id: str
    def __init__(self, instance_id: _Optional[str] = ..., task_id: _Optional[bytes] = ..., worker_id: _Optional[str] = ...) -> None: ...

class ReleaseTaskClaimResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ExtendTaskClaimRequest(_message.Message):
    __slots__ = ("instance_id", "task_id", "worker_id", "ttl")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    task_id: bytes
    worker_id: str
    ttl: _duration_pb2.Duration
    def __init__(self, instance_id: _Optional[str] = ..., task_id: _Optional[bytes] = ..., worker_id: _Optional[str] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ExtendTaskClaimResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FindAvailableTasksRequest(_message.Message):
    __slots__ = ("worker_id", "limit", "aging_interval", "worker_tags")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    AGING_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    WORKER_TAGS_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    limit: int
    aging_interval: _duration_pb2.Duration
    worker_tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, worker_id: _Optional[str] = ..., limit: _Optional[int] = ..., aging_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., worker_tags: _Optional[_Iterable[str]] = ...) -> None: ...

class FindAvailableTasksResponse(_message.Message):
    __slots__ = ("tasks", "more_ready")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    MORE_READY_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[AvailableTask]
    more_ready: bool
    def __init__(self, tasks: _Optional[_Iterable[_Union[AvailableTask, _Mapping]]] = ..., more_ready: _Optional[bool] = ...) -> None: ...

class FindHintedTaskRequest(_message.Message):
    __slots__ = ("hint",)
    HINT_FIELD_NUMBER: _ClassVar[int]
    hint: TaskWakeupHint
    def __init__(self, hint: _Optional[_Union[TaskWakeupHint, _Mapping]] = ...) -> None: ...

class FindHintedTaskResponse(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: AvailableTask
    def __init__(self, task: _Optional[_Union[AvailableTask, _Mapping]] = ...) -> None: ...

class SaveSnapshotFencedRequest(_message.Message):
    __slots__ = ("snapshot", "task_id", "worker_id")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    snapshot: _snapshot_pb2.WorkflowSnapshot
    task_id: bytes
    worker_id: str
    def __init__(self, snapshot: _Optional[_Union[_snapshot_pb2.WorkflowSnapshot, _Mapping]] = ..., task_id: _Optional[bytes] = ..., worker_id: _Optional[str] = ...) -> None: ...

class SaveSnapshotFencedResponse(_message.Message):
    __slots__ = ("written",)
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    written: bool
    def __init__(self, written: _Optional[bool] = ...) -> None: ...

class WatchWakeupsRequest(_message.Message):
    __slots__ = ("worker_tags",)
    WORKER_TAGS_FIELD_NUMBER: _ClassVar[int]
    worker_tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, worker_tags: _Optional[_Iterable[str]] = ...) -> None: ...

class ClaimAvailableTasksRequest(_message.Message):
    __slots__ = ("worker_id", "limit", "ttl", "aging_interval", "worker_tags", "wait", "omit_snapshot")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    AGING_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    WORKER_TAGS_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    OMIT_SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    limit: int
    ttl: _duration_pb2.Duration
    aging_interval: _duration_pb2.Duration
    worker_tags: _containers.RepeatedScalarFieldContainer[str]
    wait: _duration_pb2.Duration
    omit_snapshot: bool
    def __init__(self, worker_id: _Optional[str] = ..., limit: _Optional[int] = ..., ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., aging_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., worker_tags: _Optional[_Iterable[str]] = ..., wait: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., omit_snapshot: _Optional[bool] = ...) -> None: ...

class ClaimAvailableTasksResponse(_message.Message):
    __slots__ = ("tasks", "more_ready")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    MORE_READY_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[AvailableTask]
    more_ready: bool
    def __init__(self, tasks: _Optional[_Iterable[_Union[AvailableTask, _Mapping]]] = ..., more_ready: _Optional[bool] = ...) -> None: ...

class CompleteTaskRequest(_message.Message):
    __slots__ = ("instance_id", "task_id", "worker_id", "output", "next_task_id", "next_task_priority", "next_task_tags", "final_output", "claim_next_ttl", "aging_interval")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    NEXT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    NEXT_TASK_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    NEXT_TASK_TAGS_FIELD_NUMBER: _ClassVar[int]
    FINAL_OUTPUT_FIELD_NUMBER: _ClassVar[int]
    CLAIM_NEXT_TTL_FIELD_NUMBER: _ClassVar[int]
    AGING_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    task_id: bytes
    worker_id: str
    output: bytes
    next_task_id: bytes
    next_task_priority: int
    next_task_tags: _containers.RepeatedScalarFieldContainer[str]
    final_output: bytes
    claim_next_ttl: _duration_pb2.Duration
    aging_interval: _duration_pb2.Duration
    def __init__(self, instance_id: _Optional[str] = ..., task_id: _Optional[bytes] = ..., worker_id: _Optional[str] = ..., output: _Optional[bytes] = ..., next_task_id: _Optional[bytes] = ..., next_task_priority: _Optional[int] = ..., next_task_tags: _Optional[_Iterable[str]] = ..., final_output: _Optional[bytes] = ..., claim_next_ttl: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., aging_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class CompleteTaskResponse(_message.Message):
    __slots__ = ("completed", "next")
    COMPLETED_FIELD_NUMBER: _ClassVar[int]
    NEXT_FIELD_NUMBER: _ClassVar[int]
    completed: bool
    next: AvailableTask
    def __init__(self, completed: _Optional[bool] = ..., next: _Optional[_Union[AvailableTask, _Mapping]] = ...) -> None: ...

class LoadTaskResultRequest(_message.Message):
    __slots__ = ("instance_id", "task_id")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    task_id: bytes
    def __init__(self, instance_id: _Optional[str] = ..., task_id: _Optional[bytes] = ...) -> None: ...

class LoadTaskResultResponse(_message.Message):
    __slots__ = ("output",)
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    output: bytes
    def __init__(self, output: _Optional[bytes] = ...) -> None: ...

class WorkerSessionRequest(_message.Message):
    __slots__ = ("request_id", "claim_available_tasks", "complete_task", "batch")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIM_AVAILABLE_TASKS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_TASK_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    claim_available_tasks: ClaimAvailableTasksRequest
    complete_task: CompleteTaskRequest
    batch: _containers.RepeatedCompositeFieldContainer[WorkerSessionRequest]
    def __init__(self, request_id: _Optional[str] = ..., claim_available_tasks: _Optional[_Union[ClaimAvailableTasksRequest, _Mapping]] = ..., complete_task: _Optional[_Union[CompleteTaskRequest, _Mapping]] = ..., batch: _Optional[_Iterable[_Union[WorkerSessionRequest, _Mapping]]] = ...) -> None: ...

class WorkerSessionReply(_message.Message):
    __slots__ = ("request_id", "claim_available_tasks", "complete_task", "error", "batch")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIM_AVAILABLE_TASKS_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_TASK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    BATCH_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    claim_available_tasks: ClaimAvailableTasksResponse
    complete_task: CompleteTaskResponse
    error: bytes
    batch: _containers.RepeatedCompositeFieldContainer[WorkerSessionReply]
    def __init__(self, request_id: _Optional[str] = ..., claim_available_tasks: _Optional[_Union[ClaimAvailableTasksResponse, _Mapping]] = ..., complete_task: _Optional[_Union[CompleteTaskResponse, _Mapping]] = ..., error: _Optional[bytes] = ..., batch: _Optional[_Iterable[_Union[WorkerSessionReply, _Mapping]]] = ...) -> None: ...
