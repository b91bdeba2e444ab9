//! cgroup v1: memory (with memory+swap), pids, cpu (CFS quota), cpuacct (usage).

use std::path::{Path, PathBuf};

use super::{CgroupError, CgroupLimits, write};

/// CFS period used for the quota, microseconds.
pub(super) const PERIOD_US: u64 = 100_000;

/// `dirs` is [memory, pids, cpu, (cpuacct)].
pub(super) fn set_limits(dirs: &[PathBuf], l: &CgroupLimits) -> Result<(), CgroupError> {
    let mem = &dirs[0];
    // Swap off: swappiness 0, and memory+swap capped at the same value as memory.
    let _ = write(&mem.join("memory.swappiness"), "0");
    // memory+swap may never be below memory: raise memsw first, lower it last.
    let value = l.memory_bytes.to_string();
    let limit = mem.join("memory.limit_in_bytes");
    let memsw = mem.join("memory.memsw.limit_in_bytes");
    let current: u64 = std::fs::read_to_string(&limit)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u64::MAX);
    let has_memsw = memsw.exists();
    if has_memsw && l.memory_bytes > current {
        write(&memsw, &value)?;
        write(&limit, &value)?;
    } else {
        write(&limit, &value)?;
        if has_memsw {
            write(&memsw, &value)?;
        }
    }
    write(&dirs[1].join("pids.max"), &l.pids.to_string())?;
    write(&dirs[2].join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
    write(
        &dirs[2].join("cpu.cfs_quota_us"),
        &(l.cpu_millis * PERIOD_US / 1000).max(1000).to_string(),
    )?;
    Ok(())
}

/// v1 has no cgroup.kill: SIGKILL every listed task (the pid namespace normally got them first).
pub(super) fn kill_all(dir: &Path) {
    let Ok(text) = std::fs::read_to_string(dir.join("cgroup.procs")) else {
        return;
    };
    for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
    }
}
