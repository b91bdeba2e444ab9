-- API keys (stored hashed) and the owners of what is not a job record (sessions); a job's
-- owner is in its record, indexed for the per-key listing.
CREATE TABLE IF NOT EXISTS wolf_api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    hash        TEXT NOT NULL UNIQUE,
    key         JSONB NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS wolf_owners (
    id      TEXT PRIMARY KEY,
    key_id  TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS wolf_jobs_owner ON wolf_jobs ((record->>'owner'), id);
