//! Fair dispatch in the distributed mode: a window per key over the JetStream queue.
//!
//! A JetStream consumer hands out messages in the order they were published, so one key's flood
//! of 10 000 jobs would run before another key's job submitted after it. The embedded queue
//! orders by fair-queuing tags instead (sqlite.rs); JetStream cannot reorder, so here a key
//! keeps at most a *window* of jobs in the queue or on a worker: the live managers' workers
//! plus one. A job past its key's window is admitted into PostgreSQL only, `held` (durably: the
//! answer goes out after the commit), and published when a job of the same key ends, oldest
//! first. Another key's job then finds at most one waiting job of the flooding key ahead of it
//! in the queue (its window's spare one), so it starts once a worker is free: within one job's
//! run time of any busy worker, however long the flood.
//!
//! - **Admission** ([`FairQueue::admit`]): jobs without an owner (authentication off: one
//!   tenant) and deployments whose managers have not said their workers go straight to the
//!   queue, as before (but a key's job never passes its own held ones).
//!   - A key with nothing dispatched from this API (its jobs from here ended, as their done
//!     announcements said) and nothing held (as the last pass counted) has room: its job is
//!     published without a query. Another API's jobs of the key are not seen here, so a key
//!     spread over several APIs can pass its window by one job per other API.
//!   - Otherwise one statement asks whether the key has held jobs (then the new one is held
//!     too, behind them) and how many of its jobs are dispatched and not ended (counted up to
//!     the window; this API's jobs whose record is still on its way count too).
//!   - When PostgreSQL cannot answer within [`COUNT_WITHIN`], or the hold cannot be written,
//!     the job goes straight to the queue: fairness gives way to availability, and no job is
//!     refused for it.
//! - **Promotion** ([`FairQueue::promote_forever`], on every API): every [`PROMOTE_EVERY`], and
//!   at once when a job ends while some key has held jobs (otherwise an end costs no query).
//!   For each key with held jobs, a transaction takes the key's advisory lock (one API promotes
//!   a key at a time), counts its dispatched jobs, publishes the oldest held ones up to the
//!   window (the message id is the job id: a repeat is no second job) and clears their flag. An API that dies in between leaves them held; the manager that
//!   runs one clears the flag itself, so none is published twice.
//! - **Off** (`fair_dispatch = false`, [`FairQueue::disabled`]): jobs go straight to the
//!   queue, and the passes publish whatever was held before, without a window.
//! - **Deadline**: a key's held jobs are ahead of its next one, so [`Queue::backlog`] adds them
//!   to its lane's count: a flooding key is refused for its own backlog, another key is not.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::Row;
use wolf_core::{JobRecord, Submission};

use crate::jetstream::{JetStreamQueue, Queued};
use crate::traits::{Admission, Backlog, DeadLetter, Delivery, Idempotency, Queue, QueueConfig, StoreError};
use crate::{Events, PgStore};

/// The longest a held job waits for a promotion pass when no job ends (an API restarted, or
/// another API's done announcements were missed).
pub const PROMOTE_EVERY: Duration = Duration::from_millis(250);

/// How long a job this API dispatched is remembered without its done announcement (which is
/// best effort); its record, written in the background, is in PostgreSQL long before.
const FRESH_FOR: Duration = Duration::from_secs(30);

/// How long an admission waits for its key's count before it queues the job at once; then the
/// next admissions queue theirs at once for a second (the store's read breaker), so a database
/// that hangs delays one submission a second by this, no more.
const COUNT_WITHIN: Duration = Duration::from_secs(1);

/// Most held jobs one key gets published in one promotion.
const PROMOTE_BATCH: u64 = 256;

