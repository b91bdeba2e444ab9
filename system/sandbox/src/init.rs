//! The init process: PID 1 of the sandbox's namespaces, and the supervisor of its one job.
//!
//! Started by the host through [`crate::sys::spawn_init`] as `<exe> __wolf-sandbox-init` with the
//! control socket on descriptor 3. It receives the step cgroups' descriptors and the root
//! filesystem plan, builds the root and answers `Ready` (this is the pre-warmed state), then
//! waits for one job: writes its files, runs each step, enforces wall time, CPU time (from the
//! cgroup) and output caps, reports, and exits.
//!
//! Each step slot has a supervisor S, forked while pre-warming into its own pid namespace, in
//! the step's cgroups and already confined (see `payload::enter_slot`). On the job's order S
//! forks the program and reports its wait status; when S exits — or is killed for a limit —
//! the kernel kills every process left in its namespace, so no orphan outlives its step.
//!
//! It is single-threaded (fork is safe here) and trusts nothing the program under test produces:
//! output is read through bounded pipes, never through paths the program could plant.

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::cgroup::{self, Version};
use crate::landlock_rules::LandlockPlan;
use crate::payload::{self, PayloadSpec};
use crate::protocol::{self, JobReport, JobSpec, Setup, SetupReply, StepFacts, StepSpec, SupervisorStatus};
use crate::relay::Stream;
use crate::rootfs;
use crate::sys::Linux;

/// argv[1] that selects the init process in a binary that embeds it.
pub const INIT_ARG: &str = "__wolf-sandbox-init";

/// Largest job frame accepted from the host.
const MAX_JOB_BYTES: usize = 256 << 20;

/// If this process was started as a sandbox init, run it and never return. Call this first in
/// `main` of every binary used as the sandbox's init executable.
pub fn main_if_init() {
    let arg = std::env::args_os().nth(1);
    if arg.as_deref().is_some_and(|a| a == INIT_ARG) {
        run_and_exit(UnixStream::from(crate::sys::own_inherited_fd(3)));
    }
    if arg.as_deref().is_some_and(|a| a == crate::template::TEMPLATE_ARG) {
        crate::template::main();
    }
}

/// Be the init process on `sock` (after an exec, or forked by the template), then exit.
pub(crate) fn run_and_exit(sock: UnixStream) -> ! {
    let code = match run(sock) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("wolf-sandbox init: {e}");
            1
        }
    };
    std::process::exit(code);
}

/// A step slot, prepared ahead: its supervisor `S` (PID 1 of the step's own pid namespace,
/// already inside the step's cgroups) blocks on `go` until the job arrives.
struct Slot {
    pid: Pid,
    cpu: OwnedFd,
    peak: OwnedFd,
    oom: OwnedFd,
    go: std::fs::File,
    status: std::fs::File,
    out: OwnedFd,
    err: OwnedFd,
    exec_err: OwnedFd,
    stdin: OwnedFd,
}

