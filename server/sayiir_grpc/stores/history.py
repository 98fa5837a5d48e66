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

from sayiir_common.codec import SnapshotCodec
from sayiir_common.ids import TaskId
from sayiir_common.model import TaskWakeupHint, WorkflowSnapshot
from sayiir_grpc import limits, offload
from sayiir_grpc.stores import TASK_READY_CHANNEL

# A claim is live until it expires; one without expiry until it is released.
# Every statement that asks "does someone hold this instance?" uses this,
# with the claim row aliased `c`.
LIVE_CLAIM = "(c.expires_at IS NULL OR c.expires_at > now())"


def eligible(row: str) -> str:
    """ "Claimable right now", for the snapshot row aliased `row`: no live claim
    and no pending cancel or pause. One fragment for the dispatch scan, the
    hinted lookup and the fairness check of a continued claim, so they never
    disagree."""
    return f"""
NOT EXISTS (SELECT 1 FROM sayiir_workflow_claims c WHERE c.instance_id = {row}.instance_id AND {LIVE_CLAIM})
AND NOT EXISTS (SELECT 1 FROM sayiir_workflow_signals sig WHERE sig.instance_id = {row}.instance_id)
"""


ELIGIBLE = eligible("s")

# The snapshot row lock every read-modify-write and every fenced write takes
# first: one lock order (snapshot row, then claim or signal rows) everywhere.
LOCK_SNAPSHOT_ROW = "SELECT 1 FROM sayiir_workflow_snapshots WHERE instance_id = $1 FOR UPDATE"


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
    SELECT 1 FROM sayiir_workflow_claims c
    WHERE c.instance_id = $1 AND c.worker_id = $2::text AND c.task_id = $3::bytea
      AND {LIVE_CLAIM}
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


def outranked_by_another(instance: str, priority: str, aging: str) -> str:
    """True when a ready, claimable task of another workflow than `instance`
    has a better priority than `priority`, where waiting promotes a task one
    level per `aging` seconds (the dispatch order at the granularity of
    priority levels): the fairness check of a continued claim, so a backlog
    is never starved by workers that keep their workflows."""
    return f"""EXISTS (
    SELECT 1 FROM sayiir_workflow_snapshots s
    WHERE s.status = 'InProgress' AND s.position_kind = 'AtTask' AND s.instance_id <> {instance}
      AND s.task_priority - floor(extract(epoch FROM now() - s.updated_at) / {aging}::float8) < {priority}
      AND {ELIGIBLE}
)"""


