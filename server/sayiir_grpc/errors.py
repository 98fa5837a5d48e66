"""Every failure of the service mapped to a gRPC status, in one place.

Store functions raise the client's `BackendError` family (the Rust
`BackendError` variants) or let asyncpg errors escape; `status_for` decides the
status code, and the servicer wrapper aborts the call with it and with the
variant name in the `sayiir-error` trailing metadata.
"""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

import asyncpg
import grpc

from sayiir_common.checks import InvalidField
from sayiir_common.errors import (
    ERROR_KIND_METADATA,
    STATUS_DETAILS_METADATA,
    BackendError,
    InvalidArgumentError,
    status_details,
)

# SQLSTATEs a fresh transaction is likely to clear (the original's list):
# serialization failure, deadlock, and the whole connection class 08; plus
# the server going down or coming up (admin_shutdown, crash_shutdown,
# cannot_connect_now: "the database system is shutting down / starting up"),
# which a restart of PostgreSQL raises on every session it cuts and every
# connection attempted meanwhile (tests/faults/test_database_faults.py).
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03"})


def certainly_rolled_back(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the server rolled the transaction back."""
    return isinstance(exc, asyncpg.PostgresError) and (exc.sqlstate or "") in TRANSIENT_SQLSTATES


def is_transient(exc: BaseException) -> bool:
    """True for failures worth re-running the whole transaction for."""
    if isinstance(exc, asyncpg.PostgresError):
        state = exc.sqlstate or ""
        return state in TRANSIENT_SQLSTATES or state.startswith("08")
    return isinstance(
        exc,
        (
            asyncpg.exceptions.ConnectionDoesNotExistError,
            asyncpg.exceptions.InterfaceError,
            # A pooled connection whose server session was terminated while it
            # sat idle: asyncpg refuses the next statement before sending it
            # ("cannot switch to state ...; another operation is in progress").
            asyncpg.exceptions._base.InternalClientError,
            ConnectionError,
            OSError,
            asyncio.TimeoutError,
        ),
    )


def status_for(exc: BaseException) -> tuple[grpc.StatusCode, str, str]:
    """(status code, message, error kind) for any exception a handler raised."""
    if isinstance(exc, InvalidField):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc), InvalidArgumentError.kind
    if isinstance(exc, BackendError):
        return exc.grpc_status, exc.message, exc.kind
    if isinstance(exc, asyncpg.exceptions.QueryCanceledError):
        # statement_timeout, or the call was cancelled server-side.
        return grpc.StatusCode.DEADLINE_EXCEEDED, f"database statement cancelled: {exc}", "Backend"
    if isinstance(exc, asyncpg.exceptions.TooManyConnectionsError) or is_transient(exc):
        return grpc.StatusCode.UNAVAILABLE, f"database unavailable: {type(exc).__name__}: {exc}", "Backend"
    if isinstance(exc, asyncpg.PostgresError) and (exc.sqlstate or "").startswith("22"):
        # Data exceptions (bad encoding, out-of-range values) come from input
        # that validation should have caught; they are still the caller's fault.
        return grpc.StatusCode.INVALID_ARGUMENT, f"value rejected by the database: {exc}", "InvalidArgument"
    return grpc.StatusCode.INTERNAL, f"internal error: {type(exc).__name__}", "Backend"


def error_metadata(exc: BaseException, request: Any) -> dict[str, str]:
    """What the ErrorInfo names: the field at fault, and the instance."""
    found: dict[str, str] = {}
    if isinstance(exc, InvalidField):
        found["field"] = exc.field
    instance_id = getattr(request, "instance_id", None)
    if isinstance(instance_id, str) and instance_id:
        found["instance_id"] = instance_id
    return found


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: grpc.StatusCode,
    message: str,
    kind: str,
    metadata: dict[str, str] | None = None,
) -> NoReturn:
    """End the call with `code`, naming `kind` in both error trailers."""
    details = status_details(code, message, kind, metadata or {})
    context.set_trailing_metadata(((ERROR_KIND_METADATA, kind), (STATUS_DETAILS_METADATA, details)))
    await context.abort(code, message)
    raise AssertionError("unreachable: abort raises")
