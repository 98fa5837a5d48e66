"""TaskResultStore: the stored output of one task.

Outputs live in the task rows (the engine's layout: blobs carry none), so
this is one indexed read, whatever the size of the instance's snapshot: an
unknown task never costs a decode of the instance's blob.
"""

from __future__ import annotations

from sayiir_common.ids import TaskId
from sayiir_grpc.db import Database

LOAD_TASK_OUTPUT = """
SELECT output FROM sayiir_workflow_tasks
WHERE instance_id = $1 AND task_id = $2 AND status = 'completed' AND output IS NOT NULL
"""


async def load_task_result(db: Database, instance_id: str, task_id: TaskId) -> bytes | None:
    output = await db.read("load_task_result", lambda c: c.fetchval(LOAD_TASK_OUTPUT, instance_id, task_id.as_bytes()))
    return None if output is None or not output else bytes(output)