# The write half of every read-modify-write, run while LOCK_AND_READ's lock
# is held: refresh the row's columns from the mutated snapshot, append the
# next history version ($15), and optionally record one task output ($16,
# $17), close the running task ($18: its new status), and end the claim of
# worker $20: with $21 ("continue where you are") it moves to task $21 with
# a lifetime of $22 s unless another workflow's task outranks the next one
# (priority $23, aging $24 s); otherwise it is released. $19 is the wakeup
# hint, sent unless the claim moved (a task kept by its worker is nobody
# else's to wake up for). One statement, so the row, its history, its
# tasks and its claim never disagree, and one round trip for all of it.
# The release reads `moved`: the two never touch the same claim row.
# $1..$14 are the snapshot's row columns and blob, numbered as in
# SAVE_SNAPSHOT (`snapshot_row_args`).
def write_mutation_ctes(row_guard: str = "") -> str:
    """WRITE_MUTATION's common table expressions (`upd` to `release`);
    `row_guard` is added to the snapshot row's WHERE, and every other
    write hangs on `upd` (see `continuation.COMPLETE_CONTINUED`)."""
    return f"""upd AS (
    UPDATE sayiir_workflow_snapshots
    SET status = $2, definition_hash = $3, current_task_id = $4::bytea, completed_task_count = $5, error = $6,
        position_kind = $7, delay_wake_at = $8, trace_parent = $9, task_priority = $10, task_tags = $11,
        history_version = $15, data_hash = $12,
        completed_at = CASE WHEN $13::bool THEN now() ELSE completed_at END,
        updated_at = now()
    WHERE instance_id = $1{row_guard}
    RETURNING 1
),
hist AS (
    INSERT INTO sayiir_workflow_snapshot_history
        (instance_id, version, status, current_task_id, data, data_hash)
    SELECT $1, $15, $2, $4::bytea, $14, $12 FROM upd
),
task_output AS (
    INSERT INTO sayiir_workflow_tasks (instance_id, task_id, status, completed_at, output)
    SELECT $1, $16::bytea, 'completed', now(), $17::bytea FROM upd WHERE $16::bytea IS NOT NULL
    ON CONFLICT (instance_id, task_id) DO UPDATE SET
        status = 'completed', completed_at = now(), error = NULL, output = EXCLUDED.output
),
task_close AS (
    UPDATE sayiir_workflow_tasks t
    SET status = $18::text, completed_at = now()
    WHERE t.instance_id = $1 AND t.status = 'active' AND $18::text IS NOT NULL
      AND t.task_id IS DISTINCT FROM $16::bytea AND EXISTS (SELECT 1 FROM upd)
),
moved AS (
    UPDATE sayiir_workflow_claims c
    SET task_id = $21::bytea, claimed_at = now(), expires_at = now() + make_interval(secs => $22::float8)
    WHERE c.instance_id = $1 AND c.worker_id = $20::text AND $21::bytea IS NOT NULL AND EXISTS (SELECT 1 FROM upd)
      AND NOT {outranked_by_another("$1", "$23::int", "$24")}
    RETURNING 1
),
release AS (
    DELETE FROM sayiir_workflow_claims c
    WHERE c.instance_id = $1 AND c.worker_id = $20::text AND EXISTS (SELECT 1 FROM upd)
      AND NOT EXISTS (SELECT 1 FROM moved)
)"""


# The instance id names the row among a pipelined batch's (`continuation.CompletionBatch`).
WRITE_MUTATION_RESULT = f"""SELECT $1::text AS instance_id, EXISTS (SELECT 1 FROM moved) AS moved,
       CASE WHEN $19::text IS NOT NULL AND NOT EXISTS (SELECT 1 FROM moved)
            THEN pg_notify('{TASK_READY_CHANNEL}', $19::text) END
FROM upd"""

WRITE_MUTATION = f"WITH {write_mutation_ctes()}\n{WRITE_MUTATION_RESULT}\n"


@dataclass(frozen=True, slots=True)
class ClaimMove:
    """Where a completing worker's claim goes: to `task_id` for `ttl_s`, if
    no ready task of another workflow outranks `priority` (aged per `aging_s`)."""

    task_id: TaskId
    ttl_s: float
    priority: int
    aging_s: float


@dataclass(slots=True)
class LockedSnapshot:
    snapshot: WorkflowSnapshot
    history_version: int
    status: str
    claim_held: bool = False
    # The stored blob's hash and size, once `write_mutation` wrote it.
    data_hash: bytes = b""
    data_bytes: int = 0


def wakeup_payload(snapshot: WorkflowSnapshot) -> str | None:
    """The NOTIFY payload a write of `snapshot` sends, or None when it waits at no task."""
    hint = TaskWakeupHint.of_snapshot(snapshot)
    return None if hint is None else hint.encode()


def blob_hash(blob: bytes) -> bytes:
    return hashlib.sha256(blob).digest()


def hydrate(snapshot: WorkflowSnapshot, task_ids: list[bytes], outputs: list[bytes]) -> None:
    """Put stored outputs back on the blob's (output-stripped) completed tasks."""
    snapshot.hydrate_task_outputs((TaskId(tid), out) for tid, out in zip(task_ids, outputs, strict=True))


