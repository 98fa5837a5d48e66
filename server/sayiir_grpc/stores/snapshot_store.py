"""SnapshotStore: save, save_task_result, load, delete, list.

SQL first, each statement with the race or the cost it is shaped against;
the async functions below run them.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from sayiir_common.codec import SnapshotCodec
from sayiir_common.errors import NotFoundError
from sayiir_common.ids import TaskId
from sayiir_common.model import TERMINAL_STATUSES, WorkflowSnapshot
from sayiir_grpc import limits, offload
from sayiir_grpc.db import Database
from sayiir_grpc.stores import TASK_READY_CHANNEL, WORKFLOW_CHILD_TABLES, proto_sql
from sayiir_grpc.stores.history import (
    LOCK_SNAPSHOT_ROW,
    encode_stripped_off_loop,
    lock_row,
    recorded_task_result,
    snapshot_of,
    snapshot_row_args,
    stored_outputs,
    wakeup_payload,
    write_row,
)

# One statement, so the snapshot row, its history row, the task rows and the
# wakeup commit or vanish together (an explicit transaction would cost two
# more round trips). Sibling data-modifying CTEs always run; each one past
# `snap` selects FROM snap, so when the upsert's WHERE keeps a terminal row
# (no resurrection: a Completed/Failed/Cancelled snapshot is never
# overwritten) nothing else is written either.
#
# $1 instance_id      $2 status           $3 definition_hash  $4 current_task_id
# $5 completed count  $6 error            $7 position_kind    $8 delay_wake_at
# $9 trace_parent     $10 task_priority   $11 task_tags       $12 data_hash
# $13 is terminal     $14 blob            $15 output task ids $16 outputs
# $17 terminal task status                $18 wakeup hint (NULL: no wakeup)
_SAVE_CTES = f"""
WITH snap AS (
    INSERT INTO sayiir_workflow_snapshots AS s
        (instance_id, status, definition_hash, current_task_id, completed_task_count,
         error, position_kind, delay_wake_at, trace_parent, task_priority, task_tags,
         data_hash, completed_at, updated_at)
    VALUES ($1, $2, $3, $4::bytea, $5, $6, $7, $8, $9, $10, $11, $12,
            CASE WHEN $13::bool THEN now() END, now())
    ON CONFLICT (instance_id) DO UPDATE SET
        status = EXCLUDED.status,
        definition_hash = EXCLUDED.definition_hash,
        current_task_id = EXCLUDED.current_task_id,
        completed_task_count = EXCLUDED.completed_task_count,
        error = EXCLUDED.error,
        position_kind = EXCLUDED.position_kind,
        delay_wake_at = EXCLUDED.delay_wake_at,
        trace_parent = EXCLUDED.trace_parent,
        task_priority = EXCLUDED.task_priority,
        task_tags = EXCLUDED.task_tags,
        data_hash = EXCLUDED.data_hash,
        -- The version counter lives on the locked row: concurrent saves of
        -- one instance queue on the row lock and get consecutive versions.
        history_version = s.history_version + 1,
        completed_at = CASE WHEN $13::bool THEN now() ELSE s.completed_at END,
        updated_at = now()
    WHERE s.status NOT IN ({", ".join(f"'{s}'" for s in sorted(TERMINAL_STATUSES))})
    RETURNING history_version
),
hist AS (
    INSERT INTO sayiir_workflow_snapshot_history
        (instance_id, version, status, current_task_id, data, data_hash)
    SELECT $1, snap.history_version, $2, $4::bytea, $14, $12 FROM snap
),
task_active AS (
    -- The task about to run. Skipped when this same save also carries its
    -- output (a final task keeps the position on itself): two CTEs may not
    -- upsert one row in one statement.
    INSERT INTO sayiir_workflow_tasks AS t (instance_id, task_id, status, started_at)
    SELECT $1, $4::bytea, 'active', now() FROM snap
    WHERE $4::bytea IS NOT NULL AND NOT $13::bool AND NOT ($4::bytea = ANY($15::bytea[]))
    ON CONFLICT (instance_id, task_id) DO UPDATE SET
        status = CASE WHEN t.status = 'completed' THEN t.status ELSE 'active' END,
        started_at = COALESCE(t.started_at, now())
),
task_terminal AS (
    -- A terminal save closes the task that was running (cancelled, failed...).
    UPDATE sayiir_workflow_tasks t
    SET status = $17, completed_at = now(), error = $6
    WHERE t.instance_id = $1 AND t.status = 'active' AND $13::bool
      AND NOT (t.task_id = ANY($15::bytea[]))
      AND EXISTS (SELECT 1 FROM snap)
),
task_output AS (
    -- Outputs live here, not in the blob. An unchanged output is not
    -- rewritten, and an empty one never replaces a stored one (a client
    -- that does not hold an output sends it empty).
    INSERT INTO sayiir_workflow_tasks AS t (instance_id, task_id, status, completed_at, output)
    SELECT $1, o.task_id, 'completed', now(), o.output
    FROM snap, unnest($15::bytea[], $16::bytea[]) AS o(task_id, output)
    ON CONFLICT (instance_id, task_id) DO UPDATE SET
        status = 'completed', completed_at = now(), error = NULL, output = EXCLUDED.output
    WHERE t.output IS NULL OR t.status <> 'completed'
       OR (octet_length(EXCLUDED.output) > 0 AND t.output IS DISTINCT FROM EXCLUDED.output)
)
"""

# pg_notify sits in the outer SELECT: PostgreSQL drops unreferenced
# non-DML CTEs, and NOTIFY is delivered at commit, so no listener hears of
# a task before its row is visible.
SAVE_SNAPSHOT = f"""{_SAVE_CTES}
SELECT history_version,
       CASE WHEN $18::text IS NOT NULL THEN pg_notify('{TASK_READY_CHANNEL}', $18::text) END
