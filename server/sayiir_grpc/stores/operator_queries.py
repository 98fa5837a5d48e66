"""Operator reads: workflow lists, descriptions, history and claims.

Lists page by keyset on the instance id, and their WHERE clause is built
from the filter's criteria that are set, so each query the planner sees
names only real conditions and can use the index that fits
(migrations/0002_operator_indexes.sql). Values are always bound parameters;
the SQL text is assembled from the fixed fragments below only.
"""

from __future__ import annotations

import asyncpg

from sayiir_common.codec import SnapshotCodec
from sayiir_common.errors import NotFoundError, SerializationError
from sayiir_common.model import WorkflowSnapshot
from sayiir_common.operator_model import (
    ClaimInfo,
    CompletedTaskInfo,
    HistoryEntry,
    Overview,
    Page,
    PendingSignalInfo,
    RetryStateInfo,
    WorkflowDescription,
    WorkflowFilter,
    WorkflowSummary,
)
from sayiir_grpc.db import Database

SUMMARY_COLUMNS = """
s.instance_id, s.status, s.definition_hash, s.current_task_id, s.position_kind,
s.started_at, s.updated_at, s.error, s.task_tags, s.task_priority,
c.worker_id AS claimed_by, c.expires_at AS claim_expires_at
"""
SUMMARY_FROM = """
FROM sayiir_workflow_snapshots s
LEFT JOIN sayiir_workflow_claims c ON c.instance_id = s.instance_id
"""


class Params:
    """Positional parameters of a statement being assembled."""

    def __init__(self) -> None:
        self.values: list[object] = []

    def bind(self, value: object) -> str:
        self.values.append(value)
        return f"${len(self.values)}"


def filter_conditions(value: WorkflowFilter, params: Params) -> list[str]:
    """SQL conditions on `s` (the snapshots table) for the criteria that are set."""
    conditions: list[str] = []
    if len(value.statuses) == 1:
        # A plain equality lets the (status, instance_id) index return rows in page order.
        conditions.append(f"s.status = {params.bind(value.statuses[0])}")
    elif value.statuses:
        conditions.append(f"s.status = ANY({params.bind(list(value.statuses))}::text[])")
    if value.definition_hash is not None:
        conditions.append(f"s.definition_hash = {params.bind(value.definition_hash.as_bytes())}")
    if value.current_task_id is not None:
        conditions.append(f"s.current_task_id = {params.bind(value.current_task_id.as_bytes())}")
    if value.tag is not None:
        conditions.append(f"s.task_tags @> ARRAY[{params.bind(value.tag)}::text]")
    if value.created_after is not None:
        conditions.append(f"s.started_at >= {params.bind(value.created_after)}")
    if value.created_before is not None:
        conditions.append(f"s.started_at < {params.bind(value.created_before)}")
    if value.updated_after is not None:
        conditions.append(f"s.updated_at >= {params.bind(value.updated_after)}")
    if value.updated_before is not None:
        conditions.append(f"s.updated_at < {params.bind(value.updated_before)}")
    if value.error_contains is not None:
        # strpos, not LIKE: the operator's text is matched literally (% and _ included).
        conditions.append(f"strpos(lower(s.error), lower({params.bind(value.error_contains)})) > 0")
    return conditions


def _where(conditions: list[str]) -> str:
    return ("WHERE " + " AND ".join(conditions)) if conditions else ""


def matching_ids_sql(value: WorkflowFilter, after: str | None, limit: int) -> tuple[str, list[object]]:
    """The ids matching `value` after `after`, in order: the bulk actions' batches."""
    params = Params()
    conditions = filter_conditions(value, params)
    if after is not None:
        conditions.append(f"s.instance_id > {params.bind(after)}")
    sql = f"SELECT s.instance_id FROM sayiir_workflow_snapshots s {_where(conditions)} ORDER BY s.instance_id"
    return f"{sql} LIMIT {params.bind(limit)}", params.values


def count_sql(value: WorkflowFilter) -> tuple[str, list[object]]:
    params = Params()
    return f"SELECT count(*) FROM sayiir_workflow_snapshots s {_where(filter_conditions(value, params))}", params.values


def _summary(row: asyncpg.Record) -> WorkflowSummary:
    return WorkflowSummary(
        instance_id=row["instance_id"],
        status=row["status"],
        definition_hash=bytes(row["definition_hash"] or b""),
        current_task_id=None if row["current_task_id"] is None else bytes(row["current_task_id"]),
        position=row["position_kind"],
        created_at=row["started_at"],
        updated_at=row["updated_at"],
        error=row["error"],
        task_tags=tuple(row["task_tags"] or ()),
        task_priority=int(row["task_priority"]),
        claimed_by=row["claimed_by"],
        claim_expires_at=row["claim_expires_at"],
    )


def list_workflows_sql(value: WorkflowFilter, after: str | None, limit: int) -> tuple[str, list[object]]:
    """One page of summaries (bench/operator_scale.py EXPLAINs this very statement)."""
    params = Params()
    conditions = filter_conditions(value, params)
    if after is not None:
        conditions.append(f"s.instance_id > {params.bind(after)}")
    sql = (
        f"SELECT {SUMMARY_COLUMNS} {SUMMARY_FROM} {_where(conditions)} "
        f"ORDER BY s.instance_id LIMIT {params.bind(limit)}"
    )
    return sql, params.values


