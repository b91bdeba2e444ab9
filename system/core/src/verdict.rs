//! The verdicts a job can end with (decided in the jail from kernel facts).

use serde::{Deserialize, Serialize};

/// The outcome of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    /// Ran to exit 0 (and matched the expected output, when one was given).
    Accepted,
    /// Exit 0 but the output differs from the expected output (trailing whitespace ignored).
    WrongAnswer,
    /// The compile step failed (including its own time or memory limit).
    CompileError,
    /// Non-zero exit or killed by a signal.
    RuntimeError,
    /// CPU or wall-clock limit.
    TimeLimitExceeded,
    /// The cgroup's OOM killer fired (or the runtime reported running out of memory).
    MemoryLimitExceeded,
    /// stdout or stderr (or a written file) went past its cap.
    OutputLimitExceeded,
    /// The sandbox could not run the job, or a judge's own program (a checker, an interactor)
    /// failed; not the program's fault.
    InternalError,
    /// A checker program found the output malformed rather than wrong (testlib exit code 2).
    PresentationError,
}
