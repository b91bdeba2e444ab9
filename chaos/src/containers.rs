//! A stack of containers (`testbed up --containers`, or the scenarios' containers provider),
//! acted on through the Docker engine: `docker kill` and `docker start` for crashes, `docker
//! pause` for a frozen server, and disconnecting a container from one dependency's network
//! for a real partition. The containers' processes are host processes too, so the faults
//! that act on pids (a worker, a sandbox template) find them in /proc as on the process stack.

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::Value;
use wolf_testkit::containers::bollard::Docker;
use wolf_testkit::containers::bollard::models::{NetworkConnectRequest, NetworkDisconnectRequest};
use wolf_testkit::containers::bollard::query_parameters::KillContainerOptions;
use wolf_testkit::containers::http_get;

use crate::{Cluster, Fault, Role, Server};

/// How a started container is known to be back.
#[derive(Debug, Clone, Copy)]
enum Probe {
    /// `GET path` answers 200 on this host port (Wolf's /readyz, NATS's monitor /healthz).
    Ready(u16, &'static str),
    /// Any HTTP answer on this host port (the S3 server refuses an unsigned request).
    Http(u16),
    /// The engine says it runs (PostgreSQL: no HTTP; Wolf reconnects on its own).
    Running,
}

#[derive(Debug, Clone)]
struct Ctr {
    id: String,
    name: String,
    probe: Probe,
}

impl Ctr {
    fn of(v: &Value, port_key: &str, probe: fn(u16) -> Probe) -> anyhow::Result<Self> {
        Ok(Self {
            id: v["id"].as_str().context("container id")?.to_string(),
            name: v["name"].as_str().unwrap_or_default().to_string(),
            probe: v[port_key]
                .as_str()
                .and_then(crate::port_of)
                .map(probe)
                .unwrap_or(Probe::Running),
        })
    }
}

/// The containers of a stack, from the testbed's JSON line (its `containers` and `networks`).
pub struct ContainerCluster {
    rt: tokio::runtime::Runtime,
    docker: Docker,
    apis: Vec<Ctr>,
    managers: Vec<Ctr>,
    nats: Vec<Ctr>,
    postgres: Ctr,
    s3: Ctr,
    /// Network of each dependency.
    nets: [(Server, String); 3],
}

impl std::fmt::Debug for ContainerCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerCluster")
            .field("apis", &self.apis)
            .field("managers", &self.managers)
            .field("nats", &self.nats)
            .finish_non_exhaustive()
    }
}

/// How long a started container has to answer.
const BACK: Duration = Duration::from_secs(90);

impl ContainerCluster {
    /// From the JSON line; `None` when it describes processes, not containers.
    pub fn from_testbed(v: &Value) -> anyhow::Result<Option<Self>> {
        let c = &v["containers"];
        if !c.is_object() {
            return Ok(None);
        }
        let list = |k: &str, port_key: &str, probe: fn(u16) -> Probe| -> anyhow::Result<Vec<Ctr>> {
            c[k].as_array()
                .with_context(|| format!("containers.{k}"))?
                .iter()
                .map(|x| Ctr::of(x, port_key, probe))
                .collect()
        };
        let ready = |p| Probe::Ready(p, "/readyz");
        let net = |k: &str| v["networks"][k].as_str().unwrap_or_default().to_string();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let docker = Docker::connect_with_unix_defaults().context("connect to the Docker engine")?;
        Ok(Some(Self {
            rt,
            docker,
            apis: list("api", "url", ready)?,
            managers: list("manager", "url", ready)?,
            nats: list("nats", "monitor", |p| Probe::Ready(p, "/healthz"))?,
            postgres: Ctr::of(&c["postgres"], "none", |_| Probe::Running)?,
            s3: Ctr::of(&c["s3"], "url", Probe::Http)?,
            nets: [
                (Server::Nats, net("nats")),
                (Server::Postgres, net("postgres")),
                (Server::S3, net("s3")),
            ],
        }))
    }

    fn pid(&self, c: &Ctr) -> i32 {
        self.rt
            .block_on(self.docker.inspect_container(&c.id, None))
            .ok()
            .and_then(|i| i.state?.pid)
            .unwrap_or(0) as i32
    }

    fn kill(&self, c: &Ctr) -> anyhow::Result<()> {
        self.rt.block_on(async {
            self.docker
                .kill_container(
                    &c.id,
                    Some(KillContainerOptions {
                        signal: "SIGKILL".into(),
                    }),
                )
                .await
                .with_context(|| format!("docker kill {}", c.name))?;
            // Stopped when the engine says so (its processes and their namespaces are gone).
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.running(c).await && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(())
        })
    }

    async fn running(&self, c: &Ctr) -> bool {
        self.docker
            .inspect_container(&c.id, None)
            .await
            .ok()
            .and_then(|i| i.state?.running)
            .unwrap_or(false)
    }

