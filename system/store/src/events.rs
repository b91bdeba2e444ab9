//! In-process notifications: "job X reached a final state" (for `?wait=true`) and "a job was
//! queued" (to wake idle workers without polling). In the distributed mode the API falls back
//! to polling the metadata store. The live job streams ([`Streams`]) travel with them: in one
//! process, or over NATS.

use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

use crate::Streams;

/// Cloneable handle.
#[derive(Debug, Clone)]
pub struct Events {
    finished: broadcast::Sender<String>,
    queued: Arc<Notify>,
    /// How long recent jobs held their worker (ms, exponentially weighted): what admission by
    /// deadline estimates a queue wait from.
    service: Arc<std::sync::Mutex<Option<f64>>>,
    /// Running jobs' live events and interactive input.
    pub streams: Streams,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            finished: broadcast::channel(1024).0,
            queued: Arc::new(Notify::new()),
            service: Default::default(),
            streams: Streams::local(),
        }
    }
}

impl Events {
    /// Notifications of one process whose streams travel through `streams` (over NATS).
    pub fn with_streams(streams: Streams) -> Self {
        Self {
            streams,
            ..Self::default()
        }
    }

    /// A job reached Completed or Failed.
    pub fn finished(&self, id: &str) {
        let _ = self.finished.send(id.to_string());
    }

    /// A job held its worker for `ms` (from its start to its final record).
    pub fn served(&self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        let mut s = self.service.lock().unwrap_or_else(|e| e.into_inner());
        // A weight of 1/10: the mean of about the last ten jobs, so a change of workload shows
        // within a few seconds under load and one odd job moves it little.
        *s = Some(s.map_or(ms, |old| old + (ms - old) / 10.0));
    }

    /// The recent jobs' mean time on a worker (ms); `None` before the first one ended.
    pub fn service_ms(&self) -> Option<f64> {
        *self.service.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Subscribe to finished jobs (subscribe before checking the record, to miss nothing).
    pub fn subscribe(&self) -> broadcast::Receiver<String> {
        self.finished.subscribe()
    }

    /// A job was queued: wake one idle worker.
    pub fn queued(&self) {
        self.queued.notify_one();
    }

    /// Wait until a job is queued (or a permit is already stored).
    pub async fn wait_queued(&self) {
        self.queued.notified().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_time_follows_recent_jobs_and_ignores_nonsense() {
        let e = Events::default();
        assert_eq!(e.service_ms(), None);
        e.served(100.0);
        assert_eq!(e.service_ms(), Some(100.0));
        e.served(f64::NAN);
        e.served(-5.0);
        assert_eq!(e.service_ms(), Some(100.0));
        for _ in 0..60 {
            e.served(1000.0);
        }
        let now = e.service_ms().unwrap();
        assert!((990.0..=1000.0).contains(&now), "{now}");
    }
}
