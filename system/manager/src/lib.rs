//! # wolf-manager
//!
//! The worker pool and the dispatch loop. Each of the N workers keeps one pre-warmed sandbox;
//! only a worker holding an idle sandbox leases a job from the queue (pull-based dispatch), runs
//! it, persists the output and the result, and only then acks. A sandbox serves one job and is
//! destroyed off the critical path while the worker warms its next one.
//!
//! At-least-once: a job whose sandbox died mid-run is released and retried (its `retryCount`
//! grows) up to the queue's `max_attempts`, then marked Failed with the reason. A lease left by a crashed
//! process is voided at startup. A job whose record is already final is acked without running
//! again, so a duplicate delivery never produces a second result.
//!
//! # Layout
//! - [`Manager`]: configuration, the pool, [`Manager::run`]; [`run_manager`] as a service.
//! - [`pool`]: what the dispatch loop needs of a sandbox pool (the fake one in tests).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::watch;
use tracing::Instrument;
use wolf_core::job::{output_key, stderr_key};
use wolf_core::stream::StreamEvent;
use wolf_core::{JobRecord, JobResult, Status, Timings};
use wolf_sandbox::runner::Plan;
use wolf_sandbox::suite::Suite;
use wolf_sandbox::{Caps, Registry, RunRequest, TestRequest};

mod live;
pub mod pool;
mod repl;
pub mod sessions;
mod suite;
pub use pool::{Pool, Spare, Warm, probe_runtime_versions};
pub use suite::run as run_suite;
use wolf_store::{Delivery, Events, Metadata, Objects, Queue, StoreError};

/// Manager settings.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// Workers (pre-warmed sandboxes, jobs in parallel).
    pub workers: usize,
    /// Delay before a released job is offered again.
    pub retry_delay: Duration,
    /// Operator caps on limits.
    pub caps: Caps,
    /// Run the queue's janitor ([`Queue::janitor`]) this often.
    pub janitor_every: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            retry_delay: Duration::from_millis(100),
            caps: Caps::default(),
            janitor_every: Duration::from_secs(5),
        }
    }
}

/// What a delivery runs: one program, or test cases compiled once.
enum Job {
    One(Plan),
    Tests(Suite),
}

impl Job {
    fn new(reg: &'static Registry, caps: &Caps, req: &RunRequest) -> Result<Self, wolf_sandbox::runner::RequestError> {
        if req.tests.is_empty() {
            Plan::new(reg, caps, req).map(Job::One)
        } else {
            Suite::new(reg, caps, req).map(Job::Tests)
        }
    }
}

/// The manager as a service, the same in both modes (`wolf serve` runs it beside the API on the
/// embedded stores, `wolf manager` on the distributed ones): run `manager` until `shutdown`
/// resolves, then let running jobs finish and be persisted for up to `drain`; queued jobs stay
/// queued for the next start.
pub async fn run_manager(manager: Arc<Manager>, shutdown: impl std::future::Future<Output = ()>, drain: Duration) {
    let (stop_tx, stop_rx) = watch::channel(false);
    let task = tokio::spawn(manager.run(stop_rx));
    shutdown.await;
    let _ = stop_tx.send(true);
    if tokio::time::timeout(drain, task).await.is_err() {
        tracing::warn!(
            secs = drain.as_secs(),
            "jobs still running at the end of the drain; their leases bring them back"
        );
    }
}

/// Workers by state, for `/metrics` and `/readyz`.
#[derive(Debug, Default)]
pub struct PoolGauges {
    /// Holding a pre-warmed sandbox, waiting for a job.
    pub idle: AtomicUsize,
    /// Running a job.
    pub busy: AtomicUsize,
    /// Preparing a sandbox.
    pub warming: AtomicUsize,
    /// Jobs currently leased and not yet acked (tests read it).
    pub inflight: AtomicI64,
    /// Workers whose last sandbox preparation failed.
    pub failing: AtomicUsize,
    /// Workers in the pool (set by [`Manager::run`]).
    pub workers: AtomicUsize,
    /// The last preparation failure, for `/readyz`.
    pub last_failure: std::sync::Mutex<Option<String>>,
}

