//! cgroups v1 and v2 behind one interface.
//!
//! The host side creates one cgroup per sandbox step (compile, run) with its limits and opens
//! the few files the supervisor inside needs (`cgroup.procs` to join, CPU usage, peak memory,
//! OOM kills); those descriptors travel to the init process, which has no /sys of its own.
//! Ambient paths (`/proc/self/cgroup`, `/proc/self/mountinfo`, the mount points) are parameters,
//! so both versions are tested against a fake cgroupfs in a temporary directory.
//!
//! v2 is the native path (production hosts); v1 is what this machine has (hybrid layout, empty
//! unified hierarchy): memory, pids, cpu and cpuacct hierarchies are used side by side.

pub mod owner;

/// The leaf a v2 Wolf moves itself into when its own cgroup must enable controllers below it
/// (cgroup v2 allows controllers only below cgroups without processes).
pub const SUPERVISOR_LEAF: &str = "wolf-supervisor";
mod v1;
mod v2;

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Errors from cgroup setup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// Neither a usable v2 hierarchy nor the v1 controllers were found.
    #[error("no usable cgroup hierarchy (need memory and pids controllers): {0}")]
    NotFound(String),
    /// Creating a cgroup directory failed.
    #[error("create cgroup {path}")]
    Create {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing a control file failed.
    #[error("write {value:?} to {path}")]
    Write {
        /// The control file.
        path: PathBuf,
        /// What we wrote.
        value: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Opening a control file for the supervisor failed.
    #[error("open {path}")]
    Open {
        /// The control file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

/// Which cgroup version a set of handles speaks (the file formats differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Version {
    /// Legacy per-controller hierarchies.
    V1,
    /// Unified hierarchy.
    V2,
}

/// Where sandbox cgroups are created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// v1: one base directory per controller hierarchy.
    V1 {
        /// memory controller base.
        memory: PathBuf,
        /// pids controller base.
        pids: PathBuf,
        /// cpu controller base (CFS quota).
        cpu: PathBuf,
        /// cpuacct controller base (CPU usage); may equal `cpu` when co-mounted.
        cpuacct: PathBuf,
    },
    /// v2: one base directory.
    V2 {
        /// Base directory (its subtree_control enables memory, pids, cpu).
        base: PathBuf,
    },
}

/// Limits applied to one step's cgroup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Memory (and memory+swap) bytes.
    pub memory_bytes: u64,
    /// Maximum number of tasks.
    pub pids: u64,
    /// CPU bandwidth in thousandths of a CPU (1000 = one full CPU).
    pub cpu_millis: u64,
}

/// The name of the directory under the process's own cgroup that holds sandbox cgroups.
pub const BASE_NAME: &str = "wolf";

struct Mount {
    root: String,
    point: PathBuf,
    fstype: String,
    options: Vec<String>,
}

fn parse_mountinfo(text: &str) -> Vec<Mount> {
    // proc(5): id parent major:minor root mountpoint options [optional...] - fstype source superopts
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 3 {
            continue;
        }
        out.push(Mount {
            root: l[3].to_string(),
            point: PathBuf::from(unescape(l[4])),
            fstype: r[0].to_string(),
            options: r[2].split(',').map(str::to_string).collect(),
        });
    }
    out
}

fn unescape(s: &str) -> String {
    s.replace("\\040", " ")
        .replace("\\011", "\t")
        .replace("\\012", "\n")
        .replace("\\134", "\\")
}

/// Join a cgroup path (as in /proc/self/cgroup) to a mount whose root may not be "/".
fn under_mount(m: &Mount, cg_path: &str) -> PathBuf {
    let rel = cg_path.strip_prefix(m.root.as_str()).unwrap_or(cg_path);
    m.point.join(rel.trim_start_matches('/'))
}

