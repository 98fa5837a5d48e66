"""TaskClaimStore, the dispatch half: which tasks a worker may take.

The dispatch scan (find_available_tasks), the hinted lookup after a wakeup,
and the fast path that finds and claims in one statement; the sweeps they
run first (pending signals of idle workflows, delays that are over).
Claiming one named task, and the writes fenced by a claim, are in
`task_claim_store`.
"""

from __future__ import annotations

import time

import asyncpg

from sayiir_common.codec import SnapshotCodec
from sayiir_common.ids import TaskId
from sayiir_common.model import AtDelay, AtTask, AvailableTask, InProgress, Timestamp, WorkflowSnapshot
from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as rpc_pb
from sayiir_grpc.db import Database
from sayiir_grpc.stores import claim_replay
from sayiir_grpc.stores.continuation import ContinuationCache
from sayiir_grpc.stores.history import (
    ELIGIBLE,
    LIVE_CLAIM,
    blob_hash,
    decode_snapshot,
    eligible,
    lock_for_mutation,
    reread_snapshot,
    snapshot_of,
    stored_outputs,
    write_mutation,
)
from sayiir_grpc.stores.signal_store import check_control_signals
from sayiir_grpc.stores.task_claim_store import RELEASE_MANY

# Dispatch scan. LIMIT-bounded arms, each read in the order of a partial
# index that holds only the rows it can take (migration 0003): ready at a
# task by best priority (sayiir_grpc_ready_by_priority) and oldest first
# (sayiir_grpc_ready_by_age); find also takes delays that are over
# (sayiir_grpc_delays_by_wake). Workflows parked at a signal, at a delay due
# later, or finished are in none of them, so however many wait, a scan
# starts at the best ready row and stops after LIMIT claimable ones. The
# exact aging score is computed over the few candidates. FOR UPDATE SKIP
# LOCKED: concurrent finders skip each other's rows rather than queue on
# them. $2 NULL means an untagged worker (takes everything).
#
# The one walk left is over rows whose task is running (ready at a task, but
# under a live claim): they sit in front of the waiting ones in both orders,
# having been the best when they were claimed. It grows with the tasks in
# flight, not with the waiting workflows, and is made cheap in two ways:
# - each arm picks its candidates from the covering index alone (an
#   index-only scan: no heap page for a row it skips), then locks and
#   re-checks only those, by primary key; a locking scan could not skip
#   the heap;
# - a running row is skipped with one lookup in a hash of the live claims,
#   built once per statement, instead of three page reads to probe the
#   claims' key. The hash is capped so that the planner always keeps it in
#   memory (an unhashed NOT IN would rescan the claims for every row);
#   claims past the cap are still skipped, by the key probe.
# An arm takes SLACK times LIMIT candidates, so that rows a concurrent
# finder holds locked are skipped and the next ones taken.
_RUNNING_HASH_CAP = 20_000
_SLACK = 4


def _tags(row: str) -> str:
    return f"($2::text[] IS NULL OR {row}.task_tags <@ $2::text[])"


def _at_task(row: str) -> str:
    return f"{row}.status = 'InProgress' AND {row}.position_kind = 'AtTask' AND {_tags(row)}"


def _not_running(row: str) -> str:
    return f"""{row}.instance_id NOT IN (
    SELECT c.instance_id FROM sayiir_workflow_claims c WHERE {LIVE_CLAIM} LIMIT {_RUNNING_HASH_CAP})"""


# The two positions dispatch offers, on row s (the backlog gauge counts with them too).
_AT_TASK = _at_task("s")
_DUE_DELAY = f"s.status = 'InProgress' AND s.position_kind = 'AtDelay' AND s.delay_wake_at <= now() AND {_tags('s')}"

# While every ready row has the same priority (the usual case) the
# best-priority order is the oldest-first order: the second arm would read
# the same rows again, so it is switched off (a one-time filter on two index
# end probes).
_PRIORITIES_DIFFER = """
(SELECT min(task_priority) FROM sayiir_workflow_snapshots
 WHERE status = 'InProgress' AND position_kind = 'AtTask')
<> (SELECT max(task_priority) FROM sayiir_workflow_snapshots
    WHERE status = 'InProgress' AND position_kind = 'AtTask')
"""

_COLUMNS = "s.instance_id, s.history_version, s.trace_parent, s.task_priority, s.updated_at, s.current_task_id"


def _locked(name: str, where: str, order_by: str) -> str:
    # The extra SELECT * level: a locking clause is not allowed directly
    # inside a UNION arm.
    return f"""
    SELECT * FROM (
        SELECT {_COLUMNS}
        FROM sayiir_workflow_snapshots s
        WHERE {where} AND {ELIGIBLE}
        ORDER BY {order_by}
        LIMIT $1
        FOR UPDATE OF s SKIP LOCKED) {name}"""


