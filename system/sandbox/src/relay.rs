//! A live step's stdio: descriptors the host passed for the job, relayed to and from the
//! program's own stdin, stdout and stderr pipes by the init's supervisor loop.
//!
//! Two kinds ([`Live`]): a **peer** (an interactor in another sandbox: its stdin is the
//! program's stdout, its stdout the program's stdin; two descriptors, `source` and `sink`)
//! and a **client** (the manager streaming a job: stdout and stderr as they are written, stdin
//! as it arrives, and a control pipe whose bytes are signals for the program; four
//! descriptors, `source`, `sink`, `err_sink`, `control`).
//!
//! The program never holds a descriptor from outside its sandbox: it keeps the pipes its slot
//! was pre-warmed with, and the init copies bytes across. Every direction is bounded
//! ([`ROOM`]): a side that stops reading makes the other block on a full pipe, as a direct
//! pipe would, and ends by its own wall limit — never a deadlock, never unbounded memory. End
//! of file travels on: the program's stdout closing closes `sink` once what it wrote is handed
//! over, and `source` closing closes the program's stdin once it read what came before.

use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags};

pub use crate::protocol::Live;

/// Bytes held per direction at most, beyond the pipes' own buffers.
pub(crate) const ROOM: usize = 64 * 1024;

/// Signals a client may send to the program (a byte each on the control pipe).
pub const SIGNALS: [i32; 7] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGKILL,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGTERM,
];

/// Program output on its way to one descriptor.
struct Outbound {
    sink: Option<OwnedFd>,
    pending: Vec<u8>,
    /// The program's side reached end of file: close `sink` once `pending` is out.
    closing: bool,
}

impl Outbound {
    fn new(sink: Option<OwnedFd>) -> Self {
        Self {
            sink,
            pending: Vec::new(),
            closing: false,
        }
    }

    fn flush(&mut self) {
        if let Some(k) = &self.sink {
            if write_some(k, &mut self.pending).is_err() {
                // The reader is gone: what the program writes from now on is dropped.
                self.sink = None;
                self.pending.clear();
            } else if self.closing && self.pending.is_empty() {
                self.sink = None;
            }
        }
    }
}

pub(crate) struct Relay {
    kind: Live,
    /// Becomes the program's stdin.
    source: Option<OwnedFd>,
    /// Read from `source`, not yet written to the program.
    inbound: Vec<u8>,
    /// stdout, then stderr (a peer takes no stderr: it stays the program's own capture).
    outs: [Outbound; 2],
    /// Signal numbers for the program, a byte each (a client only).
    control: Option<OwnedFd>,
}

/// Which of the program's streams.
#[derive(Clone, Copy)]
pub(crate) enum Stream {
    Out = 0,
    Err = 1,
}

impl Relay {
    /// The relay of a step of kind `kind` from the descriptors passed with its job, in the
    /// order [`crate::protocol::send_stdio`] sends them; `None` if they do not fit the kind.
    pub(crate) fn new(kind: Live, fds: Vec<OwnedFd>) -> Option<Self> {
        let want = match kind {
            Live::Peer => 2,
            Live::Client | Live::Repl => 4,
        };
        if fds.len() != want {
            return None;
        }
        for fd in &fds {
            crate::init::set_nonblocking(fd);
        }
        let mut fds = fds.into_iter();
        let source = fds.next();
        let sink = fds.next();
        let err_sink = fds.next();
        let control = fds.next();
        Some(Self {
            kind,
            source,
            inbound: Vec::new(),
            outs: [Outbound::new(sink), Outbound::new(err_sink)],
            control,
        })
    }

    /// Whether no output cap kills the program for what it writes on `stream`: a peer's
    /// stdout is the other side's input (its capture a transcript); a session interpreter's
    /// output is its cells', which the manager caps cell by cell over the session's life.
    pub(crate) fn uncapped(&self, stream: Stream) -> bool {
        match stream {
            Stream::Out => matches!(self.kind, Live::Peer | Live::Repl),
            Stream::Err => matches!(self.kind, Live::Repl),
        }
    }

    /// Whether `stream` goes through the relay.
    pub(crate) fn carries(&self, stream: Stream) -> bool {
        matches!(stream, Stream::Out) || matches!(self.kind, Live::Client | Live::Repl)
    }

    /// Whether `stream` may be read now (room to hold what the program wrote).
    pub(crate) fn takes(&self, stream: Stream) -> bool {
        self.outs[stream as usize].pending.len() < ROOM
    }

    /// What the program wrote on `stream`, to be handed over.
    pub(crate) fn push(&mut self, stream: Stream, data: &[u8]) {
        let o = &mut self.outs[stream as usize];
        if o.sink.is_some() {
            o.pending.extend_from_slice(data);
        }
    }

    /// The program's `stream` is at end of file.
    pub(crate) fn done(&mut self, stream: Stream) {
        let o = &mut self.outs[stream as usize];
        o.closing = true;
        if o.pending.is_empty() {
            o.sink = None;
        }
    }

    /// Everything the program wrote was handed over, or the other side is gone.
    pub(crate) fn settled(&self) -> bool {
        self.outs.iter().all(|o| o.sink.is_none())
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
        for o in &self.outs {
            if let Some(k) = &o.sink
                && !o.pending.is_empty()
            {
                pfds.push(PollFd::new(k.as_fd(), PollFlags::POLLOUT));
            }
        }
        if let Some(c) = &self.control {
            pfds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
        }
    }

    /// Move what can move without blocking. `stdin` is the program's stdin pipe: closed here
    /// once `source` ended and everything before was written (or the program closed it).
    /// Returns the signals the client asked for since the last call.
    pub(crate) fn forward(&mut self, stdin: &mut Option<OwnedFd>) -> Vec<i32> {
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
        if let Some(w) = stdin.as_ref()
            && write_some(w, &mut self.inbound).is_err()
        {
            // The program closed its stdin: nothing more reaches it, and the other side's
            // writes fail from now on, as into a closed pipe.
            *stdin = None;
            self.source = None;
            self.inbound.clear();
        }
        if self.source.is_none() && self.inbound.is_empty() {
            *stdin = None;
        }
        for o in &mut self.outs {
            o.flush();
        }
        let mut signals = Vec::new();
        if let Some(c) = &self.control {
            let mut buf = [0u8; 64];
            loop {
                match nix::unistd::read(c, &mut buf) {
                    Ok(0) => {
                        self.control = None;
                        break;
                    }
                    Ok(n) => signals.extend(buf[..n].iter().map(|&b| i32::from(b)).filter(|s| SIGNALS.contains(s))),
                    Err(Errno::EINTR) => continue,
                    Err(_) => break,
                }
            }
        }
        signals
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