fn db(e: sqlx::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

/// The JetStream queue with a window per key (the API's queue; managers lease from the
/// JetStream queue itself).
pub struct FairQueue {
    inner: Arc<JetStreamQueue>,
    pg: PgStore,
    /// One admission of a key at a time on this API, so a burst counts its own jobs.
    turns: crate::Turns,
    /// Jobs this API dispatched, by key, until they end.
    mine: Mutex<Mine>,
    /// Held jobs by key, as the last promotion pass counted them plus those held here since.
    held: Mutex<HashMap<String, u64>>,
    /// Off (`fair_dispatch = false`): every job goes straight to the queue, and jobs held
    /// before are published by the promotion passes without a window.
    enabled: bool,
}

impl std::fmt::Debug for FairQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FairQueue").field("inner", &self.inner).finish()
    }
}

impl FairQueue {
    /// Fair dispatch over `inner`, holding jobs in `pg`: a pool of its own, so that the counts
    /// at admission never wait behind the records being written in the background (under a
    /// flood those take every connection of the API's pool, and a count that waits past
    /// [`COUNT_WITHIN`] lets its job past the window).
    pub fn new(inner: Arc<JetStreamQueue>, pg: PgStore) -> Self {
        Self {
            inner,
            pg,
            turns: crate::Turns::default(),
            mine: Mutex::default(),
            held: Mutex::default(),
            enabled: true,
        }
    }

    /// With fair dispatch off: first come, first served, as JetStream delivers; what was held
    /// while it was on is still published, all of it, at the next pass.
    pub fn disabled(mut self) -> Self {
        self.enabled = false;
        self
    }

    /// How many jobs of one key may be dispatched at once: every live worker, plus one waiting
    /// so that a worker finishing never waits for a promotion; `None` while no manager has said
    /// its workers (no fairness then).
    fn window(&self) -> Option<u64> {
        self.inner.workers(None).map(|w| w as u64 + 1)
    }

    fn mine(&self) -> std::sync::MutexGuard<'_, Mine> {
        self.mine.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn holds_any(&self) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|n| *n > 0)
    }

    fn holds(&self, owner: &str) -> bool {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner)
            .is_some_and(|n| *n > 0)
    }

    /// Publish `queued` or hold it, by its owner's window.
    async fn place(&self, owner: &str, window: u64, queued: &Queued) -> Result<(), StoreError> {
        let fresh = self.mine().ids(owner);
        // The common case costs no query: a key with nothing dispatched from here and nothing
        // held anywhere (as the last pass counted) has room. Jobs of it that other APIs
        // dispatched are not seen here, so a key spread over several APIs can pass its window
        // by one job per other API (the next one from here is counted).
        if fresh.is_empty() && !self.holds(owner) {
            self.inner.publish(queued).await?;
            self.mine().add(owner, &queued.record.id);
            return Ok(());
        }
        let counted = tokio::time::timeout(COUNT_WITHIN, self.pg.window_of(owner, &fresh, window))
            .await
            .unwrap_or_else(|_| {
                self.pg.unreachable_for_a_while();
                Err(StoreError::Unavailable("PostgreSQL did not count within 1 s".into()))
            });
        match counted {
            Ok(w) if w.held || w.dispatched >= window => {
                match self.pg.insert_job(&queued.record, &queued.submission, true).await {
                    Ok(_) => {
                        *self
                            .held
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .entry(owner.to_string())
                            .or_default() += 1;
                        metrics::counter!("wolf_jobs_held_total").increment(1);
                        return Ok(());
                    }
                    Err(e) => {
                        metrics::counter!("wolf_fair_bypasses_total", "reason" => "hold_failed").increment(1);
                        tracing::warn!(error = %e, job = %queued.record.id, "could not hold a job for fair dispatch; queued at once")
                    }
                }
            }
            Ok(_) => {}
            Err(e) => {
                metrics::counter!("wolf_fair_bypasses_total", "reason" => "count_failed").increment(1);
                tracing::warn!(error = %e, "fair dispatch cannot count a key's jobs; queued at once")
            }
        }
        self.inner.publish(queued).await?;
        self.mine().add(owner, &queued.record.id);
        Ok(())
    }

    /// Promote held jobs every [`PROMOTE_EVERY`], and at once when a job ends while some key
    /// has held jobs (as the last pass counted, or held here since): without any, a job's end
    /// costs no query.
    pub async fn promote_forever(self: Arc<Self>, events: Events) {
        use tokio::sync::broadcast::error::RecvError;
        let mut ended = events.subscribe();
        loop {
            if let Err(e) = self.promote().await {
                tracing::debug!(error = %e, "promotion pass failed; trying again");
            }
            let tick = tokio::time::Instant::now() + PROMOTE_EVERY;
            loop {
                match tokio::time::timeout_at(tick, ended.recv()).await {
                    Ok(Ok(id)) => {
                        self.mine().ended(&id);
                        if self.holds_any() {
                            break;
                        }
                    }
                    // Missed ends: their jobs are counted in PostgreSQL until forgotten.
                    Ok(Err(RecvError::Lagged(_))) => {}
                    Ok(Err(RecvError::Closed)) => {
                        tokio::time::sleep_until(tick).await;
                        break;
                    }
                    Err(_) => break,
                }
            }
            // Every end since is answered by the next pass.
            while let Ok(id) = ended.try_recv() {
                self.mine().ended(&id);
            }
        }
    }

    /// One promotion pass: every key with held jobs gets them published up to its window.
    /// Returns how many were published.
    pub async fn promote(&self) -> Result<u64, StoreError> {
        let counts = self.pg.held_by_owner().await?;
        *self.held.lock().unwrap_or_else(|e| e.into_inner()) = counts.iter().cloned().collect();
        let window = if self.enabled {
            let Some(window) = self.window() else { return Ok(0) };
            window
        } else {
            u64::MAX
        };
        let mut published = 0;
        for (owner, _) in counts {
            let fresh = self.mine().ids(&owner);
            let sent = self.pg.promote(&owner, &fresh, window, &self.inner).await?;
            published += sent.len() as u64;
            let mut mine = self.mine();
            for id in &sent {
                mine.add(&owner, id);
            }
        }
        if published > 0 {
            metrics::counter!("wolf_jobs_promoted_total").increment(published);
        }
        Ok(published)
    }
}

