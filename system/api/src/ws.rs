//! Interactive runs over a WebSocket: the client starts a job with its first frame, then its
//! frames reach the program (stdin, end of file, signals) while the job's events come back.
//! One conversation loop serves two dialects: Wolf's own (`/job/ws`, [`Wolf`]) and Piston's
//! (`/api/v2/connect`, `crate::piston::connect`). The job is durable like any other.

use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use wolf_core::stream::{StreamEvent, StreamInput, signal_number};
use wolf_core::{JobRecord, Submission};

use crate::live::SUBSCRIBER_BUFFER;
use crate::{ApiError, AppState};

/// Largest WebSocket message (an init carries a whole submission).
pub(crate) const MAX_MESSAGE: usize = 8 << 20;
/// The subprotocol `/job/ws` answers with when offered (beside a key's, auth.rs).
pub const WOLF_PROTOCOL: &str = "wolf.v1";
/// Wolf's close codes (4000–4999 are the application's).
const CLOSE_BAD_INIT: u16 = 4000;
const CLOSE_BAD_FRAME: u16 = 4001;
const CLOSE_REFUSED: u16 = 4002;

/// The two halves of an upgraded socket.
pub(crate) type Sink = futures::stream::SplitSink<WebSocket, Message>;
pub(crate) type Frames = futures::stream::SplitStream<WebSocket>;

/// What a client's frame (after the init) means.
pub(crate) enum Frame {
    /// Something for the program.
    Input(StreamInput),
    /// Answer this and go on (a frame the dialect cannot read, where it tolerates that).
    Reply(Message),
    /// Say this, close with this code and reason, and stop.
    Close(Option<Message>, u16, String),
    /// Nothing to do (ping, pong).
    Skip,
}

/// How one dialect reads the client's frames and writes the job's events.
pub(crate) trait Dialect: Send + 'static {
    /// The meaning of a text or binary frame from the client.
    fn input(&mut self, frame: Message) -> Frame;
    /// The frames for one event of the job (none for an event the dialect has no word for).
    fn event(&mut self, e: &StreamEvent) -> Vec<Message>;
    /// The close frame after the job's result.
    fn done(&self) -> Message;
}

pub(crate) fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.chars().take(120).collect::<String>().into(),
    }))
}

pub(crate) fn text(v: &serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

/// A long-lived connection's permit from the long-poll pool (429 when it is exhausted).
pub(crate) fn permit(st: &AppState) -> Result<OwnedSemaphorePermit, ApiError> {
    st.waits.clone().try_acquire_owned().map_err(|_| {
        metrics::counter!("wolf_refusals_total", "layer" => "waits").increment(1);
        ApiError::Overloaded
    })
}

/// Validate `sub` as an interactive run and admit it; `Err` is why not.
pub(crate) async fn admit(st: &AppState, sub: &Submission) -> Result<JobRecord, String> {
    crate::routes::validate(st, sub).map_err(|e| e.message())?;
    if !sub.tests.is_empty() || sub.interactor.is_some() || sub.checker.as_ref().is_some_and(|c| c.is_program()) {
        return Err("an interactive run has no tests, checker program or interactor".into());
    }
    if !st.ready.load(std::sync::atomic::Ordering::Relaxed) {
        return Err("shutting down".into());
    }
    crate::routes::accept_interactive(st, sub, Instant::now())
        .await
        .map_err(|e| e.message())
}

/// The conversation after the job was admitted: its events to the client (through `dialect`),
/// the client's input to the program. Input sent before the manager started the job (its
/// first stage) is held and sent then: before that no one takes it.
pub(crate) async fn converse(
    st: AppState,
    mut sink: Sink,
    mut frames: Frames,
    rec: JobRecord,
    mut dialect: impl Dialect,
) {
    let id = rec.id.clone();
    let sub = st.events.streams.subscribe(&id).await;
    let (tx, mut rx) = mpsc::channel::<StreamEvent>(SUBSCRIBER_BUFFER);
    let follower = AbortOnDrop(tokio::spawn(crate::live::follow(st.clone(), id.clone(), rec, sub, tx)));
    let mut started = false;
    let mut held: Vec<StreamInput> = Vec::new();
    loop {
        tokio::select! {
            e = rx.recv() => {
                let Some(e) = e else { break };
                if !started && matches!(e, StreamEvent::Stage { seq, .. } if seq > 0) {
                    started = true;
                    for input in held.drain(..) {
                        st.events.streams.send(&id, input).await;
                    }
                }
                let end = e.is_last();
                for m in dialect.event(&e) {
                    if sink.send(m).await.is_err() {
                        return;
                    }
                }
                if end {
                    let _ = sink.send(dialect.done()).await;
                    break;
                }
            }
            f = frames.next() => {
                let input = match f {
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        // The client left: the job runs on to its end (it is durable); its
                        // stdin reaches end of file.
                        if started {
                            st.events.streams.send(&id, StreamInput::Eof).await;
                        }
                        break;
                    }
                    Some(Ok(m)) => dialect.input(m),
                };
                match input {
                    Frame::Input(i) if started => {
                        st.events.streams.send(&id, i).await;
                    }
                    Frame::Input(i) => {
                        if held.len() < SUBSCRIBER_BUFFER {
                            held.push(i);
                        }
                    }
                    Frame::Reply(m) => {
                        if sink.send(m).await.is_err() {
                            break;
                        }
                    }
                    Frame::Close(say, code, why) => {
                        if let Some(m) = say {
                            let _ = sink.send(m).await;
                        }
                        let _ = sink.send(close(code, &why)).await;
                        break;
                    }
                    Frame::Skip => {}
                }
            }
        }
    }
    drop(follower);
}

