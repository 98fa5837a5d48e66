"""Assemble and run the server: pool, migrations, servicers, health,
reflection, metrics, and a graceful stop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sayiir_common.codec import codec_by_name
from sayiir_common.proto.sayiir.v1 import (
    operator_pb2,
    operator_pb2_grpc,
    signal_store_pb2,
    signal_store_pb2_grpc,
    snapshot_store_pb2,
    snapshot_store_pb2_grpc,
    task_claim_store_pb2,
    task_claim_store_pb2_grpc,
)
from sayiir_grpc import limits, listen, memory, migrate, offload
from sayiir_grpc.backlog import backlog_loop
from sayiir_grpc.config import Settings
from sayiir_grpc.db import Database
from sayiir_grpc.observability import Metrics, ObservabilityInterceptor
from sayiir_grpc.retention import retention_loop
from sayiir_grpc.security import TokenAuthInterceptor, load_tokens, server_credentials
from sayiir_grpc.servicers.operator import WorkflowOperatorServicer
from sayiir_grpc.servicers.signal_store import SignalStoreServicer
from sayiir_grpc.servicers.snapshot_store import SnapshotStoreServicer
from sayiir_grpc.servicers.task_claim_store import TaskClaimStoreServicer, TaskResultStoreServicer
from sayiir_grpc.stores import dispatch
from sayiir_grpc.stores import idempotency as idempotency_store
from sayiir_grpc.tracing import Tracing
from sayiir_grpc.wakeup import WakeupHub

if TYPE_CHECKING:
    from sayiir_grpc.console import ConsoleServer

log = structlog.get_logger(__name__)

SERVICE_NAMES = (
    snapshot_store_pb2.DESCRIPTOR.services_by_name["SnapshotStore"].full_name,
    signal_store_pb2.DESCRIPTOR.services_by_name["SignalStore"].full_name,
    task_claim_store_pb2.DESCRIPTOR.services_by_name["TaskClaimStore"].full_name,
    task_claim_store_pb2.DESCRIPTOR.services_by_name["TaskResultStore"].full_name,
    operator_pb2.DESCRIPTOR.services_by_name["WorkflowOperator"].full_name,
)
SWEEP_BATCH = 100
# Expired idempotency keys are deleted every PURGE_INTERVAL_S, in batches.
PURGE_INTERVAL_S = 10.0
PURGE_BATCH = 500
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@dataclass
class RunningServer:
    server: grpc.aio.Server
    db: Database
    health: health.aio.HealthServicer
    port: int
    hub: WakeupHub
    metrics: Metrics
    settings: Settings
    metrics_port: int | None = None
    console: ConsoleServer | None = None
    tracing: Tracing | None = None
    draining: bool = False
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def set_health(self, status: int) -> None:
        for name in ("", *SERVICE_NAMES):
            await self.health.set(name, status)

    async def probe_database(self) -> bool:
        """One health probe: does the database answer within a second?"""
        try:
            async with asyncio.timeout(1.0), self.db.connection() as conn:
                await conn.fetchval("SELECT 1")
        except Exception:  # any failure means "not serving"
            return False
        return True

    async def _health_loop(self) -> None:
        while not self.draining:
            up = await self.probe_database()
            self.metrics.database_up.set(1 if up else 0)
            if not self.draining:
                await self.set_health(SERVING if up else NOT_SERVING)
            await asyncio.sleep(self.settings.health_probe_interval)

    async def _pool_loop(self) -> None:
        while True:
            self.metrics.pool_size.set(self.db.open_connections)
            self.metrics.pool_in_use.set(self.db.connections_in_use)
            await asyncio.sleep(1.0)

    async def _sweep_loop(self) -> None:
        """Idle signals and due delays, off the claim path: each sweep handles
        at most SWEEP_BATCH of each and runs again at once while batches are
        full, so a backlog drains without one long transaction."""
        codec = codec_by_name(self.settings.codec)
        while True:
            try:
                while await dispatch.sweep(self.db, codec, SWEEP_BATCH) >= SWEEP_BATCH:
                    pass
            except Exception as exc:  # a database outage: the health loop reports it; try again later
                log.warning("background sweep failed", error=str(exc))
            await asyncio.sleep(self.settings.sweep_interval)

    async def _purge_expired_keys(self) -> None:
        retention = self.settings.idempotency_key_retention
        deleted = PURGE_BATCH
        while deleted >= PURGE_BATCH:
            deleted = await self.db.run(
                "purge_keys", lambda c: idempotency_store.purge_batch(c, retention, PURGE_BATCH), transaction=False
            )

    async def _purge_keys_loop(self) -> None:
        """Delete expired idempotency keys, a small batch at a time."""
        while True:
            try:
                await self._purge_expired_keys()
            except Exception as exc:  # the database is down: try again next round
                log.warning("idempotency key purge failed", error=type(exc).__name__)
            await asyncio.sleep(PURGE_INTERVAL_S)

    def start_background(self) -> None:
        self._tasks.append(asyncio.create_task(self._health_loop(), name="health-probe"))
        self._tasks.append(asyncio.create_task(self._purge_keys_loop(), name="purge-idempotency-keys"))
        self._tasks.append(asyncio.create_task(self._pool_loop(), name="pool-metrics"))
        if self.settings.sweep_interval > 0:
            self._tasks.append(asyncio.create_task(self._sweep_loop(), name="sweeper"))
        settings, db, metrics = self.settings, self.db, self.metrics
        self._tasks.append(asyncio.create_task(backlog_loop(db, metrics, settings.gauge_interval), name="backlog"))
        if settings.retention is not None:
            purged = metrics.count_purged
            retention = retention_loop(db, settings.retention, settings.retention_interval, purged)
            self._tasks.append(asyncio.create_task(retention, name="retention"))

    async def stop(self, grace: float | None = None) -> None:
        """Drain: refuse new work, end the streams, let calls finish, close.

        Every step runs even when an earlier one fails, so a stop never
        leaves a listener, a pool or an HTTP server thread behind.
        """
        self.draining = True
        async with contextlib.AsyncExitStack() as closing:
            # Pushed in reverse: the exit stack runs them last-in first-out.
            if self.tracing is not None:
                closing.push_async_callback(asyncio.to_thread, self.tracing.shutdown)
            closing.push_async_callback(asyncio.to_thread, self.metrics.stop_serving)
            closing.push_async_callback(self.db.close)
            closing.push_async_callback(self.server.stop, self.settings.shutdown_grace if grace is None else grace)
            # Ending the wakeup streams first leaves only unary calls to drain.
            closing.push_async_callback(self.hub.stop)
            if self.console is not None:
                closing.push_async_callback(asyncio.to_thread, self.console.stop)
            closing.push_async_callback(self._stop_background)
            await self.set_health(NOT_SERVING)

    async def _stop_background(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _grpc_options(settings: Settings, reuse_port: bool) -> list[tuple[str, int]]:
    return [
        listen.reuse_port_option(reuse_port),
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", settings.max_message_bytes),
        # Detect dead peers (and their wakeup streams) within a minute.
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


async def start(settings: Settings, database_url: str, *, reuse_port: bool = False) -> RunningServer:
    """Connect, migrate, and start serving; returns once the port is bound.

    `reuse_port` lets the processes of one service share its address; a
    service of its own leaves it off, so an address in use stops the start.
    """
    codec = codec_by_name(settings.codec)
    limits.set_max_reply_bytes(settings.max_message_bytes)
    tokens = load_tokens(settings.auth_tokens_file, settings.auth_tokens)
    credentials = server_credentials(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    # After the settings' own checks, before anything starts.
    if not reuse_port:
        listen.ensure_free(settings.listen, listen.LISTEN_SETTING)
    if settings.metrics_listen != "off":
        listen.ensure_free(settings.metrics_listen, listen.METRICS_SETTING)
    metrics = Metrics()
    db = await Database.connect(database_url, settings.pool_options())
    db.on_retry = lambda op: metrics.transient_retries.labels(op).inc()
    db.on_acquire = metrics.pool_wait.observe
    metrics.pool_max.set(settings.pool_max_connections)
    hub = WakeupHub(settings.listener_database_url or database_url)
    hub.on_sent = metrics.hints_sent.inc
    hub.on_dropped = metrics.hints_dropped.inc
    tracing = None
    server: grpc.aio.Server | None = None
    try:
        tracing = Tracing.from_environment()
        async with db.connection() as conn:
            for step in await migrate.migrate(conn):
                log.info("migration", step=step)
        await hub.start()
        await offload.warm_up()
        interceptors: list[grpc.aio.ServerInterceptor] = [ObservabilityInterceptor(metrics)]
        if tracing is not None:  # outermost: the span covers everything the call does
            interceptors.insert(0, tracing.interceptor())
        if tokens:
            interceptors.append(TokenAuthInterceptor(tokens))
        server = grpc.aio.server(interceptors=interceptors, options=_grpc_options(settings, reuse_port))
        snapshot_store_pb2_grpc.add_SnapshotStoreServicer_to_server(SnapshotStoreServicer(db, codec), server)
        signal_store_pb2_grpc.add_SignalStoreServicer_to_server(SignalStoreServicer(db, codec), server)
        task_claim_store_pb2_grpc.add_TaskClaimStoreServicer_to_server(
            TaskClaimStoreServicer(db, codec, hub, metrics, sweep_in_claims=settings.sweep_interval == 0), server
        )
        task_claim_store_pb2_grpc.add_TaskResultStoreServicer_to_server(TaskResultStoreServicer(db, codec), server)
        operator_pb2_grpc.add_WorkflowOperatorServicer_to_server(WorkflowOperatorServicer(db, codec), server)
        health_servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        reflection.enable_server_reflection(
            (*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
            server,
        )
        port = listen.bind_grpc(server, settings.listen, credentials)
        metrics_port = None
        if settings.metrics_listen != "off":
            try:
                metrics_port = metrics.serve(settings.metrics_listen)
            except OSError as exc:
                raise listen.refused(settings.metrics_listen, listen.METRICS_SETTING, exc) from None
        await server.start()
        console = None
        if settings.console_listen != "off":
            # Imported here: aiohttp and Jinja2 cost a service without a console nothing at start.
            from sayiir_grpc.console import ConsoleServer, tls_context

            console = ConsoleServer(
                settings.console_listen,
                database_url,
                codec,
                tokens,
                tls_context(settings.tls_cert_file, settings.tls_key_file),
            )
            await asyncio.to_thread(console.start)
    except BaseException:
        if server is not None:
            await server.stop(0)
        await hub.stop()
        await db.close()
        await asyncio.to_thread(metrics.stop_serving)
        if tracing is not None:
            tracing.shutdown()
        raise
    running = RunningServer(server, db, health_servicer, port, hub, metrics, settings, metrics_port, console, tracing)
    await running.set_health(SERVING)
    running.start_background()
    return running


async def serve(
    settings: Settings,
    database_url: str,
    reuse_port: bool = False,
    on_ready: Callable[[int], None] | None = None,
) -> None:
    """Serve until SIGTERM or SIGINT, then drain within the grace period.

    `on_ready(port)` replaces the "listening on" line (a supervised process
    reports to its supervisor, which announces the service once)."""
    memory.release_large_buffers()
    running = await start(settings, database_url, reuse_port=reuse_port)
    memory.settle_heap()
    host = settings.listen.rpartition(":")[0]
    if on_ready is not None:
        on_ready(running.port)
    else:
        print(f"sayiir-grpc listening on {host}:{running.port}", flush=True)
    if running.metrics_port is not None:
        metrics_host = settings.metrics_listen.rpartition(":")[0]
        print(f"metrics on http://{metrics_host}:{running.metrics_port}/metrics", flush=True)
    if running.console is not None:
        scheme = "https" if running.console.tls is not None else "http"
        console_host = settings.console_listen.rpartition(":")[0]
        print(f"console on {scheme}://{console_host}:{running.console.port}/", flush=True)
    log.info("serving", listen=f"{host}:{running.port}", codec=settings.codec, metrics_port=running.metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", grace_s=settings.shutdown_grace)
    await running.stop()
    log.info("stopped")