/// The jobs this API dispatched (published or promoted), by key, until they end (a done
/// announcement) or [`FRESH_FOR`] passes (an announcement lost: then the key's next job is
/// counted in PostgreSQL anyway, as it is while any of these is here).
#[derive(Debug, Default)]
struct Mine {
    by_owner: HashMap<String, VecDeque<(String, Instant)>>,
    owner_of: HashMap<String, String>,
}

impl Mine {
    fn add(&mut self, owner: &str, id: &str) {
        let q = self.by_owner.entry(owner.to_string()).or_default();
        q.push_back((id.to_string(), Instant::now()));
        self.owner_of.insert(id.to_string(), owner.to_string());
        // Bounded: a key with this many running from here is counted in PostgreSQL anyway.
        while q.len() > 4096 {
            if let Some((old, _)) = q.pop_front() {
                self.owner_of.remove(&old);
            }
        }
    }

    fn ended(&mut self, id: &str) {
        let Some(owner) = self.owner_of.remove(id) else { return };
        if let Some(q) = self.by_owner.get_mut(&owner) {
            q.retain(|(i, _)| i != id);
            if q.is_empty() {
                self.by_owner.remove(&owner);
            }
        }
    }

    /// `owner`'s jobs dispatched from here and not known to have ended.
    fn ids(&mut self, owner: &str) -> Vec<String> {
        let Some(q) = self.by_owner.get_mut(owner) else {
            return Vec::new();
        };
        while q.front().is_some_and(|(_, at)| at.elapsed() > FRESH_FOR) {
            if let Some((old, _)) = q.pop_front() {
                self.owner_of.remove(&old);
            }
        }
        let ids = q.iter().map(|(id, _)| id.clone()).collect();
        if q.is_empty() {
            self.by_owner.remove(owner);
        }
        ids
    }
}

/// A key's jobs as fair dispatch sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Whether it has held jobs.
    pub held: bool,
    /// Its dispatched jobs that have not ended (counted up to the window).
    pub dispatched: u64,
}

