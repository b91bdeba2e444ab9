//! Live job streams: the manager publishes a running job's events ([`StreamEvent`]), APIs
//! subscribe, and an interactive client's input ([`StreamInput`]) travels the other way.
//!
//! In one process (`wolf serve`) the hub is a map of per-job channels. With a NATS client
//! (the distributed mode) every event is also published on the core subject
//! `wolf.stream.<job>`, input travels on `wolf.input.<job>`, and the manager that runs a job
//! answers `wolf.replay.<job>` with what it still holds, so any API serves any job's stream.
//! Nothing here is persisted: the record keeps the whole output, whatever a subscriber missed.
//!
//! Every bound is per job: the replay buffer keeps the newest [`REPLAY_BYTES`] of events, and
//! a subscriber that falls [`LIVE_EVENTS`] behind gets a `lagged` event instead of slowing the
//! publisher (which never waits for a reader).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use tokio::sync::{broadcast, mpsc};
use wolf_core::stream::{StreamEvent, StreamInput};

/// Bytes of events a job keeps for late subscribers.
pub const REPLAY_BYTES: usize = 1 << 20;
/// Events a live subscriber may fall behind before it is told it lagged.
pub const LIVE_EVENTS: usize = 1024;
/// How long an API waits for a manager's replay.
const REPLAY_WAIT: Duration = Duration::from_millis(300);

/// The hub (cheap to clone).
#[derive(Clone, Default)]
pub struct Streams {
    jobs: Arc<Mutex<HashMap<String, Channel>>>,
    nats: Option<async_nats::Client>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streams").field("nats", &self.nats.is_some()).finish()
    }
}

struct Channel {
    seq: u64,
    replay: VecDeque<StreamEvent>,
    replay_bytes: usize,
    live: broadcast::Sender<StreamEvent>,
    input: Option<mpsc::Sender<StreamInput>>,
    /// The manager publishes this job (not only subscribers waiting for it).
    open: bool,
}

impl Channel {
    fn new() -> Self {
        Self {
            seq: 0,
            replay: VecDeque::new(),
            replay_bytes: 0,
            live: broadcast::channel(LIVE_EVENTS).0,
            input: None,
            open: false,
        }
    }
}

/// What a subscriber receives: the events already produced (bounded), then the live ones.
pub struct Subscription {
    /// Held events, oldest first.
    pub replay: Vec<StreamEvent>,
    live: Live,
    last: u64,
    /// An event that follows a `lagged` one.
    held: Option<StreamEvent>,
}

enum Live {
    Local(broadcast::Receiver<StreamEvent>),
    Nats(async_nats::Subscriber),
}

impl Subscription {
    fn new(replay: Vec<StreamEvent>, live: Live) -> Self {
        let last = replay.last().map_or(0, StreamEvent::seq);
        Self {
            replay,
            live,
            last,
            held: None,
        }
    }

    /// The next live event after those of `replay`; `None` when the stream ended. A gap (this
    /// subscriber fell behind, or the replay did not reach back to the start) is a `lagged`
    /// event first.
    pub async fn next(&mut self) -> Option<StreamEvent> {
        if let Some(e) = self.held.take() {
            return Some(e);
        }
        loop {
            let e = match &mut self.live {
                Live::Local(rx) => match rx.recv().await {
                    Ok(e) => e,
                    // The gap shows in the next event's number.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                },
                Live::Nats(sub) => {
                    let msg = sub.next().await?;
                    match serde_json::from_slice::<StreamEvent>(&msg.payload) {
                        Ok(e) => e,
                        Err(_) => continue,
                    }
                }
            };
            let seq = e.seq();
            if seq <= self.last {
                continue; // already in the replay
            }
            let gap = seq - self.last - 1;
            self.last = seq;
            if gap > 0 {
                self.held = Some(e);
                return Some(StreamEvent::Lagged { seq, missed: gap });
            }
            return Some(e);
        }
    }
}

impl Streams {
    /// The hub of one process.
    pub fn local() -> Self {
        Self::default()
    }

    /// The hub of a distributed deployment's process, through `nats`.
    pub fn over(nats: async_nats::Client) -> Self {
        Self {
            jobs: Default::default(),
            nats: Some(nats),
        }
    }

    fn with<T>(&self, id: &str, f: impl FnOnce(&mut Channel) -> T) -> T {
        let mut jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
        f(jobs.entry(id.to_string()).or_insert_with(Channel::new))
    }