async def decode_snapshot(
    codec: SnapshotCodec, data: bytes, trace_parent: str | None, task_ids: list[bytes], outputs: list[bytes]
) -> WorkflowSnapshot:
    """The snapshot a stored blob holds, with its row's trace parent and its stored outputs.

    A large blob is decoded in the worker process (`sayiir_grpc.offload`).
    """
    snapshot = await offload.decode(codec, data)
    snapshot.trace_parent = trace_parent
    hydrate(snapshot, task_ids, outputs)
    return snapshot


async def snapshot_of(codec: SnapshotCodec, row: asyncpg.Record) -> WorkflowSnapshot:
    """`decode_snapshot` of a row with `data`, `trace_parent` and `stored_outputs` columns."""
    return await decode_snapshot(codec, row["data"], row["trace_parent"], row["task_ids"], row["outputs"])


async def reread_snapshot(
    conn: asyncpg.Connection, codec: SnapshotCodec, instance_id: str, row: asyncpg.Record
) -> WorkflowSnapshot | None:
    """Read again the blob and outputs of a row whose lock this statement waited for.

    A READ COMMITTED statement that waited for a row lock sees the row at the
    version the writer left (`row["history_version"]`) but not that writer's
    history row, so its blob came back NULL; a new statement sees it. None
    when the version has no blob (the instance is gone).
    """
    again = await conn.fetchrow(READ_BLOB_AND_OUTPUTS, instance_id, row["history_version"])
    if again["data"] is None:
        return None
    return await decode_snapshot(codec, again["data"], row["trace_parent"], again["task_ids"], again["outputs"])


def snapshot_row_args(snapshot: WorkflowSnapshot, blob: bytes) -> list[object]:
    """$1..$14 of SAVE_SNAPSHOT and WRITE_MUTATION: the row's columns and the blob."""
    current = snapshot.current_task_id()
    wake_at = snapshot.delay_wake_at()
    return [
        snapshot.instance_id,
        snapshot.state.kind,
        snapshot.definition_hash.as_bytes(),
        None if current is None else current.as_bytes(),
        snapshot.completed_task_count(),
        snapshot.error_message(),
        snapshot.position_kind(),
        None if wake_at is None else wake_at.to_datetime(),
        snapshot.trace_parent,
        snapshot.current_task_priority(),
        snapshot.task_tags,
        blob_hash(blob),
        snapshot.state.is_terminal(),
        blob,
    ]


def row_data_hash(row_args: list[object]) -> bytes:
    """The blob hash `snapshot_row_args` computed ($12), so it is hashed once."""
    data_hash = row_args[11]
    assert isinstance(data_hash, bytes)
    return data_hash


@dataclass(slots=True)
class LockedRow:
    """The locked instance row as stored: its blob and outputs not yet decoded."""

    data: bytes
    trace_parent: str | None
    task_ids: list[bytes]
    outputs: list[bytes]
    history_version: int
    status: str
    claim_held: bool


async def lock_row(
    conn: asyncpg.Connection, instance_id: str, claim: tuple[str, TaskId] | None = None
) -> LockedRow | None:
    """Lock the instance row (and `claim`'s row) and read its blob and outputs.

    None when the instance does not exist. With `claim` = (worker, task),
    `claim_held` says whether that worker holds the live claim, now locked.
    """
    worker, task = (None, None) if claim is None else (claim[0], claim[1].as_bytes())
    row = await conn.fetchrow(LOCK_AND_READ, instance_id, worker, task)
    if row is None:
        return None
    stored = row
    if row["data"] is None:
        # We waited for a writer (see LOCK_AND_READ), or the row predates
        # blobs in history; the re-read runs under the lock we now hold.
        stored = await conn.fetchrow(READ_BLOB_AND_OUTPUTS, instance_id, row["history_version"])
        if stored["data"] is None:
            return None
    return LockedRow(
        bytes(stored["data"]),
        row["trace_parent"],
        list(stored["task_ids"]),
        list(stored["outputs"]),
        int(row["history_version"]),
        row["status"],
        bool(row["claim_held"]),
    )


