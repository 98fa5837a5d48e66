"""How fast the operator's filtered workflow list answers over a million workflows.

Fills a fresh database set-based (INSERT ... SELECT generate_series): one
snapshot row per workflow, each pointing at a version-1 history row whose
blob is a valid JSON snapshot (the engine's bytes, with that row's id,
definition and task), in the service's schema with its operator indexes
(migrations/0002). Then starts the service on loopback and times
`ListWorkflows` pages of 100 through the Python client, for each filter of
the CLI, plus the EXPLAIN (ANALYZE, BUFFERS) of the statement behind each.
Drops the database at the end (unless --keep).

    .venv/bin/python bench/operator_scale.py            # 1,000,000 workflows
    .venv/bin/python bench/operator_scale.py --rows 20000 --repeat 5   # a quick look
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import DEFAULT_ADMIN_URL, create_database, drop_database, latency_block  # noqa: E402
from sayiir_client import (  # noqa: E402
    AtTask,
    DefinitionHash,
    OperatorClient,
    TaskId,
    WorkflowFilter,
    WorkflowSnapshot,
    connect,
    connect_operator,
)
from sayiir_common.codec import JsonCodec  # noqa: E402
from sayiir_grpc import migrate  # noqa: E402
from sayiir_grpc.app import start  # noqa: E402
from sayiir_grpc.config import Settings  # noqa: E402
from sayiir_grpc.stores.operator_queries import list_workflows_sql  # noqa: E402

PAGE = 100
DEFINITIONS = 20
TASKS = 8
SPAN_S = 30 * 86_400  # creation times spread over 30 days
ID_PLACEHOLDER = "@@instance@@"
DEF_PLACEHOLDER = "00" * 32
TASK_PLACEHOLDER = "11" * 32

# Share of each status (by id modulo 100), roughly a busy production table.
STATUS_BY_BUCKET = """
CASE WHEN g % 100 < 70 THEN 'Completed' WHEN g % 100 < 85 THEN 'InProgress'
     WHEN g % 100 < 93 THEN 'Failed' WHEN g % 100 < 98 THEN 'Cancelled' ELSE 'Paused' END
"""
ERRORS = ("connection timeout", "card declined", "out of stock", "invalid address", "rate limited")


def templates() -> dict[str, tuple[bytes, str]]:
    """Per status: the envelope bytes and the JSON payload with placeholders for id, definition and task."""
    codec = JsonCodec()
    made: dict[str, tuple[bytes, str]] = {}
    for status in ("InProgress", "Paused", "Completed", "Failed", "Cancelled"):
        snapshot = WorkflowSnapshot.new(ID_PLACEHOLDER, DefinitionHash(bytes(32)))
        snapshot.update_position(AtTask(TaskId(bytes([0x11]) * 32)))
        if status == "Paused":
            snapshot.mark_paused(reason="maintenance", paused_by="ops")
        elif status == "Completed":
            snapshot.mark_completed(b'"ok"')
        elif status == "Failed":
            snapshot.mark_failed("@@error@@")
        elif status == "Cancelled":
            snapshot.mark_cancelled("operator request", "ops")
        blob = codec.encode(snapshot)
        payload = codec.encode_payload(snapshot)
        made[status] = (blob[: len(blob) - len(payload)], payload.decode())
    return made


def fill_sql(rows: int) -> tuple[str, str]:
    """The two set-based INSERTs: snapshots, then their history rows (blob built per row)."""
    task = f"sha256(convert_to('step-' || (g % {TASKS}), 'UTF8'))"
    error = "'task failed: ' || (ARRAY[" + ", ".join(f"'{e}'" for e in ERRORS) + "])[1 + g % 5]"
    snapshots = f"""
INSERT INTO sayiir_workflow_snapshots
    (instance_id, status, definition_hash, current_task_id, completed_task_count, error,
     started_at, updated_at, completed_at, position_kind, task_priority, task_tags, history_version)
