"""One module per Rust store trait: the SQL and the plain async functions.

Every function takes the `Database` and the codec explicitly and runs one
statement or one transaction; servicers only translate protobuf to these
calls and back.
"""

# Every table holding rows keyed by instance_id besides the snapshot row
# itself (the original's WORKFLOW_CHILD_TABLES). `delete_snapshot` builds its
# statement from this list, so a new child table is deleted by adding it here.
WORKFLOW_CHILD_TABLES: tuple[str, ...] = (
    "sayiir_workflow_snapshot_history",
    "sayiir_workflow_tasks",
    "sayiir_workflow_events",
    "sayiir_workflow_signals",
    "sayiir_workflow_claims",
)

TASK_READY_CHANNEL = "sayiir_task_ready"
