"""Metrics and per-call logs, in one server interceptor.

Every call, unary or streaming, is timed, counted by method and status code,
and logged as one line (method, status, duration_ms, instance_id, request_id).
Nothing of a request's payload is logged: only the instance id, which
operators need to follow a workflow. The Prometheus registry is the
service's own, served on its own port.
"""

from __future__ import annotations

import inspect
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal

import grpc
import structlog
from prometheus_client import GC_COLLECTOR, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from sayiir_common.errors import InvalidArgumentError
from sayiir_common.model import STATUS_NAMES, TERMINAL_STATUSES
from sayiir_grpc.errors import abort
from sayiir_grpc.security import unparsed

log = structlog.get_logger("sayiir_grpc.calls")

REQUEST_ID_METADATA = "x-request-id"
MAX_LOG_FIELD_CHARS = 256
# Buckets from 0.5 ms to 5 s: the interesting range of a store call.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every metric the service exports (one registry per server)."""

    def __init__(self) -> None:
        self._http: tuple[Any, threading.Thread] | None = None
        self.registry = CollectorRegistry()
        r = self.registry
        # python_gc_*: the collector's runs and finds, by generation (one
        # process's: `serve --workers N` exports them from no process).
        r.register(GC_COLLECTOR)
        self.calls = Counter(
            "sayiir_grpc_calls", "gRPC calls by method and status code.", ["method", "code"], registry=r
        )
        self.latency = Histogram(
            "sayiir_grpc_call_duration_seconds", "gRPC call latency.", ["method"], buckets=LATENCY_BUCKETS, registry=r
        )
        self._calls_by_label: dict[tuple[str, str], Counter] = {}
        self._latency_by_method: dict[str, Histogram] = {}
        # Gauges say how processes of `serve --workers N` add up (multiprocess mode; ignored otherwise).
        self.in_flight = Gauge(
            "sayiir_grpc_calls_in_flight", "gRPC calls being served.", registry=r, multiprocess_mode="livesum"
        )
        self.pool_size = Gauge(
            "sayiir_grpc_pool_connections",
            "Connections open in the pool (its read connections included).",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_in_use = Gauge(
            "sayiir_grpc_pool_connections_in_use",
            "Pool connections checked out.",
            registry=r,
            multiprocess_mode="livesum",
        )
        self.pool_max = Gauge(
            "sayiir_grpc_pool_connections_max", "Pool size limit.", registry=r, multiprocess_mode="livesum"
        )
        self.pool_wait = Histogram(
            "sayiir_grpc_pool_acquire_wait_seconds",
            "Time waiting for a pool connection.",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.completions = Counter(
            "sayiir_grpc_task_completions",
            "CompleteTask calls by path: one_statement (a continued workflow's snapshot "
            "kept by this process) or transaction.",
            ["path"],
            registry=r,
        )
        self.hints_sent = Counter("sayiir_grpc_wakeup_hints_sent", "Wakeup hints sent to streams.", registry=r)
        self.hints_dropped = Counter(
            "sayiir_grpc_wakeup_hints_dropped",
            "Wakeup hints dropped for slow streams (wakeup_drops_total).",
            registry=r,
        )
        self.wakeup_streams = Gauge(
            "sayiir_grpc_wakeup_streams", "Open wakeup streams.", registry=r, multiprocess_mode="livesum"
        )
        self.claims_granted = Counter("sayiir_grpc_claims_granted", "Task claims granted.", registry=r)
        self.claims_lost = Counter(
            "sayiir_grpc_claims_lost", "Claims found lost: ClaimLost answers and fenced saves refused.", registry=r
        )
        self.transient_retries = Counter(
            "sayiir_grpc_transient_retries",
            "Transactions re-run after a transient database error.",
            ["op"],
            registry=r,
        )
        self.database_up = Gauge(
            "sayiir_grpc_database_up",
            "1 while the database answers the health probe (every process's probe, when several).",
            registry=r,
            multiprocess_mode="livemin",
        )
        self.purged = Counter(
            "sayiir_grpc_purged", "Finished workflows purged by retention, by status.", ["status"], registry=r
        )
        # Every finished status is scraped from the start (0 before a purge), so
        # rate() and alerts see the series before the first purge, not after.
        for status in STATUS_NAMES:
            if status in TERMINAL_STATUSES:
                self.purged.labels(status)
        # The backlog (sayiir_grpc.backlog): bounded labels, the five engine statuses only.
        # Database-wide figures every process of `serve --workers N` reads: the latest one is shown.
        backlog: Literal["livemostrecent"] = "livemostrecent"
        self.workflows = Gauge(
            "sayiir_grpc_workflows", "Workflows stored, by status.", ["status"], registry=r, multiprocess_mode=backlog
        )
        self.runnable_tasks = Gauge(
            "sayiir_grpc_runnable_tasks",
            "Tasks a worker could claim now (no live claim).",
            registry=r,
            multiprocess_mode=backlog,
        )
        self.oldest_runnable_task_age = Gauge(
            "sayiir_grpc_oldest_runnable_task_age_seconds",
            "How long the oldest runnable task has waited for a worker (0 when none waits).",
            registry=r,
            multiprocess_mode=backlog,
        )
        self.expired_claims = Gauge(
            "sayiir_grpc_expired_claims",
            "Claims past their expiry: workers that died or stalled.",
            registry=r,
            multiprocess_mode=backlog,
        )

    def count_purged(self, status: str, count: int) -> None:
        self.purged.labels(status).inc(count)

    def observe_call(self, method: str, code: str, seconds: float) -> None:
        """Count and time one call (or one worker-session request) of `method`."""
        # The labelled children are looked up once: `labels()` takes a lock and builds a key per call.
        counted = self._calls_by_label.get((method, code))
        if counted is None:
            counted = self._calls_by_label[(method, code)] = self.calls.labels(method, code)
        timed = self._latency_by_method.get(method)
        if timed is None:
            timed = self._latency_by_method[method] = self.latency.labels(method)
        counted.inc()
        timed.observe(seconds)

    def serve(self, listen: str) -> int:
        """Serve /metrics on `listen` (HOST:PORT) in a thread; returns the port."""
        host, _, port = listen.rpartition(":")
        server, thread = start_http_server(int(port), addr=host, registry=self.registry)
        self._http = (server, thread)
        return int(server.server_port)

    def stop_serving(self) -> None:
        """Close the /metrics server and end its thread (blocks up to its half-second poll)."""
        if self._http is None:
            return
        server, thread = self._http
        self._http = None
        server.shutdown()
        server.server_close()
        thread.join()


class Undecodable:
    """What a request that does not parse becomes, so the call can refuse it.

    Left to itself, grpc.aio answers bytes that are not the request message
    (corrupt wire format, invalid UTF-8 in a string) with UNKNOWN before any
    handler runs; wrapping the deserializer turns them into INVALID_ARGUMENT.
    """

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


# Methods whose requests carry no payload: ids, names, a few tags or
# statuses. Their bodies are refused unparsed past SMALL_REQUEST_BYTES, so
# millions of repeated entries never reach the parser (which runs on the
# event loop). The others carry snapshots, outputs or event payloads.
PAYLOAD_METHODS = frozenset(
    {"SaveSnapshot", "SaveSnapshotFenced", "SaveTaskResult", "SendEvent", "CompleteTask", "WorkerSession"}
)
SMALL_REQUEST_BYTES = 64 * 1024


def _lenient(deserialize: Callable[[bytes], Any] | None, method: str = "") -> Callable[[bytes], Any] | None:
    if deserialize is None:
        return None
    # A call refused by the token check is never parsed anyway, and must be
    # answered UNAUTHENTICATED whatever its size.
    small = bool(method) and method not in PAYLOAD_METHODS and deserialize is not unparsed

    def parse(data: bytes) -> Any:
        if small and len(data) > SMALL_REQUEST_BYTES:
            return Undecodable(f"{len(data)} bytes is more than any valid request of {method} ({SMALL_REQUEST_BYTES})")
        try:
            return deserialize(data)
        except Exception as exc:  # DecodeError, or a RuntimeError from upb
            return Undecodable(f"{type(exc).__name__}: {exc}")

    return parse


async def _refuse(context: grpc.aio.ServicerContext[Any, Any], request: Undecodable) -> None:
    await abort(
        context,
        grpc.StatusCode.INVALID_ARGUMENT,
        f"the request is not a valid message of this method: {request.error}",
        InvalidArgumentError.kind,
        {"field": "request"},
    )


def _instance_id(request: Any) -> str | None:
    if isinstance(request, Undecodable):
        return None
    for path in (("instance_id",), ("snapshot", "instance_id"), ("hint", "instance_id")):
        value: Any = request
        for name in path:
            value = getattr(value, name, None)
            if value is None:
                break
        if isinstance(value, str) and value:
            return value
    return None


def _request_id(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_METADATA and isinstance(value, str) and value:
            return value
    return uuid.uuid4().hex


def cut_fields(**fields: str | None) -> dict[str, str | int | None]:
    """Log fields cut at MAX_LOG_FIELD_CHARS, each cut one with `<name>_length`.

    A refused 8 MB instance id must not become 8 MB of log per call.
    """
    out: dict[str, str | int | None] = {}
    for name, value in fields.items():
        if value is not None and len(value) > MAX_LOG_FIELD_CHARS:
            out[f"{name}_length"] = len(value)
            value = value[:MAX_LOG_FIELD_CHARS]
        out[name] = value
    return out


def around_stream(
    inner: Any, around: Callable[[grpc.aio.ServicerContext[Any, Any]], AbstractAsyncContextManager[None]]
) -> Callable[..., Any]:
    """The streaming handler `inner`, run inside `around(context)`, in `inner`'s own shape.

    grpc aio tells a streaming handler's kind by its shape: an async generator
    (ours) is iterated, a coroutine writing with `context.write` (grpc's own
    health Watch) is awaited. A wrapper of the wrong shape breaks the call.
    """
    if inspect.isasyncgenfunction(inner):

        async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
            async with around(context):
                async for item in inner(request, context):
                    yield item

        return stream

    async def writing_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        async with around(context):
            await inner(request, context)

    return writing_stream


def call_status(context: grpc.aio.ServicerContext[Any, Any], error: BaseException | None) -> str:
    """The name of the status code a finished call ended with."""
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if error is None:
        return "OK"
    return "CANCELLED" if isinstance(error, BaseException) and type(error).__name__ == "CancelledError" else "UNKNOWN"


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        # Typed Any: grpc's stubs describe the synchronous handlers only.
        handler: Any = await continuation(details)
        if handler is None:
            return handler
        method = details.method.rsplit("/", 1)[-1]
        metrics = self.metrics
        if handler.unary_unary is not None:
            inner = handler.unary_unary

            async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                started = time.perf_counter()
                metrics.in_flight.inc()
                error: BaseException | None = None
                try:
                    if isinstance(request, Undecodable):
                        await _refuse(context, request)
                    return await inner(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    metrics.in_flight.dec()
                    _record(metrics, method, request, context, error, started)

            return grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=_lenient(handler.request_deserializer, method),
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_stream = handler.unary_stream
            deserializer = _lenient(handler.request_deserializer, method)

            async def stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                started = time.perf_counter()
                metrics.wakeup_streams.inc()
                error: BaseException | None = None
                try:
                    if isinstance(request, Undecodable):
                        await _refuse(context, request)
                    async for item in inner_stream(request, context):
                        yield item
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    metrics.wakeup_streams.dec()
                    _record(metrics, method, request, context, error, started)

            async def writing_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
                # A streaming handler that is a coroutine writing with
                # `context.write` (grpc's own health Watch), not a generator.
                started = time.perf_counter()
                error: BaseException | None = None
                try:
                    if isinstance(request, Undecodable):
                        await _refuse(context, request)
                    await inner_stream(request, context)
                except BaseException as exc:
                    error = exc
                    raise
                finally:
                    _record(metrics, method, request, context, error, started)

            return grpc.unary_stream_rpc_method_handler(
                stream if inspect.isasyncgenfunction(inner_stream) else writing_stream,
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream is not None:
            # A worker session: each request is counted and timed as its
            # unary call (servicers.worker_session); a message that does
            # not parse reaches it as Undecodable and ends the stream.
            return grpc.stream_stream_rpc_method_handler(
                handler.stream_stream,
                request_deserializer=_lenient(handler.request_deserializer, method),
                response_serializer=handler.response_serializer,
            )
        return handler


def _record(
    metrics: Metrics,
    method: str,
    request: Any,
    context: grpc.aio.ServicerContext[Any, Any],
    error: BaseException | None,
    started: float,
) -> None:
    elapsed = time.perf_counter() - started
    code = call_status(context, error)
    metrics.observe_call(method, code, elapsed)
    if not log.is_enabled_for(logging.INFO):
        return  # below the level: skip building the line (a uuid, metadata lookups)
    log.info(
        "call",
        method=method,
        status=code,
        duration_ms=round(elapsed * 1000, 3),
        **cut_fields(instance_id=_instance_id(request), request_id=_request_id(context)),
    )
