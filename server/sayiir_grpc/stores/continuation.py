"""A continued workflow's next completion in one statement.

A worker that keeps its workflow ("continue where you are") completes step
after step through the same server process (one stream, one connection).
The snapshot this process wrote at the last step is then still the stored
one, so the next completion need not lock and read it again: this module
keeps each continued workflow's snapshot as written (`ContinuationCache`),
and `complete_continued` applies the next completion to it and writes it in
one autocommit statement (`COMPLETE_CONTINUED`) that checks, under the
row locks, that the stored row is still exactly that version (history
version and blob hash) and that the worker still holds the live claim on
the task; with the idempotency key recorded in the same statement. One
round trip instead of BEGIN, lock and read, write, key, COMMIT.

Anything else (another version stored, the claim gone, an instance not
cached, a large blob) writes nothing and the caller takes the transaction
path (`task_claim_store.complete_task`), which decides every edge case as
before. A cached snapshot is never trusted without that check, so a stale
entry costs one statement, never a wrong write.

The completions that reach this process in one turn of its event loop (a
worker's batched session message, several sessions at once) go to
PostgreSQL together (`CompletionBatch`): one COMPLETE_CONTINUED execution
each, pipelined in one round trip and committed together, so the pool, the
protocol and PostgreSQL's commit are paid once per batch.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass

import asyncpg

from sayiir_common.codec import SnapshotCodec
from sayiir_common.ids import TaskId
from sayiir_common.model import AtTask, AvailableTask, InProgress, WorkflowSnapshot
from sayiir_grpc import limits, offload
from sayiir_grpc.stores.history import (
    LIVE_CLAIM,
    WRITE_MUTATION_RESULT,
    ClaimMove,
    encode_stripped,
    mutation_args,
    row_data_hash,
    snapshot_row_args,
    wakeup_payload,
    write_mutation_ctes,
)

# Entries kept per process, and the stored size of their blobs: a continued
# workflow is completed again within its claim's lifetime, so the oldest
# entries are the least likely to hit. The byte budget bounds the memory
# (a decoded snapshot takes a few times its blob).
MAX_ENTRIES = 20_000
MAX_BLOB_BYTES_KEPT = 16 * 1024 * 1024
# A snapshot this large goes through the worker process (offload) and the
# transaction path; the cache keeps small ones only.
MAX_BLOB_BYTES = offload.OFFLOAD_BYTES


# $1..$24 as WRITE_MUTATION; $25 the expected history version, $26 the
# expected blob hash; $27 the idempotency key (NULL: none), $28 the request
# hash, $29 and $30 the stored outcome when the claim moved and when not.
#
# Lock order as everywhere: the snapshot row (`s`, whose version and hash
# must match, re-checked on the newest row version after a lock wait), then
# the worker's live claim on the task (`cl`, evaluated after `s` since its
# filter reads `s`). Every write of WRITE_MUTATION hangs on `upd`, which
# hangs on `cl`: a mismatch anywhere writes nothing and returns no row.
def complete_continued_statement(lock: str = "FOR UPDATE") -> str:
    """COMPLETE_CONTINUED, its two row locks taken with `lock`."""
    return f"""
