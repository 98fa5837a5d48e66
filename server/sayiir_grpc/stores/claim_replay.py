"""What a keyed ClaimAvailableTasks stores under its key, and how a repeat
of the key gets its tasks back.

A claim's reply carries each task's input, and, unless omitted, its whole
snapshot: too much to build in SQL, where the keyed claim records its key
in the same statement as the claims (`dispatch.CLAIM_AVAILABLE_KEYED`). So
both paths store the same outline instead: the reply with each task's
instance id, task id and version only (`outline_of`, and the SQL
`proto_sql.claimed_tasks_reply`), in the reply's order. A repeat reads
each outlined task again from its history row at that version, which never
changes (`dispatch.claimed_again`), and answers those that the worker
still holds at that version and that can run, as the first attempt did:
its releases (a task not runnable, or left out of a reply too large) run
after the statement, so a repeat checks again and gives back what it
leaves out. A task released since, or whose claim expired and went to
another worker, is not the worker's any more, and saying so is the true
answer.
"""

from __future__ import annotations

from sayiir_common.proto.sayiir.v1 import task_claim_store_pb2 as rpc_pb
from sayiir_grpc.stores import proto_sql
from sayiir_grpc.stores.history import LIVE_CLAIM, stored_outputs

# The name keyed claims are stored under with an outline. Full replies
# were stored under the method's name (`CLAIM_RPC_FULL_REPLY`) before: a
# repeat of such a key is still answered (a full reply carries the
# outline's fields), while a server of that time refuses a key stored in
# outline (another name) rather than answer tasks without their input.
CLAIM_RPC = "ClaimAvailableTasks"
CLAIM_RPC_FULL_REPLY = "_claim_available"

# The outlined tasks that `$4` still holds a live claim on, whose row is
# still at the outlined version (a workflow that moved on since is not the
# task outlined), in the outline's order.
TASKS_AGAIN = f"""
SELECT k.instance_id, k.version AS history_version, s.trace_parent, h.data,
       {stored_outputs("k.instance_id")}
FROM unnest($1::text[], $2::bytea[], $3::bigint[]) WITH ORDINALITY AS k(instance_id, task_id, version, n)
JOIN sayiir_workflow_snapshots s ON s.instance_id = k.instance_id AND s.history_version = k.version
JOIN sayiir_workflow_snapshot_history h ON h.instance_id = k.instance_id AND h.version = k.version
WHERE EXISTS (
    SELECT 1 FROM sayiir_workflow_claims c
    WHERE c.instance_id = k.instance_id AND c.task_id = k.task_id AND c.worker_id = $4 AND {LIVE_CLAIM})
ORDER BY k.n
"""


def outline_of(reply: rpc_pb.ClaimAvailableTasksResponse) -> bytes:
    """The outline stored for `reply`: its tasks' instance ids, task ids and versions."""
    outline = rpc_pb.ClaimAvailableTasksResponse()
    for task in reply.tasks:
        outline.tasks.add(instance_id=task.instance_id, task_id=task.task_id, version=task.version)
    return outline.SerializeToString()


def outline_column(rows: str, order_by: str) -> str:
    """SQL: the outline of the claimed rows `rows` (columns instance_id,
    current_task_id, history_version), in `order_by` order (over the rows
    as `o`), as one bytea value (an aggregate: one row, the empty reply when
    `rows` is empty)."""
    task = proto_sql.claimed_task("i.instance_utf8", "i.current_task_id", "i.history_version")
    return f"""(SELECT {proto_sql.claimed_tasks_reply("o.task", order_by)}
     FROM (SELECT i.*, {task} AS task
           FROM (SELECT r.*, convert_to(r.instance_id, 'UTF8') AS instance_utf8 FROM {rows} r) i) o)"""
