//! Test cases: one program compiled once, then each test run in a fresh sandbox.
//!
//! A [`Suite`] is validated whole before any sandbox is touched (engine, limits of every test,
//! file names). Its compile plan runs the compile step alone and brings back what the compiler
//! wrote ([`Plan::compile_only`]); each test's plan is the run step alone in a work dir holding
//! the source, the submission's files and those artifacts, and nothing an earlier test wrote —
//! it is a new sandbox. A checker program ([`wolf_core::Checker::Testlib`]) is compiled once
//! the same way and run after each test whose program exited 0, in a sandbox of its own, as
//! `checker input output answer` ([`Suite::check`], [`Suite::judge`]). An interactor is
//! compiled once too; for each test it runs beside the program, each in its own sandbox, their
//! stdin and stdout connected live ([`Plan::piped`], [`Suite::interact`],
//! [`Suite::interaction`]). [`Suite::summarize`] turns the tests' outputs into the job's
//! result.

use wolf_core::job::TEST_TEXT_CAP;
use wolf_core::testlib::{self, Judgement};
use wolf_core::{Checker, FileInput, LimitsInput, TestResult};

use crate::language::Registry;
use crate::runner::{Caps, Plan, RequestError, RunOutput, RunRequest, RunResult, Timings};
use crate::sandbox::JobFile;
use crate::verdict::Verdict;

pub use wolf_core::testlib::{CHECKER_FILES, INTERACTOR_FILES};

/// A validated submission with test cases.
#[derive(Debug, Clone)]
pub struct Suite {
    tests: Vec<TestPlan>,
    /// The checker program's plan (compile step included), when there is one.
    checker: Option<Plan>,
    /// The interactor's plan (compile step included, run step piped), when there is one.
    interactor: Option<Box<Plan>>,
    stop_on_first_failure: bool,
}

#[derive(Debug, Clone)]
struct TestPlan {
    name: String,
    /// Compile step included; [`Suite::test`] drops it.
    plan: Plan,
    /// The test's stdin and expected output: a checker program's `input` and `answer`.
    stdin: Vec<u8>,
    expected: Vec<u8>,
}

impl Suite {
    /// Validate `req` and every one of its tests.
    pub fn new(reg: &Registry, caps: &Caps, req: &RunRequest) -> Result<Self, RequestError> {
        let checker = match &req.checker {
            Checker::Testlib {
                code,
                execution_engine,
                files,
                limits,
            } => Some(judge_plan(
                "checker",
                reg,
                caps,
                code,
                execution_engine,
                files,
                *limits,
            )?),
            _ => None,
        };
        let interactor = match &req.interactor {
            Some(i) => {
                let plan = judge_plan(
                    "interactor",
                    reg,
                    caps,
                    &i.code,
                    &i.execution_engine,
                    &i.files,
                    i.limits,
                )?;
                Some(Box::new(plan.piped()))
            }
            None => None,
        };
        let mut tests = Vec::with_capacity(req.tests.len());
        for t in &req.tests {
            let mut one = req.clone();
            one.tests = Vec::new();
            one.stdin = t.stdin.clone();
            // With a checker program or an interactor the test's own verdict ignores the
            // expected output: the judge reads it as its answer file.
            one.expected_output = if checker.is_some() || interactor.is_some() {
                None
            } else {
                t.expected_output.clone()
            };
            if let Some(args) = &t.args {
                one.args = args.clone();
            }
            one.limits = t.limits.or(req.limits);
            let plan = Plan::new(reg, caps, &one)?;
            tests.push(TestPlan {
                name: t.name.clone(),
                // With an interactor the program's stdin and stdout are the interactor's.
                plan: if interactor.is_some() { plan.piped() } else { plan },
                stdin: t.stdin.clone().unwrap_or_default(),
                expected: t.expected_output.clone().unwrap_or_default(),
            });
        }
        Ok(Self {
            tests,
            checker,
            interactor,
            stop_on_first_failure: req.stop_on_first_failure,
        })
    }

