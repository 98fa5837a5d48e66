"""The four scenarios as real worker loops, through the gRPC service or
through the service's store functions called in process.

A worker loop: drop the wakeup hints already queued (the claim that follows
sees every commit they announce), claim up to `limit` ready tasks, run each
trivial task, write its result and the next position, release; when a claim
comes back empty, block on the wakeup stream (`wait_for_wakeup`) for at most
`poll` seconds, then claim again.

Two ways to claim and complete a task:
* fast path: `claim_available_tasks` (find and claim in one call) and
  `complete_task` (output, next position and release in one transaction);
* standard calls: `find_available_tasks`, `claim_task`, `save_task_result`,
  `load_snapshot`, then `update_position` or `mark_completed`,
  `save_snapshot_fenced`, `release_task_claim` (the README's worker loop).
Parking at a signal or a delay always uses the standard calls (the fast
path only moves to a task or completes).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sayiir_client import (
    AtDelay,
    AtSignal,
    AtTask,
    ExecutionPosition,
    JsonCodec,
    TaskId,
    Timestamp,
    WorkflowSnapshot,
    connect,
)

T = TypeVar("T")
CLAIM_TTL_S = 30.0
AGING_S = 300.0


def bump(data: bytes | None) -> bytes:
    """The trivial task: its input plus one (any non-number input counts as 0)."""
    try:
        value = json.loads(data) if data else 0
    except ValueError:
        value = 0
    if not isinstance(value, int):
        value = 0
    return str(value + 1).encode()


@dataclass(slots=True)
class Task:
    instance_id: str
    task_id: TaskId
    input: bytes | None


# -- the two backends ------------------------------------------------------------


class Ops:
    """What a worker loop needs from a backend, with every call counted and timed."""

    kind = "?"

    def __init__(self, fast: bool) -> None:
        self.fast = fast
        self.calls: Counter[str] = Counter()
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.empty_claims = 0
        self.lost_claims = 0

    async def timed(self, name: str, awaitable: Awaitable[T]) -> T:
        started = time.perf_counter()
        try:
            return await awaitable
        finally:
            self.calls[name] += 1
            self.latency[name].append(time.perf_counter() - started)

    # Implemented by the subclasses.
    async def open(self, worker_ids: list[str]) -> None: ...
    async def close(self) -> None: ...
    async def submit(self, snapshot: WorkflowSnapshot) -> None: ...
    async def claim(self, wid: str, limit: int) -> list[Task]: ...
    async def complete(self, task: Task, wid: str, output: bytes, next_task: TaskId | None) -> bool: ...
    async def save_task_result(self, wid: str, instance_id: str, task_id: TaskId, output: bytes) -> None: ...
    async def send_event(self, instance_id: str, name: str, payload: bytes) -> bool: ...
    async def wait_for_wakeup(self, wid: str, timeout: float) -> None: ...
    def drain_wakeups(self, wid: str) -> None: ...

    # The standard calls, over whatever the subclass's primitives are.
    async def _standard_claim(self, wid: str, limit: int) -> list[Task]:
        found = await self.timed("FindAvailableTasks", self._find(wid, limit))
        claims = await asyncio.gather(
            *(self.timed("ClaimTask", self._claim_one(wid, t.instance_id, t.task_id)) for t in found)
        )
        granted = [Task(t.instance_id, t.task_id, t.input) for t, c in zip(found, claims, strict=True) if c]
        self.lost_claims += len(found) - len(granted)
        return granted

    async def _standard_move(
        self, task: Task, wid: str, output: bytes, change: Callable[[WorkflowSnapshot], None]
    ) -> bool:
        await self.timed("SaveTaskResult", self._save_result(wid, task.instance_id, task.task_id, output))
        snapshot = await self.timed("LoadSnapshot", self._load(wid, task.instance_id))
        change(snapshot)
        written = await self.timed("SaveSnapshotFenced", self._save_fenced(wid, snapshot, task.task_id))
        if not written:
            self.lost_claims += 1
            return False
        await self.timed("ReleaseTaskClaim", self._release(wid, task.instance_id, task.task_id))
        return True

    async def _standard_complete(self, task: Task, wid: str, output: bytes, next_task: TaskId | None) -> bool:
        def change(snapshot: WorkflowSnapshot) -> None:
            if next_task is None:
                snapshot.mark_completed(output)
            else:
                snapshot.update_position(AtTask(next_task))

        return await self._standard_move(task, wid, output, change)

    async def park(self, task: Task, wid: str, output: bytes, position: ExecutionPosition) -> bool:
        return await self._standard_move(task, wid, output, lambda s: s.update_position(position))

    async def _find(self, wid: str, limit: int) -> list[Any]: ...
    async def _claim_one(self, wid: str, instance_id: str, task_id: TaskId) -> Any: ...
    async def _save_result(self, wid: str, instance_id: str, task_id: TaskId, output: bytes) -> None: ...
    async def _load(self, wid: str, instance_id: str) -> WorkflowSnapshot: ...
    async def _save_fenced(self, wid: str, snapshot: WorkflowSnapshot, task_id: TaskId) -> bool: ...
    async def _release(self, wid: str, instance_id: str, task_id: TaskId) -> None: ...


def client_has_fast_path() -> bool:
    from sayiir_client import GrpcBackend

    return hasattr(GrpcBackend, "claim_available_tasks") and hasattr(GrpcBackend, "complete_task")


def store_has_fast_path() -> bool:
    from sayiir_grpc.stores import dispatch, task_claim_store

    return hasattr(dispatch, "claim_available_tasks") and hasattr(task_claim_store, "complete_task")


class GrpcOps(Ops):
    """The service over gRPC: one client (channel + wakeup stream) per worker,
    and one more for the driver (submissions, events)."""

    kind = "service"

    def __init__(self, target: str, fast: bool) -> None:
        super().__init__(fast)
        self.target = target
        self.clients: dict[str, Any] = {}
        self._stack = contextlib.AsyncExitStack()

    async def open(self, worker_ids: list[str]) -> None:
        self.driver = await self._stack.enter_async_context(connect(self.target, watch_wakeups=False))
        for wid in worker_ids:
            self.clients[wid] = await self._stack.enter_async_context(connect(self.target))

    async def close(self) -> None:
        await self._stack.aclose()

    async def submit(self, snapshot: WorkflowSnapshot) -> None:
        await self.timed("SaveSnapshot", self.driver.save_snapshot(snapshot))

    async def claim(self, wid: str, limit: int) -> list[Task]:
        if not self.fast:
            return await self._standard_claim(wid, limit)
        found = await self.timed(
            "ClaimAvailableTasks", self.clients[wid].claim_available_tasks(wid, limit, CLAIM_TTL_S)
        )
        return [Task(t.instance_id, t.task_id, t.input) for t in found]

    async def complete(self, task: Task, wid: str, output: bytes, next_task: TaskId | None) -> bool:
        if not self.fast:
            return await self._standard_complete(task, wid, output, next_task)
        done = await self.timed(
            "CompleteTask",
            self.clients[wid].complete_task(task.instance_id, task.task_id, wid, output, next_task_id=next_task),
        )
        if not done:
            self.lost_claims += 1
        return bool(done)

    async def save_task_result(self, wid: str, instance_id: str, task_id: TaskId, output: bytes) -> None:
        await self.timed("SaveTaskResult", self._save_result(wid, instance_id, task_id, output))

    async def send_event(self, instance_id: str, name: str, payload: bytes) -> bool:
        return bool(await self.timed("SendEvent", self.driver.send_event(instance_id, name, payload)))

    async def wait_for_wakeup(self, wid: str, timeout: float) -> None:
        await self.clients[wid].wait_for_wakeup(timeout)

    def drain_wakeups(self, wid: str) -> None:
        self.clients[wid].drop_wakeups()

    async def _find(self, wid: str, limit: int) -> list[Any]:
        return list(await self.clients[wid].find_available_tasks(wid, limit=limit))

    async def _claim_one(self, wid: str, instance_id: str, task_id: TaskId) -> Any:
        return await self.clients[wid].claim_task(instance_id, task_id, wid, ttl=CLAIM_TTL_S)

    async def _save_result(self, wid: str, instance_id: str, task_id: TaskId, output: bytes) -> None:
        await self.clients[wid].save_task_result(instance_id, task_id, output)

    async def _load(self, wid: str, instance_id: str) -> WorkflowSnapshot:
        return await self.clients[wid].load_snapshot(instance_id)  # type: ignore[no-any-return]

    async def _save_fenced(self, wid: str, snapshot: WorkflowSnapshot, task_id: TaskId) -> bool:
        return bool(await self.clients[wid].save_snapshot_fenced(snapshot, task_id, wid))

    async def _release(self, wid: str, instance_id: str, task_id: TaskId) -> None:
        await self.clients[wid].release_task_claim(instance_id, task_id, wid)


def _bind(fn: Callable[..., Any], values: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for `fn` by parameter name (the fast-path store
    functions are called without knowing their exact order)."""
    kwargs: dict[str, Any] = {}
    for name, param in inspect.signature(fn).parameters.items():
        if name in values:
            kwargs[name] = values[name]
        elif param.default is inspect.Parameter.empty:
            raise TypeError(f"{fn.__name__}: no value for parameter {name!r}")
    return kwargs


