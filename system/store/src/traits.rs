//! The storage traits shared by the embedded and distributed modes.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use wolf_core::{Attempt, JobRecord, Submission, Timings};

/// Storage failures. `Unavailable` is the only one a caller retries.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The queue holds its maximum of pending jobs.
    #[error("the queue is full ({pending} pending jobs)")]
    QueueFull {
        /// Pending jobs now.
        pending: u64,
    },
    /// The Idempotency-Key was used before with a different body.
    #[error("idempotency key {key:?} was used with a different request body")]
    IdempotencyConflict {
        /// The key.
        key: String,
    },
    /// The backend is down or timed out.
    #[error("storage unavailable")]
    Unavailable(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// Stored data does not parse.
    #[error("corrupt stored data for {what}")]
    Corrupt {
        /// Which item.
        what: String,
        /// Cause.
        #[source]
        source: serde_json::Error,
    },
    /// An object key that would leave the store.
    #[error("invalid object key {0:?}")]
    InvalidKey(String),
}

/// Idempotency of a submission.
#[derive(Debug, Clone)]
pub struct Idempotency {
    /// The client's key.
    pub key: String,
    /// sha256 of the request body.
    pub body_hash: String,
}

/// Every delivery from both lists, one per attempt number (`new`'s entry wins), in order: the
/// final write keeps what `Running` writes stored even when its own copy knows only its attempt.
pub fn merge_attempts(stored: Vec<wolf_core::Attempt>, new: &[wolf_core::Attempt]) -> Vec<wolf_core::Attempt> {
    let mut all: std::collections::BTreeMap<u32, wolf_core::Attempt> =
        stored.into_iter().map(|a| (a.attempt, a)).collect();
    for a in new {
        all.insert(a.attempt, a.clone());
    }
    all.into_values().collect()
}

/// A job that cannot run, kept for inspection (both modes: `GET /dead-letters`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    /// The job.
    pub job_id: String,
    /// Why it cannot run.
    pub reason: String,
    /// When it was dead-lettered.
    pub at: DateTime<Utc>,
}

/// The queue's settings: the same three in both modes (the embedded SQLite queue and
/// JetStream), so a job is held, bounded and retried alike wherever it waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueConfig {
    /// How long a delivery stays with its manager without news before it is offered again
    /// (SQLite: the lease; JetStream: the consumer's `ack_wait`). A manager renews it every
    /// third of it while the job runs ([`Queue::progress`]), so only a silent one loses it.
    pub lease: Duration,
    /// Jobs queued at most (leased or not); admission refuses past it (the API answers 503).
    pub max_pending: u64,
    /// Deliveries of a job before the manager fails it and dead-letters it.
    pub max_attempts: u32,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            max_pending: 10_000,
            max_attempts: 3,
        }
    }
}

/// What a new job would wait behind (admission by deadline).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backlog {
    /// Waiting jobs that would be handed out before it.
    pub ahead: u64,
    /// The workers that take from its lane; `None` when the API's own count is the truth (one
    /// process).
    pub workers: Option<usize>,
}

/// Outcome of an admission.
#[derive(Debug, Clone)]
pub enum Admission {
    /// A new job was queued.
    New,
    /// The same key and body were submitted before: this is that job.
    Existing(Box<JobRecord>),
}

/// A page of the job listing: newest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Page<'a> {
    /// Only jobs older than this id (cursor).
    pub before: Option<&'a str>,
    /// Or skip this many (numeric offset).
    pub offset: u64,
    /// At most this many.
    pub limit: u64,
    /// Only jobs of this owner (an API key's id).
    pub owner: Option<&'a str>,
}

/// A leased job.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The job.
    pub job_id: String,
    /// 1 for the first delivery.
    pub attempt: u32,
    /// When it was queued.
    pub enqueued_at: DateTime<Utc>,
    /// The envelope: the record (as admitted, or as stored when the queue reads it from the
    /// metadata store) and the submission. Every queue carries it, so the manager always runs
    /// from it, also before the job's metadata reached the database or while it is down.
    pub envelope: Box<(JobRecord, Submission)>,
    /// W3C trace context of the request that admitted the job.
    pub traceparent: Option<String>,
}

