//! Sessions: a sandbox kept between executions, its work dir persisting, for AI agents and
//! notebooks (`POST /session`, `POST /session/{id}/exec`, files in and out).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `POST /session`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionSpec {
    /// The engine an exec uses when it names none (default `python`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_engine: Option<String>,
    /// Limits of each exec (memory and processes also bound everything the session runs at
    /// once); each field given replaces the engine's default; the caps apply.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::job::limits_object"
    )]
    pub limits: Option<crate::LimitsInput>,
    /// Seconds without an exec before the session is reaped (default 300, at most 3600).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::job::whole_number"
    )]
    #[schema(minimum = 1, maximum = 3600)]
    pub idle_timeout_s: Option<u64>,
    /// Seconds the session lives at most (default 3600, at most 86400).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::job::whole_number"
    )]
    #[schema(minimum = 1, maximum = 86400)]
    pub ttl_s: Option<u64>,
    /// Files for its work dir, as a submission's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<crate::FileInput>,
    /// `exec` (default: each exec a fresh process in the kept work dir) or `repl` (Python:
    /// one interpreter kept alive, each exec a cell whose variables the next one sees).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SessionMode>,
}

/// How a session runs its execs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SessionMode {
    /// Each exec a fresh process in the kept work dir.
    Exec,
    /// One Python interpreter kept alive; each exec a cell.
    Repl,
}

/// Defaults and bounds of a session's lifetime.
pub const DEFAULT_IDLE_S: u64 = 300;
/// See [`DEFAULT_IDLE_S`].
pub const MAX_IDLE_S: u64 = 3600;
/// See [`DEFAULT_IDLE_S`].
pub const DEFAULT_TTL_S: u64 = 3600;
/// See [`DEFAULT_IDLE_S`].
pub const MAX_TTL_S: u64 = 86_400;

/// `POST /session/{id}/exec`: a program (`code`, in the session's engine or `executionEngine`)
/// or a shell `command`, run in the session's work dir.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExecRequest {
    /// Source code (exactly one of `code` and `command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// A shell command line, run by bash (exactly one of `code` and `command`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// stdin of the program.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// The engine of `code` (default: the session's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_engine: Option<String>,
    /// Files to report after the exec (as a submission's `outputFiles`); they stay in the
    /// work dir, read with `GET /session/{id}/files/{path}`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub output_files: Vec<String>,
}

/// What an exec did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    /// Its number in the session, from 1.
    pub exec: u64,
    /// The verdict (as a job's, without an expected output).
    #[schema(value_type = String)]
    pub verdict: crate::Verdict,
    /// Exit code, when it exited.
    pub exit_code: Option<i32>,
    /// The signal that ended it, when one did.
    pub signal: Option<i32>,
    /// stdout (capped by the output limit).
    pub stdout: String,
    /// stderr (capped).
    pub stderr: String,
    /// The compiler's output, for an engine that compiles.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub compile_output: String,
    /// CPU time, ms.
    pub cpu_time_ms: u64,
    /// Wall time, ms.
    pub wall_time_ms: u64,
    /// Peak memory of the session's processes so far, KiB.
    pub memory_kb: u64,
    /// The output files asked for that exist, with their sizes and hashes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<crate::OutputFile>,
    /// Why it failed: the sandbox's reason for an InternalError, a cell's exception
    /// (`ZeroDivisionError: division by zero`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// A REPL cell's traceback, when it raised.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceback: Option<String>,
    /// The `repr` of a REPL cell's last expression, when it has one (and it is not None).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The exec end to end, as the session's host saw it, ms.
    pub total_ms: f64,
    /// The exec's record in the metadata store (`GET /job/{jobId}`, tagged `session:<id>`),
    /// written after the answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
}

/// `GET /session/{id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// Its id (unguessable).
    pub id: String,
    /// `ready`, or `busy` while an exec runs.
    pub state: String,
    /// Its default engine.
    pub execution_engine: String,
    /// `exec` or `repl`.
    pub mode: SessionMode,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its last exec ended (or it was created).
    pub last_used_at: DateTime<Utc>,
    /// When it is reaped unless used again.
    pub expires_at: DateTime<Utc>,
    /// Execs so far.
    pub execs: u64,
    /// CPU time of all its execs, ms.
    pub cpu_time_ms: u64,
    /// Wall time of all its execs, ms.
    pub wall_time_ms: u64,
    /// Which host holds it (`<host>/<pid>`).
    pub node: String,
}

/// Why a session operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    /// No such session (never, or reaped, or deleted).
    #[error("{0}")]
    NotFound(String),
    /// It existed and is gone with its host, or was reaped: its state is lost.
    #[error("{0}")]
    Gone(String),
    /// The request is not valid.
    #[error("{0}")]
    Invalid(String),
    /// No room for another session here.
    #[error("{0}")]
    Full(String),
    /// The host cannot serve it now.
    #[error("{0}")]
    Unavailable(String),
}
