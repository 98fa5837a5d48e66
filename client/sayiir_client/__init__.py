"""Python client of the sayiir-grpc service, with the Sayiir (Rust) names.

async with sayiir_client.connect("127.0.0.1:50051") as backend:
    snapshot = WorkflowSnapshot.new("order-1", DefinitionHash.sha256("checkout-v1"))
    await backend.save_snapshot(snapshot)
"""

from sayiir_client.backend import GrpcBackend, connect
from sayiir_client.codec import CodecId, JsonCodec, ProtobufCodec
from sayiir_client.errors import (
    BackendError,
    CannotCancelError,
    CannotPauseError,
    ClaimLostError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    SerializationError,
    UnavailableError,
)
from sayiir_client.ids import DefinitionHash, TaskId
from sayiir_client.model import (
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
    SignalRequest,
    TaskDeadline,
    TaskResult,
    TaskRetryState,
    Timestamp,
    WorkflowSnapshot,
    WorkflowSnapshotState,
)
from sayiir_client.protocols import SignalStore, SnapshotStore

__all__ = [
    "AtDelay",
    "AtFork",
    "AtJoin",
    "AtSignal",
    "AtTask",
    "BackendError",
    "Cancelled",
    "CannotCancelError",
    "CannotPauseError",
    "ClaimLostError",
    "CodecId",
    "Completed",
    "ControlSignal",
    "DefinitionHash",
    "Duration",
    "ExecutionPosition",
    "Failed",
    "FailedPreconditionError",
    "GrpcBackend",
    "InLoop",
    "InProgress",
    "InvalidArgumentError",
    "JsonCodec",
    "NotFoundError",
    "NotStarted",
    "Paused",
    "ProtobufCodec",
    "RetryPolicy",
    "SerializationError",
    "SignalKind",
    "SignalRequest",
    "SignalStore",
    "SnapshotStore",
    "TaskDeadline",
    "TaskId",
    "TaskResult",
    "TaskRetryState",
    "Timestamp",
    "UnavailableError",
    "WorkflowSnapshot",
    "WorkflowSnapshotState",
    "connect",
]
