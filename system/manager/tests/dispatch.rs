//! The dispatch loop against a fake sandbox pool, on the real embedded store in a temporary
//! directory, without root: sandboxes that crash, panic, die while warm or cannot be prepared,
//! an object store that is down for a while, and a duplicate delivery of a finished job.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::watch;
use wolf_core::{JobRecord, Registry, Status, Submission};
use wolf_manager::{Manager, ManagerConfig, Pool, Warm};
use wolf_sandbox::runner::{Plan, RunOutput, RunResult, Timings};
use wolf_sandbox::{SandboxError, Verdict};
use wolf_store::{Events, LocalObjects, Metadata, Objects, Queue, QueueConfig, SqliteStore, StoreError};

/// What the next sandbox does with its job.
#[derive(Debug, Clone)]
enum Act {
    /// Run it: print this.
    Ok(&'static str),
    /// The sandbox dies mid-job.
    Crash,
    /// The code driving it panics.
    Panic,
}

/// A pool whose sandboxes follow a script (then succeed), counting runs.
#[derive(Default)]
struct Fake {
    script: Mutex<VecDeque<Act>>,
    /// Preparations that fail before any succeeds.
    fail_prepares: AtomicUsize,
    runs: Arc<AtomicUsize>,
}

impl Fake {
    fn with(acts: &[Act]) -> Arc<Self> {
        Arc::new(Self {
            script: Mutex::new(acts.iter().cloned().collect()),
            ..Default::default()
        })
    }
}

struct FakeWarm {
    act: Act,
    runs: Arc<AtomicUsize>,
}

impl Pool for Fake {
    fn prepare(&self) -> Result<Box<dyn Warm>, SandboxError> {
        if self
            .fail_prepares
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(SandboxError::Setup("fake: cannot prepare".into()));
        }
        let act = self.script.lock().unwrap().pop_front().unwrap_or(Act::Ok("fine\n"));
        Ok(Box::new(FakeWarm {
            act,
            runs: self.runs.clone(),
        }))
    }
}

#[async_trait]
impl Warm for FakeWarm {
    fn is_alive(&self) -> bool {
        true
    }

    async fn run(self: Box<Self>, _job: &str, _plan: Plan, creation_ms: f64) -> Result<RunOutput, SandboxError> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        match self.act {
            Act::Ok(out) => Ok(RunOutput {
                result: RunResult {
                    verdict: Verdict::Accepted,
                    exit_code: Some(0),
                    signal: None,
                    cpu_time_ms: 1,
                    wall_time_ms: 1,
                    memory_kb: 100,
                    stdout: out.into(),
                    stderr: String::new(),
                    compile_output: String::new(),
                    truncated: false,
                    error: None,
                    timings: Timings {
                        worker_creation: creation_ms,
                        execution: 1.0,
                        ..Default::default()
                    },
                    output_not_utf8: false,
                    tests: Vec::new(),
                    passed: None,
                    score: None,
                    files: Vec::new(),
                    files_refused: Vec::new(),
                },
                stdout: out.as_bytes().to_vec(),
                files: Vec::new(),
                test_outputs: Vec::new(),
                judgement: None,
                stage: None,
            }),
            Act::Crash => Err(SandboxError::Setup("fake: the sandbox died".into())),
            Act::Panic => panic!("fake: a bug while driving the sandbox"),
        }
    }
}

/// Objects that fail their first `failures` writes.
struct Flaky {
    inner: LocalObjects,
    failures: AtomicUsize,
}

#[async_trait]
impl Objects for Flaky {
    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(StoreError::Unavailable("fake: the object store is down".into()));
        }
        self.inner.put(key, data).await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.get(key).await
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        self.inner.delete_prefix(prefix).await
    }
}

struct Rig {
    store: Arc<SqliteStore>,
    objects: Arc<Flaky>,
    events: Events,
    manager: Arc<Manager>,
    stop: watch::Sender<bool>,
    _dir: tempfile::TempDir,
}

