"""The real Sayiir engine (sayiir==1.0.0) and the service on one database, in both directions.

Every test gets a fresh database and runs `sayiir-grpc serve` on it as a
process of its own (see `service`). The engine's Python API blocks (it runs
a Rust runtime), so it is called from threads; engine Workers are stopped
and joined at the end of each test. A "gRPC worker" below is what a worker
in another language does with the client API: find, claim, run, save the
result, advance, release. docs/interop.md states what these tests prove.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg
import pytest
from sayiir import BackendError as EngineBackendError
from sayiir import (
    Flow,
    PostgresBackend,
    RetryPolicy,
    Worker,
    WorkflowClient,
    cancel_workflow,
    get_task_context,
    pause_workflow,
    resume_workflow,
    run_durable_workflow,
    task,
)
from sayiir._sayiir import PyWorker

from conftest import SAYIIR_TABLES
from sayiir_client import (
    AtDelay,
    AtSignal,
    AtTask,
    AvailableTask,
    Cancelled,
    Completed,
    DefinitionHash,
    Duration,
    Failed,
    GrpcBackend,
    InProgress,
    JsonCodec,
    Paused,
    SerializationError,
    SignalKind,
    SignalRequest,
    TaskId,
    Timestamp,
    UnavailableError,
    WorkflowSnapshot,
    connect,
)
from sayiir_grpc.migrate import ENGINE_SCHEMA_VERSION, available_migrations, migrate, sqlx_lock_id
from sayiir_grpc.stores.history import encode_stripped

pytestmark = [pytest.mark.engine, pytest.mark.timeout(90)]

T = TypeVar("T")
MakeDatabase = Callable[[], Awaitable[str]]

WAIT_S = 20.0  # upper bound of every wait for the engine or a worker
POLL_S = 0.05


# --------------------------------------------------------------------------
# Task bodies (pure) and the engine's task functions that run them
# --------------------------------------------------------------------------

# (instance_id, node name) -> how many times the ENGINE ran it.
ENGINE_RUNS: Counter[tuple[str, str]] = Counter()
_runs_lock = threading.Lock()
# Gates hold an engine task in flight until the test releases it.
_gates: dict[str, threading.Event] = {}
_entered: dict[str, threading.Event] = {}


def _event(table: dict[str, threading.Event], key: str) -> threading.Event:
    with _runs_lock:
        return table.setdefault(key, threading.Event())


def _engine_ran(name: str) -> str:
    ctx = get_task_context()
    assert ctx is not None
    with _runs_lock:
        ENGINE_RUNS[(ctx.instance_id, name)] += 1
    return str(ctx.instance_id)


def prep_body(x: Any) -> dict[str, Any]:
    return {"order": x, "items": ["Zoë ✓", 2.5, None]}


def finish_body(d: dict[str, Any]) -> dict[str, Any]:
    return {"order": d["order"], "count": len(d["items"])}


def approved_body(payload: dict[str, Any]) -> dict[str, Any]:
    return {"approved_by": payload["by"]}


def mixed_body(name: str) -> Callable[[Any], Any]:
    def body(x: Any) -> Any:
        if isinstance(x, int):
            x = {"n": x, "trail": []}
        return {"n": x["n"] * 3 + len(x["trail"]), "trail": [*x["trail"], name]}

    return body


@task
def prep(x: Any) -> Any:
    _engine_ran("prep")
    return prep_body(x)


@task
def finish(d: Any) -> Any:
    _engine_ran("finish")
    return finish_body(d)


@task
def approved(payload: Any) -> Any:
    _engine_ran("approved")
    return approved_body(payload)


@task
def explode(d: Any) -> Any:
    _engine_ran("explode")
    raise RuntimeError("kaput: the payment gateway said no")


@task(retries=RetryPolicy(max_retries=3, initial_delay_secs=3600.0, backoff_multiplier=2.0))
def flaky(d: Any) -> Any:
    _engine_ran("flaky")
    raise TimeoutError("upstream timed out")


@task(priority=1, tags=["interop-gpu"])
def hinted(x: Any) -> Any:
    _engine_ran("hinted")
    return prep_body(x)


@task(priority=2, tags=["interop"])
def first(x: Any) -> Any:
    _engine_ran("first")
    return prep_body(x)


@task
def gate(x: Any) -> Any:
    iid = _engine_ran("gate")
    _event(_entered, iid).set()
    _event(_gates, iid).wait(WAIT_S)
    return x


@task(tags=["grpc"])
def m1(x: Any) -> Any:
    _engine_ran("m1")
    return mixed_body("m1")(x)


@task(tags=["engine"])
def m2(x: Any) -> Any:
    _engine_ran("m2")
    return mixed_body("m2")(x)


@task
def m3(x: Any) -> Any:
    _engine_ran("m3")
    return mixed_body("m3")(x)


@task(tags=["engine"], priority=2)
def m4(x: Any) -> Any:
    _engine_ran("m4")
    return mixed_body("m4")(x)


@task(tags=["grpc"])
def m5(x: Any) -> Any:
    _engine_ran("m5")
    return mixed_body("m5")(x)


LINEAR = Flow("interop-linear").then(prep).then(finish).build()
FAILING = Flow("interop-failing").then(prep).then(explode).build()
RETRYING = Flow("interop-retrying").then(prep).then(flaky).build()
HINTED = Flow("interop-hinted").then(hinted).then(finish).build()
DELAYED = Flow("interop-delayed").then(prep).delay("cool_off", "1h").then(finish).build()
SIGNALLED = Flow("interop-signalled").then(prep).wait_for_signal("approve").then(approved).build()
GATED = Flow("interop-gated").then(prep).then(gate).then(finish).build()
GATED_SIGNAL = Flow("interop-gated-signal").then(gate).wait_for_signal("approve").then(approved).build()
WRITTEN = Flow("interop-written").then(first).then(finish).build()
WRITTEN_SIGNAL = Flow("interop-written-signal").then(first).wait_for_signal("approve").then(approved).build()
MIXED = Flow("interop-mixed").then(m1).then(m2).then(m3).then(m4).then(m5).build()


def encode(value: Any) -> bytes:
    """A task output or input as the engine's Python binding encodes it (json.dumps)."""
    return json.dumps(value).encode()