    /// The compile step alone, when the language has one.
    pub fn compile(&self) -> Option<Plan> {
        self.tests.first().and_then(|t| t.plan.compile_only())
    }

    /// The checker program's compile step alone, when there is a checker program and its
    /// language compiles.
    pub fn checker_compile(&self) -> Option<Plan> {
        self.checker.as_ref().and_then(Plan::compile_only)
    }

    /// Whether a checker program judges the tests.
    pub fn has_checker(&self) -> bool {
        self.checker.is_some()
    }

    /// Whether a checker program judges `out` (a test whose program exited 0 in its limits).
    pub fn checks(&self, out: &RunOutput) -> bool {
        self.checker.is_some() && out.result.verdict == Verdict::Accepted
    }

    /// The checker program's run for test `i`, whose program wrote `out`: in a work dir that
    /// holds the checker's `artifacts` and the test's input, the output and the answer.
    pub fn check(&self, i: usize, out: &RunOutput, artifacts: &[JobFile]) -> Option<Plan> {
        let t = &self.tests[i];
        let files = [t.stdin.clone(), out.stdout.clone(), t.expected.clone()];
        let files = CHECKER_FILES.iter().zip(files).map(|(name, contents)| JobFile {
            name: name.to_string(),
            contents,
            mode: 0o644,
        });
        Some(self.checker.clone()?.run_only(artifacts).with_files(files.collect()))
    }

    /// Let the checker's run `checker` decide the verdict of the test that wrote `out`.
    pub fn judge(out: &mut RunOutput, checker: &RunOutput) {
        Self::judge_as("checker", out, checker);
    }

    /// The interactor's compile step alone, when there is an interactor whose language
    /// compiles.
    pub fn interactor_compile(&self) -> Option<Plan> {
        self.interactor.as_deref().and_then(Plan::compile_only)
    }

    /// Whether an interactor talks to the program in each test.
    pub fn has_interactor(&self) -> bool {
        self.interactor.is_some()
    }

    /// The interactor's run for test `i` (beside the program's [`Suite::test`], in a sandbox of
    /// its own): its work dir holds its `artifacts`, the test's input and the answer; it runs
    /// as `interactor input output answer` with its stdin and stdout piped to the program's.
    pub fn interact(&self, i: usize, artifacts: &[JobFile]) -> Option<Plan> {
        let t = &self.tests[i];
        let files = [
            (INTERACTOR_FILES[0], t.stdin.clone()),
            (INTERACTOR_FILES[2], t.expected.clone()),
        ];
        let files = files.into_iter().map(|(name, contents)| JobFile {
            name: name.to_string(),
            contents,
            mode: 0o644,
        });
        let plan: Plan = *self.interactor.clone()?;
        Some(plan.run_only(artifacts).with_files(files.collect()))
    }

    /// Decide test `out` from the program's own run and the interactor's beside it, in this
    /// order: the program's own limits (time, memory, output) and anything that kept it from
    /// running; then an interactor that failed (killed, over its limits, exit 3 or one testlib
    /// does not define: InternalError, since the judge failed — and a program reading end of
    /// file from a dead interactor often crashes for it); then the program's runtime error;
    /// then the interactor's exit code, as a checker's. What the interactor wrote to stderr is
    /// the test's message either way.
    pub fn interaction(out: &mut RunOutput, interactor: &RunOutput) {
        let j = Self::judgement_as("interactor", interactor);
        let decides = match out.result.verdict {
            Verdict::Accepted => true,
            Verdict::RuntimeError => j.verdict == Verdict::InternalError,
            _ => false,
        };
        if decides {
            Self::apply(out, j);
        } else {
            out.judgement = Some(Judgement {
                verdict: out.result.verdict,
                score: 0.0,
                message: j.message,
            });
        }
    }

    /// The interactor's compile failure as the job's result, like [`Suite::checker_unusable`].
    pub fn interactor_unusable(compiled: &RunOutput) -> RunOutput {
        let mut out = crate::runner::internal(&crate::SandboxError::Setup(format!(
            "the interactor does not compile: {}",
            compiled.result.compile_output
        )));
        out.result.compile_output = compiled.result.compile_output.clone();
        out
    }

