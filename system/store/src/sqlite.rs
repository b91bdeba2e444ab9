//! Embedded metadata and queue in one SQLite database (WAL, synchronous=NORMAL: a committed
//! transaction survives a kill -9 of the process).
//!
//! Admission is one transaction (record + queue entry + idempotency key), so a 2xx answer means
//! the job is durable. Leases are a timestamp on the queue row; after a restart every lease of
//! the previous process is voided ([`Queue::recover`]). The final result is written once:
//! [`Metadata::finish`] only updates a record that is not final yet.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use wolf_core::{Attempt, JobRecord, Status, Submission, Timings};

use crate::traits::{
    Admission, Backlog, DeadLetter, Delivery, Idempotency, Metadata, Page, Queue, QueueConfig, StoreError,
};

/// The embedded store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    /// SQLite has one writer at a time; queueing writers here (instead of on SQLite's busy
    /// handler, which a read-then-write transaction cannot wait on) keeps writes fair and
    /// never fails them with SQLITE_BUSY.
    pub(crate) writer: std::sync::Arc<tokio::sync::Mutex<()>>,
    queue: QueueConfig,
    /// The keys' rate buckets (the embedded mode has one API process).
    pub(crate) buckets: std::sync::Arc<crate::quotas::LocalBuckets>,
}

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS jobs (
        id TEXT PRIMARY KEY,
        status TEXT NOT NULL,
        record TEXT NOT NULL,
        submission TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS queue (
        job_id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        available_at INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        enqueued_ms INTEGER NOT NULL
    )",
    "CREATE INDEX IF NOT EXISTS queue_available ON queue (available_at, seq)",
    "CREATE TABLE IF NOT EXISTS dead_letters (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        reason TEXT NOT NULL,
        at_ms INTEGER NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS idempotency (
        key TEXT PRIMARY KEY,
        body_hash TEXT NOT NULL,
        job_id TEXT NOT NULL
    )",
    // API keys (hashed) and the owners of sessions; a job's owner is in its record.
    "CREATE TABLE IF NOT EXISTS api_keys (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        hash TEXT NOT NULL UNIQUE,
        key TEXT NOT NULL
    )",
    "CREATE TABLE IF NOT EXISTS owners (id TEXT PRIMARY KEY, key_id TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (json_extract(record, '$.owner'), id)",
    // A key's unfinished jobs, counted at each of its admissions (quotas.rs).
    "CREATE INDEX IF NOT EXISTS jobs_unfinished_owner ON jobs (json_extract(record, '$.owner'), status)
        WHERE status NOT IN ('Completed', 'Failed')",
    // The webhook outbox (webhooks.rs).
    "CREATE TABLE IF NOT EXISTS webhooks (
        job_id TEXT PRIMARY KEY,
        url TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'waiting',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_ms INTEGER NOT NULL,
        lease_ms INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL,
        last_error TEXT
    )",
    "CREATE INDEX IF NOT EXISTS webhooks_due ON webhooks (next_ms) WHERE state = 'waiting'",
    // Retention forgets a job's idempotency keys with it (retention.rs).
    "CREATE INDEX IF NOT EXISTS idempotency_job ON idempotency (job_id)",
];

/// The fair-queuing tag (`seq`) a new job of owner `?2` gets: its owner's last tag, but never
/// behind the head of the queue (admission, below). Admission by deadline counts the jobs ahead
/// with the same expression (backlog.rs), so the two cannot disagree.
macro_rules! fair_tag {
    () => {
        "MAX(COALESCE((SELECT MAX(seq) FROM queue WHERE owner = ?2), 0),
             COALESCE((SELECT MIN(seq) FROM queue WHERE attempts = 0) - 1,
                      (SELECT MAX(seq) FROM queue), 0)) + 1"
    };
}
pub(crate) use fair_tag;

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

fn parse_record(id: &str, text: &str) -> Result<JobRecord, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::Corrupt {
        what: format!("job {id}"),
        source,
    })
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("domain types serialize")
}

