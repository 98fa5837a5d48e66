"""The one call helper of every Python caller of the service (the client's
`GrpcBackend` and `OperatorClient`, the operator command line): channels with
a bearer token and TLS, an `x-request-id` per logical call, the caller's W3C
`traceparent`, and the retry decision each call site states.
"""

from __future__ import annotations

import asyncio
import enum
import uuid
from collections.abc import Sequence
from typing import Any

import grpc

from sayiir_common.errors import error_from_rpc

DEFAULT_TIMEOUT_S = 30.0
# Back-off between attempts of a retried call (about 1.5 s in all).
DEFAULT_RETRY_DELAYS = (0.1, 0.2, 0.4, 0.8)
# The idempotency key of one logical call, the same on each of its retries,
# so the server can tell a retry from a new call.
REQUEST_ID_METADATA = "x-request-id"


class Retry(enum.Enum):
    """Whether a call is repeated after UNAVAILABLE (the answer was lost or never came)."""

    # Repeating it changes nothing: reads, and writes of the same state
    # (saves; a claim by the same worker for the same task returns the claim
    # it already holds).
    SAFE = "safe"
    # Repeated, and a NOT_FOUND answer to a repeat means the first attempt
    # did it (delete, release).
    DONE_IF_NOT_FOUND = "done-if-not-found"
    # A blind repeat would double or hide an effect (send_event,
    # consume_event, the check_and_* composites, unpause, the fast path's
    # claim and complete), but the server stores the reply under the call's
    # x-request-id in the same transaction: repeated, a repeat gets the
    # first reply and applies nothing twice.
    KEYED = "keyed"
    # A repeat would double or hide an effect and the server keeps no reply
    # for it: UNAVAILABLE reaches the caller, who knows what to do.
    NEVER = "never"


# The caller's trace context: only when OpenTelemetry is importable and a span
# is active; otherwise nothing is sent (one check per call).
_trace: Any
_propagator: Any
try:
    from opentelemetry import trace as _trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _propagator = TraceContextTextMapPropagator()
except ImportError:  # the client runs without OpenTelemetry
    _trace = _propagator = None


def outgoing_metadata() -> tuple[tuple[str, str], ...]:
    """`(("traceparent", ...), ("tracestate", ...))` of the current span, or `()` when there is none."""
    if _trace is None or not _trace.get_current_span().get_span_context().is_valid:
        return ()
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return tuple(carrier.items())


async def call_rpc(
    method: Any, request: Any, *, retry: Retry, timeout: float | None, retry_delays: Sequence[float]
) -> Any:
    """Call one unary RPC (a stub method), retrying on UNAVAILABLE as `retry` says.

    The call helper of every client class. Every attempt carries the same
    `x-request-id` (and the current span's `traceparent`). Returns None when a DONE_IF_NOT_FOUND call's repeat found
    nothing left to do.
    """
    # The caller's trace context goes with the key, so the service's span (and a
    # save without trace_parent) joins the caller's trace.
    metadata = ((REQUEST_ID_METADATA, str(uuid.uuid4())), *outgoing_metadata())
    attempt = 0
    while True:
        try:
            return await method(request, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if attempt > 0 and retry is Retry.DONE_IF_NOT_FOUND and code == grpc.StatusCode.NOT_FOUND:
                return None
            if code != grpc.StatusCode.UNAVAILABLE or retry is Retry.NEVER or attempt >= len(retry_delays):
                raise error_from_rpc(exc) from None
            await asyncio.sleep(retry_delays[attempt])
            attempt += 1


class _BearerToken(
    grpc.aio.UnaryUnaryClientInterceptor, grpc.aio.UnaryStreamClientInterceptor, grpc.aio.StreamStreamClientInterceptor
):
    """Adds `authorization: Bearer <token>` to every call."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    def _details(self, details: Any) -> Any:
        metadata = list(details.metadata or ())
        metadata.append(self._header)
        return grpc.aio.ClientCallDetails(
            details.method, details.timeout, grpc.aio.Metadata(*metadata), details.credentials, details.wait_for_ready
        )

    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)

    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)

    async def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


def open_channel(
    target: str,
    *,
    token: str | None = None,
    tls: bool = False,
    root_certificates: bytes | None = None,
    certificate_chain: bytes | None = None,
    private_key: bytes | None = None,
    options: Sequence[tuple[str, Any]] = (),
) -> grpc.aio.Channel:
    """A channel to the service: TLS when asked (or when certificates are given), with a bearer token."""
    interceptors = [_BearerToken(token)] if token else None
    all_options = [
        # Reconnect quickly after the service restarts, so retried calls land.
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 2000),
        *options,
    ]
    if tls or root_certificates or certificate_chain:
        credentials = grpc.ssl_channel_credentials(root_certificates, private_key, certificate_chain)
        return grpc.aio.secure_channel(target, credentials, options=all_options, interceptors=interceptors)
    return grpc.aio.insecure_channel(target, options=all_options, interceptors=interceptors)
