//! # chaos
//!
//! Fault injectors against a running Wolf stack: the testbed (through its JSON line, see
//! [`ProcCluster`], or [`ContainerCluster`] when it is made of containers) or a stack the
//! caller owns (the testkit's [`wolf_testkit::Stack`]). Each
//! fault injects and heals and is recorded with its time in the [`Log`].
//!
//! | Fault | Inject | Heal |
//! |---|---|---|
//! | `kill-worker` | kill -9 the init of a sandbox running a job | the manager replaces it |
//! | `kill-template` | kill -9 a manager's sandbox template (its warm sandboxes die with it) | the manager starts a new one |
//! | `kill-manager` | kill -9 a manager | start it again |
//! | `kill-api` | kill -9 an API | start it again on its port |
//! | `restart-nats` | kill -9 nats-server | start it on its data |
//! | `restart-postgres` | kill -9 the postmaster and every backend | start it on its data |
//! | `restart-s3` | kill -9 the S3 server | start it on its data |
//! | `pause-nats`, `pause-postgres`, `pause-s3` | SIGSTOP (slow, not dead) | SIGCONT |
//! | `cut-{api,manager}-{nats,postgres,s3}` | containers: off that dependency's network | connect again |
//! | `kill-nats-node` | containers: kill -9 one node of the NATS cluster | start it on its data |
//!
//! The outage lasts `--down` (restart and pause faults). Network faults need a path to act on:
//! [`proxy::Proxy`] is a userspace TCP proxy (this kernel has no netem) put in front of a
//! dependency when the stack starts, which delays or cuts the link; [`fill_disk`] fills the
//! filesystem under a directory (a dedicated one: the scenarios mount a small tmpfs).

mod containers;
pub mod proxy;
pub use wolf_testkit::procs;
mod stack;

use std::str::FromStr;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;

pub use containers::ContainerCluster;
pub use stack::{ProcCluster, port_of};

/// A dependency server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// nats-server.
    Nats,
    /// PostgreSQL.
    Postgres,
    /// The S3 server.
    S3,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Nats => "nats",
            Server::Postgres => "postgres",
            Server::S3 => "s3",
        }
    }
}

/// A fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9 a worker (sandbox init) mid-job.
    KillWorker,
    /// kill -9 a manager's sandbox template (fork server).
    KillTemplate,
    /// kill -9 a manager, then start it again.
    KillManager,
    /// kill -9 an API, then start it again.
    KillApi,
    /// kill -9 a server, then start it again on its data.
    Restart(Server),
    /// SIGSTOP a server, then SIGCONT (containers: `docker pause`, then unpause).
    Pause(Server),
    /// A real partition between an API or a manager and one dependency (containers only:
    /// the container is disconnected from that dependency's network, then connected again).
    Cut(Role, Server),
    /// kill -9 one node of the NATS cluster, then start it again on its data (containers).
    KillNatsNode,
    /// Any of the above, chosen at random each time.
    Random,
}

/// Which Wolf process a partition isolates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A `wolf api`.
    Api,
    /// A `wolf manager`.
    Manager,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Manager => "manager",
        }
    }
}

/// Every fault a random schedule picks from.
pub const ALL: [Fault; 10] = [
    Fault::KillWorker,
    Fault::KillTemplate,
    Fault::KillManager,
    Fault::KillApi,
    Fault::Restart(Server::Nats),
    Fault::Restart(Server::Postgres),
    Fault::Restart(Server::S3),
    Fault::Pause(Server::Nats),
    Fault::Pause(Server::Postgres),
    Fault::Pause(Server::S3),
];

