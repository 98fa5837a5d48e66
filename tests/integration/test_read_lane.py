"""The read lane (`Database.read`, a `sayiir_grpc.pool.ConnectionPool` of its own): point reads on
connections of their own, so they never wait behind the hot path's writes."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from conftest import start_service, submit_at
from sayiir_client import AtTask, GrpcBackend, TaskId, WorkflowSnapshot, connect
from sayiir_grpc.db import Database, PoolOptions

T1 = TaskId.sha256("step-1")
PID = "SELECT pg_backend_pid()"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = await Database.connect(database_url, PoolOptions(max_connections=8, read_connections=2))
    yield database
    await database.close()


async def _read_pid(db: Database) -> int:
    pid: int = await db.read("pid", lambda c: c.fetchval(PID))
    return pid


async def test_the_lane_is_cut_from_the_budget_and_at_most_a_quarter_of_it(database_url: str) -> None:
    for budget, asked, lane in ((8, 2, 2), (20, 2, 2), (12, 5, 3), (7, 2, 1), (3, 2, 0), (8, 0, 0)):
        database = await Database.connect(database_url, PoolOptions(max_connections=budget, read_connections=asked))
        try:
            assert database.pool.size == budget - lane
            assert (database.reads.size if database.reads else 0) == lane
        finally:
            await database.close()


async def test_a_read_does_not_wait_for_a_pool_held_by_writes(db: Database) -> None:
    async with contextlib.AsyncExitStack() as stack:
        held = [await stack.enter_async_context(db.connection()) for _ in range(db.pool.size)]
        # Every pooled connection is out: the pool makes a caller wait ...
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.3):
                await db.run("write", lambda c: c.fetchval("SELECT 1"))
        # ... a read does not.
        assert await asyncio.wait_for(db.read("read", lambda c: c.fetchval("SELECT 7")), 5) == 7
        assert db.open_connections == len(held) + 1
        assert db.connections_in_use == len(held)


async def test_a_read_inside_a_call_transaction_joins_it(db: Database) -> None:
    async def body(conn: asyncpg.Connection) -> tuple[int, int]:
        return await conn.fetchval(PID), await _read_pid(db)

    own, read = await db.one_transaction("call", body)
    assert own == read


async def test_an_error_postgresql_answered_keeps_the_connection(db: Database) -> None:
    before = await _read_pid(db)
    with pytest.raises(asyncpg.DivisionByZeroError):
        await db.read("boom", lambda c: c.fetchval("SELECT 1/0"))
    assert await _read_pid(db) == before


async def test_a_cancelled_read_never_hands_its_connection_on(db: Database) -> None:
    before = await _read_pid(db)
    slow = asyncio.create_task(db.read("slow", lambda c: c.fetchval("SELECT pg_sleep(2)")))
    await asyncio.sleep(0.3)
    slow.cancel()
    with pytest.raises(asyncio.CancelledError):
        await slow
    # Both connections are fit for use; neither is the one left mid-query.
    first, second = await asyncio.gather(
        db.read("a", lambda c: c.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.2)")),
        db.read("b", lambda c: c.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.2)")),
    )
    assert before not in (first, second)
    assert first != second


async def test_a_read_rides_out_a_connection_the_server_closed(db: Database, pg: asyncpg.Connection) -> None:
    before = await _read_pid(db)
    assert await pg.fetchval("SELECT pg_terminate_backend($1)", before)
    retries = db.transient_retries
    after = await _read_pid(db)
    assert after != before
    # Either the lane saw the close before the read, or the read failed and was retried once.
    assert db.transient_retries - retries <= 1


async def test_a_connection_is_recycled_after_its_lifetime(database_url: str) -> None:
    options = PoolOptions(max_connections=4, read_connections=1, max_lifetime=0.3)
    database = await Database.connect(database_url, options)
    try:
        first = await _read_pid(database)
        assert await _read_pid(database) == first
        await asyncio.sleep(0.5)
        assert await _read_pid(database) != first
    finally:
        await database.close()


async def test_close_ends_the_lanes_connections(database_url: str, pg: asyncpg.Connection) -> None:
    database = await Database.connect(database_url, PoolOptions(max_connections=4, read_connections=1))
    pid = await _read_pid(database)
    await database.close()
    deadline = time.monotonic() + 5
    while await pg.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
        assert time.monotonic() < deadline, "the lane's connection outlived close()"
        await asyncio.sleep(0.05)
    with pytest.raises(asyncpg.InterfaceError):
        await _read_pid(database)


async def test_load_snapshot_answers_while_writes_hold_every_pooled_connection(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    url = await make_database()
    # A budget of 4: the hot path's pool of 3 and a read lane of 1.
    running = await start_service(url, pool_max_connections=4, pool_read_connections=1)
    blocker = await asyncpg.connect(url)
    try:
        async with connect(f"127.0.0.1:{running.port}", watch_wakeups=False) as client:
            await submit_at(client, "blocked", T1)
            await submit_at(client, "readable", T1)
            await client.save_task_result("readable", T1, b'"out"')
            async with blocker.transaction():
                await blocker.execute(
                    "SELECT 1 FROM sayiir_workflow_snapshots WHERE instance_id = 'blocked' FOR UPDATE"
                )
                # As many writes as the whole budget: the pool's 3 connections
                # wait on the row lock, the fourth write for a connection.
                writes = [asyncio.create_task(_save_again(client, "blocked", n)) for n in range(4)]
                await _until_waiting_on_locks(blocker, 3)
                impatient = GrpcBackend(client.channel, timeout=3)
                loaded = await impatient.load_snapshot("readable")
                assert loaded.instance_id == "readable"
                assert await impatient.load_task_result("readable", T1) == b'"out"'
                assert "readable" in (await impatient.list_snapshots_page(None, 10))[0]
                assert not any(w.done() for w in writes), "the writes were meant to hold the pool meanwhile"
            await asyncio.gather(*writes, return_exceptions=True)
    finally:
        await blocker.close()
        await running.stop(grace=1)


async def _save_again(client: GrpcBackend, instance_id: str, n: int) -> None:
    snapshot = WorkflowSnapshot.with_initial_input(instance_id, "linear", str(n).encode())
    snapshot.update_position(AtTask(T1))
    await client.save_snapshot(snapshot)


async def _until_waiting_on_locks(conn: asyncpg.Connection, count: int) -> None:
    deadline = time.monotonic() + 10
    query = (
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sayiir-grpc' "
        "AND wait_event_type = 'Lock' AND datname = current_database()"
    )
    while await conn.fetchval(query) < count:
        assert time.monotonic() < deadline, "the writes never queued on the row lock"
        await asyncio.sleep(0.05)