async fn rig(pool: Arc<Fake>, object_failures: usize) -> Rig {
    rig_on(tempfile::tempdir().unwrap(), pool, object_failures).await
}

/// The embedded store in `dir`, with a lease short enough for a test to outlive.
async fn store_in(dir: &tempfile::TempDir) -> Arc<SqliteStore> {
    let store = SqliteStore::open(&dir.path().join("wolf.db")).await.unwrap();
    Arc::new(store.with_queue(QueueConfig {
        lease: Duration::from_secs(1),
        ..Default::default()
    }))
}

/// A manager on the data already in `dir`.
async fn rig_on(dir: tempfile::TempDir, pool: Arc<Fake>, object_failures: usize) -> Rig {
    let store = store_in(&dir).await;
    let objects = Arc::new(Flaky {
        inner: LocalObjects::new(dir.path()),
        failures: AtomicUsize::new(object_failures),
    });
    let registry = Registry::builtin(&dir.path().join("cache")).unwrap();
    let events = Events::default();
    let manager = Arc::new(Manager::new(
        store.clone(),
        objects.clone(),
        store.clone(),
        pool,
        registry,
        ManagerConfig {
            workers: 1,
            retry_delay: Duration::from_millis(10),
            janitor_every: Duration::from_secs(3600),
            ..Default::default()
        },
        events.clone(),
    ));
    let (stop, rx) = watch::channel(false);
    tokio::spawn(manager.clone().run(rx));
    Rig {
        store,
        objects,
        events,
        manager,
        stop,
        _dir: dir,
    }
}

impl Rig {
    async fn submit(&self, code: &str) -> String {
        let sub: Submission =
            serde_json::from_value(serde_json::json!({"code": code, "executionEngine": "python"})).unwrap();
        let id = format!("0190c0a0-0000-7000-8000-{:012}", rand_suffix());
        let rec = JobRecord::new(id.clone(), &sub, Utc::now());
        self.store.admit(&rec, &sub, None).await.unwrap();
        self.events.queued();
        id
    }

