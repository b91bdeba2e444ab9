//! One admission of a key at a time on this process ([`Turns`]): a burst of one key counts its
//! own jobs (quotas' caps, fair dispatch's window) instead of all reading the same count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::OwnedMutexGuard;

/// A lock per key, kept while the key is used.
#[derive(Debug, Default)]
pub struct Turns(Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>);

impl Turns {
    /// Wait for `key`'s turn; it lasts as long as the guard.
    pub async fn hold(&self, key: &str) -> OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
            // Drop the locks nobody holds or waits for, so the map stays as small as the keys
            // in use.
            if map.len() > 1024 {
                map.retain(|_, l| Arc::strong_count(l) > 1);
            }
            map.entry(key.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }
}
