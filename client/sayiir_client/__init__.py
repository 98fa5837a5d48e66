"""Python client of the sayiir-grpc service, with the Sayiir (Rust) names.

async with sayiir_client.connect("127.0.0.1:50051") as backend:
    snapshot = WorkflowSnapshot.new("order-1", DefinitionHash.sha256("checkout-v1"))
    await backend.save_snapshot(snapshot)
"""

import sys

from sayiir_client.backend import GrpcBackend, connect
from sayiir_client.operator import OperatorClient, connect_operator
from sayiir_client.protocols import SignalStore, SnapshotStore, TaskClaimStore, TaskResultStore
from sayiir_common import codec as _codec
from sayiir_common import convert as _convert
from sayiir_common import errors as _errors
from sayiir_common import ids as _ids
from sayiir_common import model as _model
from sayiir_common.codec import CodecId, JsonCodec, ProtobufCodec
from sayiir_common.errors import (
    BackendError,
    CannotCancelError,
    CannotPauseError,
    ClaimLostError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    OutcomeUnknownError,
    SerializationError,
    UnavailableError,
)
from sayiir_common.ids import DefinitionHash, TaskId
from sayiir_common.model import (
    AtDelay,
    AtFork,
    AtJoin,
    AtSignal,
    AtTask,
    AvailableTask,
    CancellationRequest,
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
    PauseRequest,
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
from sayiir_common.operator_model import (
    ActionParams,
    ActionResult,
    ClaimInfo,
    HistoryEntry,
    Page,
    WorkflowAction,
    WorkflowDescription,
    WorkflowFilter,
    WorkflowSummary,
)

# The shared modules were once submodules of this package; their old import
# paths (`sayiir_client.model`, ...) keep working as aliases of the same modules.
for _name, _module in {"codec": _codec, "convert": _convert, "errors": _errors, "ids": _ids, "model": _model}.items():
    sys.modules.setdefault(f"{__name__}.{_name}", _module)

__all__ = [
    "ActionParams",
    "ActionResult",
    "AtDelay",
    "AtFork",
    "AtJoin",
    "AtSignal",
    "AtTask",
    "AvailableTask",
    "BackendError",
    "CancellationRequest",
    "Cancelled",
    "CannotCancelError",
    "CannotPauseError",
    "ClaimInfo",
    "ClaimLostError",
    "ClaimedTask",
    "CodecId",
    "Completed",
    "ControlSignal",
    "DefinitionHash",
    "Duration",
    "ExecutionPosition",
    "Failed",
    "FailedPreconditionError",
    "GrpcBackend",
    "HistoryEntry",
    "InLoop",
    "InProgress",
    "InvalidArgumentError",
    "JsonCodec",
    "NotFoundError",
    "NotStarted",
    "OperatorClient",
    "OutcomeUnknownError",
    "Page",
    "PauseRequest",
    "Paused",
    "ProtobufCodec",
    "RetryPolicy",
    "SerializationError",
    "SignalKind",
    "SignalRequest",
    "SignalStore",
    "SnapshotStore",
    "TaskClaim",
    "TaskClaimStore",
    "TaskDeadline",
    "TaskId",
    "TaskResult",
    "TaskResultStore",
    "TaskRetryState",
    "TaskWakeupHint",
    "Timestamp",
    "UnavailableError",
    "WorkflowAction",
    "WorkflowDescription",
    "WorkflowFilter",
    "WorkflowSnapshot",
    "WorkflowSnapshotState",
    "WorkflowSummary",
    "connect",
    "connect_operator",
]
