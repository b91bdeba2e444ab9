//! The two kinds of stack chaos acts on: one described by the testbed's JSON line (processes
//! it did not start: restarted from what /proc says about them), and the testkit's `Stack`.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde_json::Value;
use wolf_testkit::Stack;

use crate::procs::{self, Snapshot};
use crate::{Cluster, Server};

#[derive(Debug)]
struct Proc {
    pid: i32,
    snap: Snapshot,
    /// Where it listens (to know it is back).
    port: Option<u16>,
}

impl Proc {
    /// The process `pid`; when it is gone (an earlier chaos run restarted it), whoever listens
    /// on its port now.
    fn of(pid: i32, port: Option<u16>) -> anyhow::Result<Self> {
        let pid = if pid > 0 && procs::alive(pid) {
            pid
        } else {
            port.and_then(procs::listening_on)
                .with_context(|| format!("process {pid} is not running and nothing listens on its port"))?
        };
        Ok(Self {
            pid,
            snap: procs::snapshot(pid).with_context(|| format!("read /proc/{pid}"))?,
            port,
        })
    }

    fn crash(&self, with_children: bool) {
        let children = if with_children {
            procs::children(self.pid)
        } else {
            Vec::new()
        };
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        for c in &children {
            let _ = kill(Pid::from_raw(*c), Signal::SIGKILL);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while (procs::alive(self.pid) || children.iter().any(|c| procs::alive(*c))) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn start(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(!procs::alive(self.pid), "process {} is still running", self.pid);
        let s = &self.snap;
        let child = Command::new(&s.argv[0])
            .args(&s.argv[1..])
            .env_clear()
            .envs(s.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&s.cwd)
            .uid(s.uid)
            .gid(s.gid)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {}", s.argv.join(" ")))?;
        self.pid = child.id() as i32;
        // Not waited for: it outlives this process, as the original would have.
        std::mem::forget(child);
        if let Some(port) = self.port {
            wolf_testkit::port::wait_tcp(port, Duration::from_secs(60))?;
        }
        Ok(())
    }
}

/// The port of `http://host:port/...`, `nats://host:port`, `host:port`.
pub fn port_of(url: &str) -> Option<u16> {
    url.rsplit(':')
        .next()?
        .trim_end_matches('/')
        .split('/')
        .next()?
        .parse()
        .ok()
}

/// A stack described by `testbed up`'s JSON line. Processes restarted here keep running when
/// this process exits; `testbed`'s own shutdown does not know them (their pids are in the log).
#[derive(Debug)]
pub struct ProcCluster {
    apis: Vec<Proc>,
    managers: Vec<Proc>,
    nats: Proc,
    postgres: Proc,
    s3: Proc,
}

impl ProcCluster {
    /// From the testbed's JSON line.
    pub fn from_testbed(v: &Value) -> anyhow::Result<Self> {
        let pids = &v["pids"];
        let pid = |x: &Value| x.as_i64().unwrap_or(0) as i32;
        let api_urls: Vec<&str> = v["api"]
            .as_array()
            .context("api")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let apis = pids["api"]
            .as_array()
            .context("pids.api")?
            .iter()
            .zip(api_urls)
            .map(|(p, u)| Proc::of(pid(p), port_of(u)))
            .collect::<anyhow::Result<_>>()?;
        let nats_url = v["nats"].as_str().unwrap_or_default().to_string();
        let mut claimed = Vec::new();
        let managers = pids["manager"]
            .as_array()
            .context("pids.manager")?
            .iter()
            .map(|p| {
                let mut p = pid(p);
                if !procs::alive(p) {
                    // Restarted by an earlier run: a `wolf manager` of this stack (same NATS) that is
                    // not a fork of another (its sandboxes' inits share its command line).
                    p = procs::all()
                        .into_iter()
                        .find(|c| {
                            !claimed.contains(c)
                                && procs::snapshot(*c).is_ok_and(|s| {
                                    s.argv.get(1).map(String::as_str) == Some("manager")
                                        && s.env.iter().any(|(k, v)| k == "WOLF_NATS_URL" && *v == nats_url)
                                })
                                && procs::exe(procs::ppid(*c)) != procs::exe(*c)
                        })
                        .unwrap_or(p);
                }
                claimed.push(p);
                let mut proc_ = Proc::of(p, None)?;
                let argv = &proc_.snap.argv;
                proc_.port = argv
                    .iter()
                    .position(|a| a == "--listen")
                    .and_then(|i| argv.get(i + 1))
                    .and_then(|a| port_of(a));
                Ok(proc_)
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(Self {
            apis,
            managers,
            nats: Proc::of(pid(&pids["nats"]), v["nats"].as_str().and_then(port_of))?,
            postgres: Proc::of(
                pid(&pids["postgres"]),
                v["database"].as_str().and_then(|u| {
                    u.rsplit('@')
                        .next()?
                        .split('/')
                        .next()?
                        .rsplit(':')
                        .next()?
                        .parse()
                        .ok()
                }),
            )?,
            s3: Proc::of(pid(&pids["s3"]), v["s3"]["endpoint"].as_str().and_then(port_of))?,
        })
    }

    fn server_mut(&mut self, s: Server) -> &mut Proc {
        match s {
            Server::Nats => &mut self.nats,
            Server::Postgres => &mut self.postgres,
            Server::S3 => &mut self.s3,
        }
    }
}

impl Cluster for ProcCluster {
    fn managers(&self) -> Vec<i32> {
        self.managers.iter().map(|p| p.pid).collect()
    }
    fn apis(&self) -> Vec<i32> {
        self.apis.iter().map(|p| p.pid).collect()
    }
    fn server(&self, s: Server) -> Option<i32> {
        Some(match s {
            Server::Nats => self.nats.pid,
            Server::Postgres => self.postgres.pid,
            Server::S3 => self.s3.pid,
        })
    }
    fn crash_server(&mut self, s: Server) -> anyhow::Result<()> {
        // PostgreSQL backends call setsid(): found by parent, killed with the postmaster.
        let p = self.server_mut(s);
        p.crash(s == Server::Postgres);
        if s == Server::Postgres {
            // The dead postmaster stays a zombie until its parent (testbed) reaps it, and
            // PostgreSQL takes a zombie's pid in its lock files (postmaster.pid in -D, the
            // socket locks in -k) for a live server: those locks are stale, so they go.
            let argv = &p.snap.argv;
            let dir_of = |flag: &str| argv.iter().position(|a| a == flag).and_then(|i| argv.get(i + 1));
            for dir in [dir_of("-D"), dir_of("-k")].into_iter().flatten() {
                for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
                    let name = entry.file_name().to_string_lossy().into_owned();
                    if name != "postmaster.pid" && !(name.starts_with(".s.PGSQL.") && name.ends_with(".lock")) {
                        continue;
                    }
                    let holder: i32 = std::fs::read_to_string(entry.path())
                        .ok()
                        .and_then(|t| t.lines().next()?.trim().parse().ok())
                        .unwrap_or(0);
                    if holder == p.pid && !procs::alive(holder) {
                        let _ = std::fs::remove_file(entry.path());
                    }
                }
            }
        }
        Ok(())
    }
    fn start_server(&mut self, s: Server) -> anyhow::Result<()> {
        self.server_mut(s).start()
    }
    fn crash_manager(&mut self, i: usize) -> anyhow::Result<()> {
        self.managers.get(i).context("no such manager")?.crash(false);
        Ok(())
    }
    fn start_manager(&mut self, i: usize) -> anyhow::Result<()> {
        self.managers.get_mut(i).context("no such manager")?.start()
    }
    fn crash_api(&mut self, i: usize) -> anyhow::Result<()> {
        self.apis.get(i).context("no such api")?.crash(false);
        Ok(())
    }
    fn start_api(&mut self, i: usize) -> anyhow::Result<()> {
        self.apis.get_mut(i).context("no such api")?.start()
    }
}

impl Cluster for Stack {
    fn managers(&self) -> Vec<i32> {
        self.managers.iter().map(|c| c.id() as i32).collect()
    }
    fn apis(&self) -> Vec<i32> {
        self.apis.iter().map(|(c, _)| c.id() as i32).collect()
    }
    fn server(&self, s: Server) -> Option<i32> {
        match s {
            Server::Nats => self.nats.pid(),
            Server::Postgres => self.postgres.pid(),
            Server::S3 => self.s3.pid(),
        }
        .map(|p| p as i32)
    }
    fn crash_server(&mut self, s: Server) -> anyhow::Result<()> {
        match s {
            Server::Nats => self.nats.kill9(),
            Server::Postgres => self.postgres.kill9(),
            Server::S3 => self.s3.kill9(),
        }
        Ok(())
    }
    fn start_server(&mut self, s: Server) -> anyhow::Result<()> {
        match s {
            Server::Nats => self.nats.restart(),
            Server::Postgres => self.postgres.restart(),
            Server::S3 => self.s3.restart(),
        }
    }
    fn crash_manager(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill_manager(i);
        Ok(())
    }
    fn start_manager(&mut self, i: usize) -> anyhow::Result<()> {
        self.restart_manager(i)
    }
    fn crash_api(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill_api(i);
        Ok(())
    }
    fn start_api(&mut self, i: usize) -> anyhow::Result<()> {
        self.restart_api(i)
    }
}
