"""Scale benchmark: does each store call stay flat as workflows pile up?

Fills its own database (CREATE DATABASE sayiir_scale_..., dropped at the
end) set-based, level by level, to a mix of waiting workflows:

    per million parked at a signal: 200,000 parked at a delay due in the
    future, 10,000 running under live claims, 1,000,000 finished

and at every level (0, 10^4, 10^5, 10^6 parked at a signal) measures each
store call through the service (`sayiir-grpc serve`, one client, one call at
a time): the dispatch calls (find, claim, hinted find, a claim that advances
a due delay, a find that applies an idle workflow's pending cancel), save,
load and the composites of one workflow. Prints a table, writes JSON, a PNG
plot and the EXPLAIN (ANALYZE, BUFFERS) of every dispatch statement at the
largest level.

Bulk rows are clones of one template workflow per kind (saved through the
service, so the template blob is valid); only the rows a call reads (the
ready pool and the per-sample workflows) carry their own blobs. The running
rows are the oldest in-progress rows at a task: they sit in front of the
ready pool in every dispatch order, the worst case for a scan.

    python bench/scale.py                 # full run, publishes docs/bench/scale_*
    python bench/scale.py --quick --out /tmp/s   # tiny sizes, a smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import DEFAULT_ADMIN_URL, REPO, ServiceProcess, database_url, db_name, start_service  # noqa: E402
from sayiir_client import (  # noqa: E402
    AtDelay,
    AtSignal,
    AtTask,
    SignalKind,
    TaskId,
    TaskWakeupHint,
    Timestamp,
    WorkflowSnapshot,
    connect,
)

# Per workflow parked at a signal (the level's unit), how many of each other kind.
DELAYS_PER_SIGNAL = 0.2
FINISHED_PER_SIGNAL = 1.0
RUNNING_PER_SIGNAL = 0.01
FULL_LEVELS = (0, 10_000, 100_000, 1_000_000)
QUICK_LEVELS = (0, 300, 3_000)
READY_POOL = 40
FIND_LIMIT = 10
CHUNK = 250_000
DEFINITION = "bench-scale"
WORKER = "scale-worker"
DOC_PNG = REPO / "docs" / "bench" / "scale_latency.png"
DOC_JSON = REPO / "docs" / "bench" / "scale.json"
DOC_EXPLAIN = REPO / "docs" / "bench" / "scale_explain.txt"
# The goal of issue 15: every call within this factor of its empty-database latency.
GOAL_FACTOR = 2.0


def tid(name: str) -> TaskId:
    return TaskId.sha256(name)


FIRST, SECOND, FINAL = tid("scale-first"), tid("scale-second"), tid("scale-final")


# -- workflows saved through the service -------------------------------------------


def at_task(instance_id: str) -> WorkflowSnapshot:
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, DEFINITION, b"0")
    snapshot.update_position(AtTask(FIRST))
    return snapshot


def at_signal(instance_id: str) -> WorkflowSnapshot:
    snapshot = at_task(instance_id)
    snapshot.mark_task_completed(FIRST, b"1")
    snapshot.update_position(AtSignal(SECOND, "approval", None, FINAL))
    return snapshot


def at_delay(instance_id: str, wake_in_s: float) -> WorkflowSnapshot:
    snapshot = at_task(instance_id)
    snapshot.mark_task_completed(FIRST, b"1")
    wake = Timestamp.from_unix_nanos(int((time.time() + wake_in_s) * 1e9))
    snapshot.update_position(AtDelay(SECOND, Timestamp.now(), wake, FINAL))
    return snapshot


def finished(instance_id: str) -> WorkflowSnapshot:
    snapshot = at_task(instance_id)
    snapshot.mark_task_completed(FIRST, b"1")
    snapshot.mark_completed(b"1")
    return snapshot


# -- the set-based fill --------------------------------------------------------------

TEMPLATES = {
    "sig": lambda: at_signal("scale-tpl-sig"),
    "delay": lambda: at_delay("scale-tpl-delay", 86_400.0),
    "run": lambda: at_task("scale-tpl-run"),
    "done": lambda: finished("scale-tpl-done"),
}

# Clones of template $4 numbered $2..$3 under prefix $1. updated_at goes
# back in time by $5 plus one millisecond per clone; a delay wakes in a day
# or later. One history row and the template's task rows per clone.
CLONE_SNAPSHOTS = """
INSERT INTO sayiir_workflow_snapshots
    (instance_id, status, definition_hash, current_task_id, completed_task_count, error, position_kind,
     delay_wake_at, trace_parent, task_priority, task_tags, history_version, data_hash, started_at,
     completed_at, updated_at)
