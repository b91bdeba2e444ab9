//! Admission by deadline: a submission whose estimated queue wait is past `max_queue_wait` is
//! refused at once (503, `Retry-After`), instead of accepted into a backlog it would wait
//! minutes behind. Every front door admits through here.
//!
//! The estimate is `jobs ahead × mean time a job holds its worker / workers`:
//! - the jobs ahead come from the queue ([`wolf_store::Queue::backlog`]): in the embedded queue
//!   the exact count under fair queuing (a key flooding the queue waits behind itself, another
//!   key's job does not), in JetStream the job's lane (a flood of one runtime's engine does not
//!   refuse the host's engines);
//! - the mean comes from the jobs that recently ended (the managers report each one's time on
//!   its worker, over NATS in the distributed mode), seeded at start from the newest records
//!   of the metadata store ([`learn_from_history`]); with no ended job at all (a new
//!   deployment) there is no estimate and nothing is refused until one ends;
//! - the workers are the API's own count (embedded) or those the live managers advertise.
//!
//! A job with nobody ahead is never refused, whatever the estimate: a free worker takes it.

use wolf_core::{JobRecord, Status, Submission};
use wolf_store::Page;

use crate::{ApiError, AppState};

/// Records read at start to seed the mean run time.
const HISTORY: u64 = 32;

/// Refuse `sub` of `owner` when its estimated queue wait is past `max_queue_wait`.
pub async fn check(st: &AppState, sub: &Submission, owner: Option<&str>) -> Result<(), ApiError> {
    let Some(max) = st.cfg.max_queue_wait else {
        return Ok(());
    };
    let Some(backlog) = st.queue.backlog(owner.unwrap_or(""), &sub.execution_engine).await? else {
        return Ok(());
    };
    let workers = backlog.workers.unwrap_or(st.cfg.workers);
    // No worker known (none advertised yet): no estimate; the pending bound still holds.
    if backlog.ahead == 0 || workers == 0 {
        return Ok(());
    }
    let Some(service_ms) = st.events.service_ms() else {
        return Ok(());
    };
    let wait_ms = estimate_ms(backlog.ahead, service_ms, workers);
    let max_ms = max.as_secs_f64() * 1000.0;
    if wait_ms <= max_ms {
        return Ok(());
    }
    metrics::counter!("wolf_refusals_total", "layer" => "deadline").increment(1);
    let retry = retry_after_secs(wait_ms, max_ms);
    Err(ApiError::Backlogged(
        format!(
            "this job would wait about {:.0} s in the queue ({} jobs ahead, {workers} workers, about {:.0} ms each), \
             past max_queue_wait ({:.0} s); retry after {retry} s",
            wait_ms / 1000.0,
            backlog.ahead,
            service_ms,
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
            for ms in records.iter().rev().filter_map(served_ms) {
                st.events.served(ms);
            }
        }
        Err(e) => tracing::debug!(error = %e, "no run times from history; learning from the next jobs"),
    }
}

/// How long an ended job held its worker: from its (last) start to its end.
fn served_ms(r: &JobRecord) -> Option<f64> {
    if r.status != Status::Completed {
        return None;
    }
    let ms = (r.end_time? - r.start_time?).num_microseconds()? as f64 / 1000.0;
    (ms >= 0.0).then_some(ms)
}

/// The queue wait behind `ahead` jobs of `service_ms` each on `workers` workers.
pub fn estimate_ms(ahead: u64, service_ms: f64, workers: usize) -> f64 {
    ahead as f64 * service_ms / workers.max(1) as f64
}

/// When the backlog should have drained to the deadline: the excess, in whole seconds (≥ 1).
pub fn retry_after_secs(wait_ms: f64, max_ms: f64) -> u64 {
    (((wait_ms - max_ms) / 1000.0).ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_estimate_divides_the_backlog_among_the_workers() {
        assert_eq!(estimate_ms(60, 1000.0, 2), 30_000.0);
        assert_eq!(estimate_ms(0, 1000.0, 2), 0.0);
        assert_eq!(estimate_ms(10, 1000.0, 0), 10_000.0, "no division by zero");
    }

    #[test]
    fn retry_after_is_the_excess_rounded_up_and_never_zero() {
        assert_eq!(retry_after_secs(45_000.0, 30_000.0), 15);
        assert_eq!(retry_after_secs(30_001.0, 30_000.0), 1);
        assert_eq!(retry_after_secs(30_000.0, 30_000.0), 1);
    }
}
