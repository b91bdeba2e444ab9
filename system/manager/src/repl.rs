//! A session's Python interpreter kept alive (`"mode": "repl"`): one long step in the
//! session's sandbox runs the driver (`repl.py`), whose stdin and stdout are pipes the
//! manager holds ([`wolf_sandbox::protocol::Live::Repl`]). Each exec is a cell sent as one JSON
//! line; the answer is one line after a marker only this manager knows. A cell past its wall
//! limit is interrupted (SIGINT: `KeyboardInterrupt` in the cell), then killed a second later
//! with the interpreter if it does not answer; an interpreter that dies (its memory limit, a
//! kill) takes the session's state with it, and its step's verdict says why.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;
use wolf_sandbox::runner::{Plan, RunOutput};
use wolf_sandbox::{Caps, LimitRequest, Registry, RunRequest, SandboxError};

use crate::pool::SessionBox;

/// The driver, run as the session's program.
const DRIVER: &str = include_str!("repl.py");
/// How long an interrupted cell gets to answer before the interpreter is killed.
const GRACE: Duration = Duration::from_secs(1);

type Step = tokio::task::JoinHandle<(Box<dyn SessionBox>, Result<RunOutput, SandboxError>)>;

/// Where a cell's stderr is streamed while it runs: a stream hub and the stream's key.
type Target = std::sync::Arc<std::sync::Mutex<Option<(wolf_store::Streams, String)>>>;

/// How long an answer waits for the end of its stderr (the driver writes the marker there
/// before the answer; this bounds a reader that fell behind).
const STDERR_SETTLE: Duration = Duration::from_millis(500);

/// The interpreter of a session.
pub struct Repl {
    stdin: pipe::Sender,
    out: BufReader<pipe::Receiver>,
    control: pipe::Sender,
    mark: String,
    step: Option<Step>,
    /// The stream of the cell that runs now, for its stderr.
    target: Target,
    /// One signal per marker read on the interpreter's stderr (the end of an answer's).
    err_ends: tokio::sync::mpsc::UnboundedReceiver<()>,
}

/// Why a call got no answer.
pub enum Failed {
    /// Still alive after an interrupt: it answered late (with what the cell wrote straight to
    /// its descriptors), and the session goes on.
    Interrupted(Value, String),
    /// The interpreter is gone; its step's outcome when it could be read.
    Died(Option<Box<RunOutput>>),
}

impl Repl {
    /// Start the interpreter in `sandbox` with the session's `limits` (its memory and
    /// processes), for `window_ms` at most.
    pub async fn start(
        mut sandbox: Box<dyn SessionBox>,
        registry: &'static Registry,
        caps: Caps,
        limits: LimitRequest,
        window_ms: u64,
        id: &str,
    ) -> Result<Self, (Box<dyn SessionBox>, SandboxError)> {
        let mark = format!("\u{1}wolf-{}", uuid::Uuid::new_v4().simple());
        let run = RunRequest {
            engine: "python".into(),
            code: DRIVER.as_bytes().to_vec(),
            args: vec![mark.clone()],
            limits,
            ..RunRequest::default()
        };
        let plan = match tokio::task::spawn_blocking(move || Plan::new(registry, &caps, &run)).await {
            Ok(Ok(p)) => p.repl(window_ms),
            Ok(Err(e)) => return Err((sandbox, SandboxError::InvalidJob(e.to_string()))),
            Err(e) => return Err((sandbox, SandboxError::Setup(e.to_string()))),
        };
        let pipes = (|| {
            let p = wolf_sandbox::protocol::pipe;
            Ok::<_, std::io::Error>((p()?, p()?, p()?, p()?))
        })();
        let ((in_r, in_w), (out_r, out_w), (err_r, err_w), (ctl_r, ctl_w)) = match pipes {
            Ok(p) => p,
            Err(e) => return Err((sandbox, SandboxError::Channel(e))),
        };
        if let Err(e) = sandbox.pass_stdio(&[&in_r, &out_w, &err_w, &ctl_r]) {
            return Err((sandbox, e));
        }
        drop((in_r, out_w, err_w, ctl_r));
        let opened = (
            pipe::Sender::from_owned_fd(in_w),
            pipe::Receiver::from_owned_fd(out_r),
            pipe::Sender::from_owned_fd(ctl_w),
        );
        let (Ok(stdin), Ok(out), Ok(control)) = opened else {
            return Err((sandbox, SandboxError::Setup("the interpreter's pipes".into())));
        };
        // Its stderr carries each cell's as it is written, then the marker.
        let target = Target::default();
        let (ends, err_ends) = tokio::sync::mpsc::unbounded_channel();
        if let Ok(err) = pipe::Receiver::from_owned_fd(err_r) {
            tokio::spawn(stderr(err, mark.clone(), target.clone(), ends));
        }
        let job = format!("{id}/repl");
        let step = tokio::spawn(async move {
            let r = sandbox.run(&job, &plan).await;
            (sandbox, r)
        });
        Ok(Self {
            stdin,
            out: BufReader::new(out),
            control,
            mark,
            step: Some(step),
            target,
            err_ends,
        })
    }

    /// Send `req` and wait for its answer for `limit` (then an interrupt, then a kill). Also
    /// returns what the cell wrote straight to its descriptors before the answer.
    pub async fn call(
        &mut self,
        req: &Value,
        limit: Duration,
        live: Option<(&wolf_store::Streams, &str)>,
    ) -> Result<(Value, String), Failed> {
        let mut line = req.to_string();
        line.push('\n');
        while self.err_ends.try_recv().is_ok() {} // an earlier answer's, not waited for
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = live.map(|(s, k)| (s.clone(), k.to_string()));
        let answered = self.exchange(&line, limit, live).await;
        if answered.is_ok() || matches!(answered, Err(Failed::Interrupted(..))) {
            // The cell's stderr is all out before its answer is (and its exit published).
            let _ = tokio::time::timeout(STDERR_SETTLE, self.err_ends.recv()).await;
        }
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = None;
        answered
    }

