//! The distributed queue: a NATS JetStream work-queue stream with a pending bound, one durable
//! pull consumer shared by every manager, explicit acks, and a dead-letter stream.
//!
//! - `WOLF_JOBS` (subject `wolf.jobs`): WorkQueue retention, `max_msgs` = the pending bound,
//!   DiscardNew, file storage. A message carries the record and the submission (code included),
//!   so a manager can run the job before its metadata reached PostgreSQL. `Nats-Msg-Id` is the
//!   job id (a retried publish is not a second job).
//! - consumer `wolf-managers`: explicit ack, `ack_wait`, `max_deliver`. A manager acks only after
//!   the result is persisted, sends in-progress acks while it works or retries storage, naks
//!   with a delay when its worker died.
//! - `WOLF_DLQ` (subject `wolf.dlq`): jobs that cannot run, with the reason, kept for inspection.
//!
//! nats-server 2.9 loses recent acks on a kill -9 (TESTBED.md): a job may be delivered again
//! after it finished. The manager checks the record and acks such duplicates without running.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use wolf_core::{JobRecord, Submission};

use crate::traits::{Admission, Delivery, Idempotency, Queue, StoreError};

/// Stream and consumer names.
pub const STREAM: &str = "WOLF_JOBS";
/// Subject of the work queue.
pub const SUBJECT: &str = "wolf.jobs";
/// Dead-letter stream.
pub const DLQ_STREAM: &str = "WOLF_DLQ";
/// Dead-letter subject.
pub const DLQ_SUBJECT: &str = "wolf.dlq";
/// The managers' durable consumer.
pub const CONSUMER: &str = "wolf-managers";

/// Settings.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// Most jobs queued (admission answers 503 past it).
    pub max_pending: u64,
    /// Deliveries before the server stops redelivering (the manager dead-letters before).
    pub max_deliver: i64,
    /// How long a delivery may go without an ack or in-progress ack.
    pub ack_wait: Duration,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            max_pending: 10_000,
            max_deliver: 5,
            ack_wait: Duration::from_secs(30),
        }
    }
}

/// What a queued message carries.
#[derive(Debug, Serialize, Deserialize)]
pub struct Queued {
    /// The record as admitted.
    pub record: JobRecord,
    /// The submission, code included.
    pub submission: Submission,
}

/// A dead letter.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The job.
    pub job_id: String,
    /// Why it cannot run.
    pub reason: String,
    /// When it was dead-lettered.
    pub at: DateTime<Utc>,
}

/// The JetStream queue.
pub struct JetStreamQueue {
    js: jetstream::Context,
    consumer: tokio::sync::OnceCell<consumer::PullConsumer>,
    cfg: JetStreamConfig,
    inflight: Mutex<HashMap<String, jetstream::Message>>,
}

impl std::fmt::Debug for JetStreamQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JetStreamQueue").field("cfg", &self.cfg).finish()
    }
}

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

impl JetStreamQueue {
    /// Connect (retrying in the background if the server is down) and make sure the streams
    /// exist with this configuration.
    pub async fn connect(url: &str, cfg: JetStreamConfig) -> Result<Self, StoreError> {
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .connect(url)
            .await
            .map_err(unavailable)?;
        let js = jetstream::new(client);
        let q = Self {
            js,
            consumer: tokio::sync::OnceCell::new(),
            cfg,
            inflight: Mutex::new(HashMap::new()),
        };
        q.ensure_streams().await?;
        Ok(q)
    }

