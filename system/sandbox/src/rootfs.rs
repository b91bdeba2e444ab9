//! The sandbox's root filesystem, built inside the init process's private mount namespace.
//!
//! Layout after [`setup`] (see ARCHITECTURE §3):
//!
//! ```text
//! /            tmpfs, read-only after setup
//! /usr /lib... host directories bind-mounted read-only, nosuid, nodev (non-recursive)
//! /etc         tmpfs files written here (passwd, group, hosts) + read-only binds of a few host files
//! /dev         tmpfs with null zero full random urandom bound from the host, fd/std* symlinks
//! /dev/shm     fresh tmpfs, size-capped
//! /proc        new procfs of the sandbox's pid namespace, hidepid=2; /proc/sys read-only
//! /tmp /work   fresh tmpfs, size-capped, owned by the sandbox user
//! (no /sys)
//! ```
//!
//! [`RootfsPlan`] is data: built from the configuration and the host's file types, then executed
//! by [`setup`] through [`Sys`], so its ordering is unit-tested with a recorder.

use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use serde::{Deserialize, Serialize};

use crate::sys::{Sys, SysResult};

/// What a host path turned out to be when the plan was resolved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostEntry {
    /// A directory: bind it.
    Dir,
    /// A regular file: bind it onto an empty file.
    File,
    /// A symlink: recreate it (e.g. `/lib -> usr/lib` on merged-/usr hosts).
    Symlink(PathBuf),
    /// Missing: skip.
    Missing,
}

/// One read-only bind mount of a host path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bind {
    /// Absolute host path.
    pub source: PathBuf,
    /// Absolute path inside the sandbox.
    pub path: PathBuf,
    /// Its type on the host.
    pub entry: HostEntry,
}

/// Paths inside the sandbox that Wolf itself provides; host binds may not land on or under them.
pub const RESERVED: [&str; 5] = ["/tmp", "/dev", "/proc", "/sys", "/etc/passwd"];

/// Sizes and identity for the writable places.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsConfig {
    /// Directory (on the host, seen from the private mount namespace) where the new root is
    /// assembled. Shadowed only inside the namespace.
    pub staging: PathBuf,
    /// Host paths bound read-only at the same place.
    pub binds: Vec<Bind>,
    /// Work directory inside (the job's files, the compiler's output).
    pub work_dir: String,
    /// Size cap of the work dir tmpfs, bytes.
    pub work_bytes: u64,
    /// Size cap of /tmp, bytes.
    pub tmp_bytes: u64,
    /// Size cap of /dev/shm, bytes.
    pub shm_bytes: u64,
    /// uid/gid the program runs as (owner of the writable dirs).
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// Hostname inside.
    pub hostname: String,
}

/// Devices bound from the host into /dev.
pub const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];

/// procfs entries masked like Docker does (bind of /dev/null or read-only).
const PROC_READONLY: [&str; 4] = ["sys", "sysrq-trigger", "irq", "bus"];
/// Masked with /dev/null: kernel internals, and the host's identifiers — its boot id (which
/// would let jobs tell whether they ran on the same host boot), its uids' key counts, its boot
/// command line.
const PROC_MASKED: [&str; 8] = [
    "kcore",
    "keys",
    "timer_list",
    "sched_debug",
    "kallsyms",
    "key-users",
    "cmdline",
    "sys/kernel/random/boot_id",
];

/// Classify host paths (the real resolver; tests pass their own closure).
pub fn resolve_host(path: &Path) -> HostEntry {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => std::fs::read_link(path)
            .map(HostEntry::Symlink)
            .unwrap_or(HostEntry::Missing),
        Ok(m) if m.is_dir() => HostEntry::Dir,
        Ok(m) if m.is_file() => HostEntry::File,
        _ => HostEntry::Missing,
    }
}

