"""Operator actions: cancel, pause, unpause, send an event, delete; and the
forced release of a claim.

Each instance is acted on in a transaction of its own, through the same
store code the SignalStore and SnapshotStore calls run, so an operator's
cancel is exactly a worker-visible cancel request. A filtered action works
through the matches in bounded batches (one batch per call, keyset on the
instance id), so no call holds the database for long whatever the filter
matches.
"""

from __future__ import annotations

import enum

import asyncpg

from sayiir_common.codec import SnapshotCodec
from sayiir_common.errors import NotFoundError
from sayiir_common.model import SignalKind, SignalRequest
from sayiir_common.operator_model import ActionParams, ActionResult, ClaimInfo, WorkflowAction, WorkflowFilter
from sayiir_grpc.db import Database
from sayiir_grpc.stores.operator_queries import CLAIM_COLUMNS, claim_info, count_sql, matching_ids_sql
from sayiir_grpc.stores.signal_store import (
    LOCK_STATUS,
    apply_signal,
    send_event_on,
    store_signal_on,
    unpause_on,
)
from sayiir_grpc.stores.snapshot_store import delete_snapshot_on

LIVE_CLAIM = """
SELECT EXISTS (SELECT 1 FROM sayiir_workflow_claims
               WHERE instance_id = $1 AND (expires_at IS NULL OR expires_at > now()))
"""
RELEASE_CLAIM = f"DELETE FROM sayiir_workflow_claims WHERE instance_id = $1 RETURNING {CLAIM_COLUMNS}"

SIGNAL_OF = {WorkflowAction.CANCEL: SignalKind.CANCEL, WorkflowAction.PAUSE: SignalKind.PAUSE}


class Outcome(enum.Enum):
    APPLIED = "applied"
    SKIPPED = "skipped"
    NOT_FOUND = "not_found"


async def act_on_one(
    db: Database, codec: SnapshotCodec, action: WorkflowAction, instance_id: str, params: ActionParams
) -> Outcome:
    """Apply `action` to one instance in one transaction."""

    async def body(conn: asyncpg.Connection) -> Outcome:
        # The row lock taken here is held to the end: the state checked is
        # the state acted on.
        status = await conn.fetchval(LOCK_STATUS, instance_id)
        if status is None:
            return Outcome.NOT_FOUND
        if not action.allowed_from(status):
            return Outcome.SKIPPED
        if action in SIGNAL_OF:
            kind = SIGNAL_OF[action]
            await store_signal_on(conn, instance_id, kind, SignalRequest(params.reason, params.requested_by))
            if not await conn.fetchval(LIVE_CLAIM, instance_id):
                # No worker holds it, so none would apply the request at a
                # task boundary soon: apply it now, as dispatch would.
                await apply_signal(conn, codec, instance_id, kind, None)
        elif action is WorkflowAction.UNPAUSE:
            await unpause_on(conn, codec, instance_id)
        elif action is WorkflowAction.SEND_EVENT:
            await send_event_on(conn, codec, instance_id, params.signal_name, params.payload)
        else:
            await delete_snapshot_on(conn, instance_id)
        return Outcome.APPLIED

    # Not repeated after a dropped connection: a buffered event must not be
    # buffered twice.
    return await db.run(f"operator_{action.name.lower()}", body, repeatable=False)


async def _act_on_all(
    db: Database, codec: SnapshotCodec, action: WorkflowAction, ids: list[str], params: ActionParams
) -> ActionResult:
    result = ActionResult(matched=len(ids))
    for instance_id in ids:
        outcome = await act_on_one(db, codec, action, instance_id, params)
        if outcome is Outcome.APPLIED:
            result.applied += 1
        elif outcome is Outcome.SKIPPED:
            result.skipped += 1
        else:
            result.not_found += 1
    return result


COUNT_NAMED = "SELECT count(*) FROM sayiir_workflow_snapshots WHERE instance_id = ANY($1::text[])"


async def act_on_instances(
    db: Database, codec: SnapshotCodec, action: WorkflowAction, ids: list[str], params: ActionParams, dry_run: bool
) -> ActionResult:
    if dry_run:
        found = await db.run("operator_count", lambda c: c.fetchval(COUNT_NAMED, ids), transaction=False)
        return ActionResult(matched=len(ids), not_found=len(ids) - int(found))
    return await _act_on_all(db, codec, action, ids, params)


async def act_on_filter(
    db: Database,
    codec: SnapshotCodec,
    action: WorkflowAction,
    value: WorkflowFilter,
    params: ActionParams,
    *,
    dry_run: bool,
    after: str | None,
    batch_size: int,
) -> tuple[ActionResult, str | None]:
    """One batch of a filtered action; returns its counts and the next cursor (None when done)."""
    if dry_run:
        sql, values = count_sql(value)
        matched = await db.run("operator_count", lambda c: c.fetchval(sql, *values), transaction=False)
        return ActionResult(matched=int(matched)), None
    sql, values = matching_ids_sql(value, after, batch_size)
    rows = await db.run("operator_batch", lambda c: c.fetch(sql, *values), transaction=False)
    ids = [r["instance_id"] for r in rows]
    result = await _act_on_all(db, codec, action, ids, params)
    return result, (ids[-1] if len(ids) == batch_size else None)


async def release_claim(db: Database, instance_id: str) -> ClaimInfo:
    """Delete the instance's claim, whoever holds it; the worker finds it lost at its next call."""
    row = await db.run("operator_release_claim", lambda c: c.fetchrow(RELEASE_CLAIM, instance_id), transaction=False)
    if row is None:
        raise NotFoundError(f"no claim on workflow instance {instance_id}")
    return claim_info(row)
