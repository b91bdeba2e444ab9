//! Entering the program under test: one ordered pipeline, run in the init process's forked
//! child, ending in execve(2).
//!
//! Order matters and is unit-tested: join the step's cgroups before anything can allocate
//! much; new cgroup namespace once inside them; descriptors before rlimits (NOFILE); drop the
//! bounding set while we still hold CAP_SETPCAP, then the uid change clears every capability;
//! no_new_privs before Landlock and seccomp; seccomp last, so the pipeline's own calls need not
//! be in the allowlist.

use std::ffi::CString;
use std::os::fd::RawFd;

use nix::sched::CloneFlags;
use nix::sys::resource::Resource;

use crate::landlock_rules::LandlockPlan;
use crate::sys::{Sys, SysError};

/// Prepare a step's supervisor (PID 1 of the step's own pid namespace) ahead of the job: join
/// the step's cgroups — slow on cgroup v1, where a migration waits for an RCU grace period
/// (~14 ms measured here), which is why it happens while pre-warming — then give it a cgroup
/// namespace rooted there.
pub fn enter_slot(sys: &mut impl Sys, cgroup_procs: &[RawFd]) -> Result<(), SysError> {
    for fd in cgroup_procs {
        sys.join_cgroup(*fd)?;
    }
    // Inside its step cgroup, the program sees that cgroup as "/" and nothing of the host's tree.
    sys.unshare(CloneFlags::CLONE_NEWCGROUP)
}

/// Everything the pipeline needs, resolved before the fork.
#[derive(Debug, Clone)]
pub struct PayloadSpec {
    /// Pipe ends that become descriptors 0, 1, 2.
    pub stdio: [RawFd; 3],
    /// Working directory.
    pub cwd: String,
    /// RLIMIT_CPU seconds (a backstop: the supervisor enforces the exact limit from the cgroup).
    pub cpu_seconds: u64,
    /// RLIMIT_FSIZE bytes.
    pub file_bytes: u64,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// RLIMIT_STACK bytes.
    pub stack_bytes: u64,
    /// Unprivileged identity.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// Landlock rules.
    pub landlock: LandlockPlan,
    /// Program and arguments.
    pub argv: Vec<CString>,
    /// The complete environment (nothing is inherited).
    pub env: Vec<CString>,
}

/// Run the pipeline. Returns only if a step failed; the error says which.
pub fn enter(sys: &mut impl Sys, spec: &PayloadSpec) -> SysError {
    match prepare(sys, spec) {
        Ok(()) => sys.exec(&spec.argv, &spec.env),
        Err(e) => e,
    }
}

fn prepare(sys: &mut impl Sys, spec: &PayloadSpec) -> Result<(), SysError> {
    sys.setsid()?;
    for (i, fd) in spec.stdio.iter().enumerate() {
        sys.dup2(*fd, i as RawFd)?;
    }
    // No descriptor of the supervisor (control socket, cgroup files, other pipes) survives.
    sys.cloexec_from(3)?;
    sys.chdir(std::path::Path::new(&spec.cwd))?;
    sys.reset_signals()?;
    sys.set_rlimit(Resource::RLIMIT_CORE, 0)?;
    sys.set_rlimit(Resource::RLIMIT_CPU, spec.cpu_seconds)?;
    sys.set_rlimit(Resource::RLIMIT_FSIZE, spec.file_bytes)?;
    sys.set_rlimit(Resource::RLIMIT_NOFILE, spec.open_files)?;
    sys.set_rlimit(Resource::RLIMIT_STACK, spec.stack_bytes)?;
    sys.drop_bounding_set()?;
    sys.set_ids(spec.uid, spec.gid)?;
    sys.no_new_privs()?;
    sys.landlock(&spec.landlock)?;
    sys.seccomp()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Recorder;

    fn spec() -> PayloadSpec {
        PayloadSpec {
            stdio: [10, 11, 12],
            cwd: "/work".into(),
            cpu_seconds: 3,
            file_bytes: 1 << 20,
            open_files: 64,
            stack_bytes: 8 << 20,
            uid: 65534,
            gid: 65534,
            landlock: LandlockPlan::standard("/work"),
            argv: vec![CString::new("./main").unwrap()],
            env: vec![CString::new("PATH=/usr/bin:/bin").unwrap()],
        }
    }

    #[test]
    fn seccomp_is_last_before_exec_and_after_no_new_privs() {
        let mut r = Recorder::default();
        let err = enter(&mut r, &spec());
        assert!(err.to_string().contains("recorded"));
        let n = r.calls.len();
        assert_eq!(r.calls[n - 1], "exec ./main");
        assert_eq!(r.calls[n - 2], "seccomp");
        assert!(r.position("no_new_privs").unwrap() < r.position("landlock").unwrap());
        assert!(r.position("landlock").unwrap() < r.position("seccomp").unwrap());
    }

    #[test]
    fn capabilities_go_before_identity_and_cgroups_first() {
        let mut r = Recorder::default();
        enter(&mut r, &spec());
        let bset = r.position("drop_bounding_set").unwrap();
        let ids = r.position("set_ids 65534 65534").unwrap();
        assert!(bset < ids, "bounding set needs CAP_SETPCAP, lost at the uid change");
        assert_eq!(r.calls[0], "setsid");
        assert!(r.position("cloexec_from 3").unwrap() > r.position("dup2 12 2").unwrap());
        assert!(r.position("rlimit RLIMIT_CORE 0").is_some());
    }

    #[test]
    fn slot_joins_every_cgroup_before_its_cgroup_namespace() {
        let mut r = Recorder::default();
        enter_slot(&mut r, &[7, 8]).unwrap();
        assert_eq!(
            r.calls,
            vec!["join_cgroup 7", "join_cgroup 8", "unshare CloneFlags(CLONE_NEWCGROUP)"]
        );
    }

    #[test]
    fn a_failed_step_never_execs() {
        let mut r = Recorder {
            fail_on: Some("set_ids".into()),
            ..Default::default()
        };
        let err = enter(&mut r, &spec());
        assert_eq!(err.op, "recorded");
        assert!(r.position("exec").is_none());
        assert!(r.position("seccomp").is_none());
    }
}