/// How many of owner `$1`'s jobs are dispatched and not ended, counted up to `$3` (the
/// window: the count costs the same behind a flood of any size), plus those of `$2` (ids this
/// API published) whose record is not stored yet.
macro_rules! dispatched {
    () => {
        "(SELECT count(*) FROM (SELECT 1 FROM wolf_jobs
            WHERE record->>'owner' = $1 AND status NOT IN ('Completed', 'Failed') AND NOT held LIMIT $3) AS d)
         + (SELECT count(*) FROM unnest($2::text[]) AS f(id) WHERE NOT EXISTS (SELECT 1 FROM wolf_jobs j WHERE j.id = f.id))"
    };
}

impl PgStore {
    /// `owner`'s window: held jobs, and dispatched ones up to `window` (`fresh`: published
    /// jobs whose record may not be here yet).
    pub async fn window_of(&self, owner: &str, fresh: &[String], window: u64) -> Result<Window, StoreError> {
        let limit = i64::try_from(window).unwrap_or(i64::MAX);
        // Through the read breaker: in an outage, admissions stop asking within a second.
        let row = self
            .read(
                sqlx::query(concat!(
                    "SELECT EXISTS (SELECT 1 FROM wolf_jobs WHERE held AND record->>'owner' = $1), ",
                    dispatched!()
                ))
                .bind(owner)
                .bind(fresh)
                .bind(limit)
                .fetch_one(&self.pool),
            )
            .await?;
        Ok(Window {
            held: row.get(0),
            dispatched: u64::try_from(row.get::<i64, _>(1)).unwrap_or(0),
        })
    }

    /// Held jobs by owner.
    pub async fn held_by_owner(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let rows = sqlx::query("SELECT record->>'owner', count(*) FROM wolf_jobs WHERE held GROUP BY 1")
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<Option<String>, _>(0).unwrap_or_default(),
                    u64::try_from(r.get::<i64, _>(1)).unwrap_or(0),
                )
            })
            .collect())
    }

    /// Publish `owner`'s oldest held jobs on `queue` while its window has room; returns their
    /// ids. Nothing when another API is promoting the same key right now.
    async fn promote(
        &self,
        owner: &str,
        fresh: &[String],
        window: u64,
        queue: &JetStreamQueue,
    ) -> Result<Vec<String>, StoreError> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        let mine: bool = sqlx::query("SELECT pg_try_advisory_xact_lock(hashtextextended('wolf-fair:' || $1, 0))")
            .bind(owner)
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .get(0);
        if !mine {
            return Ok(Vec::new());
        }
        let dispatched: i64 = sqlx::query(concat!("SELECT ", dispatched!()))
            .bind(owner)
            .bind(fresh)
            .bind(i64::try_from(window).unwrap_or(i64::MAX))
            .fetch_one(&mut *tx)
            .await
            .map_err(db)?
            .get(0);
        let room = window
            .saturating_sub(u64::try_from(dispatched).unwrap_or(0))
            .min(PROMOTE_BATCH);
        if room == 0 {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT id, record, submission FROM wolf_jobs WHERE held AND record->>'owner' = $1
              ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED",
        )
        .bind(owner)
        .bind(room as i64)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut sent = Vec::with_capacity(rows.len());
        let mut failure = None;
        for r in &rows {
            let id: String = r.get(0);
            let parsed = serde_json::from_value::<JobRecord>(r.get(1))
                .and_then(|record| Ok((record, serde_json::from_value::<Submission>(r.get(2))?)));
            let (record, submission) = match parsed {
                Ok(v) => v,
                Err(e) => {
                    // Never dispatchable: left held and said, rather than blocking its key's
                    // other jobs (the next ones are still promoted).
                    tracing::error!(job = %id, error = %e, "a held job's record does not parse; left held");
                    continue;
                }
            };
            match queue.publish(&Queued { record, submission }).await {
                Ok(()) => sent.push(id),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        sqlx::query("UPDATE wolf_jobs SET held = false WHERE id = ANY($1)")
            .bind(&sent)
            .execute(&mut *tx)
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        match failure {
            // A full queue is no failure of the pass: the rest wait for room.
            Some(StoreError::QueueFull { .. }) | None => Ok(sent),
            Some(e) => Err(e),
        }
    }

    /// Whether `id` is held.
    async fn is_held(&self, id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("SELECT held FROM wolf_jobs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?
            .is_some_and(|r| r.get::<bool, _>(0)))
    }
}

