//! What the manager needs from sandboxes, as two traits: a [`Pool`] prepares [`Warm`]
//! sandboxes, a warm sandbox runs one job. The jail implements them ([`wolf_sandbox::Sandboxes`]
//! with its gRPC worker socket); tests put a fake behind them to drive the dispatch loop through
//! crashes, panics and storage outages without root.

use std::os::fd::OwnedFd;
use std::time::Instant;

use async_trait::async_trait;
use wolf_sandbox::runner::{Plan, RunOutput};
use wolf_sandbox::sandbox::JobFile;
use wolf_sandbox::{Prepared, SandboxError, Sandboxes};

/// Makes sandboxes ready for one job each.
pub trait Pool: Send + Sync + 'static {
    /// Prepare one (blocking: the manager calls it on a blocking thread).
    fn prepare(&self) -> Result<Box<dyn Warm>, SandboxError>;
    /// Times the pool had to restart its machinery (the jail's template), for a metric.
    fn restarts(&self) -> u64 {
        0
    }
    /// A session's sandbox, which takes job after job in one work dir (blocking).
    fn prepare_session(&self) -> Result<Box<dyn SessionBox>, SandboxError> {
        Err(SandboxError::InvalidJob("this pool keeps no sessions".into()))
    }
}

/// A session's sandbox: job after job in the same work dir, until dropped.
#[async_trait]
pub trait SessionBox: Send + 'static {
    /// Whether its process still lives.
    fn is_alive(&self) -> bool;
    /// Run `plan` in it (its files replace those of the same name). `Err` means the sandbox
    /// failed, not the program.
    async fn run(&mut self, job_id: &str, plan: &Plan) -> Result<RunOutput, SandboxError>;
    /// Write `files` into its work dir.
    async fn put(&mut self, job_id: &str, files: Vec<JobFile>) -> Result<(), SandboxError>;
    /// Read `path` from its work dir: `None` when it is not a regular file there (or too large).
    async fn get(&mut self, job_id: &str, path: &str) -> Result<Option<Vec<u8>>, SandboxError>;
    /// Give its next job live stdio (as [`Warm::pass_stdio`]).
    fn pass_stdio(&mut self, fds: &[&OwnedFd]) -> Result<(), SandboxError>;
}

/// A sandbox ready for one job.
#[async_trait]
pub trait Warm: Send + 'static {
    /// Whether it can still take its job (its process may have died while it waited).
    fn is_alive(&self) -> bool;
    /// Whether it takes live stdio ([`Warm::pass_stdio`]); a job on one that does not runs
    /// unstreamed.
    fn takes_stdio(&self) -> bool {
        false
    }
    /// Give the job live stdio (its live step's descriptors, in the order
    /// [`wolf_sandbox::protocol::Live`] names them), before [`Warm::run`].
    fn pass_stdio(&mut self, fds: &[&OwnedFd]) -> Result<(), SandboxError> {
        let _ = fds;
        Err(SandboxError::InvalidJob("this sandbox takes no live stdio".into()))
    }
    /// Run the job, then destroy the sandbox (off the job's path). `Err` means the sandbox
    /// failed, not the program: the job is retried elsewhere.
    async fn run(self: Box<Self>, job_id: &str, plan: Plan, creation_ms: f64) -> Result<RunOutput, SandboxError>;
}

impl Pool for Sandboxes {
    fn prepare(&self) -> Result<Box<dyn Warm>, SandboxError> {
        Ok(Box::new(Sandboxes::prepare(self)?))
    }

    fn restarts(&self) -> u64 {
        self.template_restarts()
    }

    fn prepare_session(&self) -> Result<Box<dyn SessionBox>, SandboxError> {
        Ok(Box::new(Sandboxes::prepare_session(self)?))
    }
}

/// One job frame on a session's sandbox, through its job server.
async fn session_call(
    sandbox: &mut Prepared,
    job_id: &str,
    files: &[JobFile],
    steps: &[wolf_sandbox::sandbox::Step],
    collect: Option<wolf_sandbox::protocol::Collect>,
) -> Result<wolf_sandbox::sandbox::JobOutcome, SandboxError> {
    let socket = sandbox
        .socket()
        .map(ToOwned::to_owned)
        .ok_or_else(|| SandboxError::InvalidJob("a session's sandbox serves on a worker socket".into()))?;
    let (spec, blobs) = sandbox.job_spec(files, steps, collect)?;
    let (report, out) = wolf_worker::client::run(&socket, sandbox.token(), job_id, &spec, blobs)
        .await
        .map_err(|e| SandboxError::Setup(e.to_string()))?;
    if let Some(e) = &report.error {
        return Err(SandboxError::Setup(e.clone()));
    }
    wolf_sandbox::sandbox::outputs_from_report(report, out)
}

#[async_trait]
impl SessionBox for Prepared {
    fn is_alive(&self) -> bool {
        Prepared::is_alive(self)
    }

    async fn run(&mut self, job_id: &str, plan: &Plan) -> Result<RunOutput, SandboxError> {
        let started = Instant::now();
        let (files, steps) = plan.parts();
        let outcome = session_call(self, job_id, files, steps, plan.collect()).await?;
        Ok(plan.finish(outcome, 0.0, ms(started.elapsed())))
    }