async def list_workflows(
    db: Database, value: WorkflowFilter, after: str | None, limit: int
) -> Page[WorkflowSummary, str]:
    sql, values = list_workflows_sql(value, after, limit)
    rows = await db.run("list_workflows", lambda c: c.fetch(sql, *values), transaction=False)
    items = [_summary(r) for r in rows]
    return Page(items, items[-1].instance_id if len(items) == limit else None)


DESCRIBE_SUMMARY = f"SELECT {SUMMARY_COLUMNS}, s.history_version {SUMMARY_FROM} WHERE s.instance_id = $1"
DESCRIBE_SIGNALS = """
SELECT kind, reason, requested_by, created_at FROM sayiir_workflow_signals
WHERE instance_id = $1 ORDER BY kind
"""
DESCRIBE_EVENTS = """
SELECT signal_name, count(*) AS n FROM sayiir_workflow_events
WHERE instance_id = $1 GROUP BY signal_name ORDER BY signal_name
"""
DESCRIBE_TASKS = """
SELECT task_id, completed_at, COALESCE(octet_length(output), 0) AS output_bytes FROM sayiir_workflow_tasks
WHERE instance_id = $1 AND status = 'completed'
ORDER BY completed_at NULLS FIRST, task_id
"""
DESCRIBE_BLOB = """
SELECT COALESCE(
    (SELECT h.data FROM sayiir_workflow_snapshot_history h WHERE h.instance_id = $1 AND h.version = $2),
    (SELECT s.data FROM sayiir_workflow_snapshots s WHERE s.instance_id = $1))
"""
COUNT_HISTORY = "SELECT count(*) FROM sayiir_workflow_snapshot_history WHERE instance_id = $1"


def _decoded(codec: SnapshotCodec, blob: bytes | None) -> WorkflowSnapshot | None:
    """The snapshot in `blob`, or None when it cannot be read: inspecting a
    workflow must still work when its blob is what is broken."""
    if blob is None:
        return None
    try:
        return codec.decode(bytes(blob))
    except SerializationError:
        return None


async def describe_workflow(db: Database, codec: SnapshotCodec, instance_id: str) -> WorkflowDescription:
    async def body(conn: asyncpg.Connection) -> WorkflowDescription:
        # One snapshot of the database for every part of the answer.
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            row = await conn.fetchrow(DESCRIBE_SUMMARY, instance_id)
            if row is None:
                raise NotFoundError(f"workflow instance not found: {instance_id}")
            signals = await conn.fetch(DESCRIBE_SIGNALS, instance_id)
            events = await conn.fetch(DESCRIBE_EVENTS, instance_id)
            tasks = await conn.fetch(DESCRIBE_TASKS, instance_id)
            blob = await conn.fetchval(DESCRIBE_BLOB, instance_id, row["history_version"])
            versions = await conn.fetchval(COUNT_HISTORY, instance_id)
        snapshot = _decoded(codec, blob)
        retries = [] if snapshot is None else list(snapshot.task_retries.items())
        return WorkflowDescription(
            summary=_summary(row),
            pending_signals=tuple(
                PendingSignalInfo(r["kind"], r["reason"], r["requested_by"], r["created_at"]) for r in signals
            ),
            buffered_events={r["signal_name"]: int(r["n"]) for r in events},
            completed_tasks=tuple(
                CompletedTaskInfo(bytes(r["task_id"]), r["completed_at"], int(r["output_bytes"])) for r in tasks
            ),
            retry_states=tuple(
                RetryStateInfo(
                    task_id.as_bytes(),
                    state.attempts,
                    state.last_error,
                    state.next_retry_at.to_datetime(),
                    state.last_failed_worker,
                )
                for task_id, state in retries
            ),
            history_versions=int(versions),
        )

    return await db.run("describe_workflow", body, transaction=False)


HISTORY_PAGE = """
SELECT version, created_at, status, current_task_id, octet_length(data) AS size,
       COALESCE(data_hash, sha256(data)) AS sha256, data
FROM sayiir_workflow_snapshot_history
WHERE instance_id = $1 AND version > $2
ORDER BY version
LIMIT $3
"""
HISTORY_VERSION = """
SELECT version, created_at, status, current_task_id, octet_length(data) AS size,
       COALESCE(data_hash, sha256(data)) AS sha256, data
FROM sayiir_workflow_snapshot_history
WHERE instance_id = $1 AND version = $2
"""
INSTANCE_EXISTS = "SELECT EXISTS (SELECT 1 FROM sayiir_workflow_snapshots WHERE instance_id = $1)"


def _history_entry(row: asyncpg.Record, snapshot: WorkflowSnapshot | None) -> HistoryEntry:
    return HistoryEntry(
        version=int(row["version"]),
        created_at=row["created_at"],
        status=row["status"],
        position=None if snapshot is None else snapshot.position_kind(),
        current_task_id=None if row["current_task_id"] is None else bytes(row["current_task_id"]),
        size=int(row["size"]),
        sha256=bytes(row["sha256"]),
    )


