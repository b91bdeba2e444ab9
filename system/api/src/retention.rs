//! Retention: ended jobs older than `retention` are deleted (objects, then rows), in batches
//! of [`BATCH`] with the metadata store's writer held for one short transaction each, so
//! admission never waits behind a long delete; and one job deleted by its owner
//! (`DELETE /job/{id}`, the Judge0 door's `DELETE /submissions/{token}`).
//!
//! Every API of a deployment runs the loop: two of them may pick the same batch, and both
//! deletes are idempotent (objects first, then rows: a pass cut short is finished by the next).

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use wolf_store::{Objects, Retention, StoreError};

use crate::AppState;

/// Jobs (and dead letters) per batch.
pub const BATCH: u32 = 200;

/// Objects deleted at once.
const PARALLEL: usize = 16;

/// Pause between two full batches: admission gets the writer in between.
const BREATHE: Duration = Duration::from_millis(50);

/// Forget ended jobs: their objects first (all of them, in parallel), then their rows.
pub async fn forget_jobs(objects: &dyn Objects, store: &dyn Retention, ids: &[String]) -> Result<u64, StoreError> {
    let prefixes: Vec<String> = ids.iter().map(|id| format!("jobs/{id}/")).collect();
    futures::stream::iter(prefixes)
        .map(|p| async move { objects.delete_prefix(&p).await })
        .buffer_unordered(PARALLEL)
        .try_collect::<()>()
        .await?;
    store.forget(ids).await
}

/// One batch: the oldest ended jobs past `keep`, then dead letters. Returns what was deleted.
pub async fn pass(objects: &dyn Objects, store: &dyn Retention, keep: Duration) -> Result<(u64, u64), StoreError> {
    let cutoff = chrono::Utc::now() - chrono::Duration::from_std(keep).unwrap_or(chrono::Duration::MAX);
    let ids = store.expired(cutoff, BATCH).await?;
    let jobs = forget_jobs(objects, store, &ids).await?;
    let letters = store.expire_dead_letters(cutoff, BATCH).await?;
    metrics::counter!("wolf_retention_deleted_total", "what" => "job").increment(jobs);
    metrics::counter!("wolf_retention_deleted_total", "what" => "dead_letter").increment(letters);
    Ok((ids.len() as u64, letters))
}

/// How often an idle loop looks again: a quarter of the retention, at most a minute.
pub fn idle(keep: Duration) -> Duration {
    (keep / 4).clamp(Duration::from_millis(200), Duration::from_secs(60))
}

/// Delete what is past `keep`, for as long as the API serves.
pub async fn run(st: AppState, store: Arc<dyn Retention>, keep: Duration) {
    tracing::info!(retention = ?keep, "retention: ended jobs older than this are deleted");
    loop {
        let wait = match pass(&*st.objects, &*store, keep).await {
            Ok((jobs, letters)) => {
                if jobs + letters > 0 {
                    tracing::debug!(jobs, letters, "retention: deleted");
                }
                if jobs == BATCH as u64 || letters == BATCH as u64 {
                    BREATHE
                } else {
                    idle(keep)
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention pass failed; trying again later");
                idle(keep)
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_interval_follows_the_retention_within_bounds() {
        assert_eq!(idle(Duration::from_secs(7 * 86400)), Duration::from_secs(60));
        assert_eq!(idle(Duration::from_secs(2)), Duration::from_millis(500));
        assert_eq!(idle(Duration::from_millis(10)), Duration::from_millis(200));
    }
}
