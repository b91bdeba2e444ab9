//! The host side: prepare sandboxes ahead of time, hand each one job, destroy it.
//!
//! [`Sandboxes::prepare`] does everything expensive (clone into new namespaces — the network
//! namespace is the costly one —, build the root, create the step cgroups) and returns a
//! [`Prepared`] sandbox whose init process waits on its socket. [`Prepared::run`] then costs
//! about one process spawn. A prepared sandbox serves exactly one job; dropping it kills its
//! init (and with it the whole pid namespace) and removes its cgroups.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::cgroup::{CgroupError, CgroupLimits, Layout, StepCgroup};
use crate::limits::Limits;
use crate::protocol::{self, FileSpec, JobReport, JobSpec, Setup, SetupReply, StepFacts, StepSpec};
use crate::rootfs::{self, RootfsConfig};
use crate::sys::{self, SpawnArgs};
use crate::template::Template;

/// Errors of the host side.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// cgroup setup.
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    /// Starting the init process.
    #[error("spawn sandbox init {exe}")]
    Spawn {
        /// The init executable.
        exe: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// Talking to the init process.
    #[error("sandbox channel")]
    Channel(#[source] io::Error),
    /// The init process could not build the sandbox.
    #[error("sandbox setup failed: {0}")]
    Setup(String),
    /// This build has no seccomp policy for the architecture.
    #[error("no seccomp policy for this architecture; refusing to run unconfined")]
    NoSeccomp,
    /// A job had more steps than the sandbox has cgroup slots, or a bad file name.
    #[error("invalid job: {0}")]
    InvalidJob(String),
}

/// How sandboxes are built.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// Executable that runs [`crate::init::main_if_init`] first thing (default: this one).
    pub init_exe: PathBuf,
    /// `(host, inside)` paths bound read-only.
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// Where the root is assembled inside the private mount namespace.
    pub staging: PathBuf,
    /// Work directory inside.
    pub work_dir: String,
    /// Size caps of the writable tmpfs mounts, bytes.
    pub work_bytes: u64,
    /// /tmp cap.
    pub tmp_bytes: u64,
    /// /dev/shm cap.
    pub shm_bytes: u64,
    /// Where instances hold their lock files (see [`crate::cgroup::owner`]).
    pub instance_dir: PathBuf,
    /// One uid (and gid) per live sandbox from this range (root only; see [`crate::uids`]).
    /// `None`, or without root: every sandbox runs as `uid`/`gid`.
    pub uids: Option<crate::uids::UidRange>,
    /// The unprivileged identity of the program when no range is used.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// CPU bandwidth per step in thousandths of a CPU.
    pub cpu_millis: u64,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// RLIMIT_STACK cap, bytes.
    pub stack_bytes: u64,
    /// Remount the cgroup2 hierarchy with `favordynmods` (host-wide; see
    /// [`crate::cgroup::favor_dynmods`]) so that joining a step cgroup does not wait for an RCU
    /// grace period. Root only.
    pub favor_dynmods: bool,
    /// Limits written into each slot's cgroups while pre-warming (compile, run): a job whose
    /// limits match pays no cgroup writes on its critical path.
    pub prewarm_limits: [Limits; SLOTS],
    /// Fork init processes from a template process instead of executing `init_exe` for each
    /// sandbox (saves the exec; see [`crate::template`]).
    pub use_template: bool,
    /// Serve each sandbox's job on a Unix socket in this directory (through the job server the
    /// binary registered, see [`crate::init::register_job_server`]) instead of the channel.
    pub worker_socket_dir: Option<PathBuf>,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            init_exe: PathBuf::from("/proc/self/exe"),
            binds: Vec::new(),
            staging: PathBuf::from(if std::path::Path::new("/mnt").is_dir() {
                "/mnt"
            } else {
                "/tmp"
            }),
            work_dir: "/work".into(),
            work_bytes: 64 << 20,
            tmp_bytes: 64 << 20,
            shm_bytes: 16 << 20,
            uids: Some(crate::uids::UidRange::default()),
            instance_dir: PathBuf::from(crate::cgroup::owner::DEFAULT_DIR),
            uid: 65534,
            gid: 65534,
            cpu_millis: 1000,
            open_files: 512,
            stack_bytes: 64 << 20,
            favor_dynmods: true,
            use_template: true,
            worker_socket_dir: None,
            prewarm_limits: [
                Limits {
                    cpu_time_ms: 10_000,
                    wall_time_ms: 20_000,
                    memory_mb: 512,
                    pids: 64,
                    output_bytes: 65536,
                    stack_mb: None,
                    file_size_mb: None,
                },
                Limits {
                    cpu_time_ms: 2_000,
                    wall_time_ms: 5_000,
                    memory_mb: 256,
                    pids: 16,
                    output_bytes: 1 << 20,
                    stack_mb: None,
                    file_size_mb: None,
                },
            ],
        }
    }
}

