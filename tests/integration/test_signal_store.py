"""SignalStore over gRPC against a real PostgreSQL.

Mirrors the signal and event scenarios of sayiir-postgres's integration
suite, then the races and the atomicity a network service must keep.
"""

from __future__ import annotations

import asyncio

import asyncpg
import grpc
import pytest

from sayiir_client import (
    AtSignal,
    AtTask,
    Cancelled,
    CannotCancelError,
    CannotPauseError,
    Completed,
    ControlSignal,
    FailedPreconditionError,
    GrpcBackend,
    InProgress,
    NotFoundError,
    Paused,
    SerializationError,
    SignalKind,
    SignalRequest,
    TaskId,
    TaskWakeupHint,
    WorkflowSnapshot,
)
from sayiir_common.proto.sayiir.v1 import signal_store_pb2 as sig_pb
from sayiir_common.proto.sayiir.v1 import signal_store_pb2_grpc as sig_grpc


async def seed_at_task(backend: GrpcBackend, instance_id: str, task: str = "t1") -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot.new(instance_id, "test-hash")
    snapshot.update_position(AtTask(TaskId.sha256(task)))
    await backend.save_snapshot(snapshot)
    return snapshot


async def seed_at_signal(backend: GrpcBackend, instance_id: str, name: str, next_task: str | None) -> TaskId:
    signal_id = TaskId.sha256(f"sig-{name}")
    snapshot = WorkflowSnapshot.new(instance_id, "test-hash")
    snapshot.update_position(AtSignal(signal_id, name, None, None if next_task is None else TaskId.sha256(next_task)))
    await backend.save_snapshot(snapshot)
    return signal_id


async def complete(backend: GrpcBackend, instance_id: str) -> None:
    snapshot = WorkflowSnapshot.new(instance_id, "test-hash")
    snapshot.mark_completed(b"done")
    await backend.save_snapshot(snapshot)


# -- the original's scenarios -------------------------------------------------


async def test_store_and_get_cancel_signal(backend: GrpcBackend, instance_id: str) -> None:
    await seed_at_task(backend, instance_id)
    await backend.store_signal(instance_id, SignalKind.Cancel, SignalRequest("user request", "admin"))
    signal = await backend.get_signal(instance_id, SignalKind.CANCEL)
    assert signal is not None
    assert (signal.reason, signal.requested_by) == ("user request", "admin")
    assert signal.requested_at.seconds > 0


async def test_store_signal_on_missing_workflow(backend: GrpcBackend) -> None:
    with pytest.raises(NotFoundError) as info:
        await backend.store_signal("nonexistent-instance", SignalKind.CANCEL, SignalRequest())
    assert info.value.code == grpc.StatusCode.NOT_FOUND


async def test_cancel_on_completed_workflow_is_refused(backend: GrpcBackend, instance_id: str) -> None:
    await complete(backend, instance_id)
    with pytest.raises(CannotCancelError) as info:
        await backend.store_signal(instance_id, SignalKind.CANCEL, SignalRequest())
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "Completed" in info.value.message


async def test_pause_on_completed_workflow_is_refused(backend: GrpcBackend, instance_id: str) -> None:
    await complete(backend, instance_id)
    with pytest.raises(CannotPauseError):
        await backend.store_signal(instance_id, SignalKind.PAUSE, SignalRequest())


@pytest.mark.parametrize(
    ("state", "kind", "refused"),
    [
        ("failed", SignalKind.CANCEL, True),
        ("cancelled", SignalKind.CANCEL, False),
        ("failed", SignalKind.PAUSE, True),
        ("cancelled", SignalKind.PAUSE, True),
        ("paused", SignalKind.CANCEL, False),
        ("paused", SignalKind.PAUSE, False),
    ],
)
async def test_signal_rules_per_state(
    backend: GrpcBackend, instance_id: str, state: str, kind: SignalKind, refused: bool
) -> None:
    snapshot = WorkflowSnapshot.new(instance_id, "h")
    {"failed": lambda: snapshot.mark_failed("x"), "cancelled": lambda: snapshot.mark_cancelled(),
     "paused": lambda: snapshot.mark_paused("p")}[state]()  # fmt: skip
    await backend.save_snapshot(snapshot)
    if refused:
        with pytest.raises(FailedPreconditionError):
            await backend.store_signal(instance_id, kind, SignalRequest())
    else:
        await backend.store_signal(instance_id, kind, SignalRequest())
        assert await backend.get_signal(instance_id, kind) is not None


async def test_clear_signal(backend: GrpcBackend, instance_id: str) -> None:
    await seed_at_task(backend, instance_id)
    await backend.store_signal(instance_id, SignalKind.CANCEL, SignalRequest("r"))
    await backend.clear_signal(instance_id, SignalKind.CANCEL)
    assert await backend.get_signal(instance_id, SignalKind.CANCEL) is None
    await backend.clear_signal(instance_id, SignalKind.CANCEL)  # clearing nothing is fine


