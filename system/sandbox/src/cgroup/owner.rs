//! Who owns a step cgroup, in a way that survives pid namespaces.
//!
//! Each [`crate::Sandboxes`] is an *instance* with a random id; every step cgroup it creates is
//! named `<instance>-...`, and the instance holds an exclusive `flock` on
//! `<dir>/<instance>` for as long as it lives (a kill -9 releases it with the process). A sweep
//! at start removes, killing what is inside, only the cgroups of instances whose lock file it
//! can see and lock — instances that are provably dead. A cgroup of any other owner (a live
//! instance, or one whose lock file lives in another mount namespace, such as another
//! container) is at most `rmdir`ed, which succeeds only when it is empty and kills nothing.
//! A pid says nothing across pid namespaces, so none is ever consulted.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Where instances keep their lock files (host-wide, beside the uid locks).
pub const DEFAULT_DIR: &str = "/run/wolf-sandbox/instances";

/// This process's instance: its id and its held lock.
#[derive(Debug)]
pub struct Instance {
    id: String,
    dir: PathBuf,
    _lock: Flock<File>,
}

/// Whether `name` looks like an instance id (16 lowercase hex digits).
fn is_instance_id(name: &str) -> bool {
    name.len() == 16 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl Instance {
    /// A new instance with a random id, locked under `dir`.
    pub fn new(dir: &Path) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let mut b = [0u8; 8];
        use std::io::Read;
        File::open("/dev/urandom")?.read_exact(&mut b)?;
        let id: String = b.iter().map(|x| format!("{x:02x}")).collect();
        let file = File::options().create_new(true).write(true).open(dir.join(&id))?;
        let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| std::io::Error::from(e))?;
        Ok(Self {
            id,
            dir: dir.to_path_buf(),
            _lock: lock,
        })
    }

    /// The id that starts every cgroup name of this instance.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Who owns the cgroup named `name`.
    pub fn owner_of(&self, name: &str) -> Owner {
        let Some(inst) = name.split('-').next().filter(|i| is_instance_id(i)) else {
            return Owner::Unknown;
        };
        if inst == self.id {
            return Owner::Us;
        }
        match File::options().write(true).open(self.dir.join(inst)) {
            // Lockable: nobody holds it, the instance is gone.
            Ok(f) => match Flock::lock(f, FlockArg::LockExclusiveNonblock) {
                Ok(_) => Owner::Dead(inst.to_string()),
                Err(_) => Owner::Alive,
            },
            Err(_) => Owner::Unknown,
        }
    }

    /// Forget a dead instance whose cgroups are gone.
    pub fn forget(&self, inst: &str) {
        if is_instance_id(inst) && inst != self.id {
            let _ = std::fs::remove_file(self.dir.join(inst));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.dir.join(&self.id));
    }
}

/// The owner of a step cgroup, as far as this instance can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// This instance.
    Us,
    /// A live instance (its lock is held).
    Alive,
    /// A dead instance of this host (its lock file is here and free).
    Dead(String),
    /// Not an instance this process can judge (an older naming, another mount namespace).
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_provably_dead_instance_owns_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let us = Instance::new(dir.path()).unwrap();
        let alive = Instance::new(dir.path()).unwrap();
        assert_eq!(us.owner_of(&format!("{}-3-0", us.id())), Owner::Us);
        assert_eq!(us.owner_of(&format!("{}-0-1", alive.id())), Owner::Alive);
        // A dead instance: its lock file stayed (kill -9), nobody holds it.
        let dead = "0123456789abcdef";
        std::fs::write(dir.path().join(dead), b"").unwrap();
        assert_eq!(us.owner_of(&format!("{dead}-7-1")), Owner::Dead(dead.into()));
        // Another namespace's instance (no lock file here), an old pid-named cgroup, junk.
        assert_eq!(us.owner_of("fedcba9876543210-1-0"), Owner::Unknown);
        assert_eq!(us.owner_of("12345-1-0"), Owner::Unknown);
        assert_eq!(us.owner_of("../../etc"), Owner::Unknown);
        let alive_id = alive.id().to_string();
        drop(alive);
        assert!(
            !dir.path().join(alive_id).exists(),
            "a clean exit removes its lock file"
        );
    }
}