fn run(mut sock: UnixStream) -> std::io::Result<()> {
    let mut fds = protocol::recv_fds(&sock)?.into_iter();
    let (setup, _): (Setup, _) = protocol::read_frame(&mut sock, 0)?;
    let started = Instant::now();
    if let Err(e) = rootfs::setup(&mut Linux, &setup.rootfs) {
        let reply = SetupReply::Failed {
            error: format!("{e}: {}", e.source),
        };
        protocol::write_frame(&mut sock, &reply, &[])?;
        return Err(std::io::Error::other(e.to_string()));
    }
    // The host's stdin and stdout are not ours to keep; stderr stays for diagnostics.
    let null = std::fs::OpenOptions::new().read(true).write(true).open("/dev/null")?;
    for fd in [0, 1] {
        crate::sys::Sys::dup2(&mut Linux, null.as_raw_fd(), fd).map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    drop(null);
    // SIGCHLD arrives through a signalfd, so the supervisor loop is a single poll. Children
    // unblock it again before exec (payload::enter resets the mask).
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGCHLD);
    mask.thread_block().map_err(std::io::Error::from)?;
    let sigfd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
    let mut slots = Vec::new();
    let mut handles = Vec::new();
    for n in &setup.slots {
        let procs: Vec<OwnedFd> = fds.by_ref().take(*n).collect();
        let (Some(cpu), Some(peak), Some(oom)) = (fds.next(), fds.next(), fds.next()) else {
            return Err(std::io::Error::other("missing cgroup descriptors"));
        };
        let h = SlotHandles { procs, cpu, peak, oom };
        // A session forks a fresh supervisor per step: it keeps the handles to do so.
        let (procs, cpu, peak, oom) = if setup.session {
            let copy = h.dup()?;
            handles.push(h);
            (copy.procs, copy.cpu, copy.peak, copy.oom)
        } else {
            (h.procs, h.cpu, h.peak, h.oom)
        };
        match prefork_slot(procs, cpu, peak, oom, &setup.rootfs, setup.apparmor_profile.as_deref()) {
            Ok(slot) => slots.push(slot),
            Err(e) => {
                protocol::write_frame(&mut sock, &SetupReply::Failed { error: e.to_string() }, &[])?;
                return Err(e);
            }
        }
    }
    // The supervisors confine themselves in parallel; wait until every one is in place.
    for slot in &mut slots {
        if let Err(e) = await_joined(slot) {
            protocol::write_frame(&mut sock, &SetupReply::Failed { error: e.to_string() }, &[])?;
            return Err(e);
        }
    }
    let setup_us = started.elapsed().as_micros() as u64;
    protocol::write_frame(&mut sock, &SetupReply::Ready { setup_us }, &[])?;

    let job_listener = if setup.job_listener { fds.next() } else { None };
    let mut exec = Executor {
        slots: slots.into_iter().map(Some).collect(),
        to_reap: Vec::new(),
        unused: Vec::new(),
        setup: &setup,
        sigfd: &sigfd,
        used: false,
        handles,
    };
    match job_listener {
        // The embedding binary serves the one job over its own protocol (gRPC in `wolf`).
        Some(listener) => {
            let server = JOB_SERVER
                .get()
                .ok_or_else(|| std::io::Error::other("no job server registered in this binary"))?;
            let ctx = JobServerContext {
                listener: std::os::unix::net::UnixListener::from(listener),
                host_uid: setup.host_uid,
                token: setup.job_token.clone(),
                host: sock.try_clone()?,
                session: setup.session,
            };
            server(ctx, &mut |job, blobs, stdio| exec.execute(job, blobs, stdio))?;
        }
        // Pre-warmed: wait for the one job. EOF means the host gave up on this sandbox.
        None => {
            let (stdio, job) = match read_job(&mut sock) {
                Ok(j) => j,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e),
            };
            let (job, blobs) = job;
            let (report, out_blobs) = exec.execute(job, blobs, stdio);
            let refs: Vec<&[u8]> = out_blobs.iter().map(Vec::as_slice).collect();
            protocol::write_frame(&mut sock, &report, &refs)?;
        }
    }
    reap_all(&mut exec.to_reap);
    reap_all(&mut exec.unused);
    // Returning exits PID 1: the kernel kills whatever is left.
    Ok(())
}

/// A job frame: the spec and its blobs.
type Job = (JobSpec, Vec<Vec<u8>>);

/// The pre-warmed path's job: the live stdio descriptors when the host passed them first
/// ([`protocol::send_stdio`]: a byte that carries descriptors), then the job frame. A first
/// byte without descriptors is the frame's own.
fn read_job(sock: &mut UnixStream) -> std::io::Result<(Vec<OwnedFd>, Job)> {
    let (first, stdio) = protocol::recv_byte_with_fds(sock)?;
    if stdio.is_empty() {
        let first = [first];
        let mut framed = std::io::Read::chain(&first[..], &*sock);
        return Ok((stdio, protocol::read_frame(&mut framed, MAX_JOB_BYTES)?));
    }
    Ok((stdio, protocol::read_frame(sock, MAX_JOB_BYTES)?))
}

/// What a registered job server gets: the listening socket the host passed in, and who may
/// call it. SO_PEERCRED reports a peer outside this sandbox's pid namespace as pid 0 (the kernel
/// translates pids into the reader's namespace), so the allowed peer is: uid `host_uid`, pid 0.
/// Every process of the sandbox has a visible pid and an unprivileged uid.
#[derive(Debug)]
pub struct JobServerContext {
    /// The listening Unix socket (bound by the host outside the sandbox).
    pub listener: std::os::unix::net::UnixListener,
    /// The uid of the host (the manager).
    pub host_uid: u32,
    /// The secret the manager presents with its call.
    pub token: String,
    /// The host's setup channel: EOF on it means the host is gone, and the server must stop.
    pub host: UnixStream,
    /// A session's sandbox: serve job after job, until the host is gone.
    pub session: bool,
}

/// Runs one job inside the init process: `(files and steps, blobs, live stdio) -> (report,
/// blobs)`; the stdio descriptors (source, sink) are those the host passed on the setup
/// channel for a piped step ([`protocol::send_stdio`]), else none.
pub type Execute<'a> = dyn FnMut(JobSpec, Vec<Vec<u8>>, Vec<OwnedFd>) -> (JobReport, Vec<Vec<u8>>) + 'a;

