//! Metadata in PostgreSQL (the distributed mode). The queue there is JetStream and objects are
//! in S3; this store holds records only.
//!
//! Writes are idempotent: inserting a record that exists does nothing, and [`Metadata::finish`]
//! only updates a record that is not final yet, so a duplicate delivery can never replace a
//! final result. Every statement is a single round trip, so a database that comes back after an
//! outage needs no session state.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::Row;
use sqlx::postgres::{PgPool, PgPoolOptions};
use wolf_core::{Attempt, JobRecord, Status, Submission, Timings};

use crate::traits::{Metadata, Page, StoreError};

/// The schema, versioned.
pub const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_jobs.sql")),
    (2, include_str!("../migrations/0002_keys.sql")),
    (3, include_str!("../migrations/0003_quotas.sql")),
    (4, include_str!("../migrations/0004_webhooks.sql")),
    (5, include_str!("../migrations/0005_fair.sql")),
];

/// PostgreSQL metadata.
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
    /// Reads fail fast until then: the database was unreachable moments ago. A reader (an API
    /// answering `GET /job/{id}`) then asks the queue at once instead of waiting out a connect
    /// timeout on every request of an outage.
    reads_down_until: std::sync::Arc<std::sync::Mutex<Option<Instant>>>,
}

/// How long reads fail fast after the database was unreachable.
const READ_BREAK: Duration = Duration::from_secs(1);

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

fn parse_record(id: &str, v: serde_json::Value) -> Result<JobRecord, StoreError> {
    serde_json::from_value(v).map_err(|source| StoreError::Corrupt {
        what: format!("job {id}"),
        source,
    })
}

fn json<T: serde::Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).expect("domain types serialize")
}

impl PgStore {
    /// Connect lazily (the database may be down at start; calls fail with `Unavailable` until
    /// it answers).
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(url)
            .map_err(db)?;
        Ok(Self {
            pool,
            reads_down_until: Default::default(),
        })
    }

    /// Reads fail fast for a while: a caller's bound on a read passed (the database hangs
    /// rather than refusing).
    pub(crate) fn unreachable_for_a_while(&self) {
        *self.reads_down_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + READ_BREAK);
    }

    /// A read, unless the database was unreachable moments ago.
    pub(crate) async fn read<T>(
        &self,
        q: impl std::future::Future<Output = Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        let down = *self.reads_down_until.lock().unwrap_or_else(|e| e.into_inner());
        if down.is_some_and(|until| Instant::now() < until) {
            return Err(StoreError::Unavailable("PostgreSQL was unreachable moments ago".into()));
        }
        match q.await {
            Ok(v) => {
                *self.reads_down_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
                Ok(v)
            }
            Err(e) => {
                if matches!(
                    e,
                    sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed | sqlx::Error::Tls(_)
                ) {
                    *self.reads_down_until.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(Instant::now() + READ_BREAK);
                }
                Err(db(e))
            }
        }
    }

    /// Apply the migrations not applied yet; returns the schema version.
    pub async fn migrate(&self) -> Result<i32, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        // One migrator at a time, across processes.
        sqlx::query("SELECT pg_advisory_xact_lock(7123001)")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        sqlx::query("CREATE TABLE IF NOT EXISTS wolf_schema_version (version INTEGER NOT NULL)")
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let current: i32 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM wolf_schema_version")
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .get(0);
        let mut version = current;
        for (v, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            sqlx::query("INSERT INTO wolf_schema_version (version) VALUES ($1)")
                .bind(v)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
            version = *v;
        }
        tx.commit().await.map_err(db)?;
        Ok(version)
    }
}