    async fn final_record(&self, id: &str) -> JobRecord {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(r) = self.store.get(id).await.unwrap()
                && r.status.is_final()
            {
                return r;
            }
            assert!(Instant::now() < deadline, "job {id} not final in time");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn rand_suffix() -> u64 {
    static N: AtomicUsize = AtomicUsize::new(1);
    N.fetch_add(1, Ordering::SeqCst) as u64 + u64::from(std::process::id()) * 1000
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sandbox_that_always_crashes_fails_the_job_after_its_attempts_and_dead_letters_it() {
    let pool = Fake::with(&[Act::Crash, Act::Crash, Act::Crash]);
    let r = rig(pool.clone(), 0).await;
    let id = r.submit("print(1)").await;
    let done = r.final_record(&id).await;
    assert_eq!(done.status, Status::Failed, "{done:?}");
    assert_eq!(done.retry_count, 2);
    assert!(
        done.failure_reason.as_deref().unwrap().contains("3 attempts"),
        "{done:?}"
    );
    assert_eq!(pool.runs.load(Ordering::SeqCst), 3);
    // The dead letter follows the final record (a client sees Failed first).
    let deadline = Instant::now() + Duration::from_secs(10);
    let letters = loop {
        let l = r.store.dead_letters(10).await.unwrap();
        if !l.is_empty() || Instant::now() > deadline {
            break l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].job_id, id);
    assert_eq!(r.store.depth().await.unwrap(), 0, "dead-lettered, not queued");
    // The pool keeps serving.
    let next = r.submit("print(2)").await;
    assert_eq!(r.final_record(&next).await.status, Status::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_then_a_success_completes_once_with_one_retry() {
    let pool = Fake::with(&[Act::Crash, Act::Ok("second time\n")]);
    let r = rig(pool.clone(), 0).await;
    let id = r.submit("print(1)").await;
    let done = r.final_record(&id).await;
    assert_eq!(done.status, Status::Completed, "{done:?}");
    assert_eq!(done.retry_count, 1);
    assert_eq!(done.attempts.len(), 2, "{done:?}");
    let out = r.objects.get(&wolf_core::job::output_key(&id)).await.unwrap();
    assert_eq!(out.as_deref(), Some(&b"second time\n"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_while_driving_a_sandbox_restarts_the_worker_and_the_job_runs_again() {
    let pool = Fake::with(&[Act::Panic, Act::Ok("after the panic\n")]);
    let r = rig(pool.clone(), 0).await;
    let id = r.submit("print(1)").await;
    // The panicked delivery comes back when its lease (1 s here) ends.
    let done = r.final_record(&id).await;
    assert_eq!(done.status, Status::Completed, "{done:?}");
    assert_eq!(pool.runs.load(Ordering::SeqCst), 2);
    // The restarted worker's gauges are true again: nothing is left counted as busy.
    let g = &r.manager.gauges;
    let deadline = Instant::now() + Duration::from_secs(5);
    while g.busy.load(Ordering::SeqCst) != 0 || g.inflight.load(Ordering::SeqCst) != 0 {
        assert!(
            Instant::now() < deadline,
            "busy {} inflight {}",
            g.busy.load(Ordering::SeqCst),
            g.inflight.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let next = r.submit("print(2)").await;
    assert_eq!(r.final_record(&next).await.status, Status::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_is_waited_out_without_running_the_job_again() {
    let pool = Fake::with(&[Act::Ok("kept\n")]);
    let r = rig(pool.clone(), 4).await;
    let id = r.submit("print(1)").await;
    let done = r.final_record(&id).await;
    assert_eq!(done.status, Status::Completed, "{done:?}");
    assert_eq!(done.retry_count, 0);
    assert_eq!(
        pool.runs.load(Ordering::SeqCst),
        1,
        "the result in hand is stored, not recomputed"
    );
    let out = r.objects.get(&wolf_core::job::output_key(&id)).await.unwrap();
    assert_eq!(out.as_deref(), Some(&b"kept\n"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicate_delivery_of_a_finished_job_is_acked_without_running() {
    let pool = Fake::with(&[]);
    // Write a finished record for a queued job before any worker runs.
    let dir = tempfile::tempdir().unwrap();
    let store = store_in(&dir).await;
    let sub: Submission =
        serde_json::from_value(serde_json::json!({"code": "print(1)", "executionEngine": "python"})).unwrap();
    let id = "0190c0a0-0000-7000-8000-00000000dddd".to_string();
    let mut rec = JobRecord::new(id.clone(), &sub, Utc::now());
    store.admit(&rec, &sub, None).await.unwrap();
    rec.status = Status::Completed;
    rec.end_time = Some(Utc::now());
    assert!(store.finish(&rec).await.unwrap());
    drop(store);
    // A manager on that data finds the job queued and its record final.
    let r = rig_on(dir, pool.clone(), 0).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while r.store.depth().await.unwrap() != 0 {
        assert!(Instant::now() < deadline, "the duplicate was never acked");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pool.runs.load(Ordering::SeqCst), 0, "a finished job ran again");
    assert_eq!(r.store.get(&id).await.unwrap().unwrap().status, Status::Completed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_that_cannot_prepare_is_not_ready_until_it_can_then_runs_jobs() {
    let pool = Fake::with(&[]);
    pool.fail_prepares.store(5, Ordering::SeqCst);
    let r = rig(pool.clone(), 0).await;
    // Backoff 50, 100, 200, 400, 800 ms: not ready meanwhile, with the cause.
    tokio::time::sleep(Duration::from_millis(120)).await;
    let why = r.manager.gauges.readiness().unwrap_err();
    assert!(why.contains("cannot prepare"), "{why}");
    let id = r.submit("print(1)").await;
    let done = r.final_record(&id).await;
    assert_eq!(done.status, Status::Completed, "{done:?}");
    assert!(r.manager.gauges.readiness().is_ok());
    assert_eq!(
        done.retry_count, 0,
        "a job waits for a sandbox; it is not failed for want of one"
    );
}
