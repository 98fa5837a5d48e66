"""The backlog gauges, refreshed by one query every SAYIIR_GAUGE_INTERVAL seconds."""

from __future__ import annotations

import asyncio

import structlog

from sayiir_grpc.db import Database
from sayiir_grpc.observability import Metrics
from sayiir_grpc.stores.backlog_store import Backlog, read_backlog

log = structlog.get_logger(__name__)


def publish(metrics: Metrics, backlog: Backlog) -> None:
    for status, count in backlog.workflows.items():
        metrics.workflows.labels(status).set(count)
    metrics.runnable_tasks.set(backlog.runnable_tasks)
    metrics.oldest_runnable_task_age.set(backlog.oldest_runnable_task_age_seconds)
    metrics.expired_claims.set(backlog.expired_claims)


async def backlog_loop(db: Database, metrics: Metrics, interval: float) -> None:
    """Refresh the gauges until cancelled; while the database fails they keep their last values."""
    while True:
        try:
            publish(metrics, await read_backlog(db))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # sayiir_grpc_database_up says the rest
            log.warning("backlog gauges not refreshed", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(interval)
