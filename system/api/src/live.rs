//! Live jobs: `GET /job/{id}/events` (Server-Sent Events) and the WebSocket `/job/ws`.
//!
//! Both follow one job's stream ([`wolf_store::Streams`]): a `stage` `queued` while it waits,
//! then what the manager publishes — stages, `stdout` and `stderr` chunks as the program
//! writes them, `exit`, and `result` (the final record) — each with its sequence number. A
//! subscriber that comes late first gets what the manager still holds (bounded); one that
//! comes after the end gets the final events from the record. A slow reader never slows the
//! program: past its bounded buffer it gets `lagged`, and the record keeps the whole output.
//!
//! On the WebSocket the client starts the job (`{"type": "init", ...a submission}`), which is
//! durable like any other, and then sends `stdin`, `eof` and `signal` frames to the program.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use wolf_core::stream::{StreamEvent, StreamInput};
use wolf_core::{JobRecord, Submission};
use wolf_store::streams::Subscription;

use crate::extract::JobId;
use crate::{ApiError, AppState};

/// Events buffered per subscriber beyond the hub's own bound, before it is a slow reader.
const SUBSCRIBER_BUFFER: usize = 256;
/// How often a follower checks the record while the stream is quiet: a job that ended where
/// this API could not hear it (its manager's stream never reached here) still ends here.
const RECORD_CHECK: Duration = Duration::from_secs(1);
/// Largest WebSocket message (an init carries a whole submission).
const MAX_MESSAGE: usize = 8 << 20;
/// Close codes of the WebSocket (4000–4999 are the application's).
const CLOSE_BAD_INIT: u16 = 4000;
const CLOSE_BAD_FRAME: u16 = 4001;
const CLOSE_REFUSED: u16 = 4002;

/// A job's events as Server-Sent Events (`event:` the kind, `id:` the sequence number,
/// `data:` the event as JSON); the stream ends after `result`.
#[utoipa::path(get, path = "/job/{id}/events", params(crate::routes::IdPath),
    responses((status = 200, description = "Server-Sent Events: stage, stdout, stderr, exit, result, lagged",
        content_type = "text/event-stream", body = String),
        (status = 404, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody),
        (status = 503, body = crate::error::ErrorBody)))]
pub async fn events(State(st): State<AppState>, JobId(id): JobId) -> Result<Response, ApiError> {
    let permit = st.waits.clone().try_acquire_owned().map_err(|_| {
        metrics::counter!("wolf_refusals_total", "layer" => "waits").increment(1);
        ApiError::Overloaded
    })?;
    // Subscribe before reading the record: an event published in between is not lost.
    let sub = st.events.streams.subscribe(&id).await;
    let rec = crate::routes::lookup(&st, &id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))?;
    let (tx, rx) = mpsc::channel::<StreamEvent>(SUBSCRIBER_BUFFER);
    tokio::spawn(async move {
        let _permit = permit;
        follow(st, id, rec, sub, tx).await;
    });
    let body = tokio_stream::wrappers::ReceiverStream::new(rx).map(|e| {
        let data = serde_json::to_string(&e).unwrap_or_else(|_| "{}".into());
        Ok::<_, Infallible>(Event::default().event(e.kind()).id(e.seq().to_string()).data(data))
    });
    Ok(Sse::new(body).keep_alive(KeepAlive::default()).into_response())
}

/// Send job `id`'s events to `tx` until its `result`, or until `tx`'s reader is gone.
async fn follow(st: AppState, id: String, rec: JobRecord, mut sub: Subscription, tx: mpsc::Sender<StreamEvent>) {
    if rec.status.is_final() {
        for e in from_record(&st, rec, 0).await {
            if tx.send(e).await.is_err() {
                return;
            }
        }
        return;
    }
    if rec.status == wolf_core::Status::Pending {
        let queued = StreamEvent::Stage {
            seq: 0,
            stage: "queued".into(),
            name: None,
        };
        if tx.send(queued).await.is_err() {
            return;
        }
    }
    let mut last = 0;
    let mut output_seen = false;
    for e in std::mem::take(&mut sub.replay) {
        last = e.seq();
        output_seen |= matches!(e, StreamEvent::Stdout { .. } | StreamEvent::Stderr { .. });
        let end = e.is_last();
        if tx.send(e).await.is_err() || end {
            return;
        }
    }
    loop {
        let next = tokio::select! {
            e = sub.next() => e,
            _ = tokio::time::sleep(RECORD_CHECK) => None,
            _ = tx.closed() => return,
        };
        let Some(e) = next else {
            // Quiet (or the hub let go): the record says whether the job ended meanwhile.
            match crate::routes::lookup(&st, &id).await {
                Ok(Some(rec)) if rec.status.is_final() => {
                    let events = from_record(&st, rec, last).await;
                    let events: Vec<_> = events.into_iter().filter(|e| !(output_seen && is_output(e))).collect();
                    for e in events {
                        if tx.send(e).await.is_err() {
                            return;
                        }
                    }
                    return;
                }
                _ => continue,
            }
        };
        last = e.seq();
        output_seen |= is_output(&e);
        let end = e.is_last();
        if tx.send(e).await.is_err() || end {
            return;
        }
    }
}

fn is_output(e: &StreamEvent) -> bool {
    matches!(e, StreamEvent::Stdout { .. } | StreamEvent::Stderr { .. })
}