def _ready_arm(name: str, order: str, gate: str = "TRUE") -> str:
    """Candidates from the covering index (r), then locked and re-checked (s)."""
    candidates = f"""
        SELECT r.instance_id FROM sayiir_workflow_snapshots r
        WHERE {_at_task("r")} AND {_not_running("r")} AND {eligible("r")} AND {gate}
        ORDER BY {order.format(row="r")}
        LIMIT {_SLACK} * $1"""
    return _locked(name, f"s.instance_id IN ({candidates}) AND {_at_task('s')}", order.format(row="s"))


_READY_ARMS = f"""{_ready_arm("best", "{row}.task_priority, {row}.updated_at")}
    UNION ALL {_ready_arm("oldest", "{row}.updated_at", _PRIORITIES_DIFFER)}"""

FIND_CANDIDATES = f"""
SELECT DISTINCT ON (u.instance_id)
       u.instance_id, u.history_version, u.trace_parent, u.task_priority, u.updated_at,
       octet_length(h.data) AS data_bytes
FROM ({_READY_ARMS} UNION ALL {_locked("due", _DUE_DELAY, "s.delay_wake_at")}) u
JOIN sayiir_workflow_snapshot_history h ON h.instance_id = u.instance_id AND h.version = u.history_version
ORDER BY u.instance_id
"""

# Idle workflows with a pending cancel or pause. Dispatch never offers them
# (ELIGIBLE), and no worker holds them, so nobody would ever apply the
# signal (the engine's own workers leave them so); the dispatch calls apply
# it instead, so a cancelled or paused workflow ends that way without a
# worker. A live claim means a worker is on it: that worker applies it.
IDLE_SIGNALLED = f"""
SELECT DISTINCT sig.instance_id FROM sayiir_workflow_signals sig
JOIN sayiir_workflow_snapshots s ON s.instance_id = sig.instance_id
WHERE s.status = 'InProgress'
  AND NOT EXISTS (SELECT 1 FROM sayiir_workflow_claims c WHERE c.instance_id = s.instance_id AND {LIVE_CLAIM})
LIMIT $1
"""

# The blobs of candidates, by (instance, version): history rows never change.
# Read after FIND_CANDIDATES (which gives their sizes only) in batches of
# about BLOB_BATCH_BYTES: the event loop allocates, decodes and frees a
# result's rows in one step each, and sixteen blobs near the size limit
# (7 MB of JSON each) in one result held it for tens of ms.
FETCH_BLOBS = """
SELECT h.instance_id, h.data FROM sayiir_workflow_snapshot_history h
JOIN unnest($1::text[], $2::bigint[]) AS k(instance_id, version)
  ON h.instance_id = k.instance_id AND h.version = k.version
"""
BLOB_BATCH_BYTES = 8 * 1024 * 1024

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

# -- the fast path: claim what is ready in one statement, complete in one
# transaction (fewer round trips and commits per step than find + claim +
# save result + save + release). Same rules as the calls it replaces.

# Find ready tasks and claim them in one statement. The arms lock their rows
# (SKIP LOCKED, so concurrent callers take different rows) and the claims are
# inserted before those locks go: no other caller can claim them in between.
# Only tasks at AtTask; due delays are advanced first by the caller.
# $1 limit, $2 tags, $3 worker, $4 ttl, $5 aging interval.
_CLAIM_CTES = f"""
cand AS (
    SELECT DISTINCT ON (u.instance_id) u.*
    FROM ({_READY_ARMS}) u
    ORDER BY u.instance_id
),
pick AS (
    SELECT cand.*, task_priority - extract(epoch FROM now() - updated_at) / $5::float8 AS score FROM cand
    ORDER BY score
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
)"""

# LEFT JOIN: a row whose lock we waited for comes back at its new version,
# whose history row this statement's snapshot cannot see; it is still
# claimed, so it must come back (data NULL) and be read again by the caller.
_CLAIMED_ROWS = f"""
SELECT p.instance_id, p.trace_parent, p.history_version, h.data,
       {stored_outputs("p.instance_id")}
FROM pick p
JOIN claimed USING (instance_id)
LEFT JOIN sayiir_workflow_snapshot_history h ON h.instance_id = p.instance_id AND h.version = p.history_version
ORDER BY p.score, p.instance_id
"""

CLAIM_AVAILABLE = f"WITH {_CLAIM_CTES}{_CLAIMED_ROWS}"