    async fn exchange(
        &mut self,
        line: &str,
        limit: Duration,
        live: Option<(&wolf_store::Streams, &str)>,
    ) -> Result<(Value, String), Failed> {
        if self.stdin.write_all(line.as_bytes()).await.is_err() {
            return Err(Failed::Died(self.outcome().await));
        }
        let mut raw = String::new();
        match tokio::time::timeout(limit, self.answer(&mut raw, live)).await {
            Ok(Some(v)) => return Ok((v, raw)),
            Ok(None) => return Err(Failed::Died(self.outcome().await)),
            Err(_) => {}
        }
        let _ = self.control.write_all(&[libc_sigint()]).await;
        match tokio::time::timeout(GRACE, self.answer(&mut raw, live)).await {
            Ok(Some(v)) => Err(Failed::Interrupted(v, raw)),
            _ => {
                self.kill().await;
                Err(Failed::Died(self.outcome().await))
            }
        }
    }

    /// The next answer (output before it goes to `raw`, and to the stream `live` as it
    /// comes); `None` at end of file. The marker may follow output on the same line (a cell's
    /// last print without a newline), and output need not be UTF-8.
    async fn answer(&mut self, raw: &mut String, live: Option<(&wolf_store::Streams, &str)>) -> Option<Value> {
        loop {
            let mut bytes = Vec::new();
            match self.out.read_until(b'\n', &mut bytes).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            let line = String::from_utf8_lossy(&bytes).into_owned();
            let (output, rest) = match line.find(self.mark.as_str()) {
                Some(at) => (&line[..at], Some(&line[at + self.mark.len()..])),
                None => (line.as_str(), None),
            };
            if !output.is_empty() {
                raw.push_str(output);
                if let Some((streams, key)) = live {
                    let chunk = output.as_bytes().to_vec();
                    streams
                        .publish(key, |seq| wolf_core::stream::StreamEvent::output(false, seq, &chunk))
                        .await;
                }
            }
            if let Some(rest) = rest
                && let Ok(v) = serde_json::from_str::<Value>(rest.trim())
            {
                return Some(v);
            }
        }
    }

    /// Whether the interpreter's step still runs.
    pub fn is_alive(&self) -> bool {
        self.step.as_ref().is_some_and(|s| !s.is_finished())
    }

    /// Kill the interpreter (and with it the session's state).
    pub async fn kill(&mut self) {
        let _ = self.control.write_all(&[9]).await;
    }

    /// The interpreter's step outcome once it ended (why it died).
    async fn outcome(&mut self) -> Option<Box<RunOutput>> {
        let step = self.step.take()?;
        let (sandbox, r) = tokio::time::timeout(Duration::from_secs(5), step).await.ok()?.ok()?;
        tokio::task::spawn_blocking(move || drop(sandbox));
        r.ok().map(Box::new)
    }
}

impl Drop for Repl {
    fn drop(&mut self) {
        // The step's task holds the sandbox: aborting it drops (destroys) the sandbox.
        if let Some(step) = self.step.take() {
            step.abort();
        }
    }
}

/// Read the interpreter's stderr: what comes before a marker is the running cell's, published
/// to its stream; each marker is signalled on `ends`.
async fn stderr(mut err: pipe::Receiver, mark: String, target: Target, ends: tokio::sync::mpsc::UnboundedSender<()>) {
    use tokio::io::AsyncReadExt;
    let line_mark = format!("{mark}\n").into_bytes();
    let mut pending: Vec<u8> = Vec::new();
    let mut chunks = wolf_core::stream::Utf8Chunks::default();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match err.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        loop {
            let at = pending.windows(line_mark.len()).position(|w| w == line_mark.as_slice());
            // Without a whole marker, hold back what could be the start of one.
            let upto = at.unwrap_or_else(|| held_back(&pending, &line_mark));
            let out: Vec<u8> = pending.drain(..upto).collect();
            let mut chunk = chunks.push(&out);
            if at.is_some() {
                chunk.extend(chunks.finish()); // the cell's stderr ends here
            }
            let to = target.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some((streams, key)) = to
                && !chunk.is_empty()
            {
                streams
                    .publish(&key, |seq| wolf_core::stream::StreamEvent::output(true, seq, &chunk))
                    .await;
            }
            match at {
                Some(_) => {
                    pending.drain(..line_mark.len());
                    let _ = ends.send(());
                }
                None => break,
            }
        }
    }
}

/// Where output that may end with the first bytes of `mark` stops being certainly output.
fn held_back(pending: &[u8], mark: &[u8]) -> usize {
    (1..mark.len().min(pending.len() + 1))
        .rev()
        .find(|&k| pending.ends_with(&mark[..k]))
        .map_or(pending.len(), |k| pending.len() - k)
}

fn libc_sigint() -> u8 {
    2
}

#[cfg(test)]
mod tests {
    use super::held_back;

    #[test]
    fn output_that_may_start_a_marker_is_held_back() {
        let mark = b"\x01wolf-ab\n";
        assert_eq!(held_back(b"hello", mark), 5);
        assert_eq!(held_back(b"hello\x01", mark), 5);
        assert_eq!(held_back(b"hello\x01wolf-a", mark), 5);
        assert_eq!(held_back(b"\x01wolf-x", mark), 7, "not a marker's start: all out");
        assert_eq!(held_back(b"", mark), 0);
    }
}
