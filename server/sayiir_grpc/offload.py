"""Encoding and decoding of large blobs, in a worker process.

A snapshot blob of a few MB costs seconds of CPU to encode or decode on a
busy machine (the JSON codec writes every byte of a buffer as a number).
Run on the event loop, that stalls every other call, health checks
included; a thread would not help, since the work holds the GIL. So blobs
past OFFLOAD_BYTES go to one worker process (spawned on first use), and the
event loop only copies bytes to and from it. Small blobs, the common case,
are coded inline: a round trip to the worker costs more than they do.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

from sayiir_common.codec import SnapshotCodec
from sayiir_common.model import Completed, WorkflowSnapshot

OFFLOAD_BYTES = 128 * 1024
# A completed task's id and bookkeeping in the JSON blob, roughly.
TASK_ENTRY_BYTES = 120

T = TypeVar("T")

_pool: ProcessPoolExecutor | None = None
_lock = threading.Lock()


def _worker() -> ProcessPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            # spawn: forking a process that runs gRPC's threads is unsafe.
            _pool = ProcessPoolExecutor(
                max_workers=1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_exit_with_parent,
                initargs=(os.getpid(),),
            )
        return _pool


def _exit_with_parent(parent: int) -> None:
    """In the worker: exit when the service is gone, even killed (SIGKILL leaves no goodbye)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _ready() -> bool:
    return True


async def warm_up() -> None:
    """Start the worker now (from a thread), not on the first large blob's call."""
    await asyncio.to_thread(lambda: _worker().submit(_ready).result())


def weight(snapshot: WorkflowSnapshot) -> int:
    """About how many bytes of payload the snapshot's blob carries (outputs stripped)."""
    total = len(snapshot.initial_input or b"")
    if isinstance(snapshot.state, Completed):
        total += len(snapshot.state.final_output)
    tasks = getattr(snapshot.state, "completed_tasks", None)
    if tasks:
        total += TASK_ENTRY_BYTES * len(tasks)
    return total


async def decode(codec: SnapshotCodec, blob: bytes) -> WorkflowSnapshot:
    if len(blob) < OFFLOAD_BYTES:
        return codec.decode(blob)
    return await asyncio.get_running_loop().run_in_executor(_worker(), codec.decode, bytes(blob))


async def encode(codec: SnapshotCodec, snapshot: WorkflowSnapshot) -> bytes:
    if weight(snapshot) < OFFLOAD_BYTES:
        return codec.encode(snapshot)
    return await asyncio.get_running_loop().run_in_executor(_worker(), codec.encode, snapshot)


async def run(heavy: bool, function: Callable[..., T], *args: Any) -> T:
    """`function(*args)`: in the worker process when `heavy`, inline otherwise.

    `function` must be a module-level function and its arguments and result
    plain picklable values.
    """
    if not heavy:
        return function(*args)
    return await asyncio.get_running_loop().run_in_executor(_worker(), function, *args)


def shutdown() -> None:
    """Stop the worker process, if one was started.

    A process started by multiprocessing (the server processes of
    `serve --workers N`) joins its non-daemon children when it ends, before
    any atexit hook would stop the pool: without this it would wait forever.
    """
    global _pool
    with _lock:
        pool, _pool = _pool, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)