/// Number of step slots (cgroups) per sandbox: compile and run.
pub const SLOTS: usize = 2;

/// A factory of sandboxes.
#[derive(Debug)]
pub struct Sandboxes {
    cfg: SandboxConfig,
    layout: Layout,
    rootfs: RootfsConfig,
    counter: AtomicU64,
    flags: CloneFlags,
    /// The fork server; replaced when it died (see [`Sandboxes::template`]).
    template: std::sync::Mutex<Option<Arc<Template>>>,
    /// Template restarts so far.
    restarts: AtomicU64,
    /// Per-sandbox uids, when a range is in use.
    uids: Option<crate::uids::UidPool>,
    /// This instance: names its cgroups, and its held lock tells other instances it lives.
    instance: crate::cgroup::owner::Instance,
}

/// A sandbox ready for one job.
#[derive(Debug)]
pub struct Prepared {
    id: String,
    pid: Pid,
    sock: UnixStream,
    template: Option<Arc<Template>>,
    socket: Option<PathBuf>,
    token: String,
    slots: Vec<StepCgroup>,
    /// Time to create it (clone, root, cgroups), host-measured.
    pub creation: Duration,
    /// Time the init process spent building the root.
    pub setup_inside: Duration,
    cpu_millis: u64,
    file_bytes: u64,
    open_files: u64,
    stack_bytes: u64,
    reaped: bool,
    used: bool,
    applied: Vec<Option<CgroupLimits>>,
    /// The sandbox's own uid, released (after `destroy`) when this drops.
    uid: Option<crate::uids::Lease>,
    /// A session's: it takes job after job.
    session: bool,
}

/// A file for the work dir.
#[derive(Debug, Clone)]
pub struct JobFile {
    /// Plain name.
    pub name: String,
    /// Contents.
    pub contents: Vec<u8>,
    /// Mode bits (0644, 0755).
    pub mode: u32,
}

/// One step as the host describes it.
#[derive(Debug, Clone)]
pub struct Step {
    /// "compile" or "run".
    pub name: String,
    /// Program and arguments (absolute program path or relative to the work dir).
    pub argv: Vec<String>,
    /// Complete environment.
    pub env: Vec<String>,
    /// stdin contents (else /dev/null).
    pub stdin: Option<Vec<u8>>,
    /// Live stdio: relayed to and from the descriptors given to [`Prepared::pass_stdio`] (an
    /// interactor in another sandbox, or the manager streaming the job).
    pub live: Option<protocol::Live>,
    /// stderr goes to the stdout pipe (interleaved as written).
    pub merge_stderr: bool,
    /// Limits.
    pub limits: Limits,
}

/// What a step produced.
#[derive(Debug, Clone, Default)]
pub struct StepOutput {
    /// Kernel facts.
    pub facts: StepFacts,
    /// stdout, capped.
    pub stdout: Vec<u8>,
    /// stderr, capped.
    pub stderr: Vec<u8>,
}