    async fn put(&mut self, job_id: &str, files: Vec<JobFile>) -> Result<(), SandboxError> {
        session_call(self, job_id, &files, &[], None).await.map(drop)
    }

    fn pass_stdio(&mut self, fds: &[&OwnedFd]) -> Result<(), SandboxError> {
        Prepared::pass_stdio(self, fds)
    }

    async fn get(&mut self, job_id: &str, path: &str) -> Result<Option<Vec<u8>>, SandboxError> {
        let collect = wolf_sandbox::protocol::Collect {
            max_files: 1,
            max_bytes: wolf_core::job::MAX_OUTPUT_FILE_BYTES,
            patterns: vec![path.to_string()],
            max_file_bytes: wolf_core::job::MAX_OUTPUT_FILE_BYTES,
        };
        let outcome = session_call(self, job_id, &[], &[], Some(collect)).await?;
        Ok(outcome.files.into_iter().find(|f| f.name == path).map(|f| f.contents))
    }
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[async_trait]
impl Warm for Prepared {
    fn is_alive(&self) -> bool {
        Prepared::is_alive(self)
    }

    fn takes_stdio(&self) -> bool {
        true
    }

    fn pass_stdio(&mut self, fds: &[&OwnedFd]) -> Result<(), SandboxError> {
        Prepared::pass_stdio(self, fds)
    }

    async fn run(self: Box<Self>, job_id: &str, plan: Plan, creation_ms: f64) -> Result<RunOutput, SandboxError> {
        let mut sandbox = *self;
        // The manager's sandboxes serve their job over gRPC on a Unix socket
        // (`SandboxConfig::worker_socket_dir`); `wolf run --tests` builds its pool without one
        // and drives each sandbox's socketpair itself, on a blocking thread.
        let started = Instant::now();
        let outcome = match sandbox.socket().map(ToOwned::to_owned) {
            Some(socket) => {
                let (files, steps) = plan.parts();
                match sandbox.job_spec(files, steps, plan.collect()) {
                    Ok((spec, blobs)) => {
                        match wolf_worker::client::run(&socket, sandbox.token(), job_id, &spec, blobs).await {
                            Ok((report, out)) => wolf_sandbox::sandbox::outputs_from_report(report, out)
                                .map(|o| plan.finish(o, creation_ms, ms(started.elapsed()))),
                            Err(e) => Err(SandboxError::Setup(e.to_string())),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            None => {
                let job = tokio::task::spawn_blocking(move || {
                    let out = plan.try_run(&mut sandbox, creation_ms);
                    (out, sandbox)
                });
                let (out, back) = job
                    .await
                    .map_err(|e| SandboxError::Setup(format!("sandbox thread: {e}")))?;
                sandbox = back;
                out
            }
        };
        // Destroying the sandbox (killing its init, reaping, removing cgroups) is off the path.
        tokio::task::spawn_blocking(move || drop(sandbox));
        outcome
    }
}

/// A pool that keeps one sandbox prepared ahead. The engines on an image runtime use one: their
/// jobs do not come to a worker's own warm sandbox (that one is on the host's root), so a job
/// takes this one at once and the next is prepared behind it, on a thread of its own.
pub struct Spare {
    inner: std::sync::Arc<dyn Pool>,
    slot: std::sync::Arc<std::sync::Mutex<Option<Box<dyn Warm>>>>,
    filling: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Spare {
    /// `inner` with one sandbox prepared ahead, the first one starting now.
    pub fn new(inner: std::sync::Arc<dyn Pool>) -> Self {
        let s = Self {
            inner,
            slot: Default::default(),
            filling: Default::default(),
        };
        s.refill();
        s
    }

    fn refill(&self) {
        use std::sync::atomic::Ordering;
        if self.filling.swap(true, Ordering::SeqCst) {
            return;
        }
        let (inner, slot, filling) = (self.inner.clone(), self.slot.clone(), self.filling.clone());
        let spawned = std::thread::Builder::new().name("wolf-spare".into()).spawn(move || {
            match inner.prepare() {
                Ok(sb) => *slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(sb),
                // Left empty: the next job prepares its own, and tries again behind it.
                Err(e) => tracing::warn!(error = %e, "could not prepare a spare sandbox"),
            }
            filling.store(false, Ordering::SeqCst);
        });
        if spawned.is_err() {
            self.filling.store(false, Ordering::SeqCst);
        }
    }
}

impl Pool for Spare {
    fn prepare(&self) -> Result<Box<dyn Warm>, SandboxError> {
        let ready = self
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .filter(|s| s.is_alive());
        let out = match ready {
            Some(s) => Ok(s),
            None => self.inner.prepare(),
        };
        self.refill();
        out
    }

    fn restarts(&self) -> u64 {
        self.inner.restarts()
    }

    fn prepare_session(&self) -> Result<Box<dyn SessionBox>, SandboxError> {
        self.inner.prepare_session()
    }
}
