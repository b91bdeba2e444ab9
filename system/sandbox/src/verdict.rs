//! Verdicts, decided from what the kernel reported about a step, never from guessing.

use crate::limits::Limits;
use crate::protocol::StepFacts;

pub use wolf_core::verdict::Verdict;

/// Inputs to the run step's verdict beyond the kernel facts.
#[derive(Debug, Clone, Copy)]
pub struct Judge<'a> {
    /// Limits the step ran with.
    pub limits: &'a Limits,
    /// Expected stdout, if the caller gave one.
    pub expected: Option<&'a [u8]>,
    /// stderr patterns by which a runtime says it ran out of memory (registry data).
    pub oom_patterns: &'a [String],
    /// How stdout is compared with `expected`.
    pub checker: &'a wolf_core::Checker,
}

/// Verdict of a compile step: `None` when it succeeded.
pub fn compile_verdict(f: &StepFacts) -> Option<Verdict> {
    if f.exit_code == Some(0) && !f.output_limit_hit && f.start_error.is_none() && f.oom_kills == 0 {
        return None;
    }
    // The cgroup's OOM killer took a process of the step (the compiler, or its supervisor when
    // the memory was in tmpfs or pipes): the program's fault, whichever process was hit.
    if f.oom_kills > 0 {
        return Some(Verdict::CompileError);
    }
    if f.start_error.is_some() {
        return Some(Verdict::InternalError);
    }
    Some(Verdict::CompileError)
}

/// Verdict of the run step.
pub fn run_verdict(f: &StepFacts, stdout: &[u8], stderr: &[u8], j: &Judge<'_>) -> Verdict {
    const SIGXCPU: i32 = libc::SIGXCPU;
    const SIGXFSZ: i32 = libc::SIGXFSZ;
    // The cgroup's OOM killer fired: the memory limit, whichever process of the step it took
    // (the program, or its supervisor when the memory sat in tmpfs pages, pipe or socket
    // buffers: then the step ends without a status, which is not an internal error).
    if f.oom_kills > 0 && !f.output_limit_hit {
        return Verdict::MemoryLimitExceeded;
    }
    if let Some(_e) = &f.start_error {
        // The pipeline or execve failed before the program ran.
        if f.exit_code == Some(127) || (f.exit_code.is_none() && f.signal.is_none()) {
            return Verdict::InternalError;
        }
    }
    if f.output_limit_hit || f.signal == Some(SIGXFSZ) {
        return Verdict::OutputLimitExceeded;
    }
    if f.oom_kills > 0 {
        return Verdict::MemoryLimitExceeded;
    }
    if f.cpu_limit_hit || f.signal == Some(SIGXCPU) || f.cpu_time_ms > j.limits.cpu_time_ms {
        return Verdict::TimeLimitExceeded;
    }
    if f.wall_limit_hit {
        return Verdict::TimeLimitExceeded;
    }
    if f.exit_code != Some(0) {
        let err = String::from_utf8_lossy(stderr);
        if j.oom_patterns.iter().any(|p| !p.is_empty() && err.contains(p.as_str())) {
            return Verdict::MemoryLimitExceeded;
        }
        return Verdict::RuntimeError;
    }
    match j.expected {
        Some(exp) if !j.checker.accepts(stdout, exp) => Verdict::WrongAnswer,
        _ => Verdict::Accepted,
    }
}

