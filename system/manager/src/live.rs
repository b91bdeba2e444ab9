//! A job's run streamed live: its sandbox's init gets four pipe ends (stdin, stdout, stderr
//! and a control pipe for signals; [`wolf_sandbox::protocol::Live::Client`]), and the manager
//! holds the others — reading the output as the program writes it into the job's stream, and,
//! for an interactive job, writing what the client sends into its stdin and control pipe.
//!
//! The stream is a view: the result (and the record) still comes from the run's own report,
//! capped and complete, whatever a subscriber read. Nothing here can slow the program: the
//! readers publish without waiting for any subscriber.

use std::os::fd::OwnedFd;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use wolf_core::stream::{StreamEvent, StreamInput, Utf8Chunks, signal_number};
use wolf_sandbox::SandboxError;
use wolf_sandbox::runner::{Plan, RunOutput};
use wolf_store::Streams;

use crate::pool::Warm;

/// Run `plan` (streamed: [`Plan::streamed`]) on `sandbox`, publishing its output to job
/// `id`'s stream, and with `interactive` feeding it the client's input.
pub async fn run(
    streams: &Streams,
    id: &str,
    interactive: bool,
    mut sandbox: Box<dyn Warm>,
    plan: Plan,
    creation_ms: f64,
) -> Result<RunOutput, SandboxError> {
    if !sandbox.takes_stdio() {
        return sandbox.run(id, plan.unstreamed(), creation_ms).await;
    }
    let inputs = streams.open(id, interactive).await;
    let first = if plan.has_compile() { "compile" } else { "run" };
    let tap = Tap::new(streams, id, |fds| sandbox.pass_stdio(fds), first == "compile")?;
    stage(streams, id, first, None).await;
    let Tap {
        readers,
        stdin,
        control,
    } = tap;
    // A job that is not interactive has its stdin in the plan: ours ends at once.
    let writer = match inputs {
        Some(rx) => Some(crate::AbortOnDrop(tokio::spawn(write(rx, stdin, control)))),
        None => {
            drop((stdin, control));
            None
        }
    };
    let out = sandbox.run(id, plan, creation_ms).await;
    Tap::done(readers).await;
    drop(writer);
    out
}

/// Run test `name` of a suite (its plan as [`wolf_sandbox::suite::Suite::test`] made it) on
/// `sandbox`, announced as a `test` stage on job `id`'s stream, its output published as it is
/// written. The job's stream must be open ([`Streams::open`]).
pub async fn test(
    streams: &Streams,
    id: &str,
    name: &str,
    mut sandbox: Box<dyn Warm>,
    plan: Plan,
) -> Result<RunOutput, SandboxError> {
    stage(streams, id, "test", Some(name)).await;
    if !sandbox.takes_stdio() {
        return sandbox.run(id, plan, 0.0).await;
    }
    let Tap {
        readers,
        stdin,
        control,
    } = Tap::new(streams, id, |fds| sandbox.pass_stdio(fds), false)?;
    // A test's stdin is in its plan; nothing is written to ours.
    drop((stdin, control));
    let out = sandbox.run(id, plan.streamed(false), 0.0).await;
    Tap::done(readers).await;
    out
}

/// Publish stage `stage` (named `name`, for a test) on job `id`'s stream.
pub async fn stage(streams: &Streams, id: &str, stage: &str, name: Option<&str>) {
    streams
        .publish(id, |seq| StreamEvent::Stage {
            seq,
            stage: stage.into(),
            name: name.map(Into::into),
        })
        .await;
}

/// A live step's four pipes: the init got its ends ([`Warm::pass_stdio`]); here the readers
/// publishing the output to stream `key`, and the stdin and control ends for input.
pub(crate) struct Tap {
    pub(crate) readers: [tokio::task::JoinHandle<()>; 2],
    pub(crate) stdin: OwnedFd,
    pub(crate) control: OwnedFd,
}

impl Tap {
    /// Make the pipes, give the init its ends through `pass`, and start reading. With
    /// `compiled`, the first chunk is announced as the `run` stage (the compile step does not
    /// stream).
    pub(crate) fn new(
        streams: &Streams,
        key: &str,
        pass: impl FnOnce(&[&OwnedFd]) -> Result<(), SandboxError>,
        compiled: bool,
    ) -> Result<Self, SandboxError> {
        let channel = |_: ()| wolf_sandbox::protocol::pipe().map_err(SandboxError::Channel);
        let (in_r, in_w) = channel(())?;
        let (out_r, out_w) = channel(())?;
        let (err_r, err_w) = channel(())?;
        let (ctl_r, ctl_w) = channel(())?;
        pass(&[&in_r, &out_w, &err_w, &ctl_r])?;
        // The init holds its ends now; ours would keep the readers from ever seeing EOF.
        drop((in_r, out_w, err_w, ctl_r));
        let compiled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(compiled));
        let readers = [(out_r, false), (err_r, true)].map(|(fd, stderr)| {
            let (streams, key, compiled) = (streams.clone(), key.to_string(), compiled.clone());
            tokio::spawn(async move { read(&streams, &key, fd, stderr, &compiled).await })
        });
        Ok(Self {
            readers,
            stdin: in_w,
            control: ctl_w,
        })
    }

    /// Wait until the init closed its ends (the step ended, or the sandbox died).
    pub(crate) async fn done(readers: [tokio::task::JoinHandle<()>; 2]) {
        for r in readers {
            let _ = r.await;
        }
    }
}

/// Publish what the program writes on `fd` until end of file.
async fn read(streams: &Streams, id: &str, fd: OwnedFd, stderr: bool, compiled: &std::sync::atomic::AtomicBool) {
    let Ok(mut rx) = pipe::Receiver::from_owned_fd(fd) else {
        return;
    };
    let mut chunks = Utf8Chunks::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match rx.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let chunk = chunks.push(&buf[..n]);
        if compiled.swap(false, std::sync::atomic::Ordering::SeqCst) {
            stage(streams, id, "run", None).await;
        }
        if !chunk.is_empty() {
            streams
                .publish(id, |seq| StreamEvent::output(stderr, seq, &chunk))
                .await;
        }
    }
    let rest = chunks.finish();
    if !rest.is_empty() {
        streams.publish(id, |seq| StreamEvent::output(stderr, seq, &rest)).await;
    }
}

/// Write the client's input into the program's stdin and control pipe, until the job ends.
async fn write(mut rx: tokio::sync::mpsc::Receiver<StreamInput>, stdin: OwnedFd, control: OwnedFd) {
    let (Ok(stdin), Ok(mut control)) = (pipe::Sender::from_owned_fd(stdin), pipe::Sender::from_owned_fd(control))
    else {
        return;
    };
    let mut stdin = Some(stdin);
    while let Some(input) = rx.recv().await {
        match input {
            StreamInput::Stdin { data } => {
                if let Some(w) = stdin.as_mut()
                    && w.write_all(data.as_bytes()).await.is_err()
                {
                    stdin = None; // the program closed its stdin
                }
            }
            StreamInput::Eof => stdin = None,
            StreamInput::Signal { signal } => {
                if let Some(n) = signal_number(&signal) {
                    let _ = control.write_all(&[n as u8]).await;
                }
            }
        }
    }
}