WITH s AS (
    SELECT 1 FROM sayiir_workflow_snapshots
    WHERE instance_id = $1 AND history_version = $25 AND data_hash = $26
    {lock}
),
cl AS (
    SELECT 1 FROM sayiir_workflow_claims c
    WHERE c.instance_id = $1 AND c.worker_id = $20::text AND c.task_id = $16::bytea AND {LIVE_CLAIM}
      AND EXISTS (SELECT 1 FROM s)
    {lock}
),
{write_mutation_ctes(" AND EXISTS (SELECT 1 FROM cl)")},
idempotency_key AS (
    INSERT INTO sayiir_grpc_idempotency_keys (request_key, rpc, request_hash, outcome)
    SELECT $27::text, 'CompleteTask', $28::bytea,
           CASE WHEN EXISTS (SELECT 1 FROM moved) THEN $29::bytea ELSE $30::bytea END
    FROM upd WHERE $27::text IS NOT NULL
)
{WRITE_MUTATION_RESULT}
"""


COMPLETE_CONTINUED = complete_continued_statement()

# In a batch, a row locked by someone else is skipped rather than waited
# for: its completion wrote nothing and takes the transaction path, which
# waits for it alone, so one held row never holds up the others of the batch.
COMPLETE_CONTINUED_IN_BATCH = complete_continued_statement("FOR UPDATE SKIP LOCKED")


@dataclass(slots=True)
class Continued:
    """A workflow as this process last wrote it, its claim kept by `worker_id`."""

    snapshot: WorkflowSnapshot
    history_version: int
    data_hash: bytes
    worker_id: str
    blob_bytes: int


class ContinuationCache:
    """The snapshots of continued workflows, by instance id (LRU, bounded in
    entries and in blob bytes)."""

    def __init__(self, max_entries: int = MAX_ENTRIES, max_bytes: int = MAX_BLOB_BYTES_KEPT) -> None:
        self._entries: OrderedDict[str, Continued] = OrderedDict()
        self._max = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0

    def keep(
        self, snapshot: WorkflowSnapshot, history_version: int, data_hash: bytes, worker_id: str, blob_bytes: int
    ) -> None:
        # An older entry of the instance goes either way; a large snapshot is not kept.
        self.drop(snapshot.instance_id)
        if blob_bytes >= MAX_BLOB_BYTES:
            return
        self._entries[snapshot.instance_id] = Continued(snapshot, history_version, data_hash, worker_id, blob_bytes)
        self._bytes += blob_bytes
        while len(self._entries) > self._max or self._bytes > self._max_bytes:
            _, oldest = self._entries.popitem(last=False)
            self._bytes -= oldest.blob_bytes

    def take(self, instance_id: str) -> Continued | None:
        """The entry, removed: it is mutated by the completion that takes it."""
        entry = self._entries.pop(instance_id, None)
        if entry is not None:
            self._bytes -= entry.blob_bytes
        return entry

    def drop(self, instance_id: str) -> None:
        self.take(instance_id)

    @property
    def blob_bytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, instance_id: str) -> bool:
        return instance_id in self._entries


# Completions per round trip at most; a larger turn's go as several batches, each on a connection of its own.
MAX_BATCH = 32

Pending = tuple[list[object], "asyncio.Future[asyncpg.Record | None]"]


class CompletionBatch:
    """COMPLETE_CONTINUED executions submitted in one turn of the event loop, run
    as one pipelined round trip (asyncpg's `fetchmany`: one Sync, so one
    implicit transaction: all of them commit, or none).

    Each submitter gets its own row (matched by instance id: one completion
    per instance at a time, since `ContinuationCache.take` hands an entry
    out once), or None when its execution wrote nothing (then it takes the
    transaction path; so does one whose row another transaction holds
    locked: COMPLETE_CONTINUED_IN_BATCH skips it). A batch that
    PostgreSQL refused (a repeated key's unique violation, a deadlock) wrote
    nothing, so each of its completions runs again alone and meets its own
    outcome; any other failure (a lost connection: the commit may have
    happened) is every submitter's, as it would have been alone. The batch
    runs in a task of its own: a submitter that goes away does not stop the
    others' writes."""

    def __init__(self, connection: Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]) -> None:
        # Where a batch takes its connection (`Database.connection`).
        self._connection = connection
        self._pending: list[Pending] = []
        self._running: set[asyncio.Task[None]] = set()

    def submit(self, args: list[object]) -> asyncio.Future[asyncpg.Record | None]:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[asyncpg.Record | None] = loop.create_future()
        if not self._pending:
            # After the tasks ready now: those that complete in this turn join.
            loop.call_soon(self._flush)
        self._pending.append((args, future))
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        # One lock order (instance id) for every batch: two batches never wait on each other in a cycle.
        pending.sort(key=lambda item: str(item[0][0]))
        for start in range(0, len(pending), MAX_BATCH):
            task = asyncio.create_task(self._run(pending[start : start + MAX_BATCH]))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[Pending]) -> None:
        try:
            async with self._connection() as conn:
                if len(batch) == 1:
                    row = await conn.fetchrow(COMPLETE_CONTINUED, *batch[0][0])
                    rows = [] if row is None else [row]
                else:
                    rows = await conn.fetchmany(COMPLETE_CONTINUED_IN_BATCH, [args for args, _ in batch])
        except asyncpg.PostgresError as exc:
            if len(batch) == 1:
                _fail(batch, exc)
            else:
                await asyncio.gather(*(self._run([item]) for item in batch))
            return
        except BaseException as exc:
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        written = {row["instance_id"]: row for row in rows}
        for args, future in batch:
            if not future.done():
                future.set_result(written.get(str(args[0])))


