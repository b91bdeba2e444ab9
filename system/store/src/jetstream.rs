//! The distributed queue: a NATS JetStream work-queue stream with a pending bound, one durable
//! pull consumer shared by every manager, explicit acks, and a dead-letter stream.
//!
//! - `WOLF_JOBS` (subjects `wolf.jobs.<id>`): WorkQueue retention, `max_msgs` = the pending
//!   bound, DiscardNew, file storage. A message carries the record and the submission (code
//!   included), so a manager can run the job before its metadata reached PostgreSQL, and any
//!   API can read a job it did not accept by its subject ([`Queue::peek`]) until PostgreSQL has
//!   it. `Nats-Msg-Id` is the job id (a retried publish is not a second job).
//! - lanes: a job for an engine on an image runtime is published on `wolf.jobs.rt.<runtime>.<id>`
//!   and leased through that runtime's consumer `wolf-rt-<runtime>` (filter of its lane), so
//!   only managers that have the runtime take it; host engines stay on `wolf.jobs.<id>` and the
//!   consumer `wolf-managers` (filtered to one token after `wolf.jobs`). A WorkQueue stream
//!   needs its consumers' filters disjoint: they are. Which engines live managers offer is in
//!   [`crate::engines`].
//! - consumer `wolf-managers`: explicit ack, `ack_wait` = the lease, `max_deliver` = attempts + 2. A manager acks only after
//!   the result is persisted, sends in-progress acks while it works or retries storage, naks
//!   with a delay when its worker died.
//! - `WOLF_DLQ` (subject `wolf.dlq`): jobs that cannot run, with the reason, kept for inspection.
//!
//! nats-server 2.9 loses recent acks on a kill -9 (TESTBED.md): a job may be delivered again
//! after it finished. The manager checks the record and acks such duplicates without running.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer, stream};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use wolf_core::{JobRecord, Submission};

use crate::traits::{Admission, Backlog, DeadLetter, Delivery, Idempotency, Queue, QueueConfig, StoreError};

/// Stream and consumer names.
pub const STREAM: &str = "WOLF_JOBS";
/// Subjects of the work queue: one per job, `wolf.jobs.<id>`.
pub const SUBJECTS: &str = "wolf.jobs.>";

/// The subject of one job's message (a host engine's).
pub fn job_subject(job_id: &str) -> String {
    format!("wolf.jobs.{job_id}")
}

/// The subject of a job for an engine on `runtime`.
pub fn runtime_subject(runtime: &str, job_id: &str) -> String {
    format!("wolf.jobs.rt.{}.{job_id}", token(runtime))
}

/// A runtime's name as one subject token and consumer name: runtime names may hold `.`, which
/// separates tokens; `%` is not in any runtime name, so `%2e` for it cannot collide.
fn token(runtime: &str) -> String {
    runtime.replace('.', "%2e")
}

/// The durable consumer of a lane: the host's (`None`) or a runtime's.
pub(crate) fn consumer_name(runtime: Option<&str>) -> String {
    match runtime {
        None => CONSUMER.to_string(),
        Some(rt) => format!("wolf-rt-{}", token(rt)),
    }
}

/// One lane of the queue: the host's engines (`runtime: None`) or one runtime's.
struct Lane {
    runtime: Option<String>,
    consumer: tokio::sync::OnceCell<consumer::PullConsumer>,
}

impl Lane {
    fn new(runtime: Option<String>) -> Self {
        Self {
            runtime,
            consumer: tokio::sync::OnceCell::new(),
        }
    }

    fn name(&self) -> String {
        consumer_name(self.runtime.as_deref())
    }

    /// Whether a message on `subject` belongs to this lane.
    fn holds(&self, subject: &str) -> bool {
        let tokens: Vec<&str> = subject.split('.').collect();
        match &self.runtime {
            None => subject == LEGACY_SUBJECT || (tokens.len() == 3 && subject.starts_with("wolf.jobs.")),
            Some(rt) => tokens.len() == 5 && tokens[..4] == ["wolf", "jobs", "rt", token(rt).as_str()],
        }
    }
}