/// A job server: serves exactly one job on `ctx.listener` through `execute`, then returns.
pub type JobServer = fn(ctx: JobServerContext, execute: &mut Execute<'_>) -> std::io::Result<()>;

static JOB_SERVER: std::sync::OnceLock<JobServer> = std::sync::OnceLock::new();

/// Register the job server used when the host prepares sandboxes with a worker socket (see
/// `SandboxConfig::worker_socket_dir`). Call before [`main_if_init`].
pub fn register_job_server(server: JobServer) {
    let _ = JOB_SERVER.set(server);
}

/// The job phase of the init process.
struct Executor<'a> {
    slots: Vec<Option<Slot>>,
    /// Supervisors of finished steps: reaped before the next step starts.
    to_reap: Vec<Pid>,
    /// Supervisors of slots this job does not use: killed at once, reaped after the report.
    unused: Vec<Pid>,
    setup: &'a Setup,
    sigfd: &'a SignalFd,
    used: bool,
    /// A session's cgroup handles, one set per slot, to fork each step's supervisor.
    handles: Vec<SlotHandles>,
}

/// A step slot's cgroup descriptors: `cgroup.procs` (one per controller hierarchy), and the
/// CPU, peak-memory and OOM files read for its facts.
struct SlotHandles {
    procs: Vec<OwnedFd>,
    cpu: OwnedFd,
    peak: OwnedFd,
    oom: OwnedFd,
}

impl SlotHandles {
    fn dup(&self) -> std::io::Result<Self> {
        Ok(Self {
            procs: self.procs.iter().map(OwnedFd::try_clone).collect::<Result<_, _>>()?,
            cpu: self.cpu.try_clone()?,
            peak: self.peak.try_clone()?,
            oom: self.oom.try_clone()?,
        })
    }
}

impl Executor<'_> {
    /// A session's fresh supervisor for `slot`, in place and confined before it returns.
    fn fork_slot(&self, slot: usize) -> std::io::Result<Slot> {
        let h = self
            .handles
            .get(slot)
            .ok_or_else(|| std::io::Error::other(format!("no cgroup slot {slot}")))?
            .dup()?;
        let mut s = prefork_slot(
            h.procs,
            h.cpu,
            h.peak,
            h.oom,
            &self.setup.rootfs,
            self.setup.apparmor_profile.as_deref(),
        )?;
        await_joined(&mut s)?;
        Ok(s)
    }

    fn execute(&mut self, job: JobSpec, blobs: Vec<Vec<u8>>, stdio: Vec<OwnedFd>) -> (JobReport, Vec<Vec<u8>>) {
        let mut stdio = Some(stdio).filter(|s| !s.is_empty());
        let mut report = JobReport::default();
        let mut out_blobs: Vec<Vec<u8>> = Vec::new();
        let session = self.setup.session;
        if self.used && !session {
            report.error = Some("this sandbox already ran its job".into());
            return (report, out_blobs);
        }
        self.used = true;
        let setup = self.setup;
        let work = Path::new(&setup.rootfs.work_dir);
        // Supervisors that are done or unused are reaped off the critical path (their
        // namespaces are torn down by the kernel meanwhile). A session keeps its unused ones
        // for a later job, and forks the ones this job uses afresh.
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if !session
                && !job.steps.iter().any(|st| st.slot == i)
                && let Some(unused) = slot.take()
            {
                let _ = nix::sys::signal::kill(unused.pid, Signal::SIGKILL);
                self.unused.push(unused.pid);
            }
        }
        if let Err(e) = write_files(work, &job, &blobs, setup.rootfs.uid, setup.rootfs.gid, session) {
            report.error = Some(e);
            return (report, out_blobs);
        }
        for step in &job.steps {
            if session && self.slots.get(step.slot).is_some_and(Option::is_none) {
                // The slot's last supervisor ran an earlier job; everything of it is gone first.
                reap_all(&mut self.to_reap);
                match self.fork_slot(step.slot) {
                    Ok(s) => self.slots[step.slot] = Some(s),
                    Err(e) => {
                        report.error = Some(format!("step slot setup: {e}"));
                        break;
                    }
                }
            }
            let Some(slot) = self.slots.get_mut(step.slot).and_then(Option::take) else {
                report.error = Some(format!("no cgroup slot {}", step.slot));
                break;
            };
            // Nothing of an earlier step may still run when the next one starts.
            reap_all(&mut self.to_reap);
            let stdin = step.stdin_blob.and_then(|i| blobs.get(i)).map(Vec::as_slice);
            let pid = slot.pid;
            let relay = match step.live {
                Some(kind) => match stdio.take().and_then(|fds| crate::relay::Relay::new(kind, fds)) {
                    Some(r) => Some(r),
                    None => {
                        report.error = Some(format!("step {} is live but its stdio was not passed", step.name));
                        break;
                    }
                },
                None => None,
            };
            let (mut facts, stdout, stderr) = run_step(step, slot, setup.cgroup_version, stdin, relay, self.sigfd);
            self.to_reap.push(pid);
            facts.stdout_blob = out_blobs.len();
            out_blobs.push(stdout);
            facts.stderr_blob = out_blobs.len();
            out_blobs.push(stderr);
            let ok = facts.exit_code == Some(0) && facts.start_error.is_none() && !facts.output_limit_hit;
            report.steps.push(facts);
            if !ok {
                break;
            }
        }
        // Artifacts only after every step ran and exited 0; output files whatever the steps
        // did. Every process of the steps is gone first: nothing changes the work dir while it
        // is read.
        let succeeded = report.error.is_none()
            && report.steps.len() == job.steps.len()
            && report.steps.iter().all(|f| f.exit_code == Some(0));
        if let Some(c) = &job.collect
            && report.error.is_none()
            && (succeeded || !c.patterns.is_empty())
        {
            reap_all(&mut self.to_reap);
            let taken = if c.patterns.is_empty() {
                crate::collect::artifacts(work, &job, c)
            } else {
                let (files, refused) = crate::collect::outputs(work, c);
                report.refused = refused;
                Ok(files)
            };
            match taken {
                Ok(files) => {
                    for (name, mode, data) in files {
                        report.files.push(protocol::CollectedFile {
                            name,
                            mode,
                            blob: out_blobs.len(),
                        });
                        out_blobs.push(data);
                    }
                }
                Err(e) => report.collect_error = Some(e),
            }
        }
        (report, out_blobs)
    }
}

