-- The webhook outbox (webhooks.rs): one row per job with a callback URL, written with the job;
-- due when the job has ended and `next_ms` has come; leased to one API at a time.
CREATE TABLE IF NOT EXISTS wolf_webhooks (
    job_id      TEXT PRIMARY KEY,
    url         TEXT NOT NULL,
    state       TEXT NOT NULL DEFAULT 'waiting',
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_ms     BIGINT NOT NULL,
    lease_ms    BIGINT NOT NULL DEFAULT 0,
    created_ms  BIGINT NOT NULL,
    last_error  TEXT
);
CREATE INDEX IF NOT EXISTS wolf_webhooks_due ON wolf_webhooks (next_ms) WHERE state = 'waiting';
