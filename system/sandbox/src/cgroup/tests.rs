//! Fake cgroupfs tests: both versions, no root needed.

use std::fs;
use std::path::Path;

use super::*;

const HYBRID_CGROUP: &str = "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";
const HYBRID_MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec - cgroup2 cgroup2 rw,nsdelegate
33 30 0:29 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec - cgroup cgroup rw,cpu
36 30 0:32 / /sys/fs/cgroup/cpuacct rw,nosuid,nodev,noexec - cgroup cgroup rw,cpuacct
";

#[test]
fn hybrid_host_with_empty_unified_hierarchy_uses_v1_under_own_cgroup() {
    let layout = Layout::detect(HYBRID_CGROUP, HYBRID_MOUNTINFO, |_| Some(String::new())).unwrap();
    assert_eq!(
        layout,
        Layout::V1 {
            memory: "/sys/fs/cgroup/memory/process_api/abc/wolf".into(),
            pids: "/sys/fs/cgroup/pids/wolf".into(),
            cpu: "/sys/fs/cgroup/cpu/wolf".into(),
            cpuacct: "/sys/fs/cgroup/cpuacct/wolf".into(),
        }
    );
}

#[test]
fn unified_host_with_controllers_uses_v2() {
    let cg = "0::/user.slice/session-1.scope\n";
    let mi = "24 1 0:22 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
    let layout = Layout::detect(cg, mi, |p| {
        assert_eq!(p, Path::new("/sys/fs/cgroup/cgroup.controllers"));
        Some("cpuset cpu io memory pids\n".into())
    })
    .unwrap();
    assert_eq!(
        layout,
        Layout::V2 {
            base: "/sys/fs/cgroup/user.slice/session-1.scope/wolf".into()
        }
    );
    assert_eq!(layout.version(), Version::V2);
    // Restarted inside its own leaf of a delegated cgroup: the base stays beside the leaf.
    let again = Layout::detect("0::/system.slice/wolf.service/wolf-supervisor\n", mi, |_| {
        Some("memory pids cpu".into())
    })
    .unwrap();
    assert_eq!(
        again,
        Layout::V2 {
            base: "/sys/fs/cgroup/system.slice/wolf.service/wolf".into()
        }
    );
}

#[test]
fn cgroup_namespace_mount_root_is_stripped() {
    let cg = "0::/inner/job\n";
    let mi = "24 1 0:22 /inner /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    let layout = Layout::detect(cg, mi, |_| Some("memory pids".into())).unwrap();
    assert_eq!(
        layout,
        Layout::V2 {
            base: "/sys/fs/cgroup/job/wolf".into()
        }
    );
}

#[test]
fn no_controllers_anywhere_is_an_error() {
    let mi = "24 1 0:22 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    assert!(Layout::detect("0::/\n", mi, |_| Some("cpu io".into())).is_err());
}

#[test]
fn v1_limits_swap_off_and_quota() {
    let tmp = tempfile::tempdir().unwrap();
    let base = |c: &str| tmp.path().join(c);
    let layout = Layout::V1 {
        memory: base("memory"),
        pids: base("pids"),
        cpu: base("cpu"),
        cpuacct: base("cpuacct"),
    };
    layout.ensure_base().unwrap();
    // The memsw file exists on hosts with swap accounting; the fake has it.
    let step = StepCgroup::create(&layout, "sbx-run").unwrap();
    fs::write(step.dirs()[0].join("memory.memsw.limit_in_bytes"), "").unwrap();
    step.set_limits(&CgroupLimits {
        memory_bytes: 64 << 20,
        pids: 16,
        cpu_millis: 1000,
    })
    .unwrap();
    let read = |p: &Path| fs::read_to_string(p).unwrap();
    let mem = &step.dirs()[0];
    assert_eq!(read(&mem.join("memory.limit_in_bytes")), (64u64 << 20).to_string());
    assert_eq!(
        read(&mem.join("memory.memsw.limit_in_bytes")),
        (64u64 << 20).to_string()
    );
    assert_eq!(read(&mem.join("memory.swappiness")), "0");
    assert_eq!(read(&step.dirs()[1].join("pids.max")), "16");
    assert_eq!(read(&step.dirs()[2].join("cpu.cfs_quota_us")), "100000");
    assert_eq!(step.dirs().len(), 4);
    for f in [
        "cgroup.procs",
        "cpuacct.usage",
        "memory.max_usage_in_bytes",
        "memory.oom_control",
    ] {
        let d = if f == "cpuacct.usage" {
            &step.dirs()[3]
        } else {
            &step.dirs()[0]
        };
        fs::write(d.join(f), "").unwrap();
    }
    for d in step.dirs() {
        fs::write(d.join("cgroup.procs"), "").unwrap();
    }
    let h = step.handles().unwrap();
    assert_eq!(h.procs.len(), 4);
}

#[test]
fn v2_limits_and_handles() {
    let tmp = tempfile::tempdir().unwrap();
    let layout = Layout::V2 {
        base: tmp.path().join("wolf"),
    };
    layout.ensure_base().unwrap();
    assert_eq!(
        fs::read_to_string(tmp.path().join("wolf/cgroup.subtree_control")).unwrap(),
        "+memory +pids +cpu"
    );
    let step = StepCgroup::create(&layout, "sbx-compile").unwrap();
    let d = step.dirs()[0].clone();
    for f in [
        "memory.swap.max",
        "memory.oom.group",
        "cgroup.procs",
        "cpu.stat",
        "memory.peak",
        "memory.events",
    ] {
        fs::write(d.join(f), "").unwrap();
    }
    step.set_limits(&CgroupLimits {
        memory_bytes: 1 << 30,
        pids: 64,
        cpu_millis: 1500,
    })
    .unwrap();
    assert_eq!(
        fs::read_to_string(d.join("memory.max")).unwrap(),
        (1u64 << 30).to_string()
    );
    assert_eq!(fs::read_to_string(d.join("memory.swap.max")).unwrap(), "0");
    assert_eq!(fs::read_to_string(d.join("memory.oom.group")).unwrap(), "1");
    assert_eq!(fs::read_to_string(d.join("cpu.max")).unwrap(), "150000 100000");
    let h = step.handles().unwrap();
    assert_eq!(h.procs.len(), 1);
    step.remove();
}

#[test]
fn stat_parsing_for_both_versions() {
    assert_eq!(parse_cpu_ns(Version::V1, "123456789\n"), 123_456_789);
    assert_eq!(
        parse_cpu_ns(Version::V2, "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\n"),
        1_500_000
    );
    assert_eq!(
        parse_oom_kills(Version::V1, "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
        2
    );
    assert_eq!(
        parse_oom_kills(
            Version::V2,
            "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 1\n"
        ),
        1
    );
    assert_eq!(parse_peak_bytes(Version::V2, "4096\n"), 4096);
    assert_eq!(parse_oom_kills(Version::V1, "garbage"), 0);
}
