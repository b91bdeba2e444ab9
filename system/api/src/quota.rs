//! A key's quotas at admission: its rate (a token bucket), its unfinished jobs
//! (`concurrency`: queued or running at once) and its waiting jobs (`max_queued`). Past any of
//! them the submission is refused with 429 and a `Retry-After`, through every front door,
//! since every door admits through [`crate::routes::accept`].
//!
//! The bucket and the counts live in the metadata store ([`wolf_store::Quotas`]), so every
//! API of a deployment shares them. A key's admissions on one API are checked one at a time
//! (a lock per capped key), and the jobs this API accepted whose record is still on its way to
//! the store count too: a burst through one API cannot overshoot a cap. Bursts through several
//! APIs at the same instant can pass a cap by at most one job per API.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::OwnedMutexGuard;
use wolf_core::auth::ApiKey;
use wolf_store::Turns;

use crate::{ApiError, AppState};

/// The capped keys' turns on this API (one admission of a key at a time), and where this
/// process admits every job ([`wolf_store::Quotas::sole_admitter`]) an upper bound of each
/// capped key's unfinished jobs: the last count plus the admissions since. Jobs only end
/// between counts, so while the bound is under every cap no count is needed; at a cap, the
/// store counts (exactly) again.
#[derive(Debug, Default)]
pub struct KeyLocks {
    turns: Turns,
    bounds: Mutex<HashMap<String, u64>>,
}

impl KeyLocks {
    /// The key's bound, when it is under `below`; then it counts one more (this admission).
    fn under(&self, key: &str, below: u64) -> bool {
        let mut map = self.bounds.lock().unwrap_or_else(|e| e.into_inner());
        match map.get_mut(key) {
            Some(n) if *n < below => {
                *n += 1;
                true
            }
            _ => false,
        }
    }

    /// The key's unfinished jobs as counted now, plus this admission.
    fn counted(&self, key: &str, unfinished: u64) {
        let mut map = self.bounds.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() > 4096 {
            map.clear();
        }
        map.insert(key.to_string(), unfinished + 1);
    }
}

fn refuse(key: &ApiKey, limit: &'static str, retry_after: u64, message: String) -> ApiError {
    tracing::info!(target: "wolf::audit", event = "quota_refusal", key = %key.name, limit, "{message}");
    metrics::counter!("wolf_quota_refusals_total", "key" => key.name.clone(), "limit" => limit).increment(1);
    ApiError::Limited(message, retry_after.max(1))
}

/// Check the current key's quotas before an admission. The returned guard, when a cap
/// applies, is held until the job is admitted: the next admission of the key counts it.
pub(crate) async fn check(st: &AppState) -> Result<Option<OwnedMutexGuard<()>>, ApiError> {
    let (Some(quotas), Some(key)) = (st.quotas.as_ref(), crate::auth::limited_key()) else {
        return Ok(None);
    };
    if let Some(rate) = key.rate {
        let burst = key.burst.unwrap_or_else(|| rate.ceil() as u32);
        if let Err(wait) = quotas.take_token(&key.id, rate, burst).await? {
            return Err(refuse(
                &key,
                "rate",
                wait.as_secs_f64().ceil() as u64,
                format!(
                    "this API key's rate of {rate}/s (burst {burst}) is used up; retry after {:.1} s",
                    wait.as_secs_f64()
                ),
            ));
        }
    }
    if key.concurrency.is_none() && key.max_queued.is_none() {
        return Ok(None);
    }
    let held = st.quota_locks.turns.hold(&key.id).await;
    // Waiting jobs are among the unfinished ones, so the bound serves both caps.
    let below = key
        .concurrency
        .into_iter()
        .chain(key.max_queued)
        .min()
        .map_or(u64::MAX, u64::from);
    let sole = quotas.sole_admitter();
    if sole && st.quota_locks.under(&key.id, below) {
        return Ok(Some(held));
    }
    // Accepted here and maybe not in the store yet (the distributed mode writes the record in
    // the background; the manager may have written it first): the store counts those it lacks.
    let fresh: Vec<String> = st
        .pending_writes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .values()
        .filter(|r| r.owner.as_deref() == Some(key.id.as_str()))
        .map(|r| r.id.clone())
        .collect();
    let now = quotas.unfinished(&key.id, &fresh).await?;
    if let Some(c) = key.concurrency
        && now.waiting + now.running >= u64::from(c)
    {
        return Err(refuse(
            &key,
            "concurrency",
            1,
            format!(
                "this API key has {} unfinished jobs, its concurrency limit of {c}; retry when one finishes",
                now.waiting + now.running
            ),
        ));
    }
    if let Some(q) = key.max_queued
        && now.waiting >= u64::from(q)
    {
        return Err(refuse(
            &key,
            "max_queued",
            1,
            format!(
                "this API key has {} jobs waiting, its max_queued limit of {q}; retry when one starts",
                now.waiting
            ),
        ));
    }
    if sole {
        st.quota_locks.counted(&key.id, now.waiting + now.running);
    }
    Ok(Some(held))
}

#[cfg(test)]
mod tests {
    use super::KeyLocks;

    #[test]
    fn the_bound_admits_without_a_count_only_below_the_cap() {
        let locks = KeyLocks::default();
        assert!(!locks.under("k", 3), "never counted: count first");
        // Counted 1 unfinished, plus the admission that counted it: 2.
        locks.counted("k", 1);
        assert!(locks.under("k", 3), "2 < 3: admitted, now 3");
        assert!(!locks.under("k", 3), "3 is the cap: count again");
        assert!(!locks.under("other", 3), "per key");
        locks.counted("k", 0);
        assert!(locks.under("k", 3), "jobs ended: counted down");
    }
}