class StoreOps(Ops):
    """The service's store functions called in process: same pool settings,
    same codec, same LISTEN hub; no gRPC, no protobuf."""

    kind = "store"

    def __init__(self, url: str, fast: bool) -> None:
        super().__init__(fast)
        self.url = url
        self.subs: dict[str, Any] = {}

    async def open(self, worker_ids: list[str]) -> None:
        from sayiir_grpc import migrate
        from sayiir_grpc.db import Database, PoolOptions
        from sayiir_grpc.stores import dispatch, signal_store, snapshot_store, task_claim_store
        from sayiir_grpc.wakeup import WakeupHub

        self.ss, self.tcs, self.dispatch, self.sig = snapshot_store, task_claim_store, dispatch, signal_store
        self.codec = JsonCodec()
        self.db = await Database.connect(self.url, PoolOptions())
        async with self.db.connection() as conn:
            await migrate.migrate(conn)
        self.hub = WakeupHub(self.url)
        await self.hub.start()
        for wid in worker_ids:
            self.subs[wid] = self.hub.subscribe([])

    async def close(self) -> None:
        await self.hub.stop()
        await self.db.close()

    async def submit(self, snapshot: WorkflowSnapshot) -> None:
        await self.timed("SaveSnapshot", self.ss.save_snapshot(self.db, self.codec, snapshot))

    def _values(self, **extra: Any) -> dict[str, Any]:
        return {"db": self.db, "codec": self.codec, "worker_tags": [], **extra}

    async def claim(self, wid: str, limit: int) -> list[Task]:
        if not self.fast:
            return await self._standard_claim(wid, limit)
        fn = self.dispatch.claim_available_tasks
        values = self._values(
            worker_id=wid,
            limit=limit,
            ttl=CLAIM_TTL_S,
            ttl_s=CLAIM_TTL_S,
            aging_interval=AGING_S,
            aging_interval_s=AGING_S,
        )
        found = await self.timed("ClaimAvailableTasks", fn(**_bind(fn, values)))
        return [Task(t.instance_id, t.task_id, t.input) for t in found]

    async def complete(self, task: Task, wid: str, output: bytes, next_task: TaskId | None) -> bool:
        if not self.fast:
            return await self._standard_complete(task, wid, output, next_task)
        fn = self.tcs.complete_task
        values = self._values(
            instance_id=task.instance_id,
            task_id=task.task_id,
            worker_id=wid,
            output=output,
            next_task_id=next_task,
            next_task=None if next_task is None else (next_task, None, []),
            final_output=None,
        )
        done = await self.timed("CompleteTask", fn(**_bind(fn, values)))
        if isinstance(done, tuple):  # (completed, the next task claimed when continuing)
            done = done[0]
        if not done:
            self.lost_claims += 1
        return bool(done)

    async def save_task_result(self, wid: str, instance_id: str, task_id: TaskId, output: bytes) -> None:
        await self.timed("SaveTaskResult", self._save_result(wid, instance_id, task_id, output))

    async def send_event(self, instance_id: str, name: str, payload: bytes) -> bool:
        outcome = await self.timed("SendEvent", self.sig.send_event(self.db, self.codec, instance_id, name, payload))
        return bool(outcome.resumed)

    async def wait_for_wakeup(self, wid: str, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.subs[wid].queue.get(), timeout)

    def drain_wakeups(self, wid: str) -> None:
        queue = self.subs[wid].queue
        while not queue.empty():
            queue.get_nowait()

    async def _find(self, wid: str, limit: int) -> list[Any]:
        return list(await self.dispatch.find_available_tasks(self.db, self.codec, wid, limit, AGING_S, []))

    async def _claim_one(self, wid: str, instance_id: str, task_id: TaskId) -> Any:
        return await self.tcs.claim_task(self.db, instance_id, task_id, wid, CLAIM_TTL_S)

    async def _save_result(self, wid: str, instance_id: str, task_id: TaskId, output: bytes) -> None:
        await self.ss.save_task_result(self.db, self.codec, instance_id, task_id, output)

    async def _load(self, wid: str, instance_id: str) -> WorkflowSnapshot:
        return (await self.ss.load_snapshot(self.db, self.codec, instance_id)).snapshot  # type: ignore[no-any-return]

    async def _save_fenced(self, wid: str, snapshot: WorkflowSnapshot, task_id: TaskId) -> bool:
        return bool(await self.tcs.save_snapshot_fenced(self.db, self.codec, snapshot, task_id, wid))

    async def _release(self, wid: str, instance_id: str, task_id: TaskId) -> None:
        await self.tcs.release_task_claim(self.db, instance_id, task_id, wid)


