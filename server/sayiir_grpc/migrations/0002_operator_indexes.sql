-- Indexes for the operator's workflow lists and bulk actions (the
-- WorkflowOperator service): the engine's schema indexes only what its
-- dispatch reads, so a filtered page over a million workflows would be a
-- sequential scan. Each list pages by keyset on instance_id, hence the
-- (criterion, instance_id) pairs: an equality on the criterion reads the
-- page straight off the index, in order. Names carry our prefix so they can
-- never meet an index the engine adds later; the engine neither reads nor
-- drops them (tests/interop runs the real engine on a database with them).

CREATE INDEX IF NOT EXISTS sayiir_grpc_snapshots_status_id
    ON sayiir_workflow_snapshots (status, instance_id);

CREATE INDEX IF NOT EXISTS sayiir_grpc_snapshots_definition_id
    ON sayiir_workflow_snapshots (definition_hash, instance_id);

-- Only in-progress rows at a task have a current task.
CREATE INDEX IF NOT EXISTS sayiir_grpc_snapshots_task_id
    ON sayiir_workflow_snapshots (current_task_id, instance_id)
    WHERE current_task_id IS NOT NULL;

CREATE INDEX IF NOT EXISTS sayiir_grpc_snapshots_started
    ON sayiir_workflow_snapshots (started_at);

CREATE INDEX IF NOT EXISTS sayiir_grpc_snapshots_updated
    ON sayiir_workflow_snapshots (updated_at);

-- The engine's tag index covers in-progress rows only.
CREATE INDEX IF NOT EXISTS sayiir_grpc_snapshots_tags
    ON sayiir_workflow_snapshots USING GIN (task_tags);