SELECT 'wf-' || lpad(g::text, 7, '0'), st,
       sha256(convert_to('def-' || (g % {DEFINITIONS}), 'UTF8')),
       CASE WHEN st = 'InProgress' THEN {task} END,
       0,
       CASE WHEN st = 'Failed' THEN {error} END,
       created, created + make_interval(secs => g % 3600),
       CASE WHEN st IN ('Completed', 'Failed', 'Cancelled') THEN created + make_interval(secs => g % 3600) END,
       CASE WHEN st IN ('InProgress', 'Paused') THEN 'AtTask' END,
       1 + g % 5,
       CASE WHEN st = 'InProgress' AND g % 10 = 0 THEN ARRAY['gpu'] ELSE '{{}}'::text[] END,
       1
FROM generate_series(1, {rows}) AS g,
     LATERAL (SELECT {STATUS_BY_BUCKET} AS st,
                     now() - make_interval(secs => ((g::bigint * 7919) % {rows}) * {SPAN_S}.0 / {rows}) AS created) x
"""
    history = """
INSERT INTO sayiir_workflow_snapshot_history
    (instance_id, version, status, current_task_id, data, data_hash, created_at)
SELECT s.instance_id, 1, s.status, s.current_task_id, b.blob, sha256(b.blob), s.updated_at
FROM sayiir_workflow_snapshots s
JOIN tpl t ON t.status = s.status,
LATERAL (SELECT t.envelope || convert_to(
    replace(replace(replace(replace(t.payload, $1, s.instance_id), $2, encode(s.definition_hash, 'hex')),
                    $3, COALESCE(encode(s.current_task_id, 'hex'), $3)), '@@error@@', COALESCE(s.error, '')),
    'UTF8') AS blob) b
