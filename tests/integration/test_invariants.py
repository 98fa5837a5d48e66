"""The invariant checker (`sayiir_grpc.invariants`, `sayiir-grpc check`).

A healthy database built through the service is green, including the cases
that are legal though they look odd (an empty output with no task row, a
live claim on a finished workflow, events for an instance that does not
exist yet). Then each invariant is broken with direct SQL, one per test, and
the checker must report exactly that invariant, on exactly that instance.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from datetime import timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sayiir_client import AtDelay, AtTask, GrpcBackend, SignalKind, TaskId, Timestamp, WorkflowSnapshot
from sayiir_common.model import InProgress, TaskResult
from sayiir_grpc.invariants import Violation, check_invariants
from strategies.snapshots import outputs, snapshots, task_ids

A, B, C = (TaskId.sha256(name) for name in ("task-a", "task-b", "task-c"))


async def running(backend: GrpcBackend, instance_id: str) -> WorkflowSnapshot:
    """A workflow past task A (output stored), now at B; three history versions."""
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "def-1", b'"in"')
    snapshot.update_position(AtTask(A))
    snapshot.task_priority = 1
    snapshot.task_tags = ["gpu"]
    await backend.save_snapshot(snapshot)
    await backend.save_task_result(instance_id, A, b'"a"')
    snapshot = await backend.load_snapshot(instance_id)
    snapshot.update_position(AtTask(B))
    await backend.save_snapshot(snapshot)
    return snapshot


async def build_healthy(backend: GrpcBackend) -> None:
    await running(backend, "running")

    await running(backend, "paused")
    await backend.store_signal("paused", SignalKind.Pause)
    assert await backend.check_and_pause("paused")

    await running(backend, "cancelled")
    await backend.store_signal("cancelled", SignalKind.Cancel)
    assert await backend.check_and_cancel("cancelled", B)

    # Completed through a fenced save; the worker never released its claim.
    snapshot = await running(backend, "completed")
    assert await backend.claim_task("completed", B, "worker-1", timedelta(minutes=5)) is not None
    snapshot.mark_completed(b'"done"')
    assert await backend.save_snapshot_fenced(snapshot, B, "worker-1")

    snapshot = await running(backend, "failed")
    snapshot.mark_failed("boom")
    await backend.save_snapshot(snapshot)

    delayed = WorkflowSnapshot.new("delayed", "def-1")
    now = Timestamp.now()
    delayed.update_position(AtDelay(C, now, now + timedelta(hours=1), A))
    await backend.save_snapshot(delayed)

    # Task A returned nothing and was never the last completed task: no row.
    empty = WorkflowSnapshot.new("empty-output", "def-1")
    assert isinstance(empty.state, InProgress)
    empty.state.completed_tasks = {A: TaskResult(A, b""), B: TaskResult(B, b'"b"')}
    empty.state.last_completed_task_id = B
    empty.update_position(AtTask(C))
    await backend.save_snapshot(empty)

    # An event buffered before its instance exists.
    assert not await backend.send_event("not-yet", "go", b"payload")


@pytest.fixture
async def healthy(clean_backend: GrpcBackend, clean_pg: asyncpg.Connection) -> asyncpg.Connection:
    await build_healthy(clean_backend)
    assert await check_invariants(clean_pg) == []
    return clean_pg


def names(violations: list[Violation]) -> set[tuple[str, str]]:
    return {(v.invariant, v.instance_id) for v in violations}


CURRENT = "(SELECT history_version FROM sayiir_workflow_snapshots WHERE instance_id = $1)"
BREAKS: dict[str, tuple[str, list[str], set[str]]] = {
    # name: (instance, statements with $1 = instance, expected invariants)
    "history row missing": (
        "running",
        [f"DELETE FROM sayiir_workflow_snapshot_history WHERE instance_id = $1 AND version = {CURRENT}"],
        {"history-missing"},
    ),
    "history ahead of the pointer": (
        "running",
        [
            "INSERT INTO sayiir_workflow_snapshot_history (instance_id, version, status, current_task_id, data, "
            "data_hash) SELECT instance_id, version + 1, status, current_task_id, data, data_hash "
            f"FROM sayiir_workflow_snapshot_history WHERE instance_id = $1 AND version = {CURRENT}"
        ],
        {"history-ahead"},
    ),
    "row hash differs from history": (
        "running",
        ["UPDATE sayiir_workflow_snapshots SET data_hash = sha256('x') WHERE instance_id = $1"],
        {"data-hash-mismatch"},
    ),
    "current blob altered under its hash": (
        "running",
        [
            "UPDATE sayiir_workflow_snapshot_history SET data = data || ' '::bytea "
            f"WHERE instance_id = $1 AND version = {CURRENT}"
        ],
        {"data-hash-mismatch"},
    ),
    "older history row hash wrong": (
        "running",
        ["UPDATE sayiir_workflow_snapshot_history SET data_hash = sha256('x') WHERE instance_id = $1 AND version = 1"],
        {"history-hash-mismatch"},
    ),
    "history row status differs": (
        "running",
        [
            "UPDATE sayiir_workflow_snapshot_history SET status = 'Paused' "
            f"WHERE instance_id = $1 AND version = {CURRENT}"
        ],
        {"history-row-mismatch.status"},
    ),
    "blob does not decode": (
        "running",
        [
            "UPDATE sayiir_workflow_snapshot_history SET data = 'garbage', data_hash = sha256('garbage') "
            f"WHERE instance_id = $1 AND version = {CURRENT}",
            "UPDATE sayiir_workflow_snapshots SET data_hash = sha256('garbage') WHERE instance_id = $1",
        ],
        {"blob-undecodable"},
    ),
    "status column differs from the blob": (
        "running",
        [
            "UPDATE sayiir_workflow_snapshots SET status = 'Paused' WHERE instance_id = $1",
            "UPDATE sayiir_workflow_snapshot_history SET status = 'Paused' "
            f"WHERE instance_id = $1 AND version = {CURRENT}",
        ],
        {"status-mismatch"},
    ),
    "terminal status on a running blob": (
        "running",
        [
            "UPDATE sayiir_workflow_snapshots SET status = 'Completed', completed_at = now() WHERE instance_id = $1",
            f"UPDATE sayiir_workflow_snapshot_history SET status = 'Completed' "
            f"WHERE instance_id = $1 AND version = {CURRENT}",
        ],
        {"status-mismatch", "column-mismatch.completed_at"},
    ),
    "current task column differs": (
        "running",
        [
            "UPDATE sayiir_workflow_snapshots SET current_task_id = sha256('other') WHERE instance_id = $1",
            "UPDATE sayiir_workflow_snapshot_history SET current_task_id = sha256('other') "
            f"WHERE instance_id = $1 AND version = {CURRENT}",
        ],
        {"column-mismatch.current_task_id"},
    ),
    "current task only in the row": (
        "running",
        ["UPDATE sayiir_workflow_snapshots SET current_task_id = sha256('other') WHERE instance_id = $1"],
        {"column-mismatch.current_task_id", "history-row-mismatch.current_task_id"},
    ),
    "paused row with a current task": (
        "paused",
        [
            "UPDATE sayiir_workflow_snapshots SET current_task_id = sha256('task-b') WHERE instance_id = $1",
            "UPDATE sayiir_workflow_snapshot_history SET current_task_id = sha256('task-b') "
            f"WHERE instance_id = $1 AND version = {CURRENT}",
        ],
        {"column-mismatch.current_task_id"},
    ),
    "paused row lost its position kind": (
        "paused",
        ["UPDATE sayiir_workflow_snapshots SET position_kind = NULL WHERE instance_id = $1"],
        {"column-mismatch.position_kind"},
    ),
    "terminal row with a position kind": (
        "completed",
        ["UPDATE sayiir_workflow_snapshots SET position_kind = 'AtTask' WHERE instance_id = $1"],
        {"column-mismatch.position_kind"},
    ),
    "position kind differs": (
        "running",
        ["UPDATE sayiir_workflow_snapshots SET position_kind = 'AtDelay' WHERE instance_id = $1"],
        {"column-mismatch.position_kind"},
    ),
    "completed count differs": (
        "running",
        ["UPDATE sayiir_workflow_snapshots SET completed_task_count = completed_task_count + 1 WHERE instance_id = $1"],
        {"column-mismatch.completed_task_count"},
    ),
    "cancelled row lost its completed count": (
        "cancelled",
        ["UPDATE sayiir_workflow_snapshots SET completed_task_count = 0 WHERE instance_id = $1"],
        {"column-mismatch.completed_task_count"},
    ),
    "definition hash differs": (
        "running",
        ["UPDATE sayiir_workflow_snapshots SET definition_hash = sha256('def-2') WHERE instance_id = $1"],
        {"column-mismatch.definition_hash"},
    ),
    "error text differs": (
        "failed",
        ["UPDATE sayiir_workflow_snapshots SET error = 'other' WHERE instance_id = $1"],
        {"column-mismatch.error"},
    ),
    "delay wake time differs": (
        "delayed",
        [
            "UPDATE sayiir_workflow_snapshots SET delay_wake_at = delay_wake_at - interval '1 hour' "
            "WHERE instance_id = $1"
        ],
        {"column-mismatch.delay_wake_at"},
    ),
    "priority and tags differ": (
        "running",
        ["UPDATE sayiir_workflow_snapshots SET task_priority = 5, task_tags = '{cpu}' WHERE instance_id = $1"],
        {"column-mismatch.task_priority", "column-mismatch.task_tags"},
    ),
    "terminal row without completed_at": (
        "completed",
        ["UPDATE sayiir_workflow_snapshots SET completed_at = NULL WHERE instance_id = $1"],
        {"column-mismatch.completed_at"},
    ),
    "task output lost": (
        "running",
        ["UPDATE sayiir_workflow_tasks SET output = NULL WHERE instance_id = $1 AND task_id = sha256('task-a')"],
        {"task-output-missing"},
    ),
    "task row of a completed task gone": (
        "paused",
        ["DELETE FROM sayiir_workflow_tasks WHERE instance_id = $1 AND task_id = sha256('task-a')"],
        {"task-output-missing"},
    ),
    "task row of a cancelled workflow back to active": (
        "cancelled",
        ["UPDATE sayiir_workflow_tasks SET status = 'active' WHERE instance_id = $1 AND task_id = sha256('task-a')"],
        {"task-output-missing"},
    ),
    "snapshot row deleted alone": (
        "completed",
        ["DELETE FROM sayiir_workflow_snapshots WHERE instance_id = $1"],
        {"orphan-history", "orphan-tasks", "orphan-claims"},
    ),
    "signal for a missing instance": (
        "ghost",
        ["INSERT INTO sayiir_workflow_signals (instance_id, kind) VALUES ($1, 'Cancel')"],
        {"orphan-signals"},
    ),
    "claim for a missing instance": (
        "ghost",
        ["INSERT INTO sayiir_workflow_claims (instance_id, task_id, worker_id) VALUES ($1, sha256('x'), 'w')"],
        {"orphan-claims"},
    ),
    "task row for a missing instance": (
        "ghost",
        ["INSERT INTO sayiir_workflow_tasks (instance_id, task_id, status) VALUES ($1, sha256('x'), 'active')"],
        {"orphan-tasks"},
    ),
}


@pytest.mark.parametrize("name", list(BREAKS))
async def test_each_broken_invariant_is_reported_by_name(healthy: asyncpg.Connection, name: str) -> None:
    instance_id, statements, expected = BREAKS[name]
    for statement in statements:
        await healthy.execute(statement, instance_id)
    violations = await check_invariants(healthy)
    assert names(violations) == {(invariant, instance_id) for invariant in expected}, [str(v) for v in violations]


async def test_duplicate_history_version_is_reported(healthy: asyncpg.Connection) -> None:
    # The unique index forbids it; a database that lost the index may not.
    await healthy.execute("DROP INDEX idx_history_instance")
    try:
        await healthy.execute(
            "INSERT INTO sayiir_workflow_snapshot_history (instance_id, version, status, current_task_id, data, "
            "data_hash) SELECT instance_id, version, status, current_task_id, data, data_hash "
            "FROM sayiir_workflow_snapshot_history WHERE instance_id = 'running' AND version = 1"
        )
        assert names(await check_invariants(healthy)) == {("history-duplicate-version", "running")}
    finally:
        await healthy.execute("DELETE FROM sayiir_workflow_snapshot_history WHERE instance_id = 'running'")
        await healthy.execute(
            "CREATE UNIQUE INDEX idx_history_instance ON sayiir_workflow_snapshot_history (instance_id, version)"
        )


async def test_the_check_runs_inside_a_callers_transaction(healthy: asyncpg.Connection) -> None:
    transaction = healthy.transaction()
    await transaction.start()
    try:
        await healthy.execute("UPDATE sayiir_workflow_snapshots SET status = 'Failed' WHERE instance_id = 'delayed'")
        # The checker sees the caller's uncommitted change: it reads in that transaction.
        assert ("status-mismatch", "delayed") in names(await check_invariants(healthy))
    finally:
        await transaction.rollback()
    assert await check_invariants(healthy) == []


async def _check_command(url: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sayiir_grpc", "check", "--database-url", url],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_check_command(healthy: asyncpg.Connection, isolated_service: tuple[object, str]) -> None:
    url = isolated_service[1]
    clean = await _check_command(url)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout == ""
    assert "0 violation(s)" in clean.stderr

    await healthy.execute("UPDATE sayiir_workflow_snapshots SET status = 'Paused' WHERE instance_id = 'running'")
    await healthy.execute("INSERT INTO sayiir_workflow_signals (instance_id, kind) VALUES ('ghost', 'Pause')")
    broken = await _check_command(url)
    assert broken.returncode == 1, broken.stdout + broken.stderr
    lines = broken.stdout.splitlines()
    assert any(line.startswith("status-mismatch 'running'") for line in lines), lines
    assert any(line.startswith("orphan-signals 'ghost'") for line in lines), lines

    unreachable = await _check_command("postgresql://postgres@127.0.0.1:1/none")
    assert unreachable.returncode == 2
    assert "cannot check" in unreachable.stderr


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(snapshots(), st.none() | st.tuples(task_ids, outputs)), min_size=1, max_size=4))
async def test_any_saves_through_the_service_keep_the_checker_green(
    clean_backend: GrpcBackend,
    clean_pg: asyncpg.Connection,
    steps: list[tuple[WorkflowSnapshot, tuple[TaskId, bytes] | None]],
) -> None:
    """Random valid snapshots (any state, empty outputs, odd positions), saved in turn
    to one instance with task results in between, never break an invariant. (The
    fixtures empty the tables once, before the first example.)"""
    instance_id = f"prop-{uuid.uuid4().hex[:8]}"
    for snapshot, result in steps:
        snapshot.instance_id = instance_id
        await clean_backend.save_snapshot(snapshot)
        if result is not None:
            await clean_backend.save_task_result(instance_id, *result)
    violations = await check_invariants(clean_pg)
    assert violations == [], [str(v) for v in violations]