def definition(flow: Any) -> DefinitionHash:
    return DefinitionHash.from_hex(flow.definition_hash)


# --------------------------------------------------------------------------
# Plumbing
# --------------------------------------------------------------------------


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = WAIT_S) -> T:
    """Poll `probe` until it returns something truthy, or fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await probe()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(POLL_S)


def engine_backend(url: str) -> Any:
    """The engine's own PostgresBackend (runs its sqlx migrator); blocking."""
    return PostgresBackend(url, max_connections=4, statement_timeout_secs=int(WAIT_S))


class Engine:
    """The engine side of a deployment: its backend and client, called from threads."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.client = WorkflowClient(backend)

    @classmethod
    async def start(cls, url: str) -> Engine:
        return await asyncio.to_thread(lambda: cls(engine_backend(url)))

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def status(self, instance_id: str) -> Any:
        return await self.call(self.client.status, instance_id)

    async def result(self, instance_id: str, task_name: str) -> Any:
        return await self.call(self.client.get_task_result, instance_id, task_name)

    async def settled(self, instance_id: str, *statuses: str) -> Any:
        async def probe() -> Any:
            status = await self.status(instance_id)
            return status if status.status in statuses else None

        return await eventually(probe, f"{instance_id} to be {'/'.join(statuses)}")

    @asynccontextmanager
    async def worker(
        self, flows: list[Any], worker_id: str = "engine-worker", tags: list[str] | None = None
    ) -> AsyncIterator[None]:
        """An engine Worker (PyWorker when tags are given), stopped and joined on exit."""

        def start() -> Any:
            if tags is None:
                return Worker(worker_id, self.backend, poll_interval=0.1, claim_ttl=30.0).start(flows)
            pairs = [(wf._inner, wf._task_registry) for wf in flows]
            return PyWorker(worker_id, self.backend, 0.1, 30.0, tags).start(pairs)

        handle = await asyncio.to_thread(start)
        try:
            yield
        finally:
            with _runs_lock:
                for gate_event in _gates.values():
                    gate_event.set()
            handle.shutdown()
            await asyncio.wait_for(asyncio.to_thread(handle.join), WAIT_S)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def service(
    url: str,
    *args: str,
    start_delay: float = 0.0,
    while_starting: Callable[[], Awaitable[object]] | None = None,
) -> AsyncIterator[GrpcBackend]:
    """`sayiir-grpc serve` on `url`, in a process of its own, and a client of it.

    `start_delay` delays the process's start; `while_starting` runs once
    it is launched, before waiting for it to serve.

    Not in this process: the engine's blocking calls hold the GIL while
    they wait on PostgreSQL, so an in-process service holding a row lock
    the engine waits for could never commit (a deadlock no timeout breaks).
    A separate process is also how the two are deployed.
    """
    port = free_port()
    env = {**os.environ, "SAYIIR_METRICS_LISTEN": "127.0.0.1:0", "SAYIIR_SHUTDOWN_GRACE": "1"}
    command = [
        sys.executable,
        "-m",
        "sayiir_grpc",
        "serve",
        "--database-url",
        url,
        "--listen",
        f"127.0.0.1:{port}",
        "--pool-min-connections",
        "1",
        "--log-level",
        "warning",
        *args,
    ]
    if start_delay:
        command = ["sh", "-c", f'sleep {start_delay} && exec "$0" "$@"', *command]
    with tempfile.TemporaryFile() as log:
        proc = await asyncio.to_thread(subprocess.Popen, command, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            if while_starting is not None:
                await while_starting()
            async with connect(f"127.0.0.1:{port}") as backend:

                async def serving() -> bool:
                    if proc.poll() is not None:
                        log.seek(0)
                        raise AssertionError(f"sayiir-grpc exited: {log.read().decode(errors='replace')[-2000:]}")
                    try:
                        await backend.list_snapshots_page(None, 1)
                    except UnavailableError:
                        return False
                    return True

                await eventually(serving, "sayiir-grpc to serve")
                yield backend
        finally:
            proc.terminate()
            try:
                await asyncio.to_thread(proc.wait, WAIT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@asynccontextmanager
async def database(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def table_rows(pg: asyncpg.Connection, table: str) -> list[str]:
    """Every row of a table as JSON text, sorted: equal lists mean equal contents."""
    rows = await pg.fetch(f"SELECT to_jsonb(x)::text AS row FROM {table} x")
    return sorted(r["row"] for r in rows)


async def stored(pg: asyncpg.Connection, instance_id: str) -> asyncpg.Record:
    row = await pg.fetchrow(
        "SELECT s.*, h.data AS blob FROM sayiir_workflow_snapshots s JOIN sayiir_workflow_snapshot_history h "
        "ON h.instance_id = s.instance_id AND h.version = s.history_version WHERE s.instance_id = $1",
        instance_id,
    )
    assert row is not None, instance_id
    return row


async def load_faithfully(backend: GrpcBackend, pg: asyncpg.Connection, instance_id: str) -> WorkflowSnapshot:
    """Load through gRPC and check it is exactly what the engine stored.

    The engine's blob (outputs stripped) must come back byte for byte when
    the loaded snapshot is encoded again, the trace_parent column must
    come along, and every completed task's output must be the engine's
    task row.
    """
    loaded = await backend.load_snapshot(instance_id)
    row = await stored(pg, instance_id)
    assert row["data"] is None and bytes(row["blob"])[:6] == b"SYRS\x01\x01"  # the engine's JSON envelope
    assert encode_stripped(JsonCodec(), loaded)[0] == bytes(row["blob"])
    assert loaded.trace_parent == row["trace_parent"]
    assert loaded.state.kind == row["status"]
    assert loaded.definition_hash.as_bytes() == bytes(row["definition_hash"])
    outputs = {
        TaskId(bytes(r["task_id"])): bytes(r["output"])
        for r in await pg.fetch(
            "SELECT task_id, output FROM sayiir_workflow_tasks "
            "WHERE instance_id = $1 AND status = 'completed' AND output IS NOT NULL",
            instance_id,
        )
    }
    for task_id, result in (loaded.get_all_task_results() or {}).items():
        assert result.output == outputs[task_id]
    for task_id, output in outputs.items():
        assert await backend.load_task_result(instance_id, task_id) == output
    return loaded


def rfc3339_to_timestamp(text: str) -> Timestamp:
    """The engine's RFC 3339 strings (UTC, nanoseconds) as a Timestamp."""
    from datetime import datetime

    whole, _, fraction = text.removesuffix("Z").removesuffix("+00:00").partition(".")
    seconds = int(datetime.fromisoformat(whole + "+00:00").timestamp())
    return Timestamp(seconds, int(fraction.ljust(9, "0")) if fraction else 0)