impl SqliteStore {
    /// Open (creating) `path` and its schema.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
            .map_err(db)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(db)?;
        for stmt in SCHEMA {
            sqlx::query(*stmt).execute(&pool).await.map_err(db)?;
        }
        // Added after the first release: the W3C trace context of the admitting request, and
        // the owner (an API key's id; '' without keys) that fair dispatch shares workers by.
        for (column, ddl) in [
            ("traceparent", "ALTER TABLE queue ADD COLUMN traceparent TEXT"),
            ("owner", "ALTER TABLE queue ADD COLUMN owner TEXT NOT NULL DEFAULT ''"),
        ] {
            let has: i64 = sqlx::query("SELECT COUNT(*) FROM pragma_table_info('queue') WHERE name = ?")
                .bind(column)
                .fetch_one(&pool)
                .await
                .map_err(db)?
                .get(0);
            if has == 0 {
                sqlx::query(ddl).execute(&pool).await.map_err(db)?;
            }
        }
        for index in [
            "CREATE INDEX IF NOT EXISTS queue_owner ON queue (owner, seq)",
            "CREATE INDEX IF NOT EXISTS queue_unleased ON queue (attempts, seq)",
        ] {
            sqlx::query(index).execute(&pool).await.map_err(db)?;
        }
        Ok(Self {
            pool,
            writer: Default::default(),
            queue: QueueConfig::default(),
            buckets: Default::default(),
        })
    }

    /// The queue's settings (lease, pending bound, attempts); [`QueueConfig::default`] else.
    pub fn with_queue(mut self, queue: QueueConfig) -> Self {
        self.queue = queue;
        self
    }
}

#[async_trait]
impl Metadata for SqliteStore {
    async fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query("SELECT record FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| parse_record(id, r.get::<&str, _>(0))).transpose()
    }

