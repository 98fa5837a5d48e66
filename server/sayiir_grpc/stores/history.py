"""Reading and writing snapshot blobs, shared by every store that mutates one.

`sayiir_workflow_snapshot_history` is the canonical blob store; the snapshot
row only points at a version. A read-modify-write (save_task_result, the
signal composites) locks the snapshot row, reads the blob and the task
outputs, mutates, then appends a new history version.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import asyncpg

from sayiir_client.codec import SnapshotCodec
from sayiir_client.ids import TaskId
from sayiir_client.model import WorkflowSnapshot

# Statement 1 of a read-modify-write: lock the snapshot row alone. It must not
# also read the blob: under READ COMMITTED a statement that waited for this
# lock re-checks the locked row but keeps the snapshot it started with, so a
# history row appended by the writer it waited for would be invisible to it.
LOCK_SNAPSHOT = """
SELECT history_version, status, trace_parent
FROM sayiir_workflow_snapshots
WHERE instance_id = $1
FOR UPDATE
"""

# Statement 2: the blob at the locked version and every stored task output,
# in one round trip. Both array_aggs sort by task_id so position i of one
# matches position i of the other. COALESCE(h.data, s.data) reads rows
# written before the engine moved blobs into history.
READ_BLOB_AND_OUTPUTS = """
SELECT
    COALESCE(
        (SELECT h.data FROM sayiir_workflow_snapshot_history h
         WHERE h.instance_id = $1 AND h.version = $2),
        (SELECT s.data FROM sayiir_workflow_snapshots s WHERE s.instance_id = $1)
    ) AS data,
    COALESCE((SELECT array_agg(t.task_id ORDER BY t.task_id) FROM sayiir_workflow_tasks t
              WHERE t.instance_id = $1 AND t.status = 'completed' AND t.output IS NOT NULL),
             '{}') AS task_ids,
    COALESCE((SELECT array_agg(t.output ORDER BY t.task_id) FROM sayiir_workflow_tasks t
              WHERE t.instance_id = $1 AND t.status = 'completed' AND t.output IS NOT NULL),
             '{}') AS outputs
"""


@dataclass(slots=True)
class LockedSnapshot:
    snapshot: WorkflowSnapshot
    history_version: int
    status: str


def blob_hash(blob: bytes) -> bytes:
    return hashlib.sha256(blob).digest()


def hydrate(snapshot: WorkflowSnapshot, task_ids: list[bytes], outputs: list[bytes]) -> None:
    """Put stored outputs back on the blob's (output-stripped) completed tasks."""
    snapshot.hydrate_task_outputs((TaskId(tid), out) for tid, out in zip(task_ids, outputs, strict=True))


async def lock_for_mutation(conn: asyncpg.Connection, codec: SnapshotCodec, instance_id: str) -> LockedSnapshot | None:
    """Lock the instance row and return its hydrated snapshot (None if missing)."""
    row = await conn.fetchrow(LOCK_SNAPSHOT, instance_id)
    if row is None:
        return None
    blob_row = await conn.fetchrow(READ_BLOB_AND_OUTPUTS, instance_id, row["history_version"])
    if blob_row is None or blob_row["data"] is None:
        return None
    snapshot = codec.decode(blob_row["data"])
    snapshot.trace_parent = row["trace_parent"]
    hydrate(snapshot, blob_row["task_ids"], blob_row["outputs"])
    return LockedSnapshot(snapshot, row["history_version"], row["status"])


def encode_stripped(codec: SnapshotCodec, snapshot: WorkflowSnapshot) -> tuple[bytes, list[tuple[TaskId, bytes]]]:
    """The blob without task outputs, and the outputs taken out of it.

    The snapshot is left as it was (outputs restored), so callers may keep
    using it after encoding.
    """
    outputs = snapshot.take_task_outputs()
    try:
        blob = codec.encode(snapshot)
    finally:
        snapshot.hydrate_task_outputs(outputs)
    return blob, outputs