/// Compare outputs ignoring trailing whitespace on each line and at the end (the default
/// checker, [`wolf_core::Checker::Lines`]).
pub fn same_output(got: &[u8], expected: &[u8]) -> bool {
    wolf_core::Checker::Lines {}.accepts(got, expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: Limits = Limits {
        cpu_time_ms: 1000,
        wall_time_ms: 3000,
        memory_mb: 64,
        pids: 8,
        output_bytes: 100,
        stack_mb: None,
        file_size_mb: None,
    };

    fn judge(f: &StepFacts, out: &[u8], err: &[u8], exp: Option<&[u8]>) -> Verdict {
        let pats = vec!["MemoryError".to_string()];
        run_verdict(
            f,
            out,
            err,
            &Judge {
                limits: &L,
                expected: exp,
                oom_patterns: &pats,
                checker: &wolf_core::Checker::Lines {},
            },
        )
    }

    fn exited(code: i32) -> StepFacts {
        StepFacts {
            exit_code: Some(code),
            ..Default::default()
        }
    }

    #[test]
    fn accepted_and_wrong_answer_only_with_expected_output() {
        assert_eq!(judge(&exited(0), b"42\n", b"", None), Verdict::Accepted);
        assert_eq!(judge(&exited(0), b"42  \n\n", b"", Some(b"42")), Verdict::Accepted);
        assert_eq!(judge(&exited(0), b"43\n", b"", Some(b"42\n")), Verdict::WrongAnswer);
        assert_eq!(
            judge(&exited(0), b" 42", b"", Some(b"42")),
            Verdict::WrongAnswer,
            "leading space matters"
        );
    }

    #[test]
    fn kernel_facts_take_precedence_in_a_fixed_order() {
        let oom = StepFacts {
            signal: Some(9),
            oom_kills: 1,
            ..Default::default()
        };
        assert_eq!(judge(&oom, b"", b"", None), Verdict::MemoryLimitExceeded);
        let cpu = StepFacts {
            signal: Some(9),
            cpu_limit_hit: true,
            cpu_time_ms: 1001,
            ..Default::default()
        };
        assert_eq!(judge(&cpu, b"", b"", None), Verdict::TimeLimitExceeded);
        let xcpu = StepFacts {
            signal: Some(libc::SIGXCPU),
            ..Default::default()
        };
        assert_eq!(judge(&xcpu, b"", b"", None), Verdict::TimeLimitExceeded);
        let wall = StepFacts {
            signal: Some(9),
            wall_limit_hit: true,
            ..Default::default()
        };
        assert_eq!(judge(&wall, b"", b"", None), Verdict::TimeLimitExceeded);
        let ole = StepFacts {
            signal: Some(9),
            output_limit_hit: true,
            oom_kills: 1,
            ..Default::default()
        };
        assert_eq!(judge(&ole, b"", b"", None), Verdict::OutputLimitExceeded);
        let fsz = StepFacts {
            signal: Some(libc::SIGXFSZ),
            ..Default::default()
        };
        assert_eq!(judge(&fsz, b"", b"", None), Verdict::OutputLimitExceeded);
    }

    #[test]
    fn an_oom_kill_of_the_supervisor_is_the_memory_limit_not_an_internal_error() {
        // Memory in tmpfs or pipe buffers: the OOM killer took the step's supervisor, which
        // left no status.
        let facts = StepFacts {
            oom_kills: 1,
            start_error: Some("step supervisor ended without a status (\"\")".into()),
            ..Default::default()
        };
        assert_eq!(judge(&facts, b"", b"", None), Verdict::MemoryLimitExceeded);
        assert_eq!(compile_verdict(&facts), Some(Verdict::CompileError));
        // A compiler killed by the OOM killer after printing nothing, exit status unknown.
        let compiler = StepFacts {
            signal: Some(9),
            oom_kills: 2,
            ..Default::default()
        };
        assert_eq!(compile_verdict(&compiler), Some(Verdict::CompileError));
        // Without an OOM kill, a missing status stays an internal error.
        let lost = StepFacts {
            start_error: Some("step supervisor ended without a status".into()),
            ..Default::default()
        };
        assert_eq!(judge(&lost, b"", b"", None), Verdict::InternalError);
    }

    #[test]
    fn runtime_errors_and_runtime_reported_oom() {
        assert_eq!(judge(&exited(3), b"", b"", None), Verdict::RuntimeError);
        let segv = StepFacts {
            signal: Some(11),
            ..Default::default()
        };
        assert_eq!(judge(&segv, b"", b"", None), Verdict::RuntimeError);
        assert_eq!(
            judge(&exited(1), b"", b"Traceback...\nMemoryError\n", None),
            Verdict::MemoryLimitExceeded
        );
        let failed_start = StepFacts {
            start_error: Some("execve: ENOENT".into()),
            ..Default::default()
        };
        assert_eq!(judge(&failed_start, b"", b"", None), Verdict::InternalError);
    }

    #[test]
    fn compile_step() {
        assert_eq!(compile_verdict(&exited(0)), None);
        assert_eq!(compile_verdict(&exited(1)), Some(Verdict::CompileError));
        let tle = StepFacts {
            signal: Some(9),
            cpu_limit_hit: true,
            ..Default::default()
        };
        assert_eq!(compile_verdict(&tle), Some(Verdict::CompileError));
    }
}
