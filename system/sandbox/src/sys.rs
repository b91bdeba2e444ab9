//! The syscall layer: the only module of the crate that holds `unsafe`.
//!
//! The ordered pipelines (building the root filesystem, entering the payload) talk to the kernel
//! through the [`Sys`] trait. [`Linux`] is the real implementation; [`Recorder`] (tests) records
//! the calls so that the ordering logic is unit-tested without root. A few calls that only make
//! sense for real (fork, the raw clone that starts the init process) are free functions here.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;
use nix::sys::resource::Resource;
use nix::unistd::{Gid, Pid, Uid};

use crate::landlock_rules::LandlockPlan;

/// A failed syscall: which operation, on what, and the errno.
#[derive(Debug, thiserror::Error)]
#[error("{op} {what}")]
pub struct SysError {
    /// The operation that failed (`mount`, `pivot_root`, ...).
    pub op: &'static str,
    /// Its main argument, for the message.
    pub what: String,
    /// The kernel's answer.
    #[source]
    pub source: io::Error,
}

impl SysError {
    pub(crate) fn new(op: &'static str, what: impl Into<String>, source: impl Into<io::Error>) -> Self {
        Self {
            op,
            what: what.into(),
            source: source.into(),
        }
    }
}

/// Result of a [`Sys`] call.
pub type SysResult<T = ()> = Result<T, SysError>;

/// The calls made by the ordered pipelines in `rootfs` and `payload`.
pub trait Sys {
    /// mount(2).
    fn mount(
        &mut self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult;
    /// umount2(2) with MNT_DETACH.
    fn umount_detach(&mut self, target: &Path) -> SysResult;
    /// mkdir(2) with an explicit mode (no umask surprises: chmod after).
    fn mkdir(&mut self, path: &Path, mode: u32) -> SysResult;
    /// Create a file (O_CREAT|O_EXCL|O_NOFOLLOW) with these contents and mode.
    fn write_new_file(&mut self, path: &Path, contents: &[u8], mode: u32) -> SysResult;
    /// symlink(2).
    fn symlink(&mut self, target: &Path, link: &Path) -> SysResult;
    /// chdir(2).
    fn chdir(&mut self, path: &Path) -> SysResult;
    /// pivot_root(2).
    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> SysResult;
    /// sethostname(2) and setdomainname(2).
    fn set_hostname(&mut self, name: &str) -> SysResult;

    /// setsid(2): own session and process group, no controlling terminal.
    fn setsid(&mut self) -> SysResult;
    /// Move the caller into a cgroup by writing "0" to an open `cgroup.procs`.
    fn join_cgroup(&mut self, procs: RawFd) -> SysResult;
    /// unshare(2) of the given namespaces.
    fn unshare(&mut self, flags: CloneFlags) -> SysResult;
    /// dup2(2).
    fn dup2(&mut self, from: RawFd, to: RawFd) -> SysResult;
    /// Mark every descriptor from `first` on close-on-exec (close_range(2) with
    /// CLOSE_RANGE_CLOEXEC): none survives the exec, while the exec-error pipe still works.
    fn cloexec_from(&mut self, first: RawFd) -> SysResult;
    /// setrlimit(2) with soft = hard.
    fn set_rlimit(&mut self, resource: Resource, limit: u64) -> SysResult;
    /// Reset every signal disposition to default and unblock all signals.
    fn reset_signals(&mut self) -> SysResult;
    /// Drop every capability from the bounding set (needs CAP_SETPCAP, so before the uid change).
    fn drop_bounding_set(&mut self) -> SysResult;
    /// setgroups([]), setresgid, setresuid: after this no capability is left.
    fn set_ids(&mut self, uid: u32, gid: u32) -> SysResult;
    /// prctl(PR_SET_NO_NEW_PRIVS).
    fn no_new_privs(&mut self) -> SysResult;
    /// Apply the Landlock ruleset (best effort on kernels without Landlock).
    fn landlock(&mut self, plan: &LandlockPlan) -> SysResult;
    /// Install the compiled seccomp filters.
    fn seccomp(&mut self) -> SysResult;
    /// Ask AppArmor to confine the next exec with `profile` (aa_change_onexec).
    fn apparmor_onexec(&mut self, profile: &str) -> SysResult;
    /// execve(2): only returns on failure.
    fn exec(&mut self, argv: &[CString], env: &[CString]) -> SysError;
}

/// The real kernel.
#[derive(Debug, Default)]
pub struct Linux;

fn path_str(p: &Path) -> String {
    p.display().to_string()
}

impl Sys for Linux {
    fn mount(
        &mut self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult {
        nix::mount::mount(src, target, fstype, flags, data).map_err(|e| SysError::new("mount", path_str(target), e))
    }

    fn umount_detach(&mut self, target: &Path) -> SysResult {
        nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(|e| SysError::new("umount2", path_str(target), e))
    }

    fn mkdir(&mut self, path: &Path, mode: u32) -> SysResult {
        std::fs::DirBuilder::new()
            .mode(mode)
            .create(path)
            .map_err(|e| SysError::new("mkdir", path_str(path), e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| SysError::new("chmod", path_str(path), e))
    }

    fn write_new_file(&mut self, path: &Path, contents: &[u8], mode: u32) -> SysResult {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| SysError::new("create", path_str(path), e))?;
        f.write_all(contents)
            .map_err(|e| SysError::new("write", path_str(path), e))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| SysError::new("chmod", path_str(path), e))
    }