async def test_get_signal_returns_none_when_absent(backend: GrpcBackend, instance_id: str) -> None:
    await seed_at_task(backend, instance_id)
    assert await backend.get_signal(instance_id, SignalKind.PAUSE) is None


async def test_storing_the_same_kind_again_replaces_it(backend: GrpcBackend, instance_id: str) -> None:
    await seed_at_task(backend, instance_id)
    await backend.store_signal(instance_id, SignalKind.PAUSE, SignalRequest("first", "alice"))
    await backend.store_signal(instance_id, SignalKind.PAUSE, SignalRequest("second", "bob"))
    signal = await backend.get_signal(instance_id, SignalKind.PAUSE)
    assert signal is not None and (signal.reason, signal.requested_by) == ("second", "bob")


async def test_check_and_cancel_success(backend: GrpcBackend, instance_id: str, pg: asyncpg.Connection) -> None:
    snapshot = await seed_at_task(backend, instance_id)
    done = TaskId.sha256("t0")
    await backend.save_task_result(instance_id, done, b"kept")
    await backend.store_signal(instance_id, SignalKind.CANCEL, SignalRequest("stop", "ops"))
    assert await backend.check_and_cancel(instance_id, TaskId.sha256("t1")) is True
    loaded = await backend.load_snapshot(instance_id)
    assert isinstance(loaded.state, Cancelled)
    assert (loaded.state.reason, loaded.state.cancelled_by) == ("stop", "ops")
    assert loaded.state.interrupted_at_task == TaskId.sha256("t1")
    assert loaded.get_task_result(done).output == b"kept"  # type: ignore[union-attr]
    assert await backend.get_signal(instance_id, SignalKind.CANCEL) is None
    row = await pg.fetchrow(
        "SELECT status, completed_at FROM sayiir_workflow_snapshots WHERE instance_id = $1", instance_id
    )
    assert row["status"] == "Cancelled" and row["completed_at"] is not None
    active = await pg.fetchval(
        "SELECT status FROM sayiir_workflow_tasks WHERE instance_id = $1 AND task_id = $2",
        instance_id,
        snapshot.current_task_id().as_bytes(),  # type: ignore[union-attr]
    )
    assert active == "cancelled"


async def test_check_and_cancel_no_signal(backend: GrpcBackend, instance_id: str) -> None:
    await seed_at_task(backend, instance_id)
    assert await backend.check_and_cancel(instance_id, None) is False
    assert (await backend.load_snapshot(instance_id)).state.is_in_progress()


async def test_check_and_pause_success(backend: GrpcBackend, instance_id: str) -> None:
    await seed_at_task(backend, instance_id)
    await backend.store_signal(instance_id, SignalKind.PAUSE, SignalRequest("maintenance", "ops"))
    assert await backend.check_and_pause(instance_id) is True
    loaded = await backend.load_snapshot(instance_id)
    assert isinstance(loaded.state, Paused)
    assert (loaded.state.reason, loaded.state.paused_by) == ("maintenance", "ops")
    assert loaded.state.position == AtTask(TaskId.sha256("t1"))
    assert await backend.get_signal(instance_id, SignalKind.PAUSE) is None


async def test_unpause_success(backend: GrpcBackend, instance_id: str, pg: asyncpg.Connection) -> None:
    await seed_at_task(backend, instance_id)
    await backend.store_signal(instance_id, SignalKind.PAUSE, SignalRequest())
    assert await backend.check_and_pause(instance_id)
    resumed = await backend.unpause(instance_id)
    assert isinstance(resumed.state, InProgress)
    assert resumed.state.position == AtTask(TaskId.sha256("t1"))
    assert (await backend.load_snapshot(instance_id)).state == resumed.state
    assert await pg.fetchval("SELECT status FROM sayiir_workflow_snapshots WHERE instance_id = $1", instance_id) == (
        "InProgress"
    )


async def test_unpause_of_a_running_workflow_names_the_state(backend: GrpcBackend, instance_id: str) -> None:
    await seed_at_task(backend, instance_id)
    with pytest.raises(FailedPreconditionError) as info:
        await backend.unpause(instance_id)
    assert info.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "InProgress" in info.value.message
    with pytest.raises(NotFoundError):
        await backend.unpause("nonexistent-instance")


