"""Reading and writing snapshot blobs, shared by every store that mutates one.

`sayiir_workflow_snapshot_history` is the canonical blob store; the snapshot
row only points at a version. A read-modify-write (save_task_result, the
signal composites) locks the snapshot row, reads the blob and the task
outputs, mutates, then appends a new history version.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import asyncpg

from sayiir_common.codec import SnapshotCodec, wakeup_hint_payload
from sayiir_common.ids import TaskId
from sayiir_common.model import WorkflowSnapshot
from sayiir_grpc import limits, offload
from sayiir_grpc.stores import TASK_READY_CHANNEL


def stored_outputs(instance: str) -> str:
    """Select-list columns `task_ids` and `outputs`: the stored outputs of `instance`.

    Two arrays rather than one of records, decoded without a composite type;
    both sort by task_id, so position i of one belongs to position i of the
    other (see `hydrate`). An instance without outputs gets two empty arrays.
    """
    completed = f"t.instance_id = {instance} AND t.status = 'completed' AND t.output IS NOT NULL"
    return f"""COALESCE((SELECT array_agg(t.task_id ORDER BY t.task_id) FROM sayiir_workflow_tasks t
                 WHERE {completed}), '{{}}') AS task_ids,
       COALESCE((SELECT array_agg(t.output ORDER BY t.task_id) FROM sayiir_workflow_tasks t
                 WHERE {completed}), '{{}}') AS outputs"""


# Lock the snapshot row and read its blob and outputs in one round trip.
#
# Under READ COMMITTED, a statement that had to wait for the row lock sees
# the locked row as the writer it waited for left it (the new
# history_version), but everything else through the snapshot it started
# with: the history row that writer appended is invisible to it. The blob
# then comes back NULL (and the outputs may be stale), and the caller reads
# both again with READ_BLOB_AND_OUTPUTS, a new statement that sees the
# commit; the lock is already held, so that read is final. $2 (optional)
# also locks worker $2's live claim on task $3, for the fenced paths.
LOCK_AND_READ = f"""
WITH s AS (
    SELECT history_version, status, trace_parent, data AS legacy_data
    FROM sayiir_workflow_snapshots
    WHERE instance_id = $1
    FOR UPDATE
),
cl AS (
    SELECT 1 FROM sayiir_workflow_claims
    WHERE instance_id = $1 AND worker_id = $2::text AND task_id = $3::bytea
      AND (expires_at IS NULL OR expires_at > now())
    FOR UPDATE
)
SELECT s.history_version, s.status, s.trace_parent,
       EXISTS (SELECT 1 FROM cl) AS claim_held,
       (SELECT h.data FROM sayiir_workflow_snapshot_history h
        WHERE h.instance_id = $1 AND h.version = s.history_version) AS data,
       s.legacy_data,
       {stored_outputs("$1")}
FROM s
"""

# Statement 2: the blob at the locked version and every stored task output,
# in one round trip. COALESCE(h.data, s.data) reads rows
# written before the engine moved blobs into history.
READ_BLOB_AND_OUTPUTS = f"""
SELECT
    COALESCE(
        (SELECT h.data FROM sayiir_workflow_snapshot_history h
         WHERE h.instance_id = $1 AND h.version = $2),
        (SELECT s.data FROM sayiir_workflow_snapshots s WHERE s.instance_id = $1)
    ) AS data,
    {stored_outputs("$1")}
"""


# The write half of every read-modify-write, run while LOCK_AND_READ's lock
# is held: refresh the row's columns from the mutated snapshot, append the
# next history version, and optionally record one task output ($14, $15),
# close the running task ($16: its new status), wake workers ($17) and
# release the claim of worker $18. One statement, so the row, its history,
# its tasks and its claim never disagree.
#
# $1 instance_id  $2 status  $3 current_task_id  $4 completed count  $5 error
# $6 position_kind  $7 delay_wake_at  $8 task_priority  $9 task_tags
# $10 version  $11 data_hash  $12 is terminal  $13 blob
WRITE_MUTATION = f"""
WITH upd AS (
    UPDATE sayiir_workflow_snapshots
    SET status = $2, current_task_id = $3::bytea, completed_task_count = $4, error = $5,
        position_kind = $6, delay_wake_at = $7, task_priority = $8, task_tags = $9,
        history_version = $10, data_hash = $11,
        completed_at = CASE WHEN $12::bool THEN now() ELSE completed_at END,
        updated_at = now()
    WHERE instance_id = $1
    RETURNING 1
),
hist AS (
    INSERT INTO sayiir_workflow_snapshot_history
        (instance_id, version, status, current_task_id, data, data_hash)
    SELECT $1, $10, $2, $3::bytea, $13, $11 FROM upd
),
task_output AS (
    INSERT INTO sayiir_workflow_tasks (instance_id, task_id, status, completed_at, output)
    SELECT $1, $14::bytea, 'completed', now(), $15::bytea FROM upd WHERE $14::bytea IS NOT NULL
    ON CONFLICT (instance_id, task_id) DO UPDATE SET
        status = 'completed', completed_at = now(), error = NULL, output = EXCLUDED.output
),
task_close AS (
    UPDATE sayiir_workflow_tasks t
    SET status = $16::text, completed_at = now()
    WHERE t.instance_id = $1 AND t.status = 'active' AND $16::text IS NOT NULL
      AND t.task_id IS DISTINCT FROM $14::bytea AND EXISTS (SELECT 1 FROM upd)
),
release AS (
    DELETE FROM sayiir_workflow_claims c
    WHERE c.instance_id = $1 AND c.worker_id = $18::text AND EXISTS (SELECT 1 FROM upd)
)
SELECT CASE WHEN $17::text IS NOT NULL THEN pg_notify('{TASK_READY_CHANNEL}', $17::text) END FROM upd
"""


@dataclass(slots=True)
class LockedSnapshot:
    snapshot: WorkflowSnapshot
    history_version: int
    status: str
    claim_held: bool = False


def blob_hash(blob: bytes) -> bytes:
    return hashlib.sha256(blob).digest()


def hydrate(snapshot: WorkflowSnapshot, task_ids: list[bytes], outputs: list[bytes]) -> None:
    """Put stored outputs back on the blob's (output-stripped) completed tasks."""
    snapshot.hydrate_task_outputs((TaskId(tid), out) for tid, out in zip(task_ids, outputs, strict=True))


