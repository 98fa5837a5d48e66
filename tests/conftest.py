"""Shared fixtures: a fresh PostgreSQL database per run, and the service on it.

The PostgreSQL server comes from SAYIIR_TEST_PG_URL (default: the local
server at 127.0.0.1:5432, trust auth). Each run creates its own database
with a random name and drops it at the end, so runs never share state.

When that server is unreachable: under CI (CI=true) or with
SAYIIR_TEST_PG_URL set, the run stops at once with the reason; on a
developer machine with no PostgreSQL at all, the suite starts an embedded
PostgreSQL of its own for the run instead. A server that answers but
refuses is reported as it is ("refused the connection: ..."), never as
unreachable; when it is only busy ("too many clients already") the setup
first waits up to BUSY_RETRY_S for a free slot.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import asyncpg
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from sayiir_client import AtTask, GrpcBackend, TaskId, WorkflowSnapshot, connect
from sayiir_grpc.app import RunningServer, start
from sayiir_grpc.config import Settings

ADMIN_URL = os.environ.get("SAYIIR_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
_admin_url: list[str] = []


def _with_database(url: str, name: str) -> str:
    base, _, _ = url.rpartition("/")
    return f"{base}/{name}"


def admin_url() -> str:
    """The maintenance-database URL of the server the tests run against."""
    return _admin_url[0] if _admin_url else ADMIN_URL


# How long a busy server ("too many clients already": the machine's
# connection slots are shared) is retried before the run gives up on it.
BUSY_RETRY_S = 30.0


def is_unreachable(exc: BaseException) -> bool:
    """Nothing answered at the address (refused, timed out, no such host), as
    opposed to a server that answered and refused (busy, auth, no database)."""
    return isinstance(exc, (OSError, TimeoutError)) and not isinstance(exc, asyncpg.PostgresError)


def is_busy(exc: BaseException) -> bool:
    """The server answered but has no connection slot free right now."""
    return isinstance(exc, (asyncpg.TooManyConnectionsError, asyncpg.CannotConnectNowError))


def connection_failure(url: str, exc: BaseException) -> str:
    """The reason a connection to `url` failed, as the run reports it."""
    if is_unreachable(exc):
        return f"PostgreSQL is unreachable at {url}: {type(exc).__name__}: {exc}"
    return f"PostgreSQL at {url} refused the connection: {type(exc).__name__}: {exc}"


async def connect_admin(url: str, busy_retry_s: float = BUSY_RETRY_S) -> asyncpg.Connection:
    """A connection to `url`, waiting out a busy server for up to `busy_retry_s`."""
    deadline = asyncio.get_running_loop().time() + busy_retry_s
    delay = 0.2
    while True:
        try:
            conn: asyncpg.Connection = await asyncpg.connect(url, timeout=10)
            return conn
        except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
            if not is_busy(exc) or asyncio.get_running_loop().time() + delay > deadline:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)


async def create_database(prefix: str = "sayiir_test") -> str:
    try:
        admin = await connect_admin(admin_url())
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        pytest.exit(connection_failure(admin_url(), exc), returncode=3)
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    return _with_database(admin_url(), name)


async def connection_error(url: str) -> BaseException | None:
    """None when a connection to `url` opens (a busy server is waited for); else why not."""
    try:
        conn = await connect_admin(url)
    except (OSError, TimeoutError, asyncpg.PostgresError) as exc:
        return exc
    await conn.close()
    return None


# A teardown of module or session fixtures still running after this long
# prints every task of the session's event loop with its stack: what a hung
# teardown awaits (pytest-timeout, at 120 s, shows only the threads).
TEARDOWN_REPORT_S = 60.0
_session_loop: list[asyncio.AbstractEventLoop] = []


def _await_chain(awaitable: object) -> list[str]:
    """Where a suspended coroutine waits: each frame down its chain of awaits."""
    lines: list[str] = []
    while awaitable is not None and len(lines) < 50:
        frame = getattr(awaitable, "cr_frame", None) or getattr(awaitable, "ag_frame", None)
        frame = frame or getattr(awaitable, "gi_frame", None)
        if frame is not None:
            lines.append(f"    {frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")
        awaitable = getattr(awaitable, "cr_await", None) or getattr(awaitable, "ag_await", None)
    return lines


def _report_pending_tasks(nodeid: str) -> None:
    out = [f"\n=== teardown after {nodeid} still running after {TEARDOWN_REPORT_S:.0f} s; asyncio tasks:"]
    for loop in _session_loop:
        for task in asyncio.all_tasks(loop):
            out.append(f"--- {task.get_name()}: {task.get_coro()!r}")
            out.extend(_await_chain(task.get_coro()))
    out.append(f"=== threads: {sorted(t.name for t in threading.enumerate())}")
    print("\n".join(out), file=sys.__stderr__, flush=True)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Iterator[None]:
    if nextitem is not None and nextitem.path == item.path:
        yield  # only function fixtures end here
        return
    watchdog = threading.Timer(TEARDOWN_REPORT_S, _report_pending_tasks, args=(item.nodeid,))
    watchdog.daemon = True
    watchdog.start()
    try:
        yield
    finally:
        watchdog.cancel()


@pytest.fixture(scope="session", autouse=True)
async def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """The PostgreSQL server of this run (see the module docstring)."""
    _session_loop.append(asyncio.get_running_loop())
    error = await connection_error(ADMIN_URL)
    if error is None:
        yield ADMIN_URL
        return
    if not is_unreachable(error):
        # A server is there but refused: an embedded one would not help.
        pytest.exit(connection_failure(ADMIN_URL, error), returncode=3)
    if os.environ.get("CI") == "true" or "SAYIIR_TEST_PG_URL" in os.environ:
        pytest.exit(f"{connection_failure(ADMIN_URL, error)}; it must be running for this run", returncode=3)
    from sayiir_grpc.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(tmp_path_factory.mktemp("embedded-pg") / "data")
    url = embedded.start()
    _admin_url.append(_with_database(url, "postgres"))
    try:
        yield _admin_url[0]
    finally:
        embedded.stop()


async def drop_database(url: str) -> None:
    name = url.rpartition("/")[2]
    admin = await connect_admin(admin_url())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture(scope="session")
async def database_url(postgres_server: str) -> AsyncIterator[str]:
    """A database created for this test run (the service migrates it)."""
    url = await create_database()
    yield url
    await drop_database(url)


@pytest.fixture(scope="session")
async def make_database(postgres_server: str) -> AsyncIterator[Callable[[], Awaitable[str]]]:
    """Create extra empty databases (dropped at the end of the run)."""
    created: list[str] = []

    async def make() -> str:
        url = await create_database()
        created.append(url)
        return url

    yield make
    for url in created:
        await drop_database(url)


async def start_service(database_url: str, **overrides: object) -> RunningServer:
    # sweep_interval 0: dispatch calls apply idle signals and due delays, so
    # tests see them applied exactly when they dispatch (test_sweeps.py runs the sweeper).
    values: dict[str, object] = {
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "pool_min_connections": 1,
        "sweep_interval": 0,
    }
    values.update(overrides)
    settings = Settings(**values)  # type: ignore[arg-type]
    return await start(settings, database_url)


@pytest.fixture(scope="session")
async def service(database_url: str) -> AsyncIterator[RunningServer]:
    """The service, in this process, on the run's database."""
    running = await start_service(database_url)
    yield running
    await running.stop(grace=1)