impl Sandboxes {
    /// Check the host (cgroups, seccomp policy, LSMs) and resolve the root filesystem plan.
    pub fn new(cfg: SandboxConfig) -> Result<Self, SandboxError> {
        if !crate::seccomp::supported() {
            return Err(SandboxError::NoSeccomp);
        }
        let layout = Layout::from_host()?;
        // Without root the host-wide directory may not be writable: a per-user one still
        // tells this user's instances apart.
        let fallback = std::env::temp_dir().join(format!("wolf-sandbox-{}/instances", nix::unistd::geteuid()));
        let instance = crate::cgroup::owner::Instance::new(&cfg.instance_dir)
            .or_else(|_| crate::cgroup::owner::Instance::new(&fallback))
            .map_err(|e| {
                SandboxError::Setup(format!(
                    "cannot register this instance in {}: {e}",
                    cfg.instance_dir.display()
                ))
            })?;
        let stale = layout.sweep_stale(&instance);
        if stale > 0 {
            tracing::info!(cgroups = stale, "removed step cgroups left by dead processes");
        }
        if cfg.favor_dynmods && nix::unistd::geteuid().is_root() {
            let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            match crate::cgroup::favor_dynmods(&mountinfo) {
                Ok(Some(point)) => {
                    tracing::info!(mount = %point.display(), "remounted cgroup2 with favordynmods: cgroup migrations no longer wait for an RCU grace period")
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "could not set favordynmods; each sandbox start may wait ~10-20 ms for cgroup migration")
                }
            }
        }
        crate::lsm::log_host_lsms();
        let binds = rootfs::binds_for(&cfg.binds, &cfg.work_dir, rootfs::resolve_host);
        let rootfs = RootfsConfig {
            staging: cfg.staging.clone(),
            binds,
            work_dir: cfg.work_dir.clone(),
            work_bytes: cfg.work_bytes,
            tmp_bytes: cfg.tmp_bytes,
            shm_bytes: cfg.shm_bytes,
            uid: cfg.uid,
            gid: cfg.gid,
            hostname: "wolf".into(),
        };
        let mut flags = CloneFlags::CLONE_NEWNS
            | CloneFlags::CLONE_NEWPID
            | CloneFlags::CLONE_NEWNET
            | CloneFlags::CLONE_NEWIPC
            | CloneFlags::CLONE_NEWUTS;
        if !nix::unistd::geteuid().is_root() {
            flags |= CloneFlags::CLONE_NEWUSER;
        }
        let template = if cfg.use_template {
            match Template::start(&cfg.init_exe) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    tracing::warn!(error = %e, "no sandbox template yet; the next preparation starts one");
                    None
                }
            }
        } else {
            None
        };
        let uids = match &cfg.uids {
            Some(range) if nix::unistd::geteuid().is_root() => {
                let pool = crate::uids::UidPool::new(range.clone()).map_err(|e| SandboxError::Setup(e.to_string()))?;
                tracing::debug!(base = range.base, count = range.count, "one uid per sandbox");
                Some(pool)
            }
            _ => None,
        };
        Ok(Self {
            instance,
            uids,
            template: std::sync::Mutex::new(template),
            restarts: AtomicU64::new(0),
            cfg,
            layout,
            rootfs,
            counter: AtomicU64::new(0),
            flags,
        })
    }

    /// The cgroup layout in use.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The template to fork from: the running one, or a new one when it died (killed, OOM,
    /// crashed). Every sandbox forked by a dead template died with it (parent-death signal);
    /// the new template serves the next preparations.
    fn template(&self) -> Result<Option<Arc<Template>>, SandboxError> {
        if !self.cfg.use_template {
            return Ok(None);
        }
        let mut slot = self.template.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = slot.as_ref()
            && t.alive()
        {
            return Ok(Some(t.clone()));
        }
        let t = Arc::new(
            Template::start(&self.cfg.init_exe).map_err(|source| SandboxError::Spawn {
                exe: self.cfg.init_exe.clone(),
                source,
            })?,
        );
        if slot.is_some() {
            let n = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
            tracing::warn!(
                restarts = n,
                pid = t.pid(),
                "the sandbox template had died; started a new one"
            );
        }
        *slot = Some(t.clone());
        Ok(Some(t))
    }

    /// Times the template was found dead and started again.
    pub fn template_restarts(&self) -> u64 {
        self.restarts.load(Ordering::Relaxed)
    }

    /// The running template's pid, if there is one (chaos tooling kills it).
    pub fn template_pid(&self) -> Option<u32> {
        self.template
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|t| t.pid())
    }

    /// Build one sandbox up to the point where it waits for its job.
    pub fn prepare(&self) -> Result<Prepared, SandboxError> {
        self.prepare_with(false)
    }

    /// A session's sandbox: it runs job after job in the same work dir (every layer as for a
    /// job; each step in a fresh step supervisor), until it is dropped.
    pub fn prepare_session(&self) -> Result<Prepared, SandboxError> {
        self.prepare_with(true)
    }

    fn prepare_with(&self, session: bool) -> Result<Prepared, SandboxError> {
        let started = Instant::now();
        let uid = match &self.uids {
            Some(pool) => Some(pool.lease().map_err(|e| SandboxError::Setup(e.to_string()))?),
            None => None,
        };
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", self.instance.id());
        let slots = (0..SLOTS)
            .map(|i| StepCgroup::create(&self.layout, &format!("{id}-{i}")))
            .collect::<Result<Vec<_>, _>>()?;
        let (host_end, init_end) = UnixStream::pair().map_err(SandboxError::Channel)?;
        let args =
            SpawnArgs::new(&self.cfg.init_exe, &["wolf-sandbox-init", crate::init::INIT_ARG]).map_err(|source| {
                SandboxError::Spawn {
                    exe: self.cfg.init_exe.clone(),
                    source,
                }
            })?;
        let init_fd = OwnedFd::from(init_end);
        let template = self.template()?;
        let spawned = match &template {
            Some(t) => t.spawn(self.flags, &init_fd),
            None => sys::spawn_init(self.flags, &init_fd, &args),
        };
        let pid = spawned.map_err(|source| SandboxError::Spawn {
            exe: self.cfg.init_exe.clone(),
            source,
        })?;
        drop(init_fd);
        let mut p = Prepared {
            id,
            pid,
            sock: host_end,
            template,
            socket: None,
            token: random_token()?,
            slots,
            creation: Duration::ZERO,
            setup_inside: Duration::ZERO,
            cpu_millis: self.cfg.cpu_millis,
            file_bytes: self.cfg.work_bytes,
            open_files: self.cfg.open_files,
            stack_bytes: self.cfg.stack_bytes,
            reaped: false,
            used: false,
            applied: vec![None; SLOTS],
            uid: None,
            session,
        };
        let mut rootfs = self.rootfs.clone();
        if let Some(lease) = uid {
            (rootfs.uid, rootfs.gid) = (lease.uid, lease.uid);
            p.uid = Some(lease);
        }
        if self.flags.contains(CloneFlags::CLONE_NEWUSER) {
            crate::userns::map_root_to_self(pid).map_err(SandboxError::Channel)?;
        }
        for (i, l) in self.cfg.prewarm_limits.iter().enumerate() {
            let want = cgroup_limits(l, self.cfg.cpu_millis);
            p.slots[i].set_limits(&want)?;
            p.applied[i] = Some(want);
        }
        // Descriptors first (SCM_RIGHTS), then the setup frame.
        let handles = p.slots.iter().map(StepCgroup::handles).collect::<Result<Vec<_>, _>>()?;
        let mut raw: Vec<RawFd> = Vec::new();
        let mut counts = Vec::new();
        for h in &handles {
            counts.push(h.procs.len());
            raw.extend(h.procs.iter().map(AsRawFd::as_raw_fd));
            raw.extend([h.cpu.as_raw_fd(), h.peak.as_raw_fd(), h.oom.as_raw_fd()]);
        }
        // With a worker socket dir, the job comes over a socket the manager connects to (gRPC in
        // `wolf`); it lives outside the sandbox and only this process may use it.
        let listener = match &self.cfg.worker_socket_dir {
            Some(dir) => {
                let path = dir.join(format!("{}.sock", p.id));
                let _ = std::fs::remove_file(&path);
                let l = std::os::unix::net::UnixListener::bind(&path).map_err(SandboxError::Channel)?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                    .map_err(SandboxError::Channel)?;
                p.socket = Some(path);
                raw.push(l.as_raw_fd());
                Some(l)
            }
            None => None,
        };
        protocol::send_fds(&p.sock, &raw).map_err(SandboxError::Channel)?;
        drop(handles);
        let setup = Setup {
            rootfs,
            cgroup_version: self.layout.version(),
            slots: counts,
            job_listener: listener.is_some(),
            host_uid: nix::unistd::geteuid().as_raw(),
            job_token: p.token.clone(),
            apparmor_profile: crate::lsm::apparmor_profile().map(str::to_string),
            session,
        };
        drop(listener);
        protocol::write_frame(&mut p.sock, &setup, &[]).map_err(SandboxError::Channel)?;
        let (reply, _): (SetupReply, _) = protocol::read_frame(&mut p.sock, 0).map_err(SandboxError::Channel)?;
        match reply {
            SetupReply::Ready { setup_us } => p.setup_inside = Duration::from_micros(setup_us),
            SetupReply::Failed { error } => return Err(SandboxError::Setup(error)),
        }
        p.creation = started.elapsed();
        Ok(p)
    }
}