/// Wait for the given supervisors, which exit on their own once their program is done or were
/// killed (each takes its pid namespace down with it). This process forks nothing after
/// pre-warming, so a pid here can only be one of ours, reaped or not.
fn reap_all(pids: &mut Vec<Pid>) {
    for pid in pids.drain(..) {
        while let Err(Errno::EINTR) = waitpid(pid, None) {}
    }
}

/// Fork the slot supervisor S into its own pid namespace, where it joins the step's cgroups
/// and confines itself (see [`await_joined`]).
fn prefork_slot(
    procs: Vec<OwnedFd>,
    cpu: OwnedFd,
    peak: OwnedFd,
    oom: OwnedFd,
    rootfs: &rootfs::RootfsConfig,
    apparmor: Option<&str>,
) -> std::io::Result<Slot> {
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (exec_r, exec_w) = pipe()?;
    let (in_r, in_w) = pipe()?;
    let (go_r, go_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    match crate::sys::fork_pid1()? {
        None => {
            let keep: Vec<i32> = procs
                .iter()
                .chain([&out_w, &err_w, &exec_w, &in_r, &go_r, &status_w])
                .map(AsRawFd::as_raw_fd)
                .collect();
            close_all_but(&keep);
            let code = slot_main(
                procs,
                SlotEnds {
                    out_w,
                    err_w,
                    exec_w,
                    in_r,
                    go_r,
                    status_w,
                },
                rootfs,
                apparmor,
            );
            std::process::exit(code);
        }
        Some(pid) => {
            drop((out_w, err_w, exec_w, in_r, go_r, status_w));
            let status = std::fs::File::from(status_r);
            Ok(Slot {
                pid,
                cpu,
                peak,
                oom,
                go: std::fs::File::from(go_w),
                status,
                out: out_r,
                err: err_r,
                exec_err: exec_r,
                stdin: in_w,
            })
        }
    }
}

/// Wait for S's [`SupervisorStatus::Joined`]: it is in its cgroups and confined.
fn await_joined(slot: &mut Slot) -> std::io::Result<()> {
    match protocol::read_frame::<SupervisorStatus>(&mut slot.status, 0)?.0 {
        SupervisorStatus::Joined => Ok(()),
        SupervisorStatus::Failed { error } => Err(std::io::Error::other(format!("step slot setup: {error}"))),
        other => Err(std::io::Error::other(format!("step slot setup: unexpected {other:?}"))),
    }
}

/// Close every descriptor above 2 except `keep` (S must not hold other slots' pipe ends, or
/// their readers would never see EOF).
fn close_all_but(keep: &[i32]) {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect();
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            let _ = nix::unistd::close(fd);
        }
    }
}

struct SlotEnds {
    out_w: OwnedFd,
    err_w: OwnedFd,
    exec_w: OwnedFd,
    in_r: OwnedFd,
    go_r: OwnedFd,
    status_w: OwnedFd,
}

