//! The webhook outbox in both metadata stores ([`Outbox`]).
//!
//! A submission with a `callbackUrl` gets its outbox row in the transaction that stores the
//! job, so an accepted job's webhook cannot be lost; the row waits until the job's status is
//! final. A sender leases due rows (`lease_ms`), tries each, and settles it: delivered, a
//! retry time, or failed. In PostgreSQL the lease is taken with `FOR UPDATE SKIP LOCKED`, so
//! the APIs of a deployment share the work without handing one row to two of them; a sender
//! that dies mid-delivery leaves its rows to whoever leases them after the lease runs out (at
//! least once, never lost).
//!
//! Times are the sender's clock in ms since the epoch (the APIs of a deployment are expected
//! to keep NTP time; a skew only shifts a retry or a lease by that much).

use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use sqlx::Row;
use wolf_core::Submission;

use crate::traits::{Outbox, StoreError, Webhook, WebhookFate, WebhookState};
use crate::{PgStore, SqliteStore};

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// Write `id`'s outbox row (nothing without a callback) in the transaction `tx` of SQLite.
pub(crate) async fn sqlite_enqueue(
    tx: &mut sqlx::SqliteConnection,
    id: &str,
    sub: &Submission,
) -> Result<(), StoreError> {
    let Some(url) = &sub.callback_url else { return Ok(()) };
    let now = now_ms();
    sqlx::query("INSERT OR IGNORE INTO webhooks (job_id, url, next_ms, created_ms) VALUES (?, ?, ?, ?)")
        .bind(id)
        .bind(url)
        .bind(now)
        .bind(now)
        .execute(tx)
        .await
        .map_err(db)?;
    Ok(())
}

/// Write `id`'s outbox row (nothing without a callback) in the transaction `tx` of PostgreSQL.
pub(crate) async fn pg_enqueue(tx: &mut sqlx::PgConnection, id: &str, sub: &Submission) -> Result<(), StoreError> {
    let Some(url) = &sub.callback_url else { return Ok(()) };
    let now = now_ms();
    sqlx::query(
        "INSERT INTO wolf_webhooks (job_id, url, next_ms, created_ms) VALUES ($1, $2, $3, $3)
         ON CONFLICT (job_id) DO NOTHING",
    )
    .bind(id)
    .bind(url)
    .bind(now)
    .execute(tx)
    .await
    .map_err(db)?;
    Ok(())
}

/// A row of `SELECT url, state, attempts, next_ms, last_error` as a [`WebhookState`].
fn state_of<'r, R: Row>(r: &'r R) -> WebhookState
where
    usize: sqlx::ColumnIndex<R>,
    String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let state: String = r.get(1);
    WebhookState {
        url: r.get(0),
        next_ms: (state == "waiting").then(|| r.get(3)),
        state,
        attempts: r.get::<i64, _>(2).max(0) as u32,
        last_error: r.get(4),
    }
}