impl Layout {
    /// Decide the layout from the texts of `/proc/self/cgroup` and `/proc/self/mountinfo`;
    /// `read` reads a file (to look at `cgroup.controllers`).
    pub fn detect(
        proc_cgroup: &str,
        mountinfo: &str,
        read: impl Fn(&Path) -> Option<String>,
    ) -> Result<Self, CgroupError> {
        let mounts = parse_mountinfo(mountinfo);
        let mut v1_paths: Vec<(String, String)> = Vec::new();
        let mut v2_path: Option<String> = None;
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (_id, ctrls, path) = match (parts.next(), parts.next(), parts.next()) {
                (Some(a), Some(b), Some(c)) => (a, b, c),
                _ => continue,
            };
            if ctrls.is_empty() {
                v2_path = Some(path.to_string());
            } else {
                for c in ctrls.split(',') {
                    v1_paths.push((c.to_string(), path.to_string()));
                }
            }
        }
        if let (Some(path), Some(m)) = (&v2_path, mounts.iter().find(|m| m.fstype == "cgroup2")) {
            // In our own leaf (a restart placed there, or systemd's DelegateSubgroup=): the
            // delegated cgroup is its parent.
            let path = path.strip_suffix(&format!("/{SUPERVISOR_LEAF}")).unwrap_or(path);
            let mine = under_mount(m, path);
            let controllers = read(&m.point.join("cgroup.controllers")).unwrap_or_default();
            let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
            if has("memory") && has("pids") {
                return Ok(Layout::V2 {
                    base: mine.join(BASE_NAME),
                });
            }
        }
        let v1 = |ctrl: &str| -> Option<PathBuf> {
            let m = mounts
                .iter()
                .find(|m| m.fstype == "cgroup" && m.options.iter().any(|o| o == ctrl))?;
            let path = v1_paths
                .iter()
                .find(|(c, _)| c == ctrl)
                .map(|(_, p)| p.as_str())
                .unwrap_or("/");
            Some(under_mount(m, path).join(BASE_NAME))
        };
        match (v1("memory"), v1("pids"), v1("cpu"), v1("cpuacct")) {
            (Some(memory), Some(pids), Some(cpu), Some(cpuacct)) => Ok(Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
            }),
            _ => Err(CgroupError::NotFound(
                "no cgroup2 with memory+pids, and v1 lacks memory, pids, cpu or cpuacct".into(),
            )),
        }
    }

    /// Detect from this process's own files, and create the base directories.
    pub fn from_host() -> Result<Self, CgroupError> {
        let cg = fs::read_to_string("/proc/self/cgroup").map_err(|e| CgroupError::NotFound(e.to_string()))?;
        let mi = fs::read_to_string("/proc/self/mountinfo").map_err(|e| CgroupError::NotFound(e.to_string()))?;
        let layout = Self::detect(&cg, &mi, |p| fs::read_to_string(p).ok())?;
        layout.ensure_base()?;
        Ok(layout)
    }

    /// The version of this layout.
    pub fn version(&self) -> Version {
        match self {
            Layout::V1 { .. } => Version::V1,
            Layout::V2 { .. } => Version::V2,
        }
    }

    /// Remove step cgroups left by instances that died without cleaning up (a kill -9 of the
    /// host), as [`owner`] tells them apart: a dead instance's cgroups are emptied (their
    /// tasks killed) and removed; a cgroup of any other owner is only `rmdir`ed, which succeeds
    /// only when it holds no task — a live job of another Wolf, whatever its pid namespace, is
    /// never touched. Returns how many were removed.
    pub fn sweep_stale(&self, me: &owner::Instance) -> usize {
        let bases: Vec<&PathBuf> = match self {
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
            } => vec![memory, pids, cpu, cpuacct],
            Layout::V2 { base } => vec![base],
        };
        let mut removed = 0;
        let mut dead = std::collections::BTreeSet::new();
        let mut left = std::collections::BTreeSet::new();
        for base in &bases {
            let Ok(dir) = fs::read_dir(base) else { continue };
            for entry in dir.flatten() {
                if !entry.path().is_dir() {
                    continue;
                }
                let name = entry.file_name().to_string_lossy().into_owned();
                match me.owner_of(&name) {
                    owner::Owner::Us | owner::Owner::Alive => continue,
                    owner::Owner::Dead(inst) => {
                        StepCgroup {
                            version: self.version(),
                            dirs: vec![entry.path()],
                        }
                        .remove();
                        if entry.path().exists() {
                            left.insert(inst.clone());
                        }
                        dead.insert(inst);
                    }
                    // Empty or nothing: rmdir never kills.
                    owner::Owner::Unknown => {
                        let _ = fs::remove_dir(entry.path());
                    }
                }
                removed += usize::from(!entry.path().exists());
            }
        }
        for inst in dead.difference(&left) {
            me.forget(inst);
        }
        removed
    }

    /// Create the base directories (idempotent).
    pub fn ensure_base(&self) -> Result<(), CgroupError> {
        match self {
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
            } => {
                for d in [memory, pids, cpu, cpuacct] {
                    fs::create_dir_all(d).map_err(|source| CgroupError::Create {
                        path: d.clone(),
                        source,
                    })?;
                }
                Ok(())
            }
            Layout::V2 { base } => v2::ensure_base(base),
        }
    }
}

