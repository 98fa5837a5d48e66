"""grpc.health.v1.Health/Watch streams the serving status, and its change on drain."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from conftest import start_service

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


async def test_watch_streams_serving_then_not_serving_on_drain(make_database: Callable[[], Awaitable[str]]) -> None:
    running = await start_service(await make_database())
    stopping: asyncio.Task[None] | None = None
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            for service in ("", "sayiir.v1.SnapshotStore"):
                call = stub.Watch(health_pb2.HealthCheckRequest(service=service))
                first = await asyncio.wait_for(call.read(), 5)
                assert first.status == SERVING, service
                call.cancel()
            call = stub.Watch(health_pb2.HealthCheckRequest(service=""))
            assert (await asyncio.wait_for(call.read(), 5)).status == SERVING
            stopping = asyncio.create_task(running.stop(grace=2))
            seen = await asyncio.wait_for(call.read(), 5)
            assert seen.status == NOT_SERVING
            call.cancel()
    finally:
        if stopping is None:
            await running.stop(grace=1)
        else:
            await stopping