    /// The manager starts publishing job `id`; with `interactive`, the returned receiver gets
    /// what clients send it (input published before this call is not kept: clients wait for
    /// the `run` stage).
    pub async fn open(&self, id: &str, interactive: bool) -> Option<mpsc::Receiver<StreamInput>> {
        let (tx, rx) = if interactive {
            let (tx, rx) = mpsc::channel(256);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        if let (Some(nats), Some(tx)) = (&self.nats, tx.clone())
            && let Ok(mut sub) = nats.subscribe(format!("wolf.input.{id}")).await
        {
            // Ends (unsubscribing) when the receiver is dropped: the job ended.
            tokio::spawn(async move {
                loop {
                    let m = tokio::select! {
                        m = sub.next() => m,
                        _ = tx.closed() => break,
                    };
                    let Some(m) = m else { break };
                    let Ok(input) = serde_json::from_slice::<StreamInput>(&m.payload) else {
                        continue;
                    };
                    if tx.send(input).await.is_err() {
                        break;
                    }
                }
            });
        }
        self.with(id, |c| {
            c.open = true;
            c.input = if self.nats.is_some() { None } else { tx };
        });
        rx
    }

    /// Publish `make(seq)` as job `id`'s next event.
    pub async fn publish(&self, id: &str, make: impl FnOnce(u64) -> StreamEvent) {
        let event = self.with(id, |c| {
            c.seq += 1;
            let e = make(c.seq);
            c.replay_bytes += e.weight();
            c.replay.push_back(e.clone());
            while c.replay_bytes > REPLAY_BYTES
                && let Some(old) = c.replay.pop_front()
            {
                c.replay_bytes -= old.weight();
            }
            let _ = c.live.send(e.clone());
            e
        });
        if let Some(nats) = &self.nats
            && let Ok(body) = serde_json::to_vec(&event)
        {
            let _ = nats.publish(format!("wolf.stream.{id}"), body.into()).await;
        }
    }

    /// Job `id` ended (its `result` event went out): forget it. Subscribers still read what
    /// they were sent, then the end.
    pub fn close(&self, id: &str) {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner()).remove(id);
    }

    /// Subscribe to job `id` (running, or not started yet: its events come once it does).
    pub async fn subscribe(&self, id: &str) -> Subscription {
        if let Some(nats) = &self.nats
            && let Ok(sub) = nats.subscribe(format!("wolf.stream.{id}")).await
        {
            // Subscribed first, then the replay: an event published in between is in both,
            // and the subscription drops what the replay had.
            let replay =
                match tokio::time::timeout(REPLAY_WAIT, nats.request(format!("wolf.replay.{id}"), "".into())).await {
                    Ok(Ok(m)) => serde_json::from_slice::<Vec<StreamEvent>>(&m.payload).unwrap_or_default(),
                    _ => Vec::new(),
                };
            return Subscription::new(replay, Live::Nats(sub));
        }
        self.with(id, |c| {
            Subscription::new(c.replay.iter().cloned().collect(), Live::Local(c.live.subscribe()))
        })
    }

    /// Send `input` to running job `id`'s program. `false` when no manager takes it here (in
    /// one process: the job is not running interactively).
    pub async fn send(&self, id: &str, input: StreamInput) -> bool {
        if let Some(nats) = &self.nats {
            let Ok(body) = serde_json::to_vec(&input) else {
                return false;
            };
            return nats.publish(format!("wolf.input.{id}"), body.into()).await.is_ok();
        }
        let tx = self.with(id, |c| c.input.clone());
        match tx {
            Some(tx) => tx.send(input).await.is_ok(),
            None => false,
        }
    }

    /// Answer replay requests for the jobs this process publishes (the manager, distributed).
    pub async fn serve_replays(&self) {
        let Some(nats) = &self.nats else { return };
        let Ok(mut sub) = nats.subscribe("wolf.replay.*").await else {
            tracing::warn!("cannot answer stream replays: late subscribers miss earlier output");
            return;
        };
        while let Some(m) = sub.next().await {
            let Some(reply) = m.reply else { continue };
            let id = m.subject.as_str().trim_start_matches("wolf.replay.");
            let held = {
                let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner());
                jobs.get(id)
                    .filter(|c| c.open)
                    .map(|c| c.replay.iter().cloned().collect::<Vec<_>>())
            };
            // Only the manager that runs the job answers.
            if let Some(held) = held
                && let Ok(body) = serde_json::to_vec(&held)
            {
                let _ = nats.publish(reply, body.into()).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn out(seq: u64, s: &str) -> StreamEvent {
        StreamEvent::output(false, seq, s.as_bytes())
    }

    #[tokio::test]
    async fn a_late_subscriber_gets_the_replay_then_live_events() {
        let h = Streams::local();
        h.open("j", false).await;
        h.publish("j", |s| out(s, "a")).await;
        let mut sub = h.subscribe("j").await;
        assert_eq!(sub.replay, vec![out(1, "a")]);
        h.publish("j", |s| out(s, "b")).await;
        assert_eq!(sub.next().await, Some(out(2, "b")));
    }

    #[tokio::test]
    async fn a_subscriber_that_falls_behind_is_told_and_the_publisher_never_waits() {
        let h = Streams::local();
        h.open("j", false).await;
        let mut sub = h.subscribe("j").await;
        for _ in 0..LIVE_EVENTS + 10 {
            h.publish("j", |s| out(s, "x")).await;
        }
        match sub.next().await {
            Some(StreamEvent::Lagged { missed, .. }) => assert!(missed >= 10),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn the_replay_keeps_the_newest_bytes_only() {
        let h = Streams::local();
        h.open("j", false).await;
        let big = "y".repeat(64 * 1024);
        for _ in 0..40 {
            h.publish("j", |s| out(s, &big)).await;
        }
        let sub = h.subscribe("j").await;
        let bytes: usize = sub.replay.iter().map(StreamEvent::weight).sum();
        assert!(bytes <= REPLAY_BYTES, "{bytes}");
        assert_eq!(sub.replay.last().map(StreamEvent::seq), Some(40));
    }

    #[tokio::test]
    async fn input_reaches_an_interactive_job_only() {
        let h = Streams::local();
        assert!(!h.send("j", StreamInput::Eof).await, "not running");
        let mut rx = h.open("j", true).await.unwrap();
        assert!(h.send("j", StreamInput::Eof).await);
        assert_eq!(rx.recv().await, Some(StreamInput::Eof));
    }
}
