//! Processes as /proc shows them: parents, command lines, environments.

use std::path::PathBuf;

/// The parent of `pid` (0 when unknown).
pub fn ppid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    stat.rsplit(')')
        .next()
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Every live pid.
pub fn all() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    all().into_iter().filter(|p| ppid(*p) == pid).collect()
}

/// Every descendant of `pid`.
pub fn descendants(pid: i32) -> Vec<i32> {
    let pids = all();
    let parents: Vec<(i32, i32)> = pids.iter().map(|p| (*p, ppid(*p))).collect();
    let mut out = Vec::new();
    let mut frontier = vec![pid];
    while let Some(p) = frontier.pop() {
        for (c, pp) in &parents {
            if *pp == p {
                out.push(*c);
                frontier.push(*c);
            }
        }
    }
    out
}

/// The executable path of `pid`.
pub fn exe(pid: i32) -> Option<PathBuf> {
    std::fs::read_link(format!("/proc/{pid}/exe")).ok()
}

/// Whether `pid` is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
        .unwrap_or(false)
}

/// What it takes to start `pid` again: argv, environment, working directory, uid, gid.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// argv.
    pub argv: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub cwd: PathBuf,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
}

fn nul_split(b: &[u8]) -> Vec<String> {
    b.split(|c| *c == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// Read `pid`'s snapshot.
pub fn snapshot(pid: i32) -> anyhow::Result<Snapshot> {
    let argv = nul_split(&std::fs::read(format!("/proc/{pid}/cmdline"))?);
    anyhow::ensure!(!argv.is_empty(), "process {pid} has no command line");
    let env = nul_split(&std::fs::read(format!("/proc/{pid}/environ"))?)
        .into_iter()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let id = |key: &str| -> u32 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    Ok(Snapshot {
        argv,
        env,
        cwd,
        uid: id("Uid:"),
        gid: id("Gid:"),
    })
}

/// The process listening on TCP `port` (IPv4 or IPv6), found through the socket's inode.
pub fn listening_on(port: u16) -> Option<i32> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        for line in std::fs::read_to_string(table).unwrap_or_default().lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // local_address is ADDR:PORT in hex; state 0A is LISTEN; inode is field 9.
            let local_port = f
                .get(1)
                .and_then(|a| a.rsplit(':').next())
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if local_port == Some(port) && f.get(3) == Some(&"0A") {
                inodes.extend(f.get(9).map(|i| format!("socket:[{i}]")));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    all().into_iter().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|fd| {
                std::fs::read_link(fd.path())
                    .map(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
                    .unwrap_or(false)
            })
    })
}

/// Sandbox inits (workers) running a program whose command line contains `marker`: program →
/// step supervisor → init, so the init is the program's grandparent.
pub fn workers_running(marker: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for pid in all() {
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmd = String::from_utf8_lossy(&cmd);
        // The sandbox processes themselves are `wolf` (forked, not exec'd): skip them.
        if cmd.contains(marker) && !cmd.contains("wolf") {
            let init = ppid(ppid(pid));
            if init > 1 && !out.contains(&init) {
                out.push(init);
            }
        }
    }
    out
}

/// The sandbox templates (fork servers) that `pid` started: its children whose first argument
/// is the template's marker.
pub fn templates_of(pid: i32) -> Vec<i32> {
    children(pid)
        .into_iter()
        .filter(|c| {
            std::fs::read(format!("/proc/{c}/cmdline"))
                .map(|b| b.split(|x| *x == 0).nth(1) == Some(b"__wolf-sandbox-template".as_slice()))
                .unwrap_or(false)
        })
        .collect()
}