    async fn insert(&self, record: &JobRecord, submission: &Submission) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let done = sqlx::query("INSERT OR IGNORE INTO jobs (id, status, record, submission) VALUES (?, ?, ?, ?)")
            .bind(&record.id)
            .bind(record.status.as_str())
            .bind(to_json(record))
            .bind(to_json(submission))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        crate::webhooks::sqlite_enqueue(&mut tx, &record.id, submission).await?;
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected() == 1)
    }

    async fn submission(&self, id: &str) -> Result<Option<Submission>, StoreError> {
        let row = sqlx::query("SELECT submission FROM jobs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| {
            serde_json::from_str(r.get::<&str, _>(0)).map_err(|source| StoreError::Corrupt {
                what: format!("submission {id}"),
                source,
            })
        })
        .transpose()
    }

    async fn list(&self, page: Page<'_>) -> Result<Vec<JobRecord>, StoreError> {
        // A statement per page shape: `?1 IS NULL OR id < ?1` would hide the range from the
        // planner, which then walks the table from the newest id down to the cursor (seen: 28
        // ms p50 for a page at a random cursor among a million jobs).
        let sql = match (page.before.is_some(), page.owner.is_some()) {
            (false, false) => {
                "SELECT id, record FROM jobs WHERE ?1 IS NULL AND ?2 IS NULL
                  ORDER BY id DESC LIMIT ?3 OFFSET ?4"
            }
            (true, false) => {
                "SELECT id, record FROM jobs WHERE id < ?1 AND ?2 IS NULL
                  ORDER BY id DESC LIMIT ?3 OFFSET ?4"
            }
            (false, true) => {
                "SELECT id, record FROM jobs WHERE ?1 IS NULL AND json_extract(record, '$.owner') = ?2
                  ORDER BY id DESC LIMIT ?3 OFFSET ?4"
            }
            (true, true) => {
                "SELECT id, record FROM jobs WHERE id < ?1 AND json_extract(record, '$.owner') = ?2
                  ORDER BY id DESC LIMIT ?3 OFFSET ?4"
            }
        };
        let rows = sqlx::query(sql)
            .bind(page.before)
            .bind(page.owner)
            .bind(page.limit as i64)
            .bind(if page.before.is_some() { 0 } else { page.offset as i64 })
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter()
            .map(|r| parse_record(r.get::<&str, _>(0), r.get::<&str, _>(1)))
            .collect()
    }

    async fn mark_running(&self, id: &str, attempt: &Attempt, timings: Timings) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        let Some(mut rec) = Metadata::get(self, id).await? else {
            return Ok(());
        };
        if rec.status.is_final() {
            return Ok(());
        }
        rec.status = Status::Running;
        rec.start_time = Some(attempt.started_at);
        rec.retry_count = attempt.attempt.saturating_sub(1);
        rec.timings = Some(timings);
        rec.attempts.push(attempt.clone());
        sqlx::query("UPDATE jobs SET status = ?, record = ? WHERE id = ? AND status NOT IN ('Completed', 'Failed')")
            .bind(rec.status.as_str())
            .bind(to_json(&rec))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn finish(&self, record: &JobRecord) -> Result<bool, StoreError> {
        let _w = self.writer.lock().await;
        let stored = Metadata::get(self, &record.id).await?;
        let mut merged = record.clone();
        merged.attempts =
            crate::traits::merge_attempts(stored.map(|s| s.attempts).unwrap_or_default(), &record.attempts);
        let record = &merged;
        let done = sqlx::query(
            "UPDATE jobs SET status = ?, record = ? WHERE id = ? AND status NOT IN ('Completed', 'Failed')",
        )
        .bind(record.status.as_str())
        .bind(to_json(record))
        .bind(&record.id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl Queue for SqliteStore {
    async fn admit(
        &self,
        record: &JobRecord,
        submission: &Submission,
        idempotency: Option<&Idempotency>,
    ) -> Result<Admission, StoreError> {
        let max_pending = self.queue.max_pending;
        let _w = self.writer.lock().await;
        let mut tx = self.pool.begin().await.map_err(db)?;
        if let Some(idem) = idempotency {
            let row = sqlx::query("SELECT body_hash, job_id FROM idempotency WHERE key = ?")
                .bind(&idem.key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if let Some(row) = row {
                let (hash, job_id): (String, String) = (row.get(0), row.get(1));
                if hash != idem.body_hash {
                    return Err(StoreError::IdempotencyConflict { key: idem.key.clone() });
                }
                let rec = sqlx::query("SELECT record FROM jobs WHERE id = ?")
                    .bind(&job_id)
                    .fetch_one(&mut *tx)
                    .await
                    .map_err(db)?;
                return Ok(Admission::Existing(Box::new(parse_record(
                    &job_id,
                    rec.get::<&str, _>(0),
                )?)));
            }
        }
        let pending: i64 = sqlx::query("SELECT COUNT(*) FROM queue")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .get(0);
        if pending as u64 >= max_pending {
            return Err(StoreError::QueueFull {
                pending: pending as u64,
            });
        }
        sqlx::query("INSERT INTO jobs (id, status, record, submission) VALUES (?, ?, ?, ?)")
            .bind(&record.id)
            .bind(record.status.as_str())
            .bind(to_json(record))
            .bind(to_json(submission))
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        crate::webhooks::sqlite_enqueue(&mut tx, &record.id, submission).await?;
        let now = now_ms();
        // Fair dispatch (start-time fair queuing): `seq` is the job's virtual start tag, the
        // lease takes the smallest. An owner's next job follows its last queued one, but never
        // starts behind the head of the queue: a key that floods the queue only queues behind
        // itself, and another key's job goes next but one. With a single owner (keys off) the
        // tag is MAX(seq) + 1: first come, first served, as before.
        let owner = record.owner.as_deref().unwrap_or("");
        sqlx::query(concat!(
            "INSERT INTO queue (job_id, seq, available_at, attempts, enqueued_ms, traceparent, owner) VALUES (?1, ",
            fair_tag!(),
            ", ?3, 0, ?4, ?5, ?2)"
        ))
        .bind(&record.id)
        .bind(owner)
        .bind(now)
        .bind(record.creation_time.timestamp_millis())
        .bind(wolf_telemetry::traceparent())
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if let Some(idem) = idempotency {
            sqlx::query("INSERT INTO idempotency (key, body_hash, job_id) VALUES (?, ?, ?)")
                .bind(&idem.key)
                .bind(&idem.body_hash)
                .bind(&record.id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)?;
        Ok(Admission::New)
    }

    fn config(&self) -> QueueConfig {
        self.queue
    }

    fn code_before_admission(&self) -> bool {
        true
    }

    async fn lease(&self) -> Result<Option<Delivery>, StoreError> {
        let hold = self.queue.lease;
        let _w = self.writer.lock().await;
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE queue SET available_at = ?, attempts = attempts + 1
             WHERE job_id = (SELECT job_id FROM queue WHERE available_at <= ? ORDER BY seq, rowid LIMIT 1)
             RETURNING job_id, attempts, enqueued_ms, traceparent",
        )
        .bind(now + hold.as_millis() as i64)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        let Some(r) = row else { return Ok(None) };
        let job_id: String = r.get(0);
        // The envelope, read under the same writer lock: admission wrote it in the transaction
        // that queued the job, so it is always there.
        let env = sqlx::query("SELECT record, submission FROM jobs WHERE id = ?")
            .bind(&job_id)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        let record = parse_record(&job_id, env.get::<&str, _>(0))?;
        let submission: Submission =
            serde_json::from_str(env.get::<&str, _>(1)).map_err(|source| StoreError::Corrupt {
                what: format!("submission {job_id}"),
                source,
            })?;
        Ok(Some(Delivery {
            attempt: r.get::<i64, _>(1) as u32,
            enqueued_at: DateTime::from_timestamp_millis(r.get(2)).unwrap_or_else(Utc::now),
            envelope: Box::new((record, submission)),
            traceparent: r.get(3),
            job_id,
        }))
    }

    async fn ack(&self, job_id: &str) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        sqlx::query("DELETE FROM queue WHERE job_id = ?")
            .bind(job_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn progress(&self, job_id: &str) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        sqlx::query("UPDATE queue SET available_at = ? WHERE job_id = ?")
            .bind(now_ms() + self.queue.lease.as_millis() as i64)
            .bind(job_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn release(&self, job_id: &str, delay: Duration) -> Result<(), StoreError> {
        let _w = self.writer.lock().await;
        sqlx::query("UPDATE queue SET available_at = ? WHERE job_id = ?")
            .bind(now_ms() + delay.as_millis() as i64)
            .bind(job_id)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn dead_letter(&self, job_id: &str, reason: &str) -> Result<(), StoreError> {
        // Kept and removed from the queue in one transaction: never both, never neither.
        let _w = self.writer.lock().await;
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("INSERT INTO dead_letters (job_id, reason, at_ms) VALUES (?, ?, ?)")
            .bind(job_id)
            .bind(reason)
            .bind(now_ms())
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("DELETE FROM queue WHERE job_id = ?")
            .bind(job_id)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn dead_letters(&self, limit: u64) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query("SELECT job_id, reason, at_ms FROM dead_letters ORDER BY seq DESC LIMIT ?")
            .bind(limit as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| DeadLetter {
                job_id: r.get(0),
                reason: r.get(1),
                at: DateTime::from_timestamp_millis(r.get(2)).unwrap_or_else(Utc::now),
            })
            .collect())
    }

    async fn backlog(&self, owner: &str, _engine: &str) -> Result<Option<Backlog>, StoreError> {
        // One pool of workers takes every engine; the API knows how many.
        Ok(Some(Backlog {
            ahead: self.jobs_ahead(owner).await?,
            workers: None,
        }))
    }

    async fn depth(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM queue")
            .fetch_one(&self.pool)
            .await
            .map_err(db)?
            .get(0);
        Ok(n as u64)
    }

    async fn recover(&self) -> Result<u64, StoreError> {
        let _w = self.writer.lock().await;
        let done = sqlx::query("UPDATE queue SET available_at = 0 WHERE available_at > ?")
            .bind(now_ms())
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(code: &str) -> Submission {
        serde_json::from_value(serde_json::json!({"code": code, "executionEngine": "python"})).unwrap()
    }

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("wolf.db")).await.unwrap();
        (dir, s)
    }

    #[tokio::test]
    async fn a_flooding_key_queues_behind_itself() {
        let (_d, s) = store().await;
        let admit = |id: String, owner: Option<&str>| {
            let mut rec = JobRecord::new(id, &sub("print(1)"), Utc::now());
            rec.owner = owner.map(str::to_string);
            let s = s.clone();
            async move { s.admit(&rec, &sub("print(1)"), None).await.unwrap() }
        };
        for i in 0..6 {
            admit(format!("a{i}"), Some("alice")).await;
        }
        // Two workers took alice's first two.
        for want in ["a0", "a1"] {
            assert_eq!(s.lease().await.unwrap().unwrap().job_id, want);
        }
        admit("b0".into(), Some("bob")).await;
        admit("b1".into(), Some("bob")).await;
        admit("c0".into(), None).await;
        let mut order = Vec::new();
        while let Some(d) = s.lease().await.unwrap() {
            order.push(d.job_id);
        }
        // Each newcomer starts at the head (ties: the older first), then the owners alternate.
        assert_eq!(order, ["a2", "b0", "c0", "a3", "b1", "a4", "a5"]);
        // Keys off (one owner): first come, first served.
        let (_d2, fifo) = store().await;
        for i in 0..4 {
            let rec = JobRecord::new(format!("j{i}"), &sub("print(1)"), Utc::now());
            fifo.admit(&rec, &sub("print(1)"), None).await.unwrap();
        }
        let mut order = Vec::new();
        while let Some(d) = fifo.lease().await.unwrap() {
            order.push(d.job_id);
        }
        assert_eq!(order, ["j0", "j1", "j2", "j3"]);
    }

    #[tokio::test]
    async fn progress_renews_the_lease_and_silence_loses_it() {
        let (_d, s) = store().await;
        let s = s.with_queue(QueueConfig {
            lease: Duration::from_millis(300),
            ..Default::default()
        });
        for id in ["kept", "lost"] {
            let rec = JobRecord::new(id.into(), &sub("print(1)"), Utc::now());
            s.admit(&rec, &sub("print(1)"), None).await.unwrap();
            assert_eq!(s.lease().await.unwrap().unwrap().job_id, id);
        }
        for _ in 0..4 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            s.progress("kept").await.unwrap();
        }
        let again = s.lease().await.unwrap().expect("the silent lease expired");
        assert_eq!((again.job_id.as_str(), again.attempt), ("lost", 2));
        assert!(
            s.lease().await.unwrap().is_none(),
            "the renewed lease still holds after longer than one lease"
        );
    }

    #[tokio::test]
    async fn admit_lease_ack_and_the_pending_bound() {
        let (_d, s) = store().await;
        let s = s.with_queue(QueueConfig {
            max_pending: 3,
            lease: Duration::from_secs(60),
            ..Default::default()
        });
        for i in 0..3 {
            let rec = JobRecord::new(format!("job-{i}"), &sub("print(1)"), Utc::now());
            assert!(matches!(
                s.admit(&rec, &sub("print(1)"), None).await.unwrap(),
                Admission::New
            ));
        }
        let rec = JobRecord::new("job-9".into(), &sub("x"), Utc::now());
        assert!(matches!(
            s.admit(&rec, &sub("x"), None).await,
            Err(StoreError::QueueFull { pending: 3 })
        ));
        let d = s.lease().await.unwrap().unwrap();
        assert_eq!((d.job_id.as_str(), d.attempt), ("job-0", 1), "oldest first");
        assert_eq!(
            s.lease().await.unwrap().unwrap().job_id,
            "job-1",
            "a leased job is not handed out twice"
        );
        s.ack("job-0").await.unwrap();
        assert_eq!(s.depth().await.unwrap(), 2);
        assert_eq!(s.recover().await.unwrap(), 1, "job-1's lease is voided after a restart");
        let again = s.lease().await.unwrap().unwrap();
        assert_eq!(
            (again.job_id.as_str(), again.attempt),
            ("job-1", 2),
            "redelivered with its attempt counted"
        );
    }

    #[tokio::test]
    async fn idempotency_same_body_same_job_different_body_conflict() {
        let (_d, s) = store().await;
        let idem = Idempotency {
            key: "k1".into(),
            body_hash: "h1".into(),
        };
        let rec = JobRecord::new("job-a".into(), &sub("a"), Utc::now());
        assert!(matches!(
            s.admit(&rec, &sub("a"), Some(&idem)).await.unwrap(),
            Admission::New
        ));
        let rec2 = JobRecord::new("job-b".into(), &sub("a"), Utc::now());
        match s.admit(&rec2, &sub("a"), Some(&idem)).await.unwrap() {
            Admission::Existing(r) => assert_eq!(r.id, "job-a"),
            other => panic!("{other:?}"),
        }
        let other = Idempotency {
            key: "k1".into(),
            body_hash: "h2".into(),
        };
        assert!(matches!(
            s.admit(&rec2, &sub("b"), Some(&other)).await,
            Err(StoreError::IdempotencyConflict { .. })
        ));
        assert_eq!(s.depth().await.unwrap(), 1, "run once");
    }

    #[tokio::test]
    async fn the_final_result_is_written_once() {
        let (_d, s) = store().await;
        let rec = JobRecord::new("job-f".into(), &sub("a"), Utc::now());
        s.admit(&rec, &sub("a"), None).await.unwrap();
        let mut done = rec.clone();
        done.status = Status::Completed;
        done.output_hash = Some("first".into());
        assert!(s.finish(&done).await.unwrap());
        done.output_hash = Some("second".into());
        assert!(
            !s.finish(&done).await.unwrap(),
            "a duplicate execution cannot overwrite the result"
        );
        assert_eq!(
            Metadata::get(&s, "job-f")
                .await
                .unwrap()
                .unwrap()
                .output_hash
                .as_deref(),
            Some("first")
        );
        let attempt = wolf_core::Attempt {
            attempt: 2,
            worker: "h/1/w0".into(),
            started_at: Utc::now(),
        };
        s.mark_running("job-f", &attempt, Timings::default()).await.unwrap();
        assert_eq!(
            Metadata::get(&s, "job-f").await.unwrap().unwrap().status,
            Status::Completed
        );
    }

    #[tokio::test]
    async fn listing_is_newest_first_with_a_cursor() {
        let (_d, s) = store().await;
        for i in 0..5 {
            let rec = JobRecord::new(format!("job-{i}"), &sub("a"), Utc::now());
            s.admit(&rec, &sub("a"), None).await.unwrap();
        }
        let first = s
            .list(Page {
                before: None,
                offset: 0,
                limit: 2,
                owner: None,
            })
            .await
            .unwrap();
        assert_eq!(
            first.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["job-4", "job-3"]
        );
        let next = s
            .list(Page {
                before: Some("job-3"),
                offset: 0,
                limit: 2,
                owner: None,
            })
            .await
            .unwrap();
        assert_eq!(
            next.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["job-2", "job-1"]
        );
        // One owner's page holds only its jobs.
        let mut mine = JobRecord::new("job-5".into(), &sub("a"), Utc::now());
        mine.owner = Some("k1".into());
        s.admit(&mine, &sub("a"), None).await.unwrap();
        let page = |owner| Page {
            before: None,
            offset: 0,
            limit: 10,
            owner,
        };
        let own = s.list(page(Some("k1"))).await.unwrap();
        assert_eq!(own.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["job-5"]);
        assert!(s.list(page(Some("k2"))).await.unwrap().is_empty());
        assert_eq!(s.list(page(None)).await.unwrap().len(), 6);
    }
}
