"""The idempotency-key table: look a key up, record an outcome, purge old keys."""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

LOOKUP = "SELECT rpc, request_hash, outcome FROM sayiir_grpc_idempotency_keys WHERE request_key = $1"

# No ON CONFLICT: an earlier attempt with the same key (a first run does not
# look its key up) or a concurrent one that committed first makes this insert
# fail (unique violation), this transaction rolls back, and the call is run
# again, looking the key up first, which then finds the stored outcome.
RECORD = """
INSERT INTO sayiir_grpc_idempotency_keys (request_key, rpc, request_hash, outcome)
VALUES ($1, $2, $3, $4)
"""

# Small batches: a purge never holds many row locks or a long transaction.
PURGE_BATCH = """
DELETE FROM sayiir_grpc_idempotency_keys
WHERE request_key IN (
    SELECT request_key FROM sayiir_grpc_idempotency_keys
    WHERE created_at < now() - make_interval(secs => $1::float8)
    ORDER BY created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
)
"""


@dataclass(frozen=True, slots=True)
class StoredOutcome:
    rpc: str
    request_hash: bytes
    outcome: bytes


async def lookup(conn: asyncpg.Connection, key: str) -> StoredOutcome | None:
    row = await conn.fetchrow(LOOKUP, key)
    if row is None:
        return None
    return StoredOutcome(row["rpc"], bytes(row["request_hash"]), bytes(row["outcome"]))


async def record(conn: asyncpg.Connection, key: str, rpc: str, request_hash: bytes, outcome: bytes) -> None:
    await conn.execute(RECORD, key, rpc, request_hash, outcome)


async def purge_batch(conn: asyncpg.Connection, retention_s: float, batch: int) -> int:
    """Delete up to `batch` keys older than `retention_s`; returns how many."""
    status = await conn.execute(PURGE_BATCH, retention_s, batch)
    return int(status.rsplit(" ", 1)[-1])
