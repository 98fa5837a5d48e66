"""Dispatch reads only runnable rows, however many workflows wait.

A database with thousands of workflows parked at a signal, at a delay due
later and finished, plus a handful ready at a task: every dispatch statement,
run under EXPLAIN ANALYZE, reads no more than a few dozen rows of the
snapshots table. Without migration 0003's partial indexes (or with a query
shape that filters parked rows one by one) the scans read every waiting row.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg
import pytest

from sayiir_client import AtDelay, AtSignal, AtTask, GrpcBackend, TaskId, Timestamp, WorkflowSnapshot
from sayiir_grpc.stores import dispatch

WAITING = 6_000
READY = 5
FIRST, SECOND, FINAL = TaskId.sha256("first"), TaskId.sha256("second"), TaskId.sha256("final")
# Rows a scan may read: the LIMIT of each arm plus the ready rows, with slack.
ROW_BUDGET = 60

CLONE = """
INSERT INTO sayiir_workflow_snapshots
    (instance_id, status, definition_hash, current_task_id, position_kind, delay_wake_at, task_priority,
     history_version, updated_at)
SELECT $1 || g, t.status, t.definition_hash, t.current_task_id, t.position_kind,
       CASE WHEN t.delay_wake_at IS NOT NULL THEN now() + interval '1 day' END, t.task_priority,
       t.history_version, now() - interval '1 hour'
FROM sayiir_workflow_snapshots t, generate_series(1, $2::int) g
WHERE t.instance_id = $3
"""


def _snapshot(instance_id: str) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "scale", b"0")
    snapshot.update_position(AtTask(FIRST))
    return snapshot


async def _fill(backend: GrpcBackend, pg: asyncpg.Connection) -> None:
    parked = _snapshot("tpl-signal")
    parked.update_position(AtSignal(SECOND, "approval", None, FINAL))
    later = _snapshot("tpl-delay")
    wake = Timestamp.from_unix_nanos(Timestamp.now().unix_nanos + 86_400 * 10**9)
    later.update_position(AtDelay(SECOND, Timestamp.now(), wake, FINAL))
    done = _snapshot("tpl-done")
    done.mark_completed(b"1")
    for snapshot in (parked, later, done):
        await backend.save_snapshot(snapshot)
    await pg.execute(CLONE, "signal-", WAITING, "tpl-signal")
    await pg.execute(CLONE, "delay-", WAITING // 5, "tpl-delay")
    await pg.execute(CLONE, "done-", WAITING, "tpl-done")
    for i in range(READY):
        await backend.save_snapshot(_snapshot(f"ready-{i}"))
    await pg.execute("ANALYZE sayiir_workflow_snapshots")


def _snapshot_rows_read(plan: dict[str, Any]) -> int:
    """Rows the plan's scans of the snapshots table produced or filtered away."""
    total = 0
    if plan.get("Relation Name") == "sayiir_workflow_snapshots":
        loops = plan.get("Actual Loops", 1)
        total += (plan.get("Actual Rows", 0) + plan.get("Rows Removed by Filter", 0)) * loops
    for child in plan.get("Plans", []):
        total += _snapshot_rows_read(child)
    return total


async def _rows_read(pg: asyncpg.Connection, sql: str, *args: object) -> int:
    # Rolled back: EXPLAIN ANALYZE runs the statement (the fast path inserts claims).
    tx = pg.transaction()
    await tx.start()
    try:
        raw = await pg.fetchval(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", *args)
    finally:
        await tx.rollback()
    return _snapshot_rows_read(json.loads(raw)[0]["Plan"])


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("FIND_CANDIDATES", (10, None)),
        ("FIND_CANDIDATES", (10, ["gpu"])),
        ("CLAIM_AVAILABLE", (10, None, "w-scale", 30.0, 300.0)),
        ("DUE_DELAYS", (10,)),
        ("IDLE_SIGNALLED", (10,)),
    ],
)
async def test_dispatch_statements_read_only_runnable_rows(
    clean_backend: GrpcBackend, clean_pg: asyncpg.Connection, name: str, args: tuple[object, ...]
) -> None:
    await _fill(clean_backend, clean_pg)
    rows = await _rows_read(clean_pg, getattr(dispatch, name), *args)
    assert rows <= ROW_BUDGET, f"{name} read {rows} snapshot rows with {WAITING} workflows waiting"
