"""SignalStore: cancel/pause requests, external events, and the composites.

Every composite locks the instance's snapshot row first (history.LOCK_AND_READ)
and only then touches its signal rows. One lock order everywhere (snapshot,
then signal) means a composite and a concurrent store_signal or save queue
behind each other instead of deadlocking.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from sayiir_common.codec import SnapshotCodec
from sayiir_common.errors import CannotCancelError, CannotPauseError, NotFoundError
from sayiir_common.ids import TaskId
from sayiir_common.model import (
    AtSignal,
    AtTask,
    ControlSignal,
    InProgress,
    SignalKind,
    SignalRequest,
    Timestamp,
    WorkflowSnapshot,
)
from sayiir_grpc.db import Database
from sayiir_grpc.stores.history import lock_for_mutation, write_mutation

# store_signal step 1: lock the row so no save can make the workflow terminal
# between this check and the insert below.
LOCK_STATUS = "SELECT status FROM sayiir_workflow_snapshots WHERE instance_id = $1 FOR UPDATE"

# At most one request per kind: a second one replaces reason and requester.
UPSERT_SIGNAL = """
INSERT INTO sayiir_workflow_signals (instance_id, kind, reason, requested_by)
VALUES ($1, $2, $3, $4)
ON CONFLICT (instance_id, kind) DO UPDATE SET
    reason = EXCLUDED.reason, requested_by = EXCLUDED.requested_by, created_at = now()
