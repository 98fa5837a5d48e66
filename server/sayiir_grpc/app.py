"""Assemble and run the server: pool, migrations, servicers, health, reflection."""

from __future__ import annotations

import asyncio
import signal
from dataclasses import dataclass

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sayiir_client._proto.sayiir.v1 import (
    signal_store_pb2,
    signal_store_pb2_grpc,
    snapshot_store_pb2,
    snapshot_store_pb2_grpc,
    task_claim_store_pb2,
    task_claim_store_pb2_grpc,
)
from sayiir_client.codec import codec_by_name
from sayiir_grpc import migrate
from sayiir_grpc.config import Settings
from sayiir_grpc.db import Database
from sayiir_grpc.servicers.signal_store import SignalStoreServicer
from sayiir_grpc.servicers.snapshot_store import SnapshotStoreServicer
from sayiir_grpc.servicers.task_claim_store import TaskClaimStoreServicer, TaskResultStoreServicer
from sayiir_grpc.wakeup import WakeupHub

log = structlog.get_logger(__name__)

SERVICE_NAMES = (
    snapshot_store_pb2.DESCRIPTOR.services_by_name["SnapshotStore"].full_name,
    signal_store_pb2.DESCRIPTOR.services_by_name["SignalStore"].full_name,
    task_claim_store_pb2.DESCRIPTOR.services_by_name["TaskClaimStore"].full_name,
    task_claim_store_pb2.DESCRIPTOR.services_by_name["TaskResultStore"].full_name,
)
GRACE_PERIOD_S = 10.0
MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class RunningServer:
    server: grpc.aio.Server
    db: Database
    health: health.aio.HealthServicer
    port: int
    hub: WakeupHub

    async def stop(self, grace: float = GRACE_PERIOD_S) -> None:
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        # Ending the wakeup streams first lets stop() drain only unary calls.
        await self.hub.stop()
        await self.server.stop(grace)
        await self.db.close()


async def start(settings: Settings, database_url: str) -> RunningServer:
    """Connect, migrate, and start serving; returns once the port is bound."""
    codec = codec_by_name(settings.codec)
    db = await Database.connect(database_url, settings.pool_options())
    hub = WakeupHub(database_url)
    try:
        async with db.connection() as conn:
            for step in await migrate.migrate(conn):
                log.info("migration", step=step)
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ]
        )
        snapshot_store_pb2_grpc.add_SnapshotStoreServicer_to_server(SnapshotStoreServicer(db, codec), server)
        signal_store_pb2_grpc.add_SignalStoreServicer_to_server(SignalStoreServicer(db, codec), server)
        await hub.start()
        task_claim_store_pb2_grpc.add_TaskClaimStoreServicer_to_server(TaskClaimStoreServicer(db, codec, hub), server)
        task_claim_store_pb2_grpc.add_TaskResultStoreServicer_to_server(TaskResultStoreServicer(db, codec), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        port = server.add_insecure_port(settings.listen)
        if port == 0:
            raise OSError(f"cannot listen on {settings.listen}")
        await server.start()
        for name in ("", *SERVICE_NAMES):
            await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    except BaseException:
        await hub.stop()
        await db.close()
        raise
    return RunningServer(server, db, health_servicer, port, hub)


async def serve(settings: Settings, database_url: str) -> None:
    """Serve until SIGTERM or SIGINT, then drain within the grace period."""
    running = await start(settings, database_url)
    host = settings.listen.rpartition(":")[0]
    print(f"sayiir-grpc listening on {host}:{running.port}", flush=True)
    log.info("serving", listen=f"{host}:{running.port}", codec=settings.codec)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", grace_s=GRACE_PERIOD_S)
    await running.stop()