/// The faults only a stack of containers takes (a random schedule there picks from these and
/// [`ALL`]).
pub const CONTAINER_ONLY: [Fault; 7] = [
    Fault::Cut(Role::Api, Server::Nats),
    Fault::Cut(Role::Api, Server::Postgres),
    Fault::Cut(Role::Api, Server::S3),
    Fault::Cut(Role::Manager, Server::Nats),
    Fault::Cut(Role::Manager, Server::Postgres),
    Fault::Cut(Role::Manager, Server::S3),
    Fault::KillNatsNode,
];

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(rest) = s.strip_prefix("cut-") {
            let (role, server) = rest.split_once('-').unwrap_or((rest, ""));
            let role = match role {
                "api" => Role::Api,
                "manager" => Role::Manager,
                _ => return Err(format!("unknown fault {s:?}: cut-{{api,manager}}-{{nats,postgres,s3}}")),
            };
            let server = match server {
                "nats" => Server::Nats,
                "postgres" => Server::Postgres,
                "s3" => Server::S3,
                _ => return Err(format!("unknown fault {s:?}: cut-{{api,manager}}-{{nats,postgres,s3}}")),
            };
            return Ok(Fault::Cut(role, server));
        }
        Ok(match s {
            "kill-nats-node" => Fault::KillNatsNode,
            "kill-worker" => Fault::KillWorker,
            "kill-template" => Fault::KillTemplate,
            "kill-manager" => Fault::KillManager,
            "kill-api" => Fault::KillApi,
            "restart-nats" => Fault::Restart(Server::Nats),
            "restart-postgres" => Fault::Restart(Server::Postgres),
            "restart-s3" => Fault::Restart(Server::S3),
            "pause-nats" => Fault::Pause(Server::Nats),
            "pause-postgres" => Fault::Pause(Server::Postgres),
            "pause-s3" => Fault::Pause(Server::S3),
            "random" => Fault::Random,
            _ => {
                return Err(format!(
                    "unknown fault {s:?}: kill-worker, kill-template, kill-manager, kill-api, restart-nats, restart-postgres, \
                     restart-s3, pause-nats, pause-postgres, pause-s3, random; with containers also \
                     cut-{{api,manager}}-{{nats,postgres,s3}}, kill-nats-node"
                ));
            }
        })
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::KillWorker => write!(f, "kill-worker"),
            Fault::KillTemplate => write!(f, "kill-template"),
            Fault::KillManager => write!(f, "kill-manager"),
            Fault::KillApi => write!(f, "kill-api"),
            Fault::Restart(s) => write!(f, "restart-{}", s.name()),
            Fault::Pause(s) => write!(f, "pause-{}", s.name()),
            Fault::Cut(r, s) => write!(f, "cut-{}-{}", r.name(), s.name()),
            Fault::KillNatsNode => write!(f, "kill-nats-node"),
            Fault::Random => write!(f, "random"),
        }
    }
}

/// What can be done to a stack.
pub trait Cluster {
    /// Manager pids, in order.
    fn managers(&self) -> Vec<i32>;
    /// API pids, in order.
    fn apis(&self) -> Vec<i32>;
    /// A server's main pid.
    fn server(&self, s: Server) -> Option<i32>;
    /// kill -9 a server (PostgreSQL: the postmaster and every backend).
    fn crash_server(&mut self, s: Server) -> anyhow::Result<()>;
    /// Start a crashed server again on its data.
    fn start_server(&mut self, s: Server) -> anyhow::Result<()>;
    /// kill -9 manager `i` (it keeps its place in [`Cluster::managers`]).
    fn crash_manager(&mut self, i: usize) -> anyhow::Result<()>;
    /// Start crashed manager `i` again.
    fn start_manager(&mut self, i: usize) -> anyhow::Result<()>;
    /// kill -9 API `i` (it keeps its place).
    fn crash_api(&mut self, i: usize) -> anyhow::Result<()>;
    /// Start crashed API `i` again on its address.
    fn start_api(&mut self, i: usize) -> anyhow::Result<()>;
    /// Pids to stop and continue for a pause of `s` (PostgreSQL: every backend too).
    fn pause_set(&self, s: Server) -> Vec<i32> {
        let Some(p) = self.server(s) else { return Vec::new() };
        let mut out = vec![p];
        if s == Server::Postgres {
            out.extend(procs::children(p));
        }
        out
    }
    /// Stop (`on`) or continue server `s`; says what was done.
    fn pause(&mut self, s: Server, on: bool) -> anyhow::Result<String> {
        let set = self.pause_set(s);
        let sig = if on { Signal::SIGSTOP } else { Signal::SIGCONT };
        for p in &set {
            let _ = kill(Pid::from_raw(*p), sig);
        }
        Ok(if on {
            format!("stopped {} ({} processes)", s.name(), set.len())
        } else {
            format!("continued {}", s.name())
        })
    }
    /// The faults a random schedule picks from on this stack.
    fn faults(&self) -> Vec<Fault> {
        ALL.to_vec()
    }
    /// Cut (`on`) or restore the link between API or manager `i` and server `s`.
    fn cut(&mut self, _role: Role, _i: usize, _s: Server, _on: bool) -> anyhow::Result<()> {
        anyhow::bail!("a network partition needs a stack of containers (testbed up --containers)")
    }
    /// Nodes of the NATS cluster.
    fn nats_nodes(&self) -> usize {
        1
    }
    /// kill -9 NATS node `i`.
    fn crash_nats_node(&mut self, _i: usize) -> anyhow::Result<()> {
        anyhow::bail!("losing one node needs a NATS cluster of containers (testbed up --containers)")
    }
    /// Start NATS node `i` again on its data.
    fn start_nats_node(&mut self, _i: usize) -> anyhow::Result<()> {
        anyhow::bail!("no NATS cluster here")
    }
}

