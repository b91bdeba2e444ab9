//! User namespace mapping when Wolf does not run as root: the init process is root inside its
//! namespaces and the invoking user outside. (Only the real root path gives the program a
//! distinct unprivileged uid; see docs/sandbox.md.)

use std::io;

use nix::unistd::Pid;

/// Map uid/gid 0 inside `pid`'s new user namespace to our own ids.
pub fn map_root_to_self(pid: Pid) -> io::Result<()> {
    let uid = nix::unistd::geteuid();
    let gid = nix::unistd::getegid();
    let base = format!("/proc/{pid}");
    // setgroups must be denied before an unprivileged process may write gid_map.
    std::fs::write(format!("{base}/setgroups"), "deny")?;
    std::fs::write(format!("{base}/uid_map"), format!("0 {uid} 1"))?;
    std::fs::write(format!("{base}/gid_map"), format!("0 {gid} 1"))
}
