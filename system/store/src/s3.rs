//! Objects in any S3-compatible store (MinIO, Garage, AWS, the testkit's s3s server), through
//! object_store: path-style requests, any endpoint, retries with backoff.

use std::time::Duration;

use async_trait::async_trait;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload, RetryConfig};

use crate::traits::{Objects, StoreError};

/// Where and how to reach the bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// `http://host:port` (any S3-compatible endpoint).
    pub endpoint: String,
    /// Bucket.
    pub bucket: String,
    /// Region (anything for non-AWS stores).
    pub region: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret key (never logged).
    pub secret_access_key: String,
}

/// The S3 object store.
#[derive(Debug)]
pub struct S3Objects {
    store: AmazonS3,
}

fn unavailable(e: object_store::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

impl S3Objects {
    /// A client for the bucket (no request is made yet).
    pub fn new(cfg: &S3Config) -> Result<Self, StoreError> {
        let mut builder = AmazonS3Builder::new()
            .with_endpoint(&cfg.endpoint)
            .with_bucket_name(&cfg.bucket)
            .with_region(&cfg.region);
        // Without keys, object_store takes the instance role's credentials (EC2 metadata).
        if !cfg.access_key_id.is_empty() {
            builder = builder
                .with_access_key_id(&cfg.access_key_id)
                .with_secret_access_key(&cfg.secret_access_key);
        }
        let store = builder
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_retry(RetryConfig {
                max_retries: 3,
                retry_timeout: Duration::from_secs(5),
                ..Default::default()
            })
            .build()
            .map_err(unavailable)?;
        Ok(Self { store })
    }
}

#[async_trait]
impl Objects for S3Objects {
    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        self.store
            .put(&Path::from(key), PutPayload::from(data))
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.store.get(&Path::from(key)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(unavailable)?.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        use futures::{StreamExt, TryStreamExt};
        use object_store::ObjectStore;
        let prefix = Path::from(prefix.trim_end_matches('/'));
        let listed = self.store.list(Some(&prefix)).map_ok(|meta| meta.location).boxed();
        // Batched DeleteObjects requests; a key already gone is no error.
        self.store
            .delete_stream(listed)
            .try_for_each(|_| async { Ok(()) })
            .await
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(()),
                e => Err(unavailable(e)),
            })
    }
}
