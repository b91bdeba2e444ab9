//! Per-step limits: language defaults, operator caps, and what a request may ask for.

use serde::{Deserialize, Serialize};

/// Limits of one step (compile or run). All values are positive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Limits {
    /// CPU time of the whole step (all its processes), ms.
    #[serde(alias = "cpu_time_ms")]
    pub cpu_time_ms: u64,
    /// Wall-clock time, ms.
    #[serde(alias = "wall_time_ms")]
    pub wall_time_ms: u64,
    /// Memory (the cgroup's limit, swap off), MiB.
    #[serde(alias = "memory_mb")]
    pub memory_mb: u64,
    /// Processes and threads.
    pub pids: u64,
    /// Cap on stdout and on stderr, bytes each.
    #[serde(alias = "output_bytes")]
    pub output_bytes: u64,
    /// Stack of each process (RLIMIT_STACK), MiB; none: the sandbox's own (64 MiB). Never more
    /// than the step's memory in effect.
    #[serde(default, alias = "stack_mb", skip_serializing_if = "Option::is_none")]
    pub stack_mb: Option<u64>,
    /// Largest file a process may write (RLIMIT_FSIZE), MiB; none: the work dir's size.
    #[serde(default, alias = "file_size_mb", skip_serializing_if = "Option::is_none")]
    pub file_size_mb: Option<u64>,
}

/// `fileSizeMb` at most, when the operator sets no cap of its own (1 TiB: the work dir's size
/// bounds any file long before).
pub const MAX_FILE_SIZE_MB: u64 = 1 << 20;

/// The smaller of two optional bounds, where none means "not bounded here".
fn min_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) | (None, x) => x,
    }
}

/// A request's wishes: each field may only lower the effective limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitRequest {
    /// See [`Limits::cpu_time_ms`].
    pub cpu_time_ms: Option<u64>,
    /// See [`Limits::wall_time_ms`].
    pub wall_time_ms: Option<u64>,
    /// See [`Limits::memory_mb`].
    pub memory_mb: Option<u64>,
    /// See [`Limits::pids`].
    pub pids: Option<u64>,
    /// See [`Limits::output_bytes`].
    pub output_bytes: Option<u64>,
    /// See [`Limits::stack_mb`].
    #[serde(default)]
    pub stack_mb: Option<u64>,
    /// See [`Limits::file_size_mb`].
    #[serde(default)]
    pub file_size_mb: Option<u64>,
}

impl LimitRequest {
    /// Each field of `self`, or `base`'s where `self` gives none (a test's limits over its
    /// submission's).
    pub fn or(self, base: LimitRequest) -> LimitRequest {
        LimitRequest {
            cpu_time_ms: self.cpu_time_ms.or(base.cpu_time_ms),
            wall_time_ms: self.wall_time_ms.or(base.wall_time_ms),
            memory_mb: self.memory_mb.or(base.memory_mb),
            pids: self.pids.or(base.pids),
            output_bytes: self.output_bytes.or(base.output_bytes),
            stack_mb: self.stack_mb.or(base.stack_mb),
            file_size_mb: self.file_size_mb.or(base.file_size_mb),
        }
    }
}

/// A request asked for something the operator does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// Above the operator's cap.
    #[error("limit {field} = {requested} exceeds the cap of {cap}")]
    AboveCap {
        /// camelCase field name.
        field: &'static str,
        /// Asked for.
        requested: u64,
        /// Allowed at most.
        cap: u64,
    },
    /// Zero is never a usable limit.
    #[error("limit {field} must be positive")]
    Zero {
        /// camelCase field name.
        field: &'static str,
    },
}

impl Limits {
    /// Each field the smaller of `self` and `cap`.
    pub fn min(&self, cap: &Limits) -> Limits {
        Limits {
            cpu_time_ms: self.cpu_time_ms.min(cap.cpu_time_ms),
            wall_time_ms: self.wall_time_ms.min(cap.wall_time_ms),
            memory_mb: self.memory_mb.min(cap.memory_mb),
            pids: self.pids.min(cap.pids),
            output_bytes: self.output_bytes.min(cap.output_bytes),
            stack_mb: min_opt(self.stack_mb, cap.stack_mb),
            file_size_mb: min_opt(self.file_size_mb, cap.file_size_mb),
        }
    }