    async fn ensure_streams(&self) -> Result<(), StoreError> {
        self.js
            .get_or_create_stream(stream::Config {
                name: STREAM.into(),
                subjects: vec![SUBJECT.into()],
                retention: stream::RetentionPolicy::WorkQueue,
                max_messages: self.cfg.max_pending as i64,
                discard: stream::DiscardPolicy::New,
                storage: stream::StorageType::File,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        self.js
            .get_or_create_stream(stream::Config {
                name: DLQ_STREAM.into(),
                subjects: vec![DLQ_SUBJECT.into()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn consumer(&self) -> Result<&consumer::PullConsumer, StoreError> {
        self.consumer
            .get_or_try_init(|| async {
                let stream = self.js.get_stream(STREAM).await.map_err(unavailable)?;
                stream
                    .get_or_create_consumer(
                        CONSUMER,
                        consumer::pull::Config {
                            durable_name: Some(CONSUMER.into()),
                            ack_policy: consumer::AckPolicy::Explicit,
                            ack_wait: self.cfg.ack_wait,
                            max_deliver: self.cfg.max_deliver,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(unavailable)
            })
            .await
    }

    fn take(&self, job_id: &str) -> Option<jetstream::Message> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner()).remove(job_id)
    }

    /// Messages in the dead-letter stream.
    pub async fn dead_letters(&self) -> Result<u64, StoreError> {
        let mut s = self.js.get_stream(DLQ_STREAM).await.map_err(unavailable)?;
        Ok(s.info().await.map_err(unavailable)?.state.messages)
    }
}

#[async_trait]
impl Queue for JetStreamQueue {
    async fn admit(
        &self,
        record: &JobRecord,
        submission: &Submission,
        _idempotency: Option<&Idempotency>,
        _max_pending: u64,
    ) -> Result<Admission, StoreError> {
        let body = serde_json::to_vec(&Queued {
            record: record.clone(),
            submission: submission.clone(),
        })
        .expect("domain types serialize");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", record.id.as_str());
        let ack = self
            .js
            .publish_with_headers(SUBJECT, headers, body.into())
            .await
            .map_err(unavailable)?;
        match ack.await {
            Ok(_) => Ok(Admission::New),
            // DiscardNew past max_msgs: err_code 10077, "maximum messages exceeded".
            Err(e) if e.to_string().contains("maximum messages") => Err(StoreError::QueueFull {
                pending: self.cfg.max_pending,
            }),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn lease(&self, _hold: Duration) -> Result<Option<Delivery>, StoreError> {
        let consumer = self.consumer().await?;
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_millis(500))
            .messages()
            .await
            .map_err(unavailable)?;
        let Some(msg) = batch.next().await else { return Ok(None) };
        let msg = msg.map_err(StoreError::Unavailable)?;
        let (attempt, published) = {
            let info = msg.info().map_err(StoreError::Unavailable)?;
            (info.delivered.max(1) as u32, info.published)
        };
        let queued: Queued = match serde_json::from_slice(&msg.payload) {
            Ok(q) => q,
            Err(source) => {
                // Not ours to run, ever: terminate it rather than redeliver it forever.
                let _ = msg.ack_with(AckKind::Term).await;
                return Err(StoreError::Corrupt {
                    what: "queued message".into(),
                    source,
                });
            }
        };
        let job_id = queued.record.id.clone();
        let enqueued_at =
            DateTime::from_timestamp(published.unix_timestamp(), published.nanosecond()).unwrap_or_else(Utc::now);
        self.inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(job_id.clone(), msg);
        Ok(Some(Delivery {
            job_id,
            attempt,
            enqueued_at,
            payload: Some(Box::new((queued.record, queued.submission))),
        }))
    }

    async fn ack(&self, job_id: &str) -> Result<(), StoreError> {
        if let Some(msg) = self.take(job_id) {
            msg.double_ack().await.map_err(StoreError::Unavailable)?;
        }
        Ok(())
    }

    async fn release(&self, job_id: &str, delay: Duration) -> Result<(), StoreError> {
        if let Some(msg) = self.take(job_id) {
            msg.ack_with(AckKind::Nak(Some(delay)))
                .await
                .map_err(StoreError::Unavailable)?;
        }
        Ok(())
    }

    async fn progress(&self, job_id: &str) -> Result<(), StoreError> {
        let msg = self
            .inflight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(job_id)
            .cloned();
        if let Some(msg) = msg {
            msg.ack_with(AckKind::Progress).await.map_err(StoreError::Unavailable)?;
        }
        Ok(())
    }

    async fn dead_letter(&self, job_id: &str, reason: &str) -> Result<(), StoreError> {
        let letter = DeadLetter {
            job_id: job_id.to_string(),
            reason: reason.to_string(),
            at: Utc::now(),
        };
        let body = serde_json::to_vec(&letter).expect("serializes");
        let ack = self.js.publish(DLQ_SUBJECT, body.into()).await.map_err(unavailable)?;
        ack.await.map_err(unavailable)?;
        if let Some(msg) = self.take(job_id) {
            msg.ack_with(AckKind::Term).await.map_err(StoreError::Unavailable)?;
        }
        Ok(())
    }

    async fn depth(&self) -> Result<u64, StoreError> {
        let mut s = self.js.get_stream(STREAM).await.map_err(unavailable)?;
        Ok(s.info().await.map_err(unavailable)?.state.messages)
    }

    async fn recover(&self) -> Result<u64, StoreError> {
        // Leases are the server's: unacked deliveries of a dead manager come back after ack_wait.
        Ok(0)
    }
}
