"""Schema migrations, run at start and by `sayiir-grpc migrate`.

How the service records its schema, so the engine and the service can each
start first on the same database:

- The tables are the engine's. Our `0001_sayiir_schema.sql` creates exactly
  what the engine's sqlx migrations 1 to 9 leave behind.
- The engine refuses a database whose tables exist without its bookkeeping
  (its migration 6 is not idempotent). So when we create the schema, we also
  write `_sqlx_migrations` rows 1 to 9 with the engine's own checksums: the
  engine then sees its schema as up to date and starts normally.
- When the engine was first (`_sqlx_migrations` already at version 9 or
  later), we adopt its schema and change nothing it recorded.
- Our own bookkeeping lives in `sayiir_grpc_schema_migrations`, one row per
  file in `migrations/`, so later service-only migrations have a home.
- Everything runs under the same advisory lock sqlx takes, so a service
  replica and an engine process starting together never migrate at once.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass
from importlib import resources

import asyncpg
import structlog

log = structlog.get_logger(__name__)

MIN_PG_MAJOR = 13
# The sqlx migration version the engine's 1.0.0 schema corresponds to.
ENGINE_SCHEMA_VERSION = 9


class MigrationError(RuntimeError):
    """The database cannot be brought to (or adopted at) the expected schema."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def available_migrations() -> list[Migration]:
    folder = resources.files("sayiir_grpc") / "migrations"
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            number, _, rest = entry.name.partition("_")
            found.append(Migration(int(number), rest.removesuffix(".sql"), entry.read_text()))
    return sorted(found, key=lambda m: m.version)


def engine_migration_rows() -> list[dict[str, object]]:
    """The engine's `_sqlx_migrations` rows 1 to 9 (sayiir 1.0.0), as observed."""
    text = (resources.files("sayiir_grpc") / "migrations" / "engine_sqlx_migrations.json").read_text()
    rows: list[dict[str, object]] = json.loads(text)
    return rows


def check_server_version(version_num: int) -> None:
    """Refuse PostgreSQL older than 13 (`server_version_num` is major * 10000 + minor)."""
    major = version_num // 10000
    if major < MIN_PG_MAJOR:
        raise MigrationError(
            f"PostgreSQL {major} is not supported: sayiir-grpc needs PostgreSQL {MIN_PG_MAJOR} or newer"
        )


def sqlx_lock_id(database_name: str) -> int:
    """The advisory lock key sqlx's migrator takes for a database."""
    return 0x3D32AD9E * zlib.crc32(database_name.encode())


_SQLX_TABLE = """
CREATE TABLE IF NOT EXISTS _sqlx_migrations (
    version BIGINT PRIMARY KEY,
    description TEXT NOT NULL,
    installed_on TIMESTAMPTZ NOT NULL DEFAULT now(),
    success BOOLEAN NOT NULL,
    checksum BYTEA NOT NULL,
    execution_time BIGINT NOT NULL
)
"""

_OUR_TABLE = """
CREATE TABLE IF NOT EXISTS sayiir_grpc_schema_migrations (
    version    INT         PRIMARY KEY,
    name       TEXT        NOT NULL,
    checksum   TEXT        NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- 'applied' when we ran the file, 'adopted' when the engine's schema
    -- was already there and the file was skipped.
    mode       TEXT        NOT NULL
)
"""


async def _engine_state(conn: asyncpg.Connection) -> tuple[int, list[int]] | None:
    """(highest successful version, failed versions) of the engine, or None."""
    exists = await conn.fetchval("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
    if not exists:
        return None
    rows = await conn.fetch("SELECT version, success FROM _sqlx_migrations ORDER BY version")
    done = [int(r["version"]) for r in rows if r["success"]]
    failed = [int(r["version"]) for r in rows if not r["success"]]
    return (max(done) if done else 0), failed


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Bring the database to the current schema; return what was done."""
    check_server_version(int(await conn.fetchval("SHOW server_version_num")))
    database = await conn.fetchval("SELECT current_database()")
    lock_id = sqlx_lock_id(database)
    done: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", lock_id)
    try:
        async with conn.transaction():
            # Checked first so that a least-privilege role (no CREATE on the
            # schema) can start on an already migrated database.
            if not await conn.fetchval("SELECT to_regclass('sayiir_grpc_schema_migrations') IS NOT NULL"):
                await conn.execute(_OUR_TABLE)
            applied = {
                int(r["version"]): r["checksum"]
                for r in await conn.fetch("SELECT version, checksum FROM sayiir_grpc_schema_migrations")
            }
            engine = await _engine_state(conn)
            if engine is not None:
                top, failed = engine
                if failed:
                    raise MigrationError(
                        f"the Sayiir engine's migration {failed[0]} is recorded as failed in _sqlx_migrations; "
                        "repair the database before starting sayiir-grpc"
                    )
                if top < ENGINE_SCHEMA_VERSION:
                    raise MigrationError(
                        f"this database holds the Sayiir engine schema at version {top}; sayiir-grpc needs "
                        f"version {ENGINE_SCHEMA_VERSION} (sayiir 1.0): start the sayiir 1.0 engine once "
                        "to upgrade it"
                    )
            for migration in available_migrations():
                if migration.version in applied:
                    if applied[migration.version] != migration.checksum:
                        log.warning("migration file changed since it was applied", version=migration.version)
                    continue
                if migration.version == 1 and engine is not None:
                    mode = "adopted"
                else:
                    await conn.execute(migration.sql)
                    mode = "applied"
                await conn.execute(
                    "INSERT INTO sayiir_grpc_schema_migrations (version, name, checksum, mode) VALUES ($1, $2, $3, $4)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                    mode,
                )
                done.append(f"{mode} {migration.version:04d}_{migration.name}")
            if engine is None:
                # We created the engine's schema: record it the way the engine
                # would, with its own checksums, so the engine adopts it.
                await conn.execute(_SQLX_TABLE)
                for row in engine_migration_rows():
                    await conn.execute(
                        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
                        "VALUES ($1, $2, TRUE, $3, 0) ON CONFLICT (version) DO NOTHING",
                        int(str(row["version"])),
                        str(row["description"]),
                        bytes.fromhex(str(row["checksum"])),
                    )
                done.append(f"recorded engine schema version {ENGINE_SCHEMA_VERSION} in _sqlx_migrations")
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", lock_id)
    return done