/// 128 random bits, hex. Without randomness there is no sandbox: a guessable token would let
/// any local process of the host's uid hand a worker a job.
fn random_token() -> Result<String, SandboxError> {
    use std::io::Read;
    let mut b = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| SandboxError::Setup(format!("no randomness for the worker token: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// What a job's report says, with the blobs in place.
#[derive(Debug, Clone, Default)]
pub struct JobOutcome {
    /// Each step that ran.
    pub steps: Vec<StepOutput>,
    /// The files collected after the steps ([`protocol::Collect`]).
    pub files: Vec<JobFile>,
    /// Why the files could not be collected.
    pub collect_error: Option<String>,
    /// Output files asked for and not taken.
    pub refused: Vec<protocol::RefusedFile>,
}

/// Pair each step's facts with its output blobs, and each collected file with its contents.
pub fn outputs_from_report(report: JobReport, mut out: Vec<Vec<u8>>) -> Result<JobOutcome, SandboxError> {
    if let Some(e) = report.error {
        return Err(SandboxError::InvalidJob(e));
    }
    let mut take = |i: usize| out.get_mut(i).map(std::mem::take).unwrap_or_default();
    let steps = report
        .steps
        .into_iter()
        .map(|facts| {
            let stdout = take(facts.stdout_blob);
            let stderr = take(facts.stderr_blob);
            StepOutput { facts, stdout, stderr }
        })
        .collect();
    let mut files = Vec::with_capacity(report.files.len());
    for f in report.files {
        // The init process checked it; a worker answering over gRPC is checked again here.
        if !protocol::valid_work_path(&f.name) {
            return Err(SandboxError::InvalidJob(format!("collected file name {:?}", f.name)));
        }
        files.push(JobFile {
            contents: take(f.blob),
            name: f.name,
            mode: f.mode & 0o777,
        });
    }
    Ok(JobOutcome {
        steps,
        files,
        collect_error: report.collect_error,
        refused: report.refused,
    })
}

/// The cgroup side of a step's limits. The step's supervisor is one task of the cgroup, hence
/// the extra pid.
fn cgroup_limits(l: &Limits, cpu_millis: u64) -> CgroupLimits {
    CgroupLimits {
        memory_bytes: l.memory_mb.saturating_mul(1 << 20),
        pids: l.pids + 1,
        cpu_millis,
    }
}

impl Prepared {
    /// The sandbox's id (names its cgroups).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The init process's pid (host namespace).
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// The uid the program runs as.
    pub fn uid(&self) -> Option<u32> {
        self.uid.as_ref().map(|l| l.uid)
    }

    /// Whether the init process still waits for its job. It never writes to its channel
    /// unasked after setup, so a readable or hung-up channel means it is gone (killed, or taken
    /// down with a dead template).
    pub fn is_alive(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let mut fds = [PollFd::new(self.sock.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(0) => true,
            Ok(_) => false,
            Err(_) => true, // EINTR: no news is good news; the job's call would tell anyway
        }
    }

    /// Run one job: files, then steps in order (a failing step ends the job). A sandbox runs
    /// one job only; drop it afterwards (off the critical path) to destroy it.
    pub fn run(&mut self, files: &[JobFile], steps: &[Step]) -> Result<Vec<StepOutput>, SandboxError> {
        self.run_with(files, steps, None).map(|o| o.steps)
    }

    /// [`Prepared::run`], returning the files left in the work dir when `collect` asks.
    pub fn run_with(
        &mut self,
        files: &[JobFile],
        steps: &[Step],
        collect: Option<protocol::Collect>,
    ) -> Result<JobOutcome, SandboxError> {
        if self.used {
            return Err(SandboxError::InvalidJob(
                "a prepared sandbox serves exactly one job".into(),
            ));
        }
        if self.socket.is_some() {
            return Err(SandboxError::InvalidJob(
                "this sandbox takes its job on its worker socket".into(),
            ));
        }
        self.used = true;
        let collect_room = collect.as_ref().map_or(0, |c| c.max_bytes as usize);
        let (job, blobs) = self.spec(files, steps, collect)?;
        protocol::write_frame(&mut self.sock, &job, &blobs).map_err(SandboxError::Channel)?;
        let max = steps.iter().map(|s| s.limits.output_bytes as usize * 2).sum::<usize>() + collect_room + 4096;
        let (report, out): (JobReport, Vec<Vec<u8>>) =
            protocol::read_frame(&mut self.sock, max).map_err(SandboxError::Channel)?;
        outputs_from_report(report, out)
    }

    /// Validate the job and apply its cgroup limits; the frame the init process executes.
    fn spec<'a>(
        &mut self,
        files: &'a [JobFile],
        steps: &'a [Step],
        collect: Option<protocol::Collect>,
    ) -> Result<(JobSpec, Vec<&'a [u8]>), SandboxError> {
        if steps.len() > self.slots.len() {
            return Err(SandboxError::InvalidJob(format!(
                "{} steps, {} slots",
                steps.len(),
                self.slots.len()
            )));
        }
        let mut blobs: Vec<&[u8]> = Vec::new();
        let mut fspecs = Vec::new();
        for f in files {
            if !protocol::valid_work_path(&f.name) {
                return Err(SandboxError::InvalidJob(format!("file name {:?}", f.name)));
            }
            fspecs.push(FileSpec {
                name: f.name.clone(),
                mode: f.mode,
                blob: blobs.len(),
            });
            blobs.push(&f.contents);
        }
        let mut sspecs = Vec::new();
        // The last step runs in the last slot ("run"), a compile step before it in slot 0.
        let first_slot = self.slots.len() - steps.len();
        for (i, s) in steps.iter().enumerate() {
            let slot = first_slot + i;
            let want = cgroup_limits(&s.limits, self.cpu_millis);
            // Written while pre-warming with the usual values; only a difference costs writes now.
            if self.applied[slot] != Some(want) {
                self.slots[slot].set_limits(&want)?;
                self.applied[slot] = Some(want);
            }
            let stdin_blob = s.stdin.as_ref().map(|b| {
                blobs.push(b);
                blobs.len() - 1
            });
            sspecs.push(StepSpec {
                name: s.name.clone(),
                argv: s.argv.clone(),
                env: s.env.clone(),
                slot,
                stdin_blob,
                live: s.live,
                merge_stderr: s.merge_stderr,
                cpu_time_ms: s.limits.cpu_time_ms,
                wall_time_ms: s.limits.wall_time_ms,
                output_bytes: s.limits.output_bytes,
                file_bytes: s
                    .limits
                    .file_size_mb
                    .map_or(self.file_bytes, |mb| mb.saturating_mul(1 << 20).min(self.file_bytes)),
                open_files: self.open_files,
                // A requested stack replaces the sandbox's; neither goes past the memory limit.
                stack_bytes: s
                    .limits
                    .stack_mb
                    .map_or(self.stack_bytes, |mb| mb.saturating_mul(1 << 20))
                    .min(s.limits.memory_mb.saturating_mul(1 << 20)),
                cpu_millis: self.cpu_millis,
            });
        }
        Ok((
            JobSpec {
                files: fspecs,
                steps: sspecs,
                collect,
            },
            blobs,
        ))
    }

    fn destroy(&mut self) {
        if !self.reaped {
            // Killing PID 1 of the namespace makes the kernel kill every process in it; waitpid
            // returns once the namespace is empty (pid_namespaces(7)).
            let _ = kill(self.pid, Signal::SIGKILL);
            match &self.template {
                Some(t) => {
                    if let Err(e) = t.reap(self.pid) {
                        tracing::warn!(error = %e, "the sandbox template did not reap an init process");
                    }
                }
                None => {
                    let _ = waitpid(self.pid, None);
                }
            }
            self.reaped = true;
        }
        for s in &self.slots {
            s.remove();
        }
        if let Some(path) = self.socket.take() {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Give the job live stdio: its live step's descriptors in the order [`protocol::Live`]
    /// names them (relayed by the init process). Call before the job is sent; the descriptors
    /// are the init's now, and the caller's copies should be closed once every sandbox has its
    /// own.
    pub fn pass_stdio(&mut self, fds: &[&OwnedFd]) -> Result<(), SandboxError> {
        if self.used && !self.session {
            return Err(SandboxError::InvalidJob(
                "stdio is passed before the job is sent".into(),
            ));
        }
        protocol::send_stdio(&self.sock, fds).map_err(SandboxError::Channel)
    }

    /// The secret a job server's caller presents (see [`crate::init::JobServerContext`]).
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The worker socket the job server listens on (with `SandboxConfig::worker_socket_dir`).
    pub fn socket(&self) -> Option<&std::path::Path> {
        self.socket.as_deref()
    }

    /// The files and steps as the init process executes them, for a job server's client.
    /// Marks the sandbox used, like [`Prepared::run`].
    pub fn job_spec(
        &mut self,
        files: &[JobFile],
        steps: &[Step],
        collect: Option<protocol::Collect>,
    ) -> Result<(JobSpec, Vec<Vec<u8>>), SandboxError> {
        if self.used && !self.session {
            return Err(SandboxError::InvalidJob(
                "a prepared sandbox serves exactly one job".into(),
            ));
        }
        self.used = true;
        let (spec, blobs) = self.spec(files, steps, collect)?;
        Ok((spec, blobs.into_iter().map(<[u8]>::to_vec).collect()))
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        self.destroy();
    }
}
