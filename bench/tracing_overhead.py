"""What tracing costs per call: a loop of LoadSnapshot calls, one caller, in three set-ups.

1. `off, old client`: no OTEL_* variables, the client sends no trace metadata
   at all (the code before tracing existed);
2. `off`: no OTEL_* variables, the shipped code (the client checks for an
   active span; the server adds nothing);
3. `on`: OTEL_EXPORTER_OTLP_ENDPOINT set to a local OTLP receiver that
   accepts and drops every span, and the caller inside an active span.

The service runs in this process (its own event loop), as in the tests;
each set-up runs `--rounds` times, in rotating order, and the median is printed.
Call logs are off (level WARNING) so that only tracing differs.

    .venv/bin/python bench/tracing_overhead.py [--calls 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import timeit
from pathlib import Path

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider

sys.path.insert(0, str(Path(__file__).resolve().parent))

import sayiir_common.calls as client_backend
from common import DEFAULT_ADMIN_URL, create_database, drop_database
from sayiir_client import AtTask, TaskId, WorkflowSnapshot, connect
from sayiir_grpc.app import start
from sayiir_grpc.config import Settings
from sayiir_grpc.log_setup import configure
from sayiir_grpc.tracing import caller_traceparent


class DropSpans(trace_service_pb2_grpc.TraceServiceServicer):
    async def Export(self, request: object, context: object) -> trace_service_pb2.ExportTraceServiceResponse:
        return trace_service_pb2.ExportTraceServiceResponse()


async def measure(url: str, calls: int, setup: str, receiver_port: int) -> tuple[float, float]:
    """(calls per second, CPU microseconds per call of this process: client, service and exporter)."""
    if setup == "on":
        os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = f"http://127.0.0.1:{receiver_port}"
    else:
        os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    shipped = client_backend.outgoing_metadata
    if setup == "off, old client":
        client_backend.outgoing_metadata = lambda: None  # type: ignore[assignment,return-value]
    settings = Settings(listen="127.0.0.1:0", metrics_listen="off", pool_min_connections=1, pool_max_connections=4)
    running = await start(settings, url)
    tracer = TracerProvider().get_tracer("bench")
    try:
        async with connect(f"127.0.0.1:{running.port}", watch_wakeups=False) as client:
            snapshot = WorkflowSnapshot.with_initial_input("bench-1", "bench-v1", b'"in"')
            snapshot.update_position(AtTask(TaskId.sha256("step")))
            await client.save_snapshot(snapshot)
            for _ in range(100):  # warm up
                await client.load_snapshot("bench-1")
            with tracer.start_as_current_span("caller") if setup == "on" else _nothing():
                started, cpu_started = time.perf_counter(), time.process_time()
                for _ in range(calls):
                    await client.load_snapshot("bench-1")
                elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    finally:
        client_backend.outgoing_metadata = shipped
        await running.stop(grace=1)
    return calls / elapsed, cpu / calls * 1e6


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def micro() -> None:
    """The pieces on the call path, timed alone (less sensitive to a busy machine than whole calls)."""

    class Context:
        def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
            return (("x-request-id", "r1"), ("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"))

    tracer = TracerProvider().get_tracer("bench")
    n = 200_000
    with tracer.start_as_current_span("caller"):
        in_span = timeit.timeit(client_backend.outgoing_metadata, number=n) / n * 1e6
    no_span = timeit.timeit(client_backend.outgoing_metadata, number=n) / n * 1e6
    context = Context()
    adopt = timeit.timeit(lambda: caller_traceparent(context), number=n) / n * 1e6  # type: ignore[arg-type]
    print("Per call, timed alone:")
    print(f"  client outgoing_metadata(), no active span   {no_span:6.2f} us  (every call, tracing or not)")
    print(f"  client outgoing_metadata(), in a span        {in_span:6.2f} us")
    print(f"  server caller_traceparent() on a save         {adopt:6.2f} us  (saves only)")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    configure("WARNING", "json")  # the per-call log lines would drown what is measured
    url = await create_database(DEFAULT_ADMIN_URL, "sayiir_bench_tracing")
    receiver = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(DropSpans(), receiver)
    receiver_port = receiver.add_insecure_port("127.0.0.1:0")
    await receiver.start()
    setups = ("off, old client", "off", "on")
    rates: dict[str, list[float]] = {s: [] for s in setups}
    cpu: dict[str, list[float]] = {s: [] for s in setups}
    try:
        for round_ in range(args.rounds):
            # Rotated each round, so that no set-up always runs first (or last).
            for setup in setups[round_ % 3 :] + setups[: round_ % 3]:
                rate, cpu_us = await measure(url, args.calls, setup, receiver_port)
                rates[setup].append(rate)
                cpu[setup].append(cpu_us)
    finally:
        await receiver.stop(0)
        await drop_database(DEFAULT_ADMIN_URL, url)
    micro()
    base = statistics.median(cpu["off, old client"])
    print(f"LoadSnapshot, one caller, {args.calls} calls x {args.rounds} rounds (medians):")
    for setup in setups:
        rate, cpu_us = statistics.median(rates[setup]), statistics.median(cpu[setup])
        print(
            f"  {setup:16} {rate:6.0f} calls/s  {cpu_us:6.0f} us CPU per call ({100 * (cpu_us / base - 1):+5.1f}%)"
            f"  CPU runs {[round(c) for c in cpu[setup]]}"
        )


if __name__ == "__main__":
    asyncio.run(main())
