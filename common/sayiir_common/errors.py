"""Client exceptions, named after the Rust `BackendError` variants.

The server maps each error to one gRPC status and names the variant twice:
in the `sayiir-error` trailing metadata, and the standard way, as a
`google.rpc.ErrorInfo` (reason = the variant, domain `sayiir.v1`, metadata
naming the field or instance) inside the `google.rpc.Status` of the
`grpc-status-details-bin` trailer. `error_from_rpc` turns either back into
the matching exception, so callers catch `NotFoundError` rather than
inspect codes.
"""

from __future__ import annotations

from typing import Any, ClassVar, cast

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2

# The trailing-metadata key that carries the Rust error variant name.
ERROR_KIND_METADATA = "sayiir-error"
# gRPC's standard trailer for a serialized google.rpc.Status.
STATUS_DETAILS_METADATA = "grpc-status-details-bin"
# The ErrorInfo domain of every error this service answers.
ERROR_DOMAIN = "sayiir.v1"
# ErrorInfo metadata values are cut to this many characters.
MAX_DETAIL_CHARS = 256


class BackendError(Exception):
    """Base of every error the backend raises (Rust `BackendError::Backend`)."""

    kind = "Backend"
    # The status the server answers with (subclasses inherit theirs).
    grpc_status: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        # The ErrorInfo metadata of the answer (e.g. `field`, `instance_id`).
        self.metadata: dict[str, str] = {}


class NotFoundError(BackendError):
    """The workflow instance (or the thing asked for) does not exist."""

    kind = "NotFound"
    grpc_status = grpc.StatusCode.NOT_FOUND


class SerializationError(BackendError):
    """A snapshot blob could not be encoded or decoded."""

    kind = "Serialization"
    grpc_status = grpc.StatusCode.DATA_LOSS


class FailedPreconditionError(BackendError):
    """The workflow is not in a state that allows the call (e.g. unpause of a running one)."""

    kind = "FailedPrecondition"
    grpc_status = grpc.StatusCode.FAILED_PRECONDITION


class CannotCancelError(FailedPreconditionError):
    """Cancel refused: the workflow is already Completed or Failed."""

    kind = "CannotCancel"


class CannotPauseError(FailedPreconditionError):
    """Pause refused: the workflow is already Completed, Failed or Cancelled."""

    kind = "CannotPause"


class ClaimLostError(BackendError):
    """The task claim is held by another worker or task, or has expired."""

    kind = "ClaimLost"
    grpc_status = grpc.StatusCode.ABORTED


class InvalidArgumentError(BackendError, ValueError):
    """The request was malformed; the message names the field."""

    kind = "InvalidArgument"
    grpc_status = grpc.StatusCode.INVALID_ARGUMENT


class UnavailableError(BackendError):
    """The service or its database cannot be reached right now; retry later."""

    kind = "Unavailable"
    grpc_status = grpc.StatusCode.UNAVAILABLE


class ResourceExhaustedError(BackendError):
    """The write would make a reply exceed the message limit; the message names both sizes."""

    kind = "ResourceExhausted"
    grpc_status = grpc.StatusCode.RESOURCE_EXHAUSTED


class OutcomeUnknownError(BackendError):
    """The connection to the database was lost while the call committed.

    The call may or may not have been applied: not safe to repeat blindly.
    A call made with an idempotency key (`x-request-id`) never ends here on
    the server: it is repeated with its key, which answers the first outcome.
    """

    kind = "OutcomeUnknown"
    grpc_status = grpc.StatusCode.UNKNOWN


_BY_KIND: dict[str, type[BackendError]] = {
    cls.kind: cls
    for cls in (
        BackendError,
        NotFoundError,
        SerializationError,
        CannotCancelError,
        CannotPauseError,
        ClaimLostError,
        InvalidArgumentError,
        FailedPreconditionError,
        UnavailableError,
        OutcomeUnknownError,
        ResourceExhaustedError,
    )
}

# From a status back to the class; CannotCancel and CannotPause share
# FAILED_PRECONDITION, so only the kind metadata tells them apart.
_BY_CODE: dict[grpc.StatusCode, type[BackendError]] = {
    cls.grpc_status: cls
    for cls in (
        NotFoundError,
        SerializationError,
        ClaimLostError,
        InvalidArgumentError,
        FailedPreconditionError,
        UnavailableError,
        OutcomeUnknownError,
        ResourceExhaustedError,
    )
}


def status_details(code: grpc.StatusCode, message: str, kind: str, metadata: dict[str, str]) -> bytes:
    """The serialized google.rpc.Status, with its ErrorInfo, for an error."""
    info = error_details_pb2.ErrorInfo(
        reason=kind,
        domain=ERROR_DOMAIN,
        metadata={key: value[:MAX_DETAIL_CHARS] for key, value in metadata.items()},
    )
    detail = any_pb2.Any()
    detail.Pack(info)
    status = status_pb2.Status(code=code.value[0], message=message, details=[detail])
    serialized: bytes = status.SerializeToString()
    return serialized


def error_info(trailing: Any) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo of the `grpc-status-details-bin` trailer, if there is one."""
    for key, value in trailing or ():
        if key != STATUS_DETAILS_METADATA or not isinstance(value, bytes):
            continue
        status = status_pb2.Status()
        try:
            status.ParseFromString(value)
        except Exception:  # not a Status: ignore it, the code still speaks
            return None
        return _sayiir_error_info(status)
    return None


def error_from_rpc(exc: grpc.aio.AioRpcError | grpc.RpcError) -> BackendError:
    """The exception matching a failed call's status and error details."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    kind = None
    trailing = cast(Any, exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None)
    info = error_info(trailing)
    if info is not None:
        kind = info.reason
    for key, value in trailing or ():
        if key == ERROR_KIND_METADATA and kind is None:
            kind = value if isinstance(value, str) else value.decode()
    return _error_of(code, details, kind, info)


def error_from_status(serialized: bytes) -> BackendError:
    """The exception of a serialized google.rpc.Status (a worker session's error reply)."""
    status = status_pb2.Status()
    status.ParseFromString(serialized)
    code = _CODES_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    info = _sayiir_error_info(status)
    return _error_of(code, status.message, None if info is None else info.reason, info)


_CODES_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def _sayiir_error_info(status: status_pb2.Status) -> error_details_pb2.ErrorInfo | None:
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if detail.Is(info.DESCRIPTOR) and detail.Unpack(info) and info.domain == ERROR_DOMAIN:
            return info
    return None


def _error_of(
    code: grpc.StatusCode | None, details: str, kind: str | None, info: error_details_pb2.ErrorInfo | None
) -> BackendError:
    by_code = _BY_CODE.get(code) if code is not None else None
    cls = _BY_KIND.get(kind or "") or by_code or BackendError
    if cls is BackendError and by_code is not None:
        # "Backend" is the Rust catch-all; the status code says more (UNAVAILABLE).
        cls = by_code
    error = cls(details, code)
    if info is not None:
        error.metadata = dict(info.metadata)
    return error
