//! Applying an image layer (a tar stream) to a runtime's root, whatever the tar says.
//!
//! An image is data, not trust. Every path of an entry is resolved with `openat2(2)` and
//! `RESOLVE_IN_ROOT` against the root's descriptor, so neither `..`, an absolute name, nor a
//! symlink planted by an earlier entry or layer (`etc -> /etc`) can lead outside the root: the
//! kernel treats the root as `/` while resolving. Entries are then made relative to their
//! parent's descriptor, never following a final symlink (`O_NOFOLLOW`, `unlinkat`,
//! `symlinkat`). On top of that:
//!
//! - entries with a `..` component are dropped (a well-formed image has none);
//! - setuid, setgid and sticky-on-files bits are cleared; everything is owned by the importer
//!   (root), read-only in the sandbox (its root is bound read-only, `nosuid`, `nodev`);
//! - device nodes and FIFOs are dropped; a hard link is made only to a regular file already
//!   in the root (its target resolved in the root as well);
//! - the unpacked size and number of entries are bounded ([`Bounds`]), counted from the
//!   headers before any data is written, so a 10 GB (sparse) file is refused, not written;
//! - OCI whiteouts apply: `.wh.NAME` removes `NAME` of the layers below, `.wh..wh..opq` empties
//!   its directory of what the layers below put there.
//!
//! What was dropped is counted ([`Dropped`]) and recorded with the runtime.

use std::collections::HashSet;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fchmod, fstatat, mkdirat};
use nix::unistd::{UnlinkatFlags, linkat, symlinkat, unlinkat};
use serde::{Deserialize, Serialize};

use crate::RuntimeError;

/// Bounds on one runtime's root, over all its layers.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Bytes of file data at most (sizes as the headers give them).
    pub max_bytes: u64,
    /// Entries at most.
    pub max_entries: u64,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_bytes: 8 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// What the unpacking left out or changed, by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dropped {
    /// Setuid, setgid (or sticky on a file) bits cleared.
    pub special_bits: u64,
    /// Device nodes and FIFOs not made.
    pub devices: u64,
    /// Hard links not made (target missing, not a regular file, or outside the root).
    pub links: u64,
    /// Entries whose name has a `..` component.
    pub escapes: u64,
    /// Entries of another kind (sockets, unknown types).
    pub other: u64,
}

/// Running totals while a root is unpacked.
#[derive(Debug, Default)]
pub struct Totals {
    /// File bytes so far.
    pub bytes: u64,
    /// Entries so far.
    pub entries: u64,
    /// See [`Dropped`].
    pub dropped: Dropped,
}

