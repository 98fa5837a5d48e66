"""SnapshotStore over gRPC against a real PostgreSQL.

The first block mirrors the SnapshotStore scenarios of sayiir-postgres's
integration suite; the rest covers what a network service adds.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import asyncpg
import grpc
import pytest

from sayiir_client import (
    AtDelay,
    AtTask,
    Completed,
    DefinitionHash,
    ExecutionPosition,
    GrpcBackend,
    InProgress,
    InvalidArgumentError,
    NotFoundError,
    SerializationError,
    TaskId,
    Timestamp,
    WorkflowSnapshot,
    connect,
)
from sayiir_common.convert import snapshot_to_proto
from sayiir_common.proto.sayiir.v1 import snapshot_pb2 as pb
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2 as rpc_pb
from sayiir_common.proto.sayiir.v1 import snapshot_store_pb2_grpc as rpc_grpc
from sayiir_grpc.stores import WORKFLOW_CHILD_TABLES

# -- the original's scenarios -------------------------------------------------


async def test_save_and_load_snapshot(backend: GrpcBackend, instance_id: str) -> None:
    await backend.save_snapshot(WorkflowSnapshot.new(instance_id, "hash-1"))
    loaded = await backend.load_snapshot(instance_id)
    assert loaded.instance_id == instance_id
    assert loaded.definition_hash == DefinitionHash.sha256("hash-1")
    assert loaded.state.is_in_progress()


async def test_load_not_found(backend: GrpcBackend) -> None:
    with pytest.raises(NotFoundError) as info:
        await backend.load_snapshot("nonexistent-instance")
    assert info.value.code == grpc.StatusCode.NOT_FOUND


async def test_save_snapshot_overwrites(backend: GrpcBackend, instance_id: str) -> None:
    snapshot = WorkflowSnapshot.new(instance_id, "hash-1")
    await backend.save_snapshot(snapshot)
    snapshot.update_position(ExecutionPosition.AtTask(TaskId.sha256("step-2")))
    await backend.save_snapshot(snapshot)
    loaded = await backend.load_snapshot(instance_id)
    assert isinstance(loaded.state, InProgress)
    assert loaded.state.position == AtTask(TaskId.sha256("step-2"))


async def test_save_snapshot_does_not_resurrect_terminal_state(backend: GrpcBackend, instance_id: str) -> None:
    snapshot = WorkflowSnapshot.new(instance_id, "hash-1")
    await backend.save_snapshot(snapshot)
    snapshot.state = Completed(b"42")
    await backend.save_snapshot(snapshot)
    stale = WorkflowSnapshot.new(instance_id, "hash-1")
    stale.update_position(AtTask(TaskId.sha256("step-2")))
    assert await backend.save_snapshot_written(stale) is False
    loaded = await backend.load_snapshot(instance_id)
    assert loaded.state == Completed(b"42")


@pytest.mark.parametrize("terminal", ["completed", "failed", "cancelled"])
async def test_no_terminal_state_is_overwritten_by_another_terminal(
    backend: GrpcBackend, instance_id: str, terminal: str, pg: asyncpg.Connection
) -> None:
    snapshot = WorkflowSnapshot.new(instance_id, "h")
    {
        "completed": lambda: snapshot.mark_completed(b"1"),
        "failed": lambda: snapshot.mark_failed("boom"),
        "cancelled": lambda: snapshot.mark_cancelled("why", "ops"),
    }[terminal]()
    await backend.save_snapshot(snapshot)
    other = WorkflowSnapshot.new(instance_id, "h")
    other.mark_failed("late failure") if terminal != "failed" else other.mark_completed(b"late")
    assert await backend.save_snapshot_written(other) is False
    assert (await backend.load_snapshot(instance_id)).state == snapshot.state
    versions = await pg.fetchval(
        "SELECT count(*) FROM sayiir_workflow_snapshot_history WHERE instance_id = $1", instance_id
    )
    assert versions == 1


async def test_delete_snapshot(backend: GrpcBackend, instance_id: str) -> None:
    await backend.save_snapshot(WorkflowSnapshot.new(instance_id, "hash-1"))
    await backend.delete_snapshot(instance_id)
    with pytest.raises(NotFoundError):
        await backend.load_snapshot(instance_id)


async def test_delete_not_found(backend: GrpcBackend) -> None:
    with pytest.raises(NotFoundError):
        await backend.delete_snapshot("nonexistent-instance")


async def test_list_snapshots(make_database: Callable[[], Awaitable[str]]) -> None:
    from conftest import start_service

    url = await make_database()
    running = await start_service(url)
    try:
        async with connect(f"127.0.0.1:{running.port}") as client:
            assert await client.list_snapshots() == []
            for name in ("wf-2", "wf-1", "wf-3"):
                await client.save_snapshot(WorkflowSnapshot.new(name, "h"))
            assert await client.list_snapshots() == ["wf-1", "wf-2", "wf-3"]
            page, cursor = await client.list_snapshots_page(None, 2)
            assert page == ["wf-1", "wf-2"] and cursor == "wf-2"
            page, cursor = await client.list_snapshots_page(cursor, 2)
            assert page == ["wf-3"] and cursor is None
            done = WorkflowSnapshot.new("wf-2", "h")
            done.mark_completed(b"")
            await client.save_snapshot(done)
            assert (await client.list_snapshots_page(None, 10, ["Completed"]))[0] == ["wf-2"]
            assert (await client.list_snapshots_page(None, 10, ["InProgress"]))[0] == ["wf-1", "wf-3"]
    finally:
        await running.stop(grace=1)


async def test_save_task_result(backend: GrpcBackend, instance_id: str) -> None:
    task = TaskId.sha256("task-1")
    snapshot = WorkflowSnapshot.new(instance_id, "hash-1")
    snapshot.update_position(AtTask(task))
    await backend.save_snapshot(snapshot)
    await backend.save_task_result(instance_id, task, b'"done"')
    loaded = await backend.load_snapshot(instance_id)
    result = loaded.get_task_result(task)
    assert result is not None and result.output == b'"done"'
    assert loaded.last_completed_task_id() == task


async def test_save_task_result_on_missing_instance(backend: GrpcBackend) -> None:
    with pytest.raises(NotFoundError):
        await backend.save_task_result("nonexistent-instance", TaskId.sha256("t"), b"x")


async def test_history_is_canonical_data_column_stays_null(
    backend: GrpcBackend, instance_id: str, pg: asyncpg.Connection
) -> None:
    task = TaskId.sha256("task-can")
    snapshot = WorkflowSnapshot.new(instance_id, "hash-can")
    snapshot.update_position(AtTask(task))
    await backend.save_snapshot(snapshot)
    await backend.save_task_result(instance_id, task, b"first-result")
    row = await pg.fetchrow(
        "SELECT data, history_version, data_hash FROM sayiir_workflow_snapshots WHERE instance_id = $1", instance_id
    )
    assert row["data"] is None
    assert row["history_version"] == 2
    history = await pg.fetch(
        "SELECT version, data, data_hash FROM sayiir_workflow_snapshot_history WHERE instance_id = $1 ORDER BY version",
        instance_id,
    )
    assert [h["version"] for h in history] == [1, 2]
    for h in history:
        assert h["data_hash"] == hashlib.sha256(h["data"]).digest()
    assert row["data_hash"] == history[-1]["data_hash"]
    loaded = await backend.load_snapshot(instance_id)
    result = loaded.get_task_result(task)
    assert result is not None and result.output == b"first-result"


async def test_stored_blob_carries_v1_envelope_and_headerless_is_rejected(
    backend: GrpcBackend, instance_id: str, pg: asyncpg.Connection
) -> None:
    snapshot = WorkflowSnapshot.new(instance_id, "hash-env")
    snapshot.update_position(AtTask(TaskId.sha256("task-env")))
    await backend.save_snapshot(snapshot)
    data = await pg.fetchval(
        "SELECT data FROM sayiir_workflow_snapshot_history WHERE instance_id = $1 ORDER BY version DESC LIMIT 1",
        instance_id,
    )
    assert data[:6] == b"SYRS\x01\x01"
    assert data[6:7] == b"{"
    await pg.execute(
        "UPDATE sayiir_workflow_snapshot_history SET data = substring(data FROM 7) WHERE instance_id = $1",
        instance_id,
    )
    with pytest.raises(SerializationError) as info:
        await backend.load_snapshot(instance_id)
    assert info.value.code == grpc.StatusCode.DATA_LOSS
    assert "pre-1.0" in info.value.message and "drain" in info.value.message


async def test_save_task_result_dual_writes_output_column(
    backend: GrpcBackend, instance_id: str, pg: asyncpg.Connection
) -> None:
    task = TaskId.sha256("task-dw")
    snapshot = WorkflowSnapshot.new(instance_id, "hash-dw")
    snapshot.update_position(AtTask(task))
    await backend.save_snapshot(snapshot)
    payload = b"\x00\x01\x02hello"
    await backend.save_task_result(instance_id, task, payload)
    stored = await pg.fetchval(
        "SELECT output FROM sayiir_workflow_tasks WHERE instance_id = $1 AND task_id = $2", instance_id, task.as_bytes()
    )
    assert stored == payload
    loaded = await backend.load_snapshot(instance_id)
    assert loaded.get_task_result(task).output == payload  # type: ignore[union-attr]
    # ... and the blob itself carries the task with its output stripped.
    blob = await pg.fetchval(
        "SELECT h.data FROM sayiir_workflow_snapshot_history h JOIN sayiir_workflow_snapshots s "
        "ON s.instance_id = h.instance_id AND s.history_version = h.version WHERE s.instance_id = $1",
        instance_id,
    )
    assert f'"{task.to_hex()}":{{"task_id":"{task.to_hex()}","output":[]}}'.encode() in blob


# -- beyond the original ------------------------------------------------------


async def test_concurrent_save_task_result_loses_no_output(backend: GrpcBackend, instance_id: str) -> None:
    snapshot = WorkflowSnapshot.new(instance_id, "fanout")
    snapshot.update_position(AtTask(TaskId.sha256("join")))
    await backend.save_snapshot(snapshot)
    tasks = [TaskId.sha256(f"branch-{i}") for i in range(20)]
    await asyncio.gather(*(backend.save_task_result(instance_id, t, f"out-{i}".encode()) for i, t in enumerate(tasks)))
    loaded = await backend.load_snapshot(instance_id)
    assert loaded.completed_task_count() == 20
    for i, t in enumerate(tasks):
        assert loaded.get_task_result(t).output == f"out-{i}".encode()  # type: ignore[union-attr]


async def test_save_snapshot_writes_every_completed_output_and_observability_columns(
    backend: GrpcBackend, instance_id: str, pg: asyncpg.Connection
) -> None:
    t1, t2, t3 = (TaskId.sha256(n) for n in ("a", "b", "c"))
    snapshot = WorkflowSnapshot.new(instance_id, "def")
    snapshot.trace_parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    snapshot.task_priority = 1
    snapshot.task_tags = ["gpu", "eu"]
    snapshot.update_position(AtTask(t1))
    await backend.save_snapshot(snapshot)
    snapshot.mark_task_completed(t1, b"one")
    snapshot.mark_task_completed(t2, b"two")
    snapshot.update_position(AtTask(t3))
    await backend.save_snapshot(snapshot)
    row = await pg.fetchrow("SELECT * FROM sayiir_workflow_snapshots WHERE instance_id = $1", instance_id)
    assert row["status"] == "InProgress"
    assert row["definition_hash"] == DefinitionHash.sha256("def").as_bytes()
    assert row["current_task_id"] == t3.as_bytes()
    assert row["completed_task_count"] == 2
    assert row["position_kind"] == "AtTask"
    assert row["task_priority"] == 1
    assert row["task_tags"] == ["gpu", "eu"]
    assert row["trace_parent"] == snapshot.trace_parent
    assert row["completed_at"] is None and row["error"] is None
    tasks = {
        bytes(r["task_id"]): (r["status"], r["output"])
        for r in await pg.fetch(
            "SELECT task_id, status, output FROM sayiir_workflow_tasks WHERE instance_id = $1", instance_id
        )
    }
    assert tasks == {
        t1.as_bytes(): ("completed", b"one"),
        t2.as_bytes(): ("completed", b"two"),
        t3.as_bytes(): ("active", None),
    }
    loaded = await backend.load_snapshot(instance_id)
    assert loaded == snapshot

    snapshot.mark_failed("kaput")
    await backend.save_snapshot(snapshot)
    row = await pg.fetchrow("SELECT * FROM sayiir_workflow_snapshots WHERE instance_id = $1", instance_id)
    assert (row["status"], row["error"], row["position_kind"], row["current_task_id"]) == (
        "Failed",
        "kaput",
        None,
        None,
    )
    assert row["completed_at"] is not None
    status, error = await pg.fetchrow(
        "SELECT status, error FROM sayiir_workflow_tasks WHERE instance_id = $1 AND task_id = $2",
        instance_id,
        t3.as_bytes(),
    )
    assert (status, error) == ("failed", "kaput")


async def test_delay_wake_at_column(backend: GrpcBackend, instance_id: str, pg: asyncpg.Connection) -> None:
    snapshot = WorkflowSnapshot.new(instance_id, "def")
    wake = Timestamp(1_900_000_000, 123_456_000)
    snapshot.update_position(AtDelay(TaskId.sha256("d"), Timestamp(1_800_000_000), wake, TaskId.sha256("next")))
    await backend.save_snapshot(snapshot)
    row = await pg.fetchrow(
        "SELECT position_kind, delay_wake_at FROM sayiir_workflow_snapshots WHERE instance_id = $1", instance_id
    )
    assert row["position_kind"] == "AtDelay"
    assert row["delay_wake_at"] == wake.to_datetime()


async def test_empty_output_never_replaces_a_stored_one(backend: GrpcBackend, instance_id: str) -> None:
    task = TaskId.sha256("t")
    snapshot = WorkflowSnapshot.new(instance_id, "def")
    snapshot.update_position(AtTask(task))
    await backend.save_snapshot(snapshot)
    await backend.save_task_result(instance_id, task, b"real output")
    stale = await backend.load_snapshot(instance_id)
    stale.get_task_result(task).output = b""  # type: ignore[union-attr]
    await backend.save_snapshot(stale)
    assert (await backend.load_snapshot(instance_id)).get_task_result(task).output == b"real output"  # type: ignore[union-attr]


async def test_delete_removes_the_instance_from_every_child_table(
    backend: GrpcBackend, instance_id: str, pg: asyncpg.Connection
) -> None:
    task = TaskId.sha256("t")
    snapshot = WorkflowSnapshot.new(instance_id, "def")
    snapshot.update_position(AtTask(task))
    await backend.save_snapshot(snapshot)
    await backend.save_task_result(instance_id, task, b"x")
    await pg.execute("INSERT INTO sayiir_workflow_signals (instance_id, kind) VALUES ($1, 'Cancel')", instance_id)
    await pg.execute(
        "INSERT INTO sayiir_workflow_claims (instance_id, task_id, worker_id) VALUES ($1, $2, 'w')",
        instance_id,
        task.as_bytes(),
    )
    await pg.execute(
        "INSERT INTO sayiir_workflow_events (instance_id, signal_name, payload) VALUES ($1, 'go', '')", instance_id
    )
    await backend.delete_snapshot(instance_id)
    for table in (*WORKFLOW_CHILD_TABLES, "sayiir_workflow_snapshots"):
        assert await pg.fetchval(f"SELECT count(*) FROM {table} WHERE instance_id = $1", instance_id) == 0, table
    # Every child table of the schema is in the list.
    referencing = {
        r["table_name"]
        for r in await pg.fetch(
            "SELECT table_name FROM information_schema.columns WHERE column_name = 'instance_id' "
            "AND table_name LIKE 'sayiir_workflow_%' "
            "AND table_name NOT IN ('sayiir_workflow_snapshots', 'sayiir_workflow_snapshots_hex')"
        )
    }
    assert referencing == set(WORKFLOW_CHILD_TABLES)


async def test_sql_metacharacters_in_ids_are_stored_verbatim(backend: GrpcBackend) -> None:
    weird = "x'; DROP TABLE sayiir_workflow_snapshots; -- \"%_\\ ü 🚀"
    await backend.save_snapshot(WorkflowSnapshot.new(weird, "h"))
    assert (await backend.load_snapshot(weird)).instance_id == weird
    await backend.delete_snapshot(weird)


# -- bad input: INVALID_ARGUMENT, and nothing written -------------------------


@pytest.fixture
async def raw_stub(target: str) -> rpc_grpc.SnapshotStoreStub:
    channel = grpc.aio.insecure_channel(target)
    yield rpc_grpc.SnapshotStoreStub(channel)
    await channel.close()


async def _expect_invalid(call: Awaitable[object], field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert field in (info.value.details() or "")


async def test_empty_instance_id_is_invalid(raw_stub: rpc_grpc.SnapshotStoreStub, pg: asyncpg.Connection) -> None:
    message = snapshot_to_proto(WorkflowSnapshot.new("placeholder", "h"))
    message.instance_id = ""
    await _expect_invalid(raw_stub.SaveSnapshot(rpc_pb.SaveSnapshotRequest(snapshot=message)), "snapshot.instance_id")
    await _expect_invalid(raw_stub.LoadSnapshot(rpc_pb.LoadSnapshotRequest(instance_id="")), "instance_id")
    await _expect_invalid(raw_stub.DeleteSnapshot(rpc_pb.DeleteSnapshotRequest(instance_id="")), "instance_id")
    assert await pg.fetchval("SELECT count(*) FROM sayiir_workflow_snapshots WHERE instance_id = ''") == 0


async def test_short_task_id_is_invalid_and_writes_nothing(
    raw_stub: rpc_grpc.SnapshotStoreStub, instance_id: str, pg: asyncpg.Connection
) -> None:
    snapshot = WorkflowSnapshot.new(instance_id, "h")
    snapshot.update_position(AtTask(TaskId.sha256("t")))
    message = snapshot_to_proto(snapshot)
    message.state.in_progress.position.at_task.task_id = b"\x01" * 31
    await _expect_invalid(
        raw_stub.SaveSnapshot(rpc_pb.SaveSnapshotRequest(snapshot=message)),
        "snapshot.state.in_progress.position.at_task.task_id",
    )
    await _expect_invalid(
        raw_stub.SaveTaskResult(rpc_pb.SaveTaskResultRequest(instance_id=instance_id, task_id=b"\x01" * 31)), "task_id"
    )
    message.definition_hash = b"short"
    await _expect_invalid(
        raw_stub.SaveSnapshot(rpc_pb.SaveSnapshotRequest(snapshot=message)), "snapshot.definition_hash"
    )
    assert await pg.fetchval("SELECT count(*) FROM sayiir_workflow_snapshots WHERE instance_id = $1", instance_id) == 0
    assert (
        await pg.fetchval("SELECT count(*) FROM sayiir_workflow_snapshot_history WHERE instance_id = $1", instance_id)
        == 0
    )


async def test_unknown_enum_value_is_invalid(raw_stub: rpc_grpc.SnapshotStoreStub) -> None:
    await _expect_invalid(raw_stub.ListSnapshots(rpc_pb.ListSnapshotsRequest(statuses=[42])), "statuses[0]")


async def test_missing_state_and_position_are_invalid(raw_stub: rpc_grpc.SnapshotStoreStub, instance_id: str) -> None:
    message = pb.WorkflowSnapshot(instance_id=instance_id, definition_hash=b"\x00" * 32)
    await _expect_invalid(raw_stub.SaveSnapshot(rpc_pb.SaveSnapshotRequest(snapshot=message)), "snapshot.state")
    message.state.in_progress.SetInParent()
    await _expect_invalid(
        raw_stub.SaveSnapshot(rpc_pb.SaveSnapshotRequest(snapshot=message)), "snapshot.state.in_progress.position"
    )
    await _expect_invalid(raw_stub.SaveSnapshot(rpc_pb.SaveSnapshotRequest()), "snapshot")


async def test_nul_characters_and_bad_priority_are_invalid(
    raw_stub: rpc_grpc.SnapshotStoreStub, instance_id: str
) -> None:
    message = snapshot_to_proto(WorkflowSnapshot.new(instance_id, "h"))
    message.instance_id = "with\x00nul"
    await _expect_invalid(raw_stub.SaveSnapshot(rpc_pb.SaveSnapshotRequest(snapshot=message)), "snapshot.instance_id")
    message = snapshot_to_proto(WorkflowSnapshot.new(instance_id, "h"))
    message.task_priority = 9
    await _expect_invalid(raw_stub.SaveSnapshot(rpc_pb.SaveSnapshotRequest(snapshot=message)), "snapshot.task_priority")
    message = snapshot_to_proto(WorkflowSnapshot.new(instance_id, "h"))
    message.task_tags.append("")
    await _expect_invalid(raw_stub.SaveSnapshot(rpc_pb.SaveSnapshotRequest(snapshot=message)), "snapshot.task_tags[0]")
    message = snapshot_to_proto(WorkflowSnapshot.new(instance_id, "h"))
    dup = message.state.in_progress.completed_tasks
    dup.add(task_id=b"\x07" * 32, output=b"a")
    dup.add(task_id=b"\x07" * 32, output=b"b")
    await _expect_invalid(
        raw_stub.SaveSnapshot(rpc_pb.SaveSnapshotRequest(snapshot=message)), "completed_tasks[1].task_id"
    )


@pytest.mark.parametrize(
    ("seconds", "nanos"),
    [(-62_135_596_800, 0), (-62_135_596_800, 999), (253_402_300_799, 999_999_000), (253_402_300_799, 999_999_999)],
)
async def test_wake_at_that_would_be_stored_as_infinity_is_refused(
    backend: GrpcBackend, instance_id: str, seconds: int, nanos: int
) -> None:
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "h", b"1")
    snapshot.update_position(AtDelay(TaskId.sha256("d"), Timestamp(1_800_000_000), Timestamp(seconds, nanos)))
    with pytest.raises(InvalidArgumentError) as refused:
        await backend.save_snapshot(snapshot)
    assert refused.value.metadata["field"].endswith("wake_at")


async def test_wake_at_just_inside_the_range_reads_back_and_checks_green(
    backend: GrpcBackend, instance_id: str, database_url: str
) -> None:
    from sayiir_grpc.invariants import check_invariants

    for wake in (Timestamp(-62_135_596_800, 1_000), Timestamp(253_402_300_799, 999_998_999)):
        snapshot = WorkflowSnapshot.with_initial_input(instance_id, "h", b"1")
        snapshot.update_position(AtDelay(TaskId.sha256("d"), Timestamp(1_800_000_000), wake))
        await backend.save_snapshot(snapshot)
        conn = await asyncpg.connect(database_url)
        try:
            stored = await conn.fetchval(
                "SELECT delay_wake_at::text FROM sayiir_workflow_snapshots WHERE instance_id = $1", instance_id
            )
            assert "infinity" not in stored
            violations = [v for v in await check_invariants(conn) if instance_id in str(v)]
        finally:
            await conn.close()
        assert violations == []


async def test_unspecified_status_means_any_and_the_filter_is_capped(
    raw_stub: rpc_grpc.SnapshotStoreStub, backend: GrpcBackend, instance_id: str
) -> None:
    await backend.save_snapshot(WorkflowSnapshot.with_initial_input(instance_id, "h", b"1"))
    done = WorkflowSnapshot.with_initial_input(instance_id + "-done", "h", b"1")
    done.mark_completed(b'"x"')
    await backend.save_snapshot(done)
    after = instance_id[:-1]
    request = rpc_pb.ListSnapshotsRequest(
        after_instance_id=after, page_size=10, statuses=[pb.SNAPSHOT_STATUS_UNSPECIFIED]
    )
    listed = (await raw_stub.ListSnapshots(request)).instance_ids
    assert instance_id in listed and instance_id + "-done" in listed
    only_done = rpc_pb.ListSnapshotsRequest(
        after_instance_id=after, page_size=10, statuses=[pb.SNAPSHOT_STATUS_COMPLETED]
    )
    assert instance_id not in (await raw_stub.ListSnapshots(only_done)).instance_ids
    seven = rpc_pb.ListSnapshotsRequest(statuses=[pb.SNAPSHOT_STATUS_COMPLETED] * 7)
    await _expect_invalid(raw_stub.ListSnapshots(seven), "statuses")
