//! Entering the program under test, in two ordered pipelines.
//!
//! 1. [`enter_slot`] runs while the sandbox is pre-warmed, in the step's supervisor S (PID 1 of
//!    the step's own pid namespace): join the step's cgroups (slow on cgroup v1 without
//!    `favordynmods`: a migration may wait for an RCU grace period), give it a cgroup namespace
//!    rooted there, drop every capability and become the unprivileged user, set no_new_privs,
//!    apply Landlock, install seccomp. Everything S does afterwards (read its orders, fork,
//!    wait, write a status) is allowed by the filter; the expensive parts (seccomp JIT, Landlock
//!    ruleset) are off the job's critical path, and the program inherits all of it.
//! 2. [`enter`] runs per job in the program's process, forked from S: own session, stdio, no
//!    other descriptor across exec, work dir, default signals, the step's rlimits, execve.
//!
//! Order matters and is unit-tested: cgroups before the cgroup namespace; the bounding set
//! while CAP_SETPCAP is still held, then the uid change clears every capability; no_new_privs
//! before Landlock and seccomp; seccomp last.

use std::ffi::CString;
use std::os::fd::RawFd;

use nix::sched::CloneFlags;
use nix::sys::resource::Resource;

use crate::landlock_rules::LandlockPlan;
use crate::sys::{Sys, SysError};

/// What the step supervisor applies to itself before the job.
#[derive(Debug, Clone)]
pub struct SlotSpec<'a> {
    /// `cgroup.procs` descriptors of the step's cgroups (one per v1 hierarchy, one on v2).
    pub cgroup_procs: &'a [RawFd],
    /// Unprivileged identity.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// Landlock rules.
    pub landlock: &'a LandlockPlan,
    /// AppArmor profile for the program's exec, where the host has AppArmor.
    pub apparmor: Option<&'a str>,
}

/// Pre-warm a step supervisor (see the module docs).
pub fn enter_slot(sys: &mut impl Sys, spec: &SlotSpec<'_>) -> Result<(), SysError> {
    for fd in spec.cgroup_procs {
        sys.join_cgroup(*fd)?;
    }
    // Inside its step cgroup, the program sees that cgroup as "/" and nothing of the host's tree.
    sys.unshare(CloneFlags::CLONE_NEWCGROUP)?;
    // The onexec label is per task and inherited across fork: set it while still privileged,
    // before Landlock makes /proc read-only for us; the program's exec applies it.
    if let Some(profile) = spec.apparmor {
        sys.apparmor_onexec(profile)?;
    }
    sys.drop_bounding_set()?;
    sys.set_ids(spec.uid, spec.gid)?;
    sys.no_new_privs()?;
    sys.landlock(spec.landlock)?;
    sys.seccomp()
}

/// What the program's process sets up after the fork, per job.
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
    /// Program and arguments.
    pub argv: Vec<CString>,
    /// The complete environment (nothing is inherited).
    pub env: Vec<CString>,
}

/// Run the per-job pipeline. Returns only if a step failed; the error says which.
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
    // No descriptor of the supervisor (status and exec-error pipes) survives the exec.
    sys.cloexec_from(3)?;
    sys.chdir(std::path::Path::new(&spec.cwd))?;
    sys.reset_signals()?;
    sys.set_rlimit(Resource::RLIMIT_CORE, 0)?;
    sys.set_rlimit(Resource::RLIMIT_CPU, spec.cpu_seconds)?;
    sys.set_rlimit(Resource::RLIMIT_FSIZE, spec.file_bytes)?;
    sys.set_rlimit(Resource::RLIMIT_NOFILE, spec.open_files)?;
    sys.set_rlimit(Resource::RLIMIT_STACK, spec.stack_bytes)?;
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
            argv: vec![CString::new("./main").unwrap()],
            env: vec![CString::new("PATH=/usr/bin:/bin").unwrap()],
        }
    }

    fn slot(r: &mut Recorder) -> Result<(), SysError> {
        let plan = LandlockPlan::standard("/work");
        enter_slot(
            r,
            &SlotSpec {
                cgroup_procs: &[7, 8],
                uid: 65534,
                gid: 65534,
                landlock: &plan,
                apparmor: None,
            },
        )
    }

    #[test]
    fn slot_order_cgroups_namespace_caps_identity_nnp_landlock_seccomp() {
        let mut r = Recorder::default();
        slot(&mut r).unwrap();
        assert_eq!(
            r.calls,
            vec![
                "join_cgroup 7",
                "join_cgroup 8",
                "unshare CloneFlags(CLONE_NEWCGROUP)",
                "drop_bounding_set",
                "set_ids 65534 65534",
                "no_new_privs",
                "landlock",
                "seccomp",
            ]
        );
    }

    #[test]
    fn apparmor_is_requested_before_privileges_go_where_the_host_has_it() {
        let mut r = Recorder::default();
        let plan = LandlockPlan::standard("/work");
        let spec = SlotSpec {
            cgroup_procs: &[7],
            uid: 65534,
            gid: 65534,
            landlock: &plan,
            apparmor: Some("wolf-sandbox"),
        };
        enter_slot(&mut r, &spec).unwrap();
        let aa = r.position("apparmor wolf-sandbox").expect("profile requested");
        assert!(aa < r.position("set_ids").unwrap() && aa < r.position("landlock").unwrap());
    }

    #[test]
    fn a_failed_slot_step_stops_before_the_rest() {
        let mut r = Recorder {
            fail_on: Some("set_ids".into()),
            ..Default::default()
        };
        assert!(slot(&mut r).is_err());
        assert!(r.position("no_new_privs").is_none());
        assert!(r.position("seccomp").is_none());
    }

    #[test]
    fn job_pipeline_ends_in_exec_and_closes_everything_else() {
        let mut r = Recorder::default();
        let err = enter(&mut r, &spec());
        assert!(err.to_string().contains("recorded"));
        assert_eq!(r.calls[0], "setsid");
        assert_eq!(r.calls.last().unwrap(), "exec ./main");
        assert!(r.position("cloexec_from 3").unwrap() > r.position("dup2 12 2").unwrap());
        assert!(r.position("rlimit RLIMIT_CORE 0").is_some());
        assert!(r.position("rlimit RLIMIT_NOFILE 64").unwrap() > r.position("cloexec_from 3").unwrap());
    }

    #[test]
    fn a_failed_job_step_never_execs() {
        let mut r = Recorder {
            fail_on: Some("chdir".into()),
            ..Default::default()
        };
        let err = enter(&mut r, &spec());
        assert_eq!(err.op, "recorded");
        assert!(r.position("exec").is_none());
    }
}