    fn judge_as(role: &str, out: &mut RunOutput, judged: &RunOutput) {
        Self::apply(out, Self::judgement_as(role, judged));
    }

    /// What a judge's program's run says about a test.
    fn judgement_as(role: &str, judged: &RunOutput) -> Judgement {
        let r = &judged.result;
        match (r.verdict, r.exit_code, r.signal) {
            (Verdict::Accepted, _, _) => testlib::judgement_of(role, 0, r.stderr.as_bytes()),
            (Verdict::RuntimeError, Some(code), None) => testlib::judgement_of(role, code, r.stderr.as_bytes()),
            (Verdict::RuntimeError, _, Some(sig)) => testlib::failed(format!("the {role} was killed by signal {sig}")),
            (Verdict::TimeLimitExceeded, ..) => testlib::failed(format!("the {role} exceeded its time limit")),
            (Verdict::MemoryLimitExceeded, ..) => testlib::failed(format!("the {role} exceeded its memory limit")),
            (Verdict::OutputLimitExceeded, ..) => testlib::failed(format!("the {role} exceeded its output limit")),
            (v, ..) => testlib::failed(format!(
                "the {role} did not run ({v:?}): {}",
                r.error.as_deref().unwrap_or("no detail")
            )),
        }
    }

    fn apply(out: &mut RunOutput, j: Judgement) {
        out.result.verdict = j.verdict;
        if j.verdict == Verdict::InternalError {
            out.result.error = j.message.clone();
        }
        out.judgement = Some(j);
    }

    /// The job's result when the checker program does not compile: the submission is not at
    /// fault, so it is an InternalError whose detail is the checker's compiler output.
    pub fn checker_unusable(compiled: &RunOutput) -> RunOutput {
        let mut out = crate::runner::internal(&crate::SandboxError::Setup(format!(
            "the checker does not compile: {}",
            compiled.result.compile_output
        )));
        out.result.compile_output = compiled.result.compile_output.clone();
        out
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
        self.tests[i].plan.clone().run_only(artifacts)
    }

    /// Test `i`'s name.
    pub fn name(&self, i: usize) -> &str {
        &self.tests[i].name
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
            let judged: Option<&Judgement> = o.judgement.as_ref();
            tests.push(TestResult {
                name: self.tests[i].name.clone(),
                verdict: r.verdict,
                exit_code: r.exit_code,
                signal: r.signal,
                cpu_time_ms: r.cpu_time_ms,
                wall_time_ms: r.wall_time_ms,
                memory_kb: r.memory_kb,
                stdout: out_text,
                stderr: err_text,
                truncated: r.truncated || cut_out || cut_err,
                checker_message: judged.and_then(|j| j.message.clone()),
                score: judged.map_or(if accepted { 1.0 } else { 0.0 }, |j| j.score),
                error: r.error.clone(),
                stage: o.stage,
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
            judgement: None,
            stage: None,
        }
    }
}

/// A judge's own program (a checker or an interactor) as a plan of its own: its engine, its
/// limits against the same run caps, its files, argv `input output answer`.
fn judge_plan(
    role: &'static str,
    reg: &Registry,
    caps: &Caps,
    code: &str,
    engine: &str,
    files: &[FileInput],
    limits: Option<LimitsInput>,
) -> Result<Plan, RequestError> {
    let files = files
        .iter()
        .map(|f| Ok((f.name.clone(), f.bytes()?)))
        .collect::<Result<Vec<_>, String>>()
        .map_err(|e| RequestError::Judge(role, Box::new(RequestError::FileName(e))))?;
    let c = RunRequest {
        engine: engine.to_string(),
        code: code.as_bytes().to_vec(),
        files,
        args: CHECKER_FILES.iter().map(|f| f.to_string()).collect(),
        limits: limits.unwrap_or_default().into(),
        ..RunRequest::default()
    };
    Plan::new(reg, caps, &c).map_err(|e| RequestError::Judge(role, Box::new(e)))
}