async def test_send_event_auto_resumes_at_signal(backend: GrpcBackend, instance_id: str) -> None:
    signal_id = await seed_at_signal(backend, instance_id, "go", "after-signal")
    assert await backend.send_event(instance_id, "go", b"payload") is True
    loaded = await backend.load_snapshot(instance_id)
    assert isinstance(loaded.state, InProgress)
    assert loaded.state.position == AtTask(TaskId.sha256("after-signal"))
    assert loaded.get_task_result(signal_id).output == b"payload"  # type: ignore[union-attr]
    assert await backend.consume_event(instance_id, "go") is None  # consumed by the resume, not buffered


async def test_send_event_terminal_signal_sets_completed_at(
    backend: GrpcBackend, instance_id: str, pg: asyncpg.Connection
) -> None:
    signal_id = await seed_at_signal(backend, instance_id, "done", None)
    assert await backend.send_event(instance_id, "done", b"final")
    loaded = await backend.load_snapshot(instance_id)
    assert loaded.state == Completed(b"final")
    stored = await pg.fetchval(
        "SELECT output FROM sayiir_workflow_tasks WHERE instance_id = $1 AND task_id = $2 AND status = 'completed'",
        instance_id,
        signal_id.as_bytes(),
    )
    assert stored == b"final"
    assert await pg.fetchval("SELECT completed_at FROM sayiir_workflow_snapshots WHERE instance_id = $1", instance_id)


async def test_send_event_buffers_when_not_parked(backend: GrpcBackend, instance_id: str) -> None:
    before = await seed_at_task(backend, instance_id)
    assert await backend.send_event(instance_id, "go", b"early") is False
    assert (await backend.load_snapshot(instance_id)).state == before.state
    assert await backend.consume_event(instance_id, "go") == b"early"

    other = f"{instance_id}-mismatch"
    await seed_at_signal(backend, other, "expected", None)
    assert await backend.send_event(other, "other", b"payload") is False
    loaded = await backend.load_snapshot(other)
    assert isinstance(loaded.state, InProgress) and isinstance(loaded.state.position, AtSignal)
    assert await backend.consume_event(other, "other") == b"payload"


async def test_events_to_missing_or_finished_instances_are_buffered_in_order(
    backend: GrpcBackend, instance_id: str
) -> None:
    for i in range(3):
        await backend.send_event(instance_id, "ping", f"m{i}".encode())
    await complete(backend, f"{instance_id}-done")
    await backend.send_event(f"{instance_id}-done", "ping", b"late")
    assert [await backend.consume_event(instance_id, "ping") for _ in range(4)] == [b"m0", b"m1", b"m2", None]
    assert await backend.consume_event(f"{instance_id}-done", "ping") == b"late"


async def test_resumed_workflow_is_dispatchable(backend: GrpcBackend, instance_id: str, database_url: str) -> None:
    """The resume commits a task-ready wakeup and an unclaimed current task."""
    listener = await asyncpg.connect(database_url)
    hints: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("sayiir_task_ready", lambda *args: hints.put_nowait(args[3]))
    try:
        await seed_at_signal(backend, instance_id, "go", "downstream")
        await backend.send_event(instance_id, "go", b"x")
        definition_hash = (await backend.load_snapshot(instance_id)).definition_hash
        expected = TaskWakeupHint(instance_id, TaskId.sha256("downstream"), definition_hash).encode()
        received = [await asyncio.wait_for(hints.get(), 5)]
        while not hints.empty():
            received.append(hints.get_nowait())
        assert expected in received
        row = await listener.fetchrow(
            "SELECT status, current_task_id, position_kind FROM sayiir_workflow_snapshots WHERE instance_id = $1",
            instance_id,
        )
        assert (row["status"], bytes(row["current_task_id"]), row["position_kind"]) == (
            "InProgress",
            TaskId.sha256("downstream").as_bytes(),
            "AtTask",
        )
        assert (
            await listener.fetchval("SELECT count(*) FROM sayiir_workflow_claims WHERE instance_id = $1", instance_id)
            == 0
        )
    finally:
        await listener.close()


async def test_check_control_signals(backend: GrpcBackend, instance_id: str) -> None:
    await seed_at_task(backend, instance_id)
    assert await backend.check_control_signals(instance_id) is None
    await backend.store_signal(instance_id, SignalKind.PAUSE, SignalRequest())
    await backend.store_signal(instance_id, SignalKind.CANCEL, SignalRequest("both"))
    assert await backend.check_control_signals(instance_id, TaskId.sha256("t1")) is ControlSignal.Cancelled
    assert (await backend.load_snapshot(instance_id)).state.is_cancelled()
    other = f"{instance_id}-p"
    await seed_at_task(backend, other)
    await backend.store_signal(other, SignalKind.PAUSE, SignalRequest())
    assert await backend.check_control_signals(other) is ControlSignal.PAUSED


# -- races (bounded) ----------------------------------------------------------


