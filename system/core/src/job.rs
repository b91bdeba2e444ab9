//! Submissions and job records.

use crate::limits::LimitRequest;
use crate::verdict::Verdict;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum Status {
    /// Accepted, waiting in the queue.
    Pending,
    /// Handed to a worker.
    Dispatched,
    /// Running in a sandbox.
    Running,
    /// Finished with a result (whatever the verdict).
    Completed,
    /// Could not be run (poison job, every attempt's worker died); see `failureReason`.
    Failed,
}

impl Status {
    /// Completed or Failed: nothing will change any more.
    pub fn is_final(self) -> bool {
        matches!(self, Status::Completed | Status::Failed)
    }

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "Pending",
            Status::Dispatched => "Dispatched",
            Status::Running => "Running",
            Status::Completed => "Completed",
            Status::Failed => "Failed",
        }
    }

    /// Parse the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "Pending" => Status::Pending,
            "Dispatched" => Status::Dispatched,
            "Running" => Status::Running,
            "Completed" => Status::Completed,
            "Failed" => Status::Failed,
            _ => return None,
        })
    }
}

/// An extra file for the work dir.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FileInput {
    /// Its path in the work dir: a name, or a relative path with up to 8 components
    /// (`src/util.py`), normal (no `.`, `..` or empty component).
    pub name: String,
    /// Contents: UTF-8 text, or base64 when `encoding` says so.
    pub content: String,
    /// `utf8` (the default) or `base64` (standard alphabet, padded) for binary contents.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<Encoding>,
}

/// How a file's `content` is written in the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// The bytes are the text's UTF-8.
    Utf8,
    /// The bytes are the text decoded as base64 (RFC 4648, standard alphabet, padded).
    Base64,
}

impl FileInput {
    /// The file's bytes; `Err` says why `content` is not what `encoding` claims.
    pub fn bytes(&self) -> Result<Vec<u8>, String> {
        use base64::Engine;
        match self.encoding {
            None | Some(Encoding::Utf8) => Ok(self.content.clone().into_bytes()),
            Some(Encoding::Base64) => base64::engine::general_purpose::STANDARD
                .decode(&self.content)
                .map_err(|e| format!("file {:?}: content is not base64: {e}", self.name)),
        }
    }
}

/// Limits a submission asks for (run step); each may only go up to the operator's cap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsInput {
    /// CPU time, ms.
    #[serde(default, deserialize_with = "whole_number")]
    pub cpu_time_ms: Option<u64>,
    /// Wall time, ms.
    #[serde(default, deserialize_with = "whole_number")]
    pub wall_time_ms: Option<u64>,
    /// Memory, MiB.
    #[serde(default, deserialize_with = "whole_number")]
    pub memory_mb: Option<u64>,
    /// Processes and threads.
    #[serde(default, deserialize_with = "whole_number")]
    pub pids: Option<u64>,
    /// Cap on stdout and stderr, bytes.
    #[serde(default, deserialize_with = "whole_number")]
    pub output_bytes: Option<u64>,
    /// Stack of each process, MiB (at most the memory cap).
    #[serde(default, deserialize_with = "whole_number")]
    pub stack_mb: Option<u64>,
    /// Largest file a process may write, MiB (a larger write is OutputLimitExceeded).
    #[serde(default, deserialize_with = "whole_number")]
    pub file_size_mb: Option<u64>,
}

