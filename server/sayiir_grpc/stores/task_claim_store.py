"""TaskClaimStore: claims, dispatch, hinted tasks and fenced saves."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from sayiir_common.codec import SnapshotCodec
from sayiir_common.errors import ClaimLostError, NotFoundError
from sayiir_common.ids import TaskId
from sayiir_common.model import AtDelay, AtTask, InProgress, Timestamp, WorkflowSnapshot
from sayiir_grpc.db import Database
from sayiir_grpc.stores.history import (
    READ_BLOB_AND_OUTPUTS,
    hydrate,
    lock_for_mutation,
    stored_outputs,
    write_mutation,
)
from sayiir_grpc.stores.snapshot_store import SAVE_SNAPSHOT, save_snapshot_args

# "Claimable right now": no live claim and no pending cancel or pause. One
# fragment for the dispatch scan and the hinted lookup, so the two paths can
# never disagree. A claim without expiry is live until released.
ELIGIBLE = """
NOT EXISTS (SELECT 1 FROM sayiir_workflow_claims c
            WHERE c.instance_id = s.instance_id AND (c.expires_at IS NULL OR c.expires_at > now()))
AND NOT EXISTS (SELECT 1 FROM sayiir_workflow_signals sig WHERE sig.instance_id = s.instance_id)
"""

# Claim = insert the instance's claim row. Concurrent claimers of one
# instance meet on its primary key: the first insert wins, every other one
# waits for it, then finds a live claim and takes the DO UPDATE branch whose
# WHERE (only an expired claim may be replaced) turns it into a no-op. So
# exactly one claimer gets a row back.
#
# The snapshot row is read FOR SHARE. A plain read could be older than a
# save that completes the task and commits while this claim waits on the
# finishing worker's claim row; once that worker releases, the insert would
# go through on a workflow that is already past the task, and the task would
# run twice. Under the share lock the status and current task read here are
# the latest committed ones, and no save can change them before the claim
# commits. Lock order snapshot row, then claim row, as in the fenced save.
CLAIM_TASK = """
WITH snap AS (
    SELECT instance_id, current_task_id, status FROM sayiir_workflow_snapshots WHERE instance_id = $1
    FOR SHARE
),
claim AS (
    INSERT INTO sayiir_workflow_claims AS c (instance_id, task_id, worker_id, claimed_at, expires_at)
    SELECT snap.instance_id, $2, $3, now(), now() + make_interval(secs => $4::float8)
    FROM snap
    WHERE snap.status = 'InProgress' AND snap.current_task_id = $2
    ON CONFLICT (instance_id) DO UPDATE SET
        task_id = EXCLUDED.task_id, worker_id = EXCLUDED.worker_id,
        claimed_at = EXCLUDED.claimed_at, expires_at = EXCLUDED.expires_at
    WHERE (c.expires_at IS NOT NULL AND c.expires_at <= now())
       -- The same worker claiming the same task again gets its claim back
       -- (renewed): a client may retry a claim whose answer it never saw.
       OR (c.worker_id = EXCLUDED.worker_id AND c.task_id = EXCLUDED.task_id)
    RETURNING claimed_at, expires_at
)
SELECT EXISTS (SELECT 1 FROM snap) AS found,
       (SELECT claimed_at FROM claim) AS claimed_at,
       (SELECT expires_at FROM claim) AS expires_at,
       EXISTS (SELECT 1 FROM claim) AS granted
"""

# Release or extend, and in the same statement who holds the claim when it
# was not ours (the CTE's effect is invisible to the probe, which therefore
# sees the row as it was before the statement).
RELEASE_CLAIM = """
WITH del AS (
    DELETE FROM sayiir_workflow_claims WHERE instance_id = $1 AND worker_id = $2 AND task_id = $3 RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM del) AS done, c.worker_id AS owner, c.task_id AS owner_task