/// Make cgroup migrations cheap: moving a process between cgroups takes the global
/// `cgroup_threadgroup_rwsem` for writing, which by default waits for an RCU grace period
/// (~14 ms measured here) per migration burst. The cgroup2 mount option `favordynmods`
/// (Linux 6.0+) switches that rwsem, for every hierarchy v1 included, to a mode where writers
/// do not wait, at a small cost to fork and exit. Each sandbox step joins its cgroup once, so
/// this is the difference between a 3 ms and a 20 ms sandbox. Needs root; a no-op when the
/// option is already set or there is no cgroup2 mount.
///
/// Returns the mount point that was changed, if any.
pub fn favor_dynmods(mountinfo: &str) -> Result<Option<PathBuf>, CgroupError> {
    use nix::mount::MsFlags;
    let Some(m) = parse_mountinfo(mountinfo).into_iter().find(|m| m.fstype == "cgroup2") else {
        return Ok(None);
    };
    if m.options.iter().any(|o| o == "favordynmods") {
        return Ok(None);
    }
    // A legacy remount resets the per-mount flags to what we pass: keep the current ones.
    let line = mountinfo
        .lines()
        .find(|l| l.split(' ').nth(4).map(|p| PathBuf::from(unescape(p))) == Some(m.point.clone()))
        .unwrap_or_default();
    let per_mount = line.split(' ').nth(5).unwrap_or("");
    let mut flags = MsFlags::MS_REMOUNT;
    for o in per_mount.split(',') {
        flags |= match o {
            "ro" => MsFlags::MS_RDONLY,
            "nosuid" => MsFlags::MS_NOSUID,
            "nodev" => MsFlags::MS_NODEV,
            "noexec" => MsFlags::MS_NOEXEC,
            "relatime" => MsFlags::MS_RELATIME,
            "noatime" => MsFlags::MS_NOATIME,
            "nodiratime" => MsFlags::MS_NODIRATIME,
            _ => MsFlags::empty(),
        };
    }
    nix::mount::mount(None::<&str>, &m.point, None::<&str>, flags, Some("favordynmods")).map_err(|e| {
        CgroupError::Write {
            path: m.point.clone(),
            value: "remount,favordynmods".into(),
            source: e.into(),
        }
    })?;
    Ok(Some(m.point))
}

/// One step's cgroup (a directory per v1 hierarchy, or one v2 directory).
#[derive(Debug)]
pub struct StepCgroup {
    version: Version,
    dirs: Vec<PathBuf>,
}

/// Descriptors the supervisor inside the sandbox uses for one step.
#[derive(Debug)]
pub struct StepHandles {
    /// `cgroup.procs` of each directory, opened for writing.
    pub procs: Vec<OwnedFd>,
    /// CPU usage (`cpuacct.usage` or `cpu.stat`).
    pub cpu: OwnedFd,
    /// Peak memory (`memory.max_usage_in_bytes` or `memory.peak`).
    pub peak: OwnedFd,
    /// OOM kill counter (`memory.oom_control` or `memory.events`).
    pub oom: OwnedFd,
}