# -- the bookkeeping of one run --------------------------------------------------


@dataclass
class Stats:
    """Times of one run (time.monotonic), and what they give."""

    window_start: float = 0.0
    window_end: float = 0.0
    submitted: dict[str, float] = field(default_factory=dict)
    ready: dict[tuple[str, bytes], float] = field(default_factory=dict)
    first_claimed: set[str] = field(default_factory=set)
    pickup: list[float] = field(default_factory=list)
    handoff: list[float] = field(default_factory=list)
    e2e: list[float] = field(default_factory=list)
    extra: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    completed_total: int = 0
    completed_window: int = 0
    submitted_total: int = 0

    def in_window(self, instance_id: str) -> bool:
        return self.submitted.get(instance_id, 0.0) >= self.window_start

    def mark_ready(self, instance_id: str, task_id: TaskId, at: float | None = None) -> None:
        self.ready[(instance_id, task_id.as_bytes())] = time.monotonic() if at is None else at

    def claimed(self, task: Task) -> None:
        now = time.monotonic()
        ready = self.ready.pop((task.instance_id, task.task_id.as_bytes()), None)
        if not self.in_window(task.instance_id):
            return
        if task.instance_id not in self.first_claimed:
            self.first_claimed.add(task.instance_id)
            self.pickup.append(now - self.submitted[task.instance_id])
        elif ready is not None:
            self.handoff.append(max(0.0, now - ready))

    def done(self, instance_id: str) -> None:
        now = time.monotonic()
        self.completed_total += 1
        if self.window_start <= now <= self.window_end:
            self.completed_window += 1
        if self.in_window(instance_id):
            self.e2e.append(now - self.submitted[instance_id])
        self.first_claimed.discard(instance_id)


