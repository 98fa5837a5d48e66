"""Retention against the real PostgreSQL: the purge, its dry run, replicas purging together, the command.

Finished workflows are cloned in bulk (SQL) from one the service really
finished, with a row in every child table each, and backdated; the workflows
that must survive (in progress or paused, just as old) are saved through the
service and backdated the same way.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Awaitable, Callable

import asyncpg
import pytest
from test_operations import scrape

from conftest import SAYIIR_TABLES, start_service
from sayiir_client import AtTask, GrpcBackend, SignalKind, SignalRequest, TaskId, WorkflowSnapshot, connect
from sayiir_grpc.db import Database, PoolOptions
from sayiir_grpc.retention import RetentionPolicy, parse_policy, purge_policy
from sayiir_grpc.stores.retention_store import count_purgeable

STEP = TaskId.sha256("step")
FINISHED = ("Completed", "Failed", "Cancelled")

# One row in every table for each of $1 clones of instance $2 (a finished
# workflow saved through the service), named $3-00000 ..., with status
# FINISHED[n % 3] and last updated $4 days ago.
CLONE = """
WITH n AS (SELECT g, $3 || '-' || lpad(g::text, 5, '0') AS id,
                  (ARRAY['Completed','Failed','Cancelled'])[g % 3 + 1] AS st
           FROM generate_series(0, $1 - 1) g),