@dataclass(frozen=True)
class Node:
    """A node of a flow as a gRPC worker knows it: the engine hashes `name` into the TaskId."""

    name: str
    body: Callable[[Any], Any] | None = None  # None: a wait_for_signal node
    signal: str | None = None
    priority: int | None = None
    tags: tuple[str, ...] = ()

    @property
    def task_id(self) -> TaskId:
        return TaskId.sha256(self.name)


@dataclass
class GrpcWorker:
    """A worker in another language: it only speaks the gRPC client API.

    `plans` maps a flow's definition hash to its nodes in order. It does
    what the engine's Worker does around a task: advance the position and
    set the next task's priority and tags, take an event buffered for a
    signal it reaches (else park there), then apply pending control signals.
    """

    backend: GrpcBackend
    worker_id: str
    plans: dict[DefinitionHash, list[Node]]
    tags: tuple[str, ...] = ()
    runs: Counter[tuple[str, str]] = field(default_factory=Counter)

    def _locate(self, task: AvailableTask) -> tuple[list[Node], int] | None:
        plan = self.plans.get(task.workflow_definition_hash)
        if plan is None:
            return None
        for i, node in enumerate(plan):
            if node.body is not None and node.task_id == task.task_id:
                return plan, i
        return None

    async def find(self, instance_id: str | None = None) -> list[AvailableTask]:
        tasks = await self.backend.find_available_tasks(self.worker_id, limit=20, worker_tags=list(self.tags))
        return [
            t for t in tasks if self._locate(t) is not None and (instance_id is None or t.instance_id == instance_id)
        ]

    async def run(self, task: AvailableTask, while_claimed: Callable[[], Awaitable[None]] | None = None) -> bool:
        """Claim and run one task; False when another worker holds it."""
        located = self._locate(task)
        assert located is not None
        plan, index = located
        iid = task.instance_id
        claim = await self.backend.claim_task(iid, task.task_id, self.worker_id, ttl=30)
        if claim is None:
            return False
        try:
            if while_claimed is not None:
                await while_claimed()
            node = plan[index]
            assert node.body is not None
            output = encode(node.body(None if task.input is None else json.loads(task.input)))
            self.runs[(iid, node.name)] += 1
            await self.backend.save_task_result(iid, task.task_id, output)
            snapshot = await self.backend.load_snapshot(iid)
            await self._advance(snapshot, plan, index + 1, output)
            assert await self.backend.save_snapshot_fenced(snapshot, task.task_id, self.worker_id)
        finally:
            await self.backend.release_task_claim(iid, task.task_id, self.worker_id)
        # Between two tasks, as the engine's Worker does: apply a pending
        # cancel or pause (find_available_tasks skips instances that have one).
        await self.backend.check_control_signals(iid)
        return True

    async def _advance(self, snapshot: WorkflowSnapshot, plan: list[Node], index: int, output: bytes) -> None:
        while index < len(plan) and plan[index].signal is not None:
            node = plan[index]
            signal = node.signal
            assert signal is not None
            following = plan[index + 1].task_id if index + 1 < len(plan) else None
            payload = await self.backend.consume_event(snapshot.instance_id, signal)
            if payload is None:
                snapshot.update_position(AtSignal(node.task_id, signal, None, following))
                return
            snapshot.mark_task_completed(node.task_id, payload)
            output, index = payload, index + 1
        if index == len(plan):
            snapshot.mark_completed(output)
            return
        node = plan[index]
        snapshot.update_position(AtTask(node.task_id))
        snapshot.set_task_hint(node.priority, list(node.tags))

    async def run_instance(
        self, instance_id: str, while_claimed: Callable[[], Awaitable[None]] | None = None
    ) -> AvailableTask:
        """Wait for the instance's next task, then claim and run it."""
        found = await eventually(lambda: self.find(instance_id), f"a task of {instance_id} for {self.worker_id}")
        assert await self.run(found[0], while_claimed)
        return found[0]

    async def work_until(self, done: Callable[[], Awaitable[bool]]) -> None:
        """Poll, claim and run until `done()`; bounded by WAIT_S."""

        async def probe() -> bool:
            for available in await self.find():
                await self.run(available)
            return await done()

        await eventually(probe, f"{self.worker_id} to finish its share")


LINEAR_PLAN = [Node("prep", prep_body), Node("finish", finish_body)]
SIGNALLED_PLAN = [Node("prep", prep_body), Node("approve", signal="approve"), Node("approved", approved_body)]
WRITTEN_PLAN = [Node("first", prep_body, priority=2, tags=("interop",)), Node("finish", finish_body)]
MIXED_PLAN = [
    Node("m1", mixed_body("m1"), tags=("grpc",)),
    Node("m2", mixed_body("m2"), tags=("engine",)),
    Node("m3", mixed_body("m3")),
    Node("m4", mixed_body("m4"), priority=2, tags=("engine",)),
    Node("m5", mixed_body("m5"), tags=("grpc",)),
]


# Advisory locks waited for in the current database (other runs share the server).
WAITING_ON_LOCKS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)