/// S: confine itself now (pre-warm: cgroups, identity, Landlock, seccomp), wait for the step,
/// fork the program, reap, report its wait status, exit — which kills every process left in
/// this pid namespace.
fn slot_main(procs: Vec<OwnedFd>, ends: SlotEnds, rootfs: &rootfs::RootfsConfig, apparmor: Option<&str>) -> i32 {
    let mut status = std::fs::File::from(ends.status_w);
    let raw: Vec<i32> = procs.iter().map(AsRawFd::as_raw_fd).collect();
    let landlock = LandlockPlan::standard(&rootfs.work_dir);
    let slot = payload::SlotSpec {
        cgroup_procs: &raw,
        uid: rootfs.uid,
        gid: rootfs.gid,
        landlock: &landlock,
        apparmor,
    };
    if let Err(e) = payload::enter_slot(&mut Linux, &slot) {
        let _ = status.write_all(
            &SupervisorStatus::Failed {
                error: format!("{e}: {}", e.source),
            }
            .frame(),
        );
        return 1;
    }
    drop(procs);
    // From here on S is unprivileged, Landlocked and under seccomp, like the program it forks.
    // Tell the init process we are in place: the sandbox is only Ready once every slot is.
    if status.write_all(&SupervisorStatus::Joined.frame()).is_err() {
        return 1;
    }
    let mut go = std::fs::File::from(ends.go_r);
    let step: StepSpec = match protocol::read_frame(&mut go, 0) {
        Ok((s, _)) => s,
        Err(_) => return 0, // unused slot: the job did not need this step
    };
    let to_c = |s: &String| CString::new(s.as_bytes()).map_err(|e| e.to_string());
    let argv: Result<Vec<CString>, String> = step.argv.iter().map(to_c).collect();
    let env: Result<Vec<CString>, String> = step.env.iter().map(to_c).collect();
    let (argv, env) = match (argv, env) {
        (Ok(a), Ok(e)) => (a, e),
        _ => {
            let _ = status.write_all(
                &SupervisorStatus::Failed {
                    error: "argument contains NUL".into(),
                }
                .frame(),
            );
            return 1;
        }
    };
    let spec = PayloadSpec {
        stdio: [
            ends.in_r.as_raw_fd(),
            ends.out_w.as_raw_fd(),
            if step.merge_stderr { &ends.out_w } else { &ends.err_w }.as_raw_fd(),
        ],
        cwd: rootfs.work_dir.clone(),
        cpu_seconds: step.cpu_time_ms.div_ceil(1000) + 1,
        file_bytes: step.file_bytes,
        open_files: step.open_files,
        stack_bytes: step.stack_bytes,
        argv,
        env,
    };
    // vfork-style: the program's process borrows S's memory until its exec, so starting it
    // copies no page tables; S waits meanwhile. The pipeline only makes system calls.
    let mut stack = vec![0u8; 256 << 10];
    let exec_w = ends.exec_w.as_raw_fd();
    let child = match crate::sys::vfork_spawn(&mut stack, || {
        let err = payload::enter(&mut Linux, &spec);
        let msg = format!("{err}: {}", err.source);
        let _ = nix::unistd::write(unsafe_free_borrow(exec_w), msg.as_bytes());
        127
    }) {
        Ok(pid) => pid,
        Err(e) => {
            let _ = status.write_all(
                &SupervisorStatus::Failed {
                    error: format!("fork: {e}"),
                }
                .frame(),
            );
            return 1;
        }
    };
    drop((ends.in_r, ends.out_w, ends.err_w, ends.exec_w));
    // As PID 1 here, orphans of the program are reparented to us: reap until the program
    // itself is done.
    loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(WaitStatus::Exited(pid, code)) if pid == child => {
                let _ = status.write_all(&SupervisorStatus::Exited { code }.frame());
                return 0;
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == child => {
                let _ = status.write_all(&SupervisorStatus::Signaled { signal: sig as i32 }.frame());
                return 0;
            }
            Ok(_) | Err(Errno::EINTR) => continue,
            Err(e) => {
                let _ = status.write_all(
                    &SupervisorStatus::Failed {
                        error: format!("waitpid: {e}"),
                    }
                    .frame(),
                );
                return 1;
            }
        }
    }
}

/// A borrowed view of a descriptor S keeps open until after the program's process is gone.
fn unsafe_free_borrow(fd: i32) -> std::os::fd::BorrowedFd<'static> {
    crate::sys::borrow_fd(fd)
}

/// Write the job's files into the work dir. A fresh work dir gets new files only; a session's
/// replaces a file of the same name (never through a link: `O_NOFOLLOW`, and the directories
/// on the way are checked as for a fresh one).
fn write_files(work: &Path, job: &JobSpec, blobs: &[Vec<u8>], uid: u32, gid: u32, replace: bool) -> Result<(), String> {
    for f in &job.files {
        if !protocol::valid_work_path(&f.name) {
            return Err(format!("invalid file name {:?}", f.name));
        }
        let data = blobs.get(f.blob).ok_or("missing file contents")?;
        make_parents(work, &f.name, uid, gid)?;
        let path = work.join(&f.name);
        let mut open = std::fs::OpenOptions::new();
        open.write(true)
            .mode(f.mode & 0o755)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
        if replace {
            open.create(true).truncate(true);
        } else {
            open.create_new(true);
        }
        let mut file = open.open(&path).map_err(|e| format!("create {}: {e}", f.name))?;
        if replace {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(f.mode & 0o755))
                .map_err(|e| format!("chmod {}: {e}", f.name))?;
        }
        file.write_all(data).map_err(|e| format!("write {}: {e}", f.name))?;
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(|e| format!("chown {}: {e}", f.name))?;
    }
    Ok(())
}