/// Apply the layer `tar` (uncompressed) to the root open at `root`.
pub fn apply_layer(root: &OwnedFd, tar: impl Read, bounds: Bounds, totals: &mut Totals) -> Result<(), RuntimeError> {
    let mut archive = tar::Archive::new(tar);
    // What this layer itself made: an opaque whiteout keeps these, not the layers' below.
    let mut mine: HashSet<PathBuf> = HashSet::new();
    let entries = archive.entries().map_err(|e| bad(format!("not a tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("a tar entry: {e}")))?;
        totals.entries += 1;
        if totals.entries > bounds.max_entries {
            return Err(RuntimeError::TooLarge(format!(
                "more than {} entries",
                bounds.max_entries
            )));
        }
        let raw = entry
            .path()
            .map_err(|e| bad(format!("an entry's name: {e}")))?
            .into_owned();
        let Some(rel) = normalize(&raw) else {
            totals.dropped.escapes += 1;
            continue;
        };
        let Some(name) = rel.file_name().map(|n| n.to_owned()) else {
            continue; // the root itself
        };
        let parent_rel = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let name_s = name.to_string_lossy();
        if name_s == ".wh..wh..opq" {
            let dir = dirs(root, &parent_rel)?;
            opaque(&dir, &parent_rel, &mine)?;
            continue;
        }
        if let Some(hidden) = name_s.strip_prefix(".wh.") {
            let dir = dirs(root, &parent_rel)?;
            remove(&dir, Path::new(hidden))?;
            continue;
        }
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().unwrap_or(0o644);
        let size = entry.size().max(header.size().unwrap_or(0));
        if kind.is_file() || kind.is_gnu_sparse() || kind.is_contiguous() {
            totals.bytes = totals.bytes.saturating_add(size);
            if totals.bytes > bounds.max_bytes {
                return Err(RuntimeError::TooLarge(format!(
                    "more than {} bytes of files (at {})",
                    bounds.max_bytes,
                    rel.display()
                )));
            }
        }
        let parent = dirs(root, &parent_rel)?;
        let kept = clean_mode(mode, kind.is_dir());
        if kept != mode & 0o7777 && (mode & 0o6000 != 0 || (!kind.is_dir() && mode & 0o1000 != 0)) {
            totals.dropped.special_bits += 1;
        }
        if kind.is_dir() {
            match stat(&parent, &name) {
                Some(st) if is(&st, SFlag::S_IFDIR) => {}
                Some(_) => {
                    remove(&parent, Path::new(&name))?;
                    mkdir(&parent, &name)?;
                }
                None => mkdir(&parent, &name)?,
            }
            let dir = openat(
                &parent,
                name.as_os_str(),
                OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| io(&rel, e))?;
            fchmod(&dir, Mode::from_bits_truncate(kept)).map_err(|e| io(&rel, e))?;
        } else if kind.is_file() || kind.is_gnu_sparse() || kind.is_contiguous() {
            replace(&parent, &name)?;
            let fd = openat(
                &parent,
                name.as_os_str(),
                OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )
            .map_err(|e| io(&rel, e))?;
            let mut file = File::from(fd);
            std::io::copy(&mut entry, &mut file).map_err(|e| bad(format!("{}: {e}", rel.display())))?;
            fchmod(file.as_fd(), Mode::from_bits_truncate(kept)).map_err(|e| io(&rel, e))?;
        } else if kind.is_symlink() {
            let Some(target) = entry.link_name().ok().flatten().map(|t| t.into_owned()) else {
                totals.dropped.other += 1;
                continue;
            };
            // The target is not resolved here: inside the sandbox it resolves in this root.
            replace(&parent, &name)?;
            symlinkat(target.as_os_str(), &parent, name.as_os_str()).map_err(|e| io(&rel, e))?;
        } else if kind.is_hard_link() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .and_then(|t| normalize(&t))
                .filter(|t| t.file_name().is_some());
            let Some(target) = target else {
                totals.dropped.links += 1;
                continue;
            };
            let tdir = match dirs_existing(root, target.parent().unwrap_or(Path::new(""))) {
                Some(d) => d,
                None => {
                    totals.dropped.links += 1;
                    continue;
                }
            };
            let tname = target.file_name().unwrap_or_default();
            if !stat(&tdir, tname).is_some_and(|st| is(&st, SFlag::S_IFREG)) {
                totals.dropped.links += 1;
                continue;
            }
            replace(&parent, &name)?;
            linkat(&tdir, tname, &parent, name.as_os_str(), nix::fcntl::AtFlags::empty()).map_err(|e| io(&rel, e))?;
        } else if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            totals.dropped.devices += 1;
            continue;
        } else if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() || kind.is_gnu_longname() {
            continue;
        } else {
            totals.dropped.other += 1;
            continue;
        }
        let mut p = rel.clone();
        loop {
            mine.insert(p.clone());
            if !p.pop() || p.as_os_str().is_empty() {
                break;
            }
        }
    }
    Ok(())
}

/// `p` relative, without `.` or a leading `/`; `None` when a component is `..`.
pub fn normalize(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return None,
        }
    }
    Some(out)
}

/// Mode bits kept: permissions, and sticky on directories only.
fn clean_mode(mode: u32, dir: bool) -> u32 {
    if dir { mode & 0o1777 } else { mode & 0o777 }
}

fn bad(msg: String) -> RuntimeError {
    RuntimeError::Invalid(msg)
}

