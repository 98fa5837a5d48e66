"""Retention: purge finished workflows with every row they own, in small batches.

A batch is one transaction of two statements. The first locks up to
`batch_size` of the oldest rows of one finished status past their period,
FOR UPDATE SKIP LOCKED: a replica purging at the same time takes other rows
(each row is deleted once, by one of them), and a row some store call holds
is left for the next round instead of making either side wait. The second
deletes those instances from every child table and the snapshot table; it
runs after the locks are held, so it sees every row a writer committed
before (as `delete_snapshot` does). Only statuses in TERMINAL_STATUSES are
ever selected: in-progress and paused workflows are never touched.
"""

from __future__ import annotations

import asyncpg

from sayiir_common.model import TERMINAL_STATUSES
from sayiir_grpc.db import Database
from sayiir_grpc.stores import WORKFLOW_CHILD_TABLES

DEFAULT_BATCH_SIZE = 500

# $1 status, $2 seconds since the last update. Served by the partial index
# of migration 0005 (status, updated_at).
_PAST_PERIOD = "status = $1 AND updated_at < now() - make_interval(secs => $2::float8)"

LOCK_BATCH = f"""
SELECT instance_id FROM sayiir_workflow_snapshots
WHERE {_PAST_PERIOD}
ORDER BY updated_at
LIMIT $3
FOR UPDATE SKIP LOCKED
"""

COUNT_PAST_PERIOD = f"SELECT count(*) FROM sayiir_workflow_snapshots WHERE {_PAST_PERIOD}"

# Table names come from the WORKFLOW_CHILD_TABLES constant, never from input.
DELETE_BATCH = (
    "WITH "
    + "".join(
        f"d{i} AS (DELETE FROM {table} WHERE instance_id = ANY($1::text[])), "
        for i, table in enumerate(WORKFLOW_CHILD_TABLES)
    )
    + "del AS (DELETE FROM sayiir_workflow_snapshots WHERE instance_id = ANY($1::text[]) RETURNING 1) "
    + "SELECT count(*) FROM del"
)


def _check_status(status: str) -> None:
    # The last guard before a DELETE: callers parse statuses already.
    if status not in TERMINAL_STATUSES:
        raise ValueError(f"only finished workflows are purged, not {status}")


async def purge_batch(db: Database, status: str, older_than_s: float, batch_size: int = DEFAULT_BATCH_SIZE) -> int:
    """Delete up to `batch_size` workflows of `status` not updated for `older_than_s` seconds; how many."""
    _check_status(status)

    async def body(conn: asyncpg.Connection) -> int:
        rows = await conn.fetch(LOCK_BATCH, status, older_than_s, batch_size)
        if not rows:
            return 0
        return int(await conn.fetchval(DELETE_BATCH, [r["instance_id"] for r in rows]))

    return await db.run("purge", body)


async def count_purgeable(db: Database, status: str, older_than_s: float) -> int:
    """How many workflows a purge of `status` older than `older_than_s` would delete now (the dry run)."""
    _check_status(status)
    count = await db.run(
        "purge_dry_run", lambda conn: conn.fetchval(COUNT_PAST_PERIOD, status, older_than_s), transaction=False
    )
    return int(count)