/// The directories on the way to `name` (a [`protocol::valid_work_path`]) in the work dir,
/// owned by the program's user so it may write there too. Nothing but this process has touched
/// the fresh work dir yet, and what is in the way must be a real directory (`lstat`), never a
/// link: a path cannot leave the work dir.
fn make_parents(work: &Path, name: &str, uid: u32, gid: u32) -> Result<(), String> {
    let mut dir = work.to_path_buf();
    let comps: Vec<&str> = name.split('/').collect();
    for c in &comps[..comps.len() - 1] {
        dir.push(c);
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.is_dir() => continue,
            Ok(_) => return Err(format!("{name}: {c} is already a file")),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{name}: {e}")),
        }
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .map_err(|e| format!("create the directory of {name}: {e}"))?;
        std::os::unix::fs::lchown(&dir, Some(uid), Some(gid)).map_err(|e| format!("chown {name}: {e}"))?;
    }
    Ok(())
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC)?)
}

pub(crate) fn set_nonblocking(fd: impl AsFd) {
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
}

fn pread_text(fd: &OwnedFd) -> String {
    let mut buf = [0u8; 4096];
    match nix::sys::uio::pread(fd, &mut buf, 0) {
        Ok(n) => String::from_utf8_lossy(&buf[..n]).into_owned(),
        Err(_) => String::new(),
    }
}

/// A bounded reader of one output pipe.
struct Capture {
    fd: Option<OwnedFd>,
    data: Vec<u8>,
    cap: usize,
    over: bool,
}

impl Capture {
    fn new(fd: OwnedFd, cap: u64) -> Self {
        set_nonblocking(&fd);
        Self {
            fd: Some(fd),
            data: Vec::new(),
            cap: cap.min(usize::MAX as u64) as usize,
            over: false,
        }
    }

