//! cgroup v2: memory.max with swap off, memory.oom.group, pids.max, cpu.max.

use std::fs;
use std::path::Path;

use super::{CgroupError, CgroupLimits, write};

/// CPU period used for cpu.max, microseconds.
const PERIOD_US: u64 = 100_000;

/// Create the base and enable the controllers for its children. The "no internal processes"
/// rule forbids enabling controllers below a cgroup that holds processes, so when our own
/// cgroup is busy we move ourselves into a leaf `wolf-supervisor` first.
pub(super) fn ensure_base(base: &Path) -> Result<(), CgroupError> {
    let parent = base.parent().unwrap_or(base);
    fs::create_dir_all(base).map_err(|source| CgroupError::Create {
        path: base.to_path_buf(),
        source,
    })?;
    let want = "+memory +pids +cpu";
    if write(&parent.join("cgroup.subtree_control"), want).is_err() {
        let leaf = parent.join(super::SUPERVISOR_LEAF);
        fs::create_dir_all(&leaf).map_err(|source| CgroupError::Create {
            path: leaf.clone(),
            source,
        })?;
        write(&leaf.join("cgroup.procs"), &std::process::id().to_string())?;
        if let Err(e) = write(&parent.join("cgroup.subtree_control"), want) {
            // Still busy: other processes share our cgroup (a shell that started us, say).
            // They are not ours to move.
            let others = fs::read_to_string(parent.join("cgroup.procs")).unwrap_or_default();
            let others: Vec<&str> = others.split_whitespace().collect();
            return Err(CgroupError::NotFound(format!(
                "cannot enable the memory, pids and cpu controllers below {}: it holds other processes \
                 ({}) and cgroup v2 allows controllers only below cgroups without processes; run Wolf \
                 as the only process of its cgroup (systemd: a service with Delegate=yes) ({e})",
                parent.display(),
                others.join(", ")
            )));
        }
    }
    write(&base.join("cgroup.subtree_control"), want)
}

pub(super) fn set_limits(dir: &Path, l: &CgroupLimits) -> Result<(), CgroupError> {
    write(&dir.join("memory.max"), &l.memory_bytes.to_string())?;
    let swap = dir.join("memory.swap.max");
    if swap.exists() {
        write(&swap, "0")?;
    }
    // The whole step is one unit: an OOM kill takes every process of it.
    let group = dir.join("memory.oom.group");
    if group.exists() {
        write(&group, "1")?;
    }
    write(&dir.join("pids.max"), &l.pids.to_string())?;
    let quota = (l.cpu_millis * PERIOD_US / 1000).max(1000);
    write(&dir.join("cpu.max"), &format!("{quota} {PERIOD_US}"))
}
