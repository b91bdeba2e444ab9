//! The host ↔ init-process channel: a Unix stream socketpair carrying frames.
//!
//! A frame is a JSON header plus raw binary blobs (file contents, stdin, stdout, stderr), each
//! length-prefixed (u32 little endian), so output bytes are never re-encoded. Descriptors (the
//! step cgroups' handles) travel once, before the setup frame, as SCM_RIGHTS on a 1-byte message.

use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::cgroup::Version;
use crate::rootfs::RootfsConfig;

/// Largest header accepted (JSON).
const MAX_HEADER: usize = 1 << 20;
/// Most descriptors in one SCM_RIGHTS message.
pub const MAX_FDS: usize = 32;

/// First frame to the init process: how to build the root and read the cgroup handles.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Setup {
    /// The root filesystem.
    pub rootfs: RootfsConfig,
    /// Format of the cgroup handles.
    pub cgroup_version: Version,
    /// For each step slot, how many `cgroup.procs` descriptors it has; each slot's descriptors
    /// are `procs..., cpu, peak, oom` in the SCM_RIGHTS message, slot after slot.
    pub slots: Vec<usize>,
    /// A listening socket follows the slots' descriptors: the job arrives through the
    /// registered job server instead of this channel.
    #[serde(default)]
    pub job_listener: bool,
    /// The host's uid: the only allowed peer of the job server is a process of this uid
    /// outside the sandbox's pid namespace.
    #[serde(default)]
    pub host_uid: u32,
    /// A secret the job server's caller must present: SO_PEERCRED tells a process of the
    /// sandbox from the host, this tells the manager from other host processes of its uid.
    #[serde(default)]
    pub job_token: String,
    /// AppArmor profile to apply to programs (only where the host has AppArmor and the
    /// profile is loaded).
    #[serde(default)]
    pub apparmor_profile: Option<String>,
    /// A session's sandbox: it runs job after job in the same work dir (each step in a fresh
    /// step supervisor, files replaced), until the host lets it go.
    #[serde(default)]
    pub session: bool,
}

/// Answer to [`Setup`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum SetupReply {
    /// The sandbox is ready for one job; setup took this long inside.
    Ready {
        /// Microseconds spent building the root.
        setup_us: u64,
    },
    /// Setup failed (the init process exits after sending this).
    Failed {
        /// What failed.
        error: String,
    },
}

/// A file to place in the work dir before the first step.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileSpec {
    /// Plain file name (no `/`), validated on both sides.
    pub name: String,
    /// Mode bits.
    pub mode: u32,
    /// Index of its contents among the frame's blobs.
    pub blob: usize,
}

/// One step (compile or run) as the init process executes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepSpec {
    /// "compile" or "run" (for messages).
    pub name: String,
    /// Program and arguments.
    pub argv: Vec<String>,
    /// Complete environment.
    pub env: Vec<String>,
    /// Which cgroup slot to join.
    pub slot: usize,
    /// Blob index of stdin, if any (else /dev/null).
    pub stdin_blob: Option<usize>,
    /// The step's stdio is live: relayed to and from the descriptors the host passed for the
    /// job ([`send_stdio`]), not a blob and a capture alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live: Option<Live>,
    /// The program's stderr is its stdout pipe too (one stream, interleaved as written).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub merge_stderr: bool,
    /// CPU time limit, ms (enforced from the cgroup's usage).
    pub cpu_time_ms: u64,
    /// Wall time limit, ms.
    pub wall_time_ms: u64,
    /// Cap on each of stdout and stderr, bytes.
    pub output_bytes: u64,
    /// RLIMIT_FSIZE.
    pub file_bytes: u64,
    /// RLIMIT_NOFILE.
    pub open_files: u64,
    /// RLIMIT_STACK.
    pub stack_bytes: u64,
    /// CPU quota of the cgroup in thousandths of a CPU (to pace the CPU-limit checks).
    pub cpu_millis: u64,
}

/// The job: files, then steps in order; a step that does not exit 0 ends the job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    /// Files for the work dir.
    pub files: Vec<FileSpec>,
    /// Steps.
    pub steps: Vec<StepSpec>,
    /// After every step exited 0: return the files the steps left in the work dir.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect: Option<Collect>,
}

