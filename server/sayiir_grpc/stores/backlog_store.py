"""The backlog: one read-only statement behind the workflow and dispatch gauges.

"Runnable" is exactly what dispatch would offer an untagged worker now
(the fragments of `stores.dispatch`): in progress at a task or at a delay
that is over, no live claim, no pending cancel or pause. The in-progress
counts read partial indexes (the engine's and migration 0003's); the
counts per status are index-only scans, proportional to the rows counted
(see the README); claims are few (one per running task).
"""

from __future__ import annotations

from dataclasses import dataclass

from sayiir_common.model import STATUS_NAMES
from sayiir_grpc.db import Database
from sayiir_grpc.stores.dispatch import _AT_TASK, _DUE_DELAY
from sayiir_grpc.stores.history import ELIGIBLE, LIVE_CLAIM

# Dispatch binds $2 to the worker's tags; NULL is an untagged worker, who takes every task.
_RUNNABLE = f"(({_AT_TASK}) OR ({_DUE_DELAY})) AND {ELIGIBLE}".replace("$2::text[]", "NULL::text[]")

# One count per status, each its own index-only scan (the engine's in-progress
# index, migration 0005's for the others): a GROUP BY over all of them would
# read the table. Status names are the model's constants, never input.
_COUNT_BY_STATUS = ", ".join(
    f"(SELECT count(*) FROM sayiir_workflow_snapshots WHERE status = '{status}')" for status in STATUS_NAMES
)

BACKLOG = f"""
WITH runnable AS (
    -- A task became runnable when its workflow was last saved, a delay when it ran out.
    SELECT CASE WHEN s.position_kind = 'AtDelay' THEN s.delay_wake_at ELSE s.updated_at END AS since
    FROM sayiir_workflow_snapshots s
    WHERE {_RUNNABLE}
)
SELECT ARRAY[{_COUNT_BY_STATUS}] AS counts,
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
    workflows = {status: int(count) for status, count in zip(STATUS_NAMES, row["counts"], strict=True)}
    return Backlog(
        workflows=workflows,
        runnable_tasks=int(row["runnable"]),
        oldest_runnable_task_age_seconds=max(0.0, float(row["oldest_age"])),
        expired_claims=int(row["expired_claims"]),
    )