/// The follower ends with its conversation, however that ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Wolf's own dialect: the events as JSON text frames, input as `stdin`, `eof` and `signal`.
pub(crate) struct Wolf;

impl Dialect for Wolf {
    fn input(&mut self, frame: Message) -> Frame {
        let error = |why: String| text(&serde_json::json!({"type": "error", "message": why}));
        let input = match frame {
            Message::Text(t) => match serde_json::from_str::<StreamInput>(&t) {
                Ok(i) => i,
                Err(e) => return Frame::Reply(error(format!("not a stdin, eof or signal frame: {e}"))),
            },
            Message::Binary(b) => StreamInput::Stdin {
                data: String::from_utf8_lossy(&b).into_owned(),
            },
            _ => return Frame::Skip,
        };
        if let StreamInput::Signal { signal } = &input
            && signal_number(signal).is_none()
        {
            let why = format!("signal {signal:?}: one of SIGINT, SIGTERM, SIGKILL, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2");
            return Frame::Close(Some(error(why)), CLOSE_BAD_FRAME, "bad signal".into());
        }
        Frame::Input(input)
    }

    fn event(&mut self, e: &StreamEvent) -> Vec<Message> {
        vec![text(&serde_json::to_value(e).unwrap_or_default())]
    }

    fn done(&self) -> Message {
        close(1000, "done")
    }
}

/// `GET /job/ws`, upgraded: Wolf's interactive run.
pub async fn job_ws(State(st): State<AppState>, upgrade: WebSocketUpgrade) -> Result<Response, ApiError> {
    let permit = permit(&st)?;
    // The upgraded socket runs in a task of its own: it keeps the request's key.
    let principal = crate::auth::current();
    Ok(upgrade
        .max_message_size(MAX_MESSAGE)
        // Chosen when the client offers it (a browser sending its key as a subprotocol must
        // be answered with one of its protocols, or it drops the connection).
        .protocols([WOLF_PROTOCOL])
        .on_upgrade(move |socket| {
            crate::auth::scope(principal, async move {
                let _permit = permit;
                let (mut sink, mut frames) = socket.split();
                match init(&st, &mut frames).await {
                    Ok(rec) => {
                        let accepted = serde_json::json!({"type": "accepted", "id": rec.id});
                        if sink.send(text(&accepted)).await.is_ok() {
                            converse(st, sink, frames, rec, Wolf).await;
                        }
                    }
                    Err((code, why)) => {
                        let _ = sink
                            .send(text(&serde_json::json!({"type": "error", "message": why})))
                            .await;
                        let _ = sink.send(close(code, &why)).await;
                    }
                }
            })
        })
        .into_response())
}

/// Read Wolf's `init` frame and admit its submission. `Err` is a close code and why.
async fn init(st: &AppState, frames: &mut Frames) -> Result<JobRecord, (u16, String)> {
    let first = tokio::time::timeout(Duration::from_secs(30), frames.next())
        .await
        .map_err(|_| (CLOSE_BAD_INIT, "no init frame within 30 s".to_string()))?;
    let body = match first {
        Some(Ok(Message::Text(t))) => t.to_string(),
        Some(Ok(Message::Binary(b))) => String::from_utf8_lossy(&b).into_owned(),
        _ => {
            return Err((
                CLOSE_BAD_INIT,
                "the first frame must be {\"type\": \"init\", ...}".into(),
            ));
        }
    };
    let mut v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| (CLOSE_BAD_INIT, format!("the init frame is not JSON: {e}")))?;
    if v.get("type").and_then(|t| t.as_str()) != Some("init") {
        return Err((
            CLOSE_BAD_INIT,
            "the first frame must be {\"type\": \"init\", ...}".into(),
        ));
    }
    if let Some(o) = v.as_object_mut() {
        o.remove("type");
    }
    let sub: Submission =
        serde_json::from_value(v).map_err(|e| (CLOSE_BAD_INIT, format!("the init frame is not a submission: {e}")))?;
    admit(st, &sub).await.map_err(|why| {
        let code = if why == "shutting down" {
            CLOSE_REFUSED
        } else {
            CLOSE_BAD_INIT
        };
        (code, why)
    })
}
