//! Landlock: the payload may read and execute anywhere in its (read-only) root, write only in
//! its tmpfs directories, make no TCP bind or connect, and signal nothing outside its domain.
//!
//! Best effort: on a kernel without Landlock (or an older ABI) the missing parts are skipped and
//! the other layers still hold; [`LandlockPlan::apply`] reports what was enforced.

use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};

/// The newest ABI this code knows how to ask for.
const ABI_WANTED: ABI = ABI::V6;

/// Paths (inside the sandbox root) and the access they get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LandlockPlan {
    /// Read and execute beneath these.
    pub read_exec: Vec<PathBuf>,
    /// Full access beneath these.
    pub read_write: Vec<PathBuf>,
}

impl LandlockPlan {
    /// The standard plan: read/execute everywhere, write in the work dir, /tmp, /dev/shm and
    /// the character devices that accept writes.
    pub fn standard(work_dir: &str) -> Self {
        Self {
            read_exec: vec![PathBuf::from("/")],
            read_write: vec![
                PathBuf::from(work_dir),
                PathBuf::from("/tmp"),
                PathBuf::from("/dev/shm"),
                PathBuf::from("/dev/null"),
                PathBuf::from("/dev/zero"),
                PathBuf::from("/dev/full"),
                PathBuf::from("/dev/random"),
                PathBuf::from("/dev/urandom"),
            ],
        }
    }

    /// Restrict the calling process (and its future children).
    pub fn apply(&self) -> Result<RulesetStatus, landlock::RulesetError> {
        let all = AccessFs::from_all(ABI_WANTED);
        let read = AccessFs::from_read(ABI_WANTED);
        let mut created = Ruleset::default()
            .set_compatibility(CompatLevel::BestEffort)
            .handle_access(all)?
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)?
            .scope(Scope::AbstractUnixSocket | Scope::Signal)?
            .create()?;
        for p in &self.read_exec {
            if let Ok(fd) = PathFd::new(p) {
                created = created.add_rule(PathBeneath::new(fd, read))?;
            }
        }
        for p in &self.read_write {
            if let Ok(fd) = PathFd::new(p) {
                created = created.add_rule(PathBeneath::new(fd, all))?;
            }
        }
        // no_new_privs is set by the pipeline itself (it must precede seccomp too).
        Ok(created.no_new_privs(false).restrict_self()?.ruleset)
    }
}

/// The newest Landlock ABI this kernel supports completely (up to [`ABI_WANTED`]), `None`
/// without Landlock. Probed by creating, and dropping, rulesets that require each ABI's rights:
/// nothing is restricted.
pub fn kernel_abi() -> Option<u8> {
    let abis = [
        (ABI::V6, 6),
        (ABI::V5, 5),
        (ABI::V4, 4),
        (ABI::V3, 3),
        (ABI::V2, 2),
        (ABI::V1, 1),
    ];
    abis.into_iter().find_map(|(abi, n)| {
        let mut r = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))
            .ok()?;
        if n >= 4 {
            r = r.handle_access(AccessNet::from_all(abi)).ok()?;
        }
        if n >= 6 {
            r = r.scope(Scope::from_all(abi)).ok()?;
        }
        r.create().ok().map(|_| n)
    })
}

/// What Landlock enforces at `abi`, for the startup report.
pub fn describe(abi: Option<u8>) -> String {
    match abi {
        None => "Landlock: not in this kernel (the other layers still hold)".into(),
        Some(n) if n >= 6 => format!("Landlock ABI {n}: files, TCP bind/connect, signal and abstract-socket scopes"),
        Some(n) if n >= 4 => format!(
            "Landlock ABI {n}: files and TCP bind/connect (no signal or abstract-socket scopes: the pid and network namespaces hold them)"
        ),
        Some(n) => format!(
            "Landlock ABI {n}: files only (no TCP rules or scopes: the empty network and own pid namespaces hold them)"
        ),
    }
}