async def lock_for_mutation(
    conn: asyncpg.Connection,
    codec: SnapshotCodec,
    instance_id: str,
    claim: tuple[str, TaskId] | None = None,
) -> LockedSnapshot | None:
    """Lock the instance row (and `claim`'s row) and return its hydrated snapshot.

    None when the instance does not exist. With `claim` = (worker, task),
    `claim_held` says whether that worker holds the live claim, now locked.
    """
    worker, task = (None, None) if claim is None else (claim[0], claim[1].as_bytes())
    row = await conn.fetchrow(LOCK_AND_READ, instance_id, worker, task)
    if row is None:
        return None
    data, task_ids, outputs = row["data"], row["task_ids"], row["outputs"]
    if data is None:
        # We waited for a writer (see LOCK_AND_READ), or the row predates
        # blobs in history: read again, under the lock we now hold.
        again = await conn.fetchrow(READ_BLOB_AND_OUTPUTS, instance_id, row["history_version"])
        data, task_ids, outputs = again["data"], again["task_ids"], again["outputs"]
    if data is None:
        return None
    snapshot = await offload.decode(codec, data)
    snapshot.trace_parent = row["trace_parent"]
    hydrate(snapshot, task_ids, outputs)
    return LockedSnapshot(snapshot, row["history_version"], row["status"], bool(row["claim_held"]))


def encode_stripped(codec: SnapshotCodec, snapshot: WorkflowSnapshot) -> tuple[bytes, list[tuple[TaskId, bytes]]]:
    """The blob without task outputs, and the outputs taken out of it.

    The snapshot is left as it was (outputs restored), so callers may keep
    using it after encoding.
    """
    outputs = snapshot.take_task_outputs()
    try:
        blob = codec.encode(snapshot)
    finally:
        snapshot.hydrate_task_outputs(outputs)
    return blob, outputs


async def encode_stripped_off_loop(
    codec: SnapshotCodec, snapshot: WorkflowSnapshot
) -> tuple[bytes, list[tuple[TaskId, bytes]]]:
    """`encode_stripped`, with a large blob encoded in the worker process."""
    outputs = snapshot.take_task_outputs()
    try:
        blob = await offload.encode(codec, snapshot)
    finally:
        snapshot.hydrate_task_outputs(outputs)
    return blob, outputs


async def write_mutation(
    conn: asyncpg.Connection,
    codec: SnapshotCodec,
    locked: LockedSnapshot,
    *,
    task_output: tuple[TaskId, bytes] | None = None,
    close_active_tasks_as: str | None = None,
    notify: bool = True,
    release_claim_of: str | None = None,
) -> int:
    """Persist `locked.snapshot` as the next history version; returns it.

    `notify` sends the wakeup hint when the snapshot now waits at a task;
    pass False when the hint would name a task that is already done.
    """
    snapshot = locked.snapshot
    limits.check_snapshot_fits(snapshot)
    blob, _ = await encode_stripped_off_loop(codec, snapshot)
    current = snapshot.current_task_id()
    wake_at = snapshot.delay_wake_at()
    version = locked.history_version + 1
    await conn.execute(
        WRITE_MUTATION,
        snapshot.instance_id,
        snapshot.state.kind,
        None if current is None else current.as_bytes(),
        snapshot.completed_task_count(),
        snapshot.error_message(),
        snapshot.position_kind(),
        None if wake_at is None else wake_at.to_datetime(),
        snapshot.current_task_priority(),
        snapshot.task_tags,
        version,
        blob_hash(blob),
        snapshot.state.is_terminal(),
        blob,
        None if task_output is None else task_output[0].as_bytes(),
        None if task_output is None else task_output[1],
        close_active_tasks_as,
        wakeup_hint_payload(snapshot) if notify else None,
        release_claim_of,
    )
    locked.history_version = version
    locked.status = snapshot.state.kind
    return version
