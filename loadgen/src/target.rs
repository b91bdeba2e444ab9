//! What the load is aimed at: an embedded `wolf serve` booted here, the distributed testbed
//! booted here, or an existing deployment.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use wolf_testkit::Stack;
use wolf_testkit::stack::WolfOrigin;

/// A running target; dropping it stops what it started.
pub enum Target {
    /// `wolf serve` started here.
    Embedded {
        /// The server.
        child: Child,
        /// Its data directory.
        _dir: tempfile::TempDir,
        /// Base URL.
        url: String,
    },
    /// The testbed started here.
    Testbed {
        /// The stack.
        stack: Box<Stack>,
        /// Its data.
        _dir: tempfile::TempDir,
    },
    /// `--target URL`.
    Remote(String),
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Target::Embedded { child, .. } = self {
            // SIGTERM: the server drains and exits.
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = child.wait();
        }
    }
}

/// The `wolf` binary this process boots, and where it came from, once found.
static WOLF: std::sync::OnceLock<(PathBuf, WolfOrigin)> = std::sync::OnceLock::new();

/// Make sure `wolf` is built and current (no cargo at all when it is newer than every source),
/// unless `$WOLF_BIN`; the first call says on stderr which binary it is and where it came from.
pub fn wolf_binary() -> anyhow::Result<PathBuf> {
    if let Some((bin, _)) = WOLF.get() {
        return Ok(bin.clone());
    }
    let (bin, origin) = wolf_testkit::stack::locate_wolf_binary(true)?;
    eprintln!("loadgen: wolf binary {} ({origin})", bin.display());
    Ok(WOLF.get_or_init(|| (bin, origin)).0.clone())
}

/// The binary [`wolf_binary`] found, as the results name it (`None` before, or for a remote
/// target).
pub fn wolf_binary_used() -> Option<String> {
    WOLF.get().map(|(bin, origin)| format!("{} ({origin})", bin.display()))
}

impl Target {
    /// Boot `wolf serve` on a free port.
    pub fn embedded(workers: Option<usize>, max_pending: Option<u64>) -> anyhow::Result<Self> {
        let wolf = wolf_binary()?;
        let dir = tempfile::tempdir()?;
        let port = wolf_testkit::port::free_port();
        let url = format!("http://127.0.0.1:{port}");
        let conf = dir.path().join("wolf.toml");
        let mut text = String::new();
        if let Some(p) = max_pending {
            text.push_str(&format!("max_pending = {p}\n"));
        }
        std::fs::write(&conf, text)?;
        let mut cmd = Command::new(&wolf);
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--config")
            .arg(&conf)
            // Prepared artifacts (the C++ precompiled header) outlive one run.
            .env("WOLF_CACHE_DIR", std::env::temp_dir().join("wolf-loadgen-cache"))
            .env("WOLF_LOG", std::env::var("WOLF_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null());
        if let Some(w) = workers {
            cmd.arg("--workers").arg(w.to_string());
        }
        let child = cmd.spawn().with_context(|| format!("start {}", wolf.display()))?;
        Ok(Target::Embedded { child, _dir: dir, url })
    }

    /// Boot the distributed testbed.
    pub fn testbed(
        apis: usize,
        managers: usize,
        workers: Option<usize>,
        max_pending: Option<u64>,
    ) -> anyhow::Result<Self> {
        wolf_binary()?;
        let dir = tempfile::tempdir()?;
        let mut env = Vec::new();
        let w = workers.map(|w| w.to_string());
        if let Some(w) = &w {
            env.push(("WOLF_WORKERS", w.as_str()));
        }
        let p = max_pending.map(|p| p.to_string());
        if let Some(p) = &p {
            env.push(("WOLF_MAX_PENDING", p.as_str()));
        }
        let stack = Stack::up_with(dir.path(), apis.max(1), managers.max(1), &env)?;
        Ok(Target::Testbed {
            stack: Box::new(stack),
            _dir: dir,
        })
    }

    /// The API base URL the load goes to (the first API of a testbed).
    pub fn url(&self) -> String {
        match self {
            Target::Embedded { url, .. } => url.clone(),
            Target::Testbed { stack, .. } => stack.apis[0].1.clone(),
            Target::Remote(u) => u.trim_end_matches('/').to_string(),
        }
    }

    /// `embedded`, `testbed` or `target`: names the results file.
    pub fn mode(&self) -> &'static str {
        match self {
            Target::Embedded { .. } => "embedded",
            Target::Testbed { .. } => "testbed",
            Target::Remote(_) => "target",
        }
    }

    /// Wait until `/readyz` answers 200.
    pub async fn ready(&mut self, client: &reqwest::Client, within: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + within;
        let url = format!("{}/readyz", self.url());
        loop {
            if let Target::Embedded { child, .. } = self
                && let Some(st) = child.try_wait()?
            {
                anyhow::bail!("wolf serve exited: {st} (it needs root for its sandboxes)");
            }
            if let Ok(r) = client.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            anyhow::ensure!(Instant::now() < deadline, "{url} not ready within {within:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