/// Job records.
#[async_trait]
pub trait Metadata: Send + Sync {
    /// One record.
    async fn get(&self, id: &str) -> Result<Option<JobRecord>, StoreError>;
    /// Insert a new record; an existing id is left as it is (idempotent). Returns whether it
    /// was inserted.
    async fn insert(&self, record: &JobRecord, submission: &Submission) -> Result<bool, StoreError>;
    /// The submission of a job (its code is in the object store).
    async fn submission(&self, id: &str) -> Result<Option<Submission>, StoreError>;
    /// Newest first.
    async fn list(&self, page: Page<'_>) -> Result<Vec<JobRecord>, StoreError>;
    /// The job started an execution: status Running, the attempt appended to `attempts`.
    async fn mark_running(&self, id: &str, attempt: &Attempt, timings: Timings) -> Result<(), StoreError>;
    /// Write the final record (Completed or Failed) unless one was written already: the final
    /// result is written once; its `attempts` are merged with the stored ones
    /// ([`merge_attempts`]). Returns whether this call wrote it.
    async fn finish(&self, record: &JobRecord) -> Result<bool, StoreError>;
}

/// API keys and the owners of what is not a job record (sessions), in the metadata store.
#[async_trait]
pub trait Keys: Send + Sync {
    /// Store a new key; `false` when its name is taken.
    async fn create_key(&self, key: &wolf_core::auth::ApiKey) -> Result<bool, StoreError>;
    /// Every key, revoked ones too, oldest first.
    async fn keys(&self) -> Result<Vec<wolf_core::auth::ApiKey>, StoreError>;
    /// Revoke the key named `name`; `false` when there is no such live key.
    async fn revoke_key(&self, name: &str) -> Result<bool, StoreError>;
    /// Give the live key `name` the webhook secret `secret`; its current one signs too until
    /// `until`. `false`: no live key of that name.
    async fn rotate_webhook_secret(
        &self,
        name: &str,
        secret: &str,
        until: chrono::DateTime<chrono::Utc>,
    ) -> Result<bool, StoreError>;
    /// The key whose secret hashes to `hash` (revoked ones too: the caller refuses them).
    async fn key_by_hash(&self, hash: &str) -> Result<Option<wolf_core::auth::ApiKey>, StoreError>;
    /// Record that key `key_id` owns `id` (a session).
    async fn set_owner(&self, id: &str, key_id: &str) -> Result<(), StoreError>;
    /// The key that owns `id`, if any.
    async fn owner(&self, id: &str) -> Result<Option<String>, StoreError>;
}

/// A key's unfinished jobs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unfinished {
    /// Queued, not started (`Pending`).
    pub waiting: u64,
    /// Handed to a worker or running.
    pub running: u64,
}

/// Per-key quotas, kept where every API of the deployment sees them (the metadata store).
#[async_trait]
pub trait Quotas: Send + Sync {
    /// Take one token from `key_id`'s bucket (`rate` per second, at most `burst`): `Ok(Ok(()))`
    /// when taken, `Ok(Err(wait))` when empty, `wait` being the time until a token is back.
    async fn take_token(&self, key_id: &str, rate: f64, burst: u32) -> Result<Result<(), Duration>, StoreError>;
    /// The unfinished jobs `owner` (a key id) has now; of `fresh` (jobs just accepted), those
    /// not stored yet count as waiting.
    async fn unfinished(&self, owner: &str, fresh: &[String]) -> Result<Unfinished, StoreError>;
    /// Whether every job of this store is admitted by this process (the embedded mode): then a
    /// key's unfinished jobs can only have grown by this process's admissions since they were
    /// counted, and a count plus those is an upper bound that needs no query. Default: no.
    fn sole_admitter(&self) -> bool {
        false
    }
}

