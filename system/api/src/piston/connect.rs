//! Piston's interactive WebSocket, `/api/v2/connect` (COMPAT.md §3), as a dialect of Wolf's
//! interactive run ([`crate::ws`]): `init` (the execute fields; stdin ignored, as Piston does)
//! within a second, then `data` on stdin and `signal`; back come `runtime`, `stage`, `data`
//! on stdout and stderr, `exit` and `error`, and the close codes Piston uses. Unlike Piston,
//! a signal reaches the program (Piston's server emits one event and its job listens on
//! another), and output is capped by Wolf's limits (Piston's is not).

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use wolf_core::stream::{StreamEvent, StreamInput, signal_number};

use crate::AppState;
use crate::error::ApiError;
use crate::ws::{Dialect, Frame, close, text};

/// Piston's close codes.
const DONE: u16 = 4999;
const ALREADY_INITIALIZED: u16 = 4000;
const INIT_TIMEOUT: u16 = 4001;
const AFTER_ERROR: u16 = 4002;
const NOT_INITIALIZED: u16 = 4003;
const STDIN_ONLY: u16 = 4004;
const INVALID_SIGNAL: u16 = 4005;

/// How long Piston waits for `init`.
const INIT_WITHIN: Duration = Duration::from_secs(1);

fn error(message: &str) -> Message {
    text(&json!({"type": "error", "message": message}))
}

/// `GET /api/v2/connect`, upgraded.
pub async fn connect(State(st): State<AppState>, upgrade: WebSocketUpgrade) -> Result<Response, ApiError> {
    let permit = crate::ws::permit(&st)?;
    // The upgraded socket runs in a task of its own: it keeps the request's key.
    let principal = crate::auth::current();
    Ok(upgrade
        .max_message_size(crate::ws::MAX_MESSAGE)
        .on_upgrade(move |socket| {
            crate::auth::scope(principal, async move {
                let _permit = permit;
                let (mut sink, mut frames) = socket.split();
                match start(&st, &mut frames).await {
                    Ok((rec, runtime)) => {
                        if sink.send(text(&runtime)).await.is_ok() {
                            crate::ws::converse(st, sink, frames, rec, Piston { stage: "run".into() }).await;
                        }
                    }
                    Err((say, code, why)) => {
                        if let Some(m) = say {
                            let _ = sink.send(error(&m)).await;
                        }
                        let _ = sink.send(close(code, why)).await;
                    }
                }
            })
        })
        .into_response())
}

/// A refusal: what to say in an `error` frame first (if anything), the close code and reason.
type Refusal = (Option<String>, u16, &'static str);

fn refused(why: String) -> Refusal {
    (Some(why), AFTER_ERROR, "Notified Error")
}

/// Read the `init` frame (within a second) and admit its job; the job's record and the
/// `runtime` frame to send.
async fn start(st: &AppState, frames: &mut crate::ws::Frames) -> Result<(wolf_core::JobRecord, Value), Refusal> {
    let first = match tokio::time::timeout(INIT_WITHIN, frames.next()).await {
        Ok(Some(Ok(Message::Text(t)))) => t.to_string(),
        Ok(Some(Ok(Message::Binary(b)))) => String::from_utf8_lossy(&b).into_owned(),
        Ok(_) => return Err((None, NOT_INITIALIZED, "Not yet Initialized")),
        Err(_) => return Err((None, INIT_TIMEOUT, "Initialization Timeout")),
    };
    let body: Value = serde_json::from_str(&first).map_err(|e| refused(format!("the frame is not JSON: {e}")))?;
    match body.get("type").and_then(Value::as_str) {
        Some("init") => {}
        Some(_) => return Err((None, NOT_INITIALIZED, "Not yet Initialized")),
        None => return Err(refused("a frame needs a type".into())),
    }
    let runtimes = super::present(st).await;
    let (sub, rt) = super::convert::submission(&body, &runtimes, &st.cfg.caps).map_err(refused)?;
    // Piston ignores stdin in an init: the client sends it as data.
    let sub = wolf_core::Submission { stdin: None, ..sub };
    let rec = crate::ws::admit(st, &sub).await.map_err(refused)?;
    Ok((
        rec,
        json!({"type": "runtime", "language": rt.language, "version": rt.version}),
    ))
}

/// Piston's dialect.
struct Piston {
    /// The stage the events are in (`exit` names it).
    stage: String,
}

impl Dialect for Piston {
    fn input(&mut self, frame: Message) -> Frame {
        let Message::Text(t) = frame else {
            return Frame::Skip;
        };
        let v: Value = match serde_json::from_str(&t) {
            Ok(v) => v,
            Err(e) => {
                return Frame::Close(
                    Some(error(&format!("the frame is not JSON: {e}"))),
                    AFTER_ERROR,
                    "Notified Error".into(),
                );
            }
        };
        match v.get("type").and_then(Value::as_str) {
            Some("init") => Frame::Close(None, ALREADY_INITIALIZED, "Already Initialized".into()),
            Some("data") => {
                if v.get("stream").and_then(Value::as_str) != Some("stdin") {
                    return Frame::Close(None, STDIN_ONLY, "Can only write to stdin".into());
                }
                let data = v.get("data").and_then(Value::as_str).unwrap_or("").to_string();
                Frame::Input(StreamInput::Stdin { data })
            }
            Some("signal") => {
                let signal = v.get("signal").and_then(Value::as_str).unwrap_or("");
                if signal_number(signal).is_none() {
                    return Frame::Close(None, INVALID_SIGNAL, "Invalid signal".into());
                }
                Frame::Input(StreamInput::Signal {
                    signal: signal.to_string(),
                })
            }
            _ => Frame::Close(Some(error("unknown frame type")), AFTER_ERROR, "Notified Error".into()),
        }
    }

    fn event(&mut self, e: &StreamEvent) -> Vec<Message> {
        match e {
            StreamEvent::Stage { stage, seq, .. } if *seq > 0 && (stage == "compile" || stage == "run") => {
                self.stage = stage.clone();
                vec![text(&json!({"type": "stage", "stage": stage}))]
            }
            StreamEvent::Stdout { data, .. } => vec![text(&json!({"type": "data", "stream": "stdout", "data": data}))],
            StreamEvent::Stderr { data, .. } => vec![text(&json!({"type": "data", "stream": "stderr", "data": data}))],
            StreamEvent::Exit {
                exit_code,
                signal,
                verdict,
                ..
            } => vec![text(&json!({
                "type": "exit",
                // Only the run step streams: a job that exits did so running, unless its
                // compilation failed.
                "stage": if verdict == "CompileError" { "compile" } else { "run" },
                "code": exit_code,
                "signal": signal.map(super::convert::signal_name),
            }))],
            _ => Vec::new(),
        }
    }

    fn done(&self) -> Message {
        close(DONE, "Job Completed")
    }
}