    /// Read until EOF (every writer is gone).
    fn drain(&mut self) {
        if let Some(fd) = &self.fd {
            let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(OFlag::empty()));
        }
        while self.pump() {}
    }

    /// Read what is available; false once EOF was seen.
    fn pump(&mut self) -> bool {
        self.pump_into(None)
    }

    /// [`Capture::pump`], handing the bytes read to `relay` as `stream` too: every byte when
    /// `capped` is false (the relay bounds itself by reading only while it has room, see
    /// [`crate::relay::ROOM`]), else only those within the cap.
    fn pump_into(&mut self, mut relay: Option<(&mut crate::relay::Relay, crate::relay::Stream, bool)>) -> bool {
        let Some(fd) = &self.fd else { return false };
        let mut buf = [0u8; 65536];
        loop {
            match nix::unistd::read(fd, &mut buf) {
                Ok(0) => {
                    self.fd = None;
                    return false;
                }
                Ok(n) => {
                    let room = self.cap.saturating_sub(self.data.len());
                    self.data.extend_from_slice(&buf[..n.min(room)]);
                    if n > room {
                        self.over = true;
                    }
                    if let Some((r, stream, capped)) = relay.as_mut() {
                        r.push(*stream, &buf[..if *capped { n.min(room) } else { n }]);
                        if !r.takes(*stream) {
                            return true;
                        }
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(_) => return true,
            }
        }
    }
}

/// Whether the step wrote past its output limit on a stream that is capped.
fn over_cap(relay: Option<&crate::relay::Relay>, out: &Capture, err: &Capture) -> bool {
    let uncapped = |stream| relay.is_some_and(|r| r.uncapped(stream));
    (out.over && !uncapped(Stream::Out)) || (err.over && !uncapped(Stream::Err))
}

/// What a live step wrote after the loop saw its supervisor go, handed over: every process of
/// the step is gone, so its pipes hold the rest and then end of file. A side that does not
/// read gets [`HAND_OVER`] to take it; what it leaves is dropped (it ends by its own limits).
fn hand_over(r: &mut crate::relay::Relay, out: &mut Capture, err: &mut Capture) {
    let until = Instant::now() + HAND_OVER;
    let mut none = None;
    loop {
        for (c, stream) in [(&mut *out, Stream::Out), (&mut *err, Stream::Err)] {
            if !r.carries(stream) {
                c.pump();
            } else if c.fd.is_some() && r.takes(stream) {
                let capped = !r.uncapped(stream);
                c.pump_into(Some((r, stream, capped)));
                if c.fd.is_none() {
                    r.done(stream);
                }
            }
        }
        let _ = r.forward(&mut none);
        let open = out.fd.is_some() || err.fd.is_some();
        if (!open && r.settled()) || Instant::now() >= until {
            return;
        }
        let mut pfds = Vec::new();
        r.interest(None, &mut pfds);
        let _ = poll(&mut pfds, PollTimeout::from(10u8));
    }
}

/// How long a live step's last output may take to be handed over.
const HAND_OVER: Duration = Duration::from_millis(250);

/// Deliver `sig` to the program of the step whose supervisor is `supervisor`: to each of the
/// supervisor's children (the program, and nothing else: S forks only it). The kernel lists
/// them in procfs; a program that already exited has none.
fn signal_program(supervisor: Pid, sig: i32) {
    let Ok(sig) = Signal::try_from(sig) else { return };
    let path = format!("/proc/{supervisor}/task/{supervisor}/children");
    let Ok(list) = std::fs::read_to_string(path) else {
        return;
    };
    for child in list.split_whitespace().filter_map(|p| p.parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(Pid::from_raw(child), sig);
    }
}

fn run_step(
    step: &StepSpec,
    slot: Slot,
    version: Version,
    stdin: Option<&[u8]>,
    relay: Option<crate::relay::Relay>,
    sigfd: &SignalFd,
) -> (StepFacts, Vec<u8>, Vec<u8>) {
    let mut facts = StepFacts::default();
    match run_step_inner(step, slot, version, stdin, relay, sigfd, &mut facts) {
        Ok((o, e)) => (facts, o, e),
        Err(e) => {
            facts.start_error = Some(e.to_string());
            (facts, Vec::new(), Vec::new())
        }
    }
}

fn run_step_inner(
    step: &StepSpec,
    slot: Slot,
    version: Version,
    stdin: Option<&[u8]>,
    mut relay: Option<crate::relay::Relay>,
    sigfd: &SignalFd,
    facts: &mut StepFacts,
) -> std::io::Result<(Vec<u8>, Vec<u8>)> {
    let Slot {
        pid,
        cpu,
        peak,
        oom,
        mut go,
        mut status,
        out,
        err,
        exec_err,
        stdin: in_w,
    } = slot;
    let cpu_before = cgroup::parse_cpu_ns(version, &pread_text(&cpu));
    let start = Instant::now();
    protocol::write_frame(&mut go, step, &[])?;
    drop(go);
    let mut out = Capture::new(out, step.output_bytes);
    let mut err = Capture::new(err, step.output_bytes);
    let mut stdin_left: &[u8] = stdin.unwrap_or_default();
    // A live step without a stdin blob reads the relay's source; a streamed job that has one
    // reads it as any job does.
    let relay_stdin = relay.is_some() && stdin.is_none();
    // No stdin (or an empty one) is an empty, closed stdin: the program reads EOF at once
    // instead of blocking until its wall limit.
    let mut in_w = if stdin_left.is_empty() && !relay_stdin {
        drop(in_w);
        None
    } else {
        Some(in_w)
    };
    if let Some(w) = &in_w {
        set_nonblocking(w);
    }
    set_nonblocking(status.as_fd());
    let mut reported: Option<SupervisorStatus> = None;
    let wall_limit = Duration::from_millis(step.wall_time_ms);
    let cpu_limit_ns = step.cpu_time_ms.saturating_mul(1_000_000);
    let mut supervisor_gone = false;
    let mut killed = false;
    let mut end = start;
    loop {
        // S writes the program's wait status as one frame in one write(2) (atomic: below
        // PIPE_BUF), then exits: one read holds all of it.
        let mut buf = [0u8; 4096];
        if reported.is_none()
            && let Ok(n) = status.read(&mut buf)
            && n > 0
        {
            reported =
                Some(SupervisorStatus::parse(&buf[..n]).unwrap_or_else(|error| SupervisorStatus::Failed { error }));
            end = Instant::now();
        }
        while let Ok(Some(_)) = sigfd.read_signal() {}
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(_) | Err(_) => supervisor_gone = true,
        }
        // Done: the program was reaped and its output is complete (EOF: nothing holds the
        // pipes), or its supervisor is gone (which took the whole step namespace with it).
        // A piped step is done once what the program wrote reached the other side too (or the
        // other side is gone; it ends by its own limits at the latest).
        let handed_over = relay.as_ref().is_none_or(crate::relay::Relay::settled);
        if (reported.is_some() && out.fd.is_none() && err.fd.is_none() && handed_over) || supervisor_gone {
            if reported.is_none() {
                end = Instant::now();
            }
            break;
        }
        let elapsed = start.elapsed();
        let used = cgroup::parse_cpu_ns(version, &pread_text(&cpu)).saturating_sub(cpu_before);
        if reported.is_none() {
            if elapsed >= wall_limit {
                facts.wall_limit_hit = true;
            } else if used >= cpu_limit_ns {
                facts.cpu_limit_hit = true;
            }
        }
        // A peer's stdout goes to the other side: its capture is a transcript, and only stderr
        // counts against the output limit.
        if over_cap(relay.as_ref(), &out, &err) {
            facts.output_limit_hit = true;
        }
        if facts.wall_limit_hit || facts.cpu_limit_hit || facts.output_limit_hit {
            // Killing S, PID 1 of the step's namespace, takes every process of the step.
            let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
            killed = true;
            end = Instant::now();
            break;
        }
        // Sleep until the earliest moment a limit could be reached, or an event arrives.
        let cpus = step.cpu_millis.max(1) as u128;
        let cpu_left = Duration::from_nanos(
            ((cpu_limit_ns.saturating_sub(used)) as u128 * 1000 / cpus).min(u64::MAX as u128) as u64,
        );
        let wait = wall_limit
            .saturating_sub(elapsed)
            .min(cpu_left)
            .clamp(Duration::from_millis(1), Duration::from_millis(250));
        let mut pfds = vec![PollFd::new(sigfd.as_fd(), PollFlags::POLLIN)];
        if reported.is_none() {
            pfds.push(PollFd::new(status.as_fd(), PollFlags::POLLIN));
        }
        for (f, stream) in [(&out, Stream::Out), (&err, Stream::Err)] {
            if let Some(fd) = f.fd.as_ref()
                && relay.as_ref().is_none_or(|r| !r.carries(stream) || r.takes(stream))
            {
                pfds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
            }
        }
        if let Some(r) = &relay {
            r.interest(in_w.as_ref().filter(|_| relay_stdin), &mut pfds);
        }
        if let Some(f) = in_w.as_ref()
            && !relay_stdin
        {
            pfds.push(PollFd::new(f.as_fd(), PollFlags::POLLOUT));
        }
        let timeout = PollTimeout::try_from(wait.as_millis().max(1) as i32).unwrap_or(PollTimeout::MAX);
        match poll(&mut pfds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
        drop(pfds);
        match relay.as_mut() {
            Some(r) => {
                for (c, stream) in [(&mut out, Stream::Out), (&mut err, Stream::Err)] {
                    if !r.carries(stream) {
                        c.pump();
                    } else if r.takes(stream) {
                        let was_open = c.fd.is_some();
                        let capped = !r.uncapped(stream);
                        c.pump_into(Some((r, stream, capped)));
                        if was_open && c.fd.is_none() {
                            r.done(stream);
                        }
                    }
                }
                let mut unused = None;
                for sig in r.forward(if relay_stdin { &mut in_w } else { &mut unused }) {
                    signal_program(pid, sig);
                }
            }
            None => {
                out.pump();
                err.pump();
            }
        }
        if let Some(w) = &in_w
            && !relay_stdin
        {
            match nix::unistd::write(w, stdin_left) {
                Ok(n) => stdin_left = &stdin_left[n..],
                Err(Errno::EAGAIN) | Err(Errno::EINTR) => {}
                Err(_) => stdin_left = &[], // EPIPE: the program closed its stdin
            }
            if stdin_left.is_empty() {
                in_w = None; // EOF for the program
            }
        }
    }
    if killed || supervisor_gone {
        // Returns once the step's namespace is empty (pid_namespaces(7)): the pipes reach EOF.
        while let Err(Errno::EINTR) = waitpid(pid, None) {}
    }
    drop(in_w);
    if let Some(r) = relay.as_mut()
        && !killed
    {
        hand_over(r, &mut out, &mut err);
    } else if !killed {
        out.pump();
        err.pump();
    } else {
        out.drain();
        err.drain();
    }
    let wall = end.duration_since(start);
    let cpu_ns = cgroup::parse_cpu_ns(version, &pread_text(&cpu)).saturating_sub(cpu_before);
    facts.wall_time_us = wall.as_micros() as u64;
    facts.wall_time_ms = wall.as_millis() as u64;
    facts.cpu_time_us = cpu_ns / 1000;
    facts.cpu_time_ms = cpu_ns / 1_000_000;
    facts.memory_kb = cgroup::parse_peak_bytes(version, &pread_text(&peak)) / 1024;
    facts.oom_kills = cgroup::parse_oom_kills(version, &pread_text(&oom));
    facts.truncated = out.over || err.over;
    if over_cap(relay.as_ref(), &out, &err) {
        facts.output_limit_hit = true;
    }
    // The other side sees end of file (and its writes fail) now at the latest.
    drop(relay);
    if reported.is_none() {
        let mut rest = Vec::new();
        let _ = status.read_to_end(&mut rest);
        if !rest.is_empty() {
            reported = Some(SupervisorStatus::parse(&rest).unwrap_or_else(|error| SupervisorStatus::Failed { error }));
        }
    }
    match reported {
        Some(SupervisorStatus::Exited { code }) => facts.exit_code = Some(code),
        Some(SupervisorStatus::Signaled { signal }) => facts.signal = Some(signal),
        Some(SupervisorStatus::Failed { error }) => facts.start_error = Some(error),
        // No word from S: we killed it (limits), or it died some other way.
        None if killed => facts.signal = Some(Signal::SIGKILL as i32),
        other => facts.start_error = Some(format!("step supervisor ended without a status ({other:?})")),
    }
    let mut exec_text = String::new();
    let mut exec_file = std::fs::File::from(exec_err);
    set_nonblocking(exec_file.as_fd());
    let _ = exec_file.read_to_string(&mut exec_text);
    if !exec_text.is_empty() {
        facts.start_error = Some(exec_text);
    }
    Ok((out.data, err.data))
}
