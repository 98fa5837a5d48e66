-- Dispatch indexes (sayiir-grpc's own; the engine neither reads nor needs
-- them, and their names cannot clash with any the engine creates).
--
-- The engine's idx_snapshots_inprogress holds every in-progress row: the
-- ones parked at a signal, a delay, a fork... as well as the ones ready at
-- a task. A dispatch scan over it walks the parked ones too, so its cost
-- grows with the number of waiting workflows. Each index below holds only
-- the rows one dispatch arm can take, in that arm's order, so a scan starts
-- at the first candidate and stops after LIMIT of them.

-- The two ready-at-a-task indexes carry instance_id and task_tags, so an
-- arm picks its candidates from the index alone (an index-only scan) and
-- skips rows whose task is running without reading their heap pages.

-- Ready at a task: the best-priority arm (priority, then oldest first).
CREATE INDEX IF NOT EXISTS sayiir_grpc_ready_by_priority
    ON sayiir_workflow_snapshots (task_priority, updated_at) INCLUDE (instance_id, task_tags)
    WHERE status = 'InProgress' AND position_kind = 'AtTask';

-- Ready at a task: the oldest-first arm (aging).
CREATE INDEX IF NOT EXISTS sayiir_grpc_ready_by_age
    ON sayiir_workflow_snapshots (updated_at) INCLUDE (instance_id, task_tags)
    WHERE status = 'InProgress' AND position_kind = 'AtTask';

-- Parked at a delay, by wake-up time: the due ones are a short range at
-- the front; the ones due later are never read.
CREATE INDEX IF NOT EXISTS sayiir_grpc_delays_by_wake
    ON sayiir_workflow_snapshots (delay_wake_at)
    WHERE status = 'InProgress' AND position_kind = 'AtDelay';
