"""The caller's trace context, sent with every call as W3C `traceparent` metadata.

Only when OpenTelemetry is importable and a span is active: otherwise
nothing is sent and nothing is imported again (one check per call).
"""

from __future__ import annotations

from typing import Any

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