FROM (SELECT 1) one
LEFT JOIN sayiir_workflow_claims c ON c.instance_id = $1
"""

# Renewal is absolute (now + ttl): adding to the old expiry would let a
# crashed worker's claim outlive it by ever more. An eternal claim is left
# eternal (the WHERE skips it; the probe reports it as ours).
EXTEND_CLAIM = """
WITH upd AS (
    UPDATE sayiir_workflow_claims SET expires_at = now() + make_interval(secs => $4::float8)
    WHERE instance_id = $1 AND worker_id = $2 AND task_id = $3 AND expires_at IS NOT NULL
    RETURNING 1
)
SELECT EXISTS (SELECT 1 FROM upd) AS done, c.worker_id AS owner, c.task_id AS owner_task
FROM (SELECT 1) one
LEFT JOIN sayiir_workflow_claims c ON c.instance_id = $1
"""

# Dispatch scan. Two LIMIT-bounded arms, each read in index order
# (idx_snapshots_inprogress for best priority, the primary key filter plus
# updated_at for the oldest), instead of sorting every in-progress row by
# the aging score; the exact score is computed over the few candidates.
# FOR UPDATE SKIP LOCKED: concurrent finders skip each other's rows rather
# than queue on them. $2 NULL means an untagged worker (takes everything).
_DISPATCHABLE = """
s.status = 'InProgress'
AND (s.position_kind = 'AtTask'
     OR (s.position_kind = 'AtDelay' AND s.delay_wake_at IS NOT NULL AND s.delay_wake_at <= now()))
AND ($2::text[] IS NULL OR s.task_tags <@ $2::text[])
"""
_AT_TASK = """
s.status = 'InProgress' AND s.position_kind = 'AtTask'
AND ($2::text[] IS NULL OR s.task_tags <@ $2::text[])
"""


def _arm(order_by: str, name: str, where: str = _DISPATCHABLE) -> str:
    # The extra SELECT * level: a locking clause is not allowed directly
    # inside a UNION arm.
    return f"""
    SELECT * FROM (
        SELECT s.instance_id, s.history_version, s.trace_parent, s.task_priority, s.updated_at, s.current_task_id
        FROM sayiir_workflow_snapshots s
        WHERE {where} AND {ELIGIBLE}
        ORDER BY {order_by}
        LIMIT $1
        FOR UPDATE OF s SKIP LOCKED) {name}"""


FIND_CANDIDATES = f"""
SELECT DISTINCT ON (u.instance_id)
       u.instance_id, u.trace_parent, u.task_priority, u.updated_at, h.data
FROM ({_arm("s.task_priority, s.updated_at", "best")} UNION ALL {_arm("s.updated_at", "oldest")}) u
JOIN sayiir_workflow_snapshot_history h ON h.instance_id = u.instance_id AND h.version = u.history_version
ORDER BY u.instance_id
"""

# Idle workflows with a pending cancel or pause. Dispatch never offers them
# (ELIGIBLE), and no worker holds them, so nobody would ever apply the
# signal (the engine's own workers leave them so); the dispatch calls apply
# it instead, so a cancelled or paused workflow ends that way without a
# worker. A live claim means a worker is on it: that worker applies it.
IDLE_SIGNALLED = """
SELECT DISTINCT sig.instance_id FROM sayiir_workflow_signals sig
JOIN sayiir_workflow_snapshots s ON s.instance_id = sig.instance_id
WHERE s.status = 'InProgress'
  AND NOT EXISTS (SELECT 1 FROM sayiir_workflow_claims c
                  WHERE c.instance_id = s.instance_id AND (c.expires_at IS NULL OR c.expires_at > now()))
LIMIT $1
"""

# Outputs of several instances at once (one round trip per scan).
FETCH_OUTPUTS = """
SELECT instance_id, task_id, output FROM sayiir_workflow_tasks
WHERE instance_id = ANY($1::text[]) AND status = 'completed' AND output IS NOT NULL
ORDER BY instance_id, task_id
"""

# Hinted lookup: the hint's task is still the current one and claimable.
FIND_HINTED = f"""
SELECT s.trace_parent, h.data,
       {stored_outputs("s.instance_id")}