# -- scenarios -------------------------------------------------------------------


def tid(name: str) -> TaskId:
    return TaskId.sha256(name)


class Scenario:
    name = "?"
    definition = "?"
    first_task: TaskId

    def snapshot(self, instance_id: str) -> WorkflowSnapshot:
        snapshot = WorkflowSnapshot.with_initial_input(instance_id, self.definition, b"0")
        snapshot.update_position(AtTask(self.first_task))
        return snapshot

    async def handle(self, run: Run, wid: str, task: Task) -> None:
        raise NotImplementedError

    async def finish(self, run: Run, wid: str, task: Task, output: bytes, next_task: TaskId | None) -> None:
        """Complete a task and move on; the common tail of every handler."""
        if not await run.ops.complete(task, wid, output, next_task):
            return
        if next_task is None:
            run.workflow_done(task.instance_id)
        else:
            run.stats.mark_ready(task.instance_id, next_task)


class Linear(Scenario):
    """step-1 → step-2 → … → step-N, each returning its input + 1."""

    name = "linear"
    definition = "bench-linear"

    def __init__(self, steps: int = 4) -> None:
        self.steps = [tid(f"step-{i}") for i in range(1, steps + 1)]
        self.next: dict[TaskId, TaskId | None] = {
            s: (self.steps[i + 1] if i + 1 < len(self.steps) else None) for i, s in enumerate(self.steps)
        }
        self.first_task = self.steps[0]

    async def handle(self, run: Run, wid: str, task: Task) -> None:
        await self.finish(run, wid, task, bump(task.input), self.next[task.task_id])


