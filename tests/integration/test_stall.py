"""No single request stalls the service: health answers within 100 ms meanwhile.

The service runs as a child process (its event loop is the one measured);
while one heavy request runs, a prober calls grpc.health.v1.Health/Check
every 10 ms and records each answer's latency. Every heavy request is
within the message limit (4 MiB by default).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from test_cli import running_service

from sayiir_client import AtDelay, AtTask, TaskId, Timestamp, WorkflowSnapshot, connect
from sayiir_common.convert import snapshot_to_proto
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2 as snap_pb
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2_grpc as snap_grpc
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as claim_pb
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2_grpc as claim_grpc

HEALTH_BUDGET_S = 0.100
# Near the largest input a workflow may have under the 4 MiB default (a
# task's reply carries the snapshot and the input, so the input twice).
BIG_INPUT = 1_900_000

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
async def service(make_database: Callable[[], Awaitable[str]]) -> AsyncIterator[str]:
    # Warnings only: nobody reads the child's output, whose pipe must not fill.
    with running_service(["--database-url", await make_database()], env={"SAYIIR_LOG_LEVEL": "warning"}) as (
        address,
        _proc,
    ):
        yield address


async def _worst_health_latency(
    address: str, heavy: Callable[[], Awaitable[Any]], failures: list[str]
) -> tuple[float, float]:
    """(worst health latency, duration of the heavy call), both in seconds."""
    async with grpc.aio.insecure_channel(address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        await health.Check(health_pb2.HealthCheckRequest(), timeout=5)
        done = asyncio.Event()
        worst = 0.0

        async def probe() -> None:
            nonlocal worst
            while not done.is_set():
                started = time.perf_counter()
                await health.Check(health_pb2.HealthCheckRequest(), timeout=30)
                worst = max(worst, time.perf_counter() - started)
                await asyncio.sleep(0.01)

        prober = asyncio.create_task(probe())
        await asyncio.sleep(0.05)
        started = time.perf_counter()
        try:
            await heavy()
        except grpc.aio.AioRpcError as exc:
            failures.append(f"{exc.code().name}: {exc.details()}")
        finally:
            took = time.perf_counter() - started
            done.set()
            await prober
    return worst, took


def _snapshot_with_big_input(instance_id: str) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "stall", os.urandom(BIG_INPUT))
    snapshot.update_position(AtTask(TaskId.sha256("stall-task")))
    return snapshot


def _many_tasks_request(instance_id: str, count: int, parked: bool = False) -> snap_pb.SaveSnapshotRequest:
    """`count` completed tasks; `parked` ones wait on a year's delay, out of every dispatch scan."""
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "stall", b"1")
    if parked:
        now = Timestamp.now()
        snapshot.update_position(AtDelay(TaskId.sha256("stall-delay"), now, now + timedelta(days=365)))
    else:
        snapshot.update_position(AtTask(TaskId.sha256("stall-next")))
    request = snap_pb.SaveSnapshotRequest(snapshot=snapshot_to_proto(snapshot))
    completed = request.snapshot.state.in_progress.completed_tasks
    for k in range(count):
        completed.add(task_id=TaskId.sha256(f"t{k}").as_bytes(), output=b"")
    return request


MANY_TASKS = 3_000
# Far past real workflows: a result on one of 3000 tasks held the loop up to
# 250 ms while it was decoded, hydrated, placed and re-encoded there.
MOST_TASKS = 30_000
# Workflows near the size limit that one FindAvailableTasks scan meets
# (its limit): each was converted to a reply message of about 4 MB, all
# in one step of the event loop, though one task fills the reply.
BIG_WORKFLOWS = 16


async def _cases(address: str) -> dict[str, Callable[[], Awaitable[Any]]]:
    channel = grpc.aio.insecure_channel(address)
    snaps = snap_grpc.SnapshotStoreStub(channel)
    claims = claim_grpc.TaskClaimStoreStub(channel)
    results = claim_grpc.TaskResultStoreStub(channel)
    async with connect(address, watch_wakeups=False) as client:
        for k in range(BIG_WORKFLOWS - 1):
            await client.save_snapshot(_snapshot_with_big_input("stall-big-loaded" if k == 0 else f"stall-big-{k}"))
    await snaps.SaveSnapshot(_many_tasks_request("stall-many", MOST_TASKS, parked=True), timeout=120)
    big = snap_pb.SaveSnapshotRequest(snapshot=snapshot_to_proto(_snapshot_with_big_input("stall-big")))
    many = _many_tasks_request("stall-many-2", MANY_TASKS)
    # Built and serialized here, so the prober's own loop is not what stalls.
    statuses = snap_pb.ListSnapshotsRequest(statuses=[1] * 1_000_000).SerializeToString()
    raw_list = channel.unary_unary("/sayiir.v1.SnapshotStore/ListSnapshots")
    return {
        "SaveSnapshot 1.9 MB input": lambda: snaps.SaveSnapshot(big, timeout=60),
        "LoadSnapshot 1.9 MB input": lambda: snaps.LoadSnapshot(
            snap_pb.LoadSnapshotRequest(instance_id="stall-big-loaded"), timeout=60
        ),
        f"FindAvailableTasks over {BIG_WORKFLOWS} 1.9 MB inputs": lambda: claims.FindAvailableTasks(
            claim_pb.FindAvailableTasksRequest(worker_id="w", limit=BIG_WORKFLOWS), timeout=60
        ),
        f"SaveSnapshot {MANY_TASKS} tasks": lambda: snaps.SaveSnapshot(many, timeout=60),
        f"SaveTaskResult on {MOST_TASKS} tasks": lambda: snaps.SaveTaskResult(
            snap_pb.SaveTaskResultRequest(
                instance_id="stall-many", task_id=TaskId.sha256("stall-next").as_bytes(), output=b"1"
            ),
            timeout=60,
        ),
        f"LoadTaskResult unknown on {MOST_TASKS} tasks": lambda: results.LoadTaskResult(
            claim_pb.LoadTaskResultRequest(instance_id="stall-many", task_id=b"\x07" * 32), timeout=60
        ),
        "ListSnapshots 1M statuses": lambda: _refused(raw_list(statuses, timeout=60)),
    }


async def _refused(call: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError):
        await call


async def test_health_answers_within_100_ms_while_a_heavy_request_runs(service: str) -> None:
    cases = await _cases(service)
    figures = {}
    failures: list[str] = []
    for name, heavy in cases.items():
        # The best of three runs: on a shared machine at high load, the OS
        # alone sometimes keeps a process off the CPU for 100 ms.
        worst, took = min([await _worst_health_latency(service, heavy, failures) for _ in range(3)])
        figures[name] = (round(worst * 1000, 1), round(took * 1000, 1))
        print(f"[stall] {name}: worst health {figures[name][0]} ms, call {figures[name][1]} ms", flush=True)
    print("\n[stall] worst health latency ms, heavy call ms:", figures, failures)
    assert not failures, failures
    slow = {name: worst for name, (worst, _) in figures.items() if worst > HEALTH_BUDGET_S * 1000}
    assert not slow, slow
