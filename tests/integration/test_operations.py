"""What an operator relies on: metrics, logs, health, reflection, shutdown, replicas."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from test_cli import running_service

from conftest import start_service
from sayiir_client import AtTask, GrpcBackend, TaskId, WorkflowSnapshot, connect
from sayiir_grpc.app import SERVICE_NAMES


def scrape(port: int) -> dict[str, float]:
    """Prometheus text as {sample with labels: value}."""
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _metrics_port(proc: subprocess.Popen[str]) -> int:
    """The port of the "metrics on" line that `serve` prints after its listen line."""
    assert proc.stdout is not None
    for _ in range(20):
        match = re.search(r"metrics on http://[^:]+:(\d+)/metrics", proc.stdout.readline())
        if match:
            return int(match.group(1))
    raise AssertionError("the service printed no metrics address")


async def test_metrics_count_real_calls(make_database: Callable[[], Awaitable[str]]) -> None:
    running = await start_service(await make_database())
    try:
        assert running.metrics_port
        async with connect(f"127.0.0.1:{running.port}") as client:
            snapshot = WorkflowSnapshot.with_initial_input("m-1", "h", b"1")
            snapshot.update_position(AtTask(TaskId.sha256("t")))
            await client.save_snapshot(snapshot)
            for _ in range(3):
                await client.load_snapshot("m-1")
            with pytest.raises(Exception):  # noqa: B017 - NOT_FOUND
                await client.load_snapshot("missing")
            assert await client.claim_task("m-1", TaskId.sha256("t"), "w1", 30)
            with pytest.raises(Exception):  # noqa: B017 - ClaimLost
                await client.release_task_claim("m-1", TaskId.sha256("t"), "w2")
            await asyncio.sleep(1.2)  # the pool gauges refresh every second
            metrics = await asyncio.to_thread(scrape, running.metrics_port)
        assert metrics['sayiir_grpc_calls_total{code="OK",method="LoadSnapshot"}'] == 3
        assert metrics['sayiir_grpc_calls_total{code="NOT_FOUND",method="LoadSnapshot"}'] == 1
        assert metrics['sayiir_grpc_calls_total{code="OK",method="SaveSnapshot"}'] == 1
        assert metrics['sayiir_grpc_call_duration_seconds_count{method="LoadSnapshot"}'] == 4
        assert metrics["sayiir_grpc_claims_granted_total"] == 1
        assert metrics["sayiir_grpc_claims_lost_total"] == 1
        assert metrics["sayiir_grpc_wakeup_hints_sent_total"] >= 1  # the client's own stream got the AtTask hint
        assert metrics["sayiir_grpc_pool_connections"] >= 1
        assert metrics["sayiir_grpc_pool_connections_max"] == 20
        assert metrics["sayiir_grpc_pool_acquire_wait_seconds_count"] >= 5
        assert metrics["sayiir_grpc_database_up"] == 1
        assert metrics["sayiir_grpc_calls_in_flight"] == 0
    finally:
        await running.stop(grace=1)


async def test_the_collector_leaves_the_started_service_alone(make_database: Callable[[], Awaitable[str]]) -> None:
    """Once started, the service's heap is frozen and its young generation
    collected every 10,000 objects (memory.settle_heap): 800 calls run no
    collection of the oldest generation, and few of the youngest (at
    CPython's defaults: one every few dozen calls, and full collections
    that walk every object of gRPC and protobuf)."""
    url = await make_database()
    # Warnings only: a log line per call would fill the unread pipe and stall the service.
    with running_service(["--database-url", url], env={"SAYIIR_LOG_LEVEL": "warning"}) as (address, proc):
        async with connect(address, watch_wakeups=False) as client:
            snapshot = WorkflowSnapshot.with_initial_input("gc-1", "h", b"1")
            snapshot.update_position(AtTask(TaskId.sha256("t")))
            await client.save_snapshot(snapshot)
            port = _metrics_port(proc)
            before = await asyncio.to_thread(scrape, port)
            for _ in range(400):
                await client.save_snapshot(snapshot)
                await client.load_snapshot("gc-1")
            after = await asyncio.to_thread(scrape, port)

    def runs(generation: int) -> float:
        sample = f'python_gc_collections_total{{generation="{generation}"}}'
        return after[sample] - before[sample]

    assert runs(2) == 0
    assert runs(0) <= 2, runs(0)


async def test_one_json_log_line_per_call_without_payloads(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    # Trust authentication ignores the password, so it can be a marker.
    password = "hunter2-db-password"
    url_with_password = url.replace("postgres@", f"postgres:{password}@", 1)
    secret = "s3cr3t-payload-bytes"
    with running_service(["--database-url", url_with_password], env={"SAYIIR_LOG_FORMAT": "json"}) as (
        address,
        proc,
    ):
        async with connect(address, watch_wakeups=False, options=()) as client:
            snapshot = WorkflowSnapshot.with_initial_input("log-1", "h", secret.encode())
            snapshot.mark_failed(secret)  # the error text is a payload too
            await client.save_snapshot(snapshot)
            channel = grpc.aio.insecure_channel(address)
            stub = health_pb2_grpc.HealthStub(channel)
            await stub.Check(health_pb2.HealthCheckRequest(), metadata=(("x-request-id", "req-42"),))
            await channel.close()
        proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=30)
    calls = [json.loads(line) for line in output.splitlines() if line.startswith("{") and '"event": "call"' in line]
    save = next(c for c in calls if c["method"] == "SaveSnapshot")
    assert save["status"] == "OK" and save["instance_id"] == "log-1" and save["duration_ms"] > 0
    assert save["request_id"]
    assert any(c["method"] == "Check" and c["request_id"] == "req-42" for c in calls)
    assert secret not in output
    assert password not in output


async def test_health_follows_the_database_and_draining(tmp_path: Path) -> None:
    from sayiir_grpc.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(tmp_path / "pg")
    url = await asyncio.to_thread(embedded.start)
    running = await start_service(url, health_probe_interval=0.2)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            async def status(service: str = "") -> int:
                return (await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)).status

            assert await status() == health_pb2.HealthCheckResponse.SERVING
            for name in SERVICE_NAMES:
                assert await status(name) == health_pb2.HealthCheckResponse.SERVING
            await asyncio.to_thread(embedded.stop)
            deadline = time.monotonic() + 10
            while await status() != health_pb2.HealthCheckResponse.NOT_SERVING:
                assert time.monotonic() < deadline, "health stayed SERVING with the database down"
                await asyncio.sleep(0.1)
    finally:
        await running.stop(grace=1)
        await asyncio.to_thread(embedded.stop)


async def test_draining_reports_not_serving_and_finishes_in_flight_calls(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    url = await make_database()
    running = await start_service(url)
    blocker = await asyncpg.connect(url)
    try:
        async with connect(f"127.0.0.1:{running.port}", watch_wakeups=False) as client:
            await client.save_snapshot(WorkflowSnapshot.new("drain-1", "h"))
            stream = client.wakeups()
            first = asyncio.ensure_future(stream.__anext__())
            # Hold the row so the in-flight save waits on it.
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute("SELECT 1 FROM sayiir_workflow_snapshots WHERE instance_id = 'drain-1' FOR UPDATE")
            slow = asyncio.ensure_future(client.save_task_result("drain-1", TaskId.sha256("t"), b"x"))
            await asyncio.sleep(0.3)
            stopping = asyncio.ensure_future(running.stop(grace=5))
            await asyncio.sleep(0.3)
            health = await running.health.Check(health_pb2.HealthCheckRequest(), None)  # type: ignore[arg-type]
            assert health.status == health_pb2.HealthCheckResponse.NOT_SERVING
            await tx.commit()  # let the in-flight call finish within the grace period
            await asyncio.wait_for(slow, 5)
            await asyncio.wait_for(stopping, 10)
            with pytest.raises(StopAsyncIteration):  # the wakeup stream ended cleanly
                await asyncio.wait_for(first, 5)
    finally:
        await blocker.close()


async def test_a_cancelled_call_never_leaves_a_transaction_open(backend: GrpcBackend, pg: asyncpg.Connection) -> None:
    snapshot = WorkflowSnapshot.new("cancel-tx", "h")
    snapshot.update_position(AtTask(TaskId.sha256("t")))
    await backend.save_snapshot(snapshot)
    async with pg.transaction():
        await pg.execute("SELECT 1 FROM sayiir_workflow_snapshots WHERE instance_id = 'cancel-tx' FOR UPDATE")
        impatient = GrpcBackend(backend.channel, timeout=0.3)
        with pytest.raises(Exception):  # noqa: B017 - DEADLINE_EXCEEDED
            await impatient.save_task_result("cancel-tx", TaskId.sha256("t"), b"x")
        await asyncio.sleep(0.5)
    deadline = time.monotonic() + 5
    while True:
        stuck = await pg.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sayiir-grpc' "
            "AND state LIKE 'idle in transaction%' AND datname = current_database()"
        )
        if stuck == 0:
            break
        assert time.monotonic() < deadline, f"{stuck} connections left idle in transaction"
        await asyncio.sleep(0.1)
    # And the abandoned write did not happen behind the caller's back later.
    await asyncio.sleep(0.3)
    assert (await backend.load_snapshot("cancel-tx")).get_task_result(TaskId.sha256("t")) is None


async def test_reflection_lists_every_service(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        async for response in responses:
            names = {s.name for s in response.list_services_response.service}
            break
    assert set(SERVICE_NAMES) <= names
    assert "grpc.health.v1.Health" in names


async def test_three_replicas_behave_as_one(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    with (
        running_service(["--database-url", url]) as (first, _),
        running_service(["--database-url", url]) as (second, _),
        running_service(["--database-url", url]) as (third, _),
    ):
        addresses = [first, second, third]
        async with (
            connect(first) as a,
            connect(second, watch_wakeups=False) as b,
            connect(third, watch_wakeups=False) as c,
        ):
            clients = [a, b, c]
            # A wakeup raised through replica 2 reaches a stream on replica 1.
            snapshot = WorkflowSnapshot.with_initial_input("replica-job", "h", b"1")
            snapshot.update_position(AtTask(TaskId.sha256("t")))
            await b.save_snapshot(snapshot)
            hint = await a.wait_for_wakeup(5)
            assert hint is not None and hint.instance_id == "replica-job"
            # Claims stay exclusive across replicas.
            for round_ in range(10):
                iid = f"contended-{round_}"
                s = WorkflowSnapshot.with_initial_input(iid, "h", b"1")
                s.update_position(AtTask(TaskId.sha256("t")))
                await c.save_snapshot(s)
                claims = await asyncio.gather(
                    *(clients[i % 3].claim_task(iid, TaskId.sha256("t"), f"w{i}", 30) for i in range(12))
                )
                assert len([x for x in claims if x is not None]) == 1
        assert len(set(addresses)) == 3


def test_every_setting_has_an_environment_variable_and_a_flag() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sayiir_grpc", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    from sayiir_grpc.config import SETTINGS

    for setting in SETTINGS:
        assert setting.flag in result.stdout and setting.env in result.stdout
