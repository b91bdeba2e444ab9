//! The S3 server (`wolf-s3`, built from s3s/s3s-fs in this crate) on a free port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::port::{free_port, wait_tcp};

/// A running (or stopped) S3 server with one bucket.
#[derive(Debug)]
pub struct S3 {
    child: Option<Child>,
    port: u16,
    root: PathBuf,
    binary: PathBuf,
    /// The bucket created at start.
    pub bucket: String,
    /// Access key id.
    pub access_key_id: String,
    /// Secret key.
    pub secret_access_key: String,
}

/// `$WOLF_S3_SERVER`, else `wolf-s3` next to this executable or one directory up (tests run
/// from target/<profile>/deps).
pub fn binary() -> anyhow::Result<PathBuf> {
    crate::workspace_binary("WOLF_S3_SERVER", "wolf-s3")
}

impl S3 {
    /// Start with its objects under `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut s = S3 {
            child: None,
            port: free_port(),
            root: dir.join("s3"),
            binary: binary()?,
            bucket: "wolf".into(),
            access_key_id: "wolf-test-access".into(),
            secret_access_key: "wolf-test-secret-not-for-production".into(),
        };
        // s3s-fs keeps a bucket as a directory.
        std::fs::create_dir_all(s.root.join(&s.bucket))?;
        s.restart()?;
        Ok(s)
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Where the object `key` of the bucket is kept on disk (s3s-fs: a file per object).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.join(&self.bucket).join(key)
    }

    /// The server's pid, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        let child = Command::new(&self.binary)
            .args([
                "--port",
                &self.port.to_string(),
                "--access-key",
                &self.access_key_id,
                "--secret-key",
                &self.secret_access_key,
            ])
            .arg(&self.root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        self.child = Some(child);
        wait_tcp(self.port, Duration::from_secs(10))
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.kill9();
    }
}
