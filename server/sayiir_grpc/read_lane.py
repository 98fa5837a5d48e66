"""A few connections kept apart from the pool for point reads.

Under load every connection of the pool is busy with the hot path's writes
(saves, claims, completions); a `LoadSnapshot` taken from that pool queues
behind them, and asyncpg's release runs in a task of its own (one more turn
of a busy event loop). The lane's connections serve only short reads, are
taken without a wait while one is free, and go back without a task.

A connection that a read left in doubt (cancelled mid-query, a lost socket,
any error but one PostgreSQL answered) is closed, and the next read opens a
fresh one: the lane never hands on a connection whose protocol may be out of
step. Reads run outside any transaction, so nothing else is left to reset.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg


@dataclass(slots=True)
class _Slot:
    conn: asyncpg.Connection | None = None
    born: float = 0.0

    def drop(self) -> None:
        if self.conn is not None:
            self.conn.terminate()
            self.conn = None


class ReadLane:
    """`size` connections, opened on first use and recycled after `max_lifetime` seconds."""

    def __init__(self, connect: Callable[[], Awaitable[asyncpg.Connection]], size: int, max_lifetime: float) -> None:
        self.size = size
        self._connect = connect
        self._max_lifetime = max_lifetime
        self._slots = [_Slot() for _ in range(size)]
        # Last in, first out: a lightly loaded lane keeps reusing one warm
        # connection (its prepared statements) instead of opening every slot.
        self._free: asyncio.LifoQueue[_Slot] = asyncio.LifoQueue()
        for slot in self._slots:
            self._free.put_nowait(slot)
        self._closed = False

    @property
    def open_connections(self) -> int:
        return sum(1 for s in self._slots if s.conn is not None and not s.conn.is_closed())

    @property
    def in_use(self) -> int:
        return self.size - self._free.qsize()

    @asynccontextmanager
    async def connection(self, acquire_timeout: float) -> AsyncIterator[asyncpg.Connection]:
        async with asyncio.timeout(acquire_timeout):
            slot = await self._free.get()
        try:
            conn = await self._ready(slot)
            try:
                yield conn
            except asyncpg.PostgresError:
                # PostgreSQL answered (and said ReadyForQuery): the protocol is
                # in step and the connection fit for the next read, unless
                # the server closed it (an administrator's termination).
                if conn.is_closed():
                    slot.drop()
                raise
            except BaseException:
                slot.drop()
                raise
        finally:
            self._free.put_nowait(slot)

    async def _ready(self, slot: _Slot) -> asyncpg.Connection:
        if self._closed:
            raise asyncpg.InterfaceError("the read connections are closed")
        now = time.monotonic()
        if slot.conn is not None and (slot.conn.is_closed() or now - slot.born > self._max_lifetime):
            slot.drop()
        if slot.conn is None:
            slot.conn = await self._connect()
            slot.born = now
        return slot.conn

    async def close(self, timeout: float) -> None:
        """Close idle connections gracefully; terminate those still reading."""
        self._closed = True
        idle = []
        while not self._free.empty():
            idle.append(self._free.get_nowait())
        closing = [s.conn.close(timeout=timeout) for s in idle if s.conn is not None and not s.conn.is_closed()]
        await asyncio.gather(*closing, return_exceptions=True)
        for slot in self._slots:
            slot.drop()
        for slot in idle:
            self._free.put_nowait(slot)
