//! # wolf-core
//!
//! Domain types shared by the API, the manager and the stores: what a client submits
//! ([`Submission`]), what Wolf records about a job ([`JobRecord`]), its [`Status`], its
//! per-stage [`Timings`] and its [`JobResult`]. Serialized in camelCase exactly as the HTTP
//! contract (ARCHITECTURE §4) shows them.
//!
//! # Layout
//! - [`job`]: submissions, records, statuses, timings, results.
//! - [`hash`]: sha256 hex of code and outputs.
//! - [`checker`]: how test outputs are checked; [`testlib`]: what a checker program's exit means.
//! - [`limits`], [`language`], [`verdict`], [`names`]: limits and caps, the language registry's
//!   data, verdicts, file-name rules — the domain the jail depends on (never the reverse).
//! - [`machine`]: the machine and commit a measurement ran on.

pub mod auth;
pub mod checker;
pub mod hash;
pub mod job;
pub mod language;
pub mod limits;
pub mod machine;
pub mod names;
pub mod session;
pub mod stream;
pub mod testlib;
pub mod timeline;
pub mod verdict;

pub use checker::{Checker, Interactor};
pub use job::{
    Attempt, Encoding, FileInput, JobRecord, JobResult, LimitsInput, OutputFile, RefusedOutput, Status, Submission,
    TestInput, TestResult, TestStage, Timings,
};
pub use language::{Language, Registry};
pub use limits::{Caps, LimitRequest, Limits};
pub use verdict::Verdict;
