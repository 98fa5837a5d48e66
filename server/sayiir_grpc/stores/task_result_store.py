"""TaskResultStore: the stored output of one task."""

from __future__ import annotations

from sayiir_common.codec import SnapshotCodec
from sayiir_common.ids import TaskId
from sayiir_grpc.db import Database

# Outputs live in the task rows; the blob keeps none.
LOAD_TASK_OUTPUT = """
SELECT output FROM sayiir_workflow_tasks
WHERE instance_id = $1 AND task_id = $2 AND status = 'completed' AND output IS NOT NULL
"""

# Rows written before outputs moved out of the blob: the newest blob that
# still carries completed tasks holds the output.
LOAD_LEGACY_BLOB = """
SELECT data FROM sayiir_workflow_snapshot_history
WHERE instance_id = $1 AND status IN ('InProgress', 'Paused', 'Cancelled')
ORDER BY version DESC LIMIT 1
"""


async def load_task_result(db: Database, codec: SnapshotCodec, instance_id: str, task_id: TaskId) -> bytes | None:
    output = await db.run(
        "load_task_result",
        lambda c: c.fetchval(LOAD_TASK_OUTPUT, instance_id, task_id.as_bytes()),
        transaction=False,
    )
    if output is not None:
        return bytes(output)
    blob = await db.run("load_task_result", lambda c: c.fetchval(LOAD_LEGACY_BLOB, instance_id), transaction=False)
    if blob is None:
        return None
    result = codec.decode(blob).get_task_result(task_id)
    return result.output if result is not None and result.output else None
