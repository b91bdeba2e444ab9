//! Test cases: one program compiled once, then each test run in a fresh sandbox.
//!
//! A [`Suite`] is validated whole before any sandbox is touched (engine, limits of every test,
//! file names). Its compile plan runs the compile step alone and brings back what the compiler
//! wrote ([`Plan::compile_only`]); each test's plan is the run step alone in a work dir holding
//! the source, the submission's files and those artifacts, and nothing an earlier test wrote —
//! it is a new sandbox. [`Suite::summarize`] turns the tests' outputs into the job's result.

use wolf_core::TestResult;
use wolf_core::job::TEST_TEXT_CAP;

use crate::language::Registry;
use crate::runner::{Caps, Plan, RequestError, RunOutput, RunRequest, RunResult, Timings};
use crate::sandbox::JobFile;
use crate::verdict::Verdict;

/// A validated submission with test cases.
#[derive(Debug, Clone)]
pub struct Suite {
    /// The plan of each test (compile step included; [`Suite::test`] drops it).
    tests: Vec<(String, Plan)>,
    stop_on_first_failure: bool,
}

impl Suite {
    /// Validate `req` and every one of its tests.
    pub fn new(reg: &Registry, caps: &Caps, req: &RunRequest) -> Result<Self, RequestError> {
        let mut tests = Vec::with_capacity(req.tests.len());
        for t in &req.tests {
            let mut one = req.clone();
            one.tests = Vec::new();
            one.stdin = t.stdin.clone();
            one.expected_output = t.expected_output.clone();
            if let Some(args) = &t.args {
                one.args = args.clone();
            }
            let l = &t.limits;
            let base = req.limits;
            one.limits = crate::limits::LimitRequest {
                cpu_time_ms: l.cpu_time_ms.or(base.cpu_time_ms),
                wall_time_ms: l.wall_time_ms.or(base.wall_time_ms),
                memory_mb: l.memory_mb.or(base.memory_mb),
                pids: l.pids.or(base.pids),
                output_bytes: l.output_bytes.or(base.output_bytes),
            };
            tests.push((t.name.clone(), Plan::new(reg, caps, &one)?));
        }
        Ok(Self {
            tests,
            stop_on_first_failure: req.stop_on_first_failure,
        })
    }

    /// The compile step alone, when the language has one.
    pub fn compile(&self) -> Option<Plan> {
        self.tests.first().and_then(|(_, p)| p.compile_only())
    }

    /// Tests in the suite.
    pub fn len(&self) -> usize {
        self.tests.len()
    }

    /// Whether it has no tests (never, once validated by the API).
    pub fn is_empty(&self) -> bool {
        self.tests.is_empty()
    }

    /// Test `i`'s plan, in a work dir that also holds the compiler's `artifacts`.
    pub fn test(&self, i: usize, artifacts: &[JobFile]) -> Plan {
        self.tests[i].1.clone().run_only(artifacts)
    }

    /// Whether the suite stops after `out` (a test that is not Accepted, when asked).
    pub fn stops_after(&self, out: &RunOutput) -> bool {
        self.stop_on_first_failure && out.result.verdict != Verdict::Accepted
    }

    /// The job's result from the compile step's (if any) and each test's, in order.
    /// `verdict` is the first non-Accepted test's; the resource figures are the largest of any
    /// test; stdout is the test's that decided the verdict (the first failing one, else the
    /// last); `test_outputs` keeps every test's raw stdout.
    pub fn summarize(&self, compile: Option<&RunResult>, outs: Vec<RunOutput>, timings: Timings) -> RunOutput {
        let mut tests = Vec::with_capacity(outs.len());
        let mut test_outputs = Vec::with_capacity(outs.len());
        let decisive = outs
            .iter()
            .position(|o| o.result.verdict != Verdict::Accepted)
            .unwrap_or(outs.len().saturating_sub(1));
        let mut result = outs
            .get(decisive)
            .map(|o| o.result.clone())
            .unwrap_or_else(|| crate::runner::internal(&crate::SandboxError::Setup("no test ran".into())).result);
        let mut stdout = Vec::new();
        for (i, o) in outs.into_iter().enumerate() {
            let r = &o.result;
            result.cpu_time_ms = result.cpu_time_ms.max(r.cpu_time_ms);
            result.wall_time_ms = result.wall_time_ms.max(r.wall_time_ms);
            result.memory_kb = result.memory_kb.max(r.memory_kb);
            result.output_not_utf8 |= r.output_not_utf8;
            let cut = |t: &str| {
                let mut end = t.len().min(TEST_TEXT_CAP);
                while !t.is_char_boundary(end) {
                    end -= 1;
                }
                (t[..end].to_string(), end < t.len())
            };
            let (out_text, cut_out) = cut(&r.stdout);
            let (err_text, cut_err) = cut(&r.stderr);
            let accepted = r.verdict == Verdict::Accepted;
            tests.push(TestResult {
                name: self.tests[i].0.clone(),
                verdict: r.verdict,
                exit_code: r.exit_code,
                signal: r.signal,
                cpu_time_ms: r.cpu_time_ms,
                wall_time_ms: r.wall_time_ms,
                memory_kb: r.memory_kb,
                stdout: out_text,
                stderr: err_text,
                truncated: r.truncated || cut_out || cut_err,
                checker_message: None,
                score: if accepted { 1.0 } else { 0.0 },
                error: r.error.clone(),
            });
            if i == decisive {
                stdout = o.stdout.clone();
            }
            test_outputs.push(o.stdout);
        }
        result.stdout = String::from_utf8_lossy(&stdout).into_owned();
        result.compile_output = compile.map(|c| c.compile_output.clone()).unwrap_or_default();
        result.passed = Some(tests.iter().filter(|t| t.verdict == Verdict::Accepted).count() as u32);
        result.score = Some(tests.iter().map(|t| t.score).sum());
        result.tests = tests;
        result.timings = timings;
        RunOutput {
            result,
            stdout,
            files: Vec::new(),
            test_outputs,
        }
    }
}