# Holds the sqlx advisory lock (argv: url, lock id, starters, deadline in s)
# until that many starters queue behind it (however slow they are to start),
# so the queue order is the test's, never a race with a timer.
LOCK_HOLDER = f"""
import asyncio, sys
import asyncpg

async def main():
    conn = await asyncpg.connect(sys.argv[1])
    await conn.execute("SELECT pg_advisory_lock($1)", int(sys.argv[2]))
    print("locked", flush=True)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + float(sys.argv[4])
    while await conn.fetchval({WAITING_ON_LOCKS!r}) < int(sys.argv[3]):
        if loop.time() > deadline:
            print("not queued", flush=True)
            return
        await asyncio.sleep(0.05)
    print("released", flush=True)

asyncio.run(main())
"""

# --------------------------------------------------------------------------
# 1. Start order
# --------------------------------------------------------------------------


async def test_engine_first_the_service_adopts_its_schema_unchanged(make_database: MakeDatabase) -> None:
    from fixtures.schema_describe import describe_schema, without_service_indexes

    url = await make_database()
    engine = await Engine.start(url)
    await engine.call(engine.client.submit, LINEAR, "adopt-waiting", 1)
    done = await engine.call(run_durable_workflow, LINEAR, "adopt-done", 2, engine.backend)
    assert done.status == "completed"
    schema_before = await describe_schema(url)
    async with database(url) as pg:
        rows_before = {t: await table_rows(pg, t) for t in ("_sqlx_migrations", *SAYIIR_TABLES)}

        async with service(url) as backend:
            # Adopted: our bookkeeping says so, and nothing the engine recorded changed.
            adopted = await pg.fetch("SELECT version, mode FROM sayiir_grpc_schema_migrations")
            # Adopted, and our own later migrations applied (they only add service-named indexes).
            ours = [(m.version, "applied") for m in available_migrations() if m.version > 1]
            assert sorted((r["version"], r["mode"]) for r in adopted) == [(1, "adopted"), *ours]
            assert {t: await table_rows(pg, t) for t in rows_before} == rows_before
            schema_after = await describe_schema(url)
            assert schema_after["tables"].pop("sayiir_grpc_schema_migrations")
            # Our own tables (sayiir_grpc_*, e.g. the idempotency keys) are additions too.
            for name in [name for name in schema_after["tables"] if name.startswith("sayiir_grpc_")]:
                schema_after["tables"].pop(name)
            assert without_service_indexes(schema_after) == schema_before
            assert await migrate(pg) == []  # a second start does nothing either

            # Both serve the database at once: the service reads the engine's
            # instances, the engine (started again) keeps working.
            loaded = await load_faithfully(backend, pg, "adopt-done")
            assert isinstance(loaded.state, Completed)
            assert json.loads(loaded.state.final_output) == done.output
            engine_again = await Engine.start(url)
            again = await engine_again.call(run_durable_workflow, LINEAR, "adopt-again", 3, engine_again.backend)
            assert again.status == "completed"
            assert (await backend.load_snapshot("adopt-again")).state.kind == "Completed"
        # The engine's migrator, run again next to the service, changed nothing either.
        assert await table_rows(pg, "_sqlx_migrations") == rows_before["_sqlx_migrations"]


async def test_service_first_the_engine_starts_without_migrating(make_database: MakeDatabase) -> None:
    url = await make_database()
    async with service(url) as backend, database(url) as pg:
        recorded = await table_rows(pg, "_sqlx_migrations")
        versions = await pg.fetch("SELECT version, success FROM _sqlx_migrations ORDER BY version")
        assert [(r["version"], r["success"]) for r in versions] == [
            (v, True) for v in range(1, ENGINE_SCHEMA_VERSION + 1)
        ]
        engine = await Engine.start(url)

        # It found its schema up to date: no row added, none failed, none rewritten.
        assert await table_rows(pg, "_sqlx_migrations") == recorded

        # And it works normally, in process and with a Worker.
        status = await engine.call(run_durable_workflow, LINEAR, "svc-first-durable", 4, engine.backend)
        assert status.status == "completed" and status.output == finish_body(prep_body(4))
        await engine.call(engine.client.submit, LINEAR, "svc-first-worker", 5)
        async with engine.worker([LINEAR]):
            settled = await engine.settled("svc-first-worker", "completed")
        assert settled.output == finish_body(prep_body(5))
        for iid in ("svc-first-durable", "svc-first-worker"):
            assert (await load_faithfully(backend, pg, iid)).state.kind == "Completed"


@pytest.mark.parametrize(("first", "mode"), [("engine", "adopted"), ("service", "applied")])
async def test_engine_and_service_starting_together(make_database: MakeDatabase, first: str, mode: str) -> None:
    """Started at once, whichever takes the sqlx advisory lock first migrates and the other adopts.

    A third process holds the lock while both start, so both queue on it
    in a known order (PostgreSQL grants it in queue order).
    """
    url = await make_database()
    engines: list[Engine] = []
    async with database(url) as pg:
        name = await pg.fetchval("SELECT current_database()")

        async def start_engine() -> None:
            if first == "service":
                await eventually(lambda: pg.fetchval(WAITING_ON_LOCKS), "sayiir-grpc to queue on the lock")
            # Blocks (holding the GIL) until the holder lets go and the engine has migrated.
            engines.append(await Engine.start(url))

        holder = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-c", LOCK_HOLDER, url, str(sqlx_lock_id(name)), "2", str(2 * WAIT_S)],
            stdout=subprocess.PIPE,
        )
        try:
            assert holder.stdout is not None
            assert await asyncio.to_thread(holder.stdout.readline) == b"locked\n"
            # Engine first: the service process starts a second later, so the
            # engine (queued within milliseconds) is ahead of it.
            delay = 1.0 if first == "engine" else 0.0
            async with service(url, start_delay=delay, while_starting=start_engine) as backend:
                assert await pg.fetchval("SELECT mode FROM sayiir_grpc_schema_migrations WHERE version = 1") == mode
                versions = await pg.fetch("SELECT version, success FROM _sqlx_migrations ORDER BY version")
                assert [(r["version"], r["success"]) for r in versions] == [
                    (v, True) for v in range(1, ENGINE_SCHEMA_VERSION + 1)
                ]
                engine = engines[0]
                status = await engine.call(run_durable_workflow, LINEAR, "together", 1, engine.backend)
                assert status.status == "completed"
                assert (await backend.load_snapshot("together")).state.kind == "Completed"
            assert await asyncio.to_thread(holder.stdout.readline) == b"released\n", "both queued on the lock"
        finally:
            holder.kill()
            await asyncio.to_thread(holder.wait)