/// A webhook whose job has ended and whose time has come: leased to one sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    /// The job (and the delivery's idempotency key).
    pub job_id: String,
    /// Where it goes.
    pub url: String,
    /// Attempts made before this one.
    pub attempts: u32,
    /// When the job was accepted (ms since the epoch): retries stop a day later.
    pub created_ms: i64,
}

/// What became of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookFate {
    /// The receiver took it (2xx).
    Delivered,
    /// Try again at this time (ms since the epoch), after this failure.
    Retry { at_ms: i64, error: String },
    /// Never again (a 4xx, a refused address, a day of failures).
    Failed { error: String },
}

/// Where a job's webhook stands (`GET /job/{id}/webhook`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookState {
    /// Where it goes.
    pub url: String,
    /// `waiting` (for its job to end, or for its next attempt), `delivered` or `failed`.
    pub state: String,
    /// Attempts made.
    pub attempts: u32,
    /// When a waiting webhook is tried next, once its job has ended (ms since the epoch).
    pub next_ms: Option<i64>,
    /// What the last failed attempt met.
    pub last_error: Option<String>,
}

/// The outbox of webhooks, in the metadata store: a row is written with the job (in the same
/// transaction), becomes due when the job ends, and is leased to one sender at a time (so
/// several APIs deliver each webhook once, at least once across crashes).
#[async_trait]
pub trait Outbox: Send + Sync {
    /// Up to `limit` due webhooks, leased for `lease` (a sender that dies holding them only
    /// delays them by that much).
    async fn due_webhooks(&self, limit: u32, lease: Duration) -> Result<Vec<Webhook>, StoreError>;
    /// Record what came of an attempt (ending the lease).
    async fn settle_webhook(&self, job_id: &str, fate: &WebhookFate) -> Result<(), StoreError>;
    /// Where `job_id`'s webhook stands (`None`: the job has none).
    async fn webhook_state(&self, job_id: &str) -> Result<Option<WebhookState>, StoreError>;
    /// Send `job_id`'s webhook again now, with a fresh day of retries, whatever became of it
    /// (the receiver lost it, or was down past the retries). `false`: the job has none.
    async fn redeliver_webhook(&self, job_id: &str) -> Result<bool, StoreError>;
}

