//! Running a submission with test cases: compile once on the worker's warm sandbox, then each
//! test on a fresh sandbox from the pool, the next one prepared while the current test runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use wolf_sandbox::runner::RunOutput;
use wolf_sandbox::suite::Suite;
use wolf_sandbox::{SandboxError, Timings, Verdict};

use crate::pool::{Pool, Warm};

/// Attempts at preparing one test's sandbox before the job counts as a sandbox failure (and is
/// retried like any job whose sandbox failed).
const PREPARE_ATTEMPTS: u32 = 3;

/// Run `suite` starting on `first`. `Err` means a sandbox failed, not the program.
pub(crate) async fn run(
    pool: Arc<dyn Pool>,
    job_id: &str,
    suite: Suite,
    first: Box<dyn Warm>,
    creation_ms: f64,
) -> Result<RunOutput, SandboxError> {
    let started = Instant::now();
    let mut timings = Timings {
        worker_creation: creation_ms,
        ..Default::default()
    };
    let mut next = Some(first);
    let mut artifacts = Vec::new();
    let mut compiled = None;
    if let Some(plan) = suite.compile() {
        let sandbox = next.take().expect("the first sandbox");
        let out = sandbox.run(job_id, plan, creation_ms).await?;
        timings.compile = out.result.timings.compile;
        if out.result.verdict != Verdict::Accepted {
            // CompileError (or the compiler's InternalError) is the job's result.
            let mut out = out;
            out.result.timings = timings;
            out.result.timings.total = ms(started.elapsed()) + creation_ms;
            return Ok(out);
        }
        artifacts = out.files;
        compiled = Some(out.result);
    }
    let mut outs = Vec::with_capacity(suite.len());
    for i in 0..suite.len() {
        let sandbox = match next.take() {
            Some(s) => s,
            None => prepare(&pool).await?,
        };
        // The next test's sandbox is prepared while this one runs (a blocking thread).
        let ahead = (i + 1 < suite.len()).then(|| {
            let pool = pool.clone();
            tokio::task::spawn_blocking(move || pool.prepare())
        });
        let out = sandbox.run(job_id, suite.test(i, &artifacts), 0.0).await;
        if let Some(a) = ahead {
            next = a.await.ok().and_then(Result::ok).filter(|s| s.is_alive());
        }
        let out = out?;
        timings.execution += out.result.timings.execution;
        let stop = suite.stops_after(&out);
        outs.push(out);
        if stop {
            break;
        }
    }
    timings.total = ms(started.elapsed()) + creation_ms;
    Ok(suite.summarize(compiled.as_ref(), outs, timings))
}

async fn prepare(pool: &Arc<dyn Pool>) -> Result<Box<dyn Warm>, SandboxError> {
    let mut last = None;
    for attempt in 0..PREPARE_ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(50 << attempt)).await;
        }
        let pool = pool.clone();
        match tokio::task::spawn_blocking(move || pool.prepare()).await {
            Ok(Ok(s)) => return Ok(s),
            Ok(Err(e)) => last = Some(e),
            Err(e) => last = Some(SandboxError::Setup(format!("prepare thread: {e}"))),
        }
    }
    Err(last.unwrap_or_else(|| SandboxError::Setup("no sandbox for the next test".into())))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
