//! The template: a small, single-threaded process that forks new sandbox init processes into
//! fresh namespaces without an exec (a fork server, like Android's zygote).
//!
//! Executing `/proc/self/exe` for every sandbox costs about a millisecond of CPU (mapping and
//! relocating a large binary, runtime start); the template pays it once. The host keeps one
//! template per [`crate::Sandboxes`] and talks to it over a socketpair:
//!
//! - the new sandbox's channel as SCM_RIGHTS (marker byte `F`), then the frame
//!   [`Order::Spawn`] → the template forks; the child becomes the init process on that channel;
//!   the answer is [`Reply::Spawned`] with its pid (or [`Reply::Failed`] with the errno).
//! - marker byte `O`, then [`Order::Reap`] → the template waits for that child (the host killed
//!   it) → [`Reply::Reaped`].
//!
//! Orders and replies are typed frames of [`crate::protocol`] (a marker byte first, because
//! descriptors must travel with a byte of their own).
//!
//! The template never reaps a child unasked, so a pid the host holds cannot be recycled before
//! the host is done with it. When the host goes away (EOF), the template exits.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use nix::sched::CloneFlags;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use crate::protocol;

/// What the host asks of its template.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Order {
    /// Fork an init process into new namespaces (`clone_flags`), serving the channel that came
    /// with the order's marker byte.
    Spawn {
        /// CloneFlags bits.
        clone_flags: i32,
    },
    /// Wait for this child, which the host killed.
    Reap {
        /// Its pid.
        pid: i32,
    },
}

/// The template's answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The init process runs.
    Spawned {
        /// Its pid (host namespace).
        pid: i32,
    },
    /// fork failed.
    Failed {
        /// The errno.
        errno: i32,
    },
    /// The child is reaped.
    Reaped,
}

/// Marker byte of an order that carries a descriptor.
const WITH_FD: u8 = b'F';
/// Marker byte of an order without one.
const PLAIN: u8 = b'O';

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
        let order = Order::Spawn {
            clone_flags: flags.bits(),
        };
        protocol::write_frame(&mut *sock, &order, &[])?;
        match protocol::read_frame::<Reply>(&mut *sock, 0)?.0 {
            Reply::Spawned { pid } if pid > 0 => Ok(Pid::from_raw(pid)),
            Reply::Failed { errno } => Err(io::Error::from_raw_os_error(errno)),
            other => Err(io::Error::other(format!("the template answered {other:?} to a spawn"))),
        }
    }

    /// Reap `pid` (already killed by the host); returns once it is gone.
    pub fn reap(&self, pid: Pid) -> io::Result<()> {
        let mut sock = self.sock.lock().unwrap_or_else(|e| e.into_inner());
        sock.write_all(&[PLAIN])?;
        protocol::write_frame(&mut *sock, &Order::Reap { pid: pid.as_raw() }, &[])?;
        match protocol::read_frame::<Reply>(&mut *sock, 0)?.0 {
            Reply::Reaped => Ok(()),
            other => Err(io::Error::other(format!("the template answered {other:?} to a reap"))),
        }
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
        let Ok((marker, mut fds)) = protocol::recv_byte_with_fds(&sock) else {
            std::process::exit(0); // the host is gone
        };
        let Ok((order, _)) = protocol::read_frame::<Order>(&mut sock, 0) else {
            std::process::exit(0);
        };
        let reply = match (marker, order) {
            (WITH_FD, Order::Spawn { clone_flags }) => {
                let (Some(channel), true) = (fds.pop(), fds.is_empty()) else {
                    std::process::exit(1)
                };
                let flags = CloneFlags::from_bits_truncate(clone_flags);
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
                    Ok(Some(pid)) => Reply::Spawned { pid: pid.as_raw() },
                    Err(e) => Reply::Failed {
                        errno: e.raw_os_error().unwrap_or(libc::EIO),
                    },
                }
            }
            (PLAIN, Order::Reap { pid }) if fds.is_empty() => {
                let pid = Pid::from_raw(pid);
                while let Err(nix::errno::Errno::EINTR) = waitpid(pid, None) {}
                Reply::Reaped
            }
            // Anything else is not the host speaking: stop serving.
            _ => std::process::exit(1),
        };
        if protocol::write_frame(&mut sock, &reply, &[]).is_err() {
            std::process::exit(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_replies_are_typed_frames() {
        for order in [
            Order::Spawn {
                clone_flags: 0x2002_0000,
            },
            Order::Reap { pid: 42 },
        ] {
            let mut buf = Vec::new();
            protocol::write_frame(&mut buf, &order, &[]).unwrap();
            let (back, blobs): (Order, _) = protocol::read_frame(&mut buf.as_slice(), 0).unwrap();
            assert_eq!((back, blobs.len()), (order, 0));
        }
        for reply in [Reply::Spawned { pid: 7 }, Reply::Failed { errno: 11 }, Reply::Reaped] {
            let mut buf = Vec::new();
            protocol::write_frame(&mut buf, &reply, &[]).unwrap();
            let (back, _): (Reply, _) = protocol::read_frame(&mut buf.as_slice(), 0).unwrap();
            assert_eq!(back, reply);
        }
    }
}
