"""Traces: the service's spans reach a local OTLP receiver, children of the caller's span.

The receiver is a small gRPC server implementing the OTLP TraceService
(opentelemetry-proto), on 127.0.0.1 port 0; the service is pointed at it with
the standard OTEL_EXPORTER_OTLP_ENDPOINT, as an operator would.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest
from grpc_health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpc_health.v1.health_pb2_grpc import HealthStub
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider

from conftest import start_service
from sayiir_client import AtTask, NotFoundError, TaskId, WorkflowSnapshot, connect
from sayiir_client.tracing import outgoing_metadata
from sayiir_grpc.tracing import export_configured

STEP = TaskId.sha256("step")


class Receiver(trace_service_pb2_grpc.TraceServiceServicer):
    """Collects every span exported to it, with its resource attributes."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Any]] = []

    async def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: object
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        for resource_spans in request.resource_spans:
            resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                self.spans.extend((resource, span) for span in scope_spans.spans)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    server = grpc.aio.server()
    collected = Receiver()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collected, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield collected, port
    await server.stop(0)


def attributes(span: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for kv in span.attributes:
        kind = kv.value.WhichOneof("value")
        found[kv.key] = getattr(kv.value, kind)
    return found


async def test_spans_reach_the_otlp_receiver_with_the_callers_span_as_parent(
    receiver: tuple[Receiver, int],
    make_database: Callable[[], Awaitable[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    collected, port = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    running = await start_service(await make_database())
    # The caller: an application with OpenTelemetry, its span current during the calls.
    tracer = TracerProvider().get_tracer("worker")
    try:
        assert running.tracing is not None
        async with connect(f"127.0.0.1:{running.port}", watch_wakeups=False) as client:
            with tracer.start_as_current_span("run-workflow") as caller:
                snapshot = WorkflowSnapshot.with_initial_input("traced-1", "trace-v1", b'"in"')
                snapshot.update_position(AtTask(STEP))
                assert snapshot.trace_parent is None
                await client.save_snapshot(snapshot)
                with pytest.raises(NotFoundError):
                    await client.load_snapshot("no-such-workflow")
                sent = dict(outgoing_metadata())
            loaded = await client.load_snapshot("traced-1")  # outside any span: a root span
    finally:
        await running.stop(grace=1)  # flushes the spans

    context = caller.get_span_context()
    trace_id, span_id = context.trace_id.to_bytes(16, "big"), context.span_id.to_bytes(8, "big")
    # The save carried no trace_parent: it stored the caller's.
    assert loaded.trace_parent == sent["traceparent"]
    assert sent["traceparent"].startswith(f"00-{trace_id.hex()}-{span_id.hex()}-")

    by_name: dict[str, list[Any]] = {}
    for resource, span in collected.spans:
        assert resource["service.name"] == "sayiir-grpc"
        assert resource["deployment.environment"] == "test"
        by_name.setdefault(span.name, []).append(span)
    save = by_name["sayiir.v1.SnapshotStore/SaveSnapshot"][0]
    missing, root = sorted(by_name["sayiir.v1.SnapshotStore/LoadSnapshot"], key=lambda s: s.start_time_unix_nano)
    for span in (save, missing):
        assert span.trace_id == trace_id and span.parent_span_id == span_id
        assert span.kind == span.SPAN_KIND_SERVER
    assert attributes(save) == {
        "rpc.system": "grpc",
        "rpc.service": "sayiir.v1.SnapshotStore",
        "rpc.method": "SaveSnapshot",
        "rpc.grpc.status_code": 0,
    }
    assert attributes(missing)["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]
    assert save.status.code == save.status.STATUS_CODE_UNSET  # NOT_FOUND is an answer, not a server error
    assert root.parent_span_id == b"" and root.trace_id != trace_id
    assert save.end_time_unix_nano >= save.start_time_unix_nano > 0


async def test_a_traceparent_given_in_the_snapshot_is_kept(make_database: Callable[[], Awaitable[str]]) -> None:
    running = await start_service(await make_database())
    tracer = TracerProvider().get_tracer("worker")
    own = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    try:
        async with connect(f"127.0.0.1:{running.port}", watch_wakeups=False) as client:
            with tracer.start_as_current_span("caller"):
                snapshot = WorkflowSnapshot.with_initial_input("own-trace", "trace-v1", b'"in"')
                snapshot.update_position(AtTask(STEP))
                snapshot.trace_parent = own
                await client.save_snapshot(snapshot)
            assert (await client.load_snapshot("own-trace")).trace_parent == own
    finally:
        await running.stop(grace=1)


async def test_without_otel_variables_nothing_is_traced(
    make_database: Callable[[], Awaitable[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    running = await start_service(await make_database())
    try:
        assert running.tracing is None
        # No span is current: the client sends no trace metadata either.
        assert outgoing_metadata() == ()
        async with connect(f"127.0.0.1:{running.port}", watch_wakeups=False) as client:
            snapshot = WorkflowSnapshot.with_initial_input("untraced", "trace-v1", b'"in"')
            snapshot.update_position(AtTask(STEP))
            await client.save_snapshot(snapshot)
            assert (await client.load_snapshot("untraced")).trace_parent is None
    finally:
        await running.stop(grace=1)


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317", "OTEL_TRACES_EXPORTER": "none"}, False),
    ],
)
def test_export_follows_the_standard_variables(environ: dict[str, str], on: bool) -> None:
    assert export_configured(environ) is on


async def test_a_bad_traceparent_is_not_stored(make_database: Callable[[], Awaitable[str]]) -> None:
    running = await start_service(await make_database())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            from sayiir_common import convert
            from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2, snapshot_store_pb2_grpc

            stub = snapshot_store_pb2_grpc.SnapshotStoreStub(channel)
            for i, value in enumerate(["garbage", "00-" + "0" * 32 + "-b7ad6b7169203331-01", "00-ABC-x-01"]):
                snapshot = WorkflowSnapshot.with_initial_input(f"bad-trace-{i}", "trace-v1", b'"in"')
                request = snapshot_store_pb2.SaveSnapshotRequest(snapshot=convert.snapshot_to_proto(snapshot))
                await stub.SaveSnapshot(request, metadata=(("traceparent", value),))
        async with connect(f"127.0.0.1:{running.port}", watch_wakeups=False) as client:
            for i in range(3):
                assert (await client.load_snapshot(f"bad-trace-{i}")).trace_parent is None
    finally:
        await running.stop(grace=1)


async def test_spans_are_flushed_within_the_batch_delay(
    receiver: tuple[Receiver, int],
    make_database: Callable[[], Awaitable[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Exported while the service runs, not only at its stop."""
    collected, port = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "orders-persistence")
    running = await start_service(await make_database())
    try:
        async with connect(f"127.0.0.1:{running.port}", watch_wakeups=False) as client:
            await client.list_snapshots()
            for _ in range(100):
                if collected.spans:
                    break
                await asyncio.sleep(0.05)
        resource, span = collected.spans[0]
        assert resource["service.name"] == "orders-persistence"
        assert span.name == "sayiir.v1.SnapshotStore/ListSnapshots"
    finally:
        await running.stop(grace=1)


async def test_an_unsupported_otlp_protocol_stops_the_start_with_one_line(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SAYIIR_", "OTEL_"))}
    env |= {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}
    url = await make_database()
    command = [sys.executable, "-m", "sayiir_grpc", "serve", "--database-url", url, "--listen", "127.0.0.1:0"]
    result = await asyncio.to_thread(
        subprocess.run,
        [*command, "--metrics-listen", "off"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "sayiir-grpc: OTEL_EXPORTER_OTLP_PROTOCOL='http/protobuf': sayiir-grpc exports OTLP over grpc"
    )


async def test_health_watch_streams_while_tracing(
    receiver: tuple[Receiver, int],
    make_database: Callable[[], Awaitable[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The span wrapper handles grpc's own Watch (a coroutine writing to its context, not a generator)."""
    _, port = receiver
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{port}")
    running = await start_service(await make_database())
    try:
        assert running.tracing is not None
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            call = HealthStub(channel).Watch(HealthCheckRequest(service=""))
            first = await asyncio.wait_for(call.read(), timeout=10)
            assert first.status == HealthCheckResponse.SERVING
            call.cancel()
    finally:
        await running.stop(grace=1)