impl PoolGauges {
    /// `Err(why)` while no worker can prepare a sandbox: the pool cannot run a job.
    pub fn readiness(&self) -> Result<(), String> {
        let workers = self.workers.load(Ordering::Relaxed);
        let failing = self.failing.load(Ordering::Relaxed);
        if workers > 0 && failing >= workers {
            let why = self
                .last_failure
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            return Err(format!(
                "no sandbox can be prepared ({failing} of {workers} workers failing): {why}"
            ));
        }
        Ok(())
    }
}

/// The manager.
pub struct Manager {
    meta: Arc<dyn Metadata>,
    objects: Arc<dyn Objects>,
    queue: Arc<dyn Queue>,
    sandboxes: Arc<dyn Pool>,
    /// Sandboxes on each imported runtime's root, by runtime name (engines naming one).
    runtimes: std::collections::BTreeMap<String, Arc<dyn Pool>>,
    registry: &'static Registry,
    cfg: ManagerConfig,
    events: Events,
    /// Pool state.
    pub gauges: Arc<PoolGauges>,
    /// `<host>/<pid>`: names this process's workers in job records.
    node: String,
}

/// One worker counted in a gauge for as long as this lives: a worker task that panics
/// unwinds through it, so the gauges stay true.
struct Held<'a>(&'a AtomicUsize);

