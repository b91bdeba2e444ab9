//! The template: a small, single-threaded process that forks new sandbox init processes into
//! fresh namespaces without an exec (a fork server, like Android's zygote).
//!
//! Executing `/proc/self/exe` for every sandbox costs about a millisecond of CPU (mapping and
//! relocating a large binary, runtime start); the template pays it once. The host keeps one
//! template per [`crate::Sandboxes`] and talks to it over a socketpair:
//!
//! - `S` + clone flags (u64 LE), with the new sandbox's channel as SCM_RIGHTS → the template
//!   forks; the child becomes the init process on that channel; the answer is its pid (i32 LE).
//! - `R` + pid (i32 LE) → the template waits for that child (the host killed it) → `r`.
//!
//! The template never reaps a child unasked, so a pid the host holds cannot be recycled before
//! the host is done with it. When the host goes away (EOF), the template exits.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::protocol;

/// argv[1] selecting the template.
pub const TEMPLATE_ARG: &str = "__wolf-sandbox-template";

/// The host's handle on its template.
#[derive(Debug)]
pub struct Template {
    child: Mutex<Child>,
    sock: Mutex<UnixStream>,
}

impl Template {
    /// Start the template from `exe` (which must call [`crate::main_if_init`] first thing).
    pub fn start(exe: &std::path::Path) -> io::Result<Self> {
        let (ours, theirs) = UnixStream::pair()?;
        // The template's end must survive its exec: clear close-on-exec and pass its number.
        let flags = nix::fcntl::fcntl(&theirs, nix::fcntl::FcntlArg::F_GETFD)?;
        let mut fdflags = nix::fcntl::FdFlag::from_bits_truncate(flags);
        fdflags.remove(nix::fcntl::FdFlag::FD_CLOEXEC);
        nix::fcntl::fcntl(&theirs, nix::fcntl::FcntlArg::F_SETFD(fdflags))?;
        let child = Command::new(exe)
            .arg(TEMPLATE_ARG)
            .arg(theirs.as_raw_fd().to_string())
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()?;
        drop(theirs);
        Ok(Self {
            child: Mutex::new(child),
            sock: Mutex::new(ours),
        })
    }

    /// The template's pid (host namespace).
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap_or_else(|e| e.into_inner()).id()
    }

    /// Whether the template process still runs (it is reaped here once it has exited).
    pub fn alive(&self) -> bool {
        matches!(
            self.child.lock().unwrap_or_else(|e| e.into_inner()).try_wait(),
            Ok(None)
        )
    }

    /// Fork a new init process into `flags` namespaces, serving `channel`.
    pub fn spawn(&self, flags: CloneFlags, channel: &OwnedFd) -> io::Result<Pid> {
        let mut sock = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        protocol::send_fds(&sock, &[channel.as_raw_fd()])?;
        let mut req = [0u8; 9];
        req[0] = b'S';
        req[1..].copy_from_slice(&(flags.bits() as u64).to_le_bytes());
        sock.write_all(&req)?;
        let mut pid = [0u8; 4];
        sock.read_exact(&mut pid)?;
        let pid = i32::from_le_bytes(pid);
        if pid <= 0 {
            return Err(io::Error::from_raw_os_error(-pid));
        }
        Ok(Pid::from_raw(pid))
    }

    /// Reap `pid` (already killed by the host); returns once it is gone.
    pub fn reap(&self, pid: Pid) -> io::Result<()> {
        let mut sock = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        let mut req = [0u8; 5];
        req[0] = b'R';
        req[1..].copy_from_slice(&pid.as_raw().to_le_bytes());
        sock.write_all(&req)?;
        let mut ok = [0u8; 1];
        sock.read_exact(&mut ok)
    }
}

impl Drop for Template {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The template process's main loop. Never returns.
pub(crate) fn main() -> ! {
    let fd: i32 = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(-1);
    if fd < 3 {
        eprintln!("wolf-sandbox template: no control descriptor");
        std::process::exit(2);
    }
    let mut sock = UnixStream::from(crate::sys::own_inherited_fd(fd));
    loop {
        let Ok((op, mut fds)) = protocol::recv_byte_with_fds(&sock) else {
            std::process::exit(0); // the host is gone
        };
        let reply: Vec<u8> = match op {
            // send_fds' marker byte carries the new sandbox's channel; the request follows.
            b'F' => {
                let Some(channel) = fds.pop() else {
                    std::process::exit(1)
                };
                let mut req = [0u8; 9];
                if sock.read_exact(&mut req).is_err() || req[0] != b'S' {
                    std::process::exit(1);
                }
                let bits = u64::from_le_bytes(req[1..].try_into().expect("8 bytes"));
                let flags = CloneFlags::from_bits_truncate(bits as i32);
                match crate::sys::fork_into(flags) {
                    Ok(None) => {
                        drop(sock);
                        // The template is single-threaded, so "parent death" means the template
                        // exited (it does when the host goes away): take the sandbox down too.
                        // (Should the template die before this line, the host is gone too and
                        // the init process ends on its closed channel.)
                        let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
                        crate::init::run_and_exit(UnixStream::from(channel));
                    }
                    Ok(Some(pid)) => pid.as_raw().to_le_bytes().to_vec(),
                    Err(e) => (-e.raw_os_error().unwrap_or(libc::EIO)).to_le_bytes().to_vec(),
                }
            }
            b'R' => {
                let mut pid = [0u8; 4];
                if sock.read_exact(&mut pid).is_err() {
                    std::process::exit(1);
                }
                let pid = Pid::from_raw(i32::from_le_bytes(pid));
                while let Err(nix::errno::Errno::EINTR) = waitpid(pid, None) {}
                b"r".to_vec()
            }
            _ => std::process::exit(1),
        };
        if sock.write_all(&reply).is_err() {
            std::process::exit(0);
        }
    }
}
