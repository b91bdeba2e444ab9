//! Running a submission with test cases: compile once on the worker's warm sandbox, then each
//! test on a fresh sandbox from the pool, the next one prepared while the current test runs.
//! A checker program is compiled once too, on a sandbox of its own, and judges each test whose
//! program exited 0 on yet another fresh sandbox: nothing of the program's run can reach it
//! but the output it wrote. An interactor is compiled once as well and runs beside each test's
//! program, on a sandbox of its own, the two connected by two pipes whose ends each init
//! receives (the programs themselves keep their own pipes; the inits relay).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wolf_sandbox::runner::RunOutput;
use wolf_sandbox::suite::Suite;
use wolf_sandbox::{SandboxError, Timings, Verdict};

use wolf_store::Streams;

use crate::pool::{Pool, Warm};

/// Attempts at preparing one test's sandbox before the job counts as a sandbox failure (and is
/// retried like any job whose sandbox failed).
const PREPARE_ATTEMPTS: u32 = 3;

/// Run `suite` starting on `first`. `Err` means a sandbox failed, not the program.
pub async fn run(
    pool: Arc<dyn Pool>,
    streams: &Streams,
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
    // The tests' sandboxes are prepared while the compile steps run.
    let mut ahead = Ahead::new(pool.clone(), None);
    // The job's stream: stages (compile, then `test` named per test) and each test's output
    // as it is written (an interactive test's output goes to its interactor, not here).
    let _ = streams.open(job_id, false).await;
    if let Some(plan) = suite.compile() {
        crate::live::stage(streams, job_id, "compile", None).await;
        let sandbox = next.take().expect("the first sandbox");
        ahead.top_up(suite.len());
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
    ahead.first = next.take();
    let per_test = 1 + usize::from(suite.has_checker() || suite.has_interactor());
    let mut checker_artifacts = Vec::new();
    if let Some(plan) = suite.checker_compile() {
        let out = ahead.run(job_id, plan, suite.len() * per_test).await?;
        timings.compile += out.result.timings.compile;
        if out.result.verdict != Verdict::Accepted {
            let mut out = Suite::checker_unusable(&out);
            out.result.timings = timings;
            out.result.timings.total = ms(started.elapsed()) + creation_ms;
            return Ok(out);
        }
        checker_artifacts = out.files;
    }
    let mut interactor_artifacts = Vec::new();
    if let Some(plan) = suite.interactor_compile() {
        let out = ahead.run(job_id, plan, suite.len() * per_test).await?;
        timings.compile += out.result.timings.compile;
        if out.result.verdict != Verdict::Accepted {
            let mut out = Suite::interactor_unusable(&out);
            out.result.timings = timings;
            out.result.timings.total = ms(started.elapsed()) + creation_ms;
            return Ok(out);
        }
        interactor_artifacts = out.files;
    }
    let mut outs = Vec::with_capacity(suite.len());
    // The execution stage is the tests' whole span as seen here (each sandbox, program and
    // checker), so the timeline's test bars fill it.
    let tests_started = Instant::now();
    for i in 0..suite.len() {
        let test_started = tests_started.elapsed();
        let left = (suite.len() - i) * per_test;
        let mut out = match suite.interact(i, &interactor_artifacts) {
            Some(interactor) => {
                crate::live::stage(streams, job_id, "test", Some(suite.name(i))).await;
                let program = ahead.take(left - 1).await?;
                let judge = ahead.take(left - 2).await?;
                let (mut out, judged) =
                    interactive(job_id, program, suite.test(i, &artifacts), judge, interactor).await?;
                Suite::interaction(&mut out, &judged);
                out
            }
            None => {
                let sandbox = ahead.take(left - 1).await?;
                crate::live::test(streams, job_id, suite.name(i), sandbox, suite.test(i, &artifacts)).await?
            }
        };
        let mut checker_ms = None;
        if suite.checks(&out)
            && let Some(plan) = suite.check(i, &out, &checker_artifacts)
        {
            let checking = Instant::now();
            let judged = ahead.run(job_id, plan, (suite.len() - i - 1) * per_test).await?;
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

/// Sandboxes prepared ahead of the tests that need them, [`PREPARE_AHEAD`] at a time on
/// blocking threads: preparing one (namespaces, mounts, cgroups) takes longer than most tests
/// run, so one at a time would leave the tests waiting on it. A sandbox prepared and not
/// needed is destroyed when its task ends.
struct Ahead {
    pool: Arc<dyn Pool>,
    first: Option<Box<dyn Warm>>,
    queue: std::collections::VecDeque<tokio::task::JoinHandle<Result<Box<dyn Warm>, SandboxError>>>,
}

/// Sandboxes in preparation at once for one suite (this machine kind has two cores).
const PREPARE_AHEAD: usize = 2;

impl Ahead {
    fn new(pool: Arc<dyn Pool>, first: Option<Box<dyn Warm>>) -> Self {
        Self {
            pool,
            first,
            queue: Default::default(),
        }
    }

    /// Run `plan` on the next prepared sandbox, keeping up to [`PREPARE_AHEAD`] of the
    /// `remaining` sandboxes still needed after it in preparation meanwhile.
    async fn run(
        &mut self,
        job_id: &str,
        plan: wolf_sandbox::runner::Plan,
        remaining: usize,
    ) -> Result<RunOutput, SandboxError> {
        self.take(remaining).await?.run(job_id, plan, 0.0).await
    }

    /// The next prepared sandbox, topping up as [`Ahead::run`] does.
    async fn take(&mut self, remaining: usize) -> Result<Box<dyn Warm>, SandboxError> {
        let sandbox = match self.first.take() {
            Some(s) => Some(s),
            None => match self.queue.pop_front() {
                Some(h) => h.await.ok().and_then(Result::ok).filter(|s| s.is_alive()),
                None => None,
            },
        };
        let sandbox = match sandbox {
            Some(s) => s,
            None => prepare(&self.pool).await?,
        };
        self.top_up(remaining);
        Ok(sandbox)
    }

    /// Start preparing sandboxes until [`PREPARE_AHEAD`] (or `remaining`) are on their way.
    fn top_up(&mut self, remaining: usize) {
        while self.queue.len() < remaining.min(PREPARE_AHEAD) {
            let pool = self.pool.clone();
            self.queue
                .push_back(tokio::task::spawn_blocking(move || pool.prepare()));
        }
    }
}

/// Run a test's program and its interactor at once, each on its own sandbox, the program's
/// stdout piped to the interactor's stdin and the interactor's stdout to the program's stdin.
/// Each ends by its own limits: a side that never writes, or stops reading, leaves the other
/// waiting until one of them reaches its wall limit, and then the other sees end of file.
async fn interactive(
    job_id: &str,
    mut program: Box<dyn Warm>,
    plan: wolf_sandbox::runner::Plan,
    mut judge: Box<dyn Warm>,
    interactor: wolf_sandbox::runner::Plan,
) -> Result<(RunOutput, RunOutput), SandboxError> {
    let (to_judge_r, to_judge_w) = wolf_sandbox::protocol::pipe().map_err(SandboxError::Channel)?;
    let (to_program_r, to_program_w) = wolf_sandbox::protocol::pipe().map_err(SandboxError::Channel)?;
    program.pass_stdio(&[&to_program_r, &to_judge_w])?;
    judge.pass_stdio(&[&to_judge_r, &to_program_w])?;
    // Only the two inits may hold the pipes now: an end left open here would keep the other
    // side from ever seeing end of file.
    drop((to_judge_r, to_judge_w, to_program_r, to_program_w));
    let (out, judged) = tokio::join!(program.run(job_id, plan, 0.0), judge.run(job_id, interactor, 0.0));
    Ok((out?, judged?))
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