/// One recorded action.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Milliseconds since the log started.
    pub at_ms: u64,
    /// The fault.
    pub fault: String,
    /// `inject`, `heal` or `skip`.
    pub action: &'static str,
    /// What exactly.
    pub detail: String,
}

/// What was done and when.
#[derive(Debug)]
pub struct Log {
    started: Instant,
    /// Events, oldest first.
    pub events: Vec<Event>,
    /// Print each event as a JSON line on stdout as it happens.
    pub echo: bool,
}

impl Log {
    /// An empty log starting now.
    pub fn new(echo: bool) -> Self {
        Self {
            started: Instant::now(),
            events: Vec::new(),
            echo,
        }
    }

    fn push(&mut self, fault: Fault, action: &'static str, detail: String) {
        let e = Event {
            at_ms: self.started.elapsed().as_millis() as u64,
            fault: fault.to_string(),
            action,
            detail,
        };
        if self.echo {
            println!("{}", serde_json::to_string(&e).unwrap_or_default());
        }
        self.events.push(e);
    }

    /// Injections done.
    pub fn injected(&self) -> usize {
        self.events.iter().filter(|e| e.action == "inject").count()
    }
}

/// Small deterministic generator (xorshift64*), seeded by the caller and printed, so a random
/// schedule can be replayed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator (0 is replaced).
    pub fn new(seed: u64) -> Self {
        Self(seed.max(1))
    }
    /// Next value below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1) as u64) as usize
    }
}

/// Sandbox inits of `managers` currently running a job: manager -> template -> init, busy when
/// a descendant of the init runs another executable (the program or a compiler).
pub fn busy_workers(managers: &[i32]) -> Vec<i32> {
    let mut out = Vec::new();
    for &m in managers {
        let wolf = procs::exe(m);
        for template in procs::children(m) {
            for init in procs::children(template) {
                if procs::descendants(init).iter().any(|d| procs::exe(*d) != wolf) {
                    out.push(init);
                }
            }
        }
    }
    out
}

/// kill -9 the sandbox template of the manager `pid`; `None` when it has none right now.
pub fn kill_template(pid: i32) -> anyhow::Result<Option<String>> {
    let templates = procs::templates_of(pid);
    for t in &templates {
        kill(Pid::from_raw(*t), Signal::SIGKILL)?;
    }
    Ok((!templates.is_empty()).then(|| format!("killed the sandbox template {templates:?} of manager pid {pid}")))
}

/// What an injection left to heal: the fault and which manager or API it hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Injected {
    /// The fault (resolved when it was `random`).
    pub fault: Fault,
    /// Manager or API index.
    pub index: usize,
}

/// Inject `fault` once; returns what is left to heal (`None`: nothing, or it could not run).
pub fn inject(cluster: &mut dyn Cluster, fault: Fault, rng: &mut Rng, log: &mut Log) -> Option<Injected> {
    inject_on(cluster, fault, rng, None, log)
}

/// Inject `fault` once on manager, API or NATS node `index` (not a random one).
pub fn inject_at(cluster: &mut dyn Cluster, fault: Fault, index: usize, log: &mut Log) -> Option<Injected> {
    inject_on(cluster, fault, &mut Rng::new(1), Some(index), log)
}