    fn symlink(&mut self, target: &Path, link: &Path) -> SysResult {
        std::os::unix::fs::symlink(target, link).map_err(|e| SysError::new("symlink", path_str(link), e))
    }

    fn chdir(&mut self, path: &Path) -> SysResult {
        nix::unistd::chdir(path).map_err(|e| SysError::new("chdir", path_str(path), e))
    }

    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> SysResult {
        nix::unistd::pivot_root(new_root, put_old).map_err(|e| SysError::new("pivot_root", path_str(new_root), e))
    }

    fn set_hostname(&mut self, name: &str) -> SysResult {
        nix::unistd::sethostname(name).map_err(|e| SysError::new("sethostname", name, e))?;
        let c = CString::new(name)
            .map_err(|e| SysError::new("setdomainname", name, io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        // SAFETY: `c` is a valid NUL-terminated buffer that outlives the call and `len` is its
        // length without the NUL, as setdomainname(2) expects; the kernel only reads it.
        let rc = unsafe { libc::setdomainname(c.as_ptr(), c.as_bytes().len()) };
        if rc != 0 {
            return Err(SysError::new("setdomainname", name, io::Error::last_os_error()));
        }
        Ok(())
    }

    fn setsid(&mut self) -> SysResult {
        nix::unistd::setsid()
            .map(drop)
            .map_err(|e| SysError::new("setsid", "", e))
    }

    fn join_cgroup(&mut self, procs: RawFd) -> SysResult {
        // SAFETY-free: the descriptor was opened by the host on `cgroup.procs` and passed in; a
        // borrowed view is enough for one write. "0" means "the writing process".
        let fd = borrow(procs);
        nix::unistd::write(fd, b"0")
            .map(drop)
            .map_err(|e| SysError::new("join cgroup", procs.to_string(), e))
    }

    fn unshare(&mut self, flags: CloneFlags) -> SysResult {
        nix::sched::unshare(flags).map_err(|e| SysError::new("unshare", format!("{flags:?}"), e))
    }

    fn dup2(&mut self, from: RawFd, to: RawFd) -> SysResult {
        // SAFETY: dup2(2) on two plain integers has no memory-safety preconditions; the child is
        // single-threaded at this point, so no other thread can race on descriptor `to`.
        let rc = unsafe { libc::dup2(from, to) };
        if rc < 0 {
            return Err(SysError::new(
                "dup2",
                format!("{from}->{to}"),
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn cloexec_from(&mut self, first: RawFd) -> SysResult {
        // SAFETY: with CLOSE_RANGE_CLOEXEC, close_range(2) only sets the close-on-exec flag on
        // the caller's descriptors; nothing is closed, so no Rust owner of a descriptor is
        // invalidated.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_close_range,
                first as libc::c_uint,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
            )
        };
        if rc != 0 {
            return Err(SysError::new(
                "close_range",
                first.to_string(),
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    fn set_rlimit(&mut self, resource: Resource, limit: u64) -> SysResult {
        nix::sys::resource::setrlimit(resource, limit, limit)
            .map_err(|e| SysError::new("setrlimit", format!("{resource:?}"), e))
    }

    fn reset_signals(&mut self) -> SysResult {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal, sigprocmask};
        for sig in Signal::iterator() {
            if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
                continue;
            }
            let dfl = nix::sys::signal::SigAction::new(
                nix::sys::signal::SigHandler::SigDfl,
                nix::sys::signal::SaFlags::empty(),
                SigSet::empty(),
            );
            // SAFETY: installing SIG_DFL never runs user code in signal context, so none of
            // sigaction's handler-safety requirements apply; the process is single-threaded.
            unsafe { nix::sys::signal::sigaction(sig, &dfl) }
                .map_err(|e| SysError::new("sigaction", sig.as_str(), e))?;
        }
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
            .map_err(|e| SysError::new("sigprocmask", "", e))
    }

    fn drop_bounding_set(&mut self) -> SysResult {
        let last = last_cap();
        for cap in 0..=last {
            // SAFETY: PR_CAPBSET_DROP takes an integer capability number and touches only the
            // calling thread's bounding set; no pointers are passed.
            let rc = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            if rc != 0 {
                let err = io::Error::last_os_error();
                // EINVAL: the kernel does not know this capability number.
                if err.raw_os_error() != Some(libc::EINVAL) {
                    return Err(SysError::new("capbset_drop", cap.to_string(), err));
                }
            }
        }
        // Ambient capabilities would survive exec for an unprivileged uid: clear them too.
        // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes no pointers and affects the calling thread only.
        let rc = unsafe {
            libc::prctl(
                libc::PR_CAP_AMBIENT,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if rc != 0 {
            return Err(SysError::new("cap_ambient_clear", "", io::Error::last_os_error()));
        }
        Ok(())
    }

    fn set_ids(&mut self, uid: u32, gid: u32) -> SysResult {
        nix::unistd::setgroups(&[]).map_err(|e| SysError::new("setgroups", "", e))?;
        let g = Gid::from_raw(gid);
        nix::unistd::setresgid(g, g, g).map_err(|e| SysError::new("setresgid", gid.to_string(), e))?;
        let u = Uid::from_raw(uid);
        // Changing all three uids away from 0 clears the permitted and effective capability
        // sets (capabilities(7), "Effect of user ID changes on capabilities").
        nix::unistd::setresuid(u, u, u).map_err(|e| SysError::new("setresuid", uid.to_string(), e))
    }

    fn no_new_privs(&mut self) -> SysResult {
        nix::sys::prctl::set_no_new_privs().map_err(|e| SysError::new("no_new_privs", "", e))
    }

    fn landlock(&mut self, plan: &LandlockPlan) -> SysResult {
        plan.apply()
            .map(drop)
            .map_err(|e| SysError::new("landlock", "", io::Error::other(e)))
    }

    fn seccomp(&mut self) -> SysResult {
        crate::seccomp::install().map_err(|e| SysError::new("seccomp", "", io::Error::other(e)))
    }

    fn apparmor_onexec(&mut self, profile: &str) -> SysResult {
        let value = format!("exec {profile}");
        // The LSM-specific file (Linux 5.8+), else the shared one.
        std::fs::write("/proc/self/attr/apparmor/exec", &value)
            .or_else(|_| std::fs::write("/proc/self/attr/exec", &value))
            .map_err(|e| SysError::new("apparmor onexec", profile, e))
    }

    fn exec(&mut self, argv: &[CString], env: &[CString]) -> SysError {
        let Some(prog) = argv.first() else {
            return SysError::new("execve", "", io::Error::from_raw_os_error(libc::EINVAL));
        };
        match nix::unistd::execve(prog.as_c_str(), argv, env) {
            Err(e) => SysError::new("execve", prog.to_string_lossy(), e),
            Ok(never) => match never {},
        }
    }
}

/// A borrowed view of `fd` (see [`borrow`]).
pub(crate) fn borrow_fd(fd: RawFd) -> BorrowedFd<'static> {
    borrow(fd)
}

fn borrow(fd: RawFd) -> BorrowedFd<'static> {
    // SAFETY: used only on descriptors that the caller keeps open for the rest of the process's
    // life (the payload child execs or exits right after); the borrow never outlives them.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// The highest capability number the running kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40)
}

/// Everything the child of [`spawn_init`] needs, built before the clone so that the child only
/// makes async-signal-safe calls (no allocation: the parent may be multi-threaded).
pub(crate) struct SpawnArgs {
    exe: CString,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

impl SpawnArgs {
    pub(crate) fn new(exe: &Path, argv: &[&str]) -> io::Result<Self> {
        use std::os::unix::ffi::OsStrExt;
        let exe =
            CString::new(exe.as_os_str().as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let argv: Vec<CString> = argv
            .iter()
            .map(|a| CString::new(*a))
            .collect::<Result<_, _>>()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        argv_ptrs.push(std::ptr::null());
        Ok(Self {
            exe,
            argv,
            argv_ptrs,
            envp: vec![std::ptr::null()],
        })
    }

    fn exe(&self) -> &CStr {
        &self.exe
    }
}

/// Start `args.exe` as PID 1 of fresh namespaces (`flags`), with `channel` as its descriptor 3
/// and nothing else open (every descriptor of this process is close-on-exec, as Rust opens
/// them). Returns the child's pid in our namespace.
///
/// A raw clone(2) without a new stack behaves like fork(2) but lets us ask for CLONE_NEWPID,
/// which makes the child itself (not only its children) PID 1 of the new namespace; std's
/// Command cannot. The child makes only async-signal-safe calls: dup2, execve, _exit.
pub(crate) fn spawn_init(flags: CloneFlags, channel: &OwnedFd, args: &SpawnArgs) -> io::Result<Pid> {
    let fd = channel.as_raw_fd();
    let exe = args.exe().as_ptr();
    let argv = args.argv_ptrs.as_ptr();
    let envp = args.envp.as_ptr();
    debug_assert!(!args.argv.is_empty());
    let clone_flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: with a null stack clone(2) duplicates the caller like fork(2). In the child we
    // only call dup2, execve and _exit (async-signal-safe, no allocation, no locks), through
    // pointers built before the clone that stay valid in the child's copy of memory.
    let rc = unsafe { libc::syscall(libc::SYS_clone, clone_flags, 0usize, 0usize, 0usize, 0usize) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if rc == 0 {
        child_exec(fd, exe, argv, envp);
    }
    Ok(Pid::from_raw(rc as i32))
}

/// In the child of [`spawn_init`]: descriptor `fd` becomes 3, then exec. Never returns.
fn child_exec(
    fd: RawFd,
    exe: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> ! {
    if fd != 3 {
        // SAFETY: dup2 on integers; async-signal-safe. dup2 clears FD_CLOEXEC on fd 3.
        let rc = unsafe { libc::dup2(fd, 3) };
        if rc < 0 {
            // SAFETY: _exit is async-signal-safe and never returns.
            unsafe { libc::_exit(126) }
        }
    } else {
        // SAFETY: fcntl on an integer descriptor; async-signal-safe. Clears FD_CLOEXEC.
        let rc = unsafe { libc::fcntl(3, libc::F_SETFD, 0) };
        if rc < 0 {
            // SAFETY: _exit is async-signal-safe and never returns.
            unsafe { libc::_exit(126) }
        }
    }
    // SAFETY: `exe`, `argv` and `envp` point into CStrings and null-terminated pointer arrays
    // built by the parent before the clone; the child's copy of memory keeps them alive.
    unsafe { libc::execve(exe, argv, envp) };
    // SAFETY: _exit is async-signal-safe and never returns.
    unsafe { libc::_exit(127) }
}

/// Recording implementation for unit tests of the pipelines' ordering.
#[cfg(test)]
#[derive(Debug, Default)]
pub struct Recorder {
    /// One line per call, in order.
    pub calls: Vec<String>,
    /// Calls whose line starts with this prefix fail with EPERM.
    pub fail_on: Option<String>,
}

#[cfg(test)]
impl Recorder {
    fn rec(&mut self, line: String) -> SysResult {
        let fail = self.fail_on.as_ref().is_some_and(|p| line.starts_with(p.as_str()));
        self.calls.push(line.clone());
        if fail {
            return Err(SysError::new(
                "recorded",
                line,
                io::Error::from_raw_os_error(libc::EPERM),
            ));
        }
        Ok(())
    }

    /// Index of the first call starting with `prefix`.
    pub fn position(&self, prefix: &str) -> Option<usize> {
        self.calls.iter().position(|c| c.starts_with(prefix))
    }
}

#[cfg(test)]
impl Sys for Recorder {
    fn mount(
        &mut self,
        src: Option<&Path>,
        target: &Path,
        fstype: Option<&str>,
        flags: MsFlags,
        data: Option<&str>,
    ) -> SysResult {
        self.rec(format!(
            "mount {} {} {} {:?} {}",
            src.map(path_str).unwrap_or_default(),
            path_str(target),
            fstype.unwrap_or(""),
            flags,
            data.unwrap_or("")
        ))
    }
    fn umount_detach(&mut self, target: &Path) -> SysResult {
        self.rec(format!("umount {}", path_str(target)))
    }
    fn mkdir(&mut self, path: &Path, mode: u32) -> SysResult {
        self.rec(format!("mkdir {} {mode:o}", path_str(path)))
    }
    fn write_new_file(&mut self, path: &Path, _contents: &[u8], mode: u32) -> SysResult {
        self.rec(format!("file {} {mode:o}", path_str(path)))
    }
    fn symlink(&mut self, target: &Path, link: &Path) -> SysResult {
        self.rec(format!("symlink {} -> {}", path_str(link), path_str(target)))
    }
    fn chdir(&mut self, path: &Path) -> SysResult {
        self.rec(format!("chdir {}", path_str(path)))
    }
    fn pivot_root(&mut self, new_root: &Path, put_old: &Path) -> SysResult {
        self.rec(format!("pivot_root {} {}", path_str(new_root), path_str(put_old)))
    }
    fn set_hostname(&mut self, name: &str) -> SysResult {
        self.rec(format!("hostname {name}"))
    }
    fn setsid(&mut self) -> SysResult {
        self.rec("setsid".into())
    }
    fn join_cgroup(&mut self, procs: RawFd) -> SysResult {
        self.rec(format!("join_cgroup {procs}"))
    }
    fn unshare(&mut self, flags: CloneFlags) -> SysResult {
        self.rec(format!("unshare {flags:?}"))
    }
    fn dup2(&mut self, from: RawFd, to: RawFd) -> SysResult {
        self.rec(format!("dup2 {from} {to}"))
    }
    fn cloexec_from(&mut self, first: RawFd) -> SysResult {
        self.rec(format!("cloexec_from {first}"))
    }
    fn set_rlimit(&mut self, resource: Resource, limit: u64) -> SysResult {
        self.rec(format!("rlimit {resource:?} {limit}"))
    }
    fn reset_signals(&mut self) -> SysResult {
        self.rec("reset_signals".into())
    }
    fn drop_bounding_set(&mut self) -> SysResult {
        self.rec("drop_bounding_set".into())
    }
    fn set_ids(&mut self, uid: u32, gid: u32) -> SysResult {
        self.rec(format!("set_ids {uid} {gid}"))
    }
    fn no_new_privs(&mut self) -> SysResult {
        self.rec("no_new_privs".into())
    }
    fn landlock(&mut self, _plan: &LandlockPlan) -> SysResult {
        self.rec("landlock".into())
    }
    fn seccomp(&mut self) -> SysResult {
        self.rec("seccomp".into())
    }
    fn apparmor_onexec(&mut self, profile: &str) -> SysResult {
        self.rec(format!("apparmor {profile}"))
    }
    fn exec(&mut self, argv: &[CString], _env: &[CString]) -> SysError {
        let line = format!(
            "exec {}",
            argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
        );
        self.calls.push(line.clone());
        SysError::new("recorded", line, io::Error::from_raw_os_error(libc::ENOENT))
    }
}

/// Take ownership of a descriptor that the kernel just installed in this process through
/// SCM_RIGHTS.
pub(crate) fn own_received_fd(fd: RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: recvmsg(2) created `fd` in our table for this message only; nothing else in the
    // process knows its number, so this OwnedFd is its unique owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Take ownership of a descriptor inherited at exec (the init process's control socket).
pub(crate) fn own_inherited_fd(fd: RawFd) -> OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: the host's spawn_init placed the control socket at this number for us and the
    // process has not wrapped it anywhere else; called once, at the start of the init process.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Fork the calling single-threaded process into fresh namespaces (`flags`): the child is PID 1
/// of its new pid namespace and continues running this program, without an exec. Only the
/// sandbox template process calls this.
pub(crate) fn fork_into(flags: CloneFlags) -> io::Result<Option<Pid>> {
    let clone_flags = flags.bits() as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
    // SAFETY: with a null stack clone(2) duplicates the caller like fork(2). The caller (the
    // template) is single-threaded, so the child's copy of the heap is consistent and it may
    // allocate and run Rust code; nothing is shared between the two afterwards.
    let rc = unsafe { libc::syscall(libc::SYS_clone, clone_flags, 0usize, 0usize, 0usize, 0usize) };
    match rc {
        r if r < 0 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}

/// Start `child` in a vfork-style process: it shares the caller's memory on its own `stack`,
/// and the caller is suspended until it execs or exits (clone(2) with CLONE_VM|CLONE_VFORK, as
/// posix_spawn does). Its return value is its exit status.
pub(crate) fn vfork_spawn(stack: &mut [u8], child: impl FnMut() -> isize) -> io::Result<Pid> {
    let flags = CloneFlags::CLONE_VM | CloneFlags::CLONE_VFORK;
    // SAFETY: the caller (a step supervisor) is single-threaded and stays suspended until the
    // child execs or exits, so nothing else touches the shared memory meanwhile: no lock can be
    // held (the child may allocate; its allocations stay valid in the caller's heap). `stack`
    // outlives the child's use of it, since the caller cannot run before the child is done.
    unsafe { nix::sched::clone(Box::new(child), stack, flags, Some(libc::SIGCHLD)) }.map_err(io::Error::from)
}

/// Fork the calling (single-threaded) process into a new pid namespace: the child is PID 1 of
/// it, so when the child exits the kernel kills everything left in that namespace.
pub(crate) fn fork_pid1() -> io::Result<Option<Pid>> {
    let flags = (libc::CLONE_NEWPID | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: with a null stack clone(2) duplicates the caller like fork(2). The caller (the
    // init process) is single-threaded, so the child's copy of the heap is consistent and it
    // may allocate; no Rust object is shared between the two afterwards.
    let rc = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    match rc {
        r if r < 0 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        pid => Ok(Some(Pid::from_raw(pid as i32))),
    }
}
