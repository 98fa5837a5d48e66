-- Idempotency keys of mutating calls (the `x-request-id` metadata): the
-- outcome of each keyed call, written in the same transaction as the call's
-- own writes, so a repeat of the key after a lost acknowledgement gets the
-- first answer instead of applying the call twice. The service's own
-- bookkeeping: the engine never reads it. Rows older than
-- SAYIIR_IDEMPOTENCY_KEY_RETENTION are purged in small batches.
CREATE TABLE IF NOT EXISTS sayiir_grpc_idempotency_keys (
    request_key  TEXT        PRIMARY KEY,
    -- The method the key was first used with, and the SHA-256 of its
    -- request: the same key with another call is refused.
    rpc          TEXT        NOT NULL,
    request_hash BYTEA       NOT NULL,
    -- The serialized reply message.
    outcome      BYTEA       NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS sayiir_grpc_idempotency_keys_created_at
    ON sayiir_grpc_idempotency_keys (created_at);