/// Which files of the work dir come back with the report. Read by the init process after
/// every process of the steps is gone, without following a symlink; only regular files are
/// taken ([`crate::collect`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Collect {
    /// At most this many files.
    pub max_files: usize,
    /// At most this many bytes in all.
    pub max_bytes: u64,
    /// Output files: these relative paths or simple globs (`*`, `?` within one component),
    /// taken whether or not the steps succeeded; what cannot be taken is reported as refused.
    /// Empty: a compile step's artifacts, every top-level regular file the job did not bring,
    /// after every step exited 0 (past a bound: an error).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub patterns: Vec<String>,
    /// With `patterns`: the largest one file (a larger one is refused).
    #[serde(default)]
    pub max_file_bytes: u64,
}

/// An output file that was asked for and not taken, with why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefusedFile {
    /// Its path (or the pattern that matched nothing).
    pub path: String,
    /// Why.
    pub reason: String,
}

/// A file the init process collected ([`JobSpec::collect`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectedFile {
    /// Its path in the work dir (checked with [`valid_work_path`]).
    pub name: String,
    /// Its mode bits (0o777 at most).
    pub mode: u32,
    /// Blob index of its contents in the report frame.
    pub blob: usize,
}

/// What the kernel said about one step.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepFacts {
    /// Exit code if the main process exited.
    pub exit_code: Option<i32>,
    /// Signal number if it was killed by one.
    pub signal: Option<i32>,
    /// CPU time of the whole step cgroup, ms.
    pub cpu_time_ms: u64,
    /// CPU time in microseconds (finer, for accounting tests).
    pub cpu_time_us: u64,
    /// Wall time from fork to exit, ms.
    pub wall_time_ms: u64,
    /// Wall time, microseconds.
    pub wall_time_us: u64,
    /// Peak memory of the step cgroup, KiB.
    pub memory_kb: u64,
    /// OOM kills in the step cgroup.
    pub oom_kills: u64,
    /// The supervisor killed it for CPU time.
    pub cpu_limit_hit: bool,
    /// The supervisor killed it for wall time.
    pub wall_limit_hit: bool,
    /// The supervisor killed it for output size.
    pub output_limit_hit: bool,
    /// stdout/stderr were cut at the cap.
    pub truncated: bool,
    /// The program could not be started (setup or exec failed), with why.
    pub start_error: Option<String>,
    /// Blob index of stdout in the report frame.
    pub stdout_blob: usize,
    /// Blob index of stderr in the report frame.
    pub stderr_blob: usize,
}

/// Report of a job: one entry per step that ran.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobReport {
    /// Facts per executed step.
    pub steps: Vec<StepFacts>,
    /// An error outside any step (writing files), if any.
    pub error: Option<String>,
    /// The collected files, when the job asked for them and every step exited 0.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<CollectedFile>,
    /// Why the files could not be collected (past a bound): the program's fault, not the
    /// sandbox's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub collect_error: Option<String>,
    /// Output files asked for and not taken.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<RefusedFile>,
}

/// Blobs per frame, at most (every file of a submission, stdin, and a step's outputs fit).
pub const MAX_BLOBS: usize = 1024;

/// A frame's header alone, for a transport that carries the blobs itself (the worker's gRPC
/// message holds this JSON and the blobs side by side).
pub fn encode_header<T: Serialize>(header: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(header).map_err(io::Error::other)
}

/// Parse a header that arrived without its frame, with the same bound as [`read_frame`]: the
/// peer is not trusted to be reasonable.
pub fn decode_header<T: DeserializeOwned>(json: &[u8]) -> io::Result<T> {
    if json.len() > MAX_HEADER {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame header too large"));
    }
    serde_json::from_slice(json).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Write one frame.
pub fn write_frame<T: Serialize>(w: &mut impl Write, header: &T, blobs: &[&[u8]]) -> io::Result<()> {
    let json = encode_header(header)?;
    let mut buf = Vec::with_capacity(8 + json.len() + blobs.iter().map(|b| b.len() + 4).sum::<usize>());
    buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
    buf.extend_from_slice(&json);
    buf.extend_from_slice(&(blobs.len() as u32).to_le_bytes());
    for b in blobs {
        buf.extend_from_slice(&(b.len() as u32).to_le_bytes());
        buf.extend_from_slice(b);
    }
    w.write_all(&buf)?;
    w.flush()
}

fn read_u32(r: &mut impl Read) -> io::Result<usize> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b) as usize)
}