"""

GET_SIGNAL = """
SELECT reason, requested_by, created_at FROM sayiir_workflow_signals
WHERE instance_id = $1 AND kind = $2
"""

CLEAR_SIGNAL = "DELETE FROM sayiir_workflow_signals WHERE instance_id = $1 AND kind = $2"

# Taking the request is deleting it: under the snapshot row lock, the first
# composite gets the row and every racing one finds it gone, so a signal is
# applied exactly once.
TAKE_SIGNAL = """
DELETE FROM sayiir_workflow_signals WHERE instance_id = $1 AND kind = $2
RETURNING reason, requested_by
"""

# The cheap probe composites start with: most checks find nothing and end
# here, without locking anything.
PENDING_KINDS = "SELECT kind FROM sayiir_workflow_signals WHERE instance_id = $1"

BUFFER_EVENT = "INSERT INTO sayiir_workflow_events (instance_id, signal_name, payload) VALUES ($1, $2, $3)"

# FIFO by id. SKIP LOCKED lets concurrent consumers take different events
# instead of queueing on the oldest one; the DELETE makes each event go to
# exactly one of them.
CONSUME_EVENT = """
DELETE FROM sayiir_workflow_events
WHERE id = (
    SELECT id FROM sayiir_workflow_events
    WHERE instance_id = $1 AND signal_name = $2
    ORDER BY id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING payload
"""

# Which statuses refuse which signal (the original's validate_signal_allowed).
REFUSED = {
    SignalKind.CANCEL: frozenset({"Completed", "Failed"}),
    SignalKind.PAUSE: frozenset({"Completed", "Failed", "Cancelled"}),
}


@dataclass(slots=True)
class EventOutcome:
    resumed: bool


async def store_signal_on(conn: asyncpg.Connection, instance_id: str, kind: SignalKind, request: SignalRequest) -> None:
    """store_signal inside the caller's transaction."""
    status = await conn.fetchval(LOCK_STATUS, instance_id)
    if status is None:
        raise NotFoundError(f"workflow instance not found: {instance_id}")
    if status in REFUSED[kind]:
        error = CannotCancelError if kind is SignalKind.CANCEL else CannotPauseError
        raise error(f"cannot {kind.value.lower()} workflow {instance_id}: it is {status}")
    await conn.execute(UPSERT_SIGNAL, instance_id, kind.value, request.reason, request.requested_by)


async def store_signal(db: Database, instance_id: str, kind: SignalKind, request: SignalRequest) -> None:
    await db.run("store_signal", lambda conn: store_signal_on(conn, instance_id, kind, request))


async def get_signal(db: Database, instance_id: str, kind: SignalKind) -> SignalRequest | None:
    row = await db.read("get_signal", lambda c: c.fetchrow(GET_SIGNAL, instance_id, kind.value))
    if row is None:
        return None
    return SignalRequest(row["reason"], row["requested_by"], Timestamp.from_datetime(row["created_at"]))


async def clear_signal(db: Database, instance_id: str, kind: SignalKind) -> None:
    await db.run("clear_signal", lambda c: c.execute(CLEAR_SIGNAL, instance_id, kind.value), transaction=False)


def _resume_at_signal(snapshot: WorkflowSnapshot, signal_name: str, payload: bytes) -> TaskId | None:
    """Resume a snapshot parked at `signal_name`; returns the signal node, or None."""
    state = snapshot.state
    if not (isinstance(state, InProgress) and isinstance(state.position, AtSignal)):
        return None
    position = state.position
    if position.signal_name != signal_name:
        return None
    snapshot.mark_task_completed(position.signal_id, payload)
    if position.next_task_id is not None:
        snapshot.update_position(AtTask(position.next_task_id))
    else:
        # The signal was the last node: its payload is the workflow's output.
        snapshot.mark_completed(payload)
    return position.signal_id


async def send_event_on(
    conn: asyncpg.Connection, codec: SnapshotCodec, instance_id: str, signal_name: str, payload: bytes
) -> EventOutcome:
    """send_event inside the caller's transaction."""
    # The lock makes "is it parked at this signal?" and the resume one
    # step: a concurrent save cannot move the workflow in between.
    locked = await lock_for_mutation(conn, codec, instance_id)
    if locked is not None and locked.status == "InProgress":
        signal_id = _resume_at_signal(locked.snapshot, signal_name, payload)
        if signal_id is not None:
            await write_mutation(conn, codec, locked, task_output=(signal_id, payload))
            return EventOutcome(resumed=True)
    await conn.execute(BUFFER_EVENT, instance_id, signal_name, payload)
    return EventOutcome(resumed=False)


async def send_event(
    db: Database, codec: SnapshotCodec, instance_id: str, signal_name: str, payload: bytes
) -> EventOutcome:
    return await db.run(
        "send_event", lambda conn: send_event_on(conn, codec, instance_id, signal_name, payload), repeatable=False
    )


async def consume_event(db: Database, instance_id: str, signal_name: str) -> bytes | None:
    payload = await db.run(
        "consume_event",
        lambda c: c.fetchval(CONSUME_EVENT, instance_id, signal_name),
        transaction=False,
        repeatable=False,
    )
    return None if payload is None else bytes(payload)


async def apply_signal(
    conn: asyncpg.Connection,
    codec: SnapshotCodec,
    instance_id: str,
    kind: SignalKind,
    interrupted_at_task: TaskId | None,
) -> bool:
    """Apply a pending signal of `kind` inside the caller's transaction."""
    locked = await lock_for_mutation(conn, codec, instance_id)
    if locked is None or locked.status != "InProgress":
        # Not applicable now: leave the request pending (a paused workflow
        # is cancelled once it resumes, as in the original).
        return False
    request = await conn.fetchrow(TAKE_SIGNAL, instance_id, kind.value)
    if request is None:
        return False
    snapshot = locked.snapshot
    if kind is SignalKind.CANCEL:
        snapshot.mark_cancelled(request["reason"], request["requested_by"], interrupted_at_task)
        await write_mutation(conn, codec, locked, close_active_tasks_as="cancelled")
    else:
        snapshot.mark_paused(SignalRequest(request["reason"], request["requested_by"]))
        await write_mutation(conn, codec, locked)
    return True


async def check_and_cancel(
    db: Database, codec: SnapshotCodec, instance_id: str, interrupted_at_task: TaskId | None
) -> bool:
    async def body(conn: asyncpg.Connection) -> bool:
        return await apply_signal(conn, codec, instance_id, SignalKind.CANCEL, interrupted_at_task)

    if SignalKind.CANCEL.value not in await _pending(db, instance_id):
        return False
    return await db.run("check_and_cancel", body, repeatable=False)


async def check_and_pause(db: Database, codec: SnapshotCodec, instance_id: str) -> bool:
    async def body(conn: asyncpg.Connection) -> bool:
        return await apply_signal(conn, codec, instance_id, SignalKind.PAUSE, None)

    if SignalKind.PAUSE.value not in await _pending(db, instance_id):
        return False
    return await db.run("check_and_pause", body, repeatable=False)


async def _pending(db: Database, instance_id: str) -> set[str]:
    rows = await db.run("signal_probe", lambda c: c.fetch(PENDING_KINDS, instance_id), transaction=False)
    return {r["kind"] for r in rows}


async def check_control_signals(
    db: Database, codec: SnapshotCodec, instance_id: str, interrupted_at_task: TaskId | None
) -> ControlSignal | None:
    """Cancel wins over pause; both are tried in one transaction."""
    pending = await _pending(db, instance_id)
    if not pending:
        return None

    async def body(conn: asyncpg.Connection) -> ControlSignal | None:
        if SignalKind.CANCEL.value in pending and await apply_signal(
            conn, codec, instance_id, SignalKind.CANCEL, interrupted_at_task
        ):
            return ControlSignal.CANCELLED
        if SignalKind.PAUSE.value in pending and await apply_signal(conn, codec, instance_id, SignalKind.PAUSE, None):
            return ControlSignal.PAUSED
        return None

    return await db.run("check_control_signals", body, repeatable=False)


async def unpause_on(conn: asyncpg.Connection, codec: SnapshotCodec, instance_id: str) -> WorkflowSnapshot:
    """unpause inside the caller's transaction."""
    locked = await lock_for_mutation(conn, codec, instance_id)
    if locked is None:
        raise NotFoundError(f"workflow instance not found: {instance_id}")
    if locked.status != "Paused":
        raise CannotPauseError(f"workflow {instance_id} is not paused (current state: {locked.status})")
    locked.snapshot.mark_unpaused()
    await write_mutation(conn, codec, locked)
    return locked.snapshot


async def unpause(db: Database, codec: SnapshotCodec, instance_id: str) -> WorkflowSnapshot:
    return await db.run("unpause", lambda conn: unpause_on(conn, codec, instance_id), repeatable=False)
