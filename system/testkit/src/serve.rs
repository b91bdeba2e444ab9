//! `wolf serve` as a test starts it: the embedded mode in a directory of its own, on a free
//! port, its stderr kept for the test to read.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;

use anyhow::Context;

/// A running `wolf serve` (the test kills it).
pub struct Served {
    /// The process.
    pub child: Child,
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
    Ok(Served { child, url, log })
}