    /// `docker start` each, then wait until all are back (their [`Probe`]s). All start before
    /// any is waited for: one node of a NATS cluster whose peers are all down is never healthy
    /// on its own (JetStream has no quorum, no meta leader), so waiting for it before starting
    /// the next would wait forever.
    fn start(&self, cs: &[&Ctr]) -> anyhow::Result<()> {
        self.rt.block_on(async {
            for c in cs {
                self.docker
                    .start_container(&c.id, None)
                    .await
                    .with_context(|| format!("docker start {}", c.name))?;
            }
            let deadline = Instant::now() + BACK;
            for c in cs {
                loop {
                    let up = match c.probe {
                        Probe::Ready(port, path) => http_get(port, path).await.is_some_and(|(s, _)| s == 200),
                        Probe::Http(port) => http_get(port, "/").await.is_some(),
                        Probe::Running => self.running(c).await,
                    };
                    if up {
                        break;
                    }
                    anyhow::ensure!(Instant::now() < deadline, "{} is not back after {BACK:?}", c.name);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            Ok(())
        })
    }

    fn servers(&self, s: Server) -> Vec<&Ctr> {
        match s {
            Server::Nats => self.nats.iter().collect(),
            Server::Postgres => vec![&self.postgres],
            Server::S3 => vec![&self.s3],
        }
    }

    /// Index of the NATS node that leads the job stream's replicas (the node whose loss
    /// matters most), as the cluster's monitoring reports it.
    pub fn nats_stream_leader(&self) -> Option<usize> {
        let port = self.nats.iter().find_map(|n| match n.probe {
            Probe::Ready(p, _) => Some(p),
            _ => None,
        })?;
        let (_, body) = self.rt.block_on(http_get(port, "/jsz?streams=true"))?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let leader = v["account_details"]
            .as_array()?
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().cloned().unwrap_or_default())
            .find(|s| s["name"] == wolf_testkit::containers::JOB_STREAM)?["cluster"]["leader"]
            .as_str()?
            .to_string();
        self.nats.iter().position(|n| n.name == leader)
    }
}

impl Cluster for ContainerCluster {
    fn managers(&self) -> Vec<i32> {
        self.managers.iter().map(|c| self.pid(c)).collect()
    }
    fn apis(&self) -> Vec<i32> {
        self.apis.iter().map(|c| self.pid(c)).collect()
    }
    fn server(&self, s: Server) -> Option<i32> {
        self.servers(s).first().map(|c| self.pid(c))
    }
    fn crash_server(&mut self, s: Server) -> anyhow::Result<()> {
        for c in self.servers(s) {
            self.kill(c)?;
        }
        Ok(())
    }
    fn start_server(&mut self, s: Server) -> anyhow::Result<()> {
        self.start(&self.servers(s))
    }
    fn crash_manager(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(self.managers.get(i).context("no such manager")?)
    }
    fn start_manager(&mut self, i: usize) -> anyhow::Result<()> {
        self.start(&[self.managers.get(i).context("no such manager")?])
    }
    fn crash_api(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(self.apis.get(i).context("no such api")?)
    }
    fn start_api(&mut self, i: usize) -> anyhow::Result<()> {
        self.start(&[self.apis.get(i).context("no such api")?])
    }
    fn pause(&mut self, s: Server, on: bool) -> anyhow::Result<String> {
        self.rt.block_on(async {
            for c in self.servers(s) {
                if on {
                    self.docker.pause_container(&c.id).await
                } else {
                    self.docker.unpause_container(&c.id).await
                }
                .with_context(|| format!("docker {}pause {}", if on { "" } else { "un" }, c.name))?;
            }
            Ok(format!(
                "{} {} (docker {}pause)",
                if on { "froze" } else { "thawed" },
                s.name(),
                if on { "" } else { "un" }
            ))
        })
    }
    fn faults(&self) -> Vec<Fault> {
        crate::ALL.iter().chain(&crate::CONTAINER_ONLY).copied().collect()
    }
    fn cut(&mut self, role: Role, i: usize, s: Server, on: bool) -> anyhow::Result<()> {
        let c = match role {
            Role::Api => self.apis.get(i),
            Role::Manager => self.managers.get(i),
        }
        .context("no such container")?;
        let net = &self.nets.iter().find(|(k, _)| *k == s).context("network")?.1;
        self.rt.block_on(async {
            if on {
                self.docker
                    .disconnect_network(
                        net,
                        NetworkDisconnectRequest {
                            container: c.id.clone(),
                            force: Some(true),
                        },
                    )
                    .await
            } else {
                self.docker
                    .connect_network(
                        net,
                        NetworkConnectRequest {
                            container: c.id.clone(),
                            ..Default::default()
                        },
                    )
                    .await
            }
            .with_context(|| format!("{} {} and {net}", if on { "disconnect" } else { "connect" }, c.name))
        })
    }
    fn nats_nodes(&self) -> usize {
        self.nats.len()
    }
    fn crash_nats_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill(self.nats.get(i).context("no such NATS node")?)
    }
    fn start_nats_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.start(&[self.nats.get(i).context("no such NATS node")?])
    }
}