fn inject_on(
    cluster: &mut dyn Cluster,
    fault: Fault,
    rng: &mut Rng,
    at: Option<usize>,
    log: &mut Log,
) -> Option<Injected> {
    let fault = match fault {
        Fault::Random => {
            let all = cluster.faults();
            all[rng.below(all.len())]
        }
        f => f,
    };
    let mut pick = |n: usize| at.filter(|i| *i < n).unwrap_or_else(|| rng.below(n));
    let mut index = 0;
    let result: anyhow::Result<Option<String>> = (|| {
        Ok(match fault {
            Fault::KillWorker => {
                let busy = busy_workers(&cluster.managers());
                if busy.is_empty() {
                    None
                } else {
                    let pid = busy[pick(busy.len())];
                    kill(Pid::from_raw(pid), Signal::SIGKILL)?;
                    Some(format!("killed worker {pid}"))
                }
            }
            Fault::KillTemplate => {
                let n = cluster.managers().len();
                if n == 0 {
                    None
                } else {
                    index = pick(n);
                    kill_template(cluster.managers()[index])?
                }
            }
            Fault::KillManager => {
                let n = cluster.managers().len();
                if n == 0 {
                    None
                } else {
                    let i = pick(n);
                    index = i;
                    let pid = cluster.managers()[i];
                    cluster.crash_manager(i)?;
                    Some(format!("killed manager {i} (pid {pid})"))
                }
            }
            Fault::KillApi => {
                let n = cluster.apis().len();
                if n == 0 {
                    None
                } else {
                    let i = pick(n);
                    index = i;
                    let pid = cluster.apis()[i];
                    cluster.crash_api(i)?;
                    Some(format!("killed api {i} (pid {pid})"))
                }
            }
            Fault::Restart(s) => {
                let pid = cluster.server(s).unwrap_or(0);
                cluster.crash_server(s)?;
                Some(format!("killed {} (pid {pid})", s.name()))
            }
            Fault::Pause(s) => Some(cluster.pause(s, true)?),
            Fault::Cut(role, s) => {
                let n = match role {
                    Role::Api => cluster.apis().len(),
                    Role::Manager => cluster.managers().len(),
                };
                if n == 0 {
                    None
                } else {
                    index = pick(n);
                    cluster.cut(role, index, s, true)?;
                    Some(format!("cut {} {index} off from {}", role.name(), s.name()))
                }
            }
            Fault::KillNatsNode => {
                index = pick(cluster.nats_nodes());
                cluster.crash_nats_node(index)?;
                Some(format!("killed NATS node {index}"))
            }
            Fault::Random => unreachable!("resolved above"),
        })
    })();
    match result {
        Ok(Some(detail)) => {
            log.push(fault, "inject", detail);
            Some(Injected { fault, index })
        }
        Ok(None) => {
            log.push(fault, "skip", "nothing to hit right now".into());
            None
        }
        Err(e) => {
            log.push(fault, "skip", format!("failed: {e:#}"));
            None
        }
    }
}

/// Undo what `inject` did (restart, continue).
pub fn heal(cluster: &mut dyn Cluster, what: Injected, log: &mut Log) {
    let Injected { fault, index } = what;
    let r: anyhow::Result<Option<String>> = (|| {
        Ok(match fault {
            Fault::KillWorker | Fault::KillTemplate | Fault::Random => None,
            Fault::KillManager => {
                cluster.start_manager(index)?;
                Some(format!("started manager {index} (pid {})", cluster.managers()[index]))
            }
            Fault::KillApi => {
                cluster.start_api(index)?;
                Some(format!("started api {index} (pid {})", cluster.apis()[index]))
            }
            Fault::Restart(s) => {
                cluster.start_server(s)?;
                Some(format!("started {} (pid {})", s.name(), cluster.server(s).unwrap_or(0)))
            }
            Fault::Pause(s) => Some(cluster.pause(s, false)?),
            Fault::Cut(role, s) => {
                cluster.cut(role, index, s, false)?;
                Some(format!("{} {index} reaches {} again", role.name(), s.name()))
            }
            Fault::KillNatsNode => {
                cluster.start_nats_node(index)?;
                Some(format!("started NATS node {index}"))
            }
        })
    })();
    match r {
        Ok(Some(detail)) => log.push(fault, "heal", detail),
        Ok(None) => {}
        Err(e) => log.push(fault, "heal", format!("FAILED: {e:#}")),
    }
}