/// `limits` of a submission: only a JSON object (serde's derive would also take an array of the
/// fields in order, which the API does not promise).
pub(crate) fn limits_object<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<LimitsInput>, D::Error> {
    match Option::<serde_json::Map<String, serde_json::Value>>::deserialize(d)? {
        None => Ok(None),
        Some(map) => LimitsInput::deserialize(serde_json::Value::Object(map))
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// A JSON integer, also when written with a zero fraction (`1000.0` is an integer to JSON
/// Schema and to JavaScript clients): serde's `u64` alone refuses it.
pub fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Num {
        Int(u64),
        Float(f64),
    }
    match Option::<Num>::deserialize(d)? {
        None => Ok(None),
        Some(Num::Int(n)) => Ok(Some(n)),
        Some(Num::Float(f)) if f.fract() == 0.0 && f >= 0.0 && f <= u64::MAX as f64 => Ok(Some(f as u64)),
        Some(Num::Float(f)) => Err(serde::de::Error::custom(format!(
            "expected a whole number that is not negative, got {f}"
        ))),
    }
}

impl From<LimitsInput> for LimitRequest {
    fn from(l: LimitsInput) -> Self {
        LimitRequest {
            cpu_time_ms: l.cpu_time_ms,
            wall_time_ms: l.wall_time_ms,
            memory_mb: l.memory_mb,
            pids: l.pids,
            output_bytes: l.output_bytes,
            stack_mb: l.stack_mb,
            file_size_mb: l.file_size_mb,
        }
    }
}

/// What a client submits (`POST /job`). Only `code` and `executionEngine` are required, so the
/// seed's requests work unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Submission {
    /// Source code (not empty, not only whitespace).
    #[schema(min_length = 1, pattern = "\\S")]
    pub code: String,
    /// Engine name (`c`, `c++`, `python`, `javascript`, `java`, `rust`, `bash`, ...).
    pub execution_engine: String,
    /// stdin of the program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Extra arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Extra files for the work dir.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileInput>,
    /// Limits of the run step.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "limits_object")]
    pub limits: Option<LimitsInput>,
    /// Expected stdout: enables the WrongAnswer verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_output: Option<String>,
    /// Free-form labels, echoed in the record.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Test cases (1 to 1000): the program is compiled once and each test runs in a fresh
    /// sandbox. Without them `stdin` and `expectedOutput` are the one implicit test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestInput>,
    /// Stop at the first test that is not Accepted (the rest do not run).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stop_on_first_failure: bool,
    /// How outputs are compared with `expectedOutput` (default: `lines`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checker: Option<crate::Checker>,
    /// An interactor: per test, the program talks to it live (stdout to its stdin, its stdout
    /// to the program's stdin) and its exit code decides the test. Not with a `checker`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interactor: Option<crate::Interactor>,
    /// Extra arguments for the compiler, appended to the engine's compile command (argv, never
    /// a shell); only for engines with a compile step.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compiler_options: Vec<String>,
    /// The program's stderr goes to its stdout, interleaved as written (`stderr` stays empty).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merge_stderr: bool,
    /// Files to bring back from the work dir after the run: relative paths or simple globs
    /// (`*`, `?` within a component), at most [`MAX_OUTPUT_PATTERNS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_files: Vec<String>,
    /// An `http(s)` URL the final record is POSTed to when the job ends, signed with
    /// `Wolf-Signature` (see the README's webhooks section); retried for up to 24 h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    /// (The pattern is what the document promises is accepted: an `http(s)` URL of a host
    /// name; an address literal is accepted too unless it is private, loopback or link-local.)
    #[schema(
        max_length = 2048,
        pattern = "^https?://([a-z][a-z0-9]*\\.)*[a-z][a-z0-9]*(:[1-9][0-9]{0,3})?(/[A-Za-z0-9._~-]*)*$"
    )]
    pub callback_url: Option<String>,
}

/// Output-file patterns per submission, at most.
pub const MAX_OUTPUT_PATTERNS: usize = 32;
/// Output files per job, at most.
pub const MAX_OUTPUT_FILES: usize = 64;
/// One output file, at most (bytes).
pub const MAX_OUTPUT_FILE_BYTES: u64 = 16 << 20;
/// All output files of a job together, at most (bytes).
pub const MAX_OUTPUT_BYTES: u64 = 64 << 20;

/// A file the program wrote, stored with the job (`GET /job/{id}/files/{path}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputFile {
    /// Its path relative to the work dir.
    pub path: String,
    /// Bytes.
    pub size: u64,
    /// sha256 hex of its contents.
    pub sha256: String,
}

/// An output file asked for and not brought back, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RefusedOutput {
    /// The path, or the pattern that matched nothing.
    pub path: String,
    /// Why (a symbolic link, too large, not a regular file, no match).
    pub reason: String,
}

/// One test case of a submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TestInput {
    /// Shown in the result (default: `test-<n>`, counting from 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// stdin of this test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Expected stdout: enables WrongAnswer for this test.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_output: Option<String>,
    /// Arguments of this test (instead of the submission's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// Limits of this test; each field given replaces the submission's.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "limits_object")]
    pub limits: Option<LimitsInput>,
}