@pytest.fixture(scope="session")
def target(service: RunningServer) -> str:
    return f"127.0.0.1:{service.port}"


@pytest.fixture
async def backend(target: str) -> AsyncIterator[GrpcBackend]:
    async with connect(target) as client:
        yield client


@pytest.fixture
async def pg(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A direct connection to the run's database, for checking what was stored."""
    conn = await asyncpg.connect(database_url)
    yield conn
    await conn.close()


@pytest.fixture
def instance_id(request: pytest.FixtureRequest) -> str:
    """An instance id no other test uses."""
    return f"{request.node.name[:40]}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def repo_root() -> Iterator[Path]:
    yield Path(__file__).resolve().parent.parent


SAYIIR_TABLES = (
    "sayiir_workflow_snapshots",
    "sayiir_workflow_snapshot_history",
    "sayiir_workflow_tasks",
    "sayiir_workflow_signals",
    "sayiir_workflow_claims",
    "sayiir_workflow_events",
)


@pytest.fixture(scope="module")
async def isolated_service(make_database: Callable[[], Awaitable[str]]) -> AsyncIterator[tuple[RunningServer, str]]:
    """A service on a database of its own, for tests that scan every row."""
    url = await make_database()
    running = await start_service(url)
    yield running, url
    await running.stop(grace=1)


@pytest.fixture
async def clean_backend(isolated_service: tuple[RunningServer, str]) -> AsyncIterator[GrpcBackend]:
    """A client of the isolated service, whose tables are emptied first."""
    running, url = isolated_service
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(f"TRUNCATE {', '.join(SAYIIR_TABLES)}")
    finally:
        await conn.close()
    async with connect(f"127.0.0.1:{running.port}") as client:
        yield client


@pytest.fixture
async def clean_pg(isolated_service: tuple[RunningServer, str]) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(isolated_service[1])
    yield conn
    await conn.close()


@pytest.fixture
async def isolated(make_database: Callable[[], Awaitable[str]]) -> AsyncIterator[tuple[RunningServer, str]]:
    """A service of the test's own on a fresh database (small pool), and its url."""
    url = await make_database()
    running = await start_service(url, pool_max_connections=6)
    yield running, url
    await running.stop(grace=1)


@pytest.fixture
async def client(isolated: tuple[RunningServer, str]) -> AsyncIterator[GrpcBackend]:
    """A client of `isolated`, without a wakeup stream (the worker path long-polls)."""
    async with connect(f"127.0.0.1:{isolated[0].port}", watch_wakeups=False) as backend:
        yield backend


async def submit_at(client: GrpcBackend, instance_id: str, task: TaskId, priority: int | None = None) -> None:
    """Save a new linear workflow waiting at `task` (input b"0")."""
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "linear", b"0")
    snapshot.update_position(AtTask(task))
    if priority is not None:
        snapshot.set_task_hint(priority, [])
    await client.save_snapshot(snapshot)