class Fanout(Scenario):
    """pickup → fork {branch-0 … branch-K-1} → join.

    As in the engine, the branches of a fork run inside the worker holding
    the instance's claim (claims are per instance): the worker runs the K
    branches concurrently, checkpoints each branch output with
    save_task_result, then moves to the join, which any worker claims.
    """

    name = "fanout"
    definition = "bench-fanout"

    def __init__(self, children: int = 4) -> None:
        self.pickup, self.fork, self.join = tid("pickup"), tid("fork"), tid("join")
        self.branches = [tid(f"branch-{i}") for i in range(children)]
        self.first_task = self.pickup

    async def handle(self, run: Run, wid: str, task: Task) -> None:
        if task.task_id == self.pickup:
            await self.finish(run, wid, task, bump(task.input), self.fork)
        elif task.task_id == self.fork:
            outputs = [bump(task.input) for _ in self.branches]
            await asyncio.gather(
                *(
                    run.ops.save_task_result(wid, task.instance_id, branch, out)
                    for branch, out in zip(self.branches, outputs, strict=True)
                )
            )
            joined = json.dumps({f"branch-{i}": json.loads(o) for i, o in enumerate(outputs)}).encode()
            await self.finish(run, wid, task, joined, self.join)
        else:
            await self.finish(run, wid, task, b"1", None)


class SignalDriven(Scenario):
    """pickup → wait_for_signal("kick") → final.

    The worker parks the workflow at the signal (standard calls); the driver
    then sends the event (send_event resumes it at once and wakes a worker);
    a worker runs `final`. `signal_resume` = event sent → workflow completed.
    """

    name = "signal"
    definition = "bench-signal"

    def __init__(self) -> None:
        self.pickup, self.kick, self.final = tid("pickup"), tid("kick"), tid("final")
        self.first_task = self.pickup

    async def handle(self, run: Run, wid: str, task: Task) -> None:
        if task.task_id == self.pickup:
            position = AtSignal(self.kick, "kick", None, self.final)
            if await run.ops.park(task, wid, bump(task.input), position):
                run.parked.put_nowait(task.instance_id)
        else:
            if await run.ops.complete(task, wid, bump(task.input), None):
                sent = run.signal_sent.pop(task.instance_id, None)
                if sent is not None and run.stats.in_window(task.instance_id):
                    run.stats.extra["signal_resume"].append(time.monotonic() - sent)
                run.workflow_done(task.instance_id)


