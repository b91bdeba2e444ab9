//! The whole distributed mode on one machine: nats-server, PostgreSQL, the S3 server, N
//! `wolf api` and M `wolf manager` processes, each on free loopback ports, each killable.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::port::{free_port, wait_tcp};
use crate::{Nats, Postgres, S3};

/// A running stack.
#[derive(Debug)]
pub struct Stack {
    /// NATS JetStream.
    pub nats: Nats,
    /// PostgreSQL.
    pub postgres: Postgres,
    /// The S3 server.
    pub s3: S3,
    /// `wolf api` processes and their base URLs.
    pub apis: Vec<(Child, String)>,
    /// `wolf manager` processes.
    pub managers: Vec<Child>,
    /// Each manager's /metrics base URL, in start order.
    pub manager_urls: Vec<String>,
    wolf: PathBuf,
    dir: PathBuf,
    env: Vec<(String, String)>,
}

/// The `wolf` binary: `$WOLF_BIN`, else next to this executable or one directory up.
pub fn wolf_binary() -> anyhow::Result<PathBuf> {
    crate::workspace_binary("WOLF_BIN", "wolf")
}

/// Where [`locate_wolf_binary`] found the `wolf` binary, for the reader of a benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WolfOrigin {
    /// `$WOLF_BIN`, taken as is.
    Env,
    /// Next to this executable, taken without checking its age (`always` was false).
    Found,
    /// Next to this executable and newer than every source of the workspace: no cargo run.
    Current,
    /// Built by cargo just now, for this executable's profile.
    Built,
}

impl std::fmt::Display for WolfOrigin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WolfOrigin::Env => "from $WOLF_BIN",
            WolfOrigin::Found => "found next to this executable",
            WolfOrigin::Current => "the workspace build's, newer than every source",
            WolfOrigin::Built => "built by cargo just now",
        })
    }
}

/// The `wolf` binary, built first from this checkout when it is missing (or, with `always`, in
/// any case: cargo does nothing when it is current) for this executable's profile. `$WOLF_BIN`
/// is taken as is.
pub fn build_wolf_binary(always: bool) -> anyhow::Result<PathBuf> {
    locate_wolf_binary(always).map(|(bin, _)| bin)
}

/// [`build_wolf_binary`], saying where the binary came from.
pub fn locate_wolf_binary(always: bool) -> anyhow::Result<(PathBuf, WolfOrigin)> {
    if std::env::var_os("WOLF_BIN").is_some() {
        return Ok((wolf_binary()?, WolfOrigin::Env));
    }
    if !always && let Ok(bin) = wolf_binary() {
        return Ok((bin, WolfOrigin::Found));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Current already (newer than every source of the workspace): no cargo at all. Cargo would
    // agree, but `cargo build -p wolf` unifies features for `wolf` alone, so after a build of
    // another package (`cargo run -p loadgen`) it recompiles shared crates for minutes.
    if let Ok(bin) = wolf_binary()
        && let Ok(built) = std::fs::metadata(&bin).and_then(|m| m.modified())
        && newest_source(&root).is_some_and(|src| src <= built)
    {
        return Ok((bin, WolfOrigin::Current));
    }
    if root.join("Cargo.toml").is_file() {
        let profile = if cfg!(debug_assertions) { "dev" } else { "release" };
        let st = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--quiet", "--profile", profile, "-p", "wolf"])
            .current_dir(&root)
            .status()
            .context("run cargo to build wolf")?;
        anyhow::ensure!(st.success(), "cargo build -p wolf failed");
    }
    Ok((wolf_binary()?, WolfOrigin::Built))
}

/// The newest modification time of the workspace's sources (Rust files, manifests, the lock
/// file, the registry and policy files the build embeds), `None` when none is found.
fn newest_source(root: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut stack = vec![root.join("system"), root.join("Cargo.lock"), root.join("Cargo.toml")];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            if let Ok(rd) = std::fs::read_dir(&p) {
                stack.extend(rd.flatten().map(|e| e.path()));
            }
        } else if let Ok(m) = meta.modified() {
            newest = newest.max(Some(m));
        }
    }
    newest
}

impl Stack {
    /// Start everything under `dir` with `apis` API and `managers` manager processes.
    pub fn up(dir: &Path, apis: usize, managers: usize) -> anyhow::Result<Self> {
        Self::up_with(dir, apis, managers, &[])
    }

    /// Like [`Stack::up`], with extra environment for the Wolf processes (`WOLF_MAX_PENDING`,
    /// `WOLF_LEASE_SECS`, `WOLF_WORKERS`...).
    pub fn up_with(dir: &Path, apis: usize, managers: usize, env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let wolf = wolf_binary()?;
        let nats = Nats::start(dir)?;
        let postgres = Postgres::start()?;
        let s3 = S3::start(dir)?;
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut stack = Stack {
            nats,
            postgres,
            s3,
            apis: Vec::new(),
            managers: Vec::new(),
            manager_urls: Vec::new(),
            wolf,
            dir: dir.to_path_buf(),
            env,
        };
        let out = stack.wolf_cmd().args(["migrate"]).output().context("wolf migrate")?;
        anyhow::ensure!(
            out.status.success(),
            "wolf migrate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for _ in 0..apis {
            stack.start_api()?;
        }
        for i in 0..managers {
            stack.start_manager(i)?;
        }
        Ok(stack)
    }

