//! What a new job would wait behind ([`Queue::backlog`]), for admission by deadline: the jobs
//! that would be handed out before it, and the workers that take from its lane.
//!
//! - **Embedded** (SQLite): exact. The lease takes the smallest `seq`, and a new job's `seq` is
//!   its owner's fair-queuing tag (sqlite.rs), so the jobs ahead are the waiting rows whose
//!   `seq` is not larger than the tag it would get. A key that floods the queue sees its own
//!   backlog; another key's job sees the heads of the queue only.
//! - **Distributed** (JetStream): the undelivered messages of the job's lane (the host's, or
//!   its engine's runtime's: a flood on one lane refuses nothing on another), as the server
//!   counted them at most [`FRESH`] ago plus those this process published since; the workers
//!   are those the live managers of that lane advertise (engines.rs). The server is asked for
//!   at most [`ASK_WITHIN`]: while it cannot answer (a stream without a leader, a partition)
//!   the backlog is unknown for [`FRESH`], and admission goes on without a deadline rather than
//!   holding a submission for the client's whole request timeout.
//!
//! [`Queue::backlog`]: crate::Queue::backlog

use std::time::{Duration, Instant};

use sqlx::Row;

use crate::SqliteStore;
use crate::jetstream::{JetStreamQueue, STREAM, consumer_name};
use crate::traits::{Backlog, StoreError};

/// How old a lane's count from the server may be before it is read again.
pub const FRESH: Duration = Duration::from_millis(250);

/// How long a submission waits for the server's count of its lane.
pub const ASK_WITHIN: Duration = Duration::from_millis(100);

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

impl SqliteStore {
    /// The waiting jobs that would be leased before a new job of `owner` ('' without keys).
    pub(crate) async fn jobs_ahead(&self, owner: &str) -> Result<u64, StoreError> {
        // The tag is admission's; a row is waiting when no lease holds it.
        let n: i64 = sqlx::query(concat!(
            "SELECT COUNT(*) FROM queue WHERE available_at <= ?1 AND seq <= ",
            crate::sqlite::fair_tag!()
        ))
        .bind(chrono::Utc::now().timestamp_millis())
        .bind(owner)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?
        .get(0);
        Ok(n.max(0) as u64)
    }
}

impl JetStreamQueue {
    /// The runtime whose lane jobs of `engine` go to (`None`: the host's).
    pub(crate) fn lane_of(&self, engine: &str) -> Option<&str> {
        self.routes.get(&engine.trim().to_ascii_lowercase()).map(String::as_str)
    }

    /// A job of `engine` was published: its lane's count has one more.
    pub(crate) fn published(&self, engine: &str) {
        let name = consumer_name(self.lane_of(engine));
        if let Some((_, Some(n))) = self.pending.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&name) {
            *n += 1;
        }
    }

    /// The backlog a new job of `engine` would join; `None` while the server cannot count it.
    pub(crate) async fn lane_backlog(&self, engine: &str) -> Option<Backlog> {
        let runtime = self.lane_of(engine);
        let name = consumer_name(runtime);
        let cached = self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&name)
            .filter(|(at, _)| at.elapsed() < FRESH)
            .map(|(_, n)| *n);
        let ahead = match cached {
            Some(n) => n,
            None => {
                let n = match tokio::time::timeout(ASK_WITHIN, self.count_waiting(&name)).await {
                    Ok(Ok(n)) => Some(n),
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, lane = %name, "no backlog count; admitting without a deadline");
                        None
                    }
                    Err(_) => {
                        tracing::debug!(lane = %name, "the backlog count is late; admitting without a deadline");
                        None
                    }
                };
                // An unknown count is remembered too: an outage costs one wait per FRESH.
                self.pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(name, (Instant::now(), n));
                n
            }
        }?;
        Some(Backlog {
            ahead,
            workers: self.workers(runtime),
        })
    }

    /// The lane's undelivered messages as the server counts them.
    async fn count_waiting(&self, lane: &str) -> Result<u64, StoreError> {
        let stream = self.js.get_stream(STREAM).await.map_err(unavailable)?;
        // A lane no manager has leased from yet has no consumer: nothing is delivered from it,
        // so all its messages wait (counted as the stream's, an upper bound).
        Ok(match stream.consumer_info(lane).await {
            Ok(info) => info.num_pending,
            Err(_) => stream.get_info().await.map_err(unavailable)?.state.messages,
        })
    }
}
