//! PostgreSQL on a free port, run as the `postgres` user (it refuses root), in its own process
//! group so a kill takes every backend with it.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::port::{free_port, wait_tcp};

/// A running (or stopped) PostgreSQL cluster.
#[derive(Debug)]
pub struct Postgres {
    child: Option<Child>,
    port: u16,
    data: PathBuf,
    bin: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

fn bin_dir() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("WOLF_PG_BIN") {
        return Ok(PathBuf::from(p));
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<PathBuf> = std::fs::read_dir(root)
        .context("PostgreSQL is not installed (apt-get install postgresql)")?
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("postgres").is_file())
        .collect();
    versions.sort();
    versions
        .pop()
        .context("no PostgreSQL server binaries under /usr/lib/postgresql")
}

/// Run `bin` as the postgres user when we are root (PostgreSQL refuses to run as root).
fn as_postgres(bin: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(bin);
    c.args(args);
    if nix::unistd::geteuid().is_root()
        && let Ok(Some(u)) = nix::unistd::User::from_name("postgres")
    {
        c.uid(u.uid.as_raw()).gid(u.gid.as_raw());
    }
    c
}

impl Postgres {
    /// initdb a fresh cluster in a temporary directory and start it.
    pub fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("wolf-pg-").tempdir()?;
        let data = dir.path().join("data");
        let mut pg = Postgres {
            child: None,
            port: free_port(),
            data,
            bin: bin_dir()?,
            _dir: None,
        };
        if nix::unistd::geteuid().is_root() {
            let st = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()?;
            anyhow::ensure!(st.success(), "chown the cluster directory to postgres");
        }
        let data_s = pg.data.display().to_string();
        let out = as_postgres(
            &pg.bin.join("initdb"),
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )
        .output()
        .context("run initdb")?;
        anyhow::ensure!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg._dir = Some(dir);
        pg.restart()?;
        Ok(pg)
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The postmaster's pid, if running (our direct child).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL the postmaster and every backend at once, as a crash would. Backends call
    /// setsid(), so they are not in the postmaster's process group: they are found by parent.
    /// Returns once all of them are gone (a surviving backend could still write WAL while the
    /// next postmaster recovers).
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let postmaster = c.id() as i32;
            let children = children_of(postmaster);
            let _ = killpg(Pid::from_raw(postmaster), Signal::SIGKILL);
            for pid in &children {
                let _ = nix::sys::signal::kill(Pid::from_raw(*pid), Signal::SIGKILL);
            }
            let _ = c.wait();
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while children.iter().any(|p| Path::new(&format!("/proc/{p}")).exists())
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    /// Start again on the same port and data; returns once it accepts connections.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill9();
        let port = self.port.to_string();
        let data_s = self.data.display().to_string();
        // fsync off is safe against process kills (the page cache survives); synchronous_commit
        // stays on, so an acknowledged commit survives a kill -9 (see TESTBED.md).
        let child = as_postgres(
            &self.bin.join("postgres"),
            &[
                "-D",
                &data_s,
                "-p",
                &port,
                "-k",
                &data_s,
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "full_page_writes=off",
            ],
        )
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("start postgres")?;
        self.child = Some(child);
        wait_tcp(self.port, Duration::from_secs(30))?;
        // Accepting TCP is not accepting queries (recovery after a kill): wait for pg_isready.
        for _ in 0..300 {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!("postgres did not become ready")
    }
}

/// Pids whose parent is `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| s.rsplit(')').next()?.split_whitespace().nth(1)?.parse::<i32>().ok())
                == Some(parent)
        })
        .collect()
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.kill9();
    }
}