"""
    return snapshots, history


async def fill(url: str, rows: int) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        await migrate.migrate(conn)
        snapshots, history = fill_sql(rows)
        started = time.monotonic()
        await conn.execute(snapshots)
        await conn.execute("CREATE TEMP TABLE tpl (status text, envelope bytea, payload text)")
        await conn.executemany("INSERT INTO tpl VALUES ($1, $2, $3)", [(k, v[0], v[1]) for k, v in templates().items()])
        await conn.execute(history, ID_PLACEHOLDER, DEF_PLACEHOLDER, TASK_PLACEHOLDER)
        await conn.execute("UPDATE sayiir_workflow_snapshots s SET data_hash = h.data_hash "
                           "FROM sayiir_workflow_snapshot_history h WHERE h.instance_id = s.instance_id")  # fmt: skip
        filled = time.monotonic() - started
        await conn.execute("VACUUM ANALYZE sayiir_workflow_snapshots")
        await conn.execute("VACUUM ANALYZE sayiir_workflow_snapshot_history")
        sizes = await conn.fetch(
            "SELECT c.relname, pg_relation_size(c.oid) AS bytes FROM pg_class c "
            "WHERE c.relname LIKE 'sayiir_grpc_snapshots_%' OR c.relname IN "
            "('sayiir_workflow_snapshots', 'sayiir_workflow_snapshots_pkey', 'sayiir_workflow_snapshot_history') "
            "ORDER BY c.relname"
        )
        counts = await conn.fetch("SELECT status, count(*) AS n FROM sayiir_workflow_snapshots GROUP BY status")
    finally:
        await conn.close()
    return {
        "fill_s": round(filled, 1),
        "statuses": {r["status"]: r["n"] for r in counts},
        "relation_mb": {r["relname"]: round(r["bytes"] / 2**20, 1) for r in sizes},
    }


@dataclass(frozen=True)
class Case:
    name: str
    where: WorkflowFilter
    after: str | None = None


def cases(rows: int) -> list[Case]:
    now = datetime.now(UTC)
    middle = f"wf-{rows // 2:07d}"
    return [
        Case("no filter, first page", WorkflowFilter()),
        Case("no filter, page from the middle", WorkflowFilter(), middle),
        Case("status Failed", WorkflowFilter(statuses=("Failed",))),
        Case("status Failed, page from the middle", WorkflowFilter(statuses=("Failed",)), middle),
        Case("status Paused (2 %)", WorkflowFilter(statuses=("Paused",))),
        Case("statuses Failed + Cancelled", WorkflowFilter(statuses=("Failed", "Cancelled"))),
        Case("definition hash", WorkflowFilter(definition_hash=DefinitionHash.sha256("def-7"))),
        Case(
            "status InProgress + definition",
            WorkflowFilter(statuses=("InProgress",), definition_hash=DefinitionHash.sha256("def-13")),
        ),
        Case("current task id", WorkflowFilter(current_task_id=TaskId.sha256("step-3"))),
        Case("tag gpu", WorkflowFilter(tag="gpu")),
        Case("created in the last hour", WorkflowFilter(created_after=now - timedelta(hours=1))),
        Case(
            "created within one day, 10 days ago",
            WorkflowFilter(created_after=now - timedelta(days=11), created_before=now - timedelta(days=10)),
        ),
        Case("updated before 29 days ago", WorkflowFilter(updated_before=now - timedelta(days=29))),
        Case("status Failed + error text", WorkflowFilter(statuses=("Failed",), error_contains="card DECLINED")),
        Case("error text alone", WorkflowFilter(error_contains="card declined")),
    ]


async def measure(ops: OperatorClient, case: Case, repeat: int) -> dict[str, Any]:
    await ops.list_workflows(case.where, limit=PAGE, after=case.after)  # warm the plan and the cache
    times: list[float] = []
    returned = 0
    for _ in range(repeat):
        started = time.perf_counter()
        page = await ops.list_workflows(case.where, limit=PAGE, after=case.after)
        times.append(time.perf_counter() - started)
        returned = len(page.items)
    return {"case": case.name, "rows": returned, **latency_block(times)}


async def explain(url: str, case: Case) -> str:
    sql, values = list_workflows_sql(case.where, case.after, PAGE)
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}", *values)
    finally:
        await conn.close()
    return "\n".join(r[0] for r in rows)


async def check_rows_are_valid(target: str, rows: int) -> None:
    """A sample of the generated workflows loads through the service, consistent with its columns."""
    async with connect(target, watch_wakeups=False) as backend:
        for g in (1, 70, 85, 93, 98, rows // 3, rows):
            instance_id = f"wf-{g:07d}"
            snapshot = await backend.load_snapshot(instance_id)
            assert snapshot.instance_id == instance_id
            assert snapshot.definition_hash == DefinitionHash.sha256(f"def-{g % DEFINITIONS}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=30, help="timed calls per filter")
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--keep", action="store_true", help="keep the database (its URL is printed)")
    parser.add_argument("--output", type=Path, default=HERE / "results" / "operator_scale.json")
    args = parser.parse_args()

    url = await create_database(args.admin_url, "operator")
    print(f"database {url}; filling {args.rows:,} workflows ...", flush=True)
    try:
        filled = await fill(url, args.rows)
        print(f"filled in {filled['fill_s']} s: {filled['statuses']}", flush=True)
        settings = Settings(listen="127.0.0.1:0", metrics_listen="off", pool_min_connections=1, pool_max_connections=4)
        running = await start(settings, url)
        target = f"127.0.0.1:{running.port}"
        try:
            await check_rows_are_valid(target, args.rows)
            results = []
            async with connect_operator(target) as ops:
                for case in cases(args.rows):
                    result = await measure(ops, case, args.repeat)
                    result["plan"] = await explain(url, case)
                    results.append(result)
                    print(f"{case.name:40s} rows {result['rows']:3d}  p50 {result['p50_ms']:7.2f} ms  "
                          f"p99 {result['p99_ms']:7.2f} ms  max {result['max_ms']:7.2f} ms", flush=True)  # fmt: skip
        finally:
            await running.stop(grace=1)
    finally:
        if args.keep:
            print(f"kept {url}")
        else:
            await drop_database(args.admin_url, url)
    report = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "rows": args.rows,
        "page_size": PAGE,
        "repeat": args.repeat,
        **filled,
        "results": results,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2))
    print("\n| filter | rows returned | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['case']} | {r['rows']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} |")
    print(f"\nwritten {args.output}")


if __name__ == "__main__":
    asyncio.run(main())
