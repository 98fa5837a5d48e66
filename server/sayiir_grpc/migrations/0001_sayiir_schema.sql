-- The Sayiir PostgreSQL schema as the engine (sayiir 1.0.0, sqlx migrations
-- 1 to 9) leaves it: same tables, columns, defaults, keys and indexes, so the
-- engine and this service can share one database. Written to be idempotent
-- (IF NOT EXISTS everywhere): on a database the engine already initialised it
-- changes nothing.

-- Current state of each workflow instance (one row per instance). The blob
-- lives in the history table; `data` stays NULL for every row we write and
-- is kept only because the engine's schema has it.
CREATE TABLE IF NOT EXISTS sayiir_workflow_snapshots (
    instance_id          TEXT        PRIMARY KEY,
    status               TEXT        NOT NULL,
    definition_hash      BYTEA,
    current_task_id      BYTEA,
    completed_task_count INT         NOT NULL DEFAULT 0,
    data                 BYTEA,
    error                TEXT,
    started_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    completed_at         TIMESTAMPTZ,
    updated_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    position_kind        TEXT,
    delay_wake_at        TIMESTAMPTZ,
    trace_parent         TEXT,
    task_priority        SMALLINT    NOT NULL DEFAULT 3,
    task_tags            TEXT[]      NOT NULL DEFAULT '{}',
    -- Points at the history row holding the current blob; bumped in the
    -- same statement that appends that row.
    history_version      INT         NOT NULL DEFAULT 1,
    -- SHA-256 of the current blob (mirrors history.data_hash).
    data_hash            BYTEA
) WITH (fillfactor = 80);

-- The dispatch scan reads only in-progress rows; partial indexes keep
-- terminal rows (the vast majority over time) out of them.
CREATE INDEX IF NOT EXISTS idx_snapshots_inprogress
    ON sayiir_workflow_snapshots (task_priority, updated_at)
    WHERE status = 'InProgress';
CREATE INDEX IF NOT EXISTS idx_sayiir_task_tags
    ON sayiir_workflow_snapshots USING GIN (task_tags)
    WHERE status = 'InProgress';

-- Append-only log of every checkpoint: the canonical blob store.
CREATE TABLE IF NOT EXISTS sayiir_workflow_snapshot_history (
    id              BIGSERIAL   PRIMARY KEY,
    instance_id     TEXT        NOT NULL,
    version         INT         NOT NULL,
    status          TEXT        NOT NULL,
    current_task_id BYTEA,
    data            BYTEA       NOT NULL,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT now(),
    data_hash       BYTEA
);
-- Unique, so two writers can never both append the same version.
CREATE UNIQUE INDEX IF NOT EXISTS idx_history_instance
    ON sayiir_workflow_snapshot_history (instance_id, version);

-- One row per task of an instance: lifecycle for dashboards, and the
-- task outputs, split out of the blob so late saves stay small.
CREATE TABLE IF NOT EXISTS sayiir_workflow_tasks (
    instance_id  TEXT        NOT NULL,
    task_id      BYTEA       NOT NULL,
    status       TEXT        NOT NULL DEFAULT 'pending',
    worker_id    TEXT,
    started_at   TIMESTAMPTZ,
    completed_at TIMESTAMPTZ,
    error        TEXT,
    output       BYTEA,
    PRIMARY KEY (instance_id, task_id)
);

-- Pending cancel and pause requests: at most one of each kind per instance.
CREATE TABLE IF NOT EXISTS sayiir_workflow_signals (
    instance_id  TEXT        NOT NULL,
    kind         TEXT        NOT NULL,
    reason       TEXT,
    requested_by TEXT,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, kind)
);

-- Worker claims: one task in flight per instance, so the key is the instance.
CREATE TABLE IF NOT EXISTS sayiir_workflow_claims (
    instance_id TEXT        NOT NULL,
    task_id     BYTEA       NOT NULL,
    worker_id   TEXT        NOT NULL,
    claimed_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at  TIMESTAMPTZ,
    CONSTRAINT sayiir_workflow_claims_pkey PRIMARY KEY (instance_id)
);

-- External events, buffered per (instance, signal name) in FIFO order (id).
CREATE TABLE IF NOT EXISTS sayiir_workflow_events (
    id           BIGSERIAL   PRIMARY KEY,
    instance_id  TEXT        NOT NULL,
    signal_name  TEXT        NOT NULL,
    payload      BYTEA       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS idx_events_instance_signal
    ON sayiir_workflow_events (instance_id, signal_name, id);

-- Hex rendering of the BYTEA ids for ad-hoc queries.
CREATE OR REPLACE VIEW sayiir_workflow_snapshots_hex AS
SELECT
    instance_id,
    status,
    encode(definition_hash, 'hex') AS definition_hash,
    encode(current_task_id, 'hex') AS current_task_id,
    completed_task_count,
    error,
    started_at,
    completed_at,
    updated_at
FROM sayiir_workflow_snapshots;

COMMENT ON COLUMN sayiir_workflow_snapshots.data_hash IS
    'SHA-256 of the current snapshot blob (the history row at history_version).';
COMMENT ON COLUMN sayiir_workflow_snapshot_history.data_hash IS
    'SHA-256 of this row''s blob.';
