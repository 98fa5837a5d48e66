import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from sayiir_common.proto.sayiir.v1 import signal_store_pb2 as _signal_store_pb2
from sayiir_common.proto.sayiir.v1 import snapshot_pb2 as _snapshot_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class WorkflowAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WORKFLOW_ACTION_UNSPECIFIED: _ClassVar[WorkflowAction]
    WORKFLOW_ACTION_CANCEL: _ClassVar[WorkflowAction]
    WORKFLOW_ACTION_PAUSE: _ClassVar[WorkflowAction]
    WORKFLOW_ACTION_UNPAUSE: _ClassVar[WorkflowAction]
    WORKFLOW_ACTION_SEND_EVENT: _ClassVar[WorkflowAction]
    WORKFLOW_ACTION_DELETE: _ClassVar[WorkflowAction]
WORKFLOW_ACTION_UNSPECIFIED: WorkflowAction
WORKFLOW_ACTION_CANCEL: WorkflowAction
WORKFLOW_ACTION_PAUSE: WorkflowAction
WORKFLOW_ACTION_UNPAUSE: WorkflowAction
WORKFLOW_ACTION_SEND_EVENT: WorkflowAction
WORKFLOW_ACTION_DELETE: WorkflowAction

class WorkflowFilter(_message.Message):
    __slots__ = ("statuses", "definition_hash", "current_task_id", "tag", "created_after", "created_before", "updated_after", "updated_before", "error_contains")
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_HASH_FIELD_NUMBER: _ClassVar[int]
    CURRENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    CREATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    CREATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AFTER_FIELD_NUMBER: _ClassVar[int]
    UPDATED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    ERROR_CONTAINS_FIELD_NUMBER: _ClassVar[int]
    statuses: _containers.RepeatedScalarFieldContainer[_snapshot_pb2.SnapshotStatus]
    definition_hash: bytes
    current_task_id: bytes
    tag: str
    created_after: _timestamp_pb2.Timestamp
    created_before: _timestamp_pb2.Timestamp
    updated_after: _timestamp_pb2.Timestamp
    updated_before: _timestamp_pb2.Timestamp
    error_contains: str
    def __init__(self, statuses: _Optional[_Iterable[_Union[_snapshot_pb2.SnapshotStatus, str]]] = ..., definition_hash: _Optional[bytes] = ..., current_task_id: _Optional[bytes] = ..., tag: _Optional[str] = ..., created_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., created_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_after: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_before: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error_contains: _Optional[str] = ...) -> None: ...