class Sleeping(Scenario):
    """accept → delay (a common wake time) → wake → final."""

    name = "sleeping"
    definition = "bench-sleeping"

    def __init__(self, wake_at: float) -> None:
        self.accept, self.delay, self.wake, self.final = tid("accept"), tid("nap"), tid("wake"), tid("final")
        self.first_task = self.accept
        self.wake_at = wake_at  # time.time()

    async def handle(self, run: Run, wid: str, task: Task) -> None:
        if task.task_id == self.accept:
            position = AtDelay(
                self.delay, Timestamp.now(), Timestamp.from_unix_nanos(int(self.wake_at * 1e9)), self.wake
            )
            if await run.ops.park(task, wid, bump(task.input), position):
                run.parked_count += 1
        elif task.task_id == self.wake:
            if run.first_wake is None:
                run.first_wake = time.time()
            await self.finish(run, wid, task, bump(task.input), self.final)
        else:
            if await run.ops.complete(task, wid, bump(task.input), None):
                run.stats.extra["wake_to_done"].append(time.time() - self.wake_at)
                run.workflow_done(task.instance_id)


# -- the run -----------------------------------------------------------------


@dataclass
class Run:
    ops: Ops
    scenario: Scenario
    workers: int
    inflight: int
    poll: float = 0.5
    prefix: str = "wf"
    stats: Stats = field(default_factory=Stats)
    stop: bool = False
    parked_count: int = 0
    first_wake: float | None = None
    errors: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.slots = asyncio.Semaphore(self.inflight)
        self.parked: asyncio.Queue[str] = asyncio.Queue()
        self.signal_sent: dict[str, float] = {}
        self.worker_ids = [f"{self.prefix}-worker-{i}" for i in range(self.workers)]
        self.all_done = asyncio.Event()
        self._pending = 0
        self._live: set[str] = set()
        # Up to this many tasks per claim, run concurrently by the worker.
        self.limit = max(1, -(-self.inflight // self.workers))

    def workflow_done(self, instance_id: str) -> None:
        self.stats.done(instance_id)
        self._live.discard(instance_id)
        self._pending -= 1
        self.slots.release()
        if self._pending == 0:
            self.all_done.set()

    async def worker(self, wid: str) -> None:
        ops = self.ops
        while not self.stop:
            try:
                ops.drain_wakeups(wid)
                tasks = await ops.claim(wid, self.limit)
                if not tasks:
                    ops.empty_claims += 1
                    await ops.wait_for_wakeup(wid, self.poll)
                    continue
                for task in tasks:
                    self.stats.claimed(task)
                await asyncio.gather(*(self.scenario.handle(self, wid, t) for t in tasks))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # counted and reported; the loop goes on
                self.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.01)

    async def submit_one(self, n: int) -> None:
        instance_id = f"{self.prefix}-{n}"
        self._pending += 1
        self.all_done.clear()
        self._live.add(instance_id)
        started = time.monotonic()
        self.stats.submitted[instance_id] = started
        self.stats.mark_ready(instance_id, self.scenario.first_task, started)
        await self.ops.submit(self.scenario.snapshot(instance_id))
        self.stats.submitted_total += 1

    async def submitter(self, until: float) -> None:
        """Keep `inflight` workflows running until `until` (each submission
        is its own task, so a slow SaveSnapshot never holds back the next)."""
        n = 0
        submissions: set[asyncio.Task[None]] = set()
        try:
            while time.monotonic() < until:
                try:
                    await asyncio.wait_for(self.slots.acquire(), max(0.0, until - time.monotonic()))
                except TimeoutError:
                    return
                if time.monotonic() >= until:
                    self.slots.release()
                    return
                task = asyncio.create_task(self._submit_counted(n))
                submissions.add(task)
                task.add_done_callback(submissions.discard)
                n += 1
        finally:
            if submissions:
                await asyncio.gather(*submissions, return_exceptions=True)

    async def _submit_counted(self, n: int) -> None:
        try:
            await self.submit_one(n)
        except Exception as exc:
            self.errors[f"submit: {type(exc).__name__}"] += 1
            self._live.discard(f"{self.prefix}-{n}")
            self._pending -= 1
            self.slots.release()
            if self._pending == 0:
                self.all_done.set()

    async def signaller(self) -> None:
        while True:
            instance_id = await self.parked.get()
            self.signal_sent[instance_id] = time.monotonic()
            try:
                await self.ops.send_event(instance_id, "kick", b"1")
            except Exception as exc:
                self.errors[type(exc).__name__] += 1
            self.stats.mark_ready(instance_id, SignalDriven().final)

    def live_ids(self) -> list[str]:
        return list(self._live)

    async def drain(self, timeout: float) -> bool:
        if self._pending == 0:
            return True
        try:
            await asyncio.wait_for(self.all_done.wait(), timeout)
        except TimeoutError:
            return False
        return True


async def stop_tasks(tasks: list[asyncio.Task[Any]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def run_closed_loop(
    run: Run,
    warmup: float,
    duration: float,
    on_tick: Callable[[int], None] | None = None,
    on_window: Callable[[], Awaitable[None]] | None = None,
    on_window_end: Callable[[], Awaitable[None]] | None = None,
    drain_timeout: float = 15.0,
) -> dict[str, Any]:
    """Keep `inflight` workflows going for warmup + duration seconds; measure
    the last `duration` seconds; then let the in-flight ones finish."""
    await run.ops.open(run.worker_ids)
    tasks = [asyncio.create_task(run.worker(w)) for w in run.worker_ids]
    if isinstance(run.scenario, SignalDriven):
        tasks.append(asyncio.create_task(run.signaller()))
    started = time.monotonic()
    run.stats.window_start = started + warmup
    run.stats.window_end = started + warmup + duration
    submitter = asyncio.create_task(run.submitter(run.stats.window_end))
    try:
        window_hooked = False
        while time.monotonic() < run.stats.window_end:
            await asyncio.sleep(0.25)
            if not window_hooked and time.monotonic() >= run.stats.window_start:
                window_hooked = True
                if on_window is not None:
                    await on_window()
            if on_tick is not None:
                on_tick(run.stats.completed_total)
        if on_window_end is not None:
            await on_window_end()
        await submitter
        drained = await run.drain(drain_timeout)
    finally:
        run.stop = True
        await stop_tasks([submitter, *tasks])
        await run.ops.close()
    return {"drained": drained, "unfinished": max(0, run._pending)}


async def run_sleeping(
    run: Run,
    scenario: Sleeping,
    count: int,
    on_tick: Callable[[int], None] | None = None,
    on_parked: Callable[[], Awaitable[None]] | None = None,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Submit `count` workflows; they park on a delay ending at one common
    instant; then the wake storm: every worker polls and runs them out."""
    await run.ops.open(run.worker_ids)
    tasks = [asyncio.create_task(run.worker(w)) for w in run.worker_ids]
    run.stats.window_start = time.monotonic()
    run.stats.window_end = time.monotonic() + 3600
    result: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        for n in range(count):
            await run.slots.acquire()
            run.slots.release()  # parked workflows do not hold a slot: only submissions are bounded
            await run.submit_one(n)
        result["submit_s"] = round(time.monotonic() - t0, 2)
        while run.parked_count < count and time.time() < scenario.wake_at:
            await asyncio.sleep(0.05)
            if on_tick is not None:
                on_tick(run.parked_count)
        result["parked"] = run.parked_count
        result["parked_before_wake"] = run.parked_count >= count
        result["park_s"] = round(time.monotonic() - t0, 2)
        if on_parked is not None:
            await on_parked()
        deadline = time.monotonic() + timeout
        while run.stats.completed_total < count and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            if on_tick is not None:
                on_tick(run.stats.completed_total)
        result["storm_end"] = time.time()
    finally:
        run.stop = True
        await stop_tasks(tasks)
        await run.ops.close()
    return result


def cpu_count() -> int:
    return os.cpu_count() or 1
