//! A language job on top of a prepared sandbox: write the source, compile (its own step and
//! limits), run, decide the verdict. This is what `wolf run` and the engine's workers call.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::language::{Language, LanguageError, Registry};
use crate::limits::{LimitError, LimitRequest, Limits};
use crate::protocol::Collect;
use crate::sandbox::{JobFile, JobOutcome, Prepared, SandboxError, Step, StepOutput};
use crate::verdict::{self, Judge, Verdict};

/// Cap on `compileOutput` and `stderr` in results, bytes.
pub const DIAGNOSTIC_CAP: usize = 64 * 1024;

pub use wolf_core::limits::Caps;

/// What to run.
#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    /// Engine name or alias.
    pub engine: String,
    /// Source code.
    pub code: Vec<u8>,
    /// stdin of the run step.
    pub stdin: Option<Vec<u8>>,
    /// Extra arguments for the run step.
    pub args: Vec<String>,
    /// Extra files for the work dir.
    pub files: Vec<(String, Vec<u8>)>,
    /// Extra arguments appended to the compile command.
    pub compiler_options: Vec<String>,
    /// Run step limits wished for.
    pub limits: LimitRequest,
    /// Compile step limits wished for.
    pub compile_limits: LimitRequest,
    /// Expected stdout (enables WrongAnswer).
    pub expected_output: Option<Vec<u8>>,
    /// Test cases: compiled once, each run in a fresh sandbox ([`crate::suite::Suite`]).
    pub tests: Vec<TestRequest>,
    /// Stop at the first test that is not Accepted.
    pub stop_on_first_failure: bool,
    /// How stdout is compared with the expected output.
    pub checker: wolf_core::Checker,
    /// An interactor the program talks to in each test ([`crate::suite::Suite`]).
    pub interactor: Option<wolf_core::Interactor>,
    /// Output-file patterns to bring back after the run.
    pub output_files: Vec<String>,
    /// The run step's stderr goes to its stdout.
    pub merge_stderr: bool,
}

/// One test case: what differs from the submission's run step.
#[derive(Debug, Clone, Default)]
pub struct TestRequest {
    /// Its name in the result.
    pub name: String,
    /// stdin.
    pub stdin: Option<Vec<u8>>,
    /// Expected stdout.
    pub expected_output: Option<Vec<u8>>,
    /// Arguments instead of the submission's, when given.
    pub args: Option<Vec<String>>,
    /// Limits; each field given replaces the submission's.
    pub limits: LimitRequest,
}

/// Per-stage timings, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    /// Creating the sandbox (zero when it was pre-warmed off the critical path).
    pub worker_creation: f64,
    /// Compile step, wall.
    pub compile: f64,
    /// Run step, wall.
    pub execution: f64,
    /// Everything `run_job` did.
    pub total: f64,
}

/// The result of a job (the `wolf run` JSON and the job record's `result`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunResult {
    /// The verdict.
    pub verdict: Verdict,
    /// Exit code of the run step (or of the compiler on CompileError).
    pub exit_code: Option<i32>,
    /// Killing signal, if any.
    pub signal: Option<i32>,
    /// CPU time of the run step, ms.
    pub cpu_time_ms: u64,
    /// Wall time of the run step, ms.
    pub wall_time_ms: u64,
    /// Peak memory of the run step, KiB.
    pub memory_kb: u64,
    /// stdout of the run step (lossy UTF-8 here; raw bytes in [`RunOutput::stdout`]).
    pub stdout: String,
    /// stderr of the run step, capped.
    pub stderr: String,
    /// Compiler output, capped.
    pub compile_output: String,
    /// Whether output was cut at a cap.
    pub truncated: bool,
    /// Why it is an InternalError, when it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Stage timings.
    pub timings: Timings,
    /// stdout or stderr was not valid UTF-8 (the text fields replaced it with U+FFFD; the
    /// job's output object keeps the raw bytes). Shown only when true (the `wolf run` shape
    /// stays as it was otherwise).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_not_utf8: bool,
    /// With test cases: each test that ran (see [`wolf_core::JobResult::tests`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<wolf_core::TestResult>,
    /// With test cases: how many were Accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<u32>,
    /// With test cases: the sum of their scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// Output files brought back (their contents are in [`RunOutput::files`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<wolf_core::OutputFile>,
    /// Output files refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_refused: Vec<wolf_core::RefusedOutput>,
}

