"""The worker fast path: long-poll claims, the light task form, and
"continue where you are" (CompleteTask claiming the workflow's next task)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import grpc
import pytest

from conftest import start_service, submit_at
from sayiir_client import AtTask, ClaimedTask, GrpcBackend, TaskId, WorkflowSnapshot, connect
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as pb
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2_grpc as pb_grpc
from sayiir_grpc.app import RunningServer

T1, T2, T3 = (TaskId.sha256(f"step-{i}") for i in (1, 2, 3))


async def submit(client: GrpcBackend, instance_id: str, task: TaskId = T1, priority: int | None = None) -> None:
    await submit_at(client, instance_id, task, priority)


async def test_a_long_poll_returns_the_task_that_becomes_ready(client: GrpcBackend) -> None:
    started = time.monotonic()
    waiting = asyncio.create_task(client.claim_tasks("w1", 1, 30, wait=10))
    await asyncio.sleep(0.5)
    assert not waiting.done()
    await submit(client, "late")
    (task,) = await asyncio.wait_for(waiting, 5)
    assert (task.instance_id, task.task_id, task.input) == ("late", T1, b"0")
    assert time.monotonic() - started < 3
    assert isinstance(task, ClaimedTask) and task.version == 1
    assert task.workflow_definition_hash == WorkflowSnapshot.new("x", "linear").definition_hash


async def test_a_long_poll_ends_empty_after_its_wait_or_the_deadline(
    client: GrpcBackend, isolated: tuple[RunningServer, str]
) -> None:
    started = time.monotonic()
    assert await client.claim_tasks("w1", 1, 30, wait=0.6) == []
    assert 0.55 <= time.monotonic() - started < 2
    # A deadline shorter than the wait: the answer still comes (empty) before it.
    async with grpc.aio.insecure_channel(f"127.0.0.1:{isolated[0].port}") as channel:
        stub = pb_grpc.TaskClaimStoreStub(channel)
        request = pb.ClaimAvailableTasksRequest(worker_id="w1", limit=1)
        request.wait.seconds = 60
        started = time.monotonic()
        response = await stub.ClaimAvailableTasks(request, timeout=2.0)
        assert list(response.tasks) == [] and 1.0 < time.monotonic() - started < 2.0


async def test_a_long_poll_that_finds_work_claims_it_in_one_statement(
    client: GrpcBackend, isolated: tuple[RunningServer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from sayiir_grpc.stores import dispatch

    looks: list[list[str]] = []
    any_ready = dispatch.any_ready

    async def counted(db: object, tags: list[str]) -> bool:
        looks.append(tags)
        return await any_ready(db, tags)  # type: ignore[arg-type]

    monkeypatch.setattr(dispatch, "any_ready", counted)
    await submit(client, "ready-now")
    # Work is ready: the keyed long poll claims at once, no readiness check first.
    (task,) = await client.claim_tasks("w1", 1, 30, wait=5)
    assert task.instance_id == "ready-now"
    assert looks == []
    # Nothing ready: its first look stored no key, so the claim after the wait may still take the task.
    waiting = asyncio.create_task(client.claim_tasks("w1", 1, 30, wait=10))
    await asyncio.sleep(0.5)
    await submit(client, "ready-later")
    (task,) = await asyncio.wait_for(waiting, 5)
    assert task.instance_id == "ready-later"
    assert len(looks) >= 1


async def test_one_ready_task_wakes_one_waiting_worker(
    client: GrpcBackend, isolated: tuple[RunningServer, str]
) -> None:
    hub = isolated[0].hub
    pollers = [asyncio.create_task(client.claim_tasks(f"w{i}", 1, 30, wait=2.5)) for i in range(4)]
    await asyncio.sleep(0.3)
    await submit(client, "single")
    await asyncio.sleep(0.5)
    assert hub.waiters_woken == 1  # not a broadcast to the four
    results = await asyncio.gather(*pollers)
    winners = [r for r in results if r]
    assert len(winners) == 1 and winners[0][0].instance_id == "single"


async def test_long_polls_respect_worker_tags(client: GrpcBackend) -> None:
    gpu = asyncio.create_task(client.claim_tasks("gpu-worker", 1, 30, wait=5, worker_tags=["gpu"]))
    await asyncio.sleep(0.3)
    snapshot = WorkflowSnapshot.with_initial_input("needs-cuda", "linear", b"0")
    snapshot.update_position(AtTask(T1))
    snapshot.set_task_hint(None, ["cuda"])
    await client.save_snapshot(snapshot)
    await asyncio.sleep(0.3)
    assert not gpu.done()
    await submit(client, "plain")  # untagged: any worker may run it
    (task,) = await asyncio.wait_for(gpu, 5)
    assert task.instance_id == "plain"


async def test_continue_where_you_are_keeps_the_claim_with_its_fencing_and_expiry(client: GrpcBackend) -> None:
    await submit(client, "wf")
    assert len(await client.claim_tasks("w1", 1, 30)) == 1
    completed, following = await client.complete_task_and_continue("wf", T1, "w1", b"1", T2, ttl=0.6)
    assert completed and following is not None
    assert (following.instance_id, following.task_id, following.input, following.version) == ("wf", T2, b"1", 2)
    # Claimed for w1: nobody else gets it, and only w1 may complete it.
    assert await client.claim_tasks("w2", 5, 30) == []
    assert await client.claim_task("wf", T2, "w2", 30) is None
    assert not await client.complete_task("wf", T2, "w2", b"x", T3)
    # The continued claim has the ttl asked for: once expired, anyone may claim.
    await asyncio.sleep(1.2)
    (stolen,) = await client.claim_tasks("w2", 5, 30)
    assert stolen.task_id == T2
    assert not await client.complete_task("wf", T2, "w1", b"late", T3)  # fenced
    assert await client.complete_task("wf", T2, "w2", b"2")
    snapshot = await client.load_snapshot("wf")
    assert snapshot.state.is_completed() and await client.load_task_result("wf", T2) == b"2"


async def test_continue_gives_way_to_a_ready_task_that_outranks_it(client: GrpcBackend) -> None:
    await submit(client, "mine")
    assert len(await client.claim_tasks("w1", 1, 30)) == 1
    await submit(client, "urgent", priority=1)  # waiting, better priority than the default 3
    completed, following = await client.complete_task_and_continue("mine", T1, "w1", b"1", T2)
    assert completed and following is None
    # Released and dispatched as usual: the urgent one first, then ours.
    tasks = await client.claim_tasks("w2", 5, 30)
    assert [t.instance_id for t in tasks] == ["urgent", "mine"]


async def test_continue_with_an_equal_waiting_task_keeps_the_workflow(client: GrpcBackend) -> None:
    await submit(client, "mine")
    assert len(await client.claim_tasks("w1", 1, 30)) == 1
    await submit(client, "queued")  # same priority, waited less than an aging interval
    completed, following = await client.complete_task_and_continue("mine", T1, "w1", b"1", T2)
    assert completed and following is not None and following.task_id == T2


async def test_a_continued_workflow_runs_to_completion_with_one_claim_call(client: GrpcBackend) -> None:
    await submit(client, "whole")
    (task,) = await client.claim_tasks("w1", 1, 30)
    steps = [T1, T2, T3]
    current: ClaimedTask | None = task
    for position, step in enumerate(steps):
        assert current is not None and current.task_id == step
        value = int(current.input or b"0") + 1
        if position + 1 < len(steps):
            done, current = await client.complete_task_and_continue(
                "whole", step, "w1", str(value).encode(), steps[position + 1]
            )
            assert done
        else:
            assert await client.complete_task("whole", step, "w1", str(value).encode())
    final = await client.load_snapshot("whole")
    assert final.state.is_completed() and await client.load_task_result("whole", T2) == b"2"


async def test_bad_waits_and_continuations_are_invalid_arguments(isolated: tuple[RunningServer, str]) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{isolated[0].port}") as channel:
        stub = pb_grpc.TaskClaimStoreStub(channel)
        for seconds in (-1, 301):
            request = pb.ClaimAvailableTasksRequest(worker_id="w", limit=1)
            request.wait.seconds = seconds
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ClaimAvailableTasks(request, timeout=5)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "wait" in (info.value.details() or "")
        complete = pb.CompleteTaskRequest(instance_id="x", task_id=T1.as_bytes(), worker_id="w")
        complete.claim_next_ttl.seconds = 30
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CompleteTask(complete, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "claim_next_ttl" in (info.value.details() or "")
        complete.next_task_id = T2.as_bytes()
        complete.claim_next_ttl.seconds = 0
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.CompleteTask(complete, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "claim_next_ttl" in (info.value.details() or "")


async def test_the_light_form_leaves_the_snapshot_out(client: GrpcBackend, isolated: tuple[RunningServer, str]) -> None:
    await submit(client, "light")
    async with grpc.aio.insecure_channel(f"127.0.0.1:{isolated[0].port}") as channel:
        stub = pb_grpc.TaskClaimStoreStub(channel)
        request = pb.ClaimAvailableTasksRequest(worker_id="w", limit=1, omit_snapshot=True)
        (task,) = (await stub.ClaimAvailableTasks(request, timeout=5)).tasks
        assert not task.HasField("snapshot") and task.input == b"0" and task.version == 1


async def test_stopping_the_server_ends_long_polls(make_database: Callable[[], Awaitable[str]]) -> None:
    running = await start_service(await make_database(), pool_max_connections=3)
    try:
        async with connect(f"127.0.0.1:{running.port}", watch_wakeups=False) as backend:
            waiting = asyncio.create_task(backend.claim_tasks("w", 1, 30, wait=60))
            await asyncio.sleep(0.3)
            started = time.monotonic()
            await running.stop(grace=5)
            assert await asyncio.wait_for(waiting, 5) == []
            assert time.monotonic() - started < 3
    finally:
        if not running.draining:
            await running.stop(grace=1)