/// What one test did (`result.tests[n]`; its full stdout is `GET /job/{id}/tests/{n}/output`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestResult {
    /// The test's name.
    pub name: String,
    /// Its verdict.
    #[schema(value_type = String)]
    pub verdict: Verdict,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Killing signal.
    pub signal: Option<i32>,
    /// CPU time, ms.
    pub cpu_time_ms: u64,
    /// Wall time, ms.
    pub wall_time_ms: u64,
    /// Peak memory, KiB.
    pub memory_kb: u64,
    /// stdout, capped at [`TEST_TEXT_CAP`] bytes (lossy UTF-8).
    pub stdout: String,
    /// stderr, capped at [`TEST_TEXT_CAP`] bytes.
    pub stderr: String,
    /// stdout or stderr was cut (here, or at the output limit).
    pub truncated: bool,
    /// What the checker said, when it said something.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checker_message: Option<String>,
    /// 1 for Accepted, 0 otherwise.
    pub score: f64,
    /// InternalError detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Where the test sat in the job's run, for the timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<TestStage>,
}

/// When a test ran, as the worker saw it: offsets from the start of the first test (the
/// timeline's `execution` stage), sandbox and checker included.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestStage {
    /// Start, ms after the first test started.
    pub start_ms: f64,
    /// The whole test: its sandbox, its program, its checker, ms.
    pub duration_ms: f64,
    /// Of which the checker program's run, ms (when one judged it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checker_ms: Option<f64>,
}

/// stdout and stderr of each test in the record are cut here (the objects keep all of stdout).
pub const TEST_TEXT_CAP: usize = 4096;

/// Tests per submission, at most.
pub const MAX_TESTS: usize = 1000;

/// Per-stage durations, milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timings {
    /// API handler, request in to answer out.
    pub server: f64,
    /// Accepted until a worker leased it.
    pub queue_wait: f64,
    /// Preparing the sandbox that ran it (done ahead, off the job's path).
    pub worker_creation: f64,
    /// Lease until the job was handed to the worker.
    pub worker_acquire: f64,
    /// Compile step, wall.
    pub compile: f64,
    /// Run step, wall.
    pub execution: f64,
    /// Persisting output and the result.
    pub storage: f64,
    /// Accepted until the result was persisted.
    pub total: f64,
}

/// The outcome of the run, in the record (stdout is the job's output object).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobResult {
    /// Verdict.
    #[schema(value_type = String)]
    pub verdict: Verdict,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Killing signal.
    pub signal: Option<i32>,
    /// CPU time, ms.
    pub cpu_time_ms: u64,
    /// Wall time, ms.
    pub wall_time_ms: u64,
    /// Peak memory, KiB.
    pub memory_kb: u64,
    /// stderr (capped).
    pub stderr: String,
    /// Compiler output (capped).
    pub compile_output: String,
    /// Output was cut at a cap.
    pub truncated: bool,
    /// InternalError detail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// stdout or stderr was not valid UTF-8: `stderr` here shows U+FFFD in its place, and
    /// `GET /job/{id}/output` serves stdout's raw bytes. Present only when true.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub output_not_utf8: bool,
    /// With test cases: each test that ran, in order (after `stopOnFirstFailure` stopped, the
    /// rest are absent). `verdict` is then the first non-Accepted test's, the resource figures
    /// are the largest of any test, and the output object is the stdout of the test that
    /// decided the verdict (the first failing one, else the last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tests: Vec<TestResult>,
    /// With test cases: how many were Accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passed: Option<u32>,
    /// With test cases: the sum of their scores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<f64>,
    /// The output files brought back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<OutputFile>,
    /// Output files asked for and refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files_refused: Vec<RefusedOutput>,
}

