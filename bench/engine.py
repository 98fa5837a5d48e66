"""Anchors (a) and (b): the sayiir 1.0.0 engine itself on its own
PostgresBackend, with the same 4-step linear workflow (each task returns
its input + 1).

(a) In process: `DurableEngine(backend).run(...)`, which is what
    `run_durable_workflow` calls, with the engine built once and shared
    (`run_durable_workflow` builds a new engine, hence a new connection
    pool, on every call: about 3x slower here). One thread runs one
    workflow at a time; N threads keep N in flight.
(b) Distributed: `Worker` x W (each with its own pool, as separate worker
    processes would have) and a `WorkflowClient` keeping N submitted.
    Completion is the final task's return (recorded inside the task, as
    the upstream benchmark does), so its end-to-end time is slightly
    optimistic: the last checkpoint's commit is not included.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from common import latency_block

# The load goes on this long after the measured window, so that the window's
# closing readings (CPU, transaction ids) are taken under load, not teardown.
TAIL_S = 0.5


def _import_sayiir() -> Any:
    import sayiir

    return sayiir


@dataclass
class EngineResult:
    window_s: float
    completed_window: int
    completed_total: int
    e2e: list[float] = field(default_factory=list)
    pickup: list[float] = field(default_factory=list)
    errors: int = 0
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {
            "window_s": round(self.window_s, 2),
            "completed_window": self.completed_window,
            "completed_total": self.completed_total,
            "wf_per_s": round(self.completed_window / self.window_s, 1) if self.window_s else 0.0,
            "e2e": latency_block(self.e2e),
            "pickup": latency_block(self.pickup),
            "errors": self.errors,
            "notes": self.notes,
        }


def linear_flow(
    steps: int, on_first: Callable[[], None] | None = None, on_last: Callable[[], None] | None = None
) -> Any:
    sayiir = _import_sayiir()

    def make(i: int) -> Any:
        def step(x: Any) -> Any:
            if i == 1 and on_first is not None:
                on_first()
            if i == steps and on_last is not None:
                on_last()
            return (x if isinstance(x, int) else 0) + 1

        step.__name__ = f"step_{i}"
        return sayiir.task(step, name=f"step-{i}")

    flow = sayiir.Flow("bench-linear")
    for i in range(1, steps + 1):
        flow = flow.then(make(i))
    return flow.build()


def run_in_process(
    url: str,
    steps: int,
    threads: int,
    warmup: float,
    duration: float,
    tick: Callable[[int], None],
    shared_engine: bool = True,
) -> EngineResult:
    sayiir = _import_sayiir()
    backend = sayiir.PostgresBackend(url)
    workflow = linear_flow(steps)
    engine = sayiir.DurableEngine(backend)
    started = time.monotonic()
    window_start, window_end = started + warmup, started + warmup + duration
    lock = threading.Lock()
    result = EngineResult(duration, 0, 0)

    def loop(k: int) -> None:
        i = 0
        while time.monotonic() < window_end + TAIL_S:
            t0 = time.monotonic()
            try:
                if shared_engine:
                    status = engine.run(workflow._inner, f"eng-{k}-{i}", 0, workflow._task_registry)
                else:  # the convenience function: a new engine (and pool) per call
                    status = sayiir.run_durable_workflow(workflow, f"eng-{k}-{i}", 0, backend=backend)
                ok = status.is_completed()
            except Exception:
                ok = False
            t1 = time.monotonic()
            i += 1
            with lock:
                if not ok:
                    result.errors += 1
                    continue
                result.completed_total += 1
                if window_start <= t1 <= window_end:
                    result.completed_window += 1
                if t0 >= window_start:
                    result.e2e.append(t1 - t0)

    workers = [threading.Thread(target=loop, args=(k,), daemon=True) for k in range(threads)]
    for w in workers:
        w.start()
    while any(w.is_alive() for w in workers):
        time.sleep(0.25)
        tick(result.completed_total)
    return result


def run_fleet(
    url: str,
    steps: int,
    workers: int,
    inflight: int,
    poll: float,
    warmup: float,
    duration: float,
    tick: Callable[[int], None],
) -> EngineResult:
    sayiir = _import_sayiir()
    submitted: dict[str, float] = {}
    picked: set[str] = set()
    done_q: queue.Queue[tuple[str, float]] = queue.Queue()
    result = EngineResult(duration, 0, 0)
    lock = threading.Lock()
    started = time.monotonic()
    window_start, window_end = started + warmup, started + warmup + duration

    def on_first() -> None:
        iid = sayiir.get_task_context().instance_id
        now = time.monotonic()
        with lock:
            if iid in submitted and iid not in picked:
                picked.add(iid)
                if submitted[iid] >= window_start:
                    result.pickup.append(now - submitted[iid])

    def on_last() -> None:
        done_q.put((sayiir.get_task_context().instance_id, time.monotonic()))

    workflow = linear_flow(steps, on_first, on_last)
    backend = sayiir.PostgresBackend(url)
    client = sayiir.WorkflowClient(backend)
    handles = [
        sayiir.Worker(f"fleet-{i}", backend, poll_interval=poll, claim_ttl=30.0).start([workflow])
        for i in range(workers)
    ]
    n = 0
    # Submissions go through a small pool, so one slow submit never holds back the next.
    pool = ThreadPoolExecutor(4, thread_name_prefix="fleet-submit")

    def submit_now(iid: str) -> None:
        with lock:
            submitted[iid] = time.monotonic()
        try:
            client.submit(workflow, iid, 0)
        except Exception:
            with lock:
                result.errors += 1

    def submit() -> None:
        nonlocal n
        iid = f"fleet-{n}"
        n += 1
        pool.submit(submit_now, iid)

    try:
        for _ in range(inflight):
            submit()
        pending = inflight
        last_tick = 0.0
        while pending > 0:
            now = time.monotonic()
            if now > window_end + 20:
                result.notes.append(f"{pending} workflow(s) still running 20 s after the window")
                break
            if now - last_tick > 0.25:
                tick(result.completed_total)
                last_tick = now
            try:
                iid, at = done_q.get(timeout=0.1)
            except queue.Empty:
                continue
            pending -= 1
            result.completed_total += 1
            if window_start <= at <= window_end:
                result.completed_window += 1
            if submitted.get(iid, 0.0) >= window_start:
                result.e2e.append(at - submitted[iid])
            if time.monotonic() < window_end + TAIL_S:
                submit()
                pending += 1
    finally:
        pool.shutdown(wait=True)
        for h in handles:
            h.shutdown()
        for h in handles:
            h.join()
    return result