pub(crate) fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

fn open(path: &Path, write: bool) -> Result<OwnedFd, CgroupError> {
    fs::OpenOptions::new()
        .read(!write)
        .write(write)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| CgroupError::Open {
            path: path.to_path_buf(),
            source,
        })
}

impl StepCgroup {
    /// Create the step's cgroup named `name` under the layout's base.
    pub fn create(layout: &Layout, name: &str) -> Result<Self, CgroupError> {
        let (version, dirs) = match layout {
            Layout::V1 {
                memory,
                pids,
                cpu,
                cpuacct,
            } => {
                let mut dirs = vec![memory.join(name), pids.join(name), cpu.join(name)];
                if cpuacct != cpu {
                    dirs.push(cpuacct.join(name));
                }
                (Version::V1, dirs)
            }
            Layout::V2 { base } => (Version::V2, vec![base.join(name)]),
        };
        for d in &dirs {
            match fs::create_dir(d) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(source) => {
                    return Err(CgroupError::Create {
                        path: d.clone(),
                        source,
                    });
                }
            }
        }
        Ok(Self { version, dirs })
    }

    /// The version of this cgroup.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The directories (for diagnostics and tests).
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Apply memory (swap off), pids and CPU quota limits.
    pub fn set_limits(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        match self.version {
            Version::V1 => v1::set_limits(&self.dirs, limits),
            Version::V2 => v2::set_limits(&self.dirs[0], limits),
        }
    }

    /// Open the descriptors the supervisor needs.
    pub fn handles(&self) -> Result<StepHandles, CgroupError> {
        let procs = self
            .dirs
            .iter()
            .map(|d| open(&d.join("cgroup.procs"), true))
            .collect::<Result<_, _>>()?;
        let (cpu, peak, oom) = match self.version {
            Version::V1 => {
                let cpuacct = self.dirs.last().expect("v1 has dirs");
                (
                    cpuacct.join("cpuacct.usage"),
                    self.dirs[0].join("memory.max_usage_in_bytes"),
                    self.dirs[0].join("memory.oom_control"),
                )
            }
            Version::V2 => {
                let d = &self.dirs[0];
                (d.join("cpu.stat"), d.join("memory.peak"), d.join("memory.events"))
            }
        };
        Ok(StepHandles {
            procs,
            cpu: open(&cpu, false)?,
            peak: open(&peak, false)?,
            oom: open(&oom, false)?,
        })
    }

    /// Kill whatever is left in the cgroup and remove it. Best effort: errors are logged.
    pub fn remove(&self) {
        if self.version == Version::V2 {
            let _ = fs::write(self.dirs[0].join("cgroup.kill"), "1");
        }
        for d in &self.dirs {
            for attempt in 0..50 {
                match fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) if attempt == 49 => {
                        tracing::warn!(path = %d.display(), error = %e, "could not remove cgroup")
                    }
                    Err(_) => {
                        if self.version == Version::V1 {
                            v1::kill_all(d);
                        }
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                }
            }
        }
    }
}

/// CPU time in nanoseconds from the text of the CPU handle.
pub fn parse_cpu_ns(version: Version, text: &str) -> u64 {
    match version {
        Version::V1 => text.trim().parse().unwrap_or(0),
        Version::V2 => keyed(text, "usage_usec").saturating_mul(1000),
    }
}

/// OOM kills from the text of the OOM handle.
pub fn parse_oom_kills(_version: Version, text: &str) -> u64 {
    // v1 memory.oom_control and v2 memory.events both carry an "oom_kill N" line.
    keyed(text, "oom_kill")
}

/// Peak memory bytes from the text of the peak handle.
pub fn parse_peak_bytes(_version: Version, text: &str) -> u64 {
    text.trim().parse().unwrap_or(0)
}

fn keyed(text: &str, key: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