class WorkflowSummary(_message.Message):
    __slots__ = ("instance_id", "status", "definition_hash", "current_task_id", "position_kind", "created_at", "updated_at", "error", "task_tags", "task_priority", "claimed_by", "claim_expires_at")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    DEFINITION_HASH_FIELD_NUMBER: _ClassVar[int]
    CURRENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    POSITION_KIND_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TASK_TAGS_FIELD_NUMBER: _ClassVar[int]
    TASK_PRIORITY_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_BY_FIELD_NUMBER: _ClassVar[int]
    CLAIM_EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    status: _snapshot_pb2.SnapshotStatus
    definition_hash: bytes
    current_task_id: bytes
    position_kind: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    error: str
    task_tags: _containers.RepeatedScalarFieldContainer[str]
    task_priority: int
    claimed_by: str
    claim_expires_at: _timestamp_pb2.Timestamp
    def __init__(self, instance_id: _Optional[str] = ..., status: _Optional[_Union[_snapshot_pb2.SnapshotStatus, str]] = ..., definition_hash: _Optional[bytes] = ..., current_task_id: _Optional[bytes] = ..., position_kind: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., error: _Optional[str] = ..., task_tags: _Optional[_Iterable[str]] = ..., task_priority: _Optional[int] = ..., claimed_by: _Optional[str] = ..., claim_expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListWorkflowsRequest(_message.Message):
    __slots__ = ("filter", "page_size", "after_instance_id")
    FILTER_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    AFTER_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    filter: WorkflowFilter
    page_size: int
    after_instance_id: str
    def __init__(self, filter: _Optional[_Union[WorkflowFilter, _Mapping]] = ..., page_size: _Optional[int] = ..., after_instance_id: _Optional[str] = ...) -> None: ...

class ListWorkflowsResponse(_message.Message):
    __slots__ = ("workflows", "next_after_instance_id")
    WORKFLOWS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    workflows: _containers.RepeatedCompositeFieldContainer[WorkflowSummary]
    next_after_instance_id: str
    def __init__(self, workflows: _Optional[_Iterable[_Union[WorkflowSummary, _Mapping]]] = ..., next_after_instance_id: _Optional[str] = ...) -> None: ...

class PendingSignal(_message.Message):
    __slots__ = ("kind", "reason", "requested_by", "requested_at")
    KIND_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    kind: _signal_store_pb2.SignalKind
    reason: str
    requested_by: str
    requested_at: _timestamp_pb2.Timestamp
    def __init__(self, kind: _Optional[_Union[_signal_store_pb2.SignalKind, str]] = ..., reason: _Optional[str] = ..., requested_by: _Optional[str] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class BufferedEvents(_message.Message):
    __slots__ = ("signal_name", "count")
    SIGNAL_NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    signal_name: str
    count: int
    def __init__(self, signal_name: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class CompletedTask(_message.Message):
    __slots__ = ("task_id", "completed_at", "output_bytes")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_AT_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BYTES_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    completed_at: _timestamp_pb2.Timestamp
    output_bytes: int
    def __init__(self, task_id: _Optional[bytes] = ..., completed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., output_bytes: _Optional[int] = ...) -> None: ...

class RetryStateSummary(_message.Message):
    __slots__ = ("task_id", "attempts", "last_error", "next_retry_at", "last_failed_worker")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPTS_FIELD_NUMBER: _ClassVar[int]
    LAST_ERROR_FIELD_NUMBER: _ClassVar[int]
    NEXT_RETRY_AT_FIELD_NUMBER: _ClassVar[int]
    LAST_FAILED_WORKER_FIELD_NUMBER: _ClassVar[int]
    task_id: bytes
    attempts: int
    last_error: str
    next_retry_at: _timestamp_pb2.Timestamp
    last_failed_worker: str
    def __init__(self, task_id: _Optional[bytes] = ..., attempts: _Optional[int] = ..., last_error: _Optional[str] = ..., next_retry_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_failed_worker: _Optional[str] = ...) -> None: ...

class DescribeWorkflowRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class DescribeWorkflowResponse(_message.Message):
    __slots__ = ("summary", "pending_signals", "buffered_events", "completed_tasks", "retry_states", "history_versions")
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    PENDING_SIGNALS_FIELD_NUMBER: _ClassVar[int]
    BUFFERED_EVENTS_FIELD_NUMBER: _ClassVar[int]
    COMPLETED_TASKS_FIELD_NUMBER: _ClassVar[int]
    RETRY_STATES_FIELD_NUMBER: _ClassVar[int]
    HISTORY_VERSIONS_FIELD_NUMBER: _ClassVar[int]
    summary: WorkflowSummary
    pending_signals: _containers.RepeatedCompositeFieldContainer[PendingSignal]
    buffered_events: _containers.RepeatedCompositeFieldContainer[BufferedEvents]
    completed_tasks: _containers.RepeatedCompositeFieldContainer[CompletedTask]
    retry_states: _containers.RepeatedCompositeFieldContainer[RetryStateSummary]
    history_versions: int
    def __init__(self, summary: _Optional[_Union[WorkflowSummary, _Mapping]] = ..., pending_signals: _Optional[_Iterable[_Union[PendingSignal, _Mapping]]] = ..., buffered_events: _Optional[_Iterable[_Union[BufferedEvents, _Mapping]]] = ..., completed_tasks: _Optional[_Iterable[_Union[CompletedTask, _Mapping]]] = ..., retry_states: _Optional[_Iterable[_Union[RetryStateSummary, _Mapping]]] = ..., history_versions: _Optional[int] = ...) -> None: ...

class HistoryVersion(_message.Message):
    __slots__ = ("version", "created_at", "status", "position_kind", "current_task_id", "size", "sha256")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    POSITION_KIND_FIELD_NUMBER: _ClassVar[int]
    CURRENT_TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    version: int
    created_at: _timestamp_pb2.Timestamp
    status: _snapshot_pb2.SnapshotStatus
    position_kind: str
    current_task_id: bytes
    size: int
    sha256: bytes
    def __init__(self, version: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., status: _Optional[_Union[_snapshot_pb2.SnapshotStatus, str]] = ..., position_kind: _Optional[str] = ..., current_task_id: _Optional[bytes] = ..., size: _Optional[int] = ..., sha256: _Optional[bytes] = ...) -> None: ...

class ListWorkflowHistoryRequest(_message.Message):
    __slots__ = ("instance_id", "page_size", "after_version")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    page_size: int
    after_version: int
    def __init__(self, instance_id: _Optional[str] = ..., page_size: _Optional[int] = ..., after_version: _Optional[int] = ...) -> None: ...

class ListWorkflowHistoryResponse(_message.Message):
    __slots__ = ("versions", "next_after_version")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_VERSION_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[HistoryVersion]
    next_after_version: int
    def __init__(self, versions: _Optional[_Iterable[_Union[HistoryVersion, _Mapping]]] = ..., next_after_version: _Optional[int] = ...) -> None: ...

class GetWorkflowVersionRequest(_message.Message):
    __slots__ = ("instance_id", "version")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    version: int
    def __init__(self, instance_id: _Optional[str] = ..., version: _Optional[int] = ...) -> None: ...

class GetWorkflowVersionResponse(_message.Message):
    __slots__ = ("version", "snapshot")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    version: HistoryVersion
    snapshot: _snapshot_pb2.WorkflowSnapshot
    def __init__(self, version: _Optional[_Union[HistoryVersion, _Mapping]] = ..., snapshot: _Optional[_Union[_snapshot_pb2.WorkflowSnapshot, _Mapping]] = ...) -> None: ...

class InstanceIds(_message.Message):
    __slots__ = ("instance_ids",)
    INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    instance_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, instance_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ActOnWorkflowsRequest(_message.Message):
    __slots__ = ("action", "instances", "filter", "dry_run", "reason", "requested_by", "signal_name", "payload", "batch_size", "after_instance_id")
    ACTION_FIELD_NUMBER: _ClassVar[int]
    INSTANCES_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    DRY_RUN_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_NAME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    AFTER_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    action: WorkflowAction
    instances: InstanceIds
    filter: WorkflowFilter
    dry_run: bool
    reason: str
    requested_by: str
    signal_name: str
    payload: bytes
    batch_size: int
    after_instance_id: str
    def __init__(self, action: _Optional[_Union[WorkflowAction, str]] = ..., instances: _Optional[_Union[InstanceIds, _Mapping]] = ..., filter: _Optional[_Union[WorkflowFilter, _Mapping]] = ..., dry_run: _Optional[bool] = ..., reason: _Optional[str] = ..., requested_by: _Optional[str] = ..., signal_name: _Optional[str] = ..., payload: _Optional[bytes] = ..., batch_size: _Optional[int] = ..., after_instance_id: _Optional[str] = ...) -> None: ...

class ActOnWorkflowsResponse(_message.Message):
    __slots__ = ("matched", "applied", "skipped", "not_found", "next_after_instance_id")
    MATCHED_FIELD_NUMBER: _ClassVar[int]
    APPLIED_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_FIELD_NUMBER: _ClassVar[int]
    NOT_FOUND_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    matched: int
    applied: int
    skipped: int
    not_found: int
    next_after_instance_id: str
    def __init__(self, matched: _Optional[int] = ..., applied: _Optional[int] = ..., skipped: _Optional[int] = ..., not_found: _Optional[int] = ..., next_after_instance_id: _Optional[str] = ...) -> None: ...

class ClaimSummary(_message.Message):
    __slots__ = ("instance_id", "task_id", "worker_id", "claimed_at", "expires_at", "expired")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    CLAIMED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    task_id: bytes
    worker_id: str
    claimed_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    expired: bool
    def __init__(self, instance_id: _Optional[str] = ..., task_id: _Optional[bytes] = ..., worker_id: _Optional[str] = ..., claimed_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expired: _Optional[bool] = ...) -> None: ...

class ListClaimsRequest(_message.Message):
    __slots__ = ("worker_id", "expired_only", "page_size", "after_instance_id")
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    EXPIRED_ONLY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    AFTER_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    worker_id: str
    expired_only: bool
    page_size: int
    after_instance_id: str
    def __init__(self, worker_id: _Optional[str] = ..., expired_only: _Optional[bool] = ..., page_size: _Optional[int] = ..., after_instance_id: _Optional[str] = ...) -> None: ...

class ListClaimsResponse(_message.Message):
    __slots__ = ("claims", "next_after_instance_id")
    CLAIMS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    claims: _containers.RepeatedCompositeFieldContainer[ClaimSummary]
    next_after_instance_id: str
    def __init__(self, claims: _Optional[_Iterable[_Union[ClaimSummary, _Mapping]]] = ..., next_after_instance_id: _Optional[str] = ...) -> None: ...

class ReleaseClaimRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class ReleaseClaimResponse(_message.Message):
    __slots__ = ("claim",)
    CLAIM_FIELD_NUMBER: _ClassVar[int]
    claim: ClaimSummary
    def __init__(self, claim: _Optional[_Union[ClaimSummary, _Mapping]] = ...) -> None: ...
