-- Per-key quotas: one token bucket per rate-limited key, shared by every API (the database's
-- clock refills it), and the index that counts a key's unfinished jobs at admission.
CREATE TABLE IF NOT EXISTS wolf_rate_buckets (
    key_id  TEXT PRIMARY KEY,
    tokens  DOUBLE PRECISION NOT NULL,
    at      TIMESTAMPTZ NOT NULL
);
CREATE INDEX IF NOT EXISTS wolf_jobs_unfinished_owner ON wolf_jobs ((record->>'owner'), status)
    WHERE status NOT IN ('Completed', 'Failed');