/// What Wolf records about a job (`GET /job/{id}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// UUIDv7.
    pub id: String,
    /// Engine as submitted.
    pub execution_engine: String,
    /// `jobs/<id>/code.bin`.
    pub code_path: String,
    /// sha256 hex of the code.
    pub code_hash: String,
    /// Status.
    pub status: Status,
    /// Accepted at.
    pub creation_time: DateTime<Utc>,
    /// Started running at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<DateTime<Utc>>,
    /// Finished at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<DateTime<Utc>>,
    /// Executions beyond the first (at-least-once: a worker died, the process restarted).
    pub retry_count: u32,
    /// `jobs/<id>/output.log` once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_path: Option<String>,
    /// sha256 hex of the output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_hash: Option<String>,
    /// Tags as submitted.
    pub tags: Option<Vec<String>>,
    /// The result, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<JobResult>,
    /// Stage timings, filled as the job progresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timings: Option<Timings>,
    /// Why the job failed, when `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// W3C trace id (32 hex digits) of the job's trace, given at admission.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Every delivery to a worker, oldest first (more than one after a retry).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<Attempt>,
    /// Started on the WebSocket `/job/ws`: the program's stdin is what the client sends.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interactive: bool,
    /// Id of the API key that submitted it (authentication on); only that key and admin keys
    /// see the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// One delivery of a job to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attempt {
    /// 1 for the first delivery.
    pub attempt: u32,
    /// Which worker: `<host>/<pid>/w<index>`.
    pub worker: String,
    /// When the worker leased it.
    pub started_at: DateTime<Utc>,
}

impl JobRecord {
    /// How long the job kept its worker from other jobs, as far as its record tells: its run
    /// (start to end of its last attempt) and the preparation of the sandbox it ran in. `None`
    /// unless it Completed with both times.
    pub fn time_on_worker_ms(&self) -> Option<f64> {
        if self.status != Status::Completed {
            return None;
        }
        let ran = (self.end_time? - self.start_time?).num_microseconds()? as f64 / 1000.0;
        let prepared = self.timings.as_ref().map_or(0.0, |t| t.worker_creation.max(0.0));
        (ran >= 0.0).then_some(ran + prepared)
    }

    /// A new Pending record for `submission`.
    pub fn new(id: String, submission: &Submission, now: DateTime<Utc>) -> Self {
        JobRecord {
            code_path: code_key(&id),
            code_hash: crate::hash::sha256_hex(submission.code.as_bytes()),
            id,
            execution_engine: submission.execution_engine.clone(),
            status: Status::Pending,
            creation_time: now,
            start_time: None,
            end_time: None,
            retry_count: 0,
            output_path: None,
            output_hash: None,
            tags: submission.tags.clone(),
            result: None,
            timings: None,
            failure_reason: None,
            trace_id: None,
            interactive: false,
            attempts: Vec::new(),
            owner: None,
        }
    }
}

/// Object key of a job's code.
pub fn code_key(id: &str) -> String {
    format!("jobs/{id}/code.bin")
}

/// Object key of a job's stdout.
pub fn output_key(id: &str) -> String {
    format!("jobs/{id}/output.log")
}

/// Object key of a job's stderr.
pub fn stderr_key(id: &str) -> String {
    format!("jobs/{id}/stderr.log")
}

/// An output file of a job (its path checked before).
pub fn output_file_key(id: &str, path: &str) -> String {
    format!("jobs/{id}/files/{path}")
}

/// The full stdout of test `n` (counting from 0, as `result.tests`).
pub fn test_output_key(id: &str, n: usize) -> String {
    format!("jobs/{id}/tests/{n}/output.log")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_submission_parses_and_record_serializes_like_the_seed() {
        let body = r##"{"code": "#include <bits/stdc++.h>\nint main(){}", "executionEngine": "c++"}"##;
        let s: Submission = serde_json::from_str(body).unwrap();
        assert_eq!(s.execution_engine, "c++");
        let r = JobRecord::new("0190-x".into(), &s, Utc::now());
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "Pending");
        assert_eq!(v["codePath"], "jobs/0190-x/code.bin");
        assert_eq!(v["retryCount"], 0);
        assert!(v["tags"].is_null());
        assert!(v.get("endTime").is_none() && v.get("result").is_none());
        assert_eq!(v["codeHash"].as_str().unwrap().len(), 64);
    }

    #[test]
    fn status_round_trips() {
        for s in [
            Status::Pending,
            Status::Dispatched,
            Status::Running,
            Status::Completed,
            Status::Failed,
        ] {
            assert_eq!(Status::parse(s.as_str()), Some(s));
        }
        assert!(Status::Completed.is_final() && !Status::Running.is_final());
    }
}