fn io(p: &Path, e: Errno) -> RuntimeError {
    RuntimeError::Io(format!("{}: {e}", p.display()))
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

/// The directory `rel` of the root (resolved in it), made with its missing parents.
fn dirs(root: &OwnedFd, rel: &Path) -> Result<OwnedFd, RuntimeError> {
    let open = |p: &Path| {
        openat2(
            root,
            if p.as_os_str().is_empty() { Path::new(".") } else { p },
            how(OFlag::O_DIRECTORY | OFlag::O_PATH),
        )
    };
    match open(rel) {
        Ok(fd) => return Ok(fd),
        Err(Errno::ENOENT) => {}
        Err(e) => return Err(io(rel, e)),
    }
    let mut cur = PathBuf::new();
    let mut fd = open(&cur).map_err(|e| io(rel, e))?;
    for c in rel.components() {
        cur.push(c);
        fd = match open(&cur) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                // Missing, or a dangling symlink: in both cases the parent (already resolved
                // in the root) gets a real directory of that name.
                if stat(&fd, c.as_os_str()).is_some() {
                    remove(&fd, Path::new(c.as_os_str()))?;
                }
                mkdir(&fd, c.as_os_str())?;
                open(&cur).map_err(|e| io(&cur, e))?
            }
            Err(Errno::ENOTDIR) => {
                // A file where the layer wants a directory: the layer's entry wins.
                remove(&fd, Path::new(c.as_os_str()))?;
                mkdir(&fd, c.as_os_str())?;
                open(&cur).map_err(|e| io(&cur, e))?
            }
            Err(e) => return Err(io(&cur, e)),
        };
    }
    Ok(fd)
}

/// The directory `rel` of the root if it exists (resolved in it).
fn dirs_existing(root: &OwnedFd, rel: &Path) -> Option<OwnedFd> {
    let p = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    openat2(root, p, how(OFlag::O_DIRECTORY | OFlag::O_PATH)).ok()
}

fn stat(dir: &impl AsFd, name: &std::ffi::OsStr) -> Option<FileStat> {
    fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).ok()
}

fn is(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

fn mkdir(dir: &impl AsFd, name: &std::ffi::OsStr) -> Result<(), RuntimeError> {
    match mkdirat(dir, name, Mode::from_bits_truncate(0o755)) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(io(Path::new(name), e)),
    }
}

/// Make room for a new non-directory entry `name` in `dir`.
fn replace(dir: &OwnedFd, name: &std::ffi::OsStr) -> Result<(), RuntimeError> {
    if stat(dir, name).is_some() {
        remove(dir, Path::new(name))?;
    }
    Ok(())
}

/// Remove `name` from `dir` (a whole tree for a directory), never following a link.
fn remove(dir: &OwnedFd, name: &Path) -> Result<(), RuntimeError> {
    let Some(st) = stat(dir, name.as_os_str()) else {
        return Ok(());
    };
    if is(&st, SFlag::S_IFDIR) {
        // std's remove_dir_all opens each level without following symlinks (CVE-2022-21658),
        // from the directory `dir` names through its descriptor.
        let path = fd_path(dir.as_fd()).join(name);
        std::fs::remove_dir_all(&path).map_err(|e| RuntimeError::Io(format!("{}: {e}", name.display())))
    } else {
        unlinkat(dir, name, UnlinkatFlags::NoRemoveDir).map_err(|e| io(name, e))
    }
}

/// An opaque whiteout in `dir` (the root's `rel`): what the layers below put there goes.
fn opaque(dir: &OwnedFd, rel: &Path, mine: &HashSet<PathBuf>) -> Result<(), RuntimeError> {
    let listing =
        std::fs::read_dir(fd_path(dir.as_fd())).map_err(|e| RuntimeError::Io(format!("{}: {e}", rel.display())))?;
    for child in listing.flatten() {
        let name = child.file_name();
        if !mine.contains(&rel.join(&name)) {
            remove(dir, Path::new(&name))?;
        }
    }
    Ok(())
}

/// A path naming the directory open at `fd` (through this process's descriptor table).
fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_made_relative_and_parent_components_refused() {
        assert_eq!(normalize(Path::new("/usr/./bin/x")), Some(PathBuf::from("usr/bin/x")));
        assert_eq!(normalize(Path::new("./")), Some(PathBuf::new()));
        assert_eq!(normalize(Path::new("../../x")), None);
        assert_eq!(normalize(Path::new("a/../../x")), None);
    }

    #[test]
    fn special_bits_are_cleared() {
        assert_eq!(clean_mode(0o4755, false), 0o755);
        assert_eq!(clean_mode(0o2755, false), 0o755);
        assert_eq!(clean_mode(0o1777, true), 0o1777);
        assert_eq!(clean_mode(0o1777, false), 0o777);
    }
}
