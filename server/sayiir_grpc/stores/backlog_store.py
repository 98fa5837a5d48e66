"""The backlog: one read-only statement behind the workflow and dispatch gauges.

"Runnable" is exactly what dispatch would offer an untagged worker now
(the fragments of `stores.dispatch`): in progress at a task or at a delay
that is over, no live claim, no pending cancel or pause. The in-progress
counts read partial indexes (the engine's and migration 0003's); counting
the finished ones reads them all (see the README); claims are few (one per
running task).
"""

from __future__ import annotations

from dataclasses import dataclass

from sayiir_common.model import STATUS_NAMES
from sayiir_grpc.db import Database
from sayiir_grpc.stores.dispatch import _AT_TASK, _DUE_DELAY
from sayiir_grpc.stores.history import ELIGIBLE, LIVE_CLAIM

# Dispatch binds $2 to the worker's tags; NULL is an untagged worker, who takes every task.
_RUNNABLE = f"(({_AT_TASK}) OR ({_DUE_DELAY})) AND {ELIGIBLE}".replace("$2::text[]", "NULL::text[]")

BACKLOG = f"""
WITH runnable AS (
    -- A task became runnable when its workflow was last saved, a delay when it ran out.
    SELECT CASE WHEN s.position_kind = 'AtDelay' THEN s.delay_wake_at ELSE s.updated_at END AS since
    FROM sayiir_workflow_snapshots s
    WHERE {_RUNNABLE}
),
by_status AS (
    SELECT 'InProgress' AS status, count(*) AS n FROM sayiir_workflow_snapshots WHERE status = 'InProgress'
    UNION ALL
    SELECT status, count(*) FROM sayiir_workflow_snapshots
    WHERE status IN ('Completed', 'Failed', 'Cancelled', 'Paused')
    GROUP BY status
)
SELECT (SELECT coalesce(array_agg(status), '{{}}') FROM by_status) AS statuses,
       (SELECT coalesce(array_agg(n), '{{}}') FROM by_status) AS counts,
       (SELECT count(*) FROM runnable) AS runnable,
       (SELECT coalesce(extract(epoch FROM now() - min(since)), 0) FROM runnable)::float8 AS oldest_age,
       (SELECT count(*) FROM sayiir_workflow_claims c WHERE NOT {LIVE_CLAIM}) AS expired_claims
"""


@dataclass(frozen=True, slots=True)
class Backlog:
    workflows: dict[str, int]  # every status in STATUS_NAMES, zero when none
    runnable_tasks: int
    oldest_runnable_task_age_seconds: float  # 0 when nothing is runnable
    expired_claims: int


async def read_backlog(db: Database) -> Backlog:
    row = await db.run("backlog", lambda conn: conn.fetchrow(BACKLOG), transaction=False)
    workflows = dict.fromkeys(STATUS_NAMES, 0)
    for status, count in zip(row["statuses"], row["counts"], strict=True):
        workflows[status] = int(count)
    return Backlog(
        workflows=workflows,
        runnable_tasks=int(row["runnable"]),
        oldest_runnable_task_age_seconds=max(0.0, float(row["oldest_age"])),
        expired_claims=int(row["expired_claims"]),
    )
