"""The connection pools, their options, and the one helper that retries transients.

Pool options mirror the original's `PoolOptions`. `statement_timeout` and
`idle_in_transaction_session_timeout` are session settings sent at connect,
so every connection of the pool carries them without a server-side change.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TypeVar

import asyncpg
import structlog

from sayiir_common.errors import OutcomeUnknownError
from sayiir_grpc.errors import certainly_rolled_back, is_transient
from sayiir_grpc.pool import ConnectionPool

log = structlog.get_logger(__name__)

T = TypeVar("T")

# The connection of the call's own transaction (`Database.one_transaction`):
# while set, every `Database.run` of the call joins it instead of taking a
# connection of its own, so the whole call commits (or not) as one.
_CALL_CONNECTION: ContextVar[asyncpg.Connection | None] = ContextVar("sayiir_call_connection", default=None)

# Two retries with delays of 10 ms then 40 ms, as the original's backoff:
# enough to ride out a deadlock victim or a dropped connection, short
# enough that a real outage surfaces as UNAVAILABLE within a call deadline.
RETRY_DELAYS = (0.010, 0.040)


@dataclass(frozen=True, slots=True)
class PoolOptions:
    """Connection pool settings (the original's `PoolOptions`)."""

    max_connections: int = 20
    min_connections: int = 2
    acquire_timeout: float = 30.0
    idle_timeout: float = 600.0
    max_lifetime: float = 1800.0
    statement_timeout_ms: int = 30_000
    idle_in_transaction_session_timeout_ms: int = 60_000
    # 0 disables named prepared statements (for transaction-mode poolers).
    statement_cache_size: int = 100
    # Of `max_connections`, how many are kept apart for point reads
    # (`Database.read`); 0 lets reads share the pool.
    read_connections: int = 0

    def read_lane_size(self) -> int:
        """The read lane takes at most a quarter of the budget: the hot path keeps the rest."""
        return max(0, min(self.read_connections, self.max_connections // 4))


class Database:
    """The hot path's connection pool and the read lane (`sayiir_grpc.pool`)."""

    def __init__(self, pool: ConnectionPool, options: PoolOptions, reads: ConnectionPool | None = None) -> None:
        self.pool = pool
        self.options = options
        self.reads = reads
        self.transient_retries = 0
        # Called with the operation name each time a transient error is retried.
        self.on_retry: Callable[[str], None] | None = None
        # Called with the seconds each connection acquisition waited.
        self.on_acquire: Callable[[float], None] | None = None

    @classmethod
    async def connect(cls, url: str, options: PoolOptions) -> Database:
        settings = {
            # 0 means "no limit" to PostgreSQL, so a requested 0 is floored at
            # 1 ms rather than silently disabling the guard.
            "statement_timeout": str(max(options.statement_timeout_ms, 1)),
            "idle_in_transaction_session_timeout": str(max(options.idle_in_transaction_session_timeout_ms, 1)),
            "application_name": "sayiir-grpc",
        }

        async def connect_one() -> asyncpg.Connection:
            return await asyncpg.connect(
                url,
                server_settings=settings,
                timeout=options.acquire_timeout,
                statement_cache_size=options.statement_cache_size,
            )

        lane_size = options.read_lane_size()
        pool_max = options.max_connections - lane_size
        pool = ConnectionPool(
            connect_one,
            pool_max,
            min_size=options.min_connections,
            max_lifetime=options.max_lifetime,
            idle_timeout=options.idle_timeout,
        )
        await pool.open()
        reads = ConnectionPool(connect_one, lane_size, max_lifetime=options.max_lifetime) if lane_size else None
        return cls(pool, options, reads)

    async def close(self, timeout: float = 10.0) -> None:
        """Close both pools; connections still out after `timeout` are terminated.

        A stopping service must not hang on a connection that never comes back.
        """
        closing = [self.pool.close(timeout)]
        if self.reads is not None:
            closing.append(self.reads.close(timeout))
        await asyncio.gather(*closing)

    @property
    def open_connections(self) -> int:
        """Connections open now, the pool's and the read lane's."""
        lane = 0 if self.reads is None else self.reads.open_connections
        return self.pool.open_connections + lane

    @property
    def connections_in_use(self) -> int:
        lane = 0 if self.reads is None else self.reads.in_use
        return self.pool.in_use + lane

    def read_connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A connection of the read lane, or of the pool when there is no lane."""
        return self._timed(self.pool if self.reads is None else self.reads)

    def connection(self) -> AbstractAsyncContextManager[asyncpg.Connection]:
        """A connection of the hot path's pool."""
        return self._timed(self.pool)

    @asynccontextmanager
    async def _timed(self, pool: ConnectionPool) -> AsyncIterator[asyncpg.Connection]:
        started = time.monotonic()
        async with pool.connection(self.options.acquire_timeout) as conn:
            if self.on_acquire is not None:
                self.on_acquire(time.monotonic() - started)
            yield conn

    async def run(
        self,
        op: str,
        body: Callable[[asyncpg.Connection], Awaitable[T]],
        *,
        transaction: bool = True,
        repeatable: bool = True,
        read: bool = False,
    ) -> T:
        """Run `body` on one connection (in one transaction by default).

        `read=True` marks one short read statement: it runs on the read lane
        (outside any transaction) so it never waits behind the hot path.

        A transient failure (deadlock, serialization failure, dropped
        connection) rolls the transaction back and runs the whole body again,
        at most twice; any other error propagates at once.

        A dropped connection leaves one doubt: the commit may have happened
        before the drop. `repeatable=False` marks a body whose second run
        would then do something twice (take a second event, buffer an event
        twice, report "not applied" for a signal it applied): it is retried
        only after deadlocks and serialization failures, which certainly
        rolled back.
        """
        joined = _CALL_CONNECTION.get()
        if joined is not None:
            # Part of the call's transaction: its owner retries and commits.
            return await body(joined)
        attempt = 0
        while True:
            try:
                async with self.read_connection() if read else self.connection() as conn:
                    if read or not transaction:
                        return await body(conn)
                    async with conn.transaction():
                        return await body(conn)
            except Exception as exc:
                if attempt >= len(RETRY_DELAYS) or not is_transient(exc):
                    raise
                if not repeatable and not certainly_rolled_back(exc):
                    raise
                delay = RETRY_DELAYS[attempt]
                attempt += 1
                self.transient_retries += 1
                if self.on_retry is not None:
                    self.on_retry(op)
                log.warning("transient database error, retrying", op=op, error=type(exc).__name__, delay_s=delay)
                await asyncio.sleep(delay)

    async def read(self, op: str, body: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """One short read statement, on the read lane (see `run`)."""
        return await self.run(op, body, read=True)

    async def one_transaction(self, op: str, body: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
        """Run `body`, and every `run` it makes, in one transaction; no retry.

        A failure before COMMIT was sent leaves nothing written. A connection
        lost while COMMIT was under way leaves the outcome unknown: that
        raises `OutcomeUnknownError`, never a "safe to retry" error.
        """
        if _CALL_CONNECTION.get() is not None:
            raise RuntimeError(f"{op}: one_transaction cannot nest")
        async with self.connection() as conn:
            transaction = conn.transaction()
            await transaction.start()
            token = _CALL_CONNECTION.set(conn)
            try:
                result = await body(conn)
            except BaseException:
                _CALL_CONNECTION.reset(token)
                if not conn.is_closed():
                    # A failed rollback means the connection is gone, and the transaction with it.
                    with contextlib.suppress(Exception):
                        await transaction.rollback()
                raise
            _CALL_CONNECTION.reset(token)
            try:
                await transaction.commit()
            except Exception as exc:
                if is_transient(exc) and not certainly_rolled_back(exc):
                    raise OutcomeUnknownError(
                        f"{op}: the database connection was lost while committing; the call may or may not "
                        "have been applied (send an x-request-id to make retries safe)"
                    ) from exc
                raise
            return result