impl<'a> Held<'a> {
    fn new(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Self(gauge)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A leased job counted in `inflight` while this lives.
struct Leased<'a>(&'a AtomicI64);

impl Drop for Leased<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A task that ends with its owner (a renewal must not outlive the worker that holds the job).
pub(crate) struct AbortOnDrop(pub(crate) tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn stage(name: &'static str, d_ms: f64) {
    metrics::histogram!("wolf_stage_duration_seconds", "stage" => name).record(d_ms / 1000.0);
}

impl Manager {
    /// A manager over these stores and sandboxes.
    pub fn new(
        meta: Arc<dyn Metadata>,
        objects: Arc<dyn Objects>,
        queue: Arc<dyn Queue>,
        sandboxes: Arc<dyn Pool>,
        registry: &'static Registry,
        cfg: ManagerConfig,
        events: Events,
    ) -> Self {
        Self {
            meta,
            objects,
            queue,
            sandboxes,
            runtimes: Default::default(),
            registry,
            cfg,
            events,
            gauges: Arc::new(PoolGauges::default()),
            node: format!(
                "{}/{}",
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "host".into()),
                std::process::id()
            ),
        }
    }

    /// With sandboxes for the engines on runtimes: `pools` by runtime name.
    pub fn with_runtimes(mut self, pools: std::collections::BTreeMap<String, Arc<dyn Pool>>) -> Self {
        self.runtimes = pools;
        self
    }

    /// Run the pool until `shutdown` turns true; running jobs finish and are persisted first.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        match self.queue.recover().await {
            Ok(n) if n > 0 => tracing::info!(
                jobs = n,
                "voided the leases of a previous process; those jobs run again"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not void old leases"),
        }
        let janitor = {
            let me = self.clone();
            let mut sd = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(me.cfg.janitor_every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = sd.changed() => return,
                    }
                    match me.queue.janitor().await {
                        Ok(0) => {}
                        Ok(n) => tracing::warn!(jobs = n, "janitor queued orphaned jobs again"),
                        Err(e) => tracing::debug!(error = %e, "janitor pass failed; next pass retries"),
                    }
                }
            })
        };
        let mut handles = Vec::new();
        self.gauges.workers.store(self.cfg.workers.max(1), Ordering::Relaxed);
        for i in 0..self.cfg.workers.max(1) {
            let me = self.clone();
            let sd = shutdown.clone();
            handles.push(tokio::spawn(async move { me.supervise(i, sd).await }));
        }
        for h in handles {
            let _ = h.await;
        }
        janitor.abort();
    }

    fn set_gauges(&self) {
        let g = &self.gauges;
        metrics::counter!("wolf_sandbox_template_restarts_total").absolute(self.sandboxes.restarts());
        metrics::gauge!("wolf_workers", "state" => "idle").set(g.idle.load(Ordering::Relaxed) as f64);
        metrics::gauge!("wolf_workers", "state" => "busy").set(g.busy.load(Ordering::Relaxed) as f64);
        metrics::gauge!("wolf_workers", "state" => "warming").set(g.warming.load(Ordering::Relaxed) as f64);
    }

    /// Keep worker `i` alive: a worker task that panicked is started again (counted and
    /// logged), so the pool never shrinks. A job it held is redelivered by its lease.
    async fn supervise(self: Arc<Self>, i: usize, shutdown: watch::Receiver<bool>) {
        loop {
            let me = self.clone();
            let sd = shutdown.clone();
            match tokio::spawn(async move { me.worker(i, sd).await }).await {
                Ok(()) => return,
                Err(e) if e.is_panic() => {
                    metrics::counter!("wolf_worker_restarts_total", "cause" => "panic").increment(1);
                    tracing::error!(worker = i, "a worker task panicked; starting it again");
                    self.set_gauges();
                    if *shutdown.borrow() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(_) => return,
            }
        }
    }

    /// One sandbox for worker `i`, retried with backoff until one is ready (or shutdown). A
    /// cause is logged once when it starts and once when it ends, however long it lasts.
    async fn prepare(&self, i: usize, shutdown: &mut watch::Receiver<bool>) -> Option<(Box<dyn Warm>, f64)> {
        let mut delay = Duration::from_millis(50);
        let mut failing: Option<String> = None;
        loop {
            let warming = Held::new(&self.gauges.warming);
            self.set_gauges();
            let sb = self.sandboxes.clone();
            let started = Instant::now();
            let r = tokio::task::spawn_blocking(move || sb.prepare()).await;
            drop(warming);
            let cause = match r {
                Ok(Ok(p)) => {
                    let creation = ms(started.elapsed());
                    stage("worker_creation", creation);
                    if let Some(c) = failing {
                        self.gauges.failing.fetch_sub(1, Ordering::Relaxed);
                        tracing::info!(worker = i, cause = %c, "sandboxes can be prepared again");
                    }
                    return Some((p, creation));
                }
                Ok(Err(e)) => e.to_string(),
                Err(e) => format!("sandbox preparation panicked: {e}"),
            };
            metrics::counter!("wolf_sandbox_prepare_failures_total").increment(1);
            *self.gauges.last_failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(cause.clone());
            match &failing {
                None => {
                    self.gauges.failing.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(worker = i, cause = %cause, "could not prepare a sandbox; retrying with backoff");
                }
                Some(c) if *c != cause => {
                    tracing::error!(worker = i, cause = %cause, "could not prepare a sandbox (another cause)")
                }
                Some(_) => tracing::debug!(worker = i, cause = %cause, "could not prepare a sandbox"),
            }
            failing = Some(cause);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                if failing.is_some() {
                    self.gauges.failing.fetch_sub(1, Ordering::Relaxed);
                }
                return None;
            }
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }

    /// Worker `i`: warm a sandbox, wait for a job, run it, repeat.
    ///
    /// Waiting for a job may be dropped at shutdown; running and persisting a job must finish.
    async fn worker(&self, i: usize, mut shutdown: watch::Receiver<bool>) {
        let mut warm: Option<(Box<dyn Warm>, f64)> = None;
        // When this worker's previous job ended: if the next lease finds a job at once (a
        // backlog), the time from then to that job's end is one full cycle of the worker (a
        // sandbox prepared, a lease, a run, a result stored), which is what admission by deadline
        // must divide a backlog by; a job's own start to end misses the preparation.
        let mut previous_end: Option<Instant> = None;
        while !*shutdown.borrow() {
            if warm.is_none() {
                warm = self.prepare(i, &mut shutdown).await;
                if warm.is_none() {
                    continue;
                }
            }
            let idle = Held::new(&self.gauges.idle);
            self.set_gauges();
            let delivery = loop {
                match self.queue.lease().await {
                    Ok(Some(d)) => break Some(d),
                    Ok(None) => previous_end = None,
                    Err(e) => tracing::warn!(worker = i, error = %e, "queue unavailable"),
                }
                tokio::select! {
                    _ = self.events.wait_queued() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                    _ = shutdown.changed() => break None,
                }
                if *shutdown.borrow() {
                    break None;
                }
            };
            drop(idle);
            let Some(d) = delivery else { break };
            let leased_at = Instant::now();
            let busy = Held::new(&self.gauges.busy);
            self.gauges.inflight.fetch_add(1, Ordering::Relaxed);
            let leased = Leased(&self.gauges.inflight);
            self.set_gauges();
            let (mut sandbox, mut creation) = warm.take().expect("a warm sandbox");
            if !sandbox.is_alive() {
                // It died while it waited (its template was killed, say): a job must not spend
                // an attempt on it. Prepare another one now.
                metrics::counter!("wolf_worker_restarts_total", "cause" => "dead_while_idle").increment(1);
                tracing::warn!(worker = i, "the warm sandbox had died; preparing another for the job");
                let dead = sandbox;
                tokio::task::spawn_blocking(move || drop(dead));
                match self.prepare(i, &mut shutdown).await {
                    Some((s, c)) => (sandbox, creation) = (s, c),
                    None => {
                        // Shutting down: the job goes back to the queue.
                        let _ = self.queue.release(&d.job_id, Duration::ZERO).await;
                        break;
                    }
                }
            }
            // Must finish: the job is leased; its result is persisted before the ack.
            // The job's span continues the trace of the request that admitted it.
            let span = tracing::info_span!(
                "manager.job",
                job_id = %d.job_id,
                attempt = d.attempt,
                trace_id = tracing::field::Empty
            );
            wolf_telemetry::adopt(&span, d.traceparent.as_deref());
            let unused = self
                .process(d, sandbox, creation, leased_at, i, previous_end)
                .instrument(span)
                .await;
            previous_end = Some(Instant::now());
            warm = unused.map(|s| (s, creation));
            drop((busy, leased));
            self.set_gauges();
        }
        if let Some((sb, _)) = warm {
            let _ = tokio::task::spawn_blocking(move || drop(sb)).await;
        }
    }

    /// Handle one delivery. Returns the sandbox if it was not used (the job needed no run).
    async fn process(
        &self,
        d: Delivery,
        sandbox: Box<dyn Warm>,
        creation_ms: f64,
        leased_at: Instant,
        worker: usize,
        cycle_from: Option<Instant>,
    ) -> Option<Box<dyn Warm>> {
        let id = d.job_id.clone();
        // The job runs from its envelope. Its record is the stored one when the metadata store
        // has it (a finished job's duplicate delivery is acked below); else — the accepting API
        // persists in the background, or the store is down — the envelope's, written now
        // (idempotent) together with the code object: that API may have died right after its
        // answer, and the code must stay readable. The code is written with the output, retried.
        let (queued, sub) = *d.envelope;
        let (record, store_code) = match self.meta.get(&id).await {
            Ok(Some(r)) => (r, false),
            Ok(None) | Err(_) => {
                if let Err(e) = self.meta.insert(&queued, &sub).await {
                    tracing::warn!(job = %id, error = %e, "metadata unavailable; running from the queued copy");
                }
                (queued, true)
            }
        };
        if let Some(t) = &record.trace_id {
            tracing::Span::current().record("trace_id", t.as_str());
        }
        if record.status.is_final() {
            // A duplicate delivery of a job whose result is already persisted.
            metrics::counter!("wolf_redeliveries_total", "outcome" => "already_final").increment(1);
            let _ = self.queue.ack(&id).await;
            self.ended(&id, None).await;
            return Some(sandbox);
        }
        if d.attempt > 1 {
            metrics::counter!("wolf_redeliveries_total", "outcome" => "retried").increment(1);
        }
        let code = sub.code.clone().into_bytes();
        // Checked at admission already: an error here is a record admitted before that check.
        let files = match sub
            .files
            .iter()
            .map(|f| Ok((f.name.clone(), f.bytes()?)))
            .collect::<Result<Vec<_>, String>>()
        {
            Ok(files) => files,
            Err(e) => {
                let engine = sub.execution_engine.clone();
                self.fail(record, format!("cannot run: {e}"), &engine).await;
                return Some(sandbox);
            }
        };
        let mut req = RunRequest {
            engine: sub.execution_engine.clone(),
            code,
            stdin: sub.stdin.clone().map(String::into_bytes),
            args: sub.args.clone(),
            files,
            compiler_options: sub.compiler_options.clone(),
            limits: sub.limits.unwrap_or_default().into(),
            compile_limits: Default::default(),
            expected_output: sub.expected_output.clone().map(String::into_bytes),
            tests: sub
                .tests
                .iter()
                .enumerate()
                .map(|(i, t)| TestRequest {
                    name: t.name.clone().unwrap_or_else(|| format!("test-{}", i + 1)),
                    stdin: t.stdin.clone().map(String::into_bytes),
                    expected_output: t.expected_output.clone().map(String::into_bytes),
                    args: (!t.args.is_empty()).then(|| t.args.clone()),
                    limits: t.limits.unwrap_or_default().into(),
                })
                .collect(),
            stop_on_first_failure: sub.stop_on_first_failure,
            checker: sub.checker.unwrap_or_default(),
            interactor: sub.interactor.clone(),
            output_files: sub.output_files.clone(),
            merge_stderr: sub.merge_stderr,
        };
        if req.tests.is_empty() && (req.checker.is_program() || req.interactor.is_some()) {
            // A checker program or an interactor judges test cases: the top-level stdin and
            // expected output are the one implicit test.
            req.tests.push(TestRequest {
                name: "test-1".into(),
                stdin: req.stdin.take(),
                expected_output: req.expected_output.take(),
                args: None,
                limits: Default::default(),
            });
        }
        let engine = self
            .registry
            .find(&sub.execution_engine)
            .map(|l| l.spec.name.clone())
            .unwrap_or_else(|_| "unknown".into());
        // Plan::new may build a language's artifacts once (the C++ precompiled header): blocking.
        let (registry, caps) = (self.registry, self.cfg.caps);
        let plan = match tokio::task::spawn_blocking(move || Job::new(registry, &caps, &req))
            .await
            .expect("plan thread")
        {
            Ok(p) => p,
            Err(e) => {
                self.fail(record, format!("cannot run: {e}"), &engine).await;
                return Some(sandbox);
            }
        };
        // An engine on a runtime runs on a sandbox of that runtime's root, prepared now; the
        // worker's warm one (the host's root) is kept for its next job.
        let runtime = self
            .registry
            .find(&sub.execution_engine)
            .ok()
            .and_then(|l| l.spec.runtime.clone());
        let (pool, sandbox, spare) = match &runtime {
            None => (self.sandboxes.clone(), sandbox, None),
            Some(rt) => {
                let Some(pool) = self.runtimes.get(rt).cloned() else {
                    self.fail(
                        record,
                        format!("cannot run: runtime {rt} is not on this manager"),
                        &engine,
                    )
                    .await;
                    return Some(sandbox);
                };
                let p = pool.clone();
                let prepared = match tokio::task::spawn_blocking(move || p.prepare()).await {
                    Ok(r) => r.map_err(|e| e.to_string()),
                    Err(e) => Err(e.to_string()),
                };
                match prepared {
                    Ok(on_runtime) => (pool, on_runtime, Some(sandbox)),
                    Err(e) => {
                        tracing::warn!(job = %id, runtime = %rt, error = %e, "no sandbox on the runtime; the job is retried");
                        let _ = self.queue.release(&id, self.cfg.retry_delay).await;
                        return Some(sandbox);
                    }
                }
            }
        };
        let mut timings = record.timings.unwrap_or_default();
        timings.queue_wait =
            ms((Utc::now() - record.creation_time).to_std().unwrap_or_default()) - ms(leased_at.elapsed());
        timings.worker_creation = creation_ms;
        stage("queue_wait", timings.queue_wait);
        let started = Utc::now();
        let attempt = wolf_core::Attempt {
            attempt: d.attempt,
            worker: format!("{}/w{worker}", self.node),
            started_at: started,
        };
        // Status Running is written while the job runs, not before it: the write is off the
        // job's path. It is awaited before any later write of this record, so it never lands
        // after the final one.
        let marking = {
            let (meta, id, attempt) = (self.meta.clone(), id.clone(), attempt.clone());
            tokio::spawn(
                async move {
                    if let Err(e) = meta.mark_running(&id, &attempt, timings).await {
                        tracing::warn!(job = %id, error = %e, "could not mark running");
                    }
                }
                .in_current_span(),
            )
        };
        // The final write keeps the stored attempts when they are more complete than these.
        let mut record = record;
        record.attempts.push(attempt);
        timings.worker_acquire = ms(leased_at.elapsed());
        stage("worker_acquire", timings.worker_acquire);
        // Keep the lease alive while the job runs (both queues: a third of the lease), so a
        // long job is not offered to another worker. Stopped when dropped: a worker that
        // panics mid-job stops renewing, and its lease brings the job back.
        let ticker = {
            let queue = self.queue.clone();
            let id = id.clone();
            let every = self.queue.config().lease / 3;
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let _ = queue.progress(&id).await;
                }
            }))
        };
        let run_span = tracing::info_span!("worker.run", worker = %record.attempts.last().map(|a| a.worker.as_str()).unwrap_or(""));
        let outcome = match plan {
            // Streamed live: one run's output (and an interactive job's stdin from its
            // client), or each test's output under its `test` stage.
            Job::One(plan) => {
                let interactive = record.interactive;
                live::run(
                    &self.events.streams,
                    &id,
                    interactive,
                    sandbox,
                    plan.streamed(interactive),
                    creation_ms,
                )
                .instrument(run_span.clone())
                .await
            }
            Job::Tests(s) => {
                suite::run(pool, &self.events.streams, &id, s, sandbox, creation_ms)
                    .instrument(run_span.clone())
                    .await
            }
        };
        let _ = marking.await;
        if let Ok(o) = &outcome {
            // The worker has no network to export from: its steps are recorded here, under
            // the worker's span, from the durations it reported (ending now).
            let _in_run = run_span.enter();
            let end = std::time::SystemTime::now();
            let t = &o.result.timings;
            let exec_start = end - Duration::from_secs_f64(t.execution.max(0.0) / 1000.0);
            if t.compile > 0.0 {
                let compile_start = exec_start - Duration::from_secs_f64(t.compile / 1000.0);
                wolf_telemetry::record_span("worker.compile", compile_start, exec_start, vec![]);
            }
            let verdict = format!("{:?}", o.result.verdict);
            wolf_telemetry::record_span("worker.execution", exec_start, end, vec![("verdict", verdict)]);
        }
        drop(ticker);
        let out = match outcome {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(job = %id, attempt = d.attempt, error = %e, "worker died mid-job");
                if d.attempt >= self.queue.config().max_attempts {
                    let mut rec = record;
                    rec.retry_count = d.attempt.saturating_sub(1);
                    self.fail(
                        rec,
                        format!("the sandbox failed on each of {} attempts: {e}", d.attempt),
                        &engine,
                    )
                    .await;
                } else if let Err(e) = self.queue.release(&id, self.cfg.retry_delay).await {
                    tracing::warn!(job = %id, error = %e, "could not release; the lease will expire");
                }
                return spare;
            }
        };
        let r = &out.result;
        let (exit_code, signal, verdict) = (r.exit_code, r.signal, format!("{:?}", r.verdict));
        self.events
            .streams
            .publish(&id, |seq| StreamEvent::Exit {
                seq,
                exit_code,
                signal,
                verdict,
            })
            .await;
        timings.compile = out.result.timings.compile;
        timings.execution = out.result.timings.execution;
        stage("compile", timings.compile);
        stage("execution", timings.execution);
        // Persist output, then the result, then ack.
        let storage_started = Instant::now();
        let stdout = out.stdout;
        let output_hash = wolf_core::hash::sha256_hex(&stdout);
        let mut rec = record;
        // The result is in hand: storage outages are waited out here (with in-progress acks so
        // the queue does not redeliver), never by running the job again.
        let stderr_bytes = out.result.stderr.clone().into_bytes();
        let code_bytes = store_code.then(|| sub.code.clone().into_bytes());
        self.persist(&id, "output", || async {
            if let Some(code) = &code_bytes {
                self.objects.put(&wolf_core::job::code_key(&id), code.clone()).await?;
            }
            self.objects.put(&output_key(&id), stdout.clone()).await?;
            for f in &out.files {
                self.objects
                    .put(&wolf_core::job::output_file_key(&id, &f.name), f.contents.clone())
                    .await?;
            }
            for (n, o) in out.test_outputs.iter().enumerate() {
                self.objects
                    .put(&wolf_core::job::test_output_key(&id, n), o.clone())
                    .await?;
            }
            // stderr is also in the record; the object exists only when there is some.
            if !stderr_bytes.is_empty() {
                self.objects.put(&stderr_key(&id), stderr_bytes.clone()).await?;
            }
            Ok(())
        })
        .await;
        let end = Utc::now();
        rec.status = Status::Completed;
        rec.start_time = Some(started);
        rec.end_time = Some(end);
        rec.retry_count = d.attempt.saturating_sub(1);
        rec.output_path = Some(output_key(&id));
        rec.output_hash = Some(output_hash);
        rec.result = Some(JobResult::from(&out.result));
        timings.storage = ms(storage_started.elapsed());
        timings.total = ms((end - rec.creation_time).to_std().unwrap_or_default());
        rec.timings = Some(timings);
        self.persist(&id, "result", || async { self.meta.finish(&rec).await.map(drop) })
            .await;
        if let Err(e) = self.queue.ack(&id).instrument(tracing::info_span!("queue.ack")).await {
            // The result is stored; a redelivery will find it final and only ack.
            tracing::warn!(job = %id, error = %e, "ack failed after the result was stored");
        }
        stage("storage", timings.storage);
        stage("end_to_end", timings.total);
        for t in &out.result.tests {
            metrics::counter!("wolf_tests_total", "verdict" => format!("{:?}", t.verdict)).increment(1);
        }
        let verdict = format!("{:?}", out.result.verdict);
        tracing::debug!(verdict = %verdict, total_ms = timings.total, "job completed");
        metrics::counter!("wolf_jobs_total", "status" => "Completed", "verdict" => verdict, "engine" => engine)
            .increment(1);
        // After an idle wait, what the record tells: the run and the preparation of the sandbox
        // it took, the cycle's two large parts (what a backlog will see of this worker).
        let served = cycle_from.map(|t| ms(t.elapsed())).or(rec.time_on_worker_ms());
        self.end_stream(rec).await;
        self.ended(&id, served).await;
        spare
    }

    /// Retry `write` until it succeeds, with backoff, telling the queue the job is in progress.
    async fn persist<F, Fut>(&self, id: &str, what: &str, write: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<(), StoreError>>,
    {
        let span = match what {
            "output" => tracing::info_span!("storage.output_put"),
            "result" => tracing::info_span!("storage.result_write"),
            _ => tracing::info_span!("storage.write", what),
        };
        let _ = async {
            let mut delay = Duration::from_millis(50);
            loop {
                match write().await {
                    Ok(()) => return,
                    Err(e) => {
                        metrics::counter!("wolf_persistence_retries_total", "what" => what.to_string()).increment(1);
                        tracing::warn!(job = %id, error = %e, "storing the {what} failed; retrying");
                        let _ = self.queue.progress(id).await;
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
            }
        }
        .instrument(span)
        .await;
    }

    /// The job's stream ends with its final record.
    async fn end_stream(&self, rec: JobRecord) {
        let id = rec.id.clone();
        let record = Box::new(rec);
        self.events
            .streams
            .publish(&id, |seq| StreamEvent::Result { seq, record })
            .await;
        self.events.streams.close(&id);
    }

    async fn fail(&self, mut rec: JobRecord, reason: String, engine: &str) {
        let id = rec.id.clone();
        rec.status = Status::Failed;
        rec.end_time = Some(Utc::now());
        rec.failure_reason = Some(reason);
        let mut t: Timings = rec.timings.unwrap_or_default();
        t.total = ms((Utc::now() - rec.creation_time).to_std().unwrap_or_default());
        rec.timings = Some(t);
        let reason = rec.failure_reason.clone().unwrap_or_default();
        self.persist(&id, "failure", || async { self.meta.finish(&rec).await.map(drop) })
            .await;
        // Kept, inspectable, in the dead-letter store; never silently dropped.
        if let Err(e) = self.queue.dead_letter(&id, &reason).await {
            tracing::warn!(job = %id, error = %e, "could not dead-letter the job");
        }
        metrics::counter!("wolf_dead_letters_total").increment(1);
        metrics::counter!("wolf_jobs_total", "status" => "Failed", "verdict" => "none", "engine" => engine.to_string())
            .increment(1);
        self.end_stream(rec).await;
        self.ended(&id, None).await;
    }

    /// Tell every waiting request that the job has ended, and admission (of every API) how long
    /// it held its worker, when it ran to its end.
    async fn ended(&self, id: &str, served_ms: Option<f64>) {
        if let Some(t) = served_ms {
            self.events.served(t);
        }
        self.events.finished(id);
        self.queue.announce_done(id, served_ms).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_is_not_ready_only_while_every_worker_fails_to_prepare() {
        let g = PoolGauges::default();
        assert!(g.readiness().is_ok(), "no pool yet");
        g.workers.store(2, Ordering::Relaxed);
        assert!(g.readiness().is_ok());
        g.failing.store(1, Ordering::Relaxed);
        assert!(g.readiness().is_ok(), "one worker can still prepare");
        g.failing.store(2, Ordering::Relaxed);
        *g.last_failure.lock().unwrap() = Some("spawn sandbox init: EAGAIN".into());
        let why = g.readiness().unwrap_err();
        assert!(why.contains("2 of 2") && why.contains("EAGAIN"), "{why}");
    }

    #[test]
    fn a_held_gauge_is_released_when_its_task_panics() {
        let g = AtomicUsize::new(0);
        let r = std::panic::catch_unwind(|| {
            let _held = Held::new(&g);
            assert_eq!(g.load(Ordering::Relaxed), 1);
            panic!("worker bug");
        });
        assert!(r.is_err());
        assert_eq!(g.load(Ordering::Relaxed), 0);
    }
}
