//! Live jobs: `GET /job/{id}/events` (Server-Sent Events), and the follower of a job's stream
//! that the WebSockets ([`crate::ws`]) share.
//!
//! Both follow one job's stream ([`wolf_store::Streams`]): a `stage` `queued` while it waits,
//! then what the manager publishes — stages, `stdout` and `stderr` chunks as the program
//! writes them, `exit`, and `result` (the final record) — each with its sequence number. A
//! subscriber that comes late first gets what the manager still holds (bounded); one that
//! comes after the end gets the final events from the record. A slow reader never slows the
//! program: past its bounded buffer it gets `lagged`, and the record keeps the whole output.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use tokio::sync::mpsc;
use wolf_core::JobRecord;
use wolf_core::stream::StreamEvent;
use wolf_store::streams::Subscription;

use crate::extract::JobId;
use crate::{ApiError, AppState};

/// Events buffered per subscriber beyond the hub's own bound, before it is a slow reader.
pub(crate) const SUBSCRIBER_BUFFER: usize = 256;
/// How often a follower checks the record while the stream is quiet: a job that ended where
/// this API could not hear it (its manager's stream never reached here) still ends here.
const RECORD_CHECK: Duration = Duration::from_secs(1);

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
    Ok(sse(rx))
}

/// Events from `rx` as a Server-Sent Events response (`event:` the kind, `id:` the number).
pub(crate) fn sse(rx: mpsc::Receiver<StreamEvent>) -> Response {
    let body = tokio_stream::wrappers::ReceiverStream::new(rx).map(|e| {
        let data = serde_json::to_string(&e).unwrap_or_else(|_| "{}".into());
        Ok::<_, Infallible>(Event::default().event(e.kind()).id(e.seq().to_string()).data(data))
    });
    Sse::new(body).keep_alive(KeepAlive::default()).into_response()
}

/// Send job `id`'s events to `tx` until its `result`, or until `tx`'s reader is gone.
pub(crate) async fn follow(
    st: AppState,
    id: String,
    rec: JobRecord,
    mut sub: Subscription,
    tx: mpsc::Sender<StreamEvent>,
) {
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
                    // What the stream showed is not repeated (stages included, once any came).
                    let events: Vec<_> = events
                        .into_iter()
                        .filter(|e| !(output_seen && is_output(e)))
                        .filter(|e| !(last > 0 && matches!(e, StreamEvent::Stage { .. })))
                        .collect();
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

fn stage(seq: u64, stage: &str, name: Option<&str>) -> StreamEvent {
    StreamEvent::Stage {
        seq,
        stage: stage.into(),
        name: name.map(Into::into),
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
        if r.tests.is_empty() {
            if !stdout.is_empty() {
                out.push(StreamEvent::output(false, next(), &stdout));
            }
            if !r.stderr.is_empty() {
                out.push(StreamEvent::output(true, next(), r.stderr.as_bytes()));
            }
        } else {
            // A job with tests: its stages as they ran, each test's output as the record keeps.
            if rec.timings.as_ref().is_some_and(|t| t.compile > 0.0) {
                out.push(stage(next(), "compile", None));
            }
            for t in &r.tests {
                out.push(stage(next(), "test", Some(&t.name)));
                if !t.stdout.is_empty() {
                    out.push(StreamEvent::output(false, next(), t.stdout.as_bytes()));
                }
                if !t.stderr.is_empty() {
                    out.push(StreamEvent::output(true, next(), t.stderr.as_bytes()));
                }
            }
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
