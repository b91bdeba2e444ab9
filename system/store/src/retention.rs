//! Retention in both metadata stores ([`Retention`]): which ended jobs are older than the
//! cutoff, and forgetting a job's rows.
//!
//! Job ids are UUIDv7, whose first 48 bits are the creation time in ms, and their text sorts as
//! they do: "created before T" is `id < ` the smallest id of T, a range of the primary key,
//! so finding a batch never scans the table. Only ended jobs (Completed, Failed) expire; a job
//! still queued or running is kept whatever its age.
//!
//! The caller deletes a job's objects before its rows: a crash in between leaves a row whose
//! objects are gone, which the next pass finds again (it is still old) and finishes; the other
//! order would leave objects that nothing points to.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

use crate::traits::StoreError;
use crate::{PgStore, SqliteStore};

/// Deleting what is older than the retention, in bounded batches.
#[async_trait]
pub trait Retention: Send + Sync {
    /// Up to `limit` ended jobs created before `before`, oldest first.
    async fn expired(&self, before: DateTime<Utc>, limit: u32) -> Result<Vec<String>, StoreError>;
    /// Forget these jobs: their records, webhook outbox rows, idempotency keys and queue
    /// entries (their objects are the caller's, deleted first). Returns the records removed.
    async fn forget(&self, ids: &[String]) -> Result<u64, StoreError>;
    /// Up to `limit` dead letters older than `before` (the embedded queue's; JetStream ages
    /// its dead-letter stream itself). Returns how many were removed.
    async fn expire_dead_letters(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError>;
}

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

/// The smallest UUIDv7 of the millisecond `t` (every id created at or after `t` sorts after it).
pub fn first_id_at(t: DateTime<Utc>) -> String {
    let ms = t.timestamp_millis().max(0) as u64;
    uuid::Builder::from_unix_timestamp_millis(ms, &[0; 10])
        .into_uuid()
        .to_string()
}

#[async_trait]
impl Retention for SqliteStore {
    async fn expired(&self, before: DateTime<Utc>, limit: u32) -> Result<Vec<String>, StoreError> {
        let rows =
            sqlx::query("SELECT id FROM jobs WHERE id < ? AND status IN ('Completed', 'Failed') ORDER BY id LIMIT ?")
                .bind(first_id_at(before))
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn forget(&self, ids: &[String]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        // SQLite has no array parameter: a JSON array, unpacked by json_each, is one bind.
        let list = serde_json::to_string(ids).expect("strings serialize");
        let _w = self.writer.lock().await;
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mut removed = 0;
        for (i, stmt) in [
            "DELETE FROM jobs WHERE id IN (SELECT value FROM json_each(?))",
            "DELETE FROM webhooks WHERE job_id IN (SELECT value FROM json_each(?))",
            "DELETE FROM idempotency WHERE job_id IN (SELECT value FROM json_each(?))",
            "DELETE FROM queue WHERE job_id IN (SELECT value FROM json_each(?))",
        ]
        .into_iter()
        .enumerate()
        {
            let done = sqlx::query(stmt).bind(&list).execute(&mut *tx).await.map_err(db)?;
            if i == 0 {
                removed = done.rows_affected();
            }
        }
        tx.commit().await.map_err(db)?;
        Ok(removed)
    }

    async fn expire_dead_letters(&self, before: DateTime<Utc>, limit: u32) -> Result<u64, StoreError> {
        let _w = self.writer.lock().await;
        let done = sqlx::query(
            "DELETE FROM dead_letters WHERE seq IN (SELECT seq FROM dead_letters WHERE at_ms < ? ORDER BY seq LIMIT ?)",
        )
        .bind(before.timestamp_millis())
        .bind(limit as i64)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }
}

#[async_trait]
impl Retention for PgStore {
    async fn expired(&self, before: DateTime<Utc>, limit: u32) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT id FROM wolf_jobs WHERE id < $1 AND status IN ('Completed', 'Failed') ORDER BY id LIMIT $2",
        )
        .bind(first_id_at(before))
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn forget(&self, ids: &[String]) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        // Idempotency keys live in JetStream's bucket, which ages them out itself.
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query("DELETE FROM wolf_webhooks WHERE job_id = ANY($1)")
            .bind(ids)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        let done = sqlx::query("DELETE FROM wolf_jobs WHERE id = ANY($1)")
            .bind(ids)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn expire_dead_letters(&self, _before: DateTime<Utc>, _limit: u32) -> Result<u64, StoreError> {
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::traits::{Metadata, Queue};
    use wolf_core::{JobRecord, Status, Submission};

    #[test]
    fn the_cutoff_id_sorts_between_ids_of_before_and_after() {
        let t = Utc::now();
        let cut = first_id_at(t);
        let older = uuid::Builder::from_unix_timestamp_millis(t.timestamp_millis() as u64 - 1, &[0xff; 10])
            .into_uuid()
            .to_string();
        let same = uuid::Builder::from_unix_timestamp_millis(t.timestamp_millis() as u64, &[0x01; 10])
            .into_uuid()
            .to_string();
        assert!(older < cut, "{older} < {cut}");
        assert!(cut < same, "{cut} < {same}");
    }

    #[tokio::test]
    async fn only_old_ended_jobs_expire_and_forgetting_removes_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(&dir.path().join("wolf.db")).await.unwrap();
        let sub: Submission =
            serde_json::from_value(serde_json::json!({"code": "print(1)", "executionEngine": "python"})).unwrap();
        let id_at = |ms: i64| {
            uuid::Builder::from_unix_timestamp_millis(ms as u64, &[7; 10])
                .into_uuid()
                .to_string()
        };
        let now = Utc::now().timestamp_millis();
        let (old_done, old_queued, new_done) = (id_at(now - 10_000), id_at(now - 9_000), id_at(now));
        for id in [&old_done, &old_queued, &new_done] {
            let rec = JobRecord::new(id.clone(), &sub, Utc::now());
            s.admit(&rec, &sub, None).await.unwrap();
        }
        for id in [&old_done, &new_done] {
            let mut rec = Metadata::get(&s, id).await.unwrap().unwrap();
            rec.status = Status::Completed;
            assert!(s.finish(&rec).await.unwrap());
        }
        let cutoff = Utc::now() - chrono::Duration::seconds(5);
        let expired = s.expired(cutoff, 10).await.unwrap();
        assert_eq!(
            expired,
            std::slice::from_ref(&old_done),
            "the queued one and the new one stay"
        );
        assert_eq!(s.forget(&expired).await.unwrap(), 1);
        assert!(Metadata::get(&s, &old_done).await.unwrap().is_none());
        assert!(Metadata::get(&s, &old_queued).await.unwrap().is_some());
        assert!(s.expired(cutoff, 10).await.unwrap().is_empty());
        assert_eq!(s.forget(&expired).await.unwrap(), 0, "forgetting twice is harmless");
    }
}
