//! The distributed queue: a NATS JetStream work-queue stream with a pending bound, one durable
//! pull consumer shared by every manager, explicit acks, and a dead-letter stream.
//!
//! - `WOLF_JOBS` (subjects `wolf.jobs.<id>`): WorkQueue retention, `max_msgs` = the pending
//!   bound, DiscardNew, file storage. A message carries the record and the submission (code
//!   included), so a manager can run the job before its metadata reached PostgreSQL, and any
//!   API can read a job it did not accept by its subject ([`Queue::peek`]) until PostgreSQL has
//!   it. `Nats-Msg-Id` is the job id (a retried publish is not a second job).
//! - consumer `wolf-managers`: explicit ack, `ack_wait` = the lease, `max_deliver` = attempts + 2. A manager acks only after
//!   the result is persisted, sends in-progress acks while it works or retries storage, naks
//!   with a delay when its worker died.
//! - `WOLF_DLQ` (subject `wolf.dlq`): jobs that cannot run, with the reason, kept for inspection.
//!
//! nats-server 2.9 loses recent acks on a kill -9 (TESTBED.md): a job may be delivered again
//! after it finished. The manager checks the record and acks such duplicates without running.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use wolf_core::{JobRecord, Submission};

use crate::traits::{Admission, DeadLetter, Delivery, Idempotency, Queue, QueueConfig, StoreError};

/// Stream and consumer names.
pub const STREAM: &str = "WOLF_JOBS";
/// Subjects of the work queue: one per job, `wolf.jobs.<id>`.
pub const SUBJECTS: &str = "wolf.jobs.>";

/// The subject of one job's message.
pub fn job_subject(job_id: &str) -> String {
    format!("wolf.jobs.{job_id}")
}
/// Dead-letter stream.
pub const DLQ_STREAM: &str = "WOLF_DLQ";
/// Dead-letter subject.
pub const DLQ_SUBJECT: &str = "wolf.dlq";
/// The managers' durable consumer.
pub const CONSUMER: &str = "wolf-managers";
/// Core NATS subject announcing stored final results (payload: the job id).
pub const DONE_SUBJECT: &str = "wolf.done";
/// Key-value bucket of Idempotency-Keys.
pub const IDEMPOTENCY_BUCKET: &str = "WOLF_IDEMPOTENCY";

/// Settings.
#[derive(Debug, Clone)]
pub struct JetStreamConfig {
    /// Lease (`ack_wait`), pending bound (`max_msgs`) and attempts, as in the embedded queue.
    /// The server stops redelivering after `max_attempts + 2` deliveries: the manager
    /// dead-letters at `max_attempts`, the two spare ones cover a manager that died in between.
    pub queue: QueueConfig,
    /// How long an Idempotency-Key is remembered.
    pub idempotency_ttl: Duration,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            queue: QueueConfig::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// What a queued message carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Queued {
    /// The record as admitted.
    pub record: JobRecord,
    /// The submission, code included.
    pub submission: Submission,
}

/// What the idempotency bucket keeps per key: the body's hash and the job as first queued.
#[derive(Debug, Serialize, Deserialize)]
struct Remembered {
    body_hash: String,
    queued: Queued,
}

/// The JetStream queue.
pub struct JetStreamQueue {
    js: jetstream::Context,
    consumer: tokio::sync::OnceCell<consumer::PullConsumer>,
    cfg: JetStreamConfig,
    inflight: Mutex<HashMap<String, jetstream::Message>>,
    idempotency: tokio::sync::OnceCell<jetstream::kv::Store>,
    /// Orphan candidates seen by the previous janitor pass (stream sequences).
    suspects: Mutex<HashSet<u64>>,
}

