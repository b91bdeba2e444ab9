//! One uid (and gid) per live sandbox, from a configured range.
//!
//! The kernel counts some resources per uid for the whole host: inotify instances and watches,
//! queued real-time signals (`SigQ`, which also bounds `timer_create`), pipe buffer pages, file
//! descriptors in flight over Unix sockets. Were every sandbox the same uid, one job could
//! exhaust them for every other job on the host (and for other Wolf instances). Each sandbox
//! therefore runs as a uid of its own, taken from `[base, base + count)` while it lives.
//!
//! A uid is held by an exclusive `flock` on `<lock_dir>/<uid>` for the sandbox's life, so
//! several Wolf processes on one host (`wolf run` beside `wolf serve`, two instances, test
//! harnesses) share one range safely; a process that dies releases its locks with it. Instances
//! that cannot see each other's lock directory (containers with their own `/run`) need ranges
//! of their own.

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::fcntl::{Flock, FlockArg};

/// The range and where its locks live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidRange {
    /// First uid (and gid) of the range.
    pub base: u32,
    /// How many.
    pub count: u32,
    /// Lock files, one per uid in use.
    pub lock_dir: PathBuf,
}

impl Default for UidRange {
    fn default() -> Self {
        // Far above the ranges distributions give to users (1000..60000) and below the
        // subordinate ranges container runtimes usually hand out (100000 + 65536 per user).
        Self {
            base: 61_000,
            count: 4096,
            lock_dir: PathBuf::from("/run/wolf-sandbox/uids"),
        }
    }
}

/// Why the range cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UidError {
    /// The range is empty or wraps.
    #[error("the sandbox uid range {base}+{count} is empty or overflows")]
    Range {
        /// First uid.
        base: u32,
        /// Count.
        count: u32,
    },
    /// A user or group of the host owns a uid in the range.
    #[error("the sandbox uid range {base}..{end} holds the host's {what} {name:?} ({id}); pick another range")]
    Taken {
        /// First uid.
        base: u32,
        /// One past the last.
        end: u32,
        /// `user` or `group`.
        what: &'static str,
        /// Its name.
        name: String,
        /// Its id.
        id: u32,
    },
    /// The lock directory cannot be made.
    #[error("the sandbox uid lock directory {0}")]
    LockDir(PathBuf, #[source] std::io::Error),
    /// Every uid of the range is held.
    #[error("every uid of the sandbox range {base}..{end} is in use")]
    Exhausted {
        /// First uid.
        base: u32,
        /// One past the last.
        end: u32,
    },
}

/// Hands out uids of the range; cheap to share.
#[derive(Debug)]
pub struct UidPool {
    range: UidRange,
    next: AtomicU32,
}

/// A uid held while this lives.
#[derive(Debug)]
pub struct Lease {
    /// The uid (the gid is the same number).
    pub uid: u32,
    _lock: Flock<File>,
}

/// Ids in `[lo, hi)` that an `/etc/passwd`- or `/etc/group`-format text assigns, with names.
fn assigned(text: &str, lo: u32, hi: u32) -> Option<(String, u32)> {
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let id: u32 = f.nth(1)?.parse().ok()?;
        (lo..hi).contains(&id).then(|| (name.to_string(), id))
    })
}

impl UidPool {
    /// Check the range against the host's users and groups and make the lock directory.
    pub fn new(range: UidRange) -> Result<Self, UidError> {
        let end = range
            .base
            .checked_add(range.count)
            .filter(|_| range.count > 0)
            .ok_or(UidError::Range {
                base: range.base,
                count: range.count,
            })?;
        for (file, what) in [("/etc/passwd", "user"), ("/etc/group", "group")] {
            if let Some((name, id)) = assigned(&std::fs::read_to_string(file).unwrap_or_default(), range.base, end) {
                return Err(UidError::Taken {
                    base: range.base,
                    end,
                    what,
                    name,
                    id,
                });
            }
        }
        std::fs::create_dir_all(&range.lock_dir).map_err(|e| UidError::LockDir(range.lock_dir.clone(), e))?;
        // Start where this process's pid points, so concurrent processes rarely probe the same
        // uids first.
        let start = std::process::id() % range.count;
        Ok(Self {
            range,
            next: AtomicU32::new(start),
        })
    }

    /// The range.
    pub fn range(&self) -> &UidRange {
        &self.range
    }

    /// Take a free uid: the next one whose lock no process holds.
    pub fn lease(&self) -> Result<Lease, UidError> {
        let UidRange { base, count, .. } = self.range;
        for _ in 0..count {
            let i = self.next.fetch_add(1, Ordering::Relaxed) % count;
            let uid = base + i;
            let path = self.range.lock_dir.join(uid.to_string());
            let Ok(file) = File::options().create(true).write(true).truncate(false).open(&path) else {
                continue;
            };
            match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => {
                    return Ok(Lease { uid, _lock: lock });
                }
                Err(_) => continue,
            }
        }
        Err(UidError::Exhausted {
            base,
            end: base + count,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(count: u32) -> (tempfile::TempDir, UidPool) {
        let dir = tempfile::tempdir().unwrap();
        let p = UidPool::new(UidRange {
            base: 3_900_000_000,
            count,
            lock_dir: dir.path().join("uids"),
        })
        .unwrap();
        (dir, p)
    }

    #[test]
    fn live_leases_are_distinct_and_a_released_uid_is_reused() {
        let (_d, p) = pool(3);
        let a = p.lease().unwrap();
        let b = p.lease().unwrap();
        let c = p.lease().unwrap();
        let mut got = vec![a.uid, b.uid, c.uid];
        got.sort();
        assert_eq!(got, [3_900_000_000, 3_900_000_001, 3_900_000_002]);
        assert!(matches!(p.lease(), Err(UidError::Exhausted { .. })));
        let freed = b.uid;
        drop(b);
        assert_eq!(p.lease().unwrap().uid, freed);
    }

    #[test]
    fn two_pools_on_one_lock_dir_never_hand_out_the_same_uid() {
        let (d, p) = pool(2);
        let other = UidPool::new(p.range().clone()).unwrap();
        let a = p.lease().unwrap();
        let b = other.lease().unwrap();
        assert_ne!(a.uid, b.uid);
        assert!(other.lease().is_err() && p.lease().is_err());
        drop(d);
    }

    #[test]
    fn ranges_that_hold_host_ids_or_overflow_are_refused() {
        assert_eq!(
            assigned(
                "root:x:0:0::/root:/bin/sh\nbob:x:61005:61005::/home/bob:/bin/sh\n",
                61_000,
                65_096
            ),
            Some(("bob".into(), 61_005))
        );
        assert_eq!(assigned("nobody:x:65534:65534:::\n", 61_000, 65_096), None);
        let bad = UidPool::new(UidRange {
            base: u32::MAX - 1,
            count: 5,
            lock_dir: "/nonexistent".into(),
        });
        assert!(matches!(bad, Err(UidError::Range { .. })));
    }
}
