"""The service's connection pools: the hot path's, and the read lane's.

asyncpg's own pool costs a call about four times what this one does: every
acquire runs under a timer and a queue, every release in a task of its own
(shielded) plus a timer for the idle timeout. Here a connection is taken
from a stack without a wait while one is free, and given back without a
task; a caller that finds none free waits in line (first come, first
served) for at most the acquire timeout.

A connection that a call left in doubt is closed, and the next call opens a
fresh one: the pool never hands on a connection whose protocol may be out of
step. In doubt means: the call was cancelled (its statement may still run),
the socket failed, asyncpg refused the connection's state, or PostgreSQL
closed it. A PostgreSQL error, or an error of the service's own between
statements, leaves the connection in step; a transaction left open is
rolled back before the connection goes back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg

# How often, at most, idle connections past the idle timeout are looked for.
REAP_INTERVAL_S = 30.0


@dataclass(slots=True)
class _Slot:
    conn: asyncpg.Connection | None = None
    born: float = 0.0
    idle_since: float = 0.0

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None


def leaves_in_doubt(exc: BaseException) -> bool:
    """Whether a call that ended with `exc` may have left its connection mid-protocol."""
    if isinstance(exc, asyncpg.PostgresError):
        return False  # PostgreSQL answered, and said ReadyForQuery
    return isinstance(exc, asyncio.CancelledError | TimeoutError | asyncpg.InterfaceError | OSError) or not isinstance(
        exc, Exception
    )


class ConnectionPool:
    """`size` connections, `min_size` of them opened by `open()`, the others on
    first use; recycled after `max_lifetime` seconds, closed after
    `idle_timeout` seconds unused (down to `min_size`)."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[asyncpg.Connection]],
        size: int,
        *,
        min_size: int = 0,
        max_lifetime: float,
        idle_timeout: float | None = None,
    ) -> None:
        self.size = size
        self.min_size = min(min_size, size)
        self._connect = connect
        self._max_lifetime = max_lifetime
        self._idle_timeout = idle_timeout
        self._slots = [_Slot() for _ in range(size)]
        # Last in, first out: a lightly loaded pool keeps reusing its warm
        # connections (their prepared statements), and the ones at the
        # bottom are those idle longest.
        self._free: list[_Slot] = list(self._slots)
        self._waiters: deque[asyncio.Future[_Slot]] = deque()
        self._closed = False
        self._reaper: asyncio.TimerHandle | None = None
        # Set by `close()` while it waits for the connections in use.
        self._all_back: asyncio.Event | None = None

    async def open(self) -> None:
        """Open the `min_size` connections (an unreachable database raises here)."""
        warm = self._free[len(self._free) - self.min_size :]
        try:
            await asyncio.gather(*(self._ready(slot) for slot in warm))
        except BaseException:
            for slot in warm:
                slot.drop()
            raise
        if self._idle_timeout is not None:
            self._schedule_reap()

    @property
    def open_connections(self) -> int:
        return sum(1 for s in self._slots if s.conn is not None and not s.conn.is_closed())

    @property
    def in_use(self) -> int:
        return self.size - len(self._free)

    @asynccontextmanager
    async def connection(self, acquire_timeout: float) -> AsyncIterator[asyncpg.Connection]:
        slot = self._free.pop() if self._free else await self._wait(acquire_timeout)
        try:
            conn = await self._ready(slot)
            try:
                yield conn
            except BaseException as exc:
                if leaves_in_doubt(exc) or conn.is_closed():
                    slot.drop()
                raise
            finally:
                if slot.conn is not None and conn.is_in_transaction():
                    await self._roll_back(slot)
        finally:
            self._give_back(slot)

    async def _wait(self, acquire_timeout: float) -> _Slot:
        waiter: asyncio.Future[_Slot] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(acquire_timeout):
                return await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                # Handed a connection as the wait ended: pass it on.
                self._give_back(waiter.result())
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(waiter)
            raise

    def _give_back(self, slot: _Slot) -> None:
        slot.idle_since = time.monotonic()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(slot)
                return
        self._free.append(slot)
        if self._all_back is not None and not self.in_use:
            self._all_back.set()

    async def _roll_back(self, slot: _Slot) -> None:
        """A transaction left open (a body that raised before its own rollback) ends here."""
        assert slot.conn is not None
        try:
            await slot.conn.execute("ROLLBACK")
        except BaseException:
            slot.drop()
            raise

    async def _ready(self, slot: _Slot) -> asyncpg.Connection:
        if self._closed:
            raise asyncpg.InterfaceError("the connection pool is closed")
        now = time.monotonic()
        conn = slot.conn
        if conn is not None and (
            conn.is_closed()
            or now - slot.born > self._max_lifetime
            or (self._idle_timeout is not None and now - slot.idle_since > self._idle_timeout)
        ):
            slot.drop()
        if slot.conn is None:
            slot.conn = await self._connect()
            slot.born = now
        return slot.conn

    def _schedule_reap(self) -> None:
        assert self._idle_timeout is not None
        interval = min(REAP_INTERVAL_S, max(self._idle_timeout / 2, 0.05))
        self._reaper = asyncio.get_running_loop().call_later(interval, self._reap)

    def _reap(self) -> None:
        """Close connections idle past the idle timeout, the longest idle first, keeping `min_size` open."""
        assert self._idle_timeout is not None
        now = time.monotonic()
        excess = self.open_connections - self.min_size
        for slot in self._free:  # the bottom of the stack first
            if excess <= 0 or now - slot.idle_since <= self._idle_timeout:
                break
            if slot.conn is not None:
                slot.drop()
                excess -= 1
        if not self._closed:
            self._schedule_reap()

    async def close(self, timeout: float) -> None:
        """Stop handing out connections, wait up to `timeout` for those in use to
        come back, close them gracefully; terminate any still out."""
        self._closed = True
        if self._reaper is not None:
            self._reaper.cancel()
        for waiter in self._waiters:
            if not waiter.done():
                waiter.set_exception(asyncpg.InterfaceError("the connection pool is closed"))
        self._waiters.clear()
        if self.in_use:
            self._all_back = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_back.wait(), timeout)
        idle = [s.conn for s in self._free if s.conn is not None and not s.conn.is_closed()]
        await asyncio.gather(*(conn.close(timeout=timeout) for conn in idle), return_exceptions=True)
        self.terminate()

    def terminate(self) -> None:
        self._closed = True
        for slot in self._slots:
            slot.drop()
