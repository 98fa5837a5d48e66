"""The service is killed (SIGKILL) under load and restarted: nothing acknowledged
is lost and no instance is left half-written.

`sayiir-grpc serve` runs as a child process on a fixed port; eight workers
load it while the test kills it twice without warning (no drain, no
rollback by the service: whatever it had in flight is cut where it stood)
and starts it again on the same database and port. Calls in flight fail
with UNAVAILABLE or succeed; afterwards every acknowledged write is in the
database and the invariant checker is green: every write the service makes
is one PostgreSQL transaction, so a kill leaves all of it or none.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable

import pytest

from faults.support import Figures, Ledger, free_port, run_load, verify, without_client_retries
from integration.test_cli import running_service
from sayiir_client import connect

pytestmark = [pytest.mark.faults, pytest.mark.timeout(180)]

WORKERS = 8
LOAD_SECONDS = 10.0
KILLS_AT = (2.5, 6.0)  # seconds into the load
DOWN_FOR = 0.5


def _drain(proc: subprocess.Popen[str]) -> None:
    assert proc.stdout is not None
    with contextlib.suppress(ValueError, OSError):
        for _ in proc.stdout:
            pass


async def test_sigkill_under_load_loses_no_acknowledged_write(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    port = free_port()
    args = ["--database-url", url, "--listen", f"127.0.0.1:{port}"]
    figures = Figures()
    ledger = Ledger()
    stacks: list[contextlib.ExitStack] = []
    serving: list[subprocess.Popen[str]] = []

    async def serve() -> None:
        stack = contextlib.ExitStack()
        stacks.append(stack)
        address, proc = await asyncio.to_thread(
            stack.enter_context, running_service(args, env={"SAYIIR_LOG_LEVEL": "warning"})
        )
        assert address == f"127.0.0.1:{port}"
        serving.append(proc)
        # running_service stops reading at the listen line; a full pipe would
        # block the service's logging, and with it every call.
        threading.Thread(target=_drain, args=(proc,), daemon=True).start()

    try:
        await serve()

        async def kills() -> None:
            started = time.monotonic()
            for at in KILLS_AT:
                await asyncio.sleep(max(0.0, at - (time.monotonic() - started)))
                proc = serving[-1]
                proc.send_signal(signal.SIGKILL)
                await asyncio.to_thread(proc.wait)
                figures.faults_injected += 1
                await asyncio.sleep(DOWN_FOR)
                await serve()

        async with contextlib.AsyncExitStack() as clients_stack:
            clients = [
                without_client_retries(
                    await clients_stack.enter_async_context(connect(f"127.0.0.1:{port}", watch_wakeups=False))
                )
                for _ in range(WORKERS)
            ]
            await run_load(clients, figures, ledger, LOAD_SECONDS, kills)

        problems = await verify(url, ledger, figures)
        figures.extra["kill_signal"] = "SIGKILL"
        figures.record("service_faults")
        assert figures.unexpected == [], figures.unexpected
        assert problems == [], problems
        assert figures.faults_injected == len(KILLS_AT)
        assert figures.unavailable > 0, "the kills were not felt: the test proves nothing"
        assert figures.acknowledged_writes > 150
        assert all(p.returncode == -signal.SIGKILL for p in serving[:-1])
    finally:
        for stack in reversed(stacks):
            await asyncio.to_thread(stack.close)