FROM sayiir_workflow_snapshots s
JOIN sayiir_workflow_snapshot_history h ON h.instance_id = s.instance_id AND h.version = s.history_version
WHERE s.instance_id = $1 AND s.current_task_id = $2 AND s.status = 'InProgress' AND {ELIGIBLE}
"""

# Fenced save, step 1: the snapshot row, then the worker's live claim, both
# locked so that no one can steal the claim (even once it expires) or claim
# on a stale status until this save commits. Same lock order as CLAIM_TASK.
LOCK_SNAPSHOT_ROW = "SELECT 1 FROM sayiir_workflow_snapshots WHERE instance_id = $1 FOR UPDATE"

HOLD_CLAIM = """
SELECT 1 FROM sayiir_workflow_claims
WHERE instance_id = $1 AND worker_id = $2 AND task_id = $3 AND (expires_at IS NULL OR expires_at > now())
FOR UPDATE
"""


@dataclass(slots=True)
class TaskClaim:
    instance_id: str
    task_id: TaskId
    worker_id: str
    claimed_at: int
    expires_at: int | None


@dataclass(slots=True)
class AvailableTask:
    instance_id: str
    task_id: TaskId
    input: bytes | None
    snapshot: WorkflowSnapshot
    version: int = 0


def _epoch(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp() // 1)


async def claim_task(
    db: Database, instance_id: str, task_id: TaskId, worker_id: str, ttl_s: float | None
) -> TaskClaim | None:
    row = await db.run(
        "claim_task",
        lambda c: c.fetchrow(CLAIM_TASK, instance_id, task_id.as_bytes(), worker_id, ttl_s),
        transaction=False,
    )
    if not row["found"]:
        raise NotFoundError(f"workflow instance not found: {instance_id}")
    if not row["granted"]:
        return None
    claimed = _epoch(row["claimed_at"])
    assert claimed is not None
    return TaskClaim(instance_id, task_id, worker_id, claimed, _epoch(row["expires_at"]))


def _check_owner(row: asyncpg.Record, instance_id: str, task_id: TaskId, worker_id: str) -> None:
    if row["done"]:
        return
    owner = row["owner"]
    if owner is None:
        raise NotFoundError(f"no claim on {instance_id}")
    if owner != worker_id or bytes(row["owner_task"]) != task_id.as_bytes():
        raise ClaimLostError(f"claim on {instance_id} is held by worker {owner!r} for another task or worker")
    # Ours, with no expiry: extending an eternal claim leaves it as it is.


async def release_task_claim(db: Database, instance_id: str, task_id: TaskId, worker_id: str) -> None:
    row = await db.run(
        "release_task_claim",
        lambda c: c.fetchrow(RELEASE_CLAIM, instance_id, worker_id, task_id.as_bytes()),
        transaction=False,
    )
    _check_owner(row, instance_id, task_id, worker_id)


async def extend_task_claim(db: Database, instance_id: str, task_id: TaskId, worker_id: str, ttl_s: float) -> None:
    row = await db.run(
        "extend_task_claim",
        lambda c: c.fetchrow(EXTEND_CLAIM, instance_id, worker_id, task_id.as_bytes(), ttl_s),
        transaction=False,
    )
    _check_owner(row, instance_id, task_id, worker_id)


def task_input(snapshot: WorkflowSnapshot) -> bytes | None:
    """A first task gets the initial input; later ones the last output."""
    state = snapshot.state
    if isinstance(state, InProgress) and not state.completed_tasks:
        return snapshot.initial_input
    return snapshot.get_last_task_output()


def _runnable_task(snapshot: WorkflowSnapshot, now: Timestamp) -> TaskId | None:
    """The task to offer, or None when it is done already or backing off."""
    task_id = snapshot.current_task_id()
    if task_id is None:
        return None
    if snapshot.get_task_result(task_id) is not None:
        return None
    retry = snapshot.task_retries.get(task_id)
    if retry is not None and now < retry.next_retry_at:
        return None
    return task_id


async def _advance_due_delay(db: Database, codec: SnapshotCodec, instance_id: str) -> WorkflowSnapshot | None:
    """Move a workflow whose delay is over to its next task (or complete it).

    Done under the row lock and re-checked there, so two finders that both
    saw the due delay advance it once.
    """

    async def body(conn: asyncpg.Connection) -> WorkflowSnapshot | None:
        locked = await lock_for_mutation(conn, codec, instance_id)
        if locked is None or not isinstance(locked.snapshot.state, InProgress):
            return None
        position = locked.snapshot.state.position
        if not isinstance(position, AtDelay) or Timestamp.now() < position.wake_at:
            return None
        snapshot = locked.snapshot
        if position.next_task_id is not None:
            snapshot.update_position(AtTask(position.next_task_id))
        else:
            result = snapshot.get_task_result(position.delay_id)
            snapshot.mark_completed(b"" if result is None else result.output)
        await write_mutation(conn, codec, locked)
        return snapshot

    return await db.run("advance_delay", body)


async def apply_idle_signals(db: Database, codec: SnapshotCodec, limit: int) -> int:
    """Apply pending signals of unclaimed in-progress workflows; how many were found."""
    from sayiir_grpc.stores.signal_store import check_control_signals

    rows = await db.run("idle_signals", lambda c: c.fetch(IDLE_SIGNALLED, limit), transaction=False)
    for row in rows:
        await check_control_signals(db, codec, row["instance_id"], None)
    return len(rows)


async def find_available_tasks(
    db: Database,
    codec: SnapshotCodec,
    worker_id: str,
    limit: int,
    aging_interval_s: float,
    worker_tags: list[str],
) -> list[AvailableTask]:
    await apply_idle_signals(db, codec, limit)
    tags = worker_tags or None
    rows = await db.run("find_available_tasks", lambda c: c.fetch(FIND_CANDIDATES, limit, tags), transaction=False)
    now_s = time.time()

    def score(row: asyncpg.Record) -> float:
        waited: float = now_s - row["updated_at"].timestamp()
        return float(row["task_priority"]) - waited / aging_interval_s

    candidates = sorted(rows, key=score)[:limit]
    snapshots: list[WorkflowSnapshot] = []
    for row in candidates:
        snapshot = codec.decode(row["data"])
        snapshot.trace_parent = row["trace_parent"]
        snapshots.append(snapshot)
    if snapshots:
        output_rows = await db.run(
            "fetch_outputs",
            lambda c: c.fetch(FETCH_OUTPUTS, [s.instance_id for s in snapshots]),
            transaction=False,
        )
        by_instance: dict[str, list[tuple[bytes, bytes]]] = {}
        for r in output_rows:
            by_instance.setdefault(r["instance_id"], []).append((bytes(r["task_id"]), bytes(r["output"])))
        for snapshot in snapshots:
            pairs = by_instance.get(snapshot.instance_id, [])
            hydrate(snapshot, [p[0] for p in pairs], [p[1] for p in pairs])

    now = Timestamp.now()
    found: list[tuple[bool, AvailableTask]] = []
    for snapshot in snapshots:
        state = snapshot.state
        if isinstance(state, InProgress) and isinstance(state.position, AtDelay):
            advanced = await _advance_due_delay(db, codec, snapshot.instance_id)
            if advanced is None:
                continue
            snapshot = advanced
        task_id = _runnable_task(snapshot, now)
        if task_id is None:
            continue
        failed_here = snapshot.has_failed_on_worker(task_id, worker_id)
        found.append((failed_here, AvailableTask(snapshot.instance_id, task_id, task_input(snapshot), snapshot)))
    # Soft bias: tasks that last failed on this worker go last (stable sort).
    found.sort(key=lambda item: item[0])
    return [task for _, task in found]


async def find_hinted_task(
    db: Database, codec: SnapshotCodec, instance_id: str, task_id: TaskId
) -> AvailableTask | None:
    row = await db.run(
        "find_hinted_task",
        lambda c: c.fetchrow(FIND_HINTED, instance_id, task_id.as_bytes()),
        transaction=False,
    )
    if row is None:
        return None
    snapshot = codec.decode(row["data"])
    snapshot.trace_parent = row["trace_parent"]
    hydrate(snapshot, row["task_ids"], row["outputs"])
    if _runnable_task(snapshot, Timestamp.now()) != task_id:
        return None
    return AvailableTask(instance_id, task_id, task_input(snapshot), snapshot)


async def save_snapshot_fenced(
    db: Database, codec: SnapshotCodec, snapshot: WorkflowSnapshot, task_id: TaskId, worker_id: str
) -> bool:
    args = save_snapshot_args(codec, snapshot)

    async def body(conn: asyncpg.Connection) -> bool:
        await conn.execute(LOCK_SNAPSHOT_ROW, snapshot.instance_id)
        if await conn.fetchval(HOLD_CLAIM, snapshot.instance_id, worker_id, task_id.as_bytes()) is None:
            return False
        await conn.fetchrow(SAVE_SNAPSHOT, *args)
        return True

    return await db.run("save_snapshot_fenced", body)


# -- the fast path: claim what is ready in one statement, complete in one
# transaction (fewer round trips and commits per step than find + claim +
# save result + save + release). Same rules as the calls it replaces.

# Find ready tasks and claim them in one statement. The arms lock their rows
# (SKIP LOCKED, so concurrent callers take different rows) and the claims are
# inserted before those locks go: no other caller can claim them in between.
# Only tasks at AtTask; due delays are advanced first by the caller.
CLAIM_AVAILABLE = f"""
WITH cand AS (
    SELECT DISTINCT ON (u.instance_id) u.*
    FROM ({_arm("s.task_priority, s.updated_at", "best", _AT_TASK)}
          UNION ALL {_arm("s.updated_at", "oldest", _AT_TASK)}) u
    ORDER BY u.instance_id
),
pick AS (
    SELECT * FROM cand
    ORDER BY task_priority - extract(epoch FROM now() - updated_at) / $5::float8
    LIMIT $1
),
claimed AS (
    INSERT INTO sayiir_workflow_claims AS c (instance_id, task_id, worker_id, claimed_at, expires_at)
    SELECT p.instance_id, p.current_task_id, $3, now(), now() + make_interval(secs => $4::float8) FROM pick p
    ON CONFLICT (instance_id) DO UPDATE SET
        task_id = EXCLUDED.task_id, worker_id = EXCLUDED.worker_id,
        claimed_at = EXCLUDED.claimed_at, expires_at = EXCLUDED.expires_at
    WHERE c.expires_at IS NOT NULL AND c.expires_at <= now()
    RETURNING instance_id
)
-- LEFT JOIN: a row whose lock we waited for comes back at its new version,
-- whose history row this statement's snapshot cannot see; it is still
-- claimed, so it must come back (data NULL) and be read again by the caller.
SELECT p.instance_id, p.trace_parent, p.history_version, h.data,
       {stored_outputs("p.instance_id")}