    /// The effective limits: defaults (already within the cap) overridden by the request, which
    /// may go up to the cap but never past it.
    pub fn resolve(defaults: &Limits, cap: &Limits, req: &LimitRequest) -> Result<Limits, LimitError> {
        let base = defaults.min(cap);
        let pick = |field: &'static str, d: u64, c: u64, r: Option<u64>| -> Result<u64, LimitError> {
            match r {
                None => Ok(d),
                Some(0) => Err(LimitError::Zero { field }),
                Some(v) if v > c => Err(LimitError::AboveCap {
                    field,
                    requested: v,
                    cap: c,
                }),
                Some(v) => Ok(v),
            }
        };
        Ok(Limits {
            cpu_time_ms: pick("cpuTimeMs", base.cpu_time_ms, cap.cpu_time_ms, req.cpu_time_ms)?,
            wall_time_ms: pick("wallTimeMs", base.wall_time_ms, cap.wall_time_ms, req.wall_time_ms)?,
            memory_mb: pick("memoryMb", base.memory_mb, cap.memory_mb, req.memory_mb)?,
            pids: pick("pids", base.pids, cap.pids, req.pids)?,
            output_bytes: pick("outputBytes", base.output_bytes, cap.output_bytes, req.output_bytes)?,
            // A stack is memory: capped by the memory cap when the operator sets no stack cap.
            stack_mb: match req.stack_mb {
                None => base.stack_mb,
                Some(_) => Some(pick("stackMb", 0, cap.stack_mb.unwrap_or(cap.memory_mb), req.stack_mb)?),
            },
            file_size_mb: match req.file_size_mb {
                None => base.file_size_mb,
                Some(_) => Some(pick(
                    "fileSizeMb",
                    0,
                    cap.file_size_mb.unwrap_or(MAX_FILE_SIZE_MB),
                    req.file_size_mb,
                )?),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Limits = Limits {
        cpu_time_ms: 10_000,
        wall_time_ms: 20_000,
        memory_mb: 1024,
        pids: 128,
        output_bytes: 1 << 24,
        stack_mb: None,
        file_size_mb: None,
    };
    const DEF: Limits = Limits {
        cpu_time_ms: 2_000,
        wall_time_ms: 5_000,
        memory_mb: 256,
        pids: 16,
        output_bytes: 1 << 20,
        stack_mb: None,
        file_size_mb: None,
    };

    #[test]
    fn request_may_lower_and_raise_up_to_the_cap() {
        let r = LimitRequest {
            cpu_time_ms: Some(500),
            memory_mb: Some(1024),
            ..Default::default()
        };
        let l = Limits::resolve(&DEF, &CAP, &r).unwrap();
        assert_eq!(l.cpu_time_ms, 500);
        assert_eq!(l.memory_mb, 1024);
        assert_eq!(l.pids, 16);
    }

    #[test]
    fn request_past_the_cap_or_zero_is_refused() {
        let r = LimitRequest {
            memory_mb: Some(4096),
            ..Default::default()
        };
        assert_eq!(
            Limits::resolve(&DEF, &CAP, &r),
            Err(LimitError::AboveCap {
                field: "memoryMb",
                requested: 4096,
                cap: 1024
            })
        );
        let r = LimitRequest {
            pids: Some(0),
            ..Default::default()
        };
        assert!(matches!(
            Limits::resolve(&DEF, &CAP, &r),
            Err(LimitError::Zero { field: "pids" })
        ));
    }

    #[test]
    fn stack_and_file_size_are_bounded_by_memory_and_their_caps() {
        let r = |stack_mb, file_size_mb| LimitRequest {
            stack_mb,
            file_size_mb,
            ..Default::default()
        };
        let l = Limits::resolve(&DEF, &CAP, &r(None, None)).unwrap();
        assert_eq!((l.stack_mb, l.file_size_mb), (None, None), "the sandbox's own");
        let l = Limits::resolve(&DEF, &CAP, &r(Some(512), Some(10))).unwrap();
        assert_eq!((l.stack_mb, l.file_size_mb), (Some(512), Some(10)));
        assert!(matches!(
            Limits::resolve(&DEF, &CAP, &r(Some(2048), None)),
            Err(LimitError::AboveCap {
                field: "stackMb",
                cap: 1024,
                ..
            })
        ));
        assert!(matches!(
            Limits::resolve(&DEF, &CAP, &r(None, Some(0))),
            Err(LimitError::Zero { field: "fileSizeMb" })
        ));
        let capped = Limits {
            file_size_mb: Some(8),
            ..CAP
        };
        assert!(Limits::resolve(&DEF, &capped, &r(None, Some(9))).is_err());
    }

    #[test]
    fn defaults_above_the_cap_are_cut_to_it() {
        let small = Limits { memory_mb: 64, ..CAP };
        let l = Limits::resolve(&DEF, &small, &LimitRequest::default()).unwrap();
        assert_eq!(l.memory_mb, 64);
    }
}

/// Operator caps: no request goes past these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Caps {
    /// Compile step caps.
    pub compile: Limits,
    /// Run step caps.
    pub run: Limits,
}

impl Default for Caps {
    fn default() -> Self {
        let l = Limits {
            cpu_time_ms: 60_000,
            wall_time_ms: 120_000,
            memory_mb: 4096,
            pids: 512,
            output_bytes: 64 << 20,
            stack_mb: None,
            file_size_mb: None,
        };
        Self { compile: l, run: l }
    }
}