    /// Set an environment variable for the Wolf processes started from now on (it wins over
    /// the stack's own: point `WOLF_DATABASE_URL` at a proxy, say).
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.to_string()));
    }

    /// A `wolf` command with the services' environment.
    pub fn wolf_cmd(&self) -> Command {
        let mut c = Command::new(&self.wolf);
        c.env("WOLF_NATS_URL", self.nats.url())
            .env("WOLF_DATABASE_URL", self.postgres.url())
            .env("WOLF_S3_ENDPOINT", self.s3.endpoint())
            .env("WOLF_S3_BUCKET", &self.s3.bucket)
            .env("WOLF_S3_REGION", "us-east-1")
            .env("AWS_ACCESS_KEY_ID", &self.s3.access_key_id)
            .env("AWS_SECRET_ACCESS_KEY", &self.s3.secret_access_key)
            .env("WOLF_LOG", std::env::var("WOLF_LOG").unwrap_or_else(|_| "warn".into()));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    fn spawn_api(&self, port: u16) -> anyhow::Result<Child> {
        let child = self
            .wolf_cmd()
            .args(["api", "--listen", &format!("127.0.0.1:{port}")])
            .env("WOLF_CACHE_DIR", self.dir.join("api-cache"))
            .stdout(Stdio::null())
            .spawn()
            .context("start wolf api")?;
        wait_tcp(port, Duration::from_secs(30))?;
        Ok(child)
    }

    fn spawn_manager(&self, i: usize, port: u16) -> anyhow::Result<Child> {
        let child = self
            .wolf_cmd()
            .args(["manager", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(self.dir.join(format!("manager-{i}")))
            .env("WOLF_CACHE_DIR", self.dir.join("cache"))
            .stdout(Stdio::null())
            .spawn()
            .context("start wolf manager")?;
        wait_tcp(port, Duration::from_secs(30))?;
        Ok(child)
    }

    /// Start one more `wolf api`; returns its base URL once it accepts connections.
    pub fn start_api(&mut self) -> anyhow::Result<String> {
        let port = free_port();
        let child = self.spawn_api(port)?;
        let url = format!("http://127.0.0.1:{port}");
        self.apis.push((child, url.clone()));
        Ok(url)
    }

    /// Start manager number `i` (its data dir is `<dir>/manager-<i>`).
    pub fn start_manager(&mut self, i: usize) -> anyhow::Result<()> {
        let port = free_port();
        let child = self.spawn_manager(i, port)?;
        self.managers.push(child);
        self.manager_urls.push(format!("http://127.0.0.1:{port}"));
        Ok(())
    }

    /// SIGKILL API `i`, as a crash would; it keeps its place and address.
    pub fn kill_api(&mut self, i: usize) {
        if let Some((c, _)) = self.apis.get_mut(i) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start API `i` again on its address.
    pub fn restart_api(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill_api(i);
        let port: u16 = self.apis[i]
            .1
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("api port")?;
        self.apis[i].0 = self.spawn_api(port)?;
        Ok(())
    }

    /// SIGKILL manager `i`, as a crash would; it keeps its place.
    pub fn kill_manager(&mut self, i: usize) {
        if let Some(c) = self.managers.get_mut(i) {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start manager `i` again (same data dir and metrics address).
    pub fn restart_manager(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill_manager(i);
        let port: u16 = self.manager_urls[i]
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .context("manager port")?;
        self.managers[i] = self.spawn_manager(i, port)?;
        Ok(())
    }

    /// The testbed's JSON line (interface relied on by outside checks).
    pub fn json(&self) -> String {
        let apis: Vec<String> = self.apis.iter().map(|(_, u)| format!("\"{u}\"")).collect();
        let api_pids: Vec<String> = self.apis.iter().map(|(c, _)| c.id().to_string()).collect();
        let manager_pids: Vec<String> = self.managers.iter().map(|c| c.id().to_string()).collect();
        format!(
            "{{\"api\": [{}], \"nats\": \"{}\", \"database\": \"{}\", \"s3\": {{\"endpoint\": \"{}\", \"bucket\": \"{}\", \
             \"accessKeyId\": \"{}\", \"secretAccessKey\": \"{}\"}}, \"pids\": {{\"api\": [{}], \"manager\": [{}], \"nats\": {}, \
             \"postgres\": {}, \"s3\": {}}}}}",
            apis.join(", "),
            self.nats.url(),
            self.postgres.url(),
            self.s3.endpoint(),
            self.s3.bucket,
            self.s3.access_key_id,
            self.s3.secret_access_key,
            api_pids.join(", "),
            manager_pids.join(", "),
            self.nats.pid().unwrap_or(0),
            self.postgres.pid().unwrap_or(0),
            self.s3.pid().unwrap_or(0),
        )
    }

    /// Stop the Wolf processes gracefully (SIGTERM, then SIGKILL after `grace`); the servers
    /// stop when the stack is dropped.
    pub fn stop_wolf(&mut self, grace: Duration) {
        let mut children: Vec<Child> = self
            .apis
            .drain(..)
            .map(|(c, _)| c)
            .chain(self.managers.drain(..))
            .collect();
        for c in &children {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(c.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let deadline = Instant::now() + grace;
        for c in &mut children {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.stop_wolf(Duration::from_secs(5));
    }
}