FROM pick p
JOIN claimed USING (instance_id)
LEFT JOIN sayiir_workflow_snapshot_history h ON h.instance_id = p.instance_id AND h.version = p.history_version
"""

DUE_DELAYS = f"""
SELECT s.instance_id FROM sayiir_workflow_snapshots s
WHERE s.status = 'InProgress' AND s.position_kind = 'AtDelay' AND s.delay_wake_at <= now() AND {ELIGIBLE}
LIMIT $1
"""

# "Continue where you are": the worker's claim row moves to the next task
# with a fresh lifetime, in the transaction that completes the current one,
# unless a ready, claimable task of another workflow outranks the next task:
# a better priority, where waiting promotes a task one level per aging
# interval (the dispatch order at the granularity of priority levels), so a
# backlog is never starved by workers that keep their workflows. One
# statement; a row comes back when the claim moved.
MOVE_CLAIM_IF_FAIR = f"""
UPDATE sayiir_workflow_claims
SET task_id = $3, claimed_at = now(), expires_at = now() + make_interval(secs => $4::float8)
WHERE instance_id = $1 AND worker_id = $2
  AND NOT EXISTS (
    SELECT 1 FROM sayiir_workflow_snapshots s
    WHERE s.status = 'InProgress' AND s.position_kind = 'AtTask' AND s.instance_id <> $1
      AND s.task_priority - floor(extract(epoch FROM now() - s.updated_at) / $6::float8) < $5
      AND {ELIGIBLE}
  )
