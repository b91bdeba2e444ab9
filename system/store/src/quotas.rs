//! [`Quotas`] in both metadata stores: a key's token bucket and the count of its unfinished
//! jobs.
//!
//! The bucket holds up to `burst` tokens and gains `rate` per second; a submission takes one.
//! PostgreSQL keeps every bucket in one row per key (`wolf_rate_buckets`), refilled and taken in
//! one statement on the database's clock, so every API of a deployment draws from the same
//! bucket. The embedded mode has one API process: its buckets live in that process.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::Row;

use crate::traits::{Quotas, StoreError, Unfinished};
use crate::{PgStore, SqliteStore};

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

/// How long until a bucket holding `tokens` has one again.
fn until_one(tokens: f64, rate: f64) -> Duration {
    Duration::from_secs_f64(((1.0 - tokens) / rate).clamp(0.0, 3600.0))
}

/// Buckets in this process: key id → (tokens, when last counted).
#[derive(Debug, Default)]
pub struct LocalBuckets(Mutex<HashMap<String, (f64, Instant)>>);

impl LocalBuckets {
    /// Take a token from `key`'s bucket: `Ok` when taken, `Err(wait)` until one is back.
    pub fn take(&self, key: &str, rate: f64, burst: u32) -> Result<(), Duration> {
        let now = Instant::now();
        let burst = f64::from(burst.max(1));
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, at) = map.entry(key.to_string()).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * rate).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(until_one(*tokens, rate))
        }
    }
}

/// `(waiting, running)` from `status, count` rows.
fn tally(rows: &[(String, i64)]) -> Unfinished {
    let mut u = Unfinished::default();
    for (status, n) in rows {
        let n = u64::try_from(*n).unwrap_or(0);
        if status == wolf_core::Status::Pending.as_str() {
            u.waiting += n;
        } else {
            u.running += n;
        }
    }
    u
}

#[async_trait]
impl Quotas for SqliteStore {
    fn sole_admitter(&self) -> bool {
        // The embedded mode: its one `wolf serve` admits every job of its data dir (the other
        // commands on a data dir admit none).
        true
    }

    async fn take_token(&self, key_id: &str, rate: f64, burst: u32) -> Result<Result<(), Duration>, StoreError> {
        Ok(self.buckets.take(key_id, rate, burst))
    }

    async fn unfinished(&self, owner: &str, fresh: &[String]) -> Result<Unfinished, StoreError> {
        // The WHERE repeats the partial index's condition, so SQLite uses it.
        let rows = sqlx::query(
            "SELECT status, count(*) FROM jobs
              WHERE json_extract(record, '$.owner') = ? AND status NOT IN ('Completed', 'Failed')
              GROUP BY status
             UNION ALL
             SELECT 'Pending', count(*) FROM json_each(?) WHERE value NOT IN (SELECT id FROM jobs)",
        )
        .bind(owner)
        .bind(serde_json::to_string(fresh).expect("ids serialize"))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(tally(&rows.iter().map(|r| (r.get(0), r.get(1))).collect::<Vec<_>>()))
    }
}

#[async_trait]
impl Quotas for PgStore {
    async fn take_token(&self, key_id: &str, rate: f64, burst: u32) -> Result<Result<(), Duration>, StoreError> {
        let burst = f64::from(burst.max(1));
        // Refill by the time since the last take, then take one if there is one: one statement,
        // so two APIs taking at once serialize on the row.
        let taken = sqlx::query(
            "INSERT INTO wolf_rate_buckets AS b (key_id, tokens, at) VALUES ($1, $3 - 1, clock_timestamp())
             ON CONFLICT (key_id) DO UPDATE SET
                 tokens = LEAST($3, b.tokens + EXTRACT(EPOCH FROM clock_timestamp() - b.at)::float8 * $2) - 1,
                 at = clock_timestamp()
             WHERE LEAST($3, b.tokens + EXTRACT(EPOCH FROM clock_timestamp() - b.at)::float8 * $2) >= 1
             RETURNING tokens",
        )
        .bind(key_id)
        .bind(rate)
        .bind(burst)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        if taken.is_some() {
            return Ok(Ok(()));
        }
        let now: f64 = sqlx::query(
            "SELECT LEAST($2, tokens + EXTRACT(EPOCH FROM clock_timestamp() - at)::float8 * $3)
               FROM wolf_rate_buckets WHERE key_id = $1",
        )
        .bind(key_id)
        .bind(burst)
        .bind(rate)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?
        .map_or(0.0, |r| r.get(0));
        Ok(Err(until_one(now, rate)))
    }

    async fn unfinished(&self, owner: &str, fresh: &[String]) -> Result<Unfinished, StoreError> {
        let rows = sqlx::query(
            "SELECT status, count(*) FROM wolf_jobs
              WHERE record->>'owner' = $1 AND status NOT IN ('Completed', 'Failed')
              GROUP BY status
             UNION ALL
             SELECT 'Pending', count(*) FROM unnest($2::text[]) AS f(id)
              WHERE NOT EXISTS (SELECT 1 FROM wolf_jobs j WHERE j.id = f.id)",
        )
        .bind(owner)
        .bind(fresh)
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(tally(&rows.iter().map(|r| (r.get(0), r.get(1))).collect::<Vec<_>>()))
    }
}

/// The contract every [`Quotas`] store keeps (SQLite here, PostgreSQL in tests/postgres.rs):
/// a bucket gives its burst at once, then refuses with the wait for the next token, refills
/// at its rate, and is per key.
pub async fn check_contract(store: &dyn Quotas) {
    for _ in 0..3 {
        assert!(store.take_token("k1", 2.0, 3).await.unwrap().is_ok());
    }
    let wait = store.take_token("k1", 2.0, 3).await.unwrap().unwrap_err();
    assert!(wait > Duration::ZERO && wait <= Duration::from_millis(500), "{wait:?}");
    assert!(
        store.take_token("k2", 2.0, 1).await.unwrap().is_ok(),
        "another key's bucket is its own"
    );
    tokio::time::sleep(wait + Duration::from_millis(20)).await;
    assert!(
        store.take_token("k1", 2.0, 3).await.unwrap().is_ok(),
        "refilled at the rate"
    );
    assert!(store.take_token("k1", 2.0, 3).await.unwrap().is_err());
    assert_eq!(store.unfinished("nobody", &[]).await.unwrap(), Unfinished::default());
    let fresh = ["not-stored-1".to_string(), "not-stored-2".to_string()];
    assert_eq!(
        store.unfinished("nobody", &fresh).await.unwrap(),
        Unfinished { waiting: 2, running: 0 },
        "a fresh job not stored yet waits"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_keeps_the_quotas_contract() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::SqliteStore::open(&dir.path().join("q.db")).await.unwrap();
        check_contract(&s).await;
    }

    #[test]
    fn the_counts_split_waiting_from_running() {
        let rows = [
            ("Pending".to_string(), 3),
            ("Running".to_string(), 2),
            ("Dispatched".to_string(), 1),
        ];
        assert_eq!(tally(&rows), Unfinished { waiting: 3, running: 3 });
    }
}
