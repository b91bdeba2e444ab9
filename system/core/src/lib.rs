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

pub mod hash;
pub mod job;
pub mod timeline;

pub use job::{Attempt, FileInput, JobRecord, JobResult, LimitsInput, Status, Submission, Timings};
