-- Wolf metadata in PostgreSQL (distributed mode). Applied by `wolf migrate`.
-- The record is kept whole as JSON (the API's contract), with the columns queries need.
CREATE TABLE IF NOT EXISTS wolf_jobs (
    id          TEXT PRIMARY KEY,          -- UUIDv7: ordering by id is ordering by creation
    status      TEXT NOT NULL,
    record      JSONB NOT NULL,
    submission  JSONB NOT NULL,
    updated_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS wolf_jobs_status ON wolf_jobs (status) WHERE status NOT IN ('Completed', 'Failed');

CREATE TABLE IF NOT EXISTS wolf_schema_version (version INTEGER NOT NULL);