#[async_trait]
impl Queue for FairQueue {
    fn config(&self) -> QueueConfig {
        self.inner.config()
    }

    async fn admit(
        &self,
        record: &JobRecord,
        submission: &Submission,
        idempotency: Option<&Idempotency>,
    ) -> Result<Admission, StoreError> {
        let Some(owner) = record.owner.as_deref().filter(|_| self.enabled) else {
            return self.inner.admit(record, submission, idempotency).await;
        };
        // Without a window (no manager advertises now) a key that has held jobs still queues
        // behind them: a window of one holds every new job while any is held.
        let Some(window) = self.window().or_else(|| self.holds(owner).then_some(1)) else {
            metrics::counter!("wolf_fair_bypasses_total", "reason" => "no_workers_known").increment(1);
            return self.inner.admit(record, submission, idempotency).await;
        };
        let _turn = self.turns.hold(owner).await;
        let queued = Queued {
            record: record.clone(),
            submission: submission.clone(),
        };
        let Some(idem) = idempotency else {
            return self.place(owner, window, &queued).await.map(|()| Admission::New);
        };
        match self.inner.claim(&queued, idem).await? {
            None => match self.place(owner, window, &queued).await {
                Ok(()) => Ok(Admission::New),
                Err(e) => {
                    self.inner.unclaim(idem).await;
                    Err(e)
                }
            },
            Some(first) => {
                // A repeat: queued again unless it is held (then its promotion publishes it; a
                // second copy would run it twice past the duplicate window).
                if !self.pg.is_held(&first.record.id).await.unwrap_or(false) {
                    self.inner.publish(&first).await?;
                }
                Ok(Admission::Existing(Box::new(first.record)))
            }
        }
    }

    async fn backlog(&self, owner: &str, engine: &str) -> Result<Option<Backlog>, StoreError> {
        let held = self
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(owner)
            .copied()
            .unwrap_or(0);
        Ok(self.inner.backlog(owner, engine).await?.map(|b| Backlog {
            ahead: b.ahead + held,
            ..b
        }))
    }

    async fn depth(&self) -> Result<u64, StoreError> {
        let held: u64 = self.held.lock().unwrap_or_else(|e| e.into_inner()).values().sum();
        Ok(self.inner.depth().await? + held)
    }

    async fn lease(&self) -> Result<Option<Delivery>, StoreError> {
        self.inner.lease().await
    }

    async fn ack(&self, job_id: &str) -> Result<(), StoreError> {
        self.inner.ack(job_id).await
    }

    async fn release(&self, job_id: &str, delay: Duration) -> Result<(), StoreError> {
        self.inner.release(job_id, delay).await
    }

    async fn recover(&self) -> Result<u64, StoreError> {
        self.inner.recover().await
    }

    async fn announce_done(&self, job_id: &str, served_ms: Option<f64>) {
        self.inner.announce_done(job_id, served_ms).await
    }

    async fn janitor(&self) -> Result<u64, StoreError> {
        self.inner.janitor().await
    }

    async fn peek(&self, job_id: &str) -> Result<Option<(JobRecord, Submission)>, StoreError> {
        self.inner.peek(job_id).await
    }

    fn offered(&self) -> Option<Arc<crate::engines::Offered>> {
        self.inner.offered()
    }

    async fn progress(&self, job_id: &str) -> Result<(), StoreError> {
        self.inner.progress(job_id).await
    }

    async fn dead_letter(&self, job_id: &str, reason: &str) -> Result<(), StoreError> {
        self.inner.dead_letter(job_id, reason).await
    }

    async fn dead_letters(&self, limit: u64) -> Result<Vec<DeadLetter>, StoreError> {
        self.inner.dead_letters(limit).await
    }
}