/// Build the bind list for `(host, inside)` pairs, classifying each host path with `classify`.
/// Pairs whose inside path is relative, already taken, or on or under a reserved place (the
/// work dir included) are dropped with a warning.
pub fn binds_for(paths: &[(PathBuf, PathBuf)], work_dir: &str, classify: impl Fn(&Path) -> HostEntry) -> Vec<Bind> {
    let mut out: Vec<Bind> = Vec::new();
    for (source, p) in paths {
        let reserved = RESERVED.iter().copied().chain([work_dir]).any(|r| p.starts_with(r));
        if !p.is_absolute() || reserved {
            tracing::warn!(path = %p.display(), "not binding into the sandbox: the path is reserved or relative");
            continue;
        }
        if out.iter().any(|b| b.path == *p) {
            continue;
        }
        let entry = classify(source);
        if entry != HostEntry::Missing {
            out.push(Bind {
                source: source.clone(),
                path: p.clone(),
                entry,
            });
        }
    }
    // Parents before children, so a bind inside another bind's tree is mounted on top of it.
    out.sort_by_key(|b| b.path.components().count());
    out
}

fn inside(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

const RO_BIND: MsFlags = MsFlags::MS_BIND
    .union(MsFlags::MS_REMOUNT)
    .union(MsFlags::MS_RDONLY)
    .union(MsFlags::MS_NOSUID)
    .union(MsFlags::MS_NODEV);

/// Create every missing parent of `p` (inside the staging root) as a 0755 directory.
fn mkdir_parents(sys: &mut impl Sys, root: &Path, p: &Path, made: &mut Vec<PathBuf>) -> SysResult {
    let mut cur = root.to_path_buf();
    let rel = p.strip_prefix(root).unwrap_or(p);
    let comps: Vec<_> = rel.components().collect();
    for c in &comps[..comps.len().saturating_sub(1)] {
        cur.push(c);
        if !made.contains(&cur) {
            sys.mkdir(&cur, 0o755)?;
            made.push(cur.clone());
        }
    }
    Ok(())
}

fn tmpfs_data(bytes: u64, mode: u32, uid: u32, gid: u32) -> String {
    format!("size={bytes},mode={mode:o},uid={uid},gid={gid}")
}

/// Assemble the root in `cfg.staging` and pivot into it. Runs in the init process, PID 1 of the
/// new pid namespace, inside its new mount namespace.
pub fn setup(sys: &mut impl Sys, cfg: &RootfsConfig) -> SysResult {
    let root = cfg.staging.as_path();
    let nosuid_nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    // 1. Stop mount propagation both ways before touching anything.
    sys.mount(None, Path::new("/"), None, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None)?;
    // 2. The new root is a small tmpfs; it becomes read-only at the end.
    sys.mount(
        Some(Path::new("wolf-root")),
        root,
        Some("tmpfs"),
        nosuid_nodev,
        Some("size=1m,mode=755"),
    )?;
    let mut made: Vec<PathBuf> = Vec::new();

    // 3. Host directories and files, read-only.
    for b in &cfg.binds {
        let target = inside(root, &b.path);
        mkdir_parents(sys, root, &target, &mut made)?;
        match &b.entry {
            HostEntry::Dir => {
                if !made.contains(&target) {
                    sys.mkdir(&target, 0o755)?;
                    made.push(target.clone());
                }
            }
            HostEntry::File => sys.write_new_file(&target, b"", 0o444)?,
            HostEntry::Symlink(to) => {
                sys.symlink(to, &target)?;
                continue;
            }
            HostEntry::Missing => continue,
        }
        sys.mount(Some(&b.source), &target, None, MsFlags::MS_BIND, None)?;
        sys.mount(None, &target, None, RO_BIND, None)?;
    }

    // 4. /etc: a few synthesized files (the host's passwd, shadow, hosts never enter).
    let etc = root.join("etc");
    if !made.contains(&etc) {
        sys.mkdir(&etc, 0o755)?;
        made.push(etc.clone());
    }
    let passwd = format!(
        "root:x:0:0:root:/root:/bin/false\nwolf:x:{}:{}:wolf:{}:/bin/false\n",
        cfg.uid, cfg.gid, cfg.work_dir
    );
    let group = format!("root:x:0:\nwolf:x:{}:\n", cfg.gid);
    let hosts = format!("127.0.0.1 localhost {}\n::1 localhost\n", cfg.hostname);
    for (name, contents) in [
        ("passwd", passwd),
        ("group", group),
        ("hosts", hosts),
        ("hostname", format!("{}\n", cfg.hostname)),
    ] {
        let p = etc.join(name);
        if !cfg.binds.iter().any(|b| inside(root, &b.path) == p) {
            sys.write_new_file(&p, contents.as_bytes(), 0o444)?;
        }
    }

    // 5. /dev: tmpfs with bound device nodes and the usual symlinks.
    let dev = root.join("dev");
    sys.mkdir(&dev, 0o755)?;
    sys.mount(
        Some(Path::new("wolf-dev")),
        &dev,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("size=64k,mode=755"),
    )?;
    for d in DEVICES {
        let target = dev.join(d);
        sys.write_new_file(&target, b"", 0o666)?;
        let host = PathBuf::from("/dev").join(d);
        sys.mount(Some(&host), &target, None, MsFlags::MS_BIND, None)?;
        sys.mount(
            None,
            &target,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            None,
        )?;
    }
    for (link, to) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        sys.symlink(Path::new(to), &dev.join(link))?;
    }
    let shm = dev.join("shm");
    sys.mkdir(&shm, 0o755)?;
    sys.mount(
        Some(Path::new("wolf-shm")),
        &shm,
        Some("tmpfs"),
        nosuid_nodev,
        Some(&tmpfs_data(cfg.shm_bytes, 0o1777, 0, 0)),
    )?;

    // 6. /proc of the new pid namespace (we are its PID 1), with the host-facing knobs masked.
    let proc_dir = root.join("proc");
    sys.mkdir(&proc_dir, 0o555)?;
    sys.mount(
        Some(Path::new("proc")),
        &proc_dir,
        Some("proc"),
        nosuid_nodev | MsFlags::MS_NOEXEC,
        Some("hidepid=2"),
    )?;
    for p in PROC_READONLY {
        let t = proc_dir.join(p);
        match sys.mount(Some(&t), &t, None, MsFlags::MS_BIND | MsFlags::MS_REC, None) {
            // Not every kernel has every entry (no sysrq-trigger without CONFIG_MAGIC_SYSRQ).
            Err(e) if e.source.raw_os_error() == Some(libc::ENOENT) => continue,
            r => r?,
        }
        sys.mount(None, &t, None, RO_BIND, None)?;
    }
    for p in PROC_MASKED {
        let t = proc_dir.join(p);
        // Some entries do not exist on every kernel; masking a missing one is not an error.
        let _ = sys.mount(Some(&dev.join("null")), &t, None, MsFlags::MS_BIND, None);
    }

    // 7. The writable places, fresh per sandbox.
    for (dir, bytes) in [
        ("tmp", cfg.tmp_bytes),
        (cfg.work_dir.trim_start_matches('/'), cfg.work_bytes),
    ] {
        let t = root.join(dir);
        mkdir_parents(sys, root, &t, &mut made)?;
        sys.mkdir(&t, 0o755)?;
        let mode = if dir == "tmp" { 0o1777 } else { 0o755 };
        sys.mount(
            Some(Path::new("wolf-tmp")),
            &t,
            Some("tmpfs"),
            nosuid_nodev,
            Some(&tmpfs_data(bytes, mode, cfg.uid, cfg.gid)),
        )?;
    }

    // 8. Seal the root and pivot into it; the old root is detached, leaving no path to the host.
    sys.mount(
        None,
        root,
        None,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | nosuid_nodev,
        None,
    )?;
    sys.chdir(root)?;
    // pivot_root(".", ".") stacks the old root under the new one; detaching "." then removes it
    // without needing a writable directory to put it in (pivot_root(2), NOTES).
    sys.pivot_root(Path::new("."), Path::new("."))?;
    sys.umount_detach(Path::new("."))?;
    sys.chdir(Path::new("/"))?;
    sys.set_hostname(&cfg.hostname)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::Recorder;

    fn cfg() -> RootfsConfig {
        let same = |p: &str| (PathBuf::from(p), PathBuf::from(p));
        let binds = binds_for(
            &[
                same("/usr"),
                same("/lib"),
                same("/etc/ld.so.cache"),
                same("/nope"),
                same("/work/x"),
                same("/tmp/y"),
                same("rel"),
            ],
            "/work",
            |p| match p.to_str().unwrap() {
                "/usr" => HostEntry::Dir,
                "/lib" => HostEntry::Symlink("usr/lib".into()),
                "/etc/ld.so.cache" => HostEntry::File,
                "/work/x" | "/tmp/y" | "rel" => HostEntry::Dir,
                _ => HostEntry::Missing,
            },
        );
        RootfsConfig {
            staging: "/mnt".into(),
            binds,
            work_dir: "/work".into(),
            work_bytes: 1 << 20,
            tmp_bytes: 1 << 20,
            shm_bytes: 1 << 16,
            uid: 65534,
            gid: 65534,
            hostname: "wolf".into(),
        }
    }

    #[test]
    fn missing_reserved_and_relative_paths_are_skipped_and_parents_come_first() {
        let c = cfg();
        assert_eq!(c.binds.len(), 3, "{:?}", c.binds);
        assert!(c.binds.iter().all(|b| b.path != Path::new("/nope")));
        assert_eq!(c.binds.last().unwrap().path, Path::new("/etc/ld.so.cache"));
    }

    #[test]
    fn order_private_then_binds_then_seal_then_pivot() {
        let mut r = Recorder::default();
        setup(&mut r, &cfg()).unwrap();
        let first = &r.calls[0];
        assert!(
            first.starts_with("mount  / ") && first.contains("MS_PRIVATE") && first.contains("MS_REC"),
            "{first}"
        );
        let seal = r
            .calls
            .iter()
            .position(|c| c.starts_with("mount  /mnt ") && c.contains("MS_RDONLY"))
            .expect("root sealed");
        let pivot = r.position("pivot_root").unwrap();
        let umount = r.position("umount .").unwrap();
        let last_mount_elsewhere = r
            .calls
            .iter()
            .rposition(|c| c.starts_with("mount") && !c.contains(" /mnt "))
            .unwrap();
        assert!(
            last_mount_elsewhere < seal,
            "every mount happens before the root is sealed"
        );
        assert!(seal < pivot && pivot < umount, "seal, pivot, then detach the old root");
        assert_eq!(r.calls.last().unwrap(), "hostname wolf");
    }

    #[test]
    fn host_binds_are_read_only_nosuid_nodev() {
        let mut r = Recorder::default();
        setup(&mut r, &cfg()).unwrap();
        let bind = r.position("mount /usr /mnt/usr").unwrap();
        let remount = &r.calls[bind + 1];
        for f in ["MS_RDONLY", "MS_REMOUNT", "MS_BIND", "MS_NOSUID", "MS_NODEV"] {
            assert!(remount.contains(f), "{remount} lacks {f}");
        }
        assert!(
            !r.calls[bind].contains("MS_REC"),
            "host binds are not recursive: no submounts leak"
        );
        assert!(r.calls.contains(&"symlink /mnt/lib -> usr/lib".to_string()));
    }

    #[test]
    fn writable_places_are_capped_tmpfs_and_there_is_no_sys() {
        let mut r = Recorder::default();
        setup(&mut r, &cfg()).unwrap();
        for dir in ["/mnt/tmp", "/mnt/work", "/mnt/dev/shm"] {
            let m = r
                .calls
                .iter()
                .find(|c| c.contains(&format!(" {dir} tmpfs")))
                .unwrap_or_else(|| panic!("{dir} not mounted"));
            assert!(m.contains("size="), "{m}");
            assert!(m.contains("MS_NOSUID") && m.contains("MS_NODEV"), "{m}");
        }
        assert!(!r.calls.iter().any(|c| c.contains("/mnt/sys")), "no /sys inside");
        let proc = r.calls.iter().find(|c| c.contains(" proc ")).unwrap();
        assert!(proc.contains("hidepid=2"));
        let etc_files: Vec<_> = r.calls.iter().filter(|c| c.starts_with("file /mnt/etc/")).collect();
        assert!(etc_files.iter().any(|c| c.contains("passwd")));
        assert!(!r.calls.iter().any(|c| c.contains("shadow")));
    }

    #[test]
    fn a_failing_mount_stops_the_pipeline() {
        let mut r = Recorder {
            fail_on: Some("pivot_root".into()),
            ..Default::default()
        };
        assert!(setup(&mut r, &cfg()).is_err());
        assert!(r.position("umount").is_none());
    }
}
