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
    /// Running jobs' live events and interactive input.
    pub streams: Streams,
}

impl Default for Events {
    fn default() -> Self {
        Self {
            finished: broadcast::channel(1024).0,
            queued: Arc::new(Notify::new()),
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
