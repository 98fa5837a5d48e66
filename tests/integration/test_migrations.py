"""Migrations: idempotent, the engine's exact schema, and the engine's bookkeeping."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg
import pytest

from sayiir_grpc.migrate import ENGINE_SCHEMA_VERSION, MigrationError, available_migrations, migrate, sqlx_lock_id

GOLDEN = Path(__file__).resolve().parents[1] / "fixtures" / "golden"


async def _migrated(url: str, times: int = 1) -> list[list[str]]:
    conn = await asyncpg.connect(url)
    try:
        return [await migrate(conn) for _ in range(times)]
    finally:
        await conn.close()


async def test_migrations_are_idempotent(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    first, second = await _migrated(url, times=2)
    assert any("applied 0001" in step for step in first)
    assert second == []
    conn = await asyncpg.connect(url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM sayiir_grpc_schema_migrations") == len(available_migrations())
        assert await conn.fetchval("SELECT max(version) FROM _sqlx_migrations") == ENGINE_SCHEMA_VERSION
    finally:
        await conn.close()


async def test_concurrent_first_starts_migrate_once(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    results = await asyncio.gather(*(_migrated(url) for _ in range(4)))
    applied = [step for (steps,) in results for step in steps if step.startswith("applied")]
    assert len(applied) == len(available_migrations())


async def test_schema_is_identical_to_the_engines(make_database: Callable[[], Awaitable[str]]) -> None:
    from fixtures.schema_describe import describe_schema, without_service_indexes

    url = await make_database()
    await _migrated(url)
    ours = await describe_schema(url)
    engine = json.loads((GOLDEN / "engine_schema.json").read_text())
    # Our own bookkeeping tables (sayiir_grpc_*) are the only additions; the
    # indexes of our own migrations (named sayiir_grpc_*, never read by the
    # engine) the others.
    assert ours["tables"].pop("sayiir_grpc_schema_migrations")
    for name in [name for name in ours["tables"] if name.startswith("sayiir_grpc_")]:
        ours["tables"].pop(name)
    without_service_indexes(ours)
    # Column comments are free text (ours describe the columns in our words).
    for description in (ours, engine):
        for table in description["tables"].values():
            for column in table["columns"]:
                column.pop("comment", None)
    # PostgreSQL 16 and newer print a single-table view's columns unqualified
    # (pg_get_viewdef); the golden file was made on 15.
    for description in (ours, engine):
        for view in description["views"].values():
            view["definition"] = re.sub(r"\bsayiir_\w+\.", "", view["definition"])
    for key in ("tables", "views"):
        assert ours[key] == engine[key], key


async def test_engine_bookkeeping_is_recorded_with_the_engines_checksums(
    make_database: Callable[[], Awaitable[str]],
) -> None:
    url = await make_database()
    await _migrated(url)
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT version, description, success, checksum FROM _sqlx_migrations ORDER BY version")
    finally:
        await conn.close()
    engine = json.loads((GOLDEN / "sqlx_migrations.json").read_text())
    engine_rows = engine["rows"] if isinstance(engine, dict) else engine
    assert [(r["version"], r["description"], r["success"], r["checksum"].hex()) for r in rows] == [
        (e["version"], e["description"], True, e["checksum"]) for e in engine_rows
    ]


async def test_an_older_engine_schema_is_refused(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TABLE _sqlx_migrations (version BIGINT PRIMARY KEY, description TEXT NOT NULL, "
            "installed_on TIMESTAMPTZ NOT NULL DEFAULT now(), success BOOLEAN NOT NULL, checksum BYTEA NOT NULL, "
            "execution_time BIGINT NOT NULL)"
        )
        await conn.execute("INSERT INTO _sqlx_migrations VALUES (1, 'initial', now(), true, '\\x00', 1)")
        with pytest.raises(MigrationError, match=r"version 1.*needs version 9"):
            await migrate(conn)
    finally:
        await conn.close()


async def test_migration_waits_for_the_engines_advisory_lock(make_database: Callable[[], Awaitable[str]]) -> None:
    url = await make_database()
    holder = await asyncpg.connect(url)
    try:
        name = await holder.fetchval("SELECT current_database()")
        await holder.execute("SELECT pg_advisory_lock($1)", sqlx_lock_id(name))
        pending = asyncio.ensure_future(_migrated(url))
        await asyncio.sleep(0.5)
        assert not pending.done()
        await holder.execute("SELECT pg_advisory_unlock($1)", sqlx_lock_id(name))
        await asyncio.wait_for(pending, 10)
    finally:
        await holder.close()