/// When and what to inject.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// The fault.
    pub fault: Fault,
    /// Time between injections.
    pub every: Duration,
    /// How long to keep injecting.
    pub total: Duration,
    /// How long a restarted or paused dependency stays down.
    pub down: Duration,
}

/// Inject `fault` every `every` for `total`, healing each after `down`; the last fault is
/// healed before returning. `stop` ends it early.
pub fn run_schedule(cluster: &mut dyn Cluster, s: Schedule, rng: &mut Rng, log: &mut Log, stop: &dyn Fn() -> bool) {
    let Schedule {
        fault,
        every,
        total,
        down,
    } = s;
    let start = Instant::now();
    let mut next = start;
    while start.elapsed() < total && !stop() {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        next += every;
        if let Some(done) = inject(cluster, fault, rng, log) {
            if !matches!(done.fault, Fault::KillWorker | Fault::KillTemplate) {
                let until = Instant::now() + down;
                while Instant::now() < until && !stop() {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            heal(cluster, done, log);
        }
    }
}

/// Fill the filesystem holding `dir` with `dir/chaos-fill` until it is full (ENOSPC) or
/// `max` bytes are written; returns the file (delete it to heal) and the bytes written.
pub fn fill_disk(dir: &std::path::Path, max: u64) -> std::io::Result<(std::path::PathBuf, u64)> {
    use std::io::Write;
    let path = dir.join("chaos-fill");
    let mut f = std::fs::File::create(&path)?;
    let chunk = vec![0xA5u8; 1 << 20];
    let mut written = 0u64;
    while written < max {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => return Err(e),
        }
    }
    let _ = f.flush();
    Ok((path, written))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_parse_and_print_the_same() {
        for f in ALL.iter().chain(&CONTAINER_ONLY).chain([&Fault::Random]) {
            assert_eq!(f.to_string().parse::<Fault>().unwrap(), *f);
        }
        assert!("meteor".parse::<Fault>().unwrap_err().contains("kill-worker"));
    }

    #[test]
    fn the_random_choice_is_replayable_and_covers_every_fault() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<usize> = (0..200).map(|_| a.below(ALL.len())).collect();
        let ys: Vec<usize> = (0..200).map(|_| b.below(ALL.len())).collect();
        assert_eq!(xs, ys);
        for i in 0..ALL.len() {
            assert!(xs.contains(&i));
        }
    }

    #[test]
    fn a_pause_stops_and_a_heal_continues_a_real_process() {
        struct One(i32);
        impl Cluster for One {
            fn managers(&self) -> Vec<i32> {
                Vec::new()
            }
            fn apis(&self) -> Vec<i32> {
                Vec::new()
            }
            fn server(&self, _: Server) -> Option<i32> {
                Some(self.0)
            }
            fn crash_server(&mut self, _: Server) -> anyhow::Result<()> {
                Ok(())
            }
            fn start_server(&mut self, _: Server) -> anyhow::Result<()> {
                Ok(())
            }
            fn crash_manager(&mut self, _: usize) -> anyhow::Result<()> {
                Ok(())
            }
            fn start_manager(&mut self, _: usize) -> anyhow::Result<()> {
                Ok(())
            }
            fn crash_api(&mut self, _: usize) -> anyhow::Result<()> {
                Ok(())
            }
            fn start_api(&mut self, _: usize) -> anyhow::Result<()> {
                Ok(())
            }
        }
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let state = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .unwrap()
                .rsplit(')')
                .next()
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_string()
        };
        let mut c = One(pid);
        let mut log = Log::new(false);
        let f = inject(&mut c, Fault::Pause(Server::Nats), &mut Rng::new(1), &mut log).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(state(), "T", "stopped");
        heal(&mut c, f, &mut log);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(state(), "S", "running (sleeping) again");
        assert_eq!(log.events.len(), 2);
        // Losing one node of a NATS cluster needs containers: on processes it is skipped,
        // saying so.
        assert!(inject(&mut c, Fault::KillNatsNode, &mut Rng::new(1), &mut log).is_none());
        let skip = log.events.last().unwrap();
        assert_eq!(skip.action, "skip");
        assert!(skip.detail.contains("--containers"), "{}", skip.detail);
        let _ = child.kill();
        let _ = child.wait();
    }
}