RETURNING 1
"""

RELEASE_MANY = "DELETE FROM sayiir_workflow_claims WHERE instance_id = ANY($1::text[]) AND worker_id = $2"


async def _reread(db: Database, instance_id: str, history_version: int) -> asyncpg.Record:
    row: asyncpg.Record = await db.run(
        "claim_reread",
        lambda c: c.fetchrow(READ_BLOB_AND_OUTPUTS, instance_id, history_version),
        transaction=False,
    )
    return row


async def sweep(db: Database, codec: SnapshotCodec, limit: int) -> int:
    """Apply the pending signals of idle workflows and advance due delays, at
    most `limit` of each; returns the larger count (a full batch: run again)."""
    signalled = await apply_idle_signals(db, codec, limit)
    due = await db.run("due_delays", lambda c: c.fetch(DUE_DELAYS, limit), transaction=False)
    for row in due:
        await _advance_due_delay(db, codec, row["instance_id"])
    return max(signalled, len(due))


async def claim_available_tasks(
    db: Database,
    codec: SnapshotCodec,
    worker_id: str,
    limit: int,
    ttl_s: float | None,
    aging_interval_s: float,
    worker_tags: list[str],
    sweep_first: bool = True,
) -> list[AvailableTask]:
    """Find and claim up to `limit` ready tasks for `worker_id`.

    `sweep_first=False` when a background sweeper applies idle signals and
    due delays instead (two statements fewer per call)."""
    if sweep_first:
        await sweep(db, codec, limit)
    tags = worker_tags or None
    rows = await db.run(
        "claim_available_tasks",
        lambda c: c.fetch(CLAIM_AVAILABLE, limit, tags, worker_id, ttl_s, aging_interval_s),
        transaction=False,
        repeatable=False,
    )
    now = Timestamp.now()
    claimed: list[AvailableTask] = []
    not_runnable: list[str] = []
    for row in rows:
        data, task_ids, outputs = row["data"], row["task_ids"], row["outputs"]
        if data is None:
            # Claimed at a version committed while we waited: read it now.
            again = await _reread(db, row["instance_id"], row["history_version"])
            data, task_ids, outputs = again["data"], again["task_ids"], again["outputs"]
        if data is None:
            not_runnable.append(row["instance_id"])
            continue
        snapshot = codec.decode(data)
        snapshot.trace_parent = row["trace_parent"]
        hydrate(snapshot, task_ids, outputs)
        task_id = _runnable_task(snapshot, now)
        if task_id is None:
            not_runnable.append(snapshot.instance_id)
            continue
        claimed.append(
            AvailableTask(snapshot.instance_id, task_id, task_input(snapshot), snapshot, row["history_version"])
        )
    if not_runnable:
        # Done already or backing off: give them back at once.
        await db.run("release_claims", lambda c: c.execute(RELEASE_MANY, not_runnable, worker_id), transaction=False)
    return claimed


async def complete_task(
    db: Database,
    codec: SnapshotCodec,
    instance_id: str,
    task_id: TaskId,
    worker_id: str,
    output: bytes,
    next_task: tuple[TaskId, int | None, list[str]] | None,
    final_output: bytes | None,
    claim_next: tuple[float, float] | None = None,
) -> tuple[bool, AvailableTask | None]:
    """Record the output, advance (or complete), release the claim: one transaction.

    (False, None), with nothing written, when the worker does not hold the
    live claim. `claim_next` = (ttl, aging interval) in seconds: keep the
    claim, moved to the next task, unless another ready task outranks it
    (CONTINUE_IS_FAIR); the claimed next task is returned.
    """

    async def body(conn: asyncpg.Connection) -> tuple[bool, AvailableTask | None]:
        locked = await lock_for_mutation(conn, codec, instance_id, claim=(worker_id, task_id))
        if locked is None:
            raise NotFoundError(f"workflow instance not found: {instance_id}")
        if not locked.claim_held:
            return False, None
        snapshot = locked.snapshot
        if not isinstance(snapshot.state, InProgress) or snapshot.current_task_id() != task_id:
            # The workflow moved on (cancelled, or another path advanced it):
            # nothing to complete; the stale claim is simply dropped.
            await conn.execute(RELEASE_MANY, [instance_id], worker_id)
            return False, None
        snapshot.mark_task_completed(task_id, output)
        snapshot.clear_retry_state(task_id)
        keep = False
        if next_task is not None:
            next_id, priority, tags = next_task
            snapshot.update_position(AtTask(next_id))
            snapshot.set_task_hint(priority, tags)
            if claim_next is not None:
                ttl, aging = claim_next
                moved = await conn.fetchval(
                    MOVE_CLAIM_IF_FAIR,
                    instance_id,
                    worker_id,
                    next_id.as_bytes(),
                    ttl,
                    snapshot.current_task_priority(),
                    aging,
                )
                keep = moved is not None
        else:
            snapshot.mark_completed(output if final_output is None else final_output)
        version = await write_mutation(
            conn,
            codec,
            locked,
            task_output=(task_id, output),
            release_claim_of=None if keep else worker_id,
            # A task kept by this worker is nobody else's to wake up for.
            notify=not keep,
        )
        if not keep or next_task is None:
            return True, None
        return True, AvailableTask(instance_id, next_task[0], task_input(snapshot), snapshot, version)

    return await db.run("complete_task", body, repeatable=False)