/// Code and output objects.
#[async_trait]
pub trait Objects: Send + Sync {
    /// Store `data` under `key` (atomically replaced).
    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError>;
    /// Read `key`.
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Delete every object under `prefix` (a job's `jobs/<id>/`); none there is no error.
    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError>;
}

/// The durable work queue.
#[async_trait]
pub trait Queue: Send + Sync {
    /// The settings it was opened with.
    fn config(&self) -> QueueConfig;
    /// Whether admission stores the code object first and refuses the job (503) when that
    /// fails. The embedded queue shares its disk with the object store: a write that fails
    /// there (a full disk) refuses the job before the queue's own transaction can fail on it
    /// (seen: SQLite transactions failing on a full disk left the database locked for every
    /// later request). JetStream does not: S3 stays off the acceptance path.
    fn code_before_admission(&self) -> bool {
        false
    }
    /// Durably accept a job: the envelope (record and submission, code included) and the
    /// idempotency key together. Refuses past [`QueueConfig::max_pending`].
    async fn admit(
        &self,
        record: &JobRecord,
        submission: &Submission,
        idempotency: Option<&Idempotency>,
    ) -> Result<Admission, StoreError>;
    /// Lease the oldest available job for [`QueueConfig::lease`]; it comes back if neither
    /// acked nor renewed ([`Queue::progress`]) by then.
    async fn lease(&self) -> Result<Option<Delivery>, StoreError>;
    /// Remove a job whose result is persisted.
    async fn ack(&self, job_id: &str) -> Result<(), StoreError>;
    /// Make a leased job available again after `delay` (its worker died).
    async fn release(&self, job_id: &str, delay: Duration) -> Result<(), StoreError>;
    /// What a new job of `owner` ('' without keys) on `engine` would wait behind; `None` when
    /// this queue cannot tell (then no deadline is enforced).
    async fn backlog(&self, _owner: &str, _engine: &str) -> Result<Option<Backlog>, StoreError> {
        Ok(None)
    }
    /// Jobs queued (leased or not).
    async fn depth(&self) -> Result<u64, StoreError>;
    /// After a restart: every lease of the previous process is void.
    async fn recover(&self) -> Result<u64, StoreError>;
    /// Tell every API that the job's final record is stored (their `wait=true` requests answer
    /// at once instead of at their next poll). Best effort; default: nothing (one process).
    /// `served_ms`: how long it held its worker, when it ran to its end (admission by
    /// deadline learns run times from it).
    async fn announce_done(&self, _job_id: &str, _served_ms: Option<f64>) {}
    /// Periodic housekeeping (the manager calls it every few seconds): queue again jobs the
    /// queue holds but would never deliver. Returns how many. Default: nothing to do.
    async fn janitor(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    /// The job as queued (record and submission), while the queue holds it: another API's
    /// fresh job is readable before the metadata store has it. Default: nothing (the embedded
    /// queue writes the record in the admission's own transaction).
    async fn peek(&self, _job_id: &str) -> Result<Option<(JobRecord, Submission)>, StoreError> {
        Ok(None)
    }
    /// The engines on image runtimes that live managers offer, by name, where jobs are routed
    /// to the managers that have their runtime (distributed); `None` where this process's own
    /// registry is the truth (embedded).
    fn offered(&self) -> Option<std::sync::Arc<crate::engines::Offered>> {
        None
    }
    /// Tell the queue the job is still being worked on: its lease starts again.
    async fn progress(&self, job_id: &str) -> Result<(), StoreError>;
    /// The job cannot run: keep it in the dead-letter store with `reason`, and remove it from
    /// the queue.
    async fn dead_letter(&self, job_id: &str, reason: &str) -> Result<(), StoreError>;
    /// The newest dead letters first, at most `limit`.
    async fn dead_letters(&self, limit: u64) -> Result<Vec<DeadLetter>, StoreError>;
}

/// Where sessions live: the manager's sandboxes in one process, or over NATS (the manager
/// that holds a session answers for it).
#[async_trait]
pub trait SessionHost: Send + Sync {
    /// A new session.
    async fn create(
        &self,
        spec: wolf_core::session::SessionSpec,
    ) -> Result<wolf_core::session::SessionInfo, SessionError>;
    /// Run in session `id`.
    async fn exec(
        &self,
        id: &str,
        req: wolf_core::session::ExecRequest,
    ) -> Result<wolf_core::session::ExecResult, SessionError>;
    /// Write a file of its work dir (replacing one of the same path).
    async fn put_file(&self, id: &str, path: &str, data: Vec<u8>) -> Result<(), SessionError>;
    /// Read a file of its work dir.
    async fn get_file(&self, id: &str, path: &str) -> Result<Vec<u8>, SessionError>;
    /// Its state.
    async fn info(&self, id: &str) -> Result<wolf_core::session::SessionInfo, SessionError>;
    /// End it (its sandbox and everything in it).
    async fn delete(&self, id: &str) -> Result<(), SessionError>;
}

pub use wolf_core::session::SessionError;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_merge_by_number_and_the_newer_entry_wins() {
        let a = |n: u32, w: &str| wolf_core::Attempt {
            attempt: n,
            worker: w.into(),
            started_at: chrono::DateTime::UNIX_EPOCH,
        };
        let got = merge_attempts(vec![a(1, "old"), a(2, "old")], &[a(2, "new"), a(3, "new")]);
        let got: Vec<_> = got.iter().map(|x| (x.attempt, x.worker.as_str())).collect();
        assert_eq!(got, [(1, "old"), (2, "new"), (3, "new")]);
        assert!(merge_attempts(Vec::new(), &[]).is_empty());
    }
}
