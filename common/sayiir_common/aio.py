"""Waiting with a timeout without losing a cancellation.

Before Python 3.12, `asyncio.wait_for` swallows a cancellation that arrives
just as the awaited thing completes: the cancelled task carries on as if
nothing happened, and whoever cancelled it (a stopping service, a closing
client) waits for it forever. `asyncio.timeout` has no such window, so the
server and the client wait through it.
"""

from __future__ import annotations

import asyncio


async def wait_until_set(event: asyncio.Event, timeout: float) -> bool:
    """True once `event` is set, False after `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True