snap AS (
    INSERT INTO sayiir_workflow_snapshots (instance_id, status, definition_hash, current_task_id,
        completed_task_count, error, started_at, completed_at, updated_at, position_kind, history_version, data_hash)
    SELECT n.id, n.st, s.definition_hash, s.current_task_id, s.completed_task_count, s.error,
           now() - make_interval(days => $4 + 1), now() - make_interval(days => $4), now() - make_interval(days => $4),
           s.position_kind, s.history_version, s.data_hash
    FROM n, sayiir_workflow_snapshots s WHERE s.instance_id = $2
),
hist AS (
    INSERT INTO sayiir_workflow_snapshot_history (instance_id, version, status, current_task_id, data, data_hash)
    SELECT n.id, h.version, h.status, h.current_task_id, h.data, h.data_hash
    FROM n, sayiir_workflow_snapshot_history h WHERE h.instance_id = $2
),
tasks AS (
    INSERT INTO sayiir_workflow_tasks (instance_id, task_id, status, completed_at, output)
    SELECT n.id, t.task_id, t.status, t.completed_at, t.output
    FROM n, sayiir_workflow_tasks t WHERE t.instance_id = $2
),
events AS (
    INSERT INTO sayiir_workflow_events (instance_id, signal_name, payload) SELECT n.id, 'late', '\\x01' FROM n
),
signals AS (
    INSERT INTO sayiir_workflow_signals (instance_id, kind) SELECT n.id, 'Cancel' FROM n WHERE n.g % 10 = 0
)
INSERT INTO sayiir_workflow_claims (instance_id, task_id, worker_id, expires_at)
SELECT n.id, '\\x00', 'dead-worker', now() - interval '1 day' FROM n WHERE n.g % 10 = 0
"""


async def finished_template(client: GrpcBackend, instance_id: str) -> None:
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "retention-v1", b'"in"')
    snapshot.update_position(AtTask(STEP))
    await client.save_snapshot(snapshot)
    await client.save_task_result(instance_id, STEP, b'"out"')
    snapshot = await client.load_snapshot(instance_id)
    snapshot.mark_completed(b'"done"')
    await client.save_snapshot(snapshot)


async def clone_finished(pg: asyncpg.Connection, template: str, count: int, prefix: str, days_ago: int) -> None:
    await pg.execute(CLONE, count, template, prefix, days_ago)


async def backdate(pg: asyncpg.Connection, prefix: str, days_ago: int) -> None:
    await pg.execute(
        "UPDATE sayiir_workflow_snapshots SET updated_at = now() - make_interval(days => $2) "
        "WHERE instance_id LIKE $1 || '%'",
        prefix,
        days_ago,
    )


async def rows_of(pg: asyncpg.Connection, prefix: str) -> dict[str, list[str]]:
    """Every row of every table for the instances named `prefix...`, as text (to compare before and after)."""
    found = {}
    for table in SAYIIR_TABLES:
        rows = await pg.fetch(
            f"SELECT t::text AS r FROM {table} t WHERE instance_id LIKE $1 || '%' ORDER BY 1",
            prefix,
        )
        found[table] = [r["r"] for r in rows]
    return found


async def table_counts(pg: asyncpg.Connection) -> dict[str, int]:
    return {table: await pg.fetchval(f"SELECT count(*) FROM {table}") for table in SAYIIR_TABLES}


async def seed_protected(client: GrpcBackend, pg: asyncpg.Connection) -> None:
    """40 in-progress and 40 paused workflows, each with a signal, an event and a claim, 30 days old."""
    for i in range(40):
        running = WorkflowSnapshot.with_initial_input(f"keep-running-{i:02d}", "retention-v1", b'"in"')
        running.update_position(AtTask(STEP))
        await client.save_snapshot(running)
        assert await client.claim_task(running.instance_id, STEP, "slow-worker", None)
        await client.send_event(running.instance_id, "approval", b"yes")
        # Held by its worker (who applies it), so dispatch leaves it pending.
        await client.store_signal(running.instance_id, SignalKind.CANCEL, SignalRequest("stop", "ops"))
        paused = WorkflowSnapshot.with_initial_input(f"keep-paused-{i:02d}", "retention-v1", b'"in"')
        paused.update_position(AtTask(STEP))
        paused.mark_paused(reason="maintenance", paused_by="ops")
        await client.save_snapshot(paused)
        await client.send_event(paused.instance_id, "approval", b"later")
    await backdate(pg, "keep-", 30)


FAST_POOL = PoolOptions(max_connections=2, min_connections=1)
WEEK = 7 * 86_400.0


def week_policy() -> RetentionPolicy:
    return RetentionPolicy(tuple((status, WEEK) for status in FINISHED))


async def seed_jobs(client: GrpcBackend, count: int) -> None:
    for i in range(count):
        job = WorkflowSnapshot.with_initial_input(f"job-{i:04d}", "retention-v1", b'"in"')
        job.update_position(AtTask(STEP))
        await client.save_snapshot(job)


async def test_purge_of_ten_thousand_while_workers_run_touches_nothing_in_progress_or_paused(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    url = await make_database()
    running = await start_service(url, pool_max_connections=8)
    pg = await asyncpg.connect(url)
    db = await Database.connect(url, FAST_POOL)
    try:
        target = f"127.0.0.1:{running.port}"
        async with connect(target, watch_wakeups=False) as client:
            await finished_template(client, "template")
            await seed_protected(client, pg)
            await seed_jobs(client, 600)
        await clone_finished(pg, "template", 10_000, "old", days_ago=8)
        await clone_finished(pg, "template", 90, "recent", days_ago=1)
        protected = await rows_of(pg, "keep-")
        assert all(protected.values()), {t: len(r) for t, r in protected.items()}

        # The dry run counts what is past its period and changes nothing.
        before = await table_counts(pg)
        would = {status: await count_purgeable(db, status, seconds) for status, seconds in week_policy().periods}
        assert would == {"Completed": 3334, "Failed": 3333, "Cancelled": 3333}
        assert await table_counts(pg) == before

        # Workers run the 600 jobs (fast path) while the purge runs.
        purging = asyncio.Event()
        purge_done = asyncio.Event()
        executions: list[str] = []
        during_purge: list[str] = []

        async def worker(name: str) -> None:
            async with connect(target, watch_wakeups=False) as worker_client:
                while True:
                    tasks = await worker_client.claim_available_tasks(name, 5, 30)
                    if not tasks and purge_done.is_set():
                        return
                    for task in tasks:
                        await asyncio.sleep(0.002)  # the task's own work
                        assert await worker_client.complete_task(task.instance_id, task.task_id, name, b'"ok"')
                        executions.append(task.instance_id)
                        if purging.is_set() and not purge_done.is_set():
                            during_purge.append(task.instance_id)
                    if not tasks:
                        await asyncio.sleep(0.02)

        workers = [asyncio.create_task(worker(f"worker-{i}")) for i in range(4)]
        await asyncio.sleep(0.2)
        purged: dict[str, int] = {}
        purging.set()
        counts = await purge_policy(db, week_policy(), on_purged=lambda s, n: purged.update({s: purged.get(s, 0) + n}))
        purge_done.set()
        await asyncio.wait_for(asyncio.gather(*workers), 120)

        assert counts == would == purged
        assert during_purge, "no worker finished a task while the purge ran"
        assert sorted(executions) == [f"job-{i:04d}" for i in range(600)]  # each exactly once
        for table in SAYIIR_TABLES:
            left = await pg.fetchval(f"SELECT count(*) FROM {table} WHERE instance_id LIKE 'old-%'")
            assert left == 0, f"{table} keeps {left} rows of purged workflows"
        assert await rows_of(pg, "keep-") == protected
        assert (
            await pg.fetchval("SELECT count(*) FROM sayiir_workflow_snapshots WHERE instance_id LIKE 'recent-%'") == 90
        )
        assert (
            await pg.fetchval(
                "SELECT count(*) FROM sayiir_workflow_snapshots WHERE instance_id LIKE 'job-%' AND status = 'Completed'"
            )
            == 600
        )
        # Nothing is left to purge, and a second run finds nothing.
        assert await purge_policy(db, week_policy()) == dict.fromkeys(FINISHED, 0)
    finally:
        await db.close()
        await pg.close()
        await running.stop(grace=1)


async def test_two_replicas_purging_together_delete_each_row_once(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    url = await make_database()
    policy = parse_policy("Completed=1d,Failed=1d,Cancelled=1d")
    replicas = [
        await start_service(url, retention=policy, retention_interval=0.05, pool_max_connections=3) for _ in range(2)
    ]
    pg = await asyncpg.connect(url)
    try:
        async with connect(f"127.0.0.1:{replicas[0].port}", watch_wakeups=False) as client:
            await finished_template(client, "template")
        # One commit makes 3,000 rows purgeable for both replicas at once.
        await clone_finished(pg, "template", 3000, "old", days_ago=2)
        for _ in range(600):
            if not await pg.fetchval("SELECT count(*) FROM sayiir_workflow_snapshots WHERE instance_id LIKE 'old-%'"):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)  # a last round of each replica, finding nothing
        per_replica = []
        for replica in replicas:
            assert replica.metrics_port
            metrics = await asyncio.to_thread(scrape, replica.metrics_port)
            per_replica.append({s: metrics.get(f'sayiir_grpc_purged_total{{status="{s}"}}', 0.0) for s in FINISHED})
        totals = {s: sum(r[s] for r in per_replica) for s in FINISHED}
        assert totals == {"Completed": 1000, "Failed": 1000, "Cancelled": 1000}, per_replica
        for table in SAYIIR_TABLES:
            assert await pg.fetchval(f"SELECT count(*) FROM {table} WHERE instance_id LIKE 'old-%'") == 0, table
        # The template, finished a moment ago, is within its period.
        assert await pg.fetchval("SELECT count(*) FROM sayiir_workflow_snapshots") == 1
    finally:
        await pg.close()
        for replica in replicas:
            await replica.stop(grace=1)


def purge_command(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "sayiir_grpc", "purge", "--database-url", url, *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_purge_command_dry_run_then_purge(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    running = await start_service(url)
    pg = await asyncpg.connect(url)
    try:
        async with connect(f"127.0.0.1:{running.port}", watch_wakeups=False) as client:
            await finished_template(client, "template")
            await seed_protected(client, pg)
        await clone_finished(pg, "template", 30, "old", days_ago=3)
        before = await table_counts(pg)

        dry = await asyncio.to_thread(
            purge_command,
            url,
            "--status",
            "completed",
            "--status",
            "Failed",
            "--older-than",
            "48h",
            "--dry-run",
            "--json",
        )
        assert dry.returncode == 0, dry.stderr
        assert json.loads(dry.stdout) == {
            "dry_run": True,
            "older_than": "2d",
            "purged": {"Completed": 10, "Failed": 10},
        }
        assert await table_counts(pg) == before

        done = await asyncio.to_thread(
            purge_command, url, "--status", "Completed", "--status", "failed", "--older-than", "2d"
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [
            "Completed: 10 purged (not updated for 2d)",
            "Failed: 10 purged (not updated for 2d)",
        ]
        statuses = await pg.fetch(
            "SELECT status, count(*) AS n FROM sayiir_workflow_snapshots WHERE instance_id LIKE 'old-%' GROUP BY status"
        )
        assert {r["status"]: r["n"] for r in statuses} == {"Cancelled": 10}
        assert await pg.fetchval("SELECT count(*) FROM sayiir_workflow_snapshots WHERE instance_id LIKE 'keep-%'") == 80
    finally:
        await pg.close()
        await running.stop(grace=1)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--older-than", "7d"], "--status is required"),
        (["--status", "Completed"], "--older-than is required"),
        (["--status", "InProgress", "--older-than", "7d"], "InProgress workflows are never purged"),
        (["--status", "paused", "--older-than", "7d"], "Paused workflows are never purged"),
        (["--status", "Done", "--older-than", "7d"], "unknown status 'Done'"),
        (["--status", "Completed", "--older-than", "7"], "'7' is not a duration"),
        (["--status", "Completed", "--older-than", "0m"], "must be more than 0"),
    ],
)
def test_purge_command_usage_errors_are_one_line_and_exit_2(args: list[str], message: str) -> None:
    # An unreachable URL: a usage error must stop before any connection.
    result = purge_command("postgresql://nobody@127.0.0.1:1/none", *args)
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and message in result.stderr, result.stderr


def test_purge_command_without_a_database_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sayiir_grpc", "purge", "--status", "Completed", "--older-than", "7d"],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "sayiir-grpc purge: needs --database-url (or SAYIIR_DATABASE_URL)"


def test_purge_command_reports_a_database_failure_in_one_line() -> None:
    result = purge_command("postgresql://nobody@127.0.0.1:1/none", "--status", "Completed", "--older-than", "7d")
    assert result.returncode == 1
    assert len(result.stderr.splitlines()) == 1 and "the database failed" in result.stderr, result.stderr
