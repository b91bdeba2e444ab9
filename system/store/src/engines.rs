//! Which engines on image runtimes the live managers offer: each manager keeps its list in the
//! key-value bucket `WOLF_ENGINES` under its own key, written again every [`AD_EVERY`]; the
//! bucket forgets an entry [`AD_TTL`] after its last write, so a manager killed without a word
//! stops counting within that time (one that stops cleanly removes its entry at once). APIs
//! read the bucket every [`FOLLOW_EVERY`]: `GET /languages` lists what is offered, and a job for
//! an engine no live manager offers is refused at submission rather than left waiting. Every
//! manager writes its entry, also with no runtime: its worker count is the capacity admission
//! by deadline divides the backlog by.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::jetstream::JetStreamQueue;
use crate::traits::StoreError;

/// The bucket.
pub const ENGINES_BUCKET: &str = "WOLF_ENGINES";
/// How long an entry lives after its last write.
pub const AD_TTL: Duration = Duration::from_secs(30);
/// How often a manager writes its entry.
pub const AD_EVERY: Duration = Duration::from_secs(10);
/// How often an API reads the bucket.
pub const FOLLOW_EVERY: Duration = Duration::from_secs(2);

/// One engine a manager offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineAd {
    /// The engine's name.
    pub name: String,
    /// The runtime it runs on.
    pub runtime: String,
    /// Its version: what its version command printed on the runtime's root.
    pub version: Option<String>,
    /// The image it runs on: `RUNTIME@sha256:…`.
    #[serde(default)]
    pub image: Option<String>,
}

/// What one manager offers.
#[derive(Debug, Serialize, Deserialize)]
struct Ad {
    manager: String,
    engines: Vec<EngineAd>,
    /// Its workers (jobs it runs at once); 0 from a manager of an earlier version.
    #[serde(default)]
    workers: usize,
}

/// The workers of the live managers: each one's count, and the runtimes it serves (every
/// manager serves the host's lane).
pub type Capacity = Vec<(usize, std::collections::BTreeSet<String>)>;

/// Engines offered by at least one live manager, by name, with the managers offering each.
pub type Offered = BTreeMap<String, (EngineAd, Vec<String>)>;

fn unavailable(e: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

/// A bucket key for a manager: the bucket's alphabet, anything else as `_`.
fn key(manager: &str) -> String {
    manager
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_=".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

impl JetStreamQueue {
    async fn engines_bucket(&self) -> Result<&jetstream::kv::Store, StoreError> {
        self.engines
            .get_or_try_init(|| {
                self.bucket(
                    ENGINES_BUCKET,
                    stream::Config {
                        max_age: AD_TTL,
                        storage: stream::StorageType::Memory,
                        ..Default::default()
                    },
                )
            })
            .await
    }

    /// Write `engines` and `workers` as `manager`'s offer now and every [`AD_EVERY`], for as
    /// long as the future runs (a write that fails is retried at the next tick).
    pub async fn advertise(self: Arc<Self>, manager: String, engines: Vec<EngineAd>, workers: usize) {
        let body: Vec<u8> = serde_json::to_vec(&Ad {
            manager: manager.clone(),
            engines,
            workers,
        })
        .expect("serializes");
        let mut tick = tokio::time::interval(AD_EVERY);
        loop {
            tick.tick().await;
            match self.engines_bucket().await {
                Ok(kv) => {
                    if let Err(e) = kv.put(key(&manager), body.clone().into()).await {
                        tracing::warn!(error = %e, "could not advertise this manager's engines; retrying");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "no engines bucket; retrying"),
            }
        }
    }

    /// Remove `manager`'s offer (it stops).
    pub async fn withdraw(&self, manager: &str) {
        if let Ok(kv) = self.engines_bucket().await {
            let _ = kv.purge(key(manager)).await;
        }
    }

    /// Read every live offer.
    pub async fn read_offered(&self) -> Result<Offered, StoreError> {
        Ok(self.read_ads().await?.0)
    }

    /// Every live offer, and the live managers' workers.
    async fn read_ads(&self) -> Result<(Offered, Capacity), StoreError> {
        let kv = self.engines_bucket().await?;
        let mut keys = kv.keys().await.map_err(unavailable)?;
        let mut offered = Offered::new();
        let mut capacity = Capacity::new();
        while let Some(k) = keys.next().await {
            let k = k.map_err(unavailable)?;
            let Some(bytes) = kv.get(&k).await.map_err(unavailable)? else {
                continue;
            };
            let Ok(ad) = serde_json::from_slice::<Ad>(&bytes) else {
                tracing::warn!(key = %k, "an engines entry that does not parse; ignored");
                continue;
            };
            capacity.push((ad.workers, ad.engines.iter().map(|e| e.runtime.clone()).collect()));
            for e in ad.engines {
                offered
                    .entry(e.name.clone())
                    .or_insert_with(|| (e, Vec::new()))
                    .1
                    .push(ad.manager.clone());
            }
        }
        Ok((offered, capacity))
    }

    /// Workers of the live managers that serve `runtime`'s lane (`None`: the host's), as last
    /// read by [`JetStreamQueue::follow_engines`]; `None` when unknown (not followed, or no
    /// manager said).
    pub fn workers(&self, runtime: Option<&str>) -> Option<usize> {
        let capacity = self.capacity.read().unwrap_or_else(|e| e.into_inner());
        let n: usize = capacity
            .iter()
            .filter(|(_, rts)| runtime.is_none_or(|rt| rts.contains(rt)))
            .map(|(w, _)| w)
            .sum();
        (n > 0).then_some(n)
    }

    /// Read the offers now, then every [`FOLLOW_EVERY`] in the background: [`Queue::offered`]
    /// answers from the last read (a failed read keeps the previous one).
    ///
    /// [`Queue::offered`]: crate::Queue::offered
    pub async fn follow_engines(self: &Arc<Self>) {
        let (first, capacity) = self.read_ads().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the engines managers offer; none until the next read");
            Default::default()
        });
        *self.offered.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(first));
        *self.capacity.write().unwrap_or_else(|e| e.into_inner()) = capacity;
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FOLLOW_EVERY).await;
                let Some(q) = me.upgrade() else { return };
                match q.read_ads().await {
                    Ok((o, c)) => {
                        *q.offered.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(o));
                        *q.capacity.write().unwrap_or_else(|e| e.into_inner()) = c;
                    }
                    Err(e) => tracing::debug!(error = %e, "engines read failed; keeping the last one"),
                }
            }
        });
    }
}