FROM snap
"""

# SAVE_SNAPSHOT with the call's idempotency key recorded in the same
# statement: one round trip instead of BEGIN, save, key, COMMIT. $19 the
# key, $20 the request hash. The stored outcome is the SaveSnapshotResponse
# the keyed transaction path stores, built in SQL (`proto_sql`): the
# version is known only once the row is locked. A terminal row that was
# kept is answered with its version (`kept`: the upsert locked it, so it
# is the current one). A key already stored fails the statement (unique
# violation) and nothing is written: the caller takes the transaction path,
# which answers with the stored outcome.
SAVE_SNAPSHOT_KEYED = f"""{_SAVE_CTES},
kept AS (
    SELECT history_version FROM sayiir_workflow_snapshots
    WHERE instance_id = $1 AND NOT EXISTS (SELECT 1 FROM snap)
),
outcome AS (
    SELECT true AS written, history_version FROM snap
    UNION ALL
    SELECT false, history_version FROM kept
),
idempotency_key AS (
    INSERT INTO sayiir_grpc_idempotency_keys (request_key, rpc, request_hash, outcome)
    SELECT $19::text, 'SaveSnapshot', $20::bytea, {proto_sql.save_snapshot_reply("written", "history_version")}
    FROM outcome
)
SELECT written, history_version,
       CASE WHEN written AND $18::text IS NOT NULL THEN pg_notify('{TASK_READY_CHANNEL}', $18::text) END
FROM outcome
"""

# One statement reads a consistent picture: the pointer, the blob it points
# at and the outputs (a save committing meanwhile is either all in or all
# out). COALESCE(h.data, s.data) serves rows from before blobs moved into
# history.
LOAD_SNAPSHOT = f"""
SELECT s.status, s.history_version, s.trace_parent,
       COALESCE(h.data, s.data) AS data,
       {stored_outputs("s.instance_id")}
FROM sayiir_workflow_snapshots s
LEFT JOIN sayiir_workflow_snapshot_history h
       ON h.instance_id = s.instance_id AND h.version = s.history_version
WHERE s.instance_id = $1
"""

# Every child table and the snapshot row in one statement: sibling DML CTEs
# all run and commit together, so no reader sees half an instance. Table
# names come from the WORKFLOW_CHILD_TABLES constant, never from input.
DELETE_SNAPSHOT = (
    "WITH "
    + "".join(
        f"d{i} AS (DELETE FROM {table} WHERE instance_id = $1), " for i, table in enumerate(WORKFLOW_CHILD_TABLES)
    )
    + "del AS (DELETE FROM sayiir_workflow_snapshots WHERE instance_id = $1 RETURNING 1) "
    + "SELECT EXISTS (SELECT 1 FROM del)"
)

# Keyset pagination on the primary key: each page is an index range scan,
# however deep the listing goes.
LIST_SNAPSHOTS = """
SELECT instance_id FROM sayiir_workflow_snapshots
WHERE ($1::text IS NULL OR instance_id > $1::text)
  AND (cardinality($3::text[]) = 0 OR status = ANY($3::text[]))