/// Most stream sequences one janitor pass inspects.
const JANITOR_SCAN: u64 = 512;

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
            idempotency: tokio::sync::OnceCell::new(),
            suspects: Mutex::new(HashSet::new()),
        };
        q.ensure_streams().await?;
        Ok(q)
    }

    /// The core NATS client under the queue (job streams travel on it: [`crate::Streams::over`]).
    pub fn client(&self) -> async_nats::Client {
        self.js.client()
    }

    async fn ensure_streams(&self) -> Result<(), StoreError> {
        let jobs = stream::Config {
            name: STREAM.into(),
            subjects: vec![SUBJECTS.into()],
            retention: stream::RetentionPolicy::WorkQueue,
            max_messages: self.cfg.queue.max_pending as i64,
            discard: stream::DiscardPolicy::New,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        };
        let mut existing = self.js.get_or_create_stream(jobs.clone()).await.map_err(unavailable)?;
        let info = existing.info().await.map_err(unavailable)?;
        if info.config.subjects != jobs.subjects {
            // A stream of an earlier version (one subject for every job): its messages stay
            // and are consumed as before; new ones go to their job's subject.
            let mut cfg = info.config.clone();
            cfg.subjects.extend(jobs.subjects.iter().cloned());
            cfg.subjects.dedup();
            self.js.update_stream(cfg).await.map_err(unavailable)?;
        }
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
                            ack_wait: self.cfg.queue.lease,
                            max_deliver: i64::from(self.cfg.queue.max_attempts) + 2,
                            ..Default::default()
                        },
                    )
                    .await
                    .map_err(unavailable)
            })
            .await
    }

    async fn idempotency(&self) -> Result<&jetstream::kv::Store, StoreError> {
        self.idempotency
            .get_or_try_init(|| async {
                // The bucket's stream is made here in the shape of a key-value bucket (history 1,
                // rollups, direct get): `create_key_value` first reads the account info, which
                // async-nats 0.51 cannot parse from nats-server 2.9.
                self.js
                    .get_or_create_stream(stream::Config {
                        name: format!("KV_{IDEMPOTENCY_BUCKET}"),
                        subjects: vec![format!("$KV.{IDEMPOTENCY_BUCKET}.>")],
                        max_messages_per_subject: 1,
                        max_age: self.cfg.idempotency_ttl,
                        duplicate_window: self.cfg.idempotency_ttl.min(Duration::from_secs(120)),
                        allow_rollup: true,
                        deny_delete: true,
                        allow_direct: true,
                        discard: stream::DiscardPolicy::New,
                        storage: stream::StorageType::File,
                        ..Default::default()
                    })
                    .await
                    .map_err(unavailable)?;
                self.js.get_key_value(IDEMPOTENCY_BUCKET).await.map_err(unavailable)
            })
            .await
    }

    /// Publish a queued job; its id is the message id, so a repeat within the stream's
    /// duplicate window is not a second message.
    async fn publish(&self, queued: &Queued) -> Result<(), StoreError> {
        let body = serde_json::to_vec(queued).expect("domain types serialize");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", queued.record.id.as_str());
        if let Some(tp) = wolf_telemetry::traceparent() {
            headers.insert("traceparent", tp.as_str());
        }
        let ack = self
            .js
            .publish_with_headers(job_subject(&queued.record.id), headers, body.into())
            .await
            .map_err(unavailable)?;
        match ack.await {
            Ok(_) => Ok(()),
            // DiscardNew past max_msgs: err_code 10077, "maximum messages exceeded".
            Err(e) if e.to_string().contains("maximum messages") => Err(StoreError::QueueFull {
                pending: self.cfg.queue.max_pending,
            }),
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Admission under an Idempotency-Key. The key is claimed atomically in a key-value bucket
    /// (create fails when it exists) together with the job, then the job is published. A
    /// repeat with the same body answers the first job and publishes it again: should the first
    /// API have died between the claim and the publish, the job is queued now; otherwise the
    /// message id dedupes it, or (past the duplicate window) the manager finds the record final
    /// and acks it without running.
    async fn admit_once(&self, queued: Queued, idem: &Idempotency) -> Result<Admission, StoreError> {
        let kv = self.idempotency().await?;
        // Bucket keys allow a restricted alphabet: the key's hash stands for it.
        let key = wolf_core::hash::sha256_hex(idem.key.as_bytes());
        let remembered = Remembered {
            body_hash: idem.body_hash.clone(),
            queued,
        };
        let value = serde_json::to_vec(&remembered).expect("serializes");
        match kv.create(&key, value.into()).await {
            Ok(_) => match self.publish(&remembered.queued).await {
                Ok(()) => Ok(Admission::New),
                Err(e) => {
                    // Not accepted: free the key so the client's retry is a new admission.
                    let _ = kv.purge(&key).await;
                    Err(e)
                }
            },
            Err(e) if e.kind() == jetstream::kv::CreateErrorKind::AlreadyExists => {
                let Some(bytes) = kv.get(&key).await.map_err(unavailable)? else {
                    return Err(StoreError::Unavailable("idempotency key vanished; retry".into()));
                };
                let first: Remembered = serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                    what: "idempotency entry".into(),
                    source,
                })?;
                if first.body_hash != idem.body_hash {
                    return Err(StoreError::IdempotencyConflict { key: idem.key.clone() });
                }
                self.publish(&first.queued).await?;
                Ok(Admission::Existing(Box::new(first.queued.record)))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    fn take(&self, job_id: &str) -> Option<jetstream::Message> {
        self.inflight.lock().unwrap_or_else(|e| e.into_inner()).remove(job_id)
    }

    /// Find messages orphaned below the consumer's ack floor and queue them again.
    ///
    /// A WorkQueue stream deletes a message when its ack is processed. After a kill -9,
    /// nats-server 2.9 can restore a consumer whose ack floor passed a message that is still in
    /// the stream (TESTBED.md): never delivered again, yet counted against `max_msgs`. Such a
    /// message is an orphan when a second pass still finds it (an ack being processed right now
    /// looks the same for an instant). Its job may have finished (the ack was real) or not (the
    /// floor moved past a delivery that was never acked); either way it is published again
    /// under the message id `<job>:requeue:<seq>` (janitors of several managers dedupe on it) and
    /// the orphan is deleted. A finished job's new delivery is acked without running: the
    /// manager checks the record first. Returns how many were queued again.
    pub async fn sweep_orphans(&self) -> Result<u64, StoreError> {
        let consumer = self.consumer().await?;
        let floor = consumer
            .clone()
            .info()
            .await
            .map_err(unavailable)?
            .ack_floor
            .stream_sequence;
        let mut stream = self.js.get_stream(STREAM).await.map_err(unavailable)?;
        let state = stream.info().await.map_err(unavailable)?.state.clone();
        let mut found = HashSet::new();
        if state.messages > 0 && state.first_sequence <= floor {
            let last = floor.min(state.first_sequence + JANITOR_SCAN - 1);
            let mut seq = state.first_sequence;
            while seq <= last {
                match stream.get_raw_message(seq).await {
                    Ok(_) => {
                        found.insert(seq);
                    }
                    Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
                    Err(e) => return Err(unavailable(e)),
                }
                seq += 1;
            }
        }
        let confirmed: Vec<u64> = {
            let mut suspects = self.suspects.lock().unwrap_or_else(|e| e.into_inner());
            let confirmed = found.intersection(&suspects).copied().collect();
            *suspects = found;
            confirmed
        };
        let mut requeued = 0;
        for seq in confirmed {
            let msg = match stream.get_raw_message(seq).await {
                Ok(m) => m,
                Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => continue,
                Err(e) => return Err(unavailable(e)),
            };
            let job = serde_json::from_slice::<Queued>(&msg.payload)
                .map(|q| q.record.id)
                .unwrap_or_else(|_| format!("seq-{seq}"));
            let subject = msg.subject.to_string();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", format!("{job}:requeue:{seq}").as_str());
            if let Some(tp) = msg.headers.get("traceparent") {
                headers.insert("traceparent", tp.as_str());
            }
            let republish = |headers: async_nats::HeaderMap| {
                let payload = msg.payload.clone();
                let subject = subject.clone();
                async move {
                    let ack = self
                        .js
                        .publish_with_headers(subject.clone(), headers, payload)
                        .await
                        .map_err(|e| e.to_string())?;
                    ack.await.map_err(|e| e.to_string())
                }
            };
            match republish(headers.clone()).await {
                Ok(_) => {}
                // The stream is at its bound (the orphans may be why): make room first. A crash
                // between the two steps loses this message; its record stays non-final.
                Err(e) if e.contains("maximum messages") => {
                    let _ = stream.delete_message(seq).await;
                    republish(headers)
                        .await
                        .map_err(|e| StoreError::Unavailable(e.into()))?;
                }
                Err(e) => return Err(StoreError::Unavailable(e.into())),
            }
            // Another janitor may have deleted it already.
            let _ = stream.delete_message(seq).await;
            tracing::warn!(job = %job, seq, floor, "requeued a message orphaned below the ack floor");
            metrics::counter!("wolf_orphans_requeued_total").increment(1);
            requeued += 1;
        }
        Ok(requeued)
    }

    /// Forward every announced final result (from any manager) to `events`, for as long as the
    /// connection lives (it reconnects by itself). Polling stays the fallback: an announcement
    /// lost in a reconnect only delays an answer to the next poll.
    pub async fn follow_done(&self, events: crate::Events) -> Result<(), StoreError> {
        let mut sub = self.js.client().subscribe(DONE_SUBJECT).await.map_err(unavailable)?;
        tokio::spawn(async move {
            while let Some(msg) = sub.next().await {
                if let Ok(id) = std::str::from_utf8(&msg.payload) {
                    events.finished(id);
                }
            }
        });
        Ok(())
    }

    /// Messages in the dead-letter stream.
    pub async fn dead_letter_count(&self) -> Result<u64, StoreError> {
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
        idempotency: Option<&Idempotency>,
    ) -> Result<Admission, StoreError> {
        let queued = Queued {
            record: record.clone(),
            submission: submission.clone(),
        };
        match idempotency {
            Some(idem) => self.admit_once(queued, idem).await,
            None => self.publish(&queued).await.map(|()| Admission::New),
        }
    }

    fn config(&self) -> QueueConfig {
        self.cfg.queue
    }

    async fn lease(&self) -> Result<Option<Delivery>, StoreError> {
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
        let traceparent = msg
            .headers
            .as_ref()
            .and_then(|h| h.get("traceparent"))
            .map(|v| v.as_str().to_string());
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
            envelope: Box::new((queued.record, queued.submission)),
            traceparent,
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

    async fn dead_letters(&self, limit: u64) -> Result<Vec<DeadLetter>, StoreError> {
        let mut stream = self.js.get_stream(DLQ_STREAM).await.map_err(unavailable)?;
        let state = stream.info().await.map_err(unavailable)?.state.clone();
        let mut out = Vec::new();
        let mut seq = state.last_sequence;
        while seq >= state.first_sequence.max(1) && (out.len() as u64) < limit {
            match stream.get_raw_message(seq).await {
                Ok(m) => {
                    if let Ok(l) = serde_json::from_slice::<DeadLetter>(&m.payload) {
                        out.push(l);
                    }
                }
                Err(e) if e.kind() == jetstream::stream::RawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(unavailable(e)),
            }
            seq -= 1;
        }
        Ok(out)
    }

    async fn depth(&self) -> Result<u64, StoreError> {
        let mut s = self.js.get_stream(STREAM).await.map_err(unavailable)?;
        Ok(s.info().await.map_err(unavailable)?.state.messages)
    }

    async fn recover(&self) -> Result<u64, StoreError> {
        // Leases are the server's: unacked deliveries of a dead manager come back after ack_wait.
        Ok(0)
    }

    async fn announce_done(&self, job_id: &str) {
        let _ = self
            .js
            .client()
            .publish(DONE_SUBJECT, job_id.to_string().into_bytes().into())
            .await;
    }

    async fn janitor(&self) -> Result<u64, StoreError> {
        self.sweep_orphans().await
    }

    async fn peek(&self, job_id: &str) -> Result<Option<(JobRecord, Submission)>, StoreError> {
        // Subjects are tokens: an id with a wildcard or separator names no job.
        if job_id.is_empty() || job_id.contains(['.', '*', '>', ' ']) {
            return Ok(None);
        }
        let stream = self.js.get_stream_no_info(STREAM).await.map_err(unavailable)?;
        match stream.get_last_raw_message_by_subject(&job_subject(job_id)).await {
            Ok(msg) => {
                let q: Queued = serde_json::from_slice(&msg.payload).map_err(|source| StoreError::Corrupt {
                    what: format!("queued message of job {job_id}"),
                    source,
                })?;
                Ok(Some((q.record, q.submission)))
            }
            Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }
}