/// The result plus the raw stdout bytes (stored as the job's output object).
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The result.
    pub result: RunResult,
    /// Raw stdout.
    pub stdout: Vec<u8>,
    /// Files collected from the work dir (a compile step's artifacts, or the output files).
    pub files: Vec<JobFile>,
    /// With test cases: each test's raw stdout, in the order of `result.tests`.
    pub test_outputs: Vec<Vec<u8>>,
    /// A test judged by a checker program: what it decided ([`crate::suite::Suite::judge`]).
    pub judgement: Option<wolf_core::testlib::Judgement>,
    /// A test: when it ran within the suite (set by whoever ran the suite).
    pub stage: Option<wolf_core::TestStage>,
}

impl RunOutput {
    fn of(result: RunResult, stdout: Vec<u8>) -> Self {
        Self {
            result,
            stdout,
            files: Vec::new(),
            test_outputs: Vec::new(),
            judgement: None,
            stage: None,
        }
    }
}

/// Errors that are the request's fault (a 4xx for the API).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Engine unknown or absent.
    #[error(transparent)]
    Language(#[from] LanguageError),
    /// Limits past the caps.
    #[error(transparent)]
    Limits(#[from] LimitError),
    /// Bad extra file names (what is wrong with them).
    #[error("{0}")]
    FileName(String),
    /// A judge's program (`checker` or `interactor`, the first field) is not valid.
    #[error("{0}: {1}")]
    Judge(&'static str, Box<RequestError>),
}

/// A request checked against the registry and caps: ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    files: Vec<JobFile>,
    steps: Vec<Step>,
    has_compile: bool,
    run_limits: Limits,
    expected: Option<Vec<u8>>,
    oom_patterns: Vec<String>,
    checker: wolf_core::Checker,
    /// Files to bring back after the steps.
    collect: Option<Collect>,
    /// Only the compile step runs, and its artifacts come back ([`Plan::compile_only`]).
    compile_only: bool,
}

/// A compiler's output files, at most (the artifacts every test's sandbox receives).
fn artifact_limits() -> Collect {
    Collect {
        max_files: 256,
        max_bytes: 256 << 20,
        patterns: Vec::new(),
        max_file_bytes: 0,
    }
}

impl Plan {
    /// Validate `req` (engine, limits, names) before any sandbox is touched.
    pub fn new(reg: &Registry, caps: &Caps, req: &RunRequest) -> Result<Self, RequestError> {
        let lang: &Language = reg.get(&req.engine)?;
        let run_limits = Limits::resolve(&lang.run_limits, &caps.run, &req.limits)?;
        let compile_limits = Limits::resolve(&lang.compile_limits, &caps.compile, &req.compile_limits)?;
        let mut files = vec![JobFile {
            name: lang.spec.source.clone(),
            contents: req.code.clone(),
            mode: 0o644,
        }];
        let paths = std::iter::once(lang.spec.source.as_str()).chain(req.files.iter().map(|(n, _)| n.as_str()));
        wolf_core::names::check_file_paths(paths).map_err(RequestError::FileName)?;
        for (name, contents) in &req.files {
            files.push(JobFile {
                name: name.clone(),
                contents: contents.clone(),
                mode: 0o644,
            });
        }
        let env = reg.env_for(lang);
        let mut steps = Vec::new();
        if let Some(c) = &lang.spec.compile {
            let mut argv = reg.argv(lang, c, compile_limits.memory_mb);
            argv.extend(req.compiler_options.iter().cloned());
            steps.push(Step {
                name: "compile".into(),
                argv,
                env: env.clone(),
                stdin: None,
                live: None,
                merge_stderr: false,
                limits: compile_limits,
            });
        }
        let mut argv = reg.argv(lang, &lang.spec.run, run_limits.memory_mb);
        argv.extend(req.args.iter().cloned());
        steps.push(Step {
            name: "run".into(),
            argv,
            env,
            stdin: req.stdin.clone(),
            live: None,
            merge_stderr: req.merge_stderr,
            limits: run_limits,
        });
        Ok(Self {
            files,
            has_compile: lang.spec.compile.is_some(),
            steps,
            run_limits,
            expected: req.expected_output.clone(),
            oom_patterns: lang.spec.oom_patterns.clone(),
            // A checker program is the suite's to run ([`crate::suite`]); a plan compares only
            // with a built-in rule.
            checker: if req.checker.is_program() {
                wolf_core::Checker::default()
            } else {
                req.checker.clone()
            },
            collect: (!req.output_files.is_empty()).then(|| Collect {
                max_files: wolf_core::job::MAX_OUTPUT_FILES,
                max_bytes: wolf_core::job::MAX_OUTPUT_BYTES,
                patterns: req.output_files.clone(),
                max_file_bytes: wolf_core::job::MAX_OUTPUT_FILE_BYTES,
            }),
            compile_only: false,
        })
    }

    /// The engine's version command as a plan of one step (stderr merged: some tools print
    /// their version there), within the engine's compile limits and 10 s of wall time. An
    /// engine on a runtime can only be asked inside a sandbox on that root. `None` when it
    /// names no version command.
    pub fn version_probe(reg: &Registry, lang: &Language) -> Option<Plan> {
        if lang.spec.version.is_empty() {
            return None;
        }
        let limits = Limits {
            wall_time_ms: lang.compile_limits.wall_time_ms.min(10_000),
            ..lang.compile_limits
        };
        Some(Self {
            files: Vec::new(),
            steps: vec![Step {
                name: "run".into(),
                argv: reg.argv(lang, &lang.spec.version, limits.memory_mb),
                env: reg.env_for(lang),
                stdin: None,
                live: None,
                merge_stderr: true,
                limits,
            }],
            has_compile: false,
            run_limits: limits,
            expected: None,
            oom_patterns: Vec::new(),
            checker: wolf_core::Checker::default(),
            collect: None,
            compile_only: false,
        })
    }

    /// This plan's compile step alone, bringing back what the compiler wrote (`None` for a
    /// language without one).
    pub fn compile_only(&self) -> Option<Plan> {
        if !self.has_compile {
            return None;
        }
        let mut p = self.clone();
        p.steps.truncate(1);
        p.collect = Some(artifact_limits());
        p.compile_only = true;
        Some(p)
    }

    /// This plan's run step alone, in a work dir that also holds `artifacts` (what the compile
    /// step wrote, from [`Plan::compile_only`]).
    pub fn run_only(mut self, artifacts: &[JobFile]) -> Plan {
        if self.has_compile {
            self.steps.remove(0);
            self.has_compile = false;
        }
        let given: std::collections::HashSet<String> = self.files.iter().map(|f| f.name.clone()).collect();
        self.files
            .extend(artifacts.iter().filter(|a| !given.contains(&a.name)).cloned());
        self
    }

    /// This plan with `files` in its work dir too, each replacing one of the same name.
    pub fn with_files(mut self, files: Vec<JobFile>) -> Plan {
        self.files.retain(|f| !files.iter().any(|n| n.name == f.name));
        self.files.extend(files);
        self
    }

    /// This plan with its run step talking to another sandbox live: stdin and stdout are the
    /// descriptors passed to the sandbox ([`Prepared::pass_stdio`]); its verdict comes from its
    /// exit and limits alone (the other side judges what it wrote).
    pub fn piped(mut self) -> Plan {
        if let Some(run) = self.steps.last_mut() {
            run.live = Some(crate::protocol::Live::Peer);
            run.stdin = None;
        }
        self.expected = None;
        self
    }

    /// This plan with its run step streamed: stdout and stderr reach the manager as they are
    /// written (and in the result as always); with `interactive`, stdin comes from the
    /// manager as it arrives instead of the request's. The descriptors are passed to the
    /// sandbox first ([`Prepared::pass_stdio`], four of them).
    pub fn streamed(mut self, interactive: bool) -> Plan {
        if let Some(run) = self.steps.last_mut() {
            run.live = Some(crate::protocol::Live::Client);
            if interactive {
                run.stdin = None;
            }
        }
        self
    }

    /// This plan without live stdio (its stdin from the request again, when it had one).
    pub fn unstreamed(mut self) -> Plan {
        if let Some(run) = self.steps.last_mut() {
            run.live = None;
        }
        self
    }

    /// Whether it has a compile step.
    pub fn has_compile(&self) -> bool {
        self.has_compile
    }

    /// This plan with its run step a session's interpreter: live stdio of kind
    /// [`crate::protocol::Live::Repl`], and a wall and CPU window of the session's lifetime
    /// instead of one exec's (the manager bounds each cell itself).
    pub fn repl(mut self, window_ms: u64) -> Plan {
        if let Some(run) = self.steps.last_mut() {
            run.live = Some(crate::protocol::Live::Repl);
            run.stdin = None;
            run.limits.wall_time_ms = window_ms;
            run.limits.cpu_time_ms = window_ms;
        }
        self.run_limits.wall_time_ms = window_ms;
        self.run_limits.cpu_time_ms = window_ms;
        self.expected = None;
        self
    }

    /// Whether the run step is streamed ([`Plan::streamed`]).
    pub fn is_streamed(&self) -> bool {
        self.steps
            .last()
            .is_some_and(|s| s.live == Some(crate::protocol::Live::Client))
    }

    /// Files to bring back after the steps, if any.
    pub fn collect(&self) -> Option<Collect> {
        self.collect.clone()
    }

    /// Run in `sandbox` and decide the verdict. Sandbox failures become an InternalError
    /// result, never a panic. The caller drops the sandbox afterwards: destroying it (kill,
    /// reap, rmdir) is not part of the job's time.
    pub fn run(&self, sandbox: &mut Prepared, worker_creation_ms: f64) -> RunOutput {
        self.try_run(sandbox, worker_creation_ms)
            .unwrap_or_else(|e| internal(&e))
    }

    /// Like [`Plan::run`], but a failure of the sandbox itself (its init died, the channel
    /// broke) is an error: the engine retries the job on another sandbox.
    pub fn try_run(&self, sandbox: &mut Prepared, worker_creation_ms: f64) -> Result<RunOutput, SandboxError> {
        let started = Instant::now();
        let outcome = sandbox.run_with(&self.files, &self.steps, self.collect.clone())?;
        Ok(self.finish(outcome, worker_creation_ms, ms(started.elapsed())))
    }

    /// The files and steps, for a caller that sends the job over its own transport (the
    /// engine's gRPC workers); it then hands the outputs to [`Plan::finish`].
    pub fn parts(&self) -> (&[JobFile], &[Step]) {
        (&self.files, &self.steps)
    }

    /// Decide the verdict from the steps' outputs; `elapsed_ms` is the time the job took.
    pub fn finish(&self, outcome: JobOutcome, worker_creation_ms: f64, elapsed_ms: f64) -> RunOutput {
        let mut timings = Timings {
            worker_creation: worker_creation_ms,
            ..Default::default()
        };
        let mut out = self.decide(outcome, &mut timings);
        timings.total = elapsed_ms + worker_creation_ms;
        out.result.timings = timings;
        out
    }

    fn decide(&self, outcome: JobOutcome, t: &mut Timings) -> RunOutput {
        let JobOutcome {
            steps: outputs,
            files,
            collect_error,
            refused,
        } = outcome;
        let mut it = outputs.into_iter();
        let mut compile_output = String::new();
        if self.has_compile {
            let Some(c) = it.next() else {
                return internal(&SandboxError::Setup("no compile report".into()));
            };
            t.compile = c.facts.wall_time_us as f64 / 1000.0;
            let mut text = c.stdout.clone();
            text.extend_from_slice(&c.stderr);
            compile_output = lossy_capped(&text, DIAGNOSTIC_CAP);
            if let Some(why) = limit_note(&c, &self.steps[0].limits) {
                compile_output.push_str(&why);
            }
            if let Some(v) = verdict::compile_verdict(&c.facts) {
                let mut r = result_from(v, &c, String::new(), compile_output);
                // The compiler's stderr is in compileOutput; stderr is the program's.
                r.stderr = String::new();
                if v == Verdict::InternalError {
                    r.error = c.facts.start_error.clone();
                }
                // Compile-step resource use is not the program's: report the run step's (none).
                r.cpu_time_ms = 0;
                r.wall_time_ms = 0;
                r.memory_kb = 0;
                return RunOutput::of(r, Vec::new());
            }
            if self.compile_only {
                // The compile step alone: its artifacts are the outcome.
                let mut r = result_from(Verdict::Accepted, &c, String::new(), compile_output);
                r.stderr = String::new();
                (r.cpu_time_ms, r.wall_time_ms, r.memory_kb) = (0, 0, 0);
                if let Some(e) = collect_error {
                    r.verdict = Verdict::CompileError;
                    r.compile_output
                        .push_str(&format!("\nwolf: the compiler's output cannot be used: {e}\n"));
                }
                let mut out = RunOutput::of(r, Vec::new());
                out.files = files;
                return out;
            }
        }
        let Some(run) = it.next() else {
            return internal(&SandboxError::Setup("no run report".into()));
        };
        t.execution = run.facts.wall_time_us as f64 / 1000.0;
        let judge = Judge {
            limits: &self.run_limits,
            expected: self.expected.as_deref(),
            oom_patterns: &self.oom_patterns,
            checker: &self.checker,
        };
        let v = verdict::run_verdict(&run.facts, &run.stdout, &run.stderr, &judge);
        let mut r = result_from(
            v,
            &run,
            String::from_utf8_lossy(&run.stdout).into_owned(),
            compile_output,
        );
        if v == Verdict::InternalError {
            r.error = run.facts.start_error.clone();
        }
        // Output files: listed with their size and hash; the contents go with the output.
        r.files = files
            .iter()
            .map(|f| wolf_core::OutputFile {
                path: f.name.clone(),
                size: f.contents.len() as u64,
                sha256: wolf_core::hash::sha256_hex(&f.contents),
            })
            .collect();
        r.files_refused = refused
            .into_iter()
            .map(|x| wolf_core::RefusedOutput {
                path: x.path,
                reason: x.reason,
            })
            .collect();
        let mut out = RunOutput::of(r, run.stdout);
        out.files = files;
        out
    }
}

/// A line saying which limit stopped a compile step (the compiler itself says nothing).
fn limit_note(s: &StepOutput, l: &Limits) -> Option<String> {
    let f = &s.facts;
    let why = if f.cpu_limit_hit || f.signal == Some(libc::SIGXCPU) {
        format!("CPU time limit of {} ms", l.cpu_time_ms)
    } else if f.wall_limit_hit {
        format!("wall time limit of {} ms", l.wall_time_ms)
    } else if f.oom_kills > 0 {
        format!("memory limit of {} MiB", l.memory_mb)
    } else if f.output_limit_hit {
        format!("output limit of {} bytes", l.output_bytes)
    } else {
        return None;
    };
    Some(format!("\nwolf: the compile step exceeded its {why}\n"))
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn lossy_capped(b: &[u8], cap: usize) -> String {
    String::from_utf8_lossy(&b[..b.len().min(cap)]).into_owned()
}

fn result_from(v: Verdict, s: &StepOutput, stdout: String, compile_output: String) -> RunResult {
    RunResult {
        verdict: v,
        exit_code: s.facts.exit_code,
        signal: s.facts.signal,
        cpu_time_ms: s.facts.cpu_time_ms,
        wall_time_ms: s.facts.wall_time_ms,
        memory_kb: s.facts.memory_kb,
        stdout,
        stderr: lossy_capped(&s.stderr, DIAGNOSTIC_CAP),
        compile_output,
        truncated: s.facts.truncated,
        error: None,
        timings: Timings::default(),
        output_not_utf8: std::str::from_utf8(&s.stdout).is_err() || std::str::from_utf8(&s.stderr).is_err(),
        tests: Vec::new(),
        passed: None,
        score: None,
        files: Vec::new(),
        files_refused: Vec::new(),
    }
}

/// An InternalError result for a sandbox failure.
pub fn internal(e: &SandboxError) -> RunOutput {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    RunOutput::of(
        RunResult {
            verdict: Verdict::InternalError,
            exit_code: None,
            signal: None,
            cpu_time_ms: 0,
            wall_time_ms: 0,
            memory_kb: 0,
            stdout: String::new(),
            stderr: String::new(),
            compile_output: String::new(),
            truncated: false,
            error: Some(msg),
            timings: Timings::default(),
            output_not_utf8: false,
            tests: Vec::new(),
            passed: None,
            score: None,
            files: Vec::new(),
            files_refused: Vec::new(),
        },
        Vec::new(),
    )
}

/// The record's result: the run's outcome without its output (stdout is the job's object).
impl From<&RunResult> for wolf_core::JobResult {
    fn from(r: &RunResult) -> Self {
        wolf_core::JobResult {
            verdict: r.verdict,
            exit_code: r.exit_code,
            signal: r.signal,
            cpu_time_ms: r.cpu_time_ms,
            wall_time_ms: r.wall_time_ms,
            memory_kb: r.memory_kb,
            stderr: r.stderr.clone(),
            compile_output: r.compile_output.clone(),
            truncated: r.truncated,
            error: r.error.clone(),
            output_not_utf8: r.output_not_utf8,
            tests: r.tests.clone(),
            passed: r.passed,
            score: r.score,
            files: r.files.clone(),
            files_refused: r.files_refused.clone(),
        }
    }
}
