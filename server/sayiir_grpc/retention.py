"""Retention: how long finished workflows are kept, and the loop that purges them.

`SAYIIR_RETENTION` (`Completed=7d,Cancelled=7d,Failed=30d`) and the purge
command's `--older-than` share one duration syntax, parsed here. Only
finished statuses have a period: a workflow in progress or paused is never
purged, whatever the policy says. The SQL is in `stores.retention_store`.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from sayiir_common.model import STATUS_NAMES, TERMINAL_STATUSES
from sayiir_grpc.db import Database
from sayiir_grpc.stores import retention_store

log = structlog.get_logger(__name__)

UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
# Longer periods would overflow PostgreSQL's interval arithmetic; nobody keeps rows for 100 years.
MAX_DURATION_S = 100 * 365 * 86_400
PURGEABLE = tuple(s for s in STATUS_NAMES if s in TERMINAL_STATUSES)


def parse_duration(text: str) -> float:
    """Seconds in `90s`, `15m`, `12h` or `7d`; ValueError naming the syntax otherwise."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration: a number and a unit s, m, h or d, e.g. 90s, 15m, 12h, 7d")
    seconds = float(match.group(1)) * UNIT_SECONDS[match.group(2)]
    if not 0 < seconds <= MAX_DURATION_S:
        raise ValueError(f"{text!r} must be more than 0 and at most 100 years")
    return seconds


def format_duration(seconds: float) -> str:
    """The largest whole unit: 604800 -> `7d`, 90 -> `90s` (what parse_duration reads back)."""
    for unit in ("d", "h", "m"):
        if seconds % UNIT_SECONDS[unit] == 0:
            return f"{int(seconds // UNIT_SECONDS[unit])}{unit}"
    return f"{seconds:g}s"


def parse_status(text: str) -> str:
    """A finished status by the engine's name, any case, or snake_case (`completed`, `Failed`)."""
    wanted = text.strip().replace("_", "").lower()
    for name in STATUS_NAMES:
        if name.lower() == wanted:
            if name not in TERMINAL_STATUSES:
                raise ValueError(f"{name} workflows are never purged: only {', '.join(PURGEABLE)} are")
            return name
    raise ValueError(f"unknown status {text!r}: one of {', '.join(PURGEABLE)}")


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    """How long each finished status is kept, in seconds; a status not listed is kept forever."""

    periods: tuple[tuple[str, float], ...]

    def __str__(self) -> str:
        return ",".join(f"{status}={format_duration(seconds)}" for status, seconds in self.periods)


def parse_policy(text: str) -> RetentionPolicy:
    """`Completed=7d,Cancelled=7d,Failed=30d` (the SAYIIR_RETENTION syntax)."""
    periods: dict[str, float] = {}
    for item in text.split(","):
        if not item.strip():
            continue
        status, sep, duration = item.partition("=")
        if not sep:
            raise ValueError(f"{item.strip()!r} is not STATUS=DURATION, e.g. Completed=7d")
        name = parse_status(status)
        if name in periods:
            raise ValueError(f"{name} is given twice")
        periods[name] = parse_duration(duration)
    if not periods:
        raise ValueError("no STATUS=DURATION pair, e.g. Completed=7d,Failed=30d")
    return RetentionPolicy(tuple(periods.items()))


async def purge_policy(
    db: Database,
    policy: RetentionPolicy,
    *,
    batch_size: int = retention_store.DEFAULT_BATCH_SIZE,
    on_purged: Callable[[str, int], None] | None = None,
) -> dict[str, int]:
    """Purge everything past its period now, batch after batch; counts per status."""
    counts: dict[str, int] = {}
    for status, seconds in policy.periods:
        counts[status] = 0
        while True:
            purged = await retention_store.purge_batch(db, status, seconds, batch_size)
            counts[status] += purged
            if purged and on_purged is not None:
                on_purged(status, purged)
            if purged < batch_size:
                break
            # Between batches the loop yields, so store calls never queue behind a purge.
            await asyncio.sleep(0)
    return counts


async def retention_loop(
    db: Database,
    policy: RetentionPolicy,
    interval: float,
    on_purged: Callable[[str, int], None],
    batch_size: int = retention_store.DEFAULT_BATCH_SIZE,
) -> None:
    """Purge every `interval` seconds until cancelled; a failed round is logged and retried next time."""
    while True:
        try:
            counts = await purge_policy(db, policy, batch_size=batch_size, on_purged=on_purged)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database is down or a statement timed out: next round
            log.warning("retention round failed", error=f"{type(exc).__name__}: {exc}")
        else:
            if any(counts.values()):
                log.info("retention purged", **counts)
        await asyncio.sleep(interval)