async def lock_for_mutation(
    conn: asyncpg.Connection,
    codec: SnapshotCodec,
    instance_id: str,
    claim: tuple[str, TaskId] | None = None,
) -> LockedSnapshot | None:
    """`lock_row`, with the snapshot decoded and hydrated."""
    locked = await lock_row(conn, instance_id, claim)
    if locked is None:
        return None
    snapshot = await decode_snapshot(codec, locked.data, locked.trace_parent, locked.task_ids, locked.outputs)
    return LockedSnapshot(snapshot, locked.history_version, locked.status, locked.claim_held)


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
    move_claim: ClaimMove | None = None,
) -> tuple[int, bool]:
    """Persist `locked.snapshot` as the next history version; returns it,
    and whether `release_claim_of`'s claim moved as `move_claim` asked.

    `notify` sends the wakeup hint when the snapshot now waits at a task;
    pass False when the hint would name a task that is already done.
    """
    snapshot = locked.snapshot
    limits.check_snapshot_fits(snapshot)
    blob, _ = await encode_stripped_off_loop(codec, snapshot)
    version = locked.history_version + 1
    row_args = snapshot_row_args(snapshot, blob)
    moved = await write_row(
        conn,
        row_args,
        version,
        task_output=task_output,
        close_active_tasks_as=close_active_tasks_as,
        wakeup=wakeup_payload(snapshot) if notify else None,
        release_claim_of=release_claim_of,
        move_claim=move_claim,
    )
    locked.history_version = version
    locked.status = snapshot.state.kind
    locked.data_hash = row_data_hash(row_args)
    locked.data_bytes = len(blob)
    return version, moved


async def write_row(
    conn: asyncpg.Connection,
    row_args: list[object],
    version: int,
    *,
    task_output: tuple[TaskId, bytes] | None = None,
    close_active_tasks_as: str | None = None,
    wakeup: str | None = None,
    release_claim_of: str | None = None,
    move_claim: ClaimMove | None = None,
) -> bool:
    """Run WRITE_MUTATION: `row_args` (`snapshot_row_args`) as history
    `version`; True when `move_claim` moved the claim."""
    row = await conn.fetchrow(
        WRITE_MUTATION,
        *row_args,
        *mutation_args(version, task_output, close_active_tasks_as, wakeup, release_claim_of, move_claim),
    )
    return row is not None and bool(row["moved"])


def mutation_args(
    version: int,
    task_output: tuple[TaskId, bytes] | None,
    close_active_tasks_as: str | None,
    wakeup: str | None,
    release_claim_of: str | None,
    move_claim: ClaimMove | None,
) -> list[object]:
    """$15..$24 of WRITE_MUTATION (after `snapshot_row_args`)."""
    return [
        version,
        None if task_output is None else task_output[0].as_bytes(),
        None if task_output is None else task_output[1],
        close_active_tasks_as,
        wakeup,
        release_claim_of,
        None if move_claim is None else move_claim.task_id.as_bytes(),
        None if move_claim is None else move_claim.ttl_s,
        None if move_claim is None else move_claim.priority,
        None if move_claim is None else move_claim.aging_s,
    ]


def recorded_task_result(
    codec: SnapshotCodec, locked: LockedRow, task_id: TaskId, output: bytes, max_reply_bytes: int
) -> list[object]:
    """The row columns and blob (`snapshot_row_args`) once `task_id`'s output is recorded on `locked`.

    No I/O and plain values in and out, so a large workflow's runs whole in
    the worker process: decoding, hydrating, placing the task in engine
    order and encoding each cost per-task Python work, and shipping the
    decoded snapshot between processes cost as much again.
    """
    snapshot = codec.decode(locked.data)
    snapshot.trace_parent = locked.trace_parent
    hydrate(snapshot, locked.task_ids, locked.outputs)
    snapshot.mark_task_completed(task_id, output)
    limits.check_snapshot_fits(snapshot, max_reply_bytes)
    blob, _ = encode_stripped(codec, snapshot)
    return snapshot_row_args(snapshot, blob)