# CLAIM_AVAILABLE with the call's idempotency key ($6, the request hash
# $7) recorded in the same statement: one round trip instead of BEGIN,
# claim, key, COMMIT. The stored outcome is the reply's outline
# (`claim_replay`), for whatever was claimed, nothing included: an empty
# claim stores its key too, so a repeat of a key that committed earlier
# always fails here (unique violation, nothing claimed) and is answered by
# the transaction path from the stored outline.
#
# With $8 false (a long poll's first look: finding nothing, it waits and
# claims again under the same key) a claim that took nothing stores no
# key, unless the key is stored already: the insert then still fails, and
# a repeat is still answered at once. A duplicate still in flight holds
# its rows locked (skipped here) and its key uncommitted: this look finds
# nothing and the claim after the wait meets that key.
_CLAIMED_PICKS = "(SELECT * FROM pick JOIN claimed USING (instance_id))"
CLAIM_AVAILABLE_KEYED = f"""WITH {_CLAIM_CTES},
idempotency_key AS (
    INSERT INTO sayiir_grpc_idempotency_keys (request_key, rpc, request_hash, outcome)
    SELECT $6::text, '{claim_replay.CLAIM_RPC}', $7::bytea,
           {claim_replay.outline_column(_CLAIMED_PICKS, "o.score, o.instance_id")}
    WHERE $8::bool OR EXISTS (SELECT 1 FROM claimed)
       OR EXISTS (SELECT 1 FROM sayiir_grpc_idempotency_keys k WHERE k.request_key = $6::text)
){_CLAIMED_ROWS}"""

DUE_DELAYS = f"""
SELECT s.instance_id FROM sayiir_workflow_snapshots s
WHERE s.status = 'InProgress' AND s.position_kind = 'AtDelay' AND s.delay_wake_at <= now() AND {ELIGIBLE}
ORDER BY s.delay_wake_at
LIMIT $1
"""


def task_input(snapshot: WorkflowSnapshot) -> bytes | None:
    """A first task gets the initial input; later ones the last output."""
    state = snapshot.state
    if isinstance(state, InProgress) and not state.completed_tasks:
        return snapshot.initial_input
    return snapshot.get_last_task_output()


def available_task(snapshot: WorkflowSnapshot, task_id: TaskId, version: int = 0) -> AvailableTask:
    return AvailableTask(
        snapshot.instance_id,
        task_id,
        task_input(snapshot),
        snapshot.definition_hash,
        snapshot.trace_parent,
        snapshot,
        version,
    )


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
    by_instance: dict[str, list[tuple[bytes, bytes]]] = {}
    if candidates:
        output_rows = await db.run(
            "fetch_outputs",
            lambda c: c.fetch(FETCH_OUTPUTS, [row["instance_id"] for row in candidates]),
            transaction=False,
        )
        for r in output_rows:
            by_instance.setdefault(r["instance_id"], []).append((bytes(r["task_id"]), bytes(r["output"])))
    snapshots: list[WorkflowSnapshot] = []
    for batch in _blob_batches(candidates):
        blobs = await _fetch_blobs(db, batch)
        for row in batch:
            # Popped, so each blob is freed once decoded, not all at once.
            blob = blobs.pop(row["instance_id"], None)
            if blob is None:
                continue  # deleted since the scan
            pairs = by_instance.get(row["instance_id"], [])
            snapshots.append(
                await decode_snapshot(codec, blob, row["trace_parent"], [p[0] for p in pairs], [p[1] for p in pairs])
            )
            del blob

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
        found.append((failed_here, available_task(snapshot, task_id)))
    # Soft bias: tasks that last failed on this worker go last (stable sort).
    found.sort(key=lambda item: item[0])
    return [task for _, task in found]


def _blob_batches(candidates: list[asyncpg.Record]) -> list[list[asyncpg.Record]]:
    """`candidates` in order, cut into batches of about BLOB_BATCH_BYTES of blob (at least one each)."""
    batches: list[list[asyncpg.Record]] = []
    size = BLOB_BATCH_BYTES
    for row in candidates:
        if size + row["data_bytes"] > BLOB_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(row)
        size += row["data_bytes"]
    return batches


async def _fetch_blobs(db: Database, batch: list[asyncpg.Record]) -> dict[str, bytes]:
    ids = [row["instance_id"] for row in batch]
    versions = [row["history_version"] for row in batch]
    rows = await db.run("fetch_blobs", lambda c: c.fetch(FETCH_BLOBS, ids, versions), transaction=False)
    return {row["instance_id"]: row["data"] for row in rows}


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
    snapshot = await snapshot_of(codec, row)
    if _runnable_task(snapshot, Timestamp.now()) != task_id:
        return None
    return available_task(snapshot, task_id)


