"""TaskClaimStore, the claiming half: claim, release, extend, and the fenced
writes (save under a claim, complete a task).

Finding work to claim (the dispatch scan, the hinted lookup, claiming what
is ready in one statement, the sweeps they run first) is in `dispatch`.
"""

from __future__ import annotations

from datetime import datetime

import asyncpg

from sayiir_common.codec import SnapshotCodec
from sayiir_common.errors import ClaimLostError, NotFoundError
from sayiir_common.ids import TaskId
from sayiir_common.model import AvailableTask, InProgress, TaskClaim, WorkflowSnapshot
from sayiir_grpc.db import Database
from sayiir_grpc.stores.continuation import ContinuationCache, NextTask, apply_completion, following_task
from sayiir_grpc.stores.history import LIVE_CLAIM, LOCK_SNAPSHOT_ROW, lock_for_mutation, write_mutation
from sayiir_grpc.stores.snapshot_store import SAVE_SNAPSHOT, save_snapshot_args

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

# Fenced save: the snapshot row (history.LOCK_SNAPSHOT_ROW), then the
# worker's live claim, both locked so that no one can steal the claim (even once it expires) or claim
# on a stale status until this save commits. Same lock order as CLAIM_TASK.
HOLD_CLAIM = f"""
SELECT 1 FROM sayiir_workflow_claims c
WHERE c.instance_id = $1 AND c.worker_id = $2 AND c.task_id = $3 AND {LIVE_CLAIM}
FOR UPDATE
"""


RELEASE_MANY = "DELETE FROM sayiir_workflow_claims WHERE instance_id = ANY($1::text[]) AND worker_id = $2"


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


async def save_snapshot_fenced(
    db: Database, codec: SnapshotCodec, snapshot: WorkflowSnapshot, task_id: TaskId, worker_id: str
) -> bool:
    args = await save_snapshot_args(codec, snapshot)

    async def body(conn: asyncpg.Connection) -> bool:
        await conn.execute(LOCK_SNAPSHOT_ROW, snapshot.instance_id)
        if await conn.fetchval(HOLD_CLAIM, snapshot.instance_id, worker_id, task_id.as_bytes()) is None:
            return False
        await conn.fetchrow(SAVE_SNAPSHOT, *args)
        return True

    return await db.run("save_snapshot_fenced", body)


async def complete_task(
    db: Database,
    codec: SnapshotCodec,
    instance_id: str,
    task_id: TaskId,
    worker_id: str,
    output: bytes,
    next_task: NextTask | None,
    final_output: bytes | None,
    claim_next: tuple[float, float] | None = None,
    cache: ContinuationCache | None = None,
) -> tuple[bool, AvailableTask | None]:
    """Record the output, advance (or complete), release the claim: one transaction.

    (False, None), with nothing written, when the worker does not hold the
    live claim. `claim_next` = (ttl, aging interval) in seconds: keep the
    claim, moved to the next task, unless another ready task outranks it
    (history.WRITE_MUTATION); the next task, claimed, is returned, and the
    snapshot kept in `cache` for its completion (`continuation`).
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
        move = apply_completion(snapshot, task_id, output, next_task, final_output, claim_next)
        version, moved = await write_mutation(
            conn, codec, locked, task_output=(task_id, output), release_claim_of=worker_id, move_claim=move
        )
        if not moved:
            return True, None
        assert move is not None
        if cache is not None:
            cache.keep(snapshot, version, locked.data_hash, worker_id, locked.data_bytes)
        return True, following_task(snapshot, move, output, version)

    if cache is not None:
        cache.drop(instance_id)
    return await db.run("complete_task", body, repeatable=False)
