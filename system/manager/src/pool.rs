//! What the manager needs from sandboxes, as two traits: a [`Pool`] prepares [`Warm`]
//! sandboxes, a warm sandbox runs one job. The jail implements them ([`wolf_sandbox::Sandboxes`]
//! with its gRPC worker socket); tests put a fake behind them to drive the dispatch loop through
//! crashes, panics and storage outages without root.

use std::os::fd::OwnedFd;
use std::time::Instant;

use async_trait::async_trait;
use wolf_sandbox::runner::{Plan, RunOutput};
use wolf_sandbox::{Prepared, SandboxError, Sandboxes};

/// Makes sandboxes ready for one job each.
pub trait Pool: Send + Sync + 'static {
    /// Prepare one (blocking: the manager calls it on a blocking thread).
    fn prepare(&self) -> Result<Box<dyn Warm>, SandboxError>;
    /// Times the pool had to restart its machinery (the jail's template), for a metric.
    fn restarts(&self) -> u64 {
        0
    }
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
