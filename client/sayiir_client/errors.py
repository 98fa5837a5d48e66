"""Client exceptions, named after the Rust `BackendError` variants.

The server maps each error to one gRPC status and names the variant in the
`sayiir-error` trailing metadata; `error_from_rpc` turns that back into the
matching exception, so callers catch `NotFoundError` rather than inspect codes.
"""

from __future__ import annotations

from typing import Any, cast

import grpc

# The trailing-metadata key that carries the Rust error variant name.
ERROR_KIND_METADATA = "sayiir-error"


class BackendError(Exception):
    """Base of every error the backend raises (Rust `BackendError::Backend`)."""

    kind = "Backend"

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class NotFoundError(BackendError):
    """The workflow instance (or the thing asked for) does not exist."""

    kind = "NotFound"


class SerializationError(BackendError):
    """A snapshot blob could not be encoded or decoded."""

    kind = "Serialization"


class FailedPreconditionError(BackendError):
    """The workflow is not in a state that allows the call (e.g. unpause of a running one)."""

    kind = "FailedPrecondition"


class CannotCancelError(FailedPreconditionError):
    """Cancel refused: the workflow is already Completed or Failed."""

    kind = "CannotCancel"


class CannotPauseError(FailedPreconditionError):
    """Pause refused: the workflow is already Completed, Failed or Cancelled."""

    kind = "CannotPause"


class ClaimLostError(BackendError):
    """The task claim is held by another worker or task, or has expired."""

    kind = "ClaimLost"


class InvalidArgumentError(BackendError, ValueError):
    """The request was malformed; the message names the field."""

    kind = "InvalidArgument"


class UnavailableError(BackendError):
    """The service or its database cannot be reached right now; retry later."""

    kind = "Unavailable"


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
    )
}

_BY_CODE: dict[grpc.StatusCode, type[BackendError]] = {
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.DATA_LOSS: SerializationError,
    grpc.StatusCode.ABORTED: ClaimLostError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}


def error_from_rpc(exc: grpc.aio.AioRpcError | grpc.RpcError) -> BackendError:
    """The exception matching a failed call's status and `sayiir-error` metadata."""
    code = exc.code() if hasattr(exc, "code") else None
    details = (exc.details() if hasattr(exc, "details") else None) or str(exc)
    kind = None
    trailing = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
    for key, value in cast(Any, trailing or ()):
        if key == ERROR_KIND_METADATA:
            kind = value if isinstance(value, str) else value.decode()
    by_code = _BY_CODE.get(code) if code is not None else None
    cls = _BY_KIND.get(kind or "") or by_code or BackendError
    if cls is BackendError and by_code is not None:
        # "Backend" is the Rust catch-all; the status code says more (UNAVAILABLE).
        cls = by_code
    return cls(details, code)