async def test_concurrent_consumers_take_each_event_exactly_once(backend: GrpcBackend, instance_id: str) -> None:
    payloads = [f"e{i}".encode() for i in range(20)]
    for payload in payloads:
        await backend.send_event(instance_id, "work", payload)
    results = await asyncio.gather(*(backend.consume_event(instance_id, "work") for _ in range(50)))
    taken = [r for r in results if r is not None]
    assert sorted(taken) == sorted(payloads)
    assert await backend.consume_event(instance_id, "work") is None


async def test_store_signal_racing_a_completing_save_stays_consistent(backend: GrpcBackend, instance_id: str) -> None:
    for round_ in range(10):
        iid = f"{instance_id}-{round_}"
        await seed_at_task(backend, iid)
        done = WorkflowSnapshot.new(iid, "test-hash")
        done.mark_completed(b"ok")
        results = await asyncio.gather(
            backend.save_snapshot(done),
            backend.store_signal(iid, SignalKind.CANCEL, SignalRequest("race")),
            return_exceptions=True,
        )
        signal_error = results[1]
        pending = await backend.get_signal(iid, SignalKind.CANCEL)
        assert (await backend.load_snapshot(iid)).state == Completed(b"ok")
        if isinstance(signal_error, CannotCancelError):
            assert pending is None  # refused: the save won the lock
        else:
            assert signal_error is None and pending is not None  # stored first, while still running
            assert await backend.check_and_cancel(iid) is False  # and it can never cancel a Completed one


async def test_check_and_cancel_from_ten_callers_cancels_once(
    backend: GrpcBackend, instance_id: str, pg: asyncpg.Connection
) -> None:
    await seed_at_task(backend, instance_id)
    await backend.store_signal(instance_id, SignalKind.CANCEL, SignalRequest("once"))
    outcomes = await asyncio.gather(*(backend.check_and_cancel(instance_id) for _ in range(10)))
    assert sorted(outcomes) == [False] * 9 + [True]
    cancelled_versions = await pg.fetchval(
        "SELECT count(*) FROM sayiir_workflow_snapshot_history WHERE instance_id = $1 AND status = 'Cancelled'",
        instance_id,
    )
    assert cancelled_versions == 1


# -- atomicity ------------------------------------------------------------------


async def test_a_composite_that_cannot_apply_changes_nothing(backend: GrpcBackend, instance_id: str) -> None:
    """Pending cancel on a paused workflow: neither the snapshot nor the signal moves."""
    snapshot = WorkflowSnapshot.new(instance_id, "h")
    snapshot.mark_paused("hold")
    await backend.save_snapshot(snapshot)
    await backend.store_signal(instance_id, SignalKind.CANCEL, SignalRequest())
    assert await backend.check_and_cancel(instance_id) is False
    assert (await backend.load_snapshot(instance_id)).state.is_paused()
    assert await backend.get_signal(instance_id, SignalKind.CANCEL) is not None
    await backend.unpause(instance_id)
    assert await backend.check_and_cancel(instance_id) is True
    assert await backend.get_signal(instance_id, SignalKind.CANCEL) is None


async def test_a_failed_composite_rolls_back_everything(
    backend: GrpcBackend, instance_id: str, pg: asyncpg.Connection
) -> None:
    """A composite that fails midway (corrupt blob) leaves the signal and the row as they were."""
    await seed_at_task(backend, instance_id)
    await backend.store_signal(instance_id, SignalKind.PAUSE, SignalRequest())
    await pg.execute(
        "UPDATE sayiir_workflow_snapshot_history SET data = $2 WHERE instance_id = $1",
        instance_id,
        b"SYRS\x01\x01{not json",
    )
    version = await pg.fetchval(
        "SELECT history_version FROM sayiir_workflow_snapshots WHERE instance_id = $1", instance_id
    )
    with pytest.raises(SerializationError):
        await backend.check_and_pause(instance_id)
    assert await backend.get_signal(instance_id, SignalKind.PAUSE) is not None
    assert (
        await pg.fetchval("SELECT history_version FROM sayiir_workflow_snapshots WHERE instance_id = $1", instance_id)
        == version
    )


# -- bad input -----------------------------------------------------------------


async def test_unknown_signal_kind_is_invalid(target: str, instance_id: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = sig_grpc.SignalStoreStub(channel)
        for call in (
            stub.StoreSignal(sig_pb.StoreSignalRequest(instance_id=instance_id, kind=7)),
            stub.GetSignal(sig_pb.GetSignalRequest(instance_id=instance_id)),
            stub.SendEvent(sig_pb.SendEventRequest(instance_id=instance_id, signal_name="")),
            stub.CheckAndCancel(sig_pb.CheckAndCancelRequest(instance_id=instance_id, interrupted_at_task=b"x")),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