async def list_history(
    db: Database, codec: SnapshotCodec, instance_id: str, after_version: int, limit: int
) -> Page[HistoryEntry, int]:
    async def body(conn: asyncpg.Connection) -> list[asyncpg.Record]:
        rows: list[asyncpg.Record] = await conn.fetch(HISTORY_PAGE, instance_id, after_version, limit)
        if not rows and not await conn.fetchval(INSTANCE_EXISTS, instance_id):
            raise NotFoundError(f"workflow instance not found: {instance_id}")
        return rows

    rows = await db.run("list_history", body, transaction=False)
    # The position is only in the blob: each version of the page is decoded.
    items = [_history_entry(r, _decoded(codec, r["data"])) for r in rows]
    return Page(items, items[-1].version if len(items) == limit else None)


async def get_version(
    db: Database, codec: SnapshotCodec, instance_id: str, version: int
) -> tuple[HistoryEntry, WorkflowSnapshot]:
    row = await db.run("get_version", lambda c: c.fetchrow(HISTORY_VERSION, instance_id, version), transaction=False)
    if row is None:
        raise NotFoundError(f"history version {version} of workflow {instance_id} not found")
    snapshot = codec.decode(bytes(row["data"]))  # here an unreadable blob is the answer: DATA_LOSS
    return _history_entry(row, snapshot), snapshot


CLAIM_COLUMNS = """
instance_id, task_id, worker_id, claimed_at, expires_at,
(expires_at IS NOT NULL AND expires_at <= now()) AS expired
"""


def claim_info(row: asyncpg.Record) -> ClaimInfo:
    return ClaimInfo(
        instance_id=row["instance_id"],
        task_id=bytes(row["task_id"]),
        worker_id=row["worker_id"],
        claimed_at=row["claimed_at"],
        expires_at=row["expires_at"],
        expired=bool(row["expired"]),
    )


async def list_claims(
    db: Database, worker_id: str | None, expired_only: bool, after: str | None, limit: int
) -> Page[ClaimInfo, str]:
    params = Params()
    conditions: list[str] = []
    if worker_id is not None:
        conditions.append(f"worker_id = {params.bind(worker_id)}")
    if expired_only:
        conditions.append("expires_at IS NOT NULL AND expires_at <= now()")
    if after is not None:
        conditions.append(f"instance_id > {params.bind(after)}")
    sql = (
        f"SELECT {CLAIM_COLUMNS} FROM sayiir_workflow_claims {_where(conditions)} "
        f"ORDER BY instance_id LIMIT {params.bind(limit)}"
    )
    rows = await db.run("list_claims", lambda c: c.fetch(sql, *params.values), transaction=False)
    items = [claim_info(r) for r in rows]
    return Page(items, items[-1].instance_id if len(items) == limit else None)


STATUS_COUNTS = "SELECT status, count(*) AS n FROM sayiir_workflow_snapshots GROUP BY status"
# Ready to run: in progress at a task, and no live claim on it.
RUNNABLE = """
SELECT count(*) AS n, min(s.updated_at) AS oldest FROM sayiir_workflow_snapshots s
WHERE s.status = 'InProgress' AND s.position_kind = 'AtTask'
  AND NOT EXISTS (SELECT 1 FROM sayiir_workflow_claims c
                  WHERE c.instance_id = s.instance_id AND (c.expires_at IS NULL OR c.expires_at > now()))
"""
RECENT_FAILURES = f"""
SELECT {SUMMARY_COLUMNS} {SUMMARY_FROM} WHERE s.status = 'Failed' ORDER BY s.updated_at DESC LIMIT $1
"""


async def overview(db: Database, failures: int = 10) -> Overview:
    async def body(conn: asyncpg.Connection) -> Overview:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            counts = await conn.fetch(STATUS_COUNTS)
            runnable = await conn.fetchrow(RUNNABLE)
            failed = await conn.fetch(RECENT_FAILURES, failures)
        return Overview(
            by_status={r["status"]: int(r["n"]) for r in counts},
            runnable=int(runnable["n"]),
            oldest_runnable_since=runnable["oldest"],
            recent_failures=tuple(_summary(r) for r in failed),
        )

    return await db.run("overview", body, transaction=False)


# The first `$2` bytes of each stored output, and its full size.
OUTPUT_HEADS = """
SELECT task_id, substring(output FROM 1 FOR $2) AS head, octet_length(output) AS size
FROM sayiir_workflow_tasks
WHERE instance_id = $1 AND status = 'completed' AND output IS NOT NULL
"""


async def output_heads(db: Database, instance_id: str, max_bytes: int) -> dict[bytes, tuple[bytes, int]]:
    """task id -> (the output's first `max_bytes` bytes, its size)."""
    rows = await db.run("output_heads", lambda c: c.fetch(OUTPUT_HEADS, instance_id, max_bytes), transaction=False)
    return {bytes(r["task_id"]): (bytes(r["head"]), int(r["size"])) for r in rows}