impl PgStore {
    /// Insert a job's record unless it exists; `held`: kept back from the queue by fair
    /// dispatch (fair.rs) until its owner's window has room.
    pub(crate) async fn insert_job(
        &self,
        record: &JobRecord,
        submission: &Submission,
        held: bool,
    ) -> Result<bool, StoreError> {
        // The job and its webhook's outbox row together (the row even when the job's record
        // came first, from a result stored while the database was away at admission).
        let mut tx = self.pool.begin().await.map_err(db)?;
        let done = sqlx::query(
            "INSERT INTO wolf_jobs (id, status, record, submission, held) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&record.id)
        .bind(record.status.as_str())
        .bind(json(record))
        .bind(json(submission))
        .bind(held)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        crate::webhooks::pg_enqueue(&mut tx, &record.id, submission).await?;
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}

#[async_trait]
impl Metadata for PgStore {
    async fn insert(&self, record: &JobRecord, submission: &Submission) -> Result<bool, StoreError> {
        self.insert_job(record, submission, false).await
    }

    async fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError> {
        let row = self
            .read(
                sqlx::query("SELECT record FROM wolf_jobs WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&self.pool),
            )
            .await?;
        row.map(|r| parse_record(id, r.get(0))).transpose()
    }

    async fn submission(&self, id: &str) -> Result<Option<Submission>, StoreError> {
        let row = sqlx::query("SELECT submission FROM wolf_jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.map(|r| {
            serde_json::from_value(r.get(0)).map_err(|source| StoreError::Corrupt {
                what: format!("submission {id}"),
                source,
            })
        })
        .transpose()
    }

    async fn list(&self, page: Page<'_>) -> Result<Vec<JobRecord>, StoreError> {
        // A statement per page shape (see the SQLite store): the range stays visible to the
        // planner. The unused parameters are typed and compared with NULL only.
        let sql = match (page.before.is_some(), page.owner.is_some()) {
            (false, false) => {
                "SELECT id, record FROM wolf_jobs WHERE $1::text IS NULL AND $2::text IS NULL
                  ORDER BY id DESC LIMIT $3 OFFSET $4"
            }
            (true, false) => {
                "SELECT id, record FROM wolf_jobs WHERE id < $1 AND $2::text IS NULL
                  ORDER BY id DESC LIMIT $3 OFFSET $4"
            }
            (false, true) => {
                "SELECT id, record FROM wolf_jobs WHERE $1::text IS NULL AND record->>'owner' = $2
                  ORDER BY id DESC LIMIT $3 OFFSET $4"
            }
            (true, true) => {
                "SELECT id, record FROM wolf_jobs WHERE id < $1 AND record->>'owner' = $2
                  ORDER BY id DESC LIMIT $3 OFFSET $4"
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
        rows.into_iter()
            .map(|r| parse_record(r.get::<&str, _>(0), r.get(1)))
            .collect()
    }

    async fn mark_running(&self, id: &str, attempt: &Attempt, timings: Timings) -> Result<(), StoreError> {
        // A job a manager runs is dispatched, whatever fair dispatch last wrote (a promotion
        // whose API died between the publish and its commit is not published twice).
        sqlx::query(
            "UPDATE wolf_jobs SET status = 'Running', held = false, updated_at = now(),
               record = record || jsonb_build_object('status', 'Running', 'startTime', $2::text, 'retryCount', $3::int,
                 'timings', $4::jsonb,
                 'attempts', COALESCE(record->'attempts', '[]'::jsonb) || jsonb_build_array($5::jsonb))
             WHERE id = $1 AND status NOT IN ('Completed', 'Failed')",
        )
        .bind(id)
        .bind(attempt.started_at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
        .bind(attempt.attempt.saturating_sub(1) as i32)
        .bind(json(&timings))
        .bind(json(attempt))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn finish(&self, record: &JobRecord) -> Result<bool, StoreError> {
        debug_assert!(record.status.is_final() || record.status == Status::Running);
        // An upsert: when the database was down at admission, the final result may arrive
        // before the record's first version; the API's later insert then does nothing.
        let done = sqlx::query(
            "INSERT INTO wolf_jobs (id, status, record, submission) VALUES ($1, $2, $3, '{}'::jsonb)
             ON CONFLICT (id) DO UPDATE SET status = EXCLUDED.status, held = false, updated_at = now(),
               record = EXCLUDED.record || jsonb_build_object('attempts', (
                 SELECT COALESCE(jsonb_agg(u.a ORDER BY (u.a->>'attempt')::int), '[]'::jsonb) FROM (
                   SELECT DISTINCT ON ((a->>'attempt')::int) a
                   FROM jsonb_array_elements(COALESCE(EXCLUDED.record->'attempts', '[]'::jsonb)
                                             || COALESCE(wolf_jobs.record->'attempts', '[]'::jsonb)) AS a
                   ORDER BY (a->>'attempt')::int) AS u))
             WHERE wolf_jobs.status NOT IN ('Completed', 'Failed')",
        )
        .bind(&record.id)
        .bind(record.status.as_str())
        .bind(json(record))
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() == 1)
    }
}