# --------------------------------------------------------------------------
# 2. Reading what the engine wrote
# --------------------------------------------------------------------------


async def test_service_reads_what_workflow_client_and_worker_wrote(make_database: MakeDatabase) -> None:
    url = await make_database()
    engine = await Engine.start(url)
    submit = engine.client.submit
    # The 1.0.0 worker truncates its candidates to a batch of one before it
    # skips the ones it cannot run, so instances waiting out a retry are
    # created last, and the never-started one after the worker stopped.
    # (A task that raises without a retry policy is re-run forever by the
    # 1.0.0 Worker, so Failed is read from the in-process engine below.)
    async with engine.worker([LINEAR, RETRYING], worker_id="reader-worker"):
        await engine.call(submit, LINEAR, "read-completed", {"id": 7})
        completed = await engine.settled("read-completed", "completed")
        await engine.call(submit, RETRYING, "read-retrying", 9)
        async with database(url) as pg:

            async def retry_recorded() -> bool:
                row = await pg.fetchrow(
                    "SELECT data FROM sayiir_workflow_snapshot_history "
                    "WHERE instance_id = 'read-retrying' ORDER BY version DESC LIMIT 1"
                )
                return row is not None and b"task_retries" in bytes(row["data"])

            await eventually(retry_recorded, "the retry state of read-retrying")
    await engine.call(submit, HINTED, "read-not-started", {"id": 10})

    async with service(url) as backend, database(url) as pg:
        # Completed: the final output, and every task output the engine kept.
        loaded = await load_faithfully(backend, pg, "read-completed")
        assert isinstance(loaded.state, Completed)
        assert json.loads(loaded.state.final_output) == completed.output == finish_body(prep_body({"id": 7}))
        for name in ("prep", "finish"):
            output = await backend.load_task_result("read-completed", TaskId.sha256(name))
            assert output is not None
            assert json.loads(output) == await engine.result("read-completed", name)

        # In progress, waiting out a retry: position, completed outputs, retry state.
        loaded = await load_faithfully(backend, pg, "read-retrying")
        assert isinstance(loaded.state, InProgress)
        assert loaded.state.position == AtTask(TaskId.sha256("flaky"))
        assert loaded.state.last_completed_task_id == TaskId.sha256("prep")
        prep_result = loaded.get_task_result(TaskId.sha256("prep"))
        assert prep_result is not None
        assert json.loads(prep_result.output) == await engine.result("read-retrying", "prep") == prep_body(9)
        retry = loaded.get_retry_state(TaskId.sha256("flaky"))
        assert retry is not None
        assert retry.attempts == 1
        assert retry.last_error == "TimeoutError: upstream timed out"
        assert retry.last_failed_worker == "reader-worker"
        assert retry.policy.max_retries == 3
        assert retry.policy.initial_delay == Duration(3600)
        assert retry.policy.backoff_multiplier == 2.0
        assert 3000 < retry.next_retry_at.seconds - Timestamp.now().seconds <= 3600
        assert (await engine.status("read-retrying")).status == "in_progress"

        # Submitted, never run: initial input, first position, priority and tags.
        loaded = await load_faithfully(backend, pg, "read-not-started")
        assert isinstance(loaded.state, InProgress)
        assert loaded.state.position == AtTask(TaskId.sha256("hinted"))
        assert loaded.initial_input is not None and json.loads(loaded.initial_input) == {"id": 10}
        assert (loaded.task_priority, loaded.task_tags) == (1, ["interop-gpu"])
        assert loaded.definition_hash == definition(HINTED)


# A child process: OpenTelemetry is process-wide, so the run that gets a
# trace_parent happens in a process of its own (init_tracing must be called
# from inside a task, see the API notes).
TRACED_CHILD = """
import os, sys
import sayiir
from sayiir import Flow, PostgresBackend, run_durable_workflow, task

@task
def boot(x):
    sayiir.init_tracing()
    return x

@task
def prep(x):
    return x

url, iid = sys.argv[1], sys.argv[2]
backend = PostgresBackend(url, max_connections=2)
run_durable_workflow(Flow("interop-boot").then(boot).build(), iid + "-boot", None, backend=backend)
run_durable_workflow(Flow("interop-traced").then(prep).delay("nap", "1h").build(), iid, 1, backend=backend)
sys.stdout.flush()
os._exit(0)
"""


