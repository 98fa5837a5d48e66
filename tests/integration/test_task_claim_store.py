"""TaskClaimStore, TaskResultStore and wakeups over gRPC, on a real PostgreSQL.

Mirrors the claim, dispatch, wakeup, hinted-task and task-result scenarios
of sayiir-postgres's integration suite, then the races of a worker fleet.
Every test runs on an emptied database: dispatch scans every row.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta

import asyncpg
import grpc
import pytest

from sayiir_client import (
    AtDelay,
    AtTask,
    ClaimLostError,
    Completed,
    GrpcBackend,
    NotFoundError,
    RetryPolicy,
    SignalKind,
    SignalRequest,
    TaskId,
    TaskWakeupHint,
    Timestamp,
    WorkflowSnapshot,
    connect,
)
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as pb
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2_grpc as pb_grpc

T1 = TaskId.sha256("task-1")


async def seed(
    backend: GrpcBackend,
    instance_id: str,
    task: str = "task-1",
    tags: list[str] | None = None,
    priority: int | None = None,
) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "hash-1", b'"input"')
    snapshot.update_position(AtTask(TaskId.sha256(task)))
    snapshot.task_tags = tags or []
    snapshot.task_priority = priority
    await backend.save_snapshot(snapshot)
    return snapshot


# -- claims --------------------------------------------------------------------


async def test_claim_task_success(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-1")
    claim = await clean_backend.claim_task("wf-1", T1, "worker-1", timedelta(seconds=300))
    assert claim is not None
    assert (claim.instance_id, claim.task_id, claim.worker_id) == ("wf-1", T1, "worker-1")
    assert claim.expires_at is not None and claim.expires_at >= claim.claimed_at + 299
    assert not claim.is_expired()


async def test_claim_task_already_claimed(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-1")
    assert await clean_backend.claim_task("wf-1", T1, "worker-1", 300)
    assert await clean_backend.claim_task("wf-1", T1, "worker-2", 300) is None


async def test_claim_task_expired_claim_replaced(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-1")
    assert await clean_backend.claim_task("wf-1", T1, "worker-1", 0.3)
    await asyncio.sleep(0.5)
    claim = await clean_backend.claim_task("wf-1", T1, "worker-2", 300)
    assert claim is not None and claim.worker_id == "worker-2"


async def test_claim_task_no_ttl_never_expires(clean_backend: GrpcBackend, clean_pg: asyncpg.Connection) -> None:
    await seed(clean_backend, "wf-1")
    claim = await clean_backend.claim_task("wf-1", T1, "worker-1", None)
    assert claim is not None and claim.expires_at is None and not claim.is_expired()
    assert await clean_pg.fetchval("SELECT expires_at FROM sayiir_workflow_claims WHERE instance_id = 'wf-1'") is None
    assert await clean_backend.claim_task("wf-1", T1, "worker-2", 300) is None


async def test_claim_of_a_missing_instance_or_another_task(clean_backend: GrpcBackend) -> None:
    with pytest.raises(NotFoundError):
        await clean_backend.claim_task("nope", T1, "worker-1", 300)
    await seed(clean_backend, "wf-1")
    assert await clean_backend.claim_task("wf-1", TaskId.sha256("not-current"), "worker-1", 300) is None


async def test_release_task_claim(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-1")
    assert await clean_backend.claim_task("wf-1", T1, "worker-1", 300)
    await clean_backend.release_task_claim("wf-1", T1, "worker-1")
    assert await clean_backend.claim_task("wf-1", T1, "worker-2", 300)


async def test_release_task_claim_wrong_worker_or_task(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-1")
    assert await clean_backend.claim_task("wf-1", T1, "worker-1", 300)
    with pytest.raises(ClaimLostError) as info:
        await clean_backend.release_task_claim("wf-1", T1, "worker-2")
    assert info.value.code == grpc.StatusCode.ABORTED
    with pytest.raises(ClaimLostError):
        await clean_backend.release_task_claim("wf-1", TaskId.sha256("other"), "worker-1")


async def test_extend_task_claim(clean_backend: GrpcBackend, clean_pg: asyncpg.Connection) -> None:
    await seed(clean_backend, "wf-1")
    assert await clean_backend.claim_task("wf-1", T1, "worker-1", 10)
    await clean_backend.extend_task_claim("wf-1", T1, "worker-1", 3600)
    remaining = await clean_pg.fetchval(
        "SELECT extract(epoch FROM expires_at - now()) FROM sayiir_workflow_claims WHERE instance_id = 'wf-1'"
    )
    assert 3590 < remaining <= 3600
    # Absolute, not additive: a shorter extension shortens the claim.
    await clean_backend.extend_task_claim("wf-1", T1, "worker-1", 60)
    remaining = await clean_pg.fetchval(
        "SELECT extract(epoch FROM expires_at - now()) FROM sayiir_workflow_claims WHERE instance_id = 'wf-1'"
    )
    assert 50 < remaining <= 60


async def test_extend_leaves_an_eternal_claim_eternal(clean_backend: GrpcBackend, clean_pg: asyncpg.Connection) -> None:
    await seed(clean_backend, "wf-1")
    assert await clean_backend.claim_task("wf-1", T1, "worker-1", None)
    await clean_backend.extend_task_claim("wf-1", T1, "worker-1", 60)
    assert await clean_pg.fetchval("SELECT expires_at FROM sayiir_workflow_claims WHERE instance_id = 'wf-1'") is None


async def test_extend_task_claim_wrong_worker(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-1")
    assert await clean_backend.claim_task("wf-1", T1, "worker-1", 10)
    with pytest.raises(ClaimLostError):
        await clean_backend.extend_task_claim("wf-1", T1, "worker-2", 60)


async def test_thirty_two_concurrent_claimers_one_winner(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-1")
    claims = await asyncio.gather(*(clean_backend.claim_task("wf-1", T1, f"worker-{i}", 300) for i in range(32)))
    assert len([c for c in claims if c is not None]) == 1


# -- dispatch ------------------------------------------------------------------


async def ids(backend: GrpcBackend, worker: str = "w1", tags: list[str] | None = None, limit: int = 10) -> list[str]:
    return [t.instance_id for t in await backend.find_available_tasks(worker, limit, 300, tags or [])]


async def test_find_available_tasks_basic(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-1")
    tasks = await clean_backend.find_available_tasks("worker-1", 10, timedelta(seconds=300), [])
    assert len(tasks) == 1
    task = tasks[0]
    assert (task.instance_id, task.task_id, task.input) == ("wf-1", T1, b'"input"')
    assert task.workflow_definition_hash == task.snapshot.definition_hash
    assert task.snapshot.current_task_id() == T1


async def test_find_available_tasks_skips_cancelled_and_paused(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-1")
    await clean_backend.store_signal("wf-1", SignalKind.CANCEL, SignalRequest())
    await seed(clean_backend, "wf-3", "task-3")
    await clean_backend.store_signal("wf-3", SignalKind.PAUSE, SignalRequest())
    await seed(clean_backend, "wf-2", "task-2")
    assert await ids(clean_backend) == ["wf-2"]


async def test_find_available_tasks_skips_completed(clean_backend: GrpcBackend) -> None:
    snapshot = WorkflowSnapshot.new("wf-1", "hash-1")
    snapshot.mark_completed(b"done")
    await clean_backend.save_snapshot(snapshot)
    assert await ids(clean_backend) == []


async def test_find_available_tasks_skips_claimed_done_and_backing_off(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "claimed")
    assert await clean_backend.claim_task("claimed", T1, "other", 300)
    done = await seed(clean_backend, "done-already")
    done.mark_task_completed(T1, b"x")
    await clean_backend.save_snapshot(done)
    backoff = await seed(clean_backend, "backing-off")
    backoff.task_retries[T1] = __import__("sayiir_client").TaskRetryState(
        1, RetryPolicy(3), "boom", Timestamp.now() + timedelta(hours=1), "w9"
    )
    await clean_backend.save_snapshot(backoff)
    await seed(clean_backend, "ready")
    assert await ids(clean_backend) == ["ready"]


async def test_tags_filter(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-gpu", "t1", ["gpu"])
    await seed(clean_backend, "wf-cpu", "t2", ["cpu"])
    assert await ids(clean_backend, tags=["gpu"]) == ["wf-gpu"]


async def test_untagged_worker_accepts_all(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-tagged", "t1", ["gpu"])
    await seed(clean_backend, "wf-plain", "t2")
    assert sorted(await ids(clean_backend)) == ["wf-plain", "wf-tagged"]


async def test_untagged_tasks_accepted_by_tagged_worker(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-plain", "t1")
    assert await ids(clean_backend, tags=["gpu"]) == ["wf-plain"]


async def test_multi_tag_subset(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-multi", "t1", ["gpu", "cuda"])
    await seed(clean_backend, "wf-single", "t2", ["gpu"])
    assert await ids(clean_backend, tags=["gpu"]) == ["wf-single"]
    assert sorted(await ids(clean_backend, tags=["gpu", "cuda", "fast"])) == ["wf-multi", "wf-single"]


async def test_tags_persist_through_save_load(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-persist", "t1", ["gpu", "cuda"])
    assert (await clean_backend.load_snapshot("wf-persist")).task_tags == ["gpu", "cuda"]


async def test_disjoint_tags_no_match(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "wf-cpu", "t1", ["cpu"])
    assert await ids(clean_backend, tags=["gpu"]) == []


async def test_priority_order_and_aging(clean_backend: GrpcBackend, clean_pg: asyncpg.Connection) -> None:
    await seed(clean_backend, "minimal", "t1", priority=5)
    await seed(clean_backend, "critical", "t2", priority=1)
    await seed(clean_backend, "normal", "t3")
    assert await ids(clean_backend) == ["critical", "normal", "minimal"]
    # The minimal task has waited 10 minutes: with a 1-minute aging interval
    # it gained 10 levels and now comes first.
    await clean_pg.execute(
        "UPDATE sayiir_workflow_snapshots SET updated_at = now() - interval '10 minutes' WHERE instance_id = 'minimal'"
    )
    tasks = await clean_backend.find_available_tasks("w1", 10, timedelta(minutes=1))
    assert tasks[0].instance_id == "minimal"


async def test_tasks_that_failed_on_this_worker_come_last(clean_backend: GrpcBackend) -> None:
    from sayiir_client import TaskRetryState

    failed = await seed(clean_backend, "failed-here", priority=1)
    failed.task_retries[T1] = TaskRetryState(1, RetryPolicy(3), "boom", Timestamp(0), "w1")
    await clean_backend.save_snapshot(failed)
    await seed(clean_backend, "fresh", "t2", priority=5)
    assert await ids(clean_backend, worker="w1") == ["fresh", "failed-here"]
    assert await ids(clean_backend, worker="w2") == ["failed-here", "fresh"]


async def test_due_delays_are_advanced(clean_backend: GrpcBackend) -> None:
    past = Timestamp.now() + timedelta(seconds=-5)
    snapshot = WorkflowSnapshot.with_initial_input("delayed", "h", b"in")
    snapshot.mark_task_completed(TaskId.sha256("before"), b"carried")
    snapshot.update_position(AtDelay(TaskId.sha256("d"), past, past, TaskId.sha256("after")))
    await clean_backend.save_snapshot(snapshot)
    last = WorkflowSnapshot.new("delay-ends-it", "h")
    last.mark_task_completed(TaskId.sha256("d2"), b"final")
    last.update_position(AtDelay(TaskId.sha256("d2"), past, past, None))
    await clean_backend.save_snapshot(last)
    future = WorkflowSnapshot.new("still-sleeping", "h")
    later = Timestamp.now() + timedelta(hours=1)
    future.update_position(AtDelay(TaskId.sha256("d3"), past, later, TaskId.sha256("x")))
    await clean_backend.save_snapshot(future)

    tasks = await clean_backend.find_available_tasks("w1", 10, 300)
    assert [(t.instance_id, t.task_id, t.input) for t in tasks] == [("delayed", TaskId.sha256("after"), b"carried")]
    assert (await clean_backend.load_snapshot("delay-ends-it")).state == Completed(b"final")
    assert (await clean_backend.load_snapshot("still-sleeping")).position_kind() == "AtDelay"


@pytest.mark.parametrize("limit", [0, 1001])
async def test_bad_limits_and_intervals_are_invalid(clean_backend: GrpcBackend, target: str, limit: int) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.TaskClaimStoreStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.FindAvailableTasks(pb.FindAvailableTasksRequest(worker_id="w", limit=limit))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit" in (info.value.details() or "")
        for seconds in (0, -5):
            request = pb.FindAvailableTasksRequest(worker_id="w", limit=5)
            request.aging_interval.seconds = seconds
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.FindAvailableTasks(request)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "aging_interval" in (
                info.value.details() or ""
            )
            claim = pb.ClaimTaskRequest(instance_id="x", task_id=bytes(32), worker_id="w")
            claim.ttl.seconds = seconds
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.ClaimTask(claim)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_concurrent_finders_do_not_block_each_other(
    clean_backend: GrpcBackend, clean_pg: asyncpg.Connection
) -> None:
    for i in range(5):
        await seed(clean_backend, f"wf-{i}", f"t{i}")
    # Another transaction holds wf-0's row: finders skip it instead of waiting.
    async with clean_pg.transaction():
        await clean_pg.execute("SELECT 1 FROM sayiir_workflow_snapshots WHERE instance_id = 'wf-0' FOR UPDATE")
        started = time.monotonic()
        results = await asyncio.gather(*(ids(clean_backend, worker=f"w{i}") for i in range(4)))
        assert time.monotonic() - started < 3
    # Finders skip rows locked by anyone, each other included, so one may
    # come back empty; none waited, and none offered the locked row.
    offered = {instance for found in results for instance in found}
    assert "wf-0" not in offered and offered
    assert sorted(await ids(clean_backend)) == ["wf-0", "wf-1", "wf-2", "wf-3", "wf-4"]


# -- fencing -------------------------------------------------------------------


async def test_fenced_save_only_with_the_live_claim(clean_backend: GrpcBackend) -> None:
    snapshot = await seed(clean_backend, "wf-1")
    snapshot.mark_task_completed(T1, b"from-stale-worker")
    assert await clean_backend.save_snapshot_fenced(snapshot, T1, "worker-1") is False
    assert await clean_backend.claim_task("wf-1", T1, "worker-1", 0.3)
    await asyncio.sleep(0.5)  # the claim expires...
    assert await clean_backend.claim_task("wf-1", T1, "worker-2", 300)  # ...and is taken over
    assert await clean_backend.save_snapshot_fenced(snapshot, T1, "worker-1") is False
    loaded = await clean_backend.load_snapshot("wf-1")
    assert loaded.get_task_result(T1) is None
    fresh = await clean_backend.load_snapshot("wf-1")
    fresh.mark_task_completed(T1, b"from-owner")
    assert await clean_backend.save_snapshot_fenced(fresh, T1, "worker-2") is True
    assert (await clean_backend.load_task_result("wf-1", T1)) == b"from-owner"


# -- task results --------------------------------------------------------------


async def test_load_task_result_in_progress_missing_and_after_completion(clean_backend: GrpcBackend) -> None:
    snapshot = WorkflowSnapshot.new("wf-1", "hash-1")
    snapshot.mark_task_completed(T1, b'"out1"')
    await clean_backend.save_snapshot(snapshot)
    assert await clean_backend.load_task_result("wf-1", T1) == b'"out1"'
    assert await clean_backend.load_task_result("wf-1", TaskId.sha256("no-such-task")) is None
    assert await clean_backend.load_task_result("no-such-wf", T1) is None
    snapshot.mark_completed(b'"final"')
    await clean_backend.save_snapshot(snapshot)
    assert await clean_backend.load_task_result("wf-1", T1) == b'"out1"'


# -- wakeups -------------------------------------------------------------------


async def test_notify_only_when_a_task_becomes_claimable(clean_backend: GrpcBackend, isolated_service: object) -> None:
    _, url = isolated_service  # type: ignore[misc]
    listener = await asyncpg.connect(url)
    received: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("sayiir_task_ready", lambda *a: received.put_nowait(a[3]))
    try:
        snapshot = WorkflowSnapshot.new("wf-notify", "h")
        await clean_backend.save_snapshot(snapshot)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(received.get(), 0.3)
        snapshot.update_position(AtTask(TaskId.sha256("step-1")))
        await clean_backend.save_snapshot(snapshot)
        hint = TaskWakeupHint.decode(await asyncio.wait_for(received.get(), 2))
        assert (hint.instance_id, hint.task_id) == ("wf-notify", TaskId.sha256("step-1"))
        assert hint.definition_hash == snapshot.definition_hash
        await clean_backend.save_task_result("wf-notify", TaskId.sha256("step-1"), b"r")
        snapshot.mark_completed(b"done")
        await clean_backend.save_snapshot(snapshot)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(received.get(), 0.3)
    finally:
        await listener.close()


async def test_wait_for_wakeup_returns_on_notify_with_a_parsed_hint(clean_backend: GrpcBackend) -> None:
    async def produce() -> None:
        await asyncio.sleep(0.15)
        await seed(clean_backend, "wf-hinted", "task-a", ["gpu"])

    started = time.monotonic()
    producer = asyncio.create_task(produce())
    hint = await clean_backend.wait_for_wakeup(5)
    await producer
    assert time.monotonic() - started < 2
    assert hint == TaskWakeupHint(
        "wf-hinted", TaskId.sha256("task-a"), WorkflowSnapshot.new("x", "hash-1").definition_hash, ("gpu",)
    )


async def test_wait_for_wakeup_respects_timeout(clean_backend: GrpcBackend) -> None:
    started = time.monotonic()
    assert await clean_backend.wait_for_wakeup(0.3) is None
    assert 0.28 <= time.monotonic() - started < 1.5


async def test_hint_committed_before_the_wait_is_not_missed(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "early")
    hint = await clean_backend.wait_for_wakeup(2)
    assert hint is not None and hint.instance_id == "early"


async def test_wakeup_stream_filters_by_worker_tags(clean_backend: GrpcBackend) -> None:
    gpu_stream = clean_backend.wakeups(["gpu"])
    first = asyncio.ensure_future(gpu_stream.__anext__())
    await asyncio.sleep(0.2)
    await seed(clean_backend, "cpu-task", "t1", ["cpu"])
    await seed(clean_backend, "gpu-task", "t2", ["gpu"])
    hint = await asyncio.wait_for(first, 3)
    assert hint.instance_id == "gpu-task"
    await gpu_stream.aclose()


async def test_find_hinted_task_available_stale_and_claimed(clean_backend: GrpcBackend) -> None:
    snapshot = await seed(clean_backend, "wf-h")
    hint = TaskWakeupHint("wf-h", T1, snapshot.definition_hash, ())
    task = await clean_backend.find_hinted_task(hint)
    assert task is not None and task.task_id == T1 and task.input == b'"input"'
    stale = TaskWakeupHint("wf-h", TaskId.sha256("old-step"), snapshot.definition_hash, ())
    assert await clean_backend.find_hinted_task(stale) is None
    assert await clean_backend.claim_task("wf-h", T1, "w1", 300)
    assert await clean_backend.find_hinted_task(hint) is None
    await clean_backend.release_task_claim("wf-h", T1, "w1")
    await clean_backend.store_signal("wf-h", SignalKind.PAUSE, SignalRequest())
    assert await clean_backend.find_hinted_task(hint) is None


async def test_wakeup_stream_survives_a_dropped_listener_connection(
    isolated_service: object, clean_backend: GrpcBackend, clean_pg: asyncpg.Connection
) -> None:
    running, _ = isolated_service  # type: ignore[misc]
    hub = running.hub
    reconnects = hub.reconnects
    old_pid = hub.listener_pid
    await clean_pg.execute("SELECT pg_terminate_backend($1)", old_pid)
    for _ in range(100):
        if hub.reconnects > reconnects and hub.connected:
            break
        await asyncio.sleep(0.05)
    assert hub.connected and hub.listener_pid != old_pid
    await seed(clean_backend, "after-drop")
    hint = await clean_backend.wait_for_wakeup(3)
    assert hint is not None and hint.instance_id == "after-drop"


# -- a fleet -----------------------------------------------------------------


async def run_fleet(
    port: int,
    clean_pg: asyncpg.Connection,
    run_tasks: Callable[[GrpcBackend, str], Awaitable[list[str]]],
    prefix: str,
) -> None:
    """8 workers drain 200 one-step workflows; each must run exactly once."""
    executions: list[str] = []

    async def worker(name: str) -> None:
        async with connect(f"127.0.0.1:{port}", watch_wakeups=False) as client:
            idle = 0
            while idle < 3:
                ran = await run_tasks(client, name)
                executions.extend(ran)
                idle = 0 if ran else idle + 1
                if not ran:
                    await asyncio.sleep(0.05)

    await asyncio.wait_for(asyncio.gather(*(worker(f"worker-{i}") for i in range(8))), 120)
    assert sorted(executions) == [f"{prefix}-{i:03d}" for i in range(200)]
    assert await clean_pg.fetchval("SELECT count(*) FROM sayiir_workflow_snapshots WHERE status = 'Completed'") == 200
    assert await clean_pg.fetchval("SELECT count(*) FROM sayiir_workflow_claims") == 0


async def test_eight_workers_run_two_hundred_tasks_exactly_once(
    clean_backend: GrpcBackend, isolated_service: object, clean_pg: asyncpg.Connection
) -> None:
    running, _ = isolated_service  # type: ignore[misc]
    for i in range(200):
        await seed(clean_backend, f"job-{i:03d}", "step")

    async def standard_calls(client: GrpcBackend, name: str) -> list[str]:
        ran = []
        for task in await client.find_available_tasks(name, 5, 300):
            if await client.claim_task(task.instance_id, task.task_id, name, 30) is None:
                continue
            ran.append(task.instance_id)  # "run" the task
            await client.save_task_result(task.instance_id, task.task_id, name.encode())
            snapshot = await client.load_snapshot(task.instance_id)
            snapshot.mark_completed(name.encode())
            assert await client.save_snapshot_fenced(snapshot, task.task_id, name)
            await client.release_task_claim(task.instance_id, task.task_id, name)
        return ran

    await run_fleet(running.port, clean_pg, standard_calls, "job")


async def test_a_claim_waits_for_an_in_flight_save_and_sees_its_result(
    clean_backend: GrpcBackend, clean_pg: asyncpg.Connection
) -> None:
    """A claim never acts on a status older than a save committing meanwhile.

    Otherwise a claimer that read "InProgress at task-1" just before the
    finishing worker's save committed could claim the finished task once
    that worker released its claim, and run it a second time.
    """
    await seed(clean_backend, "wf-1")
    async with clean_pg.transaction():
        await clean_pg.execute(
            "UPDATE sayiir_workflow_snapshots SET status = 'Completed', current_task_id = NULL "
            "WHERE instance_id = 'wf-1'"
        )
        pending = asyncio.ensure_future(clean_backend.claim_task("wf-1", T1, "late-worker", 30))
        await asyncio.sleep(0.3)
        assert not pending.done()  # it waits for the save instead of reading around it
    assert await asyncio.wait_for(pending, 5) is None


# -- the fast path ---------------------------------------------------------------


async def test_claim_available_tasks_claims_what_it_returns(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "fast-1")
    await seed(clean_backend, "fast-gpu", "t2", ["gpu"])
    tasks = await clean_backend.claim_available_tasks("w1", 10, 30)
    assert sorted(t.instance_id for t in tasks) == ["fast-1", "fast-gpu"]
    first = next(t for t in tasks if t.instance_id == "fast-1")
    assert first.input == b'"input"' and first.snapshot.current_task_id() == T1
    assert await clean_backend.claim_task("fast-1", T1, "w2", 30) is None  # held by w1
    assert await clean_backend.claim_available_tasks("w2", 10, 30) == []
    await seed(clean_backend, "fast-cpu", "t3", ["cpu"])
    assert await clean_backend.claim_available_tasks("w3", 10, 30, worker_tags=["gpu"]) == []


async def test_complete_task_advances_completes_and_releases(
    clean_backend: GrpcBackend, clean_pg: asyncpg.Connection
) -> None:
    await seed(clean_backend, "fast-2")
    (task,) = await clean_backend.claim_available_tasks("w1", 1, 30)
    assert task.instance_id == "fast-2"
    t2 = TaskId.sha256("task-2")
    assert await clean_backend.complete_task(
        "fast-2", T1, "w1", b'"one"', t2, next_task_priority=2, next_task_tags=["x"]
    )
    loaded = await clean_backend.load_snapshot("fast-2")
    assert loaded.current_task_id() == t2 and loaded.get_task_result(T1).output == b'"one"'  # type: ignore[union-attr]
    assert (loaded.task_priority, loaded.task_tags) == (2, ["x"])
    assert await clean_pg.fetchval("SELECT count(*) FROM sayiir_workflow_claims WHERE instance_id = 'fast-2'") == 0
    # The next task is claimable, and its input is the output just saved.
    (following,) = await clean_backend.claim_available_tasks("w2", 1, 30, worker_tags=["x"])
    assert following.task_id == t2 and following.input == b'"one"'
    assert await clean_backend.complete_task("fast-2", t2, "w2", b'"two"', final_output=b'"done"')
    assert (await clean_backend.load_snapshot("fast-2")).state == Completed(b'"done"')
    assert await clean_backend.load_task_result("fast-2", t2) == b'"two"'


async def test_complete_task_refuses_a_lost_claim_and_writes_nothing(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "fast-3")
    assert await clean_backend.claim_task("fast-3", T1, "owner", 0.3)
    await asyncio.sleep(0.5)
    assert await clean_backend.claim_task("fast-3", T1, "new-owner", 30)
    assert await clean_backend.complete_task("fast-3", T1, "owner", b"stale") is False
    assert await clean_backend.load_task_result("fast-3", T1) is None
    assert (await clean_backend.load_snapshot("fast-3")).state.is_in_progress()


async def test_eight_fast_path_workers_run_two_hundred_tasks_exactly_once(
    clean_backend: GrpcBackend, isolated_service: object, clean_pg: asyncpg.Connection
) -> None:
    running, _ = isolated_service  # type: ignore[misc]
    for i in range(200):
        await seed(clean_backend, f"fjob-{i:03d}", "step")

    async def fast_path(client: GrpcBackend, name: str) -> list[str]:
        ran = []
        for task in await client.claim_available_tasks(name, 5, 30):
            ran.append(task.instance_id)
            assert await client.complete_task(task.instance_id, task.task_id, name, name.encode())
        return ran

    await run_fleet(running.port, clean_pg, fast_path, "fjob")


async def test_dispatch_applies_the_signals_of_idle_workflows(clean_backend: GrpcBackend) -> None:
    """A cancel or pause sent while no worker holds the workflow still takes effect."""
    await seed(clean_backend, "idle-cancel")
    await seed(clean_backend, "idle-pause", "t2")
    await seed(clean_backend, "busy", "t3")
    assert await clean_backend.claim_task("busy", TaskId.sha256("t3"), "worker-x", 30)
    await clean_backend.store_signal("idle-cancel", SignalKind.CANCEL, SignalRequest("stop", "ops"))
    await clean_backend.store_signal("idle-pause", SignalKind.PAUSE, SignalRequest("hold", "ops"))
    await clean_backend.store_signal("busy", SignalKind.CANCEL, SignalRequest("later", "ops"))
    assert await ids(clean_backend) == []
    cancelled = await clean_backend.load_snapshot("idle-cancel")
    assert cancelled.state.is_cancelled() and cancelled.state.reason == "stop"  # type: ignore[attr-defined]
    assert (await clean_backend.load_snapshot("idle-pause")).state.is_paused()
    # The claimed one is left to the worker that holds it.
    assert (await clean_backend.load_snapshot("busy")).state.is_in_progress()
    assert await clean_backend.get_signal("busy", SignalKind.CANCEL) is not None


async def test_collected_hints_can_be_dropped(clean_backend: GrpcBackend) -> None:
    await seed(clean_backend, "hint-a")
    await seed(clean_backend, "hint-b", "t2")
    await asyncio.sleep(0.5)  # both hints reach the client's collector
    assert clean_backend.drop_wakeups() == 2
    assert await clean_backend.wait_for_wakeup(0.2) is None
    await seed(clean_backend, "hint-c", "t3")
    hint = await clean_backend.wait_for_wakeup(3)
    assert hint is not None and hint.instance_id == "hint-c"
