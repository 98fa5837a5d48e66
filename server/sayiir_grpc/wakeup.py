"""One LISTEN connection per server, fanned out to every worker's stream.

Writers call pg_notify('sayiir_task_ready', hint) in the statement that makes
a task claimable, so a hint is delivered only after its commit. The server
holds one dedicated connection listening on that channel (reconnecting with
backoff when it drops) and hands each hint to every subscribed stream whose
worker tags allow the task. A slow subscriber's queue is bounded: when it is
full the hint is dropped for that subscriber and counted, and the worker's
fallback poll picks the task up (as in the original, `wakeup_drops_total`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import structlog

from sayiir_common.aio import wait_until_set
from sayiir_common.model import HintFormatError, TaskWakeupHint
from sayiir_grpc.stores import TASK_READY_CHANNEL

log = structlog.get_logger(__name__)

SUBSCRIBER_QUEUE_SIZE = 1024
RECONNECT_MIN_S = 0.1
RECONNECT_MAX_S = 5.0
# A silently dead LISTEN link is found by a `SELECT 1` this often.
PROBE_INTERVAL_S = 5.0
PROBE_TIMEOUT_S = 5.0


@dataclass(eq=False)
class Subscription:
    """One worker's stream: the tags it may run and its bounded queue."""

    worker_tags: frozenset[str]
    queue: asyncio.Queue[TaskWakeupHint | None] = field(
        default_factory=lambda: asyncio.Queue(maxsize=SUBSCRIBER_QUEUE_SIZE)
    )

    def wants(self, hint: TaskWakeupHint) -> bool:
        # An untagged worker takes everything; otherwise the task's tags
        # must all be the worker's (untagged tasks go to anyone).
        return not self.worker_tags or set(hint.tags) <= self.worker_tags


@dataclass(eq=False)
class Waiter:
    """A long-polling claim call: woken by the first hint it may run."""

    worker_tags: frozenset[str]
    woken: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, hint: TaskWakeupHint) -> bool:
        return not self.worker_tags or set(hint.tags) <= self.worker_tags


class WakeupHub:
    """The LISTEN connection, the subscribed streams and the waiting claim calls."""

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._subscribers: set[Subscription] = set()
        # Oldest first: a hint wakes the call that has waited longest.
        self._waiters: dict[Waiter, None] = {}
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self._stopping = False
        # Set by `stop`: what a worker session awaits to end its stream.
        self.stopped = asyncio.Event()
        self.hints_received = 0
        self.hints_sent = 0
        self.hints_dropped = 0
        self.waiters_woken = 0
        self.reconnects = 0
        self.on_sent: Callable[[int], None] | None = None
        self.on_dropped: Callable[[int], None] | None = None
        self.listener_pid: int | None = None

    async def start(self, wait_s: float = 10.0) -> None:
        self._task = asyncio.create_task(self._run(), name="wakeup-listener")
        if not await wait_until_set(self._connected, wait_s):
            log.warning("wakeup listener not connected yet; it keeps retrying")

    async def stop(self) -> None:
        self._stopping = True
        self.stopped.set()
        for waiter in list(self._waiters):
            waiter.woken.set()
        self._waiters.clear()
        for subscription in list(self._subscribers):
            self._close(subscription)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def stopping(self) -> bool:
        return self._stopping

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def subscribe(self, worker_tags: list[str]) -> Subscription:
        subscription = Subscription(frozenset(worker_tags))
        self._subscribers.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def wait_for_task(self, worker_tags: list[str]) -> Waiter:
        """Register a long-polling call; `woken` is set by one hint it may run
        (or by the server stopping). Register before looking for tasks, so no
        hint committed in between is missed; `stop_waiting` when done."""
        waiter = Waiter(frozenset(worker_tags))
        if self._stopping:
            waiter.woken.set()
        else:
            self._waiters[waiter] = None
        return waiter

    def stop_waiting(self, waiter: Waiter) -> None:
        self._waiters.pop(waiter, None)

    def _close(self, subscription: Subscription) -> None:
        # None tells the stream to end; make room for it if the queue is full.
        while True:
            try:
                subscription.queue.put_nowait(None)
                return
            except asyncio.QueueFull:
                subscription.queue.get_nowait()

    def publish(self, hint: TaskWakeupHint) -> None:
        self.hints_received += 1
        # One ready task, one waiting call (not a broadcast).
        for waiter in self._waiters:
            if waiter.wants(hint):
                del self._waiters[waiter]
                waiter.woken.set()
                self.waiters_woken += 1
                break
        for subscription in list(self._subscribers):
            if not subscription.wants(hint):
                continue
            try:
                subscription.queue.put_nowait(hint)
            except asyncio.QueueFull:
                self.hints_dropped += 1
                if self.on_dropped is not None:
                    self.on_dropped(1)
            else:
                self.hints_sent += 1
                if self.on_sent is not None:
                    self.on_sent(1)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        try:
            hint = TaskWakeupHint.decode(payload)
        except HintFormatError as exc:
            log.warning("ignored malformed wakeup payload", error=str(exc))
            return
        self.publish(hint)

    async def _run(self) -> None:
        delay = RECONNECT_MIN_S
        while not self._stopping:
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(self._url, server_settings={"application_name": "sayiir-grpc-listener"})
            except (OSError, asyncpg.PostgresError) as exc:
                log.warning("wakeup listener cannot connect", error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
                continue
            try:
                conn.add_termination_listener(lambda _c, event=lost: event.set())
                await conn.add_listener(TASK_READY_CHANNEL, self._on_notify)
                self.listener_pid = conn.get_server_pid()
                self._connected.set()
                delay = RECONNECT_MIN_S
                log.info("wakeup listener connected")
                # A terminated backend is noticed by the termination callback;
                # a silently dead link by the periodic probe. `_stopping` is
                # checked too, so nothing can keep a stopped hub listening.
                while not self._stopping and not await wait_until_set(lost, PROBE_INTERVAL_S):
                    try:
                        async with asyncio.timeout(PROBE_TIMEOUT_S):
                            await conn.execute("SELECT 1")
                    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                        lost.set()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("wakeup listener failed", error=str(exc))
            finally:
                self._connected.clear()
                conn.terminate()
            if not self._stopping:
                self.reconnects += 1
                log.warning("wakeup listener lost its connection; reconnecting", retry_in_s=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX_S)