async def test_service_reads_what_the_durable_engine_wrote(make_database: MakeDatabase) -> None:
    url = await make_database()
    engine = await Engine.start(url)
    be = engine.backend
    delayed = await engine.call(run_durable_workflow, DELAYED, "durable-delayed", 1, be)
    signalled = await engine.call(run_durable_workflow, SIGNALLED, "durable-signalled", 2, be)
    await engine.call(run_durable_workflow, DELAYED, "durable-paused", 3, be)
    await engine.call(pause_workflow, "durable-paused", be, "maintenance window", "ops")
    paused = await engine.call(resume_workflow, DELAYED, "durable-paused", be)
    await engine.call(run_durable_workflow, DELAYED, "durable-cancelled", 4, be)
    await engine.call(cancel_workflow, "durable-cancelled", be, "customer withdrew", "support@example.com")
    cancelled = await engine.call(resume_workflow, DELAYED, "durable-cancelled", be)
    failed = await engine.call(run_durable_workflow, FAILING, "durable-failed", 5, be)
    completed = await engine.call(run_durable_workflow, LINEAR, "durable-completed", 6, be)
    assert [s.status for s in (delayed, signalled, paused, cancelled, failed, completed)] == [
        "waiting",
        "awaiting_signal",
        "paused",
        "cancelled",
        "failed",
        "completed",
    ]
    env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "RUST_LOG": "info"}
    child = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-c", TRACED_CHILD, url, "durable-traced"],
        env=env,
        capture_output=True,
        timeout=WAIT_S,
    )
    assert child.returncode == 0, child.stderr[-2000:]

    async with service(url) as backend, database(url) as pg:
        # Parked at a delay: the delay node, when it wakes, what comes next.
        loaded = await load_faithfully(backend, pg, "durable-delayed")
        assert isinstance(loaded.state, InProgress) and isinstance(loaded.state.position, AtDelay)
        position = loaded.state.position
        assert position.delay_id == TaskId.sha256("cool_off") == TaskId.from_hex(delayed.delay_id)
        assert position.next_task_id == TaskId.sha256("finish")
        assert position.wake_at == rfc3339_to_timestamp(delayed.wake_at)
        prep_result = loaded.get_task_result(TaskId.sha256("prep"))
        assert prep_result is not None and json.loads(prep_result.output) == prep_body(1)

        # Parked at a signal.
        loaded = await load_faithfully(backend, pg, "durable-signalled")
        assert isinstance(loaded.state, InProgress)
        assert loaded.state.position == AtSignal(TaskId.sha256("approve"), "approve", None, TaskId.sha256("approved"))
        assert loaded.awaited_signal_name() == signalled.signal_name == "approve"

        # Paused: who and why, and where it will resume.
        loaded = await load_faithfully(backend, pg, "durable-paused")
        assert isinstance(loaded.state, Paused)
        assert (
            (loaded.state.reason, loaded.state.paused_by)
            == ("maintenance window", "ops")
            == (
                paused.reason,
                paused.paused_by,
            )
        )
        assert isinstance(loaded.state.position, AtDelay)
        assert TaskId.sha256("prep") in loaded.state.completed_tasks

        # Cancelled: who and why, with the outputs of the tasks done before.
        loaded = await load_faithfully(backend, pg, "durable-cancelled")
        assert isinstance(loaded.state, Cancelled)
        assert (loaded.state.reason, loaded.state.cancelled_by) == (cancelled.reason, cancelled.cancelled_by)
        assert loaded.state.reason == "customer withdrew"
        result = loaded.get_task_result(TaskId.sha256("prep"))
        assert result is not None and json.loads(result.output) == prep_body(4)

        # Failed: the error, as the engine reports it.
        loaded = await load_faithfully(backend, pg, "durable-failed")
        assert isinstance(loaded.state, Failed)
        assert loaded.state.error == failed.error == "RuntimeError: kaput: the payment gateway said no"

        # Completed: the final output.
        loaded = await load_faithfully(backend, pg, "durable-completed")
        assert isinstance(loaded.state, Completed)
        assert json.loads(loaded.state.final_output) == completed.output == finish_body(prep_body(6))

        # trace_parent lives in its column, not the blob; it comes along.
        loaded = await load_faithfully(backend, pg, "durable-traced")
        assert loaded.trace_parent is not None
        version, trace_id, span_id, flags = loaded.trace_parent.split("-")
        assert (version, len(trace_id), len(span_id), flags) == ("00", 32, 16, "01")
        assert loaded.trace_parent.encode() not in bytes((await stored(pg, "durable-traced"))["blob"])


# --------------------------------------------------------------------------
# 3. Control: from the service to engine workers, and from the engine to gRPC workers
# --------------------------------------------------------------------------


async def test_control_through_the_service_steers_engine_workers(make_database: MakeDatabase) -> None:
    url = await make_database()
    engine = await Engine.start(url)
    async with service(url) as backend, engine.worker([GATED, SIGNALLED, GATED_SIGNAL]):

        async def hold(iid: str, flow: Any, value: Any) -> None:
            """Submit with the engine and wait until its Worker is inside `gate`."""
            await engine.call(engine.client.submit, flow, iid, value)
            entered = _event(_entered, iid)
            await eventually(lambda: asyncio.to_thread(entered.wait, 0.05), f"{iid} to enter its gate")

        # Cancel: requested through gRPC while a task runs; the engine ends the
        # workflow Cancelled with that reason, and the next task never runs.
        await hold("ctl-cancel", GATED, 1)
        await backend.store_signal("ctl-cancel", SignalKind.Cancel, SignalRequest("stop it", "ops@grpc"))
        _event(_gates, "ctl-cancel").set()
        status = await engine.settled("ctl-cancel", "cancelled")
        assert (status.reason, status.cancelled_by) == ("stop it", "ops@grpc")
        loaded = await backend.load_snapshot("ctl-cancel")
        assert isinstance(loaded.state, Cancelled) and loaded.state.reason == "stop it"
        assert ENGINE_RUNS[("ctl-cancel", "finish")] == 0

        # Pause: the engine stops at the next task boundary; a gRPC unpause
        # lets its Worker carry on to the end.
        await hold("ctl-pause", GATED, 2)
        await backend.store_signal("ctl-pause", SignalKind.Pause, SignalRequest("hold on", "ops@grpc"))
        _event(_gates, "ctl-pause").set()
        status = await engine.settled("ctl-pause", "paused")
        assert (status.reason, status.paused_by) == ("hold on", "ops@grpc")
        await asyncio.sleep(0.5)  # the Worker polls every 0.1 s: a paused workflow stays put
        assert (await engine.status("ctl-pause")).status == "paused"
        assert ENGINE_RUNS[("ctl-pause", "finish")] == 0
        unpaused = await backend.unpause("ctl-pause")
        assert isinstance(unpaused.state, InProgress)
        status = await engine.settled("ctl-pause", "completed")
        assert status.output == finish_body(prep_body(2))
        assert ENGINE_RUNS[("ctl-pause", "finish")] == 1

        # Event to a workflow parked at that signal: resumed at once.
        await engine.call(engine.client.submit, SIGNALLED, "ctl-event", 3)
        await engine.settled("ctl-event", "awaiting_signal")
        assert await backend.send_event("ctl-event", "approve", encode({"by": "bob"}))
        status = await engine.settled("ctl-event", "completed")
        assert status.output == approved_body({"by": "bob"})

        # Event sent before the workflow reaches its wait: buffered by the
        # service, consumed by the engine when it gets there.
        await hold("ctl-early-event", GATED_SIGNAL, 4)
        assert not await backend.send_event("ctl-early-event", "approve", encode({"by": "carol"}))
        _event(_gates, "ctl-early-event").set()
        status = await engine.settled("ctl-early-event", "completed")
        assert status.output == approved_body({"by": "carol"})
        async with database(url) as pg:
            assert await pg.fetchval("SELECT count(*) FROM sayiir_workflow_events") == 0
            assert await pg.fetchval("SELECT count(*) FROM sayiir_workflow_signals") == 0


