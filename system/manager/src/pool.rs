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
/// takes this one at once, and the next is prepared on a thread of its own once that job is
/// done (preparing beside the job would take CPU from it).
pub struct Spare(std::sync::Arc<SpareCore>);

struct SpareCore {
    inner: std::sync::Arc<dyn Pool>,
    slot: std::sync::Mutex<Option<Box<dyn Warm>>>,
    filling: std::sync::atomic::AtomicBool,
}

impl Spare {
    /// `inner` with one sandbox prepared ahead, the first one starting now.
    pub fn new(inner: std::sync::Arc<dyn Pool>) -> Self {
        let core = std::sync::Arc::new(SpareCore {
            inner,
            slot: Default::default(),
            filling: Default::default(),
        });
        SpareCore::refill(&core);
        Self(core)
    }
}

impl SpareCore {
    fn refill(me: &std::sync::Arc<Self>) {
        use std::sync::atomic::Ordering;
        if me.filling.swap(true, Ordering::SeqCst) {
            return;
        }
        let core = me.clone();
        let spawned = std::thread::Builder::new().name("wolf-spare".into()).spawn(move || {
            match core.inner.prepare() {
                Ok(sb) => *core.slot.lock().unwrap_or_else(|e| e.into_inner()) = Some(sb),
                // Left empty: the next job prepares its own, and tries again after it.
                Err(e) => tracing::warn!(error = %e, "could not prepare a spare sandbox"),
            }
            core.filling.store(false, Ordering::SeqCst);
        });
        if spawned.is_err() {
            me.filling.store(false, Ordering::SeqCst);
        }
    }
}

impl Pool for Spare {
    fn prepare(&self) -> Result<Box<dyn Warm>, SandboxError> {
        let ready = self
            .0
            .slot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .filter(|s| s.is_alive());
        let sandbox = match ready {
            Some(s) => s,
            None => self.0.inner.prepare()?,
        };
        Ok(Box::new(Taken {
            sandbox: Some(sandbox),
            spare: self.0.clone(),
        }))
    }

    fn restarts(&self) -> u64 {
        self.0.inner.restarts()
    }

    fn prepare_session(&self) -> Result<Box<dyn SessionBox>, SandboxError> {
        self.0.inner.prepare_session()
    }
}

/// A sandbox taken from a [`Spare`]: when its job is done (or it is dropped unused), the
/// spare is prepared again.
struct Taken {
    sandbox: Option<Box<dyn Warm>>,
    spare: std::sync::Arc<SpareCore>,
}

impl Drop for Taken {
    fn drop(&mut self) {
        SpareCore::refill(&self.spare);
    }
}

#[async_trait]
impl Warm for Taken {
    fn is_alive(&self) -> bool {
        self.sandbox.as_ref().is_some_and(|s| s.is_alive())
    }

    fn takes_stdio(&self) -> bool {
        self.sandbox.as_ref().is_some_and(|s| s.takes_stdio())
    }

    fn pass_stdio(&mut self, fds: &[&OwnedFd]) -> Result<(), SandboxError> {
        match self.sandbox.as_mut() {
            Some(s) => s.pass_stdio(fds),
            None => Err(SandboxError::InvalidJob("the sandbox is gone".into())),
        }
    }

    async fn run(mut self: Box<Self>, job_id: &str, plan: Plan, creation_ms: f64) -> Result<RunOutput, SandboxError> {
        let sandbox = self
            .sandbox
            .take()
            .ok_or_else(|| SandboxError::InvalidJob("the sandbox is gone".into()))?;
        sandbox.run(job_id, plan, creation_ms).await
        // `self` drops here, after the job: the next spare is prepared now.
    }
}

/// Ask each present engine on a runtime for its version, in a sandbox of its runtime's pool
/// (the image's programs never run on the host), and record what it printed in the registry.
/// An engine whose command fails keeps its image as its version, with a warning.
pub async fn probe_runtime_versions(
    registry: &'static wolf_sandbox::Registry,
    pools: &std::collections::BTreeMap<String, std::sync::Arc<dyn Pool>>,
) {
    for lang in registry.all().iter().filter(|l| l.absent.is_none()) {
        let Some(pool) = lang.spec.runtime.as_ref().and_then(|rt| pools.get(rt)) else {
            continue;
        };
        let Some(plan) = Plan::version_probe(registry, lang) else {
            continue;
        };
        let pool = pool.clone();
        let name = lang.spec.name.clone();
        let outcome = match tokio::task::spawn_blocking(move || pool.prepare()).await {
            Ok(Ok(warm)) => warm.run(&format!("version-{name}"), plan, 0.0).await,
            Ok(Err(e)) => Err(e),
            Err(e) => Err(SandboxError::InvalidJob(format!("version probe: {e}"))),
        };
        match outcome {
            Ok(out) if out.result.exit_code == Some(0) => {
                registry.set_version(&lang.spec.name, &String::from_utf8_lossy(&out.stdout));
            }
            Ok(out) => tracing::warn!(
                engine = %lang.spec.name,
                exit = ?out.result.exit_code,
                signal = ?out.result.signal,
                "the version command failed in its runtime; the image stands for the version"
            ),
            Err(e) => tracing::warn!(engine = %lang.spec.name, error = %e, "no sandbox to ask the version in"),
        }
    }
}
