"""The blob worker process goes when the service goes, even when the service is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from test_cli import running_service


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}").exists() and "Z" not in (Path(f"/proc/{pid}/stat").read_text().split()[2])


def _survivors(pids: list[int], within_s: float) -> list[int]:
    deadline = time.monotonic() + within_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return [p for p in pids if _alive(p)]


async def test_the_worker_exits_when_the_service_is_killed(make_database: Callable[[], Awaitable[str]]) -> None:
    with running_service(["--database-url", await make_database()], env={"SAYIIR_LOG_LEVEL": "warning"}) as (
        _address,
        proc,
    ):
        children = _children(proc.pid)
        assert children, "the service started no worker process"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    left = await asyncio.to_thread(_survivors, children, 15.0)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes left behind: {left}"