async def _reread(db: Database, codec: SnapshotCodec, row: asyncpg.Record) -> WorkflowSnapshot | None:
    """A row claimed at a version committed while the claim waited: read it now."""
    instance_id = row["instance_id"]
    snapshot: WorkflowSnapshot | None = await db.run(
        "claim_reread", lambda c: reread_snapshot(c, codec, instance_id, row), transaction=False
    )
    return snapshot


# Is a task ready that a worker with these tags ($1; NULL: untagged) may
# take? What a long poll looks at between hints; it claims nothing.
ANY_READY = f"SELECT EXISTS (SELECT 1 FROM sayiir_workflow_snapshots s WHERE {_AT_TASK} AND {ELIGIBLE})".replace(
    "$2::text[]", "$1::text[]"
)


async def any_ready(db: Database, worker_tags: list[str]) -> bool:
    ready: bool = await db.run("any_ready", lambda c: c.fetchval(ANY_READY, worker_tags or None), transaction=False)
    return ready


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
    continued: ContinuationCache | None = None,
    key: tuple[str, bytes] | None = None,
    key_if_empty: bool = True,
) -> list[AvailableTask]:
    """Find and claim up to `limit` ready tasks for `worker_id`.

    `sweep_first=False` when a background sweeper applies idle signals and
    due delays instead (two statements fewer per call). With `continued`,
    each small snapshot claimed is kept there for its task's completion
    (stores.continuation checks it against the stored row before use).
    With `key` (the idempotency key and request hash), the claims and the
    key's outline are written in one autocommit statement; a key stored
    already fails it with a unique violation, nothing claimed.
    `key_if_empty=False` stores no key when nothing was claimed (the claim
    will run again under it)."""
    if sweep_first:
        await sweep(db, codec, limit)
    tags = worker_tags or None
    args: tuple[object, ...] = (limit, tags, worker_id, ttl_s, aging_interval_s)
    query, args = (CLAIM_AVAILABLE, args) if key is None else (CLAIM_AVAILABLE_KEYED, (*args, *key, key_if_empty))
    rows = await db.run("claim_available_tasks", lambda c: c.fetch(query, *args), transaction=False, repeatable=False)
    return await _runnable_claims(db, codec, rows, worker_id, continued)


async def _runnable_claims(
    db: Database,
    codec: SnapshotCodec,
    rows: list[asyncpg.Record],
    worker_id: str,
    continued: ContinuationCache | None = None,
) -> list[AvailableTask]:
    """The tasks of claimed rows that can run now, in order; the claims of
    the others (done already, backing off, gone) are given back at once."""
    now = Timestamp.now()
    claimed: list[AvailableTask] = []
    not_runnable: list[str] = []
    for row in rows:
        snapshot = await snapshot_of(codec, row) if row["data"] is not None else await _reread(db, codec, row)
        task_id = None if snapshot is None else _runnable_task(snapshot, now)
        if snapshot is None or task_id is None:
            not_runnable.append(row["instance_id"])
            continue
        claimed.append(available_task(snapshot, task_id, row["history_version"]))
        if continued is not None and row["data"] is not None:
            data = row["data"]
            continued.keep(snapshot, row["history_version"], blob_hash(data), worker_id, len(data))
    if not_runnable:
        # Done already or backing off: give them back at once.
        await db.run("release_claims", lambda c: c.execute(RELEASE_MANY, not_runnable, worker_id), transaction=False)
    return claimed


async def release_claims(db: Database, instance_ids: list[str], worker_id: str) -> None:
    """Drop `worker_id`'s claims on these instances (tasks left out of a bounded reply)."""
    await db.run("release_claims", lambda c: c.execute(RELEASE_MANY, instance_ids, worker_id), transaction=False)


async def claimed_again(
    db: Database, codec: SnapshotCodec, outline: rpc_pb.ClaimAvailableTasksResponse, worker_id: str
) -> list[AvailableTask]:
    """The tasks of a claim's stored outline that `worker_id` still holds at
    the outlined version, each as it was claimed and, as on the first
    attempt, only those that can run now (`claim_replay`)."""
    if not outline.tasks:
        return []
    columns = [t.instance_id for t in outline.tasks], [t.task_id for t in outline.tasks]
    versions = [t.version for t in outline.tasks]
    rows = await db.run(
        "claimed_again", lambda c: c.fetch(claim_replay.TASKS_AGAIN, *columns, versions, worker_id), transaction=False
    )
    return await _runnable_claims(db, codec, rows, worker_id)
