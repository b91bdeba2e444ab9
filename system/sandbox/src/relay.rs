//! An interactive step's stdio: two descriptors the host passed for the job (one end each of
//! two pipes whose other ends went to another sandbox's init), relayed to and from the
//! program's own stdin and stdout pipes by the init's supervisor loop.
//!
//! The program never holds a descriptor from outside its sandbox: it keeps the pipes its slot
//! was pre-warmed with, and the init copies bytes across. Both directions are bounded
//! ([`ROOM`]): a side that stops reading makes the other block on a full pipe, as a direct
//! pipe would, and ends by its own wall limit — never a deadlock, never unbounded memory.
//! End of file travels on: the program's stdout closing closes `sink` once what it wrote is
//! handed over, and `source` closing closes the program's stdin once it read what came before.

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};

/// Bytes held per direction at most, beyond the pipes' own buffers.
pub(crate) const ROOM: usize = 64 * 1024;

pub(crate) struct Relay {
    /// From the other side; becomes the program's stdin.
    source: Option<OwnedFd>,
    /// To the other side; gets the program's stdout.
    sink: Option<OwnedFd>,
    /// Read from `source`, not yet written to the program.
    inbound: Vec<u8>,
    /// Written by the program, not yet written to `sink`.
    outbound: Vec<u8>,
    /// The program's stdout reached end of file: close `sink` once `outbound` is out.
    closing: bool,
}

impl Relay {
    pub(crate) fn new(source: OwnedFd, sink: OwnedFd) -> Self {
        for fd in [&source, &sink] {
            crate::init::set_nonblocking(fd);
        }
        Self {
            source: Some(source),
            sink: Some(sink),
            inbound: Vec::new(),
            outbound: Vec::new(),
            closing: false,
        }
    }

    /// Whether the program's stdout may be read now (room to hold what it wrote).
    pub(crate) fn takes_output(&self) -> bool {
        self.outbound.len() < ROOM
    }

    /// What the program wrote, to be handed over.
    pub(crate) fn push_output(&mut self, data: &[u8]) {
        if self.sink.is_some() {
            self.outbound.extend_from_slice(data);
        }
    }

    /// The program's stdout is at end of file.
    pub(crate) fn output_done(&mut self) {
        self.closing = true;
        if self.outbound.is_empty() {
            self.sink = None;
        }
    }

    /// Everything the program wrote was handed over, or the other side is gone.
    pub(crate) fn settled(&self) -> bool {
        self.sink.is_none()
    }

    /// The descriptors to wait on, given the program's stdin `stdin` (still open or not).
    pub(crate) fn interest<'a>(&'a self, stdin: Option<&'a OwnedFd>, pfds: &mut Vec<PollFd<'a>>) {
        if let Some(s) = &self.source
            && self.inbound.len() < ROOM
        {
            pfds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
        }
        if let Some(w) = stdin
            && !self.inbound.is_empty()
        {
            pfds.push(PollFd::new(w.as_fd(), PollFlags::POLLOUT));
        }
        if let Some(k) = &self.sink
            && !self.outbound.is_empty()
        {
            pfds.push(PollFd::new(k.as_fd(), PollFlags::POLLOUT));
        }
    }

    /// Move what can move without blocking. `stdin` is the program's stdin pipe: closed here
    /// once `source` ended and everything before was written (or the program closed it).
    pub(crate) fn forward(&mut self, stdin: &mut Option<OwnedFd>) {
        if let Some(s) = &self.source {
            let mut buf = [0u8; 16384];
            while self.inbound.len() < ROOM {
                match nix::unistd::read(s, &mut buf) {
                    Ok(0) => {
                        self.source = None;
                        break;
                    }
                    Ok(n) => self.inbound.extend_from_slice(&buf[..n]),
                    Err(Errno::EINTR) => continue,
                    Err(Errno::EAGAIN) => break,
                    Err(_) => {
                        self.source = None;
                        break;
                    }
                }
            }
        }
        if let Some(w) = stdin.as_ref() {
            match write_some(w, &mut self.inbound) {
                Ok(()) => {}
                // The program closed its stdin: nothing more reaches it, and the other side's
                // writes fail from now on, as into a closed pipe.
                Err(()) => {
                    *stdin = None;
                    self.source = None;
                    self.inbound.clear();
                }
            }
        }
        if self.source.is_none() && self.inbound.is_empty() {
            *stdin = None;
        }
        if let Some(k) = &self.sink {
            if write_some(k, &mut self.outbound).is_err() {
                // The other side is gone: what the program writes from now on is dropped.
                self.sink = None;
                self.outbound.clear();
            } else if self.closing && self.outbound.is_empty() {
                self.sink = None;
            }
        }
    }
}

/// Write as much of `pending` as `fd` takes now, dropping what went out; `Err` when the
/// reader is gone.
fn write_some(fd: &OwnedFd, pending: &mut Vec<u8>) -> Result<(), ()> {
    while !pending.is_empty() {
        match nix::unistd::write(fd, pending) {
            Ok(n) => {
                pending.drain(..n);
            }
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => return Ok(()),
            Err(_) => return Err(()),
        }
    }
    Ok(())
}