/// The one subject every job had before subjects per job.
const LEGACY_SUBJECT: &str = "wolf.jobs";
/// Dead-letter stream.
pub const DLQ_STREAM: &str = "WOLF_DLQ";
/// Dead-letter subject.
pub const DLQ_SUBJECT: &str = "wolf.dlq";
/// The managers' durable consumer.
pub const CONSUMER: &str = "wolf-managers";
/// Core NATS subject announcing stored final results (payload: the job id).
pub const DONE_SUBJECT: &str = "wolf.done";
/// The header of a done announcement with the job's time on its worker (ms).
const SERVED_HEADER: &str = "Wolf-Served-Ms";
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
    /// How long a dead letter is kept (the stream's `max_age`); `None`: for ever.
    pub dead_letter_age: Option<Duration>,
    /// Copies of every stream and bucket in a JetStream cluster (1 on a single server; 3 on a
    /// 3-node cluster, so that losing one node loses neither a job nor the queue).
    pub replicas: usize,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        Self {
            queue: QueueConfig::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            dead_letter_age: None,
            replicas: 1,
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

/// An Idempotency-Key's bucket key: bucket keys allow a restricted alphabet, so its hash.
fn idempotency_key(idem: &Idempotency) -> String {
    wolf_core::hash::sha256_hex(idem.key.as_bytes())
}

/// What the idempotency bucket keeps per key: the body's hash and the job as first queued.
#[derive(Debug, Serialize, Deserialize)]
struct Remembered {
    body_hash: String,
    queued: Queued,
}

/// The JetStream queue.
pub struct JetStreamQueue {
    pub(crate) js: jetstream::Context,
    /// The lanes this process leases from: the host's, then the runtimes it serves.
    lanes: Vec<Lane>,
    /// Engine names and aliases on a runtime, to that runtime: where a job is published.
    pub(crate) routes: HashMap<String, String>,
    /// Messages fetched from one lane while another's was taken: the next lease takes them.
    stash: Arc<Mutex<VecDeque<jetstream::Message>>>,
    cfg: JetStreamConfig,
    inflight: Mutex<HashMap<String, jetstream::Message>>,
    idempotency: tokio::sync::OnceCell<jetstream::kv::Store>,
    pub(crate) engines: tokio::sync::OnceCell<jetstream::kv::Store>,
    /// What live managers offer, once [`JetStreamQueue::follow_engines`] runs.
    pub(crate) offered: Arc<RwLock<Option<Arc<crate::engines::Offered>>>>,
    /// The live managers' workers, read with the offers.
    pub(crate) capacity: Arc<RwLock<crate::engines::Capacity>>,
    /// Each lane's undelivered jobs as last read (backlog.rs), plus those published since.
    pub(crate) pending: std::sync::Arc<Mutex<HashMap<String, crate::backlog::Count>>>,
    /// Orphan candidates seen by the previous janitor pass (stream sequences).
    suspects: Mutex<HashSet<u64>>,
}

/// One message of `consumer`, waiting up to half a second for it.
async fn fetch_one(consumer: &consumer::PullConsumer) -> Result<Option<jetstream::Message>, StoreError> {
    let mut batch = consumer
        .fetch()
        .max_messages(1)
        .expires(Duration::from_millis(500))
        .messages()
        .await
        .map_err(unavailable)?;
    match batch.next().await {
        None => Ok(None),
        Some(m) => m.map(Some).map_err(StoreError::Unavailable),
    }
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
    /// exist with this configuration. `url` may list several servers of a cluster, separated
    /// by commas: any that answers will do (the others are learned from it as well).
    pub async fn connect(url: &str, cfg: JetStreamConfig) -> Result<Self, StoreError> {
        let servers: Vec<&str> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .connect(servers)
            .await
            .map_err(unavailable)?;
        let js = jetstream::new(client);
        let q = Self {
            js,
            lanes: vec![Lane::new(None)],
            routes: HashMap::new(),
            stash: Arc::new(Mutex::new(VecDeque::new())),
            cfg,
            inflight: Mutex::new(HashMap::new()),
            idempotency: tokio::sync::OnceCell::new(),
            engines: tokio::sync::OnceCell::new(),
            offered: Arc::new(RwLock::new(None)),
            capacity: Default::default(),
            pending: Default::default(),
            suspects: Mutex::new(HashSet::new()),
        };
        q.ensure_streams().await?;
        Ok(q)
    }

    /// Publish jobs for these engines (names and aliases, lowercase) on their runtime's lane.
    pub fn with_routes(mut self, routes: HashMap<String, String>) -> Self {
        self.routes = routes;
        self
    }

    /// Lease from these runtimes' lanes too (a manager that has them), beside the host's.
    pub fn serving(mut self, runtimes: impl IntoIterator<Item = String>) -> Self {
        for rt in runtimes {
            if !self.lanes.iter().any(|l| l.runtime.as_deref() == Some(rt.as_str())) {
                self.lanes.push(Lane::new(Some(rt)));
            }
        }
        self
    }

    /// The subject a job is published on: its engine's runtime lane, or the host's.
    fn subject_of(&self, queued: &Queued) -> String {
        match self.lane_of(&queued.submission.execution_engine) {
            Some(rt) => runtime_subject(rt, &queued.record.id),
            None => job_subject(&queued.record.id),
        }
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
            num_replicas: self.cfg.replicas,
            ..Default::default()
        };
        let mut existing = self.js.get_or_create_stream(jobs.clone()).await.map_err(unavailable)?;
        let info = existing.info().await.map_err(unavailable)?;
        if info.config.subjects != jobs.subjects || info.config.num_replicas != jobs.num_replicas {
            // A stream of an earlier version (one subject for every job): its messages stay
            // and are consumed as before; new ones go to their job's subject. A changed
            // replica count is applied in place (the server copies the messages).
            let mut cfg = info.config.clone();
            cfg.subjects.extend(jobs.subjects.iter().cloned());
            cfg.subjects.dedup();
            cfg.num_replicas = jobs.num_replicas;
            self.js.update_stream(cfg).await.map_err(unavailable)?;
        }
        let dlq = stream::Config {
            name: DLQ_STREAM.into(),
            subjects: vec![DLQ_SUBJECT.into()],
            storage: stream::StorageType::File,
            num_replicas: self.cfg.replicas,
            // The server ages dead letters out itself (0: kept for ever).
            max_age: self.cfg.dead_letter_age.unwrap_or(Duration::ZERO),
            ..Default::default()
        };
        let mut existing = self.js.get_or_create_stream(dlq.clone()).await.map_err(unavailable)?;
        let info = existing.info().await.map_err(unavailable)?;
        if info.config.max_age != dlq.max_age {
            // The retention changed since the stream was made: applied in place.
            let mut cfg = info.config.clone();
            cfg.max_age = dlq.max_age;
            self.js.update_stream(cfg).await.map_err(unavailable)?;
        }
        Ok(())
    }

    async fn consumer<'a>(&self, lane: &'a Lane) -> Result<&'a consumer::PullConsumer, StoreError> {
        lane.consumer
            .get_or_try_init(|| async {
                let mut stream = self.js.get_stream(STREAM).await.map_err(unavailable)?;
                let subjects = stream.info().await.map_err(unavailable)?.config.subjects.clone();
                let filter_subjects = match &lane.runtime {
                    // The legacy subject only where the stream still has it (a filter outside
                    // the stream's subjects is refused).
                    None => std::iter::once("wolf.jobs.*".to_string())
                        .chain(subjects.iter().filter(|s| *s == LEGACY_SUBJECT).cloned())
                        .collect(),
                    Some(rt) => vec![format!("wolf.jobs.rt.{}.*", token(rt))],
                };
                let name = lane.name();
                // Create or update: a consumer of an earlier version had no filter, which
                // would overlap every lane's.
                stream
                    .create_consumer(consumer::pull::Config {
                        durable_name: Some(name),
                        ack_policy: consumer::AckPolicy::Explicit,
                        ack_wait: self.cfg.queue.lease,
                        max_deliver: i64::from(self.cfg.queue.max_attempts) + 2,
                        filter_subjects,
                        ..Default::default()
                    })
                    .await
                    .map_err(unavailable)
            })
            .await
    }

    /// The next message of any lane this process serves: one lane's fetch as before, several
    /// lanes' at once, the first message taken and any other that arrives stashed for the next
    /// lease (at most one per lane, renewed by the janitor while it waits).
    async fn next_message(&self) -> Result<Option<jetstream::Message>, StoreError> {
        if let Some(m) = self.stash.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
            return Ok(Some(m));
        }
        if let [lane] = self.lanes.as_slice() {
            return fetch_one(self.consumer(lane).await?).await;
        }
        let (tx, mut rx) = tokio::sync::mpsc::channel(self.lanes.len());
        for lane in &self.lanes {
            let consumer = self.consumer(lane).await?.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(fetch_one(&consumer).await).await;
            });
        }
        drop(tx);
        let mut outcome = Ok(None);
        while let Some(r) = rx.recv().await {
            match r {
                Ok(Some(m)) => {
                    outcome = Ok(Some(m));
                    break;
                }
                Ok(None) => {}
                Err(e) => outcome = Err(e),
            }
        }
        let stash = self.stash.clone();
        tokio::spawn(async move {
            while let Some(r) = rx.recv().await {
                if let Ok(Some(m)) = r {
                    stash.lock().unwrap_or_else(|e| e.into_inner()).push_back(m);
                }
            }
        });
        outcome
    }

    async fn idempotency(&self) -> Result<&jetstream::kv::Store, StoreError> {
        self.idempotency
            .get_or_try_init(|| {
                self.bucket(
                    IDEMPOTENCY_BUCKET,
                    stream::Config {
                        max_age: self.cfg.idempotency_ttl,
                        duplicate_window: self.cfg.idempotency_ttl.min(Duration::from_secs(120)),
                        discard: stream::DiscardPolicy::New,
                        storage: stream::StorageType::File,
                        ..Default::default()
                    },
                )
            })
            .await
    }

    /// The key-value bucket `name`, its stream made here in a bucket's shape (history 1,
    /// rollups, direct get) over `settings` (age, storage...): `create_key_value` first reads
    /// the account info, which async-nats 0.51 cannot parse from nats-server 2.9.
    pub(crate) async fn bucket(
        &self,
        name: &str,
        settings: stream::Config,
    ) -> Result<jetstream::kv::Store, StoreError> {
        self.js
            .get_or_create_stream(stream::Config {
                name: format!("KV_{name}"),
                subjects: vec![format!("$KV.{name}.>")],
                max_messages_per_subject: 1,
                allow_rollup: true,
                deny_delete: true,
                allow_direct: true,
                num_replicas: self.cfg.replicas,
                ..settings
            })
            .await
            .map_err(unavailable)?;
        self.js.get_key_value(name).await.map_err(unavailable)
    }

    /// Publish a queued job; its id is the message id, so a repeat within the stream's
    /// duplicate window is not a second message.
    pub(crate) async fn publish(&self, queued: &Queued) -> Result<(), StoreError> {
        let body = serde_json::to_vec(queued).expect("domain types serialize");
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", queued.record.id.as_str());
        if let Some(tp) = wolf_telemetry::traceparent() {
            headers.insert("traceparent", tp.as_str());
        }
        let ack = self
            .js
            .publish_with_headers(self.subject_of(queued), headers, body.into())
            .await
            .map_err(unavailable)?;
        match ack.await {
            Ok(_) => {
                self.published(&queued.submission.execution_engine);
                Ok(())
            }
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
        match self.claim(&queued, idem).await? {
            None => match self.publish(&queued).await {
                Ok(()) => Ok(Admission::New),
                Err(e) => {
                    self.unclaim(idem).await;
                    Err(e)
                }
            },
            Some(first) => {
                self.publish(&first).await?;
                Ok(Admission::Existing(Box::new(first.record)))
            }
        }
    }

    /// Claim an Idempotency-Key for `queued`: `None` when it is new (the caller queues the job,
    /// or [`JetStreamQueue::unclaim`]s on failure), the job first claimed under it when it was
    /// claimed before with the same body; a conflict when with another body.
    pub(crate) async fn claim(&self, queued: &Queued, idem: &Idempotency) -> Result<Option<Queued>, StoreError> {
        let kv = self.idempotency().await?;
        let remembered = Remembered {
            body_hash: idem.body_hash.clone(),
            queued: queued.clone(),
        };
        let value = serde_json::to_vec(&remembered).expect("serializes");
        match kv.create(idempotency_key(idem), value.into()).await {
            Ok(_) => Ok(None),
            Err(e) if e.kind() == jetstream::kv::CreateErrorKind::AlreadyExists => {
                let Some(bytes) = kv.get(idempotency_key(idem)).await.map_err(unavailable)? else {
                    return Err(StoreError::Unavailable("idempotency key vanished; retry".into()));
                };
                let first: Remembered = serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                    what: "idempotency entry".into(),
                    source,
                })?;
                if first.body_hash != idem.body_hash {
                    return Err(StoreError::IdempotencyConflict { key: idem.key.clone() });
                }
                Ok(Some(first.queued))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    /// Free a claimed key whose job was not accepted, so the client's retry is a new admission.
    pub(crate) async fn unclaim(&self, idem: &Idempotency) {
        if let Ok(kv) = self.idempotency().await {
            let _ = kv.purge(idempotency_key(idem)).await;
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
        let mut stream = self.js.get_stream(STREAM).await.map_err(unavailable)?;
        let state = stream.info().await.map_err(unavailable)?.state.clone();
        let mut found = HashSet::new();
        for lane in &self.lanes {
            let floor = self
                .consumer(lane)
                .await?
                .clone()
                .info()
                .await
                .map_err(unavailable)?
                .ack_floor
                .stream_sequence;
            if state.messages == 0 || state.first_sequence > floor {
                continue;
            }
            let last = floor.min(state.first_sequence + JANITOR_SCAN - 1);
            let mut seq = state.first_sequence;
            while seq <= last {
                match stream.get_raw_message(seq).await {
                    // Below this lane's floor but another lane's message: not an orphan here.
                    Ok(m) if lane.holds(&m.subject) => {
                        found.insert(seq);
                    }
                    Ok(_) => {}
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
            tracing::warn!(job = %job, seq, "requeued a message orphaned below the ack floor");
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
                let served = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(SERVED_HEADER))
                    .and_then(|v| v.as_str().parse::<f64>().ok());
                if let Some(t) = served {
                    events.served(t);
                }
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
        let Some(msg) = self.next_message().await? else {
            return Ok(None);
        };
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

    async fn backlog(&self, _owner: &str, engine: &str) -> Result<Option<Backlog>, StoreError> {
        Ok(self.lane_backlog(engine).await)
    }

    async fn depth(&self) -> Result<u64, StoreError> {
        let mut s = self.js.get_stream(STREAM).await.map_err(unavailable)?;
        Ok(s.info().await.map_err(unavailable)?.state.messages)
    }

    async fn recover(&self) -> Result<u64, StoreError> {
        // Leases are the server's: unacked deliveries of a dead manager come back after ack_wait.
        Ok(0)
    }

    async fn announce_done(&self, job_id: &str, served_ms: Option<f64>) {
        let payload = job_id.to_string().into_bytes().into();
        let client = self.js.client();
        // The payload stays the bare id (what every API version reads); the run time rides in
        // a header.
        let _ = match served_ms {
            Some(t) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(SERVED_HEADER, format!("{t:.3}").as_str());
                client.publish_with_headers(DONE_SUBJECT, headers, payload).await
            }
            None => client.publish(DONE_SUBJECT, payload).await,
        };
    }

    async fn janitor(&self) -> Result<u64, StoreError> {
        // Stashed messages wait for a free worker of this process: their leases are renewed.
        let stashed: Vec<jetstream::Message> = self
            .stash
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect();
        for m in stashed {
            let _ = m.ack_with(AckKind::Progress).await;
        }
        self.sweep_orphans().await
    }

    fn offered(&self) -> Option<Arc<crate::engines::Offered>> {
        self.offered.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn peek(&self, job_id: &str) -> Result<Option<(JobRecord, Submission)>, StoreError> {
        // Subjects are tokens: an id with a wildcard or separator names no job.
        if job_id.is_empty() || job_id.contains(['.', '*', '>', ' ']) {
            return Ok(None);
        }
        let stream = self.js.get_stream_no_info(STREAM).await.map_err(unavailable)?;
        // The host's lane, then any runtime's (this API need not know which runtime it was).
        for subject in [job_subject(job_id), format!("wolf.jobs.rt.*.{job_id}")] {
            match stream.get_last_raw_message_by_subject(&subject).await {
                Ok(msg) => {
                    let q: Queued = serde_json::from_slice(&msg.payload).map_err(|source| StoreError::Corrupt {
                        what: format!("queued message of job {job_id}"),
                        source,
                    })?;
                    return Ok(Some((q.record, q.submission)));
                }
                Err(e) if e.kind() == jetstream::stream::LastRawMessageErrorKind::NoMessageFound => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(None)
    }
}
