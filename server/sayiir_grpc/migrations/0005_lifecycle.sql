-- Lifecycle (retention and backlog gauges), service-only: an index the
-- engine never reads and never conflicts with.
--
-- The purge looks for the oldest rows of one finished status, and the
-- workflow gauge counts the rows of every status but InProgress (which
-- idx_snapshots_inprogress counts). Partial: in-progress rows, whose
-- updated_at moves at every save, never touch it.
CREATE INDEX IF NOT EXISTS sayiir_grpc_not_in_progress_by_update
    ON sayiir_workflow_snapshots (status, updated_at)
    WHERE status IN ('Completed', 'Failed', 'Cancelled', 'Paused');