/// Read one frame; `max_blob_bytes` bounds the total blob size (the peer is not trusted to be
/// reasonable).
pub fn read_frame<T: DeserializeOwned>(r: &mut impl Read, max_blob_bytes: usize) -> io::Result<(T, Vec<Vec<u8>>)> {
    let n = read_u32(r)?;
    if n > MAX_HEADER {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame header too large"));
    }
    let mut json = vec![0u8; n];
    r.read_exact(&mut json)?;
    let header = decode_header(&json)?;
    let count = read_u32(r)?;
    if count > MAX_BLOBS {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "too many blobs"));
    }
    let mut blobs = Vec::with_capacity(count);
    let mut total = 0usize;
    for _ in 0..count {
        let len = read_u32(r)?;
        total = total.saturating_add(len);
        if total > max_blob_bytes {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "frame blobs too large"));
        }
        let mut b = vec![0u8; len];
        r.read_exact(&mut b)?;
        blobs.push(b);
    }
    Ok((header, blobs))
}

/// Send descriptors (SCM_RIGHTS) with a single marker byte.
pub fn send_fds(sock: &UnixStream, fds: &[RawFd]) -> io::Result<()> {
    let iov = [IoSlice::new(b"F")];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)?;
    Ok(())
}

/// Who is at the other end of a live step's stdio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Live {
    /// Another sandbox's program (an interactor): two descriptors, `source` (the step's stdin)
    /// and `sink` (its stdout, whole: the capture is only a transcript).
    Peer,
    /// The manager streaming the job: four descriptors, `source` (stdin as it arrives), `sink`
    /// and `err_sink` (stdout and stderr as written, within the output cap) and `control`
    /// (a byte per signal for the program).
    Client,
    /// The manager driving a long-lived interpreter (a session's REPL): the four descriptors
    /// of [`Live::Client`], stdout whole as a peer's (the capture only a transcript).
    Repl,
}

/// Pass a job's live stdio to the init process, in the order [`Live`] names them, on the
/// setup channel before the job. A 1-byte message that carries descriptors is always this one
/// ([`recv_byte_with_fds`] tells it from a frame's first byte).
pub fn send_stdio(sock: &UnixStream, fds: &[&OwnedFd]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    send_fds(sock, &raw)
}

/// A pipe (read end, write end), close-on-exec: one direction of a piped job's stdio.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    Ok(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?)
}

/// Receive the descriptors sent by [`send_fds`].
pub fn recv_fds(sock: &UnixStream) -> io::Result<Vec<OwnedFd>> {
    recv_byte_with_fds(sock).map(|(_, fds)| fds)
}

/// Receive one byte and any descriptors that came with it (a plain read(2) of that byte would
/// silently drop them).
pub fn recv_byte_with_fds(sock: &UnixStream) -> io::Result<(u8, Vec<OwnedFd>)> {
    recv_byte_with_fds_on(sock.as_fd())
}

/// [`recv_byte_with_fds`] on any Unix stream socket's descriptor (a nonblocking one returns
/// `WouldBlock` when nothing is there).
pub fn recv_byte_with_fds_on(sock: BorrowedFd<'_>) -> io::Result<(u8, Vec<OwnedFd>)> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut out = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                out.push(own(fd));
            }
        }
    }
    if msg.bytes != 1 {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "channel closed"));
    }
    Ok((byte[0], out))
}

fn own(fd: RawFd) -> OwnedFd {
    crate::sys::own_received_fd(fd)
}

pub use wolf_core::names::valid_file_name;

/// A name the init process may create in the work dir: what a client may name a file
/// ([`valid_file_name`]) or what a compiler wrote there (`Main$Inner.class`): one path
/// component, not `.` or `..`, no NUL, at most 255 bytes. Never a path: nothing can leave the
/// directory, and files are created with `O_NOFOLLOW | O_EXCL`.
pub fn valid_work_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 255 && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// A relative path below the work dir: at most 8 components, each a [`valid_work_name`].
pub fn valid_work_path(path: &str) -> bool {
    path.len() <= 1024 && path.split('/').count() <= 8 && path.split('/').all(valid_work_name)
}