SELECT $1 || g, t.status, t.definition_hash, t.current_task_id, t.completed_task_count, t.error, t.position_kind,
       CASE WHEN t.delay_wake_at IS NOT NULL THEN now() + interval '1 day' + g * interval '1 ms' END,
       t.trace_parent, t.task_priority, t.task_tags, t.history_version, t.data_hash, t.started_at,
       t.completed_at, now() - make_interval(secs => $5::float8) - g * interval '1 ms'
FROM sayiir_workflow_snapshots t, generate_series($2::int, $3::int) g
WHERE t.instance_id = $4
"""
CLONE_HISTORY = """
INSERT INTO sayiir_workflow_snapshot_history (instance_id, version, status, current_task_id, data, data_hash)
SELECT $1 || g, h.version, h.status, h.current_task_id, h.data, h.data_hash
FROM sayiir_workflow_snapshots t
JOIN sayiir_workflow_snapshot_history h ON h.instance_id = t.instance_id AND h.version = t.history_version,
     generate_series($2::int, $3::int) g
WHERE t.instance_id = $4
"""
CLONE_TASKS = """
INSERT INTO sayiir_workflow_tasks (instance_id, task_id, status, worker_id, started_at, completed_at, output)
SELECT $1 || g, k.task_id, k.status, k.worker_id, k.started_at, k.completed_at, k.output
FROM sayiir_workflow_tasks k, generate_series($2::int, $3::int) g
WHERE k.instance_id = $4
"""
CLAIM_CLONES = """
INSERT INTO sayiir_workflow_claims (instance_id, task_id, worker_id, claimed_at, expires_at)
SELECT $1 || g, $4::bytea, 'scale-busy-' || (g % 64), now(), now() + interval '6 hours'
FROM generate_series($2::int, $3::int) g
"""
# Running rows are the oldest at a task (in front of the ready pool).
AGE_S = {"sig": 3_600.0, "delay": 3_600.0, "run": 7_200.0, "done": 10_800.0}


def counts(level: int, running: bool = True) -> dict[str, int]:
    return {
        "sig": level,
        "delay": round(level * DELAYS_PER_SIGNAL),
        "run": round(level * RUNNING_PER_SIGNAL) if running else 0,
        "done": round(level * FINISHED_PER_SIGNAL),
    }


async def fill(conn: asyncpg.Connection, before: dict[str, int], after: dict[str, int]) -> None:
    for kind, target in after.items():
        start = before[kind] + 1
        while start <= target:
            end = min(target, start + CHUNK - 1)
            prefix, template = f"scale-{kind}-", f"scale-tpl-{kind}"
            async with conn.transaction():
                await conn.execute(CLONE_SNAPSHOTS, prefix, start, end, template, AGE_S[kind])
                await conn.execute(CLONE_HISTORY, prefix, start, end, template)
                await conn.execute(CLONE_TASKS, prefix, start, end, template)
                if kind == "run":
                    await conn.execute(CLAIM_CLONES, prefix, start, end, FIRST.as_bytes())
            start = end + 1
    # As autovacuum would leave them: statistics and visibility map current.
    for table in ("snapshots", "snapshot_history", "tasks", "claims", "signals"):
        await conn.execute(f"VACUUM (ANALYZE) sayiir_workflow_{table}")


async def index_sizes(conn: asyncpg.Connection) -> dict[str, float]:
    """Each index of the snapshots table (the engine's and ours), in MB."""
    rows = await conn.fetch(
        "SELECT indexrelid::regclass::text AS name, pg_relation_size(indexrelid) AS bytes FROM pg_index "
        "WHERE indrelid = 'sayiir_workflow_snapshots'::regclass ORDER BY 1"
    )
    return {r["name"]: round(r["bytes"] / 2**20, 2) for r in rows}


async def table_sizes(conn: asyncpg.Connection) -> dict[str, dict[str, float]]:
    rows = await conn.fetch(
        "SELECT c.relname, pg_table_size(c.oid) AS table_bytes, pg_indexes_size(c.oid) AS index_bytes "
        "FROM pg_class c WHERE c.relkind = 'r' AND c.relname LIKE 'sayiir_workflow_%'"
    )
    return {
        r["relname"]: {
            "table_mb": round(r["table_bytes"] / 2**20, 1),
            "indexes_mb": round(r["index_bytes"] / 2**20, 1),
        }
        for r in rows
    }


# -- measuring -------------------------------------------------------------------------


def rss_mb(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024.0, 1)
    return None


class Calls:
    """Each measured call: an untimed setup, the timed call, an untimed check and cleanup."""

    def __init__(self, client: Any, ready: list[str]) -> None:
        self.client = client
        self.ready = ready
        self.serial = 0

    def fresh(self, kind: str) -> str:
        self.serial += 1
        return f"scale-probe-{kind}-{self.serial}"

    async def find(self) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            found = await self.client.find_available_tasks(WORKER, limit=FIND_LIMIT)
            assert len(found) == FIND_LIMIT, f"find returned {len(found)} tasks"

        return call

    async def _release(self, tasks: list[Any]) -> None:
        for task in tasks:
            await self.client.release_task_claim(task.instance_id, task.task_id, WORKER)

    async def claim(self) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            claimed = await self.client.claim_available_tasks(WORKER, limit=1, ttl=30.0)
            assert len(claimed) == 1, "claim found nothing"
            self.after = lambda: self._release(claimed)

        return call

    async def hinted(self) -> Callable[[], Awaitable[None]]:
        instance = self.ready[self.serial % len(self.ready)]
        self.serial += 1
        hint = TaskWakeupHint(instance, FIRST, at_task(instance).definition_hash)

        async def call() -> None:
            assert await self.client.find_hinted_task(hint) is not None, "hinted task not found"

        return call

    async def due_delay(self) -> Callable[[], Awaitable[None]]:
        instance = self.fresh("delay")
        await self.client.save_snapshot(at_delay(instance, -1.0))

        async def call() -> None:
            claimed = await self.client.claim_available_tasks(WORKER, limit=1, ttl=30.0)

            async def after() -> None:
                await self._release(claimed)
                moved = await self.client.load_snapshot(instance)
                assert moved.current_task_id() == FINAL, "the due delay was not advanced"
                await self.client.delete_snapshot(instance)

            self.after = after

        return call

    async def idle_signal(self) -> Callable[[], Awaitable[None]]:
        instance = self.fresh("cancel")
        await self.client.save_snapshot(at_signal(instance))
        await self.client.store_signal(instance, SignalKind.CANCEL)

        async def call() -> None:
            await self.client.find_available_tasks(WORKER, limit=FIND_LIMIT)

            async def after() -> None:
                state = (await self.client.load_snapshot(instance)).state
                assert state.is_cancelled(), "the idle workflow's cancel was not applied"
                await self.client.delete_snapshot(instance)

            self.after = after

        return call

    async def save(self) -> Callable[[], Awaitable[None]]:
        snapshot = at_signal("scale-probe-own")

        async def call() -> None:
            await self.client.save_snapshot(snapshot)

        return call

    async def load(self) -> Callable[[], Awaitable[None]]:
        instance = self.ready[self.serial % len(self.ready)]
        self.serial += 1

        async def call() -> None:
            await self.client.load_snapshot(instance)

        return call

    async def save_task_result(self) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            await self.client.save_task_result("scale-probe-own", FIRST, b"1")

        return call

    async def check_control_signals(self) -> Callable[[], Awaitable[None]]:
        async def call() -> None:
            assert await self.client.check_control_signals("scale-probe-own") is None

        return call

    async def sample(self, name: str) -> float:
        """One timed call, with its untimed setup and check."""
        prepare: Callable[[], Awaitable[Callable[[], Awaitable[None]]]] = getattr(self, name)
        self.after: Callable[[], Awaitable[None]] | None = None
        call = await prepare()
        started = time.perf_counter()
        await call()
        elapsed = time.perf_counter() - started
        if self.after is not None:
            await self.after()
        return elapsed


DISPATCH_CALLS = ("find", "claim", "hinted", "due_delay", "idle_signal")
OTHER_CALLS = ("save", "load", "save_task_result", "check_control_signals")
CALLS = DISPATCH_CALLS + OTHER_CALLS


# -- EXPLAIN of the dispatch statements -------------------------------------------------


def dispatch_statements() -> dict[str, tuple[str, list[Any]]]:
    from sayiir_grpc.stores import dispatch as store

    return {
        "find_available_tasks (FIND_CANDIDATES)": (store.FIND_CANDIDATES, [FIND_LIMIT, None]),
        "claim_available_tasks (CLAIM_AVAILABLE)": (
            store.CLAIM_AVAILABLE,
            [FIND_LIMIT, None, WORKER, 30.0, 300.0],
        ),
        "find_hinted_task (FIND_HINTED)": (store.FIND_HINTED, ["scale-ready-1", FIRST.as_bytes()]),
        "due-delay advancement (DUE_DELAYS)": (store.DUE_DELAYS, [FIND_LIMIT]),
        "idle-signal sweep (IDLE_SIGNALLED)": (store.IDLE_SIGNALLED, [FIND_LIMIT]),
    }


async def explain_all(conn: asyncpg.Connection) -> dict[str, str]:
    plans: dict[str, str] = {}
    for name, (sql, args) in dispatch_statements().items():
        # Rolled back: EXPLAIN ANALYZE runs the statement (the claim inserts).
        tx = conn.transaction()
        await tx.start()
        try:
            rows = await conn.fetch(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", *args)
        finally:
            await tx.rollback()
        plans[name] = "\n".join(r[0] for r in rows)
    return plans


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Level:
    """One level: its own database, service and client."""

    level: int
    url: str
    # False: the largest size again without running tasks, which tells the
    # cost of the waiting workflows from that of the tasks in flight.
    running: bool = True
    service: ServiceProcess | None = None
    calls: Calls | None = None
    times: dict[str, list[float]] = field(default_factory=dict)
    row: dict[str, Any] = field(default_factory=dict)


async def _prepare(level: Level, stack: contextlib.AsyncExitStack, quiet: bool) -> None:
    # Sweeps at dispatch (interval 0): the due-delay and idle-signal statements
    # then run inside the claim and find calls this benchmark times.
    level.service = start_service(
        level.url, ["--pool-max-connections", "3", "--pool-min-connections", "1", "--sweep-interval", "0"]
    )
    client = await stack.enter_async_context(connect(level.service.target, watch_wakeups=False, timeout=120.0))
    for make in TEMPLATES.values():
        await client.save_snapshot(make())
    ready = [f"scale-ready-{i}" for i in range(1, READY_POOL + 1)]
    for instance in ready:
        await client.save_snapshot(at_task(instance))
    await client.save_snapshot(at_signal("scale-probe-own"))
    level.calls = Calls(client, ready)
    conn = await asyncpg.connect(level.url, timeout=10)
    try:
        started = time.monotonic()
        await fill(conn, counts(0), counts(level.level, level.running))
        fill_s = round(time.monotonic() - started, 1)
        level.row = {
            "level": level.level,
            "label": f"{level.level:,}" + ("" if level.running else " (none running)"),
            "running": level.running,
            "counts": counts(level.level, level.running),
            "fill_s": fill_s,
            "calls": {},
        }
        level.row["tables"] = await table_sizes(conn)
        level.row["snapshot_indexes"] = await index_sizes(conn)
    finally:
        await conn.close()
    level.row["rss_mb_before"] = rss_mb(level.service.pid)
    if not quiet:
        print(f"level {level.level:>9,}: filled in {fill_s} s", file=sys.stderr)


async def _measure(levels: list[Level], samples: int) -> None:
    """Round robin: each sample of a call is taken at every level back to
    back, in a shuffled order, so that the load of a shared machine weighs
    on every level alike and the ratios stay fair."""
    shuffler = random.Random(15)
    for call in CALLS:
        for level in levels:
            level.times[call] = []
        for i in range(samples + 2):
            order = list(levels)
            shuffler.shuffle(order)
            for level in order:
                assert level.calls is not None
                elapsed = await level.calls.sample(call)
                if i >= 2:  # two warm-up rounds
                    level.times[call].append(elapsed)
    for level in levels:
        for call, times in level.times.items():
            level.row["calls"][call] = {
                "p50_ms": round(statistics.median(times) * 1000, 2),
                "p90_ms": round(sorted(times)[int(0.9 * (len(times) - 1))] * 1000, 2),
            }
        assert level.service is not None
        level.row["rss_mb"] = rss_mb(level.service.pid)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    numbers = QUICK_LEVELS if args.quick else tuple(args.levels)
    run_id = uuid.uuid4().hex[:8]
    levels = [Level(n, database_url(args.admin_url, f"sayiir_scale_{run_id}_{n}")) for n in numbers]
    levels.append(Level(numbers[-1], database_url(args.admin_url, f"sayiir_scale_{run_id}_idle"), running=False))
    result: dict[str, Any] = {
        "meta": {
            "command": " ".join(sys.argv),
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {platform.node()}, {os.cpu_count()} cores",
            "samples": args.samples,
            "mix_per_signal": {
                "delay": DELAYS_PER_SIGNAL,
                "run": RUNNING_PER_SIGNAL,
                "done": FINISHED_PER_SIGNAL,
            },
            "ready_pool": READY_POOL,
            "find_limit": FIND_LIMIT,
        },
        "levels": [],
    }
    result["meta"]["databases"] = [db_name(level.url) for level in levels]
    admin = await asyncpg.connect(args.admin_url, timeout=10)
    try:
        async with contextlib.AsyncExitStack() as stack:
            try:
                for level in levels:
                    await admin.execute(f'CREATE DATABASE "{db_name(level.url)}"')
                    await _prepare(level, stack, args.quiet)
                result["meta"]["postgres"] = await admin.fetchval("SHOW server_version")
                result["meta"]["load_average_before"] = os.getloadavg()
                await _measure(levels, args.samples)
                result["meta"]["load_average_after"] = os.getloadavg()
                conn = await asyncpg.connect(levels[-2].url, timeout=10)
                try:
                    result["explain"] = await explain_all(conn)
                finally:
                    await conn.close()
            finally:
                await stack.aclose()
                for level in levels:
                    if level.service is not None:
                        level.service.stop()
    finally:
        for level in levels:
            if args.keep_database:
                print(f"kept the database: {level.url}", file=sys.stderr)
            else:
                await admin.execute(f'DROP DATABASE IF EXISTS "{db_name(level.url)}" WITH (FORCE)')
        await admin.close()
    result["levels"] = [level.row for level in levels]
    result["summary"] = summarise(result)
    return result


def _largest(result: dict[str, Any]) -> dict[str, Any]:
    """The largest level with tasks running: the goal's mix."""
    row: dict[str, Any] = [row for row in result["levels"] if row.get("running", True)][-1]
    return row


def summarise(result: dict[str, Any]) -> dict[str, Any]:
    first, last = result["levels"][0], _largest(result)
    idle = [row for row in result["levels"] if not row.get("running", True)]

    def ratio(row: dict[str, Any], call: str) -> float:
        return round(row["calls"][call]["p50_ms"] / first["calls"][call]["p50_ms"], 2)

    ratios = {call: ratio(last, call) for call in CALLS if first["calls"][call]["p50_ms"] > 0}
    return {
        "largest_level": last["level"],
        "ratio_to_empty": ratios,
        "ratio_to_empty_none_running": {call: ratio(idle[0], call) for call in ratios} if idle else None,
        "within_goal": {call: ratio <= GOAL_FACTOR for call, ratio in ratios.items()},
    }


def table(result: dict[str, Any]) -> str:
    levels = result["levels"]
    label = [row.get("label", f"{row['level']:,}") for row in levels]
    head = "| call (p50 ms) | " + " | ".join(label) + " | ratio |"
    lines = [head, "|---" + "|---:" * (len(levels) + 1) + "|"]
    for call in CALLS:
        cells = " | ".join(f"{row['calls'][call]['p50_ms']:.2f}" for row in levels)
        lines.append(f"| {call} | {cells} | {result['summary']['ratio_to_empty'].get(call, '-')} |")
    rss = " | ".join(f"{row.get('rss_mb_before', '?')} → {row['rss_mb']}" for row in levels)
    lines.append(f"| service RSS before → after (MB) | {rss} | |")
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in result["levels"] if row.get("running", True)]
    stored = [sum(row["counts"].values()) + READY_POOL for row in rows]
    fig, ax = plt.subplots(figsize=(8, 5))
    for call in CALLS:
        ax.plot(stored, [row["calls"][call]["p50_ms"] for row in rows], marker="o", label=call)
    ax.set_xscale("symlog", linthresh=100)
    ax.set_xlabel("stored workflows")
    ax.set_ylabel("p50 latency through the service (ms)")
    ax.set_title("Store calls against stored workflows")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


DOC = REPO / "docs" / "benchmarks.md"
DOC_BEFORE = REPO / "docs" / "bench" / "scale_before.json"
DOC_MARKERS = ("<!-- scale-report:start -->", "<!-- scale-report:end -->")


def report_markdown(result: dict[str, Any], before: dict[str, Any] | None) -> str:
    """The published section: the table, the plot, the goal, sizes and plans."""
    meta, last = result["meta"], _largest(result)
    ratios, within = result["summary"]["ratio_to_empty"], result["summary"]["within_goal"]
    load = meta.get("load_average_before"), meta.get("load_average_after")
    lines = [
        f"Run of {meta['started']} (`{meta['command']}`), PostgreSQL {meta.get('postgres')}, {meta['machine']}, "
        f"load average {load[0][0]:.1f} before and {load[1][0]:.1f} after (a shared machine). Median of "
        f"{meta['samples']} calls through the service, one at a time; each level has its own database and "
        "service, and every sample is taken at all levels back to back, so the ratios compare like with like.",
        "",
        table(result),
        "",
        "Each level holds, per workflow parked at a signal, "
        f"{DELAYS_PER_SIGNAL} parked at a delay due in a day, {RUNNING_PER_SIGNAL} running under a live claim "
        f"(the oldest rows at a task: in front of the ready ones) and {FINISHED_PER_SIGNAL} finished, plus "
        f"{READY_POOL} ready at a task. The largest: "
        + ", ".join(f"{n:,} {k}" for k, n in last["counts"].items())
        + ". `claim` takes one task and gives it back; `due_delay` is a claim whose sweep first advances a delay "
        "that fell due; `idle_signal` is a find whose sweep first cancels an idle workflow with a pending cancel; "
        "`save`, `save_task_result` and `check_control_signals` work on one parked workflow.",
        "",
        f"Goal: every call within {GOAL_FACTOR:g}x its latency on the empty database at the largest size.",
        "",
        "| call | ratio at the largest size | within the goal | ratio, same size with no task running |",
        "|---|---:|:---:|---:|",
    ]
    idle = result["summary"].get("ratio_to_empty_none_running") or {}
    lines += [
        f"| {call} | {ratios[call]} | {'yes' if within[call] else 'no'} | {idle.get(call, '-')} |"
        for call in CALLS
        if call in ratios
    ]
    if before is not None:
        lines += [
            "",
            "Before migration 0003 and the query shapes (same benchmark, one database filled level by level, "
            f"{before['meta']['samples']} calls each):",
            "",
            table(before),
        ]
    lines += [
        "",
        "![latency against stored workflows](bench/scale_latency.png)",
        "",
        "Table and index sizes at the largest size (MB):",
        "",
        "| table | table | indexes |",
        "|---|---:|---:|",
    ]
    for name, size in sorted(last["tables"].items()):
        lines.append(f"| {name} | {size['table_mb']} | {size['indexes_mb']} |")
    lines += ["", "Indexes of `sayiir_workflow_snapshots` at the largest size (MB):", ""]
    lines += ["| index | MB |", "|---|---:|"]
    lines += [f"| {name} | {size} |" for name, size in last.get("snapshot_indexes", {}).items()]
    lines += ["", "EXPLAIN (ANALYZE, BUFFERS) of each dispatch statement at the largest size:", ""]
    for name, plan in result["explain"].items():
        lines += [f"<details><summary>{name}</summary>", "", "```", plan, "```", "", "</details>", ""]
    return "\n".join(lines).rstrip() + "\n"


def publish(result: dict[str, Any]) -> None:
    before = json.loads(DOC_BEFORE.read_text()) if DOC_BEFORE.exists() else None
    text = DOC.read_text()
    start, end = DOC_MARKERS
    head, _, rest = text.partition(start)
    _, _, tail = rest.partition(end)
    DOC.write_text(f"{head}{start}\n{report_markdown(result, before)}{end}{tail}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--admin-url", default=DEFAULT_ADMIN_URL)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (a smoke test)")
    parser.add_argument("--levels", type=int, nargs="+", default=list(FULL_LEVELS))
    parser.add_argument("--samples", type=int, default=40)
    parser.add_argument("--out", type=Path, help="directory for scale.json, the plot and the plans")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--keep-database", action="store_true", help="leave the filled database for inspection")
    args = parser.parse_args()
    if args.quick and args.samples == 40:
        args.samples = 5
    result = asyncio.run(run(args))
    json_path, png_path, explain_path = (
        (args.out / "scale.json", args.out / "scale_latency.png", args.out / "scale_explain.txt")
        if args.out
        else (DOC_JSON, DOC_PNG, DOC_EXPLAIN)
    )
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    explain_path.write_text("".join(f"## {name}\n\n{plan}\n\n" for name, plan in result["explain"].items()))
    if not args.no_plot:
        plot(result, png_path)
    if args.out is None:
        publish(result)
    print(table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
