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
    };
    const DEF: Limits = Limits {
        cpu_time_ms: 2_000,
        wall_time_ms: 5_000,
        memory_mb: 256,
        pids: 16,
        output_bytes: 1 << 20,
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
        };
        Self { compile: l, run: l }
    }
}
