//! Objects as files under a directory: `<root>/jobs/<id>/code.bin`, written to a temporary name
//! and renamed, so a crash never leaves half an object.

use std::path::{Component, Path, PathBuf};

use async_trait::async_trait;

use crate::traits::{Objects, StoreError};

/// The embedded object store.
#[derive(Debug, Clone)]
pub struct LocalObjects {
    root: PathBuf,
}

impl LocalObjects {
    /// Objects under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        let rel = Path::new(key);
        if key.is_empty() || !rel.components().all(|c| matches!(c, Component::Normal(_))) {
            return Err(StoreError::InvalidKey(key.to_string()));
        }
        Ok(self.root.join(rel))
    }
}

fn unavailable(e: std::io::Error) -> StoreError {
    StoreError::Unavailable(Box::new(e))
}

#[async_trait]
impl Objects for LocalObjects {
    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        let path = self.path(key)?;
        let dir = path.parent().expect("keys have a directory").to_path_buf();
        tokio::fs::create_dir_all(&dir).await.map_err(unavailable)?;
        let tmp = dir.join(format!(
            ".{}.tmp-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("o"),
            uuid::Uuid::now_v7()
        ));
        tokio::fs::write(&tmp, data).await.map_err(unavailable)?;
        tokio::fs::rename(&tmp, &path).await.map_err(unavailable)
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        use std::io::ErrorKind;
        match tokio::fs::read(self.path(key)?).await {
            Ok(d) => Ok(Some(d)),
            // A path through a file ("jobs/<id>/code.bin/x"): no such object either.
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(None),
            // A key the file system cannot name is a bad key, not an outage.
            Err(e) if matches!(e.kind(), ErrorKind::InvalidFilename | ErrorKind::InvalidInput) => {
                Err(StoreError::InvalidKey(key.to_string()))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<(), StoreError> {
        let dir = self.path(prefix.trim_end_matches('/'))?;
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn put_get_and_keys_cannot_escape() {
        let dir = tempfile::tempdir().unwrap();
        let o = LocalObjects::new(dir.path());
        o.put("jobs/a/code.bin", b"x".to_vec()).await.unwrap();
        assert_eq!(o.get("jobs/a/code.bin").await.unwrap().unwrap(), b"x");
        assert!(o.get("jobs/b/code.bin").await.unwrap().is_none());
        assert!(o.get("jobs/a/code.bin/deeper").await.unwrap().is_none());
        assert!(matches!(
            o.get(&format!("jobs/{}/code.bin", "x".repeat(300))).await,
            Err(StoreError::InvalidKey(_))
        ));
        assert!(matches!(
            o.get("jobs/a\0b/code.bin").await,
            Err(StoreError::InvalidKey(_))
        ));
        o.put("jobs/a/files/out/x.png", b"y".to_vec()).await.unwrap();
        o.put("jobs/ab/code.bin", b"z".to_vec()).await.unwrap();
        o.delete_prefix("jobs/a/").await.unwrap();
        assert!(o.get("jobs/a/code.bin").await.unwrap().is_none());
        assert!(o.get("jobs/a/files/out/x.png").await.unwrap().is_none());
        assert!(
            o.get("jobs/ab/code.bin").await.unwrap().is_some(),
            "only that job's objects"
        );
        o.delete_prefix("jobs/a/").await.unwrap();
        for bad in ["../", "/etc/", "jobs/../../", "/"] {
            assert!(
                matches!(o.delete_prefix(bad).await, Err(StoreError::InvalidKey(_))),
                "{bad}"
            );
        }
        for bad in ["../x", "/etc/passwd", "jobs/../../x", ""] {
            assert!(
                matches!(o.put(bad, vec![]).await, Err(StoreError::InvalidKey(_))),
                "{bad}"
            );
        }
    }
}
