-- Fair dispatch (fair.rs): a job its owner's window has no room for is stored here, `held`, and
-- published to the queue when a job of the same owner ends. The indexes answer the two
-- questions asked at every admission of a key and at every promotion: how many of the owner's
-- jobs are in the queue or running (not held, not ended), and which are held, oldest first.
ALTER TABLE wolf_jobs ADD COLUMN IF NOT EXISTS held BOOLEAN NOT NULL DEFAULT false;
CREATE INDEX IF NOT EXISTS wolf_jobs_owner_dispatched ON wolf_jobs ((record->>'owner'))
    WHERE status NOT IN ('Completed', 'Failed') AND NOT held;
CREATE INDEX IF NOT EXISTS wolf_jobs_owner_held ON wolf_jobs ((record->>'owner'), id) WHERE held;
