"""`sayiir-grpc purge`: the retention purge, once, from the command line.

Exit status: 0 done (also when nothing matched), 1 the database failed,
2 a usage error (one line on stderr naming the argument).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import asyncpg

from sayiir_grpc.db import Database, PoolOptions
from sayiir_grpc.retention import (
    PURGEABLE,
    RetentionPolicy,
    format_duration,
    parse_duration,
    parse_status,
    purge_policy,
)
from sayiir_grpc.stores.retention_store import count_purgeable

USAGE_ERROR = 2


def add_parser(commands: Any) -> None:
    purge = commands.add_parser(
        "purge",
        help="Delete finished workflows (and all their rows) not updated for a while; print the counts per status.",
    )
    purge.add_argument(
        "--status",
        action="append",
        default=[],
        metavar="S",
        help=f"a finished status to purge: {', '.join(PURGEABLE)} (any case, or snake_case); repeatable",
    )
    purge.add_argument("--older-than", metavar="DURATION", help="last update at least this long ago: 90s, 15m, 12h, 7d")
    purge.add_argument("--dry-run", action="store_true", help="count what would be purged; delete nothing")
    purge.add_argument("--json", action="store_true", help="print one JSON object")
    purge.add_argument("--database-url", default=None, help="PostgreSQL URL [env SAYIIR_DATABASE_URL]")


def _policy(args: argparse.Namespace) -> RetentionPolicy:
    if not args.status:
        raise ValueError("--status is required (repeat it for several statuses)")
    if args.older_than is None:
        raise ValueError("--older-than is required, e.g. --older-than 7d")
    try:
        statuses = list(dict.fromkeys(parse_status(s) for s in args.status))
    except ValueError as exc:
        raise ValueError(f"--status: {exc}") from None
    try:
        seconds = parse_duration(args.older_than)
    except ValueError as exc:
        raise ValueError(f"--older-than: {exc}") from None
    return RetentionPolicy(tuple((status, seconds) for status in statuses))


async def _purge(url: str, policy: RetentionPolicy, dry_run: bool) -> dict[str, int]:
    db = await Database.connect(url, PoolOptions(max_connections=1, min_connections=1))
    try:
        if dry_run:
            return {status: await count_purgeable(db, status, seconds) for status, seconds in policy.periods}
        return await purge_policy(db, policy)
    finally:
        await db.close()


def run(args: argparse.Namespace) -> int:
    from sayiir_grpc.cli import run_event_loop

    try:
        policy = _policy(args)
    except ValueError as exc:
        print(f"sayiir-grpc purge: {exc}", file=sys.stderr)
        return USAGE_ERROR
    url = args.database_url or os.environ.get("SAYIIR_DATABASE_URL")
    if not url:
        print("sayiir-grpc purge: needs --database-url (or SAYIIR_DATABASE_URL)", file=sys.stderr)
        return USAGE_ERROR
    counts: dict[str, int] = {}

    async def main() -> None:
        counts.update(await _purge(url, policy, args.dry_run))

    try:
        run_event_loop(main())
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        print(f"sayiir-grpc purge: the database failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    older_than = format_duration(policy.periods[0][1])
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "older_than": older_than, "purged": counts}))
    else:
        verb = "would be purged" if args.dry_run else "purged"
        for status, count in counts.items():
            print(f"{status}: {count} {verb} (not updated for {older_than})")
    return 0