/// What a step supervisor tells the init process on its status pipe: one frame per write(2),
/// small enough (below PIPE_BUF) to arrive whole, so a single read holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SupervisorStatus {
    /// In its cgroups and confined: the slot is ready.
    Joined,
    /// The program exited.
    Exited {
        /// Its exit code.
        code: i32,
    },
    /// The program was killed by a signal.
    Signaled {
        /// The signal number.
        signal: i32,
    },
    /// The supervisor could not do its part (setup, fork, wait).
    Failed {
        /// What failed.
        error: String,
    },
}

/// Longest error a status frame carries, bytes (the frame stays below PIPE_BUF, 4096).
const STATUS_ERROR_MAX: usize = 2048;

impl SupervisorStatus {
    /// The frame to write in one write(2).
    pub fn frame(&self) -> Vec<u8> {
        let capped = match self {
            SupervisorStatus::Failed { error } if error.len() > STATUS_ERROR_MAX => {
                let mut end = STATUS_ERROR_MAX;
                while !error.is_char_boundary(end) {
                    end -= 1;
                }
                SupervisorStatus::Failed {
                    error: error[..end].to_string(),
                }
            }
            other => other.clone(),
        };
        let mut buf = Vec::new();
        write_frame(&mut buf, &capped, &[]).expect("a small enum serializes into a Vec");
        buf
    }

    /// Parse what one read of the status pipe returned.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        read_frame::<SupervisorStatus>(&mut &bytes[..], 0)
            .map(|(s, _)| s)
            .map_err(|e| format!("unreadable supervisor status ({} bytes): {e}", bytes.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn supervisor_statuses_fit_one_pipe_write() {
        for st in [
            SupervisorStatus::Joined,
            SupervisorStatus::Exited { code: 3 },
            SupervisorStatus::Signaled { signal: 9 },
            SupervisorStatus::Failed {
                error: "é".repeat(10_000),
            },
        ] {
            let f = st.frame();
            assert!(f.len() < 4096, "{} bytes", f.len());
            let back = SupervisorStatus::parse(&f).unwrap();
            match (&st, &back) {
                (SupervisorStatus::Failed { .. }, SupervisorStatus::Failed { error }) => assert!(error.len() <= 2048),
                _ => assert_eq!(back, st),
            }
        }
        assert!(SupervisorStatus::parse(b"X0").is_err());
    }

    #[test]
    fn frames_round_trip_with_binary_blobs() {
        let mut buf = Vec::new();
        let rep = JobReport {
            steps: vec![StepFacts {
                exit_code: Some(3),
                ..Default::default()
            }],
            error: None,
            ..Default::default()
        };
        write_frame(&mut buf, &rep, &[b"\x00\xffout", b""]).unwrap();
        let (back, blobs): (JobReport, _) = read_frame(&mut buf.as_slice(), 1 << 20).unwrap();
        assert_eq!(back.steps[0].exit_code, Some(3));
        assert_eq!(blobs, vec![b"\x00\xffout".to_vec(), vec![]]);
    }

    #[test]
    fn oversized_blobs_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, &JobReport::default(), &[&[0u8; 100]]).unwrap();
        assert!(read_frame::<JobReport>(&mut buf.as_slice(), 99).is_err());
        assert!(
            read_frame::<JobReport>(&mut &buf[..10], 1000).is_err(),
            "truncated frame"
        );
    }

    #[test]
    fn file_names_cannot_escape_the_work_dir() {
        for bad in ["", ".", "..", "../x", "a/b", "/etc/passwd", "x\0y"] {
            assert!(!valid_file_name(bad), "{bad:?}");
        }
        assert!(valid_file_name("Main.java"));
        assert!(valid_file_name("..."));
        for bad in ["", ".", "..", "../x", "a/b", "/etc/passwd", "x\0y"] {
            assert!(!valid_work_name(bad), "{bad:?}");
        }
        assert!(valid_work_name("Main$Inner.class") && !valid_work_name(&"a".repeat(256)));
    }

    #[test]
    fn descriptors_travel_over_the_socketpair() {
        let (a, b) = UnixStream::pair().unwrap();
        let f = std::fs::File::open("/dev/null").unwrap();
        send_fds(&a, &[f.as_raw_fd()]).unwrap();
        let got = recv_fds(&b).unwrap();
        assert_eq!(got.len(), 1);
    }
}
