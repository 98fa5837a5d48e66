"""The connection pool (server/sayiir_grpc/pool.py), against the real PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest

from sayiir_common.errors import ClaimLostError
from sayiir_grpc.pool import ConnectionPool

PID = "SELECT pg_backend_pid()"

Connect = Callable[[], Awaitable[asyncpg.Connection]]

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def connect(database_url: str) -> Connect:
    async def connect_one() -> asyncpg.Connection:
        return await asyncpg.connect(database_url)

    return connect_one


@contextlib.asynccontextmanager
async def opened(pool: ConnectionPool) -> AsyncIterator[ConnectionPool]:
    await pool.open()
    try:
        yield pool
    finally:
        await pool.close(5)


async def pid_of(pool: ConnectionPool) -> int:
    async with pool.connection(5) as conn:
        pid: int = await conn.fetchval(PID)
        return pid


async def test_open_connects_min_size_and_the_rest_on_first_use(connect: Connect) -> None:
    async with opened(ConnectionPool(connect, 4, min_size=2, max_lifetime=60)) as pool:
        assert pool.open_connections == 2
        async with pool.connection(5), pool.connection(5), pool.connection(5):
            assert pool.open_connections == 3
            assert pool.in_use == 3
        assert pool.in_use == 0


async def test_an_unreachable_database_fails_open() -> None:
    async def refused() -> asyncpg.Connection:
        return await asyncpg.connect("postgresql://postgres@127.0.0.1:1/none", timeout=2)

    pool = ConnectionPool(refused, 2, min_size=1, max_lifetime=60)
    with pytest.raises(OSError):
        await pool.open()
    assert pool.open_connections == 0


async def test_callers_wait_in_line_and_time_out_after_the_acquire_timeout(connect: Connect) -> None:
    async with opened(ConnectionPool(connect, 1, max_lifetime=60)) as pool:
        order: list[str] = []

        async def take(name: str) -> None:
            async with pool.connection(5):
                order.append(name)
                await asyncio.sleep(0.05)

        async with pool.connection(5):
            waiting = [asyncio.create_task(take(n)) for n in ("first", "second", "third")]
            await asyncio.sleep(0.1)
            assert order == []
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                async with pool.connection(0.2):
                    pass
            assert 0.15 < time.monotonic() - started < 2
        await asyncio.gather(*waiting)
        assert order == ["first", "second", "third"]
        assert pool.in_use == 0


async def test_a_waiter_cancelled_as_it_is_served_passes_the_connection_on(connect: Connect) -> None:
    async with opened(ConnectionPool(connect, 1, max_lifetime=60)) as pool:
        async with pool.connection(5):
            doomed = asyncio.create_task(pid_of(pool))
            patient = asyncio.create_task(pid_of(pool))
            await asyncio.sleep(0.05)
        # The connection went to `doomed`, which is cancelled before it runs.
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        assert await asyncio.wait_for(patient, 5) > 0
        assert pool.in_use == 0


async def test_an_error_between_statements_keeps_the_connection(connect: Connect) -> None:
    async with opened(ConnectionPool(connect, 1, max_lifetime=60)) as pool:
        before = await pid_of(pool)
        with pytest.raises(ClaimLostError):
            async with pool.connection(5) as conn:
                await conn.fetchval("SELECT 1")
                raise ClaimLostError("lost")
        with pytest.raises(asyncpg.DivisionByZeroError):
            async with pool.connection(5) as conn:
                await conn.fetchval("SELECT 1/0")
        assert await pid_of(pool) == before


async def test_a_transaction_left_open_is_rolled_back(connect: Connect, pg: asyncpg.Connection) -> None:
    await pg.execute("CREATE TABLE IF NOT EXISTS pool_left_open (n int)")
    try:
        async with opened(ConnectionPool(connect, 1, max_lifetime=60)) as pool:
            with pytest.raises(ClaimLostError):
                async with pool.connection(5) as conn:
                    await conn.execute("BEGIN")
                    await conn.execute("INSERT INTO pool_left_open VALUES (1)")
                    raise ClaimLostError("lost")
            async with pool.connection(5) as conn:
                assert not conn.is_in_transaction()
            assert await pg.fetchval("SELECT count(*) FROM pool_left_open") == 0
    finally:
        await pg.execute("DROP TABLE pool_left_open")


async def test_a_cancelled_statement_never_hands_its_connection_on(connect: Connect) -> None:
    async with opened(ConnectionPool(connect, 1, max_lifetime=60)) as pool:
        before = await pid_of(pool)

        async def slow() -> None:
            async with pool.connection(5) as conn:
                await conn.fetchval("SELECT pg_sleep(2)")

        task = asyncio.create_task(slow())
        await asyncio.sleep(0.3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await asyncio.wait_for(pid_of(pool), 5) != before


async def test_connections_idle_past_the_idle_timeout_close_down_to_min_size(connect: Connect) -> None:
    pool = ConnectionPool(connect, 3, min_size=1, max_lifetime=60, idle_timeout=0.3)
    async with opened(pool):
        async with pool.connection(5), pool.connection(5), pool.connection(5):
            pass
        assert pool.open_connections == 3
        deadline = time.monotonic() + 5
        while pool.open_connections > 1:
            assert time.monotonic() < deadline, "idle connections were not closed"
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert pool.open_connections == 1


async def test_close_waits_for_connections_in_use(connect: Connect, pg: asyncpg.Connection) -> None:
    pool = ConnectionPool(connect, 2, min_size=1, max_lifetime=60)
    await pool.open()
    released = asyncio.Event()

    async def hold() -> int:
        async with pool.connection(5) as conn:
            await released.wait()
            pid: int = await conn.fetchval(PID)
            return pid

    holder = asyncio.create_task(hold())
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(pool.close(5))
    await asyncio.sleep(0.1)
    assert not closing.done()
    with pytest.raises(asyncpg.InterfaceError):
        async with pool.connection(1):
            pass
    released.set()
    pid = await holder
    await asyncio.wait_for(closing, 5)
    assert pool.open_connections == 0
    deadline = time.monotonic() + 5
    while await pg.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid):
        assert time.monotonic() < deadline, "a connection outlived close()"
        await asyncio.sleep(0.05)
