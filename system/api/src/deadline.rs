//! Admission by deadline: a submission whose estimated queue wait is past `max_queue_wait` is
//! refused at once (503, `Retry-After`), instead of accepted into a backlog it would wait
//! minutes behind. Every front door admits through here.
//!
//! The estimate is `jobs ahead × mean time a job holds its worker / workers`, refused when its
//! upper bound (two standard deviations, [`bound_ms`]) is past the deadline:
//! - the jobs ahead come from the queue ([`wolf_store::Queue::backlog`]): in the embedded queue
//!   the exact count under fair queuing (a key flooding the queue waits behind itself, another
//!   key's job does not), in JetStream the job's lane (a flood of one runtime's engine does not
//!   refuse the host's engines);
//! - the mean comes from the jobs that recently ended (the managers report each one's time on
//!   its worker, a whole worker cycle under a backlog; over NATS in the distributed mode),
//!   seeded at start from the newest records of the metadata store ([`learn_from_history`]);
//!   with no ended job at all (a new deployment) there is no estimate and nothing is refused
//!   until one ends;
//! - the workers are the API's own count (embedded) or those the live managers advertise.
//!
//! A job with nobody ahead is never refused, whatever the estimate: a free worker takes it.
//!
//! Counting the jobs ahead is a query of the embedded queue, so it is asked only when the whole
//! queue's depth (read at most [`FRESH`] ago, plus this API's admissions since) could be past
//! the deadline: below that, a submission pays a lock and a multiplication.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use wolf_core::{JobRecord, Submission};
use wolf_store::{Page, Queue, StoreError};

use crate::{ApiError, AppState};

/// Records read at start to seed the mean run time.
const HISTORY: u64 = 32;

/// How old the queue's depth may be before it is read again.
pub const FRESH: Duration = Duration::from_millis(100);

/// The queue's depth as last read, plus the jobs this API admitted since: an upper bound of
/// the jobs ahead of any new one (between reads, jobs that left are still counted).
#[derive(Debug, Default)]
pub struct DepthHint(Mutex<Option<(Instant, u64)>>);

impl DepthHint {
    async fn get(&self, queue: &dyn Queue) -> Result<u64, StoreError> {
        let cached = *self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, n)) = cached
            && at.elapsed() < FRESH
        {
            return Ok(n);
        }
        let n = queue.depth().await?;
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), n));
        Ok(n)
    }

    /// A job was admitted here.
    pub fn admitted(&self) {
        if let Some((_, n)) = self.0.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            *n += 1;
        }
    }
}

/// Refuse `sub` of `owner` when its queue wait could be past `max_queue_wait` ([`bound_ms`]).
pub async fn check(st: &AppState, sub: &Submission, owner: Option<&str>) -> Result<(), ApiError> {
    let Some(max) = st.cfg.max_queue_wait else {
        return Ok(());
    };
    let Some(service) = st.events.service() else {
        return Ok(());
    };
    let max_ms = max.as_secs_f64() * 1000.0;
    // The embedded queue: nothing to count when even the whole queue is within the deadline.
    if st.cfg.workers > 0 {
        let depth = st.depth_hint.get(&*st.queue).await?;
        if bound_ms(depth, &service, st.cfg.workers) <= max_ms {
            return Ok(());
        }
    }
    // A queue that cannot count its backlog now admits without a deadline: the deadline sheds
    // load, it does not decide whether the queue takes the job (the admission after it does).
    let backlog = match st.queue.backlog(owner.unwrap_or(""), &sub.execution_engine).await {
        Ok(Some(b)) => b,
        Ok(None) => return Ok(()),
        Err(e) => {
            tracing::debug!(error = %e, "no backlog count; admitting without a deadline");
            return Ok(());
        }
    };
    let workers = backlog.workers.unwrap_or(st.cfg.workers);
    // No worker known (none advertised yet): no estimate; the pending bound still holds.
    if backlog.ahead == 0 || workers == 0 {
        return Ok(());
    }
    let wait_ms = bound_ms(backlog.ahead, &service, workers);
    if wait_ms <= max_ms {
        return Ok(());
    }
    metrics::counter!("wolf_refusals_total", "layer" => "deadline").increment(1);
    let retry = retry_after_secs(wait_ms, max_ms);
    Err(ApiError::Backlogged(
        format!(
            "this job could wait up to {:.0} s in the queue ({} jobs ahead, {workers} workers, about {:.0} ms each), \
             past max_queue_wait ({:.0} s); retry after {retry} s",
            wait_ms / 1000.0,
            backlog.ahead,
            service.mean,
            max_ms / 1000.0
        ),
        retry,
    ))
}

/// Seed the mean run time from the newest ended jobs of the metadata store (oldest first, as
/// they ended), so that a restarted API estimates from its first submission. Best effort.
pub async fn learn_from_history(st: &AppState) {
    let page = Page {
        limit: HISTORY,
        ..Default::default()
    };
    match st.meta.list(page).await {
        Ok(records) => {
            for ms in records.iter().rev().filter_map(JobRecord::time_on_worker_ms) {
                st.events.served(ms);
            }
        }
        Err(e) => tracing::debug!(error = %e, "no run times from history; learning from the next jobs"),
    }
}

/// The queue wait behind `ahead` jobs on `workers` workers that a job exceeds with a chance of
/// about 2 % only: each worker runs `ahead / workers` of them, so the wait is a sum of that
/// many job times, its mean `k × mean` and its spread two standard deviations of the sum
/// (`√k × sd`, the jobs' own variation) plus two of `k × mean`'s error (the mean is itself
/// estimated from the last few dozen jobs).
pub fn bound_ms(ahead: u64, service: &wolf_store::Service, workers: usize) -> f64 {
    let k = ahead as f64 / workers.max(1) as f64;
    k * service.mean + 2.0 * (k.sqrt() * service.sd() + k * service.mean_error())
}

/// When the backlog should have drained to the deadline: the excess, in whole seconds (≥ 1).
pub fn retry_after_secs(wait_ms: f64, max_ms: f64) -> u64 {
    (((wait_ms - max_ms) / 1000.0).ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bound_divides_the_backlog_among_the_workers_and_adds_the_spread() {
        let exact = wolf_store::Service { mean: 1000.0, var: 0.0 };
        assert_eq!(bound_ms(60, &exact, 2), 30_000.0);
        assert_eq!(bound_ms(0, &exact, 2), 0.0);
        assert_eq!(bound_ms(10, &exact, 0), 10_000.0, "no division by zero");
        let spread = wolf_store::Service {
            mean: 1000.0,
            var: 100.0 * 100.0,
        };
        let b = bound_ms(200, &spread, 2);
        // 100 jobs a worker: 100 s, plus 2 x (10 x 100 ms + 100 x 100/7.9 ms).
        assert!((104_500.0..104_600.0).contains(&b), "{b}");
    }

    #[test]
    fn retry_after_is_the_excess_rounded_up_and_never_zero() {
        assert_eq!(retry_after_secs(45_000.0, 30_000.0), 15);
        assert_eq!(retry_after_secs(30_001.0, 30_000.0), 1);
        assert_eq!(retry_after_secs(30_000.0, 30_000.0), 1);
    }
}