ORDER BY instance_id
LIMIT $2
"""

TERMINAL_TASK_STATUS = {"Failed": "failed", "Cancelled": "cancelled"}


@dataclass(slots=True)
class LoadedSnapshot:
    snapshot: WorkflowSnapshot
    status: str
    history_version: int


def _outputs_to_write(snapshot: WorkflowSnapshot, taken: list[tuple[TaskId, bytes]]) -> tuple[list[bytes], list[bytes]]:
    ids = [tid.as_bytes() for tid, _ in taken]
    outputs = [out for _, out in taken]
    # A task that legitimately returned nothing still needs its 'completed'
    # row; the empty output is only ever inserted, never overwrites.
    last = snapshot.last_completed_task_id()
    if last is not None and last.as_bytes() not in ids and snapshot.get_task_result(last) is not None:
        ids.append(last.as_bytes())
        outputs.append(b"")
    return ids, outputs


async def save_snapshot_args(codec: SnapshotCodec, snapshot: WorkflowSnapshot) -> list[object]:
    """The bind values of SAVE_SNAPSHOT for one snapshot."""
    limits.check_snapshot_fits(snapshot)
    blob, taken = await encode_stripped_off_loop(codec, snapshot)
    output_ids, outputs = _outputs_to_write(snapshot, taken)
    return [
        *snapshot_row_args(snapshot, blob),
        output_ids,
        outputs,
        TERMINAL_TASK_STATUS.get(snapshot.state.kind, "completed"),
        wakeup_payload(snapshot),
    ]


async def save_snapshot_on(conn: asyncpg.Connection, codec: SnapshotCodec, snapshot: WorkflowSnapshot) -> int | None:
    """Run SAVE_SNAPSHOT on `conn`; the new history version, or None if kept terminal."""
    row = await conn.fetchrow(SAVE_SNAPSHOT, *(await save_snapshot_args(codec, snapshot)))
    return None if row is None else int(row["history_version"])


async def save_snapshot(db: Database, codec: SnapshotCodec, snapshot: WorkflowSnapshot) -> tuple[bool, int]:
    """Save a checkpoint; (written, current history version)."""
    args = await save_snapshot_args(codec, snapshot)

    async def body(conn: asyncpg.Connection) -> tuple[bool, int]:
        row = await conn.fetchrow(SAVE_SNAPSHOT, *args)
        if row is not None:
            return True, int(row["history_version"])
        version = await conn.fetchval(
            "SELECT history_version FROM sayiir_workflow_snapshots WHERE instance_id = $1", snapshot.instance_id
        )
        return False, int(version or 0)

    # A single statement is its own transaction.
    return await db.run("save_snapshot", body, transaction=False)


async def save_snapshot_keyed(
    db: Database, codec: SnapshotCodec, snapshot: WorkflowSnapshot, key: str, request_hash: bytes
) -> tuple[bool, int] | None:
    """Save a checkpoint and record its key in one statement; (written,
    current history version), or None when the statement could not decide
    (the row vanished meanwhile: nothing written, take the transaction path).
    Raises asyncpg.UniqueViolationError when the key is already stored."""
    args = await save_snapshot_args(codec, snapshot)
    async with db.connection() as conn:
        row = await conn.fetchrow(SAVE_SNAPSHOT_KEYED, *args, key, request_hash)
    return None if row is None else (bool(row["written"]), int(row["history_version"]))


async def save_task_result(db: Database, codec: SnapshotCodec, instance_id: str, task_id: TaskId, output: bytes) -> int:
    """Record one task's output under the row lock; the new history version."""

    async def body(conn: asyncpg.Connection) -> int:
        locked = await lock_row(conn, instance_id)
        if locked is None:
            raise NotFoundError(f"workflow instance not found: {instance_id}")
        heavy = len(locked.data) >= offload.OFFLOAD_BYTES
        row_args = await offload.run(
            heavy, recorded_task_result, codec, locked, task_id, output, limits.max_reply_bytes()
        )
        version = locked.history_version + 1
        # No wakeup: the position has not moved yet, so a hint would name a
        # task that is already done.
        await write_row(conn, row_args, version, task_output=(task_id, output))
        return version

    return await db.run("save_task_result", body)


async def load_snapshot(db: Database, codec: SnapshotCodec, instance_id: str) -> LoadedSnapshot:
    row = await db.read("load_snapshot", lambda conn: conn.fetchrow(LOAD_SNAPSHOT, instance_id))
    if row is None or row["data"] is None:
        raise NotFoundError(f"workflow instance not found: {instance_id}")
    return LoadedSnapshot(await snapshot_of(codec, row), row["status"], int(row["history_version"]))


async def delete_snapshot_on(conn: asyncpg.Connection, instance_id: str) -> bool:
    """Delete inside the caller's transaction; False when there was no such instance."""
    # Lock first: a delete that only waited inside DELETE_SNAPSHOT would
    # delete the child rows it saw before a concurrent save committed,
    # leaving that save's history and task rows behind as orphans.
    await conn.execute(LOCK_SNAPSHOT_ROW, instance_id)
    return bool(await conn.fetchval(DELETE_SNAPSHOT, instance_id))


async def delete_snapshot(db: Database, instance_id: str) -> None:
    deleted = await db.run("delete_snapshot", lambda conn: delete_snapshot_on(conn, instance_id))
    if not deleted:
        raise NotFoundError(f"workflow instance not found: {instance_id}")


async def list_snapshots(db: Database, after: str | None, limit: int, statuses: list[str]) -> list[str]:
    rows = await db.read("list_snapshots", lambda conn: conn.fetch(LIST_SNAPSHOTS, after, limit, statuses))
    return [r["instance_id"] for r in rows]
