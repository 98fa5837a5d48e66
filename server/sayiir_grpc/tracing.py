"""OpenTelemetry traces: one server span per call, exported over OTLP.

Off unless the standard `OTEL_EXPORTER_OTLP_ENDPOINT` (or
`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: then the SDK is imported, a
tracer provider built from the standard `OTEL_*` variables (service name,
resource attributes, headers, batch delays...) and the interceptor below
added. Unset, nothing of this runs on the call path.

A span is named `sayiir.v1.Service/Method`, carries the `rpc.*` attributes of
the OpenTelemetry conventions, and is the child of the caller's W3C
`traceparent` metadata when there is one. The same metadata is what a save
without its own `trace_parent` stores (`adopt_caller_trace`), whether or not
spans are exported, so the engine's workers and ours trace a workflow alike.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc
import structlog

from sayiir_common.model import WorkflowSnapshot
from sayiir_grpc.observability import around_stream, call_status

log = structlog.get_logger(__name__)

TRACEPARENT = "traceparent"
# version-traceid-spanid-flags, lowercase hex (W3C Trace Context, level 1).
_TRACEPARENT = re.compile(r"^(?!ff)[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$")
# The server-side status codes the conventions count as errors.
_ERROR_CODES = frozenset({"UNKNOWN", "DEADLINE_EXCEEDED", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS"})

Context = grpc.aio.ServicerContext[Any, Any]


def caller_traceparent(context: Context) -> str | None:
    """The caller's `traceparent` metadata when it is a valid W3C value, else None."""
    for key, value in context.invocation_metadata() or ():
        if key == TRACEPARENT and isinstance(value, str):
            return value if _TRACEPARENT.match(value) else None
    return None


def adopt_caller_trace(snapshot: WorkflowSnapshot, context: Context) -> WorkflowSnapshot:
    """A snapshot saved without a `trace_parent` gets the caller's."""
    if snapshot.trace_parent is None:
        snapshot.trace_parent = caller_traceparent(context)
    return snapshot


def export_configured(environ: Mapping[str, str] = os.environ) -> bool:
    """Do the standard OTEL_* variables ask for traces over OTLP?"""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").strip().lower() not in ("otlp", ""):
        return False
    return bool(environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


class TracingConfigError(ValueError):
    """An OTEL_* variable asks for something this build cannot do."""


class Tracing:
    """The service's own tracer provider (not the process-global one: tests run several servers)."""

    def __init__(self, provider: Any) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("sayiir_grpc")

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ) -> Tracing | None:
        if not export_configured(environ):
            return None
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        protocol = environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        if (protocol or "grpc") != "grpc":
            raise TracingConfigError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r}: sayiir-grpc exports OTLP over grpc")
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        # OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES are read by Resource.create.
        defaults = {} if environ.get("OTEL_SERVICE_NAME") else {"service.name": "sayiir-grpc"}
        provider = TracerProvider(resource=Resource.create(defaults))
        # The exporter and the batch processor read their OTEL_* variables themselves.
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        log.info(
            "tracing on",
            endpoint=environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"),
        )
        return cls(provider)

    def interceptor(self) -> TracingInterceptor:
        return TracingInterceptor(self.tracer)

    def shutdown(self) -> None:
        """Export what is buffered, then stop (blocking: call it off the event loop)."""
        self.provider.shutdown()


class TracingInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, tracer: Any) -> None:
        from opentelemetry import propagate, trace

        self._tracer = tracer
        self._extract = propagate.extract
        self._server_kind = trace.SpanKind.SERVER
        self._error = trace.Status(trace.StatusCode.ERROR)

    def _start(self, details: grpc.HandlerCallDetails, context: Context) -> Any:
        service, _, method = details.method.lstrip("/").rpartition("/")
        carrier = {key: value for key, value in context.invocation_metadata() or () if isinstance(value, str)}
        return self._tracer.start_span(
            f"{service}/{method}",
            context=self._extract(carrier),
            kind=self._server_kind,
            attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
        )

    @contextlib.asynccontextmanager
    async def _span(self, details: grpc.HandlerCallDetails, context: Context) -> AsyncIterator[None]:
        span = self._start(details, context)
        error: BaseException | None = None
        try:
            yield
        except BaseException as exc:
            error = exc
            raise
        finally:
            self._finish(span, context, error)

    def _finish(self, span: Any, context: Context, error: BaseException | None) -> None:
        # The status comes from the gRPC code, not from Python exceptions: an
        # abort raises, and NOT_FOUND or CLAIM_LOST are answers, not failures.
        code = call_status(context, error)
        span.set_attribute("rpc.grpc.status_code", grpc.StatusCode[code].value[0])
        if code in _ERROR_CODES:
            span.set_status(self._error)
        span.end()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(details)
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: Context) -> Any:
                async with self._span(details, context):
                    return await inner(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            return grpc.unary_stream_rpc_method_handler(
                around_stream(handler.unary_stream, lambda context: self._span(details, context)),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
