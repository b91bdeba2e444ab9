//! `wolf serve` as a test starts it: the embedded mode in a directory of its own, on a free
//! port, its stderr kept for the test to read.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;

use anyhow::Context;

/// A child process killed (SIGKILL) and reaped when dropped, so that a test that panics
/// leaves no server behind.
pub struct Reaped(pub Child);

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        // Already exited and reaped (the test stopped it): kill fails, wait returns at once.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `wolf serve` (killed when dropped, or earlier by the test).
pub struct Served {
    /// The process.
    pub child: Reaped,
    /// Its API (`http://127.0.0.1:port`, also when it listens on every address).
    pub url: String,
    /// Its stderr lines after the address.
    pub log: Receiver<String>,
}

/// `wolf serve` on `listen` with two workers, its data and cache under `dir`, with `env`.
pub fn serve(dir: &Path, listen: &str, env: &[(&str, &str)]) -> anyhow::Result<Served> {
    let mut child = Command::new(crate::stack::wolf_binary()?)
        .args(["serve", "--listen", listen, "--workers", "2", "--data-dir"])
        .arg(dir.join("data"))
        .env("WOLF_LOG", "warn")
        .env("WOLF_CACHE_DIR", dir.join("cache"))
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn wolf serve")?;
    let (tx, log) = std::sync::mpsc::channel();
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let url = lines.by_ref().map_while(Result::ok).find_map(|l| {
        l.strip_prefix("wolf: listening on ").map(|r| {
            r.split_whitespace()
                .next()
                .unwrap_or("")
                .replace("0.0.0.0", "127.0.0.1")
        })
    });
    let Some(url) = url else {
        let _ = child.kill();
        let _ = child.wait();
        anyhow::bail!("wolf serve exited without printing its address");
    };
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    Ok(Served {
        child: Reaped(child),
        url,
        log,
    })
}
