"""A stopped service leaves nothing behind: no listener loop, no HTTP server thread, no open port.

Each of these once kept the end of a full test run hanging or growing: a
wakeup listener that swallowed its cancellation went on probing forever (and
`RunningServer.stop` waited for it), and every start left a metrics server
thread serving.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import asyncpg
import pytest

import sayiir_grpc.wakeup as wakeup
from conftest import start_service
from sayiir_client import GrpcBackend
from sayiir_common.ids import DefinitionHash, TaskId
from sayiir_common.model import TaskWakeupHint
from sayiir_grpc.wakeup import WakeupHub


def _serving_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "serve_forever" in t.name}


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_a_stop_that_arrives_as_the_liveness_probe_answers_still_ends_the_listener(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = WakeupHub(database_url)
    stopper: list[asyncio.Task[None]] = []

    class StopOnFirstProbe(asyncpg.Connection):  # type: ignore[misc]
        """Asks the hub to stop at the worst moment: the probe has its answer, the loop has not resumed."""

        async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
            result: str = await super().execute(query, *args, timeout=timeout)
            if query == "SELECT 1" and not stopper:
                stopper.append(asyncio.get_running_loop().create_task(hub.stop()))
            return result

    real_connect = asyncpg.connect

    async def connect(*args: Any, **kwargs: Any) -> asyncpg.Connection:
        return await real_connect(*args, connection_class=StopOnFirstProbe, **kwargs)

    monkeypatch.setattr(wakeup, "PROBE_INTERVAL_S", 0.05)
    monkeypatch.setattr(wakeup.asyncpg, "connect", connect)
    await hub.start()
    try:
        for _ in range(100):
            if stopper:
                break
            await asyncio.sleep(0.05)
        assert stopper, "the listener never probed its connection"
        done, _ = await asyncio.wait(stopper, timeout=5)
        assert done, "WakeupHub.stop() hung: the listener loop outlived its cancellation"
        assert hub._task is not None and hub._task.done()
    finally:
        hub._stopping = True
        if hub._task is not None:
            hub._task.cancel()


async def test_stopping_a_service_closes_its_metrics_server(database_url: str) -> None:
    before = _serving_threads()
    running = await start_service(database_url)
    assert running.metrics_port is not None
    metrics_port = running.metrics_port
    assert _port_open(metrics_port)
    started = _serving_threads() - before
    assert started, "the metrics server runs in a serve_forever thread"
    await running.stop(grace=1)
    assert not _port_open(metrics_port), "the metrics port still answers after stop()"
    assert not any(t.is_alive() for t in started), "the metrics server thread outlived stop()"
    assert not running.hub._task or running.hub._task.done()


async def test_a_service_that_fails_to_start_closes_its_metrics_server(database_url: str) -> None:
    before = _serving_threads()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        # The console's port is taken: start() fails after the metrics server is up.
        with pytest.raises(OSError):
            await start_service(database_url, console_listen=f"127.0.0.1:{busy}")
    leaked = [t for t in _serving_threads() - before if t.is_alive()]
    assert not leaked, f"a failed start left {len(leaked)} metrics server thread(s) serving"


async def test_a_worker_cancelled_as_a_hint_arrives_is_cancelled(backend: GrpcBackend) -> None:
    await backend.start_wakeups()
    waiting = asyncio.create_task(backend.wait_for_wakeup(5))
    await asyncio.sleep(0.05)  # now blocked on the hint queue
    assert backend._wakeup_queue is not None and not waiting.done()
    # The hint and the cancellation land in the same loop iteration.
    backend._wakeup_queue.put_nowait(TaskWakeupHint("wf", TaskId.sha256("t"), DefinitionHash.sha256("d"), ()))
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert backend._wakeup_queue.qsize() == 1, "the hint a cancelled wait did not return is kept for the next one"
