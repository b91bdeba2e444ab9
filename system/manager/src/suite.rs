//! Running a submission with test cases: compile once on the worker's warm sandbox, then each
//! test on a fresh sandbox from the pool, the next one prepared while the current test runs.
//! A checker program is compiled once too, on a sandbox of its own, and judges each test whose
//! program exited 0 on yet another fresh sandbox: nothing of the program's run can reach it
//! but the output it wrote.

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
pub async fn run(
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
    let mut checker_artifacts = Vec::new();
    if let Some(plan) = suite.checker_compile() {
        let sandbox = take(&mut next, &pool).await?;
        let out = sandbox.run(job_id, plan, 0.0).await?;
        timings.compile += out.result.timings.compile;
        if out.result.verdict != Verdict::Accepted {
            let mut out = Suite::checker_unusable(&out);
            out.result.timings = timings;
            out.result.timings.total = ms(started.elapsed()) + creation_ms;
            return Ok(out);
        }
        checker_artifacts = out.files;
    }
    let mut outs = Vec::with_capacity(suite.len());
    // The execution stage is the tests' whole span as seen here (each sandbox, program and
    // checker), so the timeline's test bars fill it.
    let tests_started = Instant::now();
    for i in 0..suite.len() {
        let test_started = tests_started.elapsed();
        // A checker's run follows the last test too.
        let more = i + 1 < suite.len() || suite.has_checker();
        let mut out = run_ahead(&pool, &mut next, job_id, suite.test(i, &artifacts), more).await?;
        let mut checker_ms = None;
        if suite.checks(&out)
            && let Some(plan) = suite.check(i, &out, &checker_artifacts)
        {
            let checking = Instant::now();
            let judged = run_ahead(&pool, &mut next, job_id, plan, i + 1 < suite.len()).await?;
            checker_ms = Some(ms(checking.elapsed()));
            Suite::judge(&mut out, &judged);
        }
        out.stage = Some(wolf_core::TestStage {
            start_ms: ms(test_started),
            duration_ms: ms(tests_started.elapsed() - test_started),
            checker_ms,
        });
        let stop = suite.stops_after(&out);
        outs.push(out);
        if stop {
            break;
        }
    }
    timings.execution = ms(tests_started.elapsed());
    timings.total = ms(started.elapsed()) + creation_ms;
    Ok(suite.summarize(compiled.as_ref(), outs, timings))
}

/// Run `plan` on the prepared sandbox in `next` (or a new one), preparing the next one while
/// it runs when `more` work follows.
async fn run_ahead(
    pool: &Arc<dyn Pool>,
    next: &mut Option<Box<dyn Warm>>,
    job_id: &str,
    plan: wolf_sandbox::runner::Plan,
    more: bool,
) -> Result<RunOutput, SandboxError> {
    let sandbox = take(next, pool).await?;
    // Prepared on a blocking thread while this one runs.
    let ahead = more.then(|| {
        let pool = pool.clone();
        tokio::task::spawn_blocking(move || pool.prepare())
    });
    let out = sandbox.run(job_id, plan, 0.0).await;
    if let Some(a) = ahead {
        *next = a.await.ok().and_then(Result::ok).filter(|s| s.is_alive());
    }
    out
}

async fn take(next: &mut Option<Box<dyn Warm>>, pool: &Arc<dyn Pool>) -> Result<Box<dyn Warm>, SandboxError> {
    match next.take() {
        Some(s) => Ok(s),
        None => prepare(pool).await,
    }
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