def _fail(batch: list[Pending], exc: BaseException) -> None:
    for _, future in batch:
        if future.done():
            continue
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """The call's idempotency key, its request hash, and how to serialize its reply."""

    key: str
    request_hash: bytes
    outcome: Callable[[AvailableTask | None], bytes]


# (next task id, its priority, its tags), as CompleteTask's request names it.
NextTask = tuple[TaskId, int | None, list[str]]


def apply_completion(
    snapshot: WorkflowSnapshot,
    task_id: TaskId,
    output: bytes,
    next_task: NextTask | None,
    final_output: bytes | None,
    claim_next: tuple[float, float] | None,
) -> ClaimMove | None:
    """Record `task_id`'s output on `snapshot` and move it on (or complete it);
    where the worker's claim should go when it keeps the workflow."""
    snapshot.mark_task_completed(task_id, output)
    snapshot.clear_retry_state(task_id)
    if next_task is None:
        snapshot.mark_completed(output if final_output is None else final_output)
        return None
    next_id, priority, tags = next_task
    snapshot.update_position(AtTask(next_id))
    snapshot.set_task_hint(priority, tags)
    if claim_next is None:
        return None
    ttl, aging = claim_next
    return ClaimMove(next_id, ttl, snapshot.current_task_priority(), aging)


def following_task(snapshot: WorkflowSnapshot, move: ClaimMove, output: bytes, version: int) -> AvailableTask:
    """The next task, claimed for the worker that kept the workflow (its input: the output just recorded)."""
    return AvailableTask(
        snapshot.instance_id, move.task_id, output, snapshot.definition_hash, snapshot.trace_parent, snapshot, version
    )


async def complete_continued(
    batch: CompletionBatch,
    codec: SnapshotCodec,
    cache: ContinuationCache,
    instance_id: str,
    task_id: TaskId,
    worker_id: str,
    output: bytes,
    next_task: NextTask | None,
    final_output: bytes | None,
    claim_next: tuple[float, float] | None,
    record: KeyRecord | None,
) -> tuple[bool, AvailableTask | None] | None:
    """Complete `task_id` on the cached snapshot in one statement.

    None when it cannot (nothing written: take the transaction path);
    otherwise what `task_claim_store.complete_task` returns: (True, the next
    task claimed for the worker, or None when the claim was released)."""
    entry = cache.take(instance_id)
    if entry is None:
        return None
    snapshot = entry.snapshot
    if (
        entry.worker_id != worker_id
        or not isinstance(snapshot.state, InProgress)
        or snapshot.current_task_id() != task_id
    ):
        return None
    move = apply_completion(snapshot, task_id, output, next_task, final_output, claim_next)
    limits.check_snapshot_fits(snapshot)
    blob, _ = encode_stripped(codec, snapshot)
    if len(blob) >= MAX_BLOB_BYTES:
        return None
    row_args = snapshot_row_args(snapshot, blob)
    version = entry.history_version + 1
    outcomes: list[bytes | None] = [None, None]
    if record is not None:
        moved_reply = record.outcome(following_task(snapshot, move, output, version)) if move else None
        outcomes = [moved_reply, record.outcome(None)]
    args = [
        *row_args,
        *mutation_args(version, (task_id, output), None, wakeup_payload(snapshot), worker_id, move),
        entry.history_version,
        entry.data_hash,
        None if record is None else record.key,
        None if record is None else record.request_hash,
        *outcomes,
    ]
    # To the database only now: a completion the cache cannot serve costs no round trip.
    row = await batch.submit(args)
    if row is None:
        return None
    if not row["moved"]:
        return True, None
    assert move is not None
    cache.keep(snapshot, version, row_data_hash(row_args), worker_id, len(blob))
    return True, following_task(snapshot, move, output, version)