async def test_control_from_the_engine_steers_grpc_workers(make_database: MakeDatabase) -> None:
    url = await make_database()
    engine = await Engine.start(url)
    client = engine.client
    async with service(url) as backend:
        worker = GrpcWorker(
            backend, "grpc-worker", {definition(LINEAR): LINEAR_PLAN, definition(SIGNALLED): SIGNALLED_PLAN}
        )

        # Cancel requested with the engine's client while the gRPC worker
        # runs a task: applied at the task boundary.
        await engine.call(client.submit, LINEAR, "eng-cancel", 1)
        await worker.run_instance(
            "eng-cancel", lambda: engine.call(client.cancel, "eng-cancel", reason="stop", cancelled_by="ops@engine")
        )
        status = await engine.status("eng-cancel")
        assert (status.status, status.reason, status.cancelled_by) == ("cancelled", "stop", "ops@engine")
        assert await engine.result("eng-cancel", "prep") == prep_body(1)

        # Pause with the engine's client, unpause with it too: the gRPC worker
        # stops, then finishes the workflow.
        await engine.call(client.submit, LINEAR, "eng-pause", 2)
        await worker.run_instance(
            "eng-pause", lambda: engine.call(client.pause, "eng-pause", reason="hold", paused_by="ops@engine")
        )
        status = await engine.status("eng-pause")
        assert (status.status, status.reason, status.paused_by) == ("paused", "hold", "ops@engine")
        assert await worker.find("eng-pause") == []
        await engine.call(client.unpause, "eng-pause")
        await worker.run_instance("eng-pause")
        status = await engine.status("eng-pause")
        assert (status.status, status.output) == ("completed", finish_body(prep_body(2)))

        # Event sent with the engine's client to a workflow a gRPC worker
        # parked at the signal: the engine's backend resumes it.
        await engine.call(client.submit, SIGNALLED, "eng-event", 3)
        await worker.run_instance("eng-event")
        assert (await engine.status("eng-event")).status == "awaiting_signal"
        await engine.call(client.send_signal, "eng-event", "approve", {"by": "dave"})
        await worker.run_instance("eng-event")
        status = await engine.status("eng-event")
        assert (status.status, status.output) == ("completed", approved_body({"by": "dave"}))

        # Event buffered by the engine's client before the wait: the gRPC
        # worker consumes it on reaching the signal.
        await engine.call(client.submit, SIGNALLED, "eng-early-event", 4)
        await engine.call(client.send_signal, "eng-early-event", "approve", {"by": "erin"})
        await worker.run_instance("eng-early-event")
        await worker.run_instance("eng-early-event")
        status = await engine.status("eng-early-event")
        assert (status.status, status.output) == ("completed", approved_body({"by": "erin"}))
        assert sum(ENGINE_RUNS[(iid, n)] for iid, n in worker.runs) == 0  # the engine ran nothing


# --------------------------------------------------------------------------
# 4. A mixed fleet
# --------------------------------------------------------------------------


async def test_mixed_fleet_runs_every_step_exactly_once(make_database: MakeDatabase) -> None:
    """Engine client submits; gRPC workers and an engine Worker share the steps.

    m1 and m5 are tagged for the gRPC workers, m2 and m4 for the engine's
    Worker, m3 is untagged: both fleets race for it and the claims decide.
    """
    url = await make_database()
    engine = await Engine.start(url)
    instances = [f"mixed-{i}" for i in range(6)]
    for i, iid in enumerate(instances):
        await engine.call(engine.client.submit, MIXED, iid, i)
    expected = {}
    for i, iid in enumerate(instances):
        value: Any = i
        for node in MIXED_PLAN:
            assert node.body is not None
            value = node.body(value)
        expected[iid] = value

    async with service(url) as backend, engine.worker([MIXED], worker_id="engine-w", tags=["engine"]):
        workers = [GrpcWorker(backend, f"grpc-{n}", {definition(MIXED): MIXED_PLAN}, tags=("grpc",)) for n in (1, 2)]

        async def all_completed() -> bool:
            states = [(await backend.load_snapshot(iid)).state for iid in instances]
            return all(isinstance(s, Completed) for s in states)

        await asyncio.gather(*(w.work_until(all_completed) for w in workers))

        for iid in instances:
            status = await engine.status(iid)
            assert (status.status, status.output) == ("completed", expected[iid]), iid
            for node in MIXED_PLAN:
                grpc_runs = sum(w.runs[(iid, node.name)] for w in workers)
                engine_runs = ENGINE_RUNS[(iid, node.name)]
                assert grpc_runs + engine_runs == 1, (iid, node.name, grpc_runs, engine_runs)
                if "grpc" in node.tags:
                    assert grpc_runs == 1
                if "engine" in node.tags:
                    assert engine_runs == 1
                assert await engine.result(iid, node.name) is not None
        async with database(url) as pg:
            assert await pg.fetchval("SELECT count(*) FROM sayiir_workflow_claims") == 0
            assert await pg.fetchval("SELECT count(*) FROM sayiir_workflow_tasks WHERE status = 'completed'") == len(
                instances
            ) * len(MIXED_PLAN)


