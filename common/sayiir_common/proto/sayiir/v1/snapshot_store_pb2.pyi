from sayiir_common.proto.sayiir.v1 import snapshot_pb2 as _snapshot_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SaveSnapshotRequest(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _snapshot_pb2.WorkflowSnapshot
    def __init__(self, snapshot: _Optional[_Union[_snapshot_pb2.WorkflowSnapshot, _Mapping]] = ...) -> None: ...

class SaveSnapshotResponse(_message.Message):
    __slots__ = ("written", "history_version")
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    HISTORY_VERSION_FIELD_NUMBER: _ClassVar[int]
    written: bool
    history_version: int
    def __init__(self, written: _Optional[bool] = ..., history_version: _Optional[int] = ...) -> None: ...

class SaveTaskResultRequest(_message.Message):
    __slots__ = ("instance_id", "task_id", "output")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    task_id: bytes
    output: bytes
    def __init__(self, instance_id: _Optional[str] = ..., task_id: _Optional[bytes] = ..., output: _Optional[bytes] = ...) -> None: ...

class SaveTaskResultResponse(_message.Message):
    __slots__ = ("history_version",)
    HISTORY_VERSION_FIELD_NUMBER: _ClassVar[int]
    history_version: int
    def __init__(self, history_version: _Optional[int] = ...) -> None: ...

class LoadSnapshotRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class LoadSnapshotResponse(_message.Message):
    __slots__ = ("snapshot", "status", "history_version")
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    HISTORY_VERSION_FIELD_NUMBER: _ClassVar[int]
    snapshot: _snapshot_pb2.WorkflowSnapshot
    status: _snapshot_pb2.SnapshotStatus
    history_version: int
    def __init__(self, snapshot: _Optional[_Union[_snapshot_pb2.WorkflowSnapshot, _Mapping]] = ..., status: _Optional[_Union[_snapshot_pb2.SnapshotStatus, str]] = ..., history_version: _Optional[int] = ...) -> None: ...

class DeleteSnapshotRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class DeleteSnapshotResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSnapshotsRequest(_message.Message):
    __slots__ = ("after_instance_id", "page_size", "statuses")
    AFTER_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    STATUSES_FIELD_NUMBER: _ClassVar[int]
    after_instance_id: str
    page_size: int
    statuses: _containers.RepeatedScalarFieldContainer[_snapshot_pb2.SnapshotStatus]
    def __init__(self, after_instance_id: _Optional[str] = ..., page_size: _Optional[int] = ..., statuses: _Optional[_Iterable[_Union[_snapshot_pb2.SnapshotStatus, str]]] = ...) -> None: ...

class ListSnapshotsResponse(_message.Message):
    __slots__ = ("instance_ids", "next_after_instance_id")
    INSTANCE_IDS_FIELD_NUMBER: _ClassVar[int]
    NEXT_AFTER_INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_ids: _containers.RepeatedScalarFieldContainer[str]
    next_after_instance_id: str
    def __init__(self, instance_ids: _Optional[_Iterable[str]] = ..., next_after_instance_id: _Optional[str] = ...) -> None: ...
