//! What a new job would wait behind ([`Queue::backlog`]), for admission by deadline: the jobs
//! that would be handed out before it, and the workers that take from its lane.
//!
//! - **Embedded** (SQLite): exact. The lease takes the smallest `seq`, and a new job's `seq` is
//!   its owner's fair-queuing tag (sqlite.rs), so the jobs ahead are the waiting rows whose
//!   `seq` is not larger than the tag it would get. A key that floods the queue sees its own
//!   backlog; another key's job sees the heads of the queue only.
//! - **Distributed** (JetStream): the undelivered messages of the job's lane (the host's, or
//!   its engine's runtime's: a flood on one lane refuses nothing on another), as the server
//!   last counted them plus those this process published since; the workers are those the
//!   live managers of that lane advertise (engines.rs). No submission waits for the server but
//!   a lane's first (at most [`ASK_WITHIN`]): a count older than [`FRESH`] is answered as it is
//!   and read again in the background. While the server cannot answer (a stream without a
//!   leader, a partition) the last count serves for [`STALE_AT_MOST`], then the backlog is
//!   unknown and admission goes on without a deadline (the publish still decides). Before,
//!   each stale read was on a submission's path: with no leader it waited async-nats' 10 s
//!   request timeout.
//!
//! [`Queue::backlog`]: crate::Queue::backlog

use std::time::{Duration, Instant};

use sqlx::Row;

use crate::SqliteStore;
use crate::jetstream::{JetStreamQueue, STREAM, consumer_name};
use crate::traits::{Backlog, StoreError};

/// How old a lane's count from the server may be before it is read again.
pub const FRESH: Duration = Duration::from_millis(250);

/// How long the first submission of a lane waits for the server's count; later ones never
/// wait (a stale count is answered and read again in the background).
pub const ASK_WITHIN: Duration = Duration::from_millis(100);

/// A stale count older than this is not answered any more: the backlog is unknown until the
/// server counts again (an outage longer than this admits without a deadline).
pub const STALE_AT_MOST: Duration = Duration::from_secs(5);

/// A lane's count as last read: when, the count (`None`: the server did not answer), and
/// whether a read is under way.
#[derive(Debug, Clone, Copy)]
pub struct Count {
    at: Instant,
    n: Option<u64>,
    reading: bool,
}

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
        if let Some(Count { n: Some(n), .. }) = self.pending.lock().unwrap_or_else(|e| e.into_inner()).get_mut(&name) {
            *n += 1;
        }
    }

    /// The backlog a new job of `engine` would join; `None` while the server cannot count it.
    /// Only a lane's first submission waits for the server (at most [`ASK_WITHIN`]); after
    /// that a count older than [`FRESH`] is answered as it is and read again in the background.
    pub(crate) async fn lane_backlog(&self, engine: &str) -> Option<Backlog> {
        let runtime = self.lane_of(engine);
        let name = consumer_name(runtime);
        let known = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            match pending.get_mut(&name) {
                Some(c) => {
                    let age = c.at.elapsed();
                    if age >= FRESH && !c.reading {
                        c.reading = true;
                        self.count_in_background(name.clone());
                    }
                    Some(if age < STALE_AT_MOST { c.n } else { None })
                }
                None => None,
            }
        };
        let ahead = match known {
            Some(n) => n,
            None => {
                let n = match tokio::time::timeout(ASK_WITHIN, count_waiting(&self.js, &name)).await {
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
                // An unknown count is remembered too, and read again in the background.
                self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    name,
                    Count {
                        at: Instant::now(),
                        n,
                        reading: false,
                    },
                );
                n
            }
        }?;
        Some(Backlog {
            ahead,
            workers: self.workers(runtime),
        })
    }

    /// Read `lane`'s count in a task of its own; what it finds replaces the cached count.
    fn count_in_background(&self, lane: String) {
        let (js, pending) = (self.js.clone(), self.pending.clone());
        tokio::spawn(async move {
            // Bounded like a request: a server that never answers frees the slot for a retry.
            let n = match tokio::time::timeout(Duration::from_secs(2), count_waiting(&js, &lane)).await {
                Ok(Ok(n)) => Some(n),
                _ => None,
            };
            let mut pending = pending.lock().unwrap_or_else(|e| e.into_inner());
            match n {
                Some(n) => {
                    pending.insert(
                        lane,
                        Count {
                            at: Instant::now(),
                            n: Some(n),
                            reading: false,
                        },
                    );
                }
                // No answer: the last count stays, aging (past STALE_AT_MOST it is answered as
                // unknown), and the next submission tries again.
                None => {
                    if let Some(c) = pending.get_mut(&lane) {
                        c.reading = false;
                    }
                }
            }
        });
    }
}

/// The lane's undelivered messages as the server counts them.
async fn count_waiting(js: &async_nats::jetstream::Context, lane: &str) -> Result<u64, StoreError> {
    let stream = js.get_stream(STREAM).await.map_err(unavailable)?;
    // A lane no manager has leased from yet has no consumer: nothing is delivered from it, so
    // all its messages wait (counted as the stream's, an upper bound).
    Ok(match stream.consumer_info(lane).await {
        Ok(info) => info.num_pending,
        Err(_) => stream.get_info().await.map_err(unavailable)?.state.messages,
    })
}