/// Settle as SQL: the new state, the next time, and the error, per fate.
fn settled(fate: &WebhookFate) -> (&'static str, Option<i64>, Option<&str>) {
    match fate {
        WebhookFate::Delivered => ("delivered", None, None),
        WebhookFate::Retry { at_ms, error } => ("waiting", Some(*at_ms), Some(error)),
        WebhookFate::Failed { error } => ("failed", None, Some(error)),
    }
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn due_webhooks(&self, limit: u32, lease: Duration) -> Result<Vec<Webhook>, StoreError> {
        let now = now_ms();
        let _w = self.writer.lock().await;
        let rows = sqlx::query(
            "UPDATE webhooks SET lease_ms = ?1 + ?2 WHERE job_id IN (
                 SELECT w.job_id FROM webhooks w JOIN jobs j ON j.id = w.job_id
                  WHERE w.state = 'waiting' AND w.next_ms <= ?1 AND w.lease_ms <= ?1
                    AND j.status IN ('Completed', 'Failed')
                  ORDER BY w.next_ms LIMIT ?3)
             RETURNING job_id, url, attempts, created_ms",
        )
        .bind(now)
        .bind(lease.as_millis() as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| Webhook {
                job_id: r.get(0),
                url: r.get(1),
                attempts: r.get::<i64, _>(2).max(0) as u32,
                created_ms: r.get(3),
            })
            .collect())
    }

    async fn settle_webhook(&self, job_id: &str, fate: &WebhookFate) -> Result<(), StoreError> {
        let (state, next, error) = settled(fate);
        let _w = self.writer.lock().await;
        sqlx::query(
            "UPDATE webhooks SET state = ?, next_ms = COALESCE(?, next_ms), last_error = ?,
                    attempts = attempts + 1, lease_ms = 0
              WHERE job_id = ?",
        )
        .bind(state)
        .bind(next)
        .bind(error)
        .bind(job_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn webhook_state(&self, job_id: &str) -> Result<Option<WebhookState>, StoreError> {
        let row = sqlx::query("SELECT url, state, attempts, next_ms, last_error FROM webhooks WHERE job_id = ?")
            .bind(job_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row.as_ref().map(state_of))
    }

    async fn redeliver_webhook(&self, job_id: &str) -> Result<bool, StoreError> {
        let now = now_ms();
        let _w = self.writer.lock().await;
        let done = sqlx::query(
            "UPDATE webhooks SET state = 'waiting', next_ms = ?1, created_ms = ?1, lease_ms = 0 WHERE job_id = ?2",
        )
        .bind(now)
        .bind(job_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl Outbox for PgStore {
    async fn due_webhooks(&self, limit: u32, lease: Duration) -> Result<Vec<Webhook>, StoreError> {
        let now = now_ms();
        let rows = sqlx::query(
            "UPDATE wolf_webhooks SET lease_ms = $1 + $2 WHERE job_id IN (
                 SELECT w.job_id FROM wolf_webhooks w JOIN wolf_jobs j ON j.id = w.job_id
                  WHERE w.state = 'waiting' AND w.next_ms <= $1 AND w.lease_ms <= $1
                    AND j.status IN ('Completed', 'Failed')
                  ORDER BY w.next_ms LIMIT $3
                  FOR UPDATE OF w SKIP LOCKED)
             RETURNING job_id, url, attempts, created_ms",
        )
        .bind(now)
        .bind(lease.as_millis() as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| Webhook {
                job_id: r.get(0),
                url: r.get(1),
                attempts: r.get::<i32, _>(2).max(0) as u32,
                created_ms: r.get(3),
            })
            .collect())
    }

    async fn settle_webhook(&self, job_id: &str, fate: &WebhookFate) -> Result<(), StoreError> {
        let (state, next, error) = settled(fate);
        sqlx::query(
            "UPDATE wolf_webhooks SET state = $1, next_ms = COALESCE($2, next_ms), last_error = $3,
                    attempts = attempts + 1, lease_ms = 0
              WHERE job_id = $4",
        )
        .bind(state)
        .bind(next)
        .bind(error)
        .bind(job_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn webhook_state(&self, job_id: &str) -> Result<Option<WebhookState>, StoreError> {
        let row = sqlx::query(
            "SELECT url, state, attempts::BIGINT, next_ms, last_error FROM wolf_webhooks WHERE job_id = $1",
        )
        .bind(job_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        Ok(row.as_ref().map(state_of))
    }

    async fn redeliver_webhook(&self, job_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE wolf_webhooks SET state = 'waiting', next_ms = $1, created_ms = $1, lease_ms = 0 WHERE job_id = $2",
        )
        .bind(now_ms())
        .bind(job_id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}

/// The contract every [`Outbox`] store keeps (SQLite here, PostgreSQL in tests/postgres.rs):
/// a row is written with its job and due only once the job has ended; two senders asking at
/// once share the due rows without overlap; a leased row is not handed out again until it is
/// settled; a retry waits for its time; a delivered or failed row is done.
pub async fn check_contract<S: Outbox + crate::Metadata>(store: &S) {
    use wolf_core::{JobRecord, Status};
    let sub = |hook: bool| -> Submission {
        let mut v = serde_json::json!({"code": "print(1)", "executionEngine": "python"});
        if hook {
            v["callbackUrl"] = "http://hook.example/x".into();
        }
        serde_json::from_value(v).unwrap()
    };
    let lease = Duration::from_secs(60);
    let mut ids = Vec::new();
    for i in 0..4 {
        let id = format!("0191-hook-{i}");
        let rec = JobRecord::new(id.clone(), &sub(i < 3), Utc::now());
        store.insert(&rec, &sub(i < 3)).await.unwrap();
        ids.push(id);
    }
    assert!(
        store.due_webhooks(10, lease).await.unwrap().is_empty(),
        "nothing is due before its job ends"
    );
    for id in &ids {
        let mut rec = JobRecord::new(id.clone(), &sub(true), Utc::now());
        rec.status = Status::Completed;
        store.finish(&rec).await.unwrap();
    }
    let (a, b) = tokio::join!(store.due_webhooks(2, lease), store.due_webhooks(2, lease));
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut got: Vec<&str> = a.iter().chain(&b).map(|w| w.job_id.as_str()).collect();
    got.sort();
    assert_eq!(
        got,
        ids[..3].iter().map(String::as_str).collect::<Vec<_>>(),
        "each due row once; none without a callback"
    );
    assert!(
        a.iter()
            .chain(&b)
            .all(|w| w.url == "http://hook.example/x" && w.attempts == 0)
    );
    assert!(
        store.due_webhooks(10, lease).await.unwrap().is_empty(),
        "leased rows wait for their lease"
    );
    let retry_at = now_ms() + 60_000;
    store
        .settle_webhook(
            &ids[0],
            &WebhookFate::Retry {
                at_ms: retry_at,
                error: "HTTP 503".into(),
            },
        )
        .await
        .unwrap();
    store.settle_webhook(&ids[1], &WebhookFate::Delivered).await.unwrap();
    store
        .settle_webhook(
            &ids[2],
            &WebhookFate::Retry {
                at_ms: now_ms() - 1,
                error: "refused".into(),
            },
        )
        .await
        .unwrap();
    let again = store.due_webhooks(10, Duration::ZERO).await.unwrap();
    assert_eq!(again.len(), 1, "only the retry whose time came: {again:?}");
    assert_eq!((again[0].job_id.as_str(), again[0].attempts), (ids[2].as_str(), 1));
    store
        .settle_webhook(
            &ids[2],
            &WebhookFate::Failed {
                error: "HTTP 404".into(),
            },
        )
        .await
        .unwrap();
    assert!(
        store.due_webhooks(10, lease).await.unwrap().is_empty(),
        "delivered, failed and future rows are not due"
    );
    // A lease of zero lapsed at once: the row would be offered again (at least once).
    store
        .settle_webhook(
            &ids[0],
            &WebhookFate::Retry {
                at_ms: now_ms() - 1,
                error: "x".into(),
            },
        )
        .await
        .unwrap();
    assert_eq!(store.due_webhooks(10, Duration::ZERO).await.unwrap().len(), 1);
    assert_eq!(
        store.due_webhooks(10, lease).await.unwrap().len(),
        1,
        "a lapsed lease is taken again"
    );
    // Where each stands, and a redelivery: the failed one is due again at once, with its
    // attempts kept and a fresh day of retries.
    let failed = store.webhook_state(&ids[2]).await.unwrap().unwrap();
    assert_eq!(
        (
            failed.state.as_str(),
            failed.attempts,
            failed.next_ms,
            failed.last_error.as_deref()
        ),
        ("failed", 2, None, Some("HTTP 404"))
    );
    let delivered = store.webhook_state(&ids[1]).await.unwrap().unwrap();
    assert_eq!((delivered.state.as_str(), delivered.attempts), ("delivered", 1));
    assert_eq!(delivered.url, "http://hook.example/x");
    assert_eq!(
        store.webhook_state(&ids[3]).await.unwrap(),
        None,
        "no callback, no webhook"
    );
    assert!(!store.redeliver_webhook(&ids[3]).await.unwrap());
    assert!(store.redeliver_webhook(&ids[2]).await.unwrap());
    let again = store.webhook_state(&ids[2]).await.unwrap().unwrap();
    assert_eq!((again.state.as_str(), again.attempts), ("waiting", 2));
    assert!(again.next_ms.is_some_and(|t| t <= now_ms()));
    let due = store.due_webhooks(10, lease).await.unwrap();
    assert_eq!(
        due.iter().map(|w| w.job_id.as_str()).collect::<Vec<_>>(),
        [ids[2].as_str()]
    );
    assert!(
        due[0].created_ms >= retry_at - 60_000,
        "its day of retries starts again"
    );
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn sqlite_keeps_the_outbox_contract() {
        let dir = tempfile::tempdir().unwrap();
        let s = crate::SqliteStore::open(&dir.path().join("w.db")).await.unwrap();
        super::check_contract(&s).await;
    }
}
