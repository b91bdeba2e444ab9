//! In-process notifications: "job X reached a final state" (for `?wait=true`) and "a job was
//! queued" (to wake idle workers without polling). In the distributed mode the API falls back
//! to polling the metadata store. The live job streams ([`Streams`]) travel with them: in one
//! process, or over NATS.

use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

use crate::Streams;

/// Recent jobs' time on a worker (ms): mean and variance, each new job weighing [`WEIGHT`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Service {
    /// The mean.
    pub mean: f64,
    /// The variance.
    pub var: f64,
}

/// A new job's weight in [`Service`]: about the last 30 jobs count, so one odd job moves the
/// mean little and a change of workload shows within a few dozen jobs.
pub const WEIGHT: f64 = 1.0 / 32.0;

impl Service {
    /// The standard deviation.
    pub fn sd(&self) -> f64 {
        self.var.max(0.0).sqrt()
    }

    /// The standard error of [`Service::mean`] as an estimate of the true mean (an
    /// exponentially weighted mean of weight w averages about 2/w - 1 samples).
    pub fn mean_error(&self) -> f64 {
        self.sd() / (2.0 / WEIGHT - 1.0).sqrt()
    }
}

/// Cloneable handle.
#[derive(Debug, Clone)]
pub struct Events {
    finished: broadcast::Sender<String>,
    queued: Arc<Notify>,
    /// How long recent jobs held their worker (ms): the exponentially weighted mean and
    /// variance admission by deadline estimates a queue wait from.
    service: Arc<std::sync::Mutex<Option<Service>>>,
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

    /// A job held its worker for `ms`.
    pub fn served(&self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        let mut s = self.service.lock().unwrap_or_else(|e| e.into_inner());
        *s = Some(match *s {
            None => Service { mean: ms, var: 0.0 },
            Some(Service { mean, var }) => {
                let d = ms - mean;
                Service {
                    mean: mean + WEIGHT * d,
                    var: (1.0 - WEIGHT) * (var + WEIGHT * d * d),
                }
            }
        });
    }

    /// Recent jobs' time on a worker; `None` before the first one ended.
    pub fn service(&self) -> Option<Service> {
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
        assert_eq!(e.service(), None);
        e.served(100.0);
        assert_eq!(e.service(), Some(Service { mean: 100.0, var: 0.0 }));
        e.served(f64::NAN);
        e.served(-5.0);
        assert_eq!(e.service().unwrap().mean, 100.0);
        for _ in 0..300 {
            e.served(1000.0);
        }
        let s = e.service().unwrap();
        assert!((990.0..=1000.0).contains(&s.mean), "{s:?}");
        // Alternating 900 and 1100: mean about 1000, deviation about 100.
        for i in 0..600 {
            e.served(if i % 2 == 0 { 900.0 } else { 1100.0 });
        }
        let s = e.service().unwrap();
        assert!((980.0..=1020.0).contains(&s.mean), "{s:?}");
        assert!((90.0..=110.0).contains(&s.sd()), "{s:?}");
        assert!(s.mean_error() < s.sd() / 5.0);
    }
}