/// The final events of a finished job, from its record and its stored stdout, numbered after
/// `after`.
async fn from_record(st: &AppState, rec: JobRecord, after: u64) -> Vec<StreamEvent> {
    let stdout = match &rec.output_path {
        Some(key) => st.objects.get(key).await.ok().flatten().unwrap_or_default(),
        None => Vec::new(),
    };
    let mut seq = after;
    let mut next = || {
        seq += 1;
        seq
    };
    let mut out = Vec::new();
    if let Some(r) = &rec.result {
        if !stdout.is_empty() {
            out.push(StreamEvent::output(false, next(), &stdout));
        }
        if !r.stderr.is_empty() {
            out.push(StreamEvent::output(true, next(), r.stderr.as_bytes()));
        }
        out.push(StreamEvent::Exit {
            seq: next(),
            exit_code: r.exit_code,
            signal: r.signal,
            verdict: format!("{:?}", r.verdict),
        });
    }
    out.push(StreamEvent::Result {
        seq: next(),
        record: Box::new(rec),
    });
    out
}

/// The WebSocket of an interactive run (`GET /job/ws`, upgraded).
pub async fn ws(State(st): State<AppState>, upgrade: WebSocketUpgrade) -> Result<Response, ApiError> {
    let permit = st.waits.clone().try_acquire_owned().map_err(|_| {
        metrics::counter!("wolf_refusals_total", "layer" => "waits").increment(1);
        ApiError::Overloaded
    })?;
    Ok(upgrade
        .max_message_size(MAX_MESSAGE)
        .on_upgrade(move |socket| interactive(st, socket, permit)))
}

fn close(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: reason.chars().take(120).collect::<String>().into(),
    }))
}

fn text(v: &serde_json::Value) -> Message {
    Message::Text(v.to_string().into())
}

/// An interactive run: the client's `init` submits the job, then its frames reach the program
/// while the job's events come back.
async fn interactive(st: AppState, socket: WebSocket, _permit: OwnedSemaphorePermit) {
    let (mut sink, mut frames) = socket.split();
    let sub = match init(&st, &mut frames).await {
        Ok(sub) => sub,
        Err((code, why)) => {
            let _ = sink
                .send(text(&serde_json::json!({"type": "error", "message": why})))
                .await;
            let _ = sink.send(close(code, &why)).await;
            return;
        }
    };
    let (id, rec, sub) = sub;
    let _ = sink
        .send(text(&serde_json::json!({"type": "accepted", "id": id})))
        .await;
    let (tx, mut rx) = mpsc::channel::<StreamEvent>(SUBSCRIBER_BUFFER);
    let follower = tokio::spawn(follow(st.clone(), id.clone(), rec, sub, tx));
    // Input waits until the manager has started the job (its first stage): before that no
    // one takes it.
    let mut started = false;
    let mut held: Vec<StreamInput> = Vec::new();
    loop {
        tokio::select! {
            e = rx.recv() => {
                let Some(e) = e else { break };
                if matches!(e, StreamEvent::Stage { seq, .. } if seq > 0) && !started {
                    started = true;
                    for input in held.drain(..) {
                        st.events.streams.send(&id, input).await;
                    }
                }
                let end = e.is_last();
                let v = serde_json::to_value(&e).unwrap_or_default();
                if sink.send(text(&v)).await.is_err() {
                    break;
                }
                if end {
                    let _ = sink.send(close(1000, "done")).await;
                    break;
                }
            }
            f = frames.next() => {
                let input = match f {
                    Some(Ok(Message::Text(t))) => match serde_json::from_str::<StreamInput>(&t) {
                        Ok(i) => i,
                        Err(e) => {
                            let why = format!("not a stdin, eof or signal frame: {e}");
                            let _ = sink.send(text(&serde_json::json!({"type": "error", "message": why}))).await;
                            continue;
                        }
                    },
                    Some(Ok(Message::Binary(b))) => StreamInput::Stdin { data: String::from_utf8_lossy(&b).into_owned() },
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    // The client left: the job runs on to its end (it is durable); its stdin
                    // reaches end of file.
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        if started {
                            st.events.streams.send(&id, StreamInput::Eof).await;
                        }
                        break;
                    }
                };
                if let StreamInput::Signal { signal } = &input
                    && wolf_core::stream::signal_number(signal).is_none()
                {
                    let why = format!("signal {signal:?}: one of SIGINT, SIGTERM, SIGKILL, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2");
                    let _ = sink.send(text(&serde_json::json!({"type": "error", "message": why}))).await;
                    let _ = sink.send(close(CLOSE_BAD_FRAME, "bad signal")).await;
                    break;
                }
                if started {
                    st.events.streams.send(&id, input).await;
                } else if held.len() < SUBSCRIBER_BUFFER {
                    held.push(input);
                }
            }
        }
    }
    follower.abort();
}

type Frames = futures::stream::SplitStream<WebSocket>;

/// Read the `init` frame, validate and admit its submission as an interactive job, and
/// subscribe to it. `Err` is a close code and why.
async fn init(st: &AppState, frames: &mut Frames) -> Result<(String, JobRecord, Subscription), (u16, String)> {
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
    crate::routes::validate(st, &sub).map_err(|e| (CLOSE_BAD_INIT, e.message()))?;
    if !sub.tests.is_empty() || sub.interactor.is_some() || sub.checker.as_ref().is_some_and(|c| c.is_program()) {
        return Err((
            CLOSE_BAD_INIT,
            "an interactive run has no tests, checker program or interactor".into(),
        ));
    }
    if !st.ready.load(std::sync::atomic::Ordering::Relaxed) {
        return Err((CLOSE_REFUSED, "shutting down".into()));
    }
    let record = crate::routes::accept_interactive(st, &sub, Instant::now())
        .await
        .map_err(|e| (CLOSE_REFUSED, e.message()))?;
    let id = record.id.clone();
    let subscription = st.events.streams.subscribe(&id).await;
    Ok((id, record, subscription))
}
