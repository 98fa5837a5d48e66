import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from sayiir_common.proto.sayiir.v1 import snapshot_pb2 as _snapshot_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SignalKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SIGNAL_KIND_UNSPECIFIED: _ClassVar[SignalKind]
    SIGNAL_KIND_CANCEL: _ClassVar[SignalKind]
    SIGNAL_KIND_PAUSE: _ClassVar[SignalKind]

class ControlSignal(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONTROL_SIGNAL_NONE: _ClassVar[ControlSignal]
    CONTROL_SIGNAL_CANCELLED: _ClassVar[ControlSignal]
    CONTROL_SIGNAL_PAUSED: _ClassVar[ControlSignal]
SIGNAL_KIND_UNSPECIFIED: SignalKind
SIGNAL_KIND_CANCEL: SignalKind
SIGNAL_KIND_PAUSE: SignalKind
CONTROL_SIGNAL_NONE: ControlSignal
CONTROL_SIGNAL_CANCELLED: ControlSignal
CONTROL_SIGNAL_PAUSED: ControlSignal

class SignalRequest(_message.Message):
    __slots__ = ("reason", "requested_by", "requested_at")
    REASON_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_AT_FIELD_NUMBER: _ClassVar[int]
    reason: str
    requested_by: str
    requested_at: _timestamp_pb2.Timestamp
    def __init__(self, reason: _Optional[str] = ..., requested_by: _Optional[str] = ..., requested_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class StoreSignalRequest(_message.Message):
    __slots__ = ("instance_id", "kind", "request")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    kind: SignalKind
    request: SignalRequest
    def __init__(self, instance_id: _Optional[str] = ..., kind: _Optional[_Union[SignalKind, str]] = ..., request: _Optional[_Union[SignalRequest, _Mapping]] = ...) -> None: ...

class StoreSignalResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetSignalRequest(_message.Message):
    __slots__ = ("instance_id", "kind")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    kind: SignalKind
    def __init__(self, instance_id: _Optional[str] = ..., kind: _Optional[_Union[SignalKind, str]] = ...) -> None: ...

class GetSignalResponse(_message.Message):
    __slots__ = ("request",)
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    request: SignalRequest
    def __init__(self, request: _Optional[_Union[SignalRequest, _Mapping]] = ...) -> None: ...

class ClearSignalRequest(_message.Message):
    __slots__ = ("instance_id", "kind")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    kind: SignalKind
    def __init__(self, instance_id: _Optional[str] = ..., kind: _Optional[_Union[SignalKind, str]] = ...) -> None: ...

class ClearSignalResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class SendEventRequest(_message.Message):
    __slots__ = ("instance_id", "signal_name", "payload")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_NAME_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    signal_name: str
    payload: bytes
    def __init__(self, instance_id: _Optional[str] = ..., signal_name: _Optional[str] = ..., payload: _Optional[bytes] = ...) -> None: ...

class SendEventResponse(_message.Message):
    __slots__ = ("resumed",)
    RESUMED_FIELD_NUMBER: _ClassVar[int]
    resumed: bool
    def __init__(self, resumed: _Optional[bool] = ...) -> None: ...

class ConsumeEventRequest(_message.Message):
    __slots__ = ("instance_id", "signal_name")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    SIGNAL_NAME_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    signal_name: str
    def __init__(self, instance_id: _Optional[str] = ..., signal_name: _Optional[str] = ...) -> None: ...

class ConsumeEventResponse(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class CheckAndCancelRequest(_message.Message):
    __slots__ = ("instance_id", "interrupted_at_task")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_AT_TASK_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    interrupted_at_task: bytes
    def __init__(self, instance_id: _Optional[str] = ..., interrupted_at_task: _Optional[bytes] = ...) -> None: ...

class CheckAndCancelResponse(_message.Message):
    __slots__ = ("cancelled",)
    CANCELLED_FIELD_NUMBER: _ClassVar[int]
    cancelled: bool
    def __init__(self, cancelled: _Optional[bool] = ...) -> None: ...

class CheckAndPauseRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class CheckAndPauseResponse(_message.Message):
    __slots__ = ("paused",)
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    paused: bool
    def __init__(self, paused: _Optional[bool] = ...) -> None: ...

class CheckControlSignalsRequest(_message.Message):
    __slots__ = ("instance_id", "interrupted_at_task")
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    INTERRUPTED_AT_TASK_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    interrupted_at_task: bytes
    def __init__(self, instance_id: _Optional[str] = ..., interrupted_at_task: _Optional[bytes] = ...) -> None: ...

class CheckControlSignalsResponse(_message.Message):
    __slots__ = ("signal",)
    SIGNAL_FIELD_NUMBER: _ClassVar[int]
    signal: ControlSignal
    def __init__(self, signal: _Optional[_Union[ControlSignal, str]] = ...) -> None: ...

class UnpauseRequest(_message.Message):
    __slots__ = ("instance_id",)
    INSTANCE_ID_FIELD_NUMBER: _ClassVar[int]
    instance_id: str
    def __init__(self, instance_id: _Optional[str] = ...) -> None: ...

class UnpauseResponse(_message.Message):
    __slots__ = ("snapshot",)
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    snapshot: _snapshot_pb2.WorkflowSnapshot
    def __init__(self, snapshot: _Optional[_Union[_snapshot_pb2.WorkflowSnapshot, _Mapping]] = ...) -> None: ...