# --------------------------------------------------------------------------
# 5. Writing what the engine reads
# --------------------------------------------------------------------------

TRACE_PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def new_snapshot(instance_id: str, flow: Any, value: Any) -> WorkflowSnapshot:
    """A workflow started through the service, at its first task (as WorkflowClient.submit would)."""
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, definition(flow), encode(value))
    snapshot.update_position(AtTask(TaskId.sha256("first")))
    snapshot.set_task_hint(2, ["interop"])
    snapshot.trace_parent = TRACE_PARENT
    return snapshot


async def test_engine_runs_snapshots_created_through_the_service(make_database: MakeDatabase) -> None:
    url = await make_database()
    async with service(url) as backend, database(url) as pg:
        await backend.save_snapshot(new_snapshot("written-for-worker", WRITTEN, 1))
        await backend.save_snapshot(new_snapshot("written-for-resume", WRITTEN, 2))
        # At a signal, its first task already done (output written by us).
        parked = new_snapshot("written-at-signal", WRITTEN_SIGNAL, 3)
        parked.mark_task_completed(TaskId.sha256("first"), encode(prep_body(3)))
        parked.update_position(AtSignal(TaskId.sha256("approve"), "approve", None, TaskId.sha256("approved")))
        await backend.save_snapshot(parked)
        # Stored the engine's way: its JSON envelope, trace_parent in the column only.
        row = await stored(pg, "written-for-worker")
        assert bytes(row["blob"])[:6] == b"SYRS\x01\x01" and row["trace_parent"] == TRACE_PARENT
        assert TRACE_PARENT.encode() not in bytes(row["blob"])

        engine = await Engine.start(url)
        assert (await engine.status("written-for-worker")).status == "in_progress"
        status = await engine.status("written-at-signal")
        assert (status.status, status.signal_name) == ("awaiting_signal", "approve")
        assert await engine.result("written-at-signal", "first") == prep_body(3)

        # The in-process engine resumes one...
        resumed = await engine.call(resume_workflow, WRITTEN, "written-for-resume", engine.backend)
        assert (resumed.status, resumed.output) == ("completed", finish_body(prep_body(2)))

        # ...its Worker (tagged like the first task) runs the others.
        async with engine.worker([WRITTEN, WRITTEN_SIGNAL], tags=["interop"]):
            status = await engine.settled("written-for-worker", "completed")
            assert status.output == finish_body(prep_body(1))
            await engine.call(engine.client.send_signal, "written-at-signal", "approve", {"by": "frank"})
            status = await engine.settled("written-at-signal", "completed")
            assert status.output == approved_body({"by": "frank"})
        assert await engine.result("written-for-worker", "first") == prep_body(1)
        assert ENGINE_RUNS[("written-at-signal", "first")] == 0  # done by us, not re-run


async def test_engine_runs_snapshots_advanced_through_the_service(make_database: MakeDatabase) -> None:
    url = await make_database()
    engine = await Engine.start(url)
    await engine.call(engine.client.submit, WRITTEN, "advanced-half", 1)
    await engine.call(engine.client.submit, WRITTEN, "advanced-whole", 2)
    async with service(url) as backend:
        worker = GrpcWorker(backend, "grpc-writer", {definition(WRITTEN): WRITTEN_PLAN}, tags=("interop",))

        # The gRPC worker runs the first task; the engine sees the result
        # and its Worker runs the rest.
        await worker.run_instance("advanced-half")
        status = await engine.status("advanced-half")
        assert status.status == "in_progress"
        assert await engine.result("advanced-half", "first") == prep_body(1)

        # The gRPC worker runs a whole workflow; the engine reads the outcome.
        await worker.run_instance("advanced-whole")
        await worker.run_instance("advanced-whole")
        status = await engine.status("advanced-whole")
        assert (status.status, status.output) == ("completed", finish_body(prep_body(2)))
        assert await engine.result("advanced-whole", "first") == prep_body(2)
        assert await engine.result("advanced-whole", "finish") == finish_body(prep_body(2))

        async with engine.worker([WRITTEN], tags=["interop"]):
            status = await engine.settled("advanced-half", "completed")
        assert status.output == finish_body(prep_body(1))
        assert ENGINE_RUNS[("advanced-half", "first")] == 0
        assert ENGINE_RUNS[("advanced-half", "finish")] == 1
        assert ENGINE_RUNS[("advanced-whole", "first")] + ENGINE_RUNS[("advanced-whole", "finish")] == 0


# --------------------------------------------------------------------------
# Codecs: JSON is shared; rkyv and protobuf blobs are refused, loudly
# --------------------------------------------------------------------------


async def test_codec_mismatches_fail_loudly_in_both_directions(make_database: MakeDatabase) -> None:
    url = await make_database()
    engine = await Engine.start(url)
    await engine.call(engine.client.submit, LINEAR, "codec-rkyv", 1)
    async with database(url) as pg:
        # A blob the engine wrote with its rkyv codec (codec id 2): same envelope.
        await pg.execute(
            "UPDATE sayiir_workflow_snapshot_history SET data = overlay(data placing '\\x02'::bytea from 6 for 1) "
            "WHERE instance_id = 'codec-rkyv'"
        )
        async with service(url) as backend:
            with pytest.raises(SerializationError, match=r"blob was written with `rkyv` but this backend"):
                await backend.load_snapshot("codec-rkyv")

        # The service's protobuf codec writes blobs the engine cannot read.
        async with service(url, "--codec", "protobuf") as backend:
            snapshot = WorkflowSnapshot.with_initial_input("codec-protobuf", definition(LINEAR), encode(1))
            snapshot.update_position(AtTask(TaskId.sha256("prep")))
            await backend.save_snapshot(snapshot)
    with pytest.raises(EngineBackendError, match=r"Serialization error: unknown snapshot codec id: 80"):
        await engine.status("codec-protobuf")
