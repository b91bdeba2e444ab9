//! The distributed mode as containers: a NATS JetStream cluster, PostgreSQL, the S3 server,
//! `wolf migrate`, APIs and managers, each a container started through testcontainers from the
//! local images (`scripts/images.sh`), on private networks of their own.
//!
//! Every dependency has a network of its own (`<run>-nats`, `<run>-postgres`, `<run>-s3`) and a
//! Wolf container joins the network of each dependency it talks to. Disconnecting a container
//! from one network is then a real partition between that container and that dependency, and
//! nothing else: a manager cut off from NATS still reaches PostgreSQL and S3, as on a real
//! network whose link to one service failed. Chaos acts on the containers by id
//! (`chaos::ContainerCluster`); [`ContainerStack::json`] is the testbed's line with the ids.

use std::time::{Duration, Instant};

use anyhow::Context;
use testcontainers::bollard::Docker;
use testcontainers::bollard::models::{NetworkConnectRequest, NetworkCreateRequest};
use testcontainers::core::{ContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::port::free_port;

/// The Docker API client the stack is driven with (for chaos's faults).
pub use testcontainers::bollard;

/// The images (`scripts/images.sh` builds them; `WOLF_IMAGE`, `S3_IMAGE`, `NATS_IMAGE`,
/// `POSTGRES_IMAGE` name others).
#[derive(Debug, Clone)]
pub struct Images {
    /// Wolf (APIs, managers, migrate).
    pub wolf: String,
    /// The S3 server.
    pub s3: String,
    /// nats-server.
    pub nats: String,
    /// PostgreSQL taking the official image's variables.
    pub postgres: String,
}

impl Images {
    /// The local tags, or what the environment names.
    pub fn from_env() -> Self {
        let tag = |var: &str, default: &str| std::env::var(var).unwrap_or_else(|_| default.to_string());
        Self {
            wolf: tag("WOLF_IMAGE", "wolf/wolf:local"),
            s3: tag("S3_IMAGE", "wolf/s3:local"),
            nats: tag("NATS_IMAGE", "wolf/nats:local"),
            postgres: tag("POSTGRES_IMAGE", "wolf/postgres:local"),
        }
    }

    /// The images that are not on this engine (nothing can be pulled here).
    pub async fn missing(&self) -> anyhow::Result<Vec<String>> {
        let docker = Docker::connect_with_unix_defaults()?;
        let mut out = Vec::new();
        for i in [&self.wolf, &self.s3, &self.nats, &self.postgres] {
            if docker.inspect_image(i).await.is_err() {
                out.push(i.clone());
            }
        }
        Ok(out)
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// `wolf api` containers.
    pub apis: usize,
    /// `wolf manager` containers.
    pub managers: usize,
    /// nats-server nodes of the cluster (the queue's streams are replicated on all of them).
    pub nats_nodes: usize,
    /// More environment for the Wolf containers.
    pub env: Vec<(String, String)>,
    /// Wolf's seccomp profile for the managers (deploy/docker/seccomp.json).
    pub seccomp: std::path::PathBuf,
    /// The images.
    pub images: Images,
}

impl Options {
    /// `apis` APIs and `managers` managers on a 3-node cluster, the repository's profile.
    pub fn new(apis: usize, managers: usize) -> Self {
        Self {
            apis,
            managers,
            nats_nodes: 3,
            env: Vec::new(),
            seccomp: std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/docker/seccomp.json"),
            images: Images::from_env(),
        }
    }
}

/// One container: its name on the networks, its id, and the host port of its service.
#[derive(Debug, Clone)]
pub struct Node {
    /// Container name (also its DNS name on the private networks).
    pub name: String,
    /// Container id.
    pub id: String,
    /// The host (127.0.0.1) port its main service is published on.
    pub port: u16,
    /// A second published port (NATS: monitoring).
    pub monitor: Option<u16>,
}

/// The networks, one per dependency, and the edge that clients reach Wolf through.
#[derive(Debug, Clone)]
pub struct Networks {
    /// The APIs' and managers' first network, whose published ports the host reaches: never
    /// cut, so that a partition from a dependency is not also one from the clients.
    pub edge: String,
    /// NATS cluster's (and its clients').
    pub nats: String,
    /// PostgreSQL's.
    pub postgres: String,
    /// The S3 server's.
    pub s3: String,
}

const DB_PASSWORD: &str = "wolf-containers";
const S3_KEY: &str = "wolf";
const S3_SECRET: &str = "wolf-containers-secret";
const LABEL: &str = "dev.wolf.testbed";
/// The job stream's name (wolf-store's `STREAM`; the testkit does not link the store).
pub const JOB_STREAM: &str = "WOLF_JOBS";

/// A running stack of containers; [`ContainerStack::down`] removes it (dropping it does too,
/// through testcontainers, but without the networks).
pub struct ContainerStack {
    /// Prefix of every container and network name.
    pub run: String,
    /// The networks.
    pub networks: Networks,
    /// nats-server nodes.
    pub nats: Vec<Node>,
    /// PostgreSQL.
    pub postgres: Node,
    /// The S3 server.
    pub s3: Node,
    /// `wolf api` containers.
    pub apis: Vec<Node>,
    /// `wolf manager` containers.
    pub managers: Vec<Node>,
    held: Vec<ContainerAsync<GenericImage>>,
    docker: Docker,
}

/// Published ports on the host's loopback only (Docker binds every address by default): the
/// stack is reachable from this machine, not from its network.
fn loopback_only(hc: &mut testcontainers::bollard::models::HostConfig) {
    for bindings in hc.port_bindings.iter_mut().flat_map(|m| m.values_mut()).flatten() {
        for b in bindings.iter_mut() {
            b.host_ip = Some("127.0.0.1".into());
        }
    }
}

fn image(tag: &str) -> GenericImage {
    let (name, version) = tag.rsplit_once(':').unwrap_or((tag, "latest"));
    GenericImage::new(name, version)
}

impl ContainerStack {
    /// Start everything and wait until every API and manager is ready.
    pub async fn up(opts: &Options) -> anyhow::Result<Self> {
        let docker = Docker::connect_with_unix_defaults().context("connect to the Docker engine")?;
        let missing = opts.images.missing().await?;
        anyhow::ensure!(
            missing.is_empty(),
            "images not built: {} (scripts/images.sh builds them)",
            missing.join(", ")
        );
        let run = format!(
            "wolf-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() % 100_000)
                .unwrap_or(0)
        );
        let networks = Networks {
            edge: format!("{run}-edge"),
            nats: format!("{run}-nats"),
            postgres: format!("{run}-postgres"),
            s3: format!("{run}-s3"),
        };
        for n in [&networks.edge, &networks.nats, &networks.postgres, &networks.s3] {
            docker
                .create_network(NetworkCreateRequest {
                    name: n.clone(),
                    driver: Some("bridge".into()),
                    labels: Some([(LABEL.to_string(), run.clone())].into()),
                    ..Default::default()
                })
                .await
                .with_context(|| format!("create network {n}"))?;
        }
        let mut stack = Self {
            run,
            networks,
            nats: Vec::new(),
            postgres: Node {
                name: String::new(),
                id: String::new(),
                port: 0,
                monitor: None,
            },
            s3: Node {
                name: String::new(),
                id: String::new(),
                port: 0,
                monitor: None,
            },
            apis: Vec::new(),
            managers: Vec::new(),
            held: Vec::new(),
            docker,
        };
        // Whatever fails from here on, the containers started so far are removed.
        match stack.start(opts).await {
            Ok(()) => Ok(stack),
            Err(e) => {
                stack.down().await;
                Err(e)
            }
        }
    }

    async fn start(&mut self, opts: &Options) -> anyhow::Result<()> {
        let run = self.run.clone();
        // NATS: a cluster whose nodes route to each other by container name.
        let names: Vec<String> = (1..=opts.nats_nodes.max(1))
            .map(|i| format!("{run}-nats-{i}"))
            .collect();
        for name in &names {
            let routes: Vec<String> = names
                .iter()
                .filter(|n| *n != name)
                .map(|n| format!("nats://{n}:6222"))
                .collect();
            let mut cmd = vec!["-js", "-sd", "/data", "-n", name, "-m", "8222"]
                .into_iter()
                .map(String::from)
                .collect::<Vec<_>>();
            if names.len() > 1 {
                cmd.extend(
                    ["--cluster_name", "wolf", "--cluster", "nats://0.0.0.0:6222", "--routes"].map(String::from),
                );
                cmd.push(routes.join(","));
            }
            let (port, monitor) = (free_port(), free_port());
            let req = image(&opts.images.nats)
                .with_wait_for(WaitFor::message_on_stderr("Server is ready"))
                .with_container_name(name)
                .with_network(&self.networks.nats)
                .with_label(LABEL, &run)
                .with_mapped_port(port, ContainerPort::Tcp(4222))
                .with_mapped_port(monitor, ContainerPort::Tcp(8222))
                .with_host_config_modifier(loopback_only)
                .with_cmd(cmd);
            let c = req.start().await.with_context(|| format!("start {name}"))?;
            self.nats.push(Node {
                name: name.clone(),
                id: c.id().to_string(),
                port,
                monitor: Some(monitor),
            });
            self.held.push(c);
        }
        let pg_name = format!("{run}-postgres");
        let pg_port = free_port();
        let c = image(&opts.images.postgres)
            .with_wait_for(WaitFor::message_on_stderr(
                "database system is ready to accept connections",
            ))
            .with_container_name(&pg_name)
            .with_network(&self.networks.postgres)
            .with_label(LABEL, &run)
            .with_env_var("POSTGRES_USER", "wolf")
            .with_env_var("POSTGRES_PASSWORD", DB_PASSWORD)
            .with_env_var("POSTGRES_DB", "wolf")
            .with_mapped_port(pg_port, ContainerPort::Tcp(5432))
            .with_host_config_modifier(loopback_only)
            .start()
            .await
            .context("start PostgreSQL")?;
        self.postgres = Node {
            name: pg_name,
            id: c.id().to_string(),
            port: pg_port,
            monitor: None,
        };
        self.held.push(c);
        let s3_name = format!("{run}-s3");
        let s3_port = free_port();
        let c = image(&opts.images.s3)
            .with_container_name(&s3_name)
            .with_network(&self.networks.s3)
            .with_label(LABEL, &run)
            .with_env_var("AWS_ACCESS_KEY_ID", S3_KEY)
            .with_env_var("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .with_env_var("WOLF_S3_BUCKET", "wolf")
            .with_mapped_port(s3_port, ContainerPort::Tcp(9000))
            .with_host_config_modifier(loopback_only)
            .start()
            .await
            .context("start the S3 server")?;
        self.s3 = Node {
            name: s3_name,
            id: c.id().to_string(),
            port: s3_port,
            monitor: None,
        };
        self.held.push(c);
        wait_until(Duration::from_secs(30), "the S3 server answers", || async {
            http_get(s3_port, "/").await.is_some()
        })
        .await?;
        let monitor = self.nats[0].monitor.unwrap_or_default();
        if self.nats.len() > 1 {
            // Streams of three replicas need a JetStream meta leader: elected once the
            // nodes have found each other.
            wait_until(Duration::from_secs(60), "the NATS cluster elects a leader", || async {
                http_get(monitor, "/jsz")
                    .await
                    .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok())
                    .is_some_and(|v| v["meta_cluster"]["leader"].as_str().is_some_and(|l| !l.is_empty()))
            })
            .await?;
        }

        // The schema, once, before any API or manager.
        let env = self.wolf_env(opts);
        let mut migrate = image(&opts.images.wolf)
            .with_container_name(format!("{run}-migrate"))
            .with_network(&self.networks.postgres)
            .with_label(LABEL, &run)
            .with_cmd(["wolf", "migrate"]);
        for (k, v) in &env {
            migrate = migrate.with_env_var(k, v);
        }
        let c = migrate.start().await.context("start wolf migrate")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        let code = loop {
            if let Some(code) = c.exit_code().await? {
                break code;
            }
            anyhow::ensure!(Instant::now() < deadline, "wolf migrate did not finish in 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        anyhow::ensure!(code == 0, "wolf migrate exited {code}");
        self.held.push(c);

        for i in 0..opts.apis {
            let node = self
                .start_wolf(opts, &env, &format!("{run}-api-{}", i + 1), false)
                .await?;
            self.apis.push(node);
        }
        for i in 0..opts.managers {
            let node = self
                .start_wolf(opts, &env, &format!("{run}-manager-{}", i + 1), true)
                .await?;
            self.managers.push(node);
        }
        for n in self.apis.iter().chain(&self.managers) {
            let port = n.port;
            wait_until(
                Duration::from_secs(120),
                &format!("{} is ready", n.name),
                || async move { http_get(port, "/readyz").await.is_some_and(|(s, _)| s == 200) },
            )
            .await?;
        }
        Ok(())
    }

    fn wolf_env(&self, opts: &Options) -> Vec<(String, String)> {
        let nats: Vec<String> = self.nats.iter().map(|n| format!("nats://{}:4222", n.name)).collect();
        let mut env: Vec<(String, String)> = [
            ("WOLF_NATS_URL", nats.join(",")),
            ("WOLF_NATS_REPLICAS", self.nats.len().min(5).to_string()),
            (
                "WOLF_DATABASE_URL",
                format!("postgres://wolf:{DB_PASSWORD}@{}:5432/wolf", self.postgres.name),
            ),
            ("WOLF_S3_ENDPOINT", format!("http://{}:9000", self.s3.name)),
            ("WOLF_S3_BUCKET", "wolf".into()),
            ("WOLF_S3_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", S3_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", S3_SECRET.into()),
            ("WOLF_LOG", "warn".into()),
            // A test stack, published on this host's loopback for its run: no keys, so that the
            // load generator and the scenarios drive it as they drive the process stack.
            ("WOLF_INSECURE_NO_AUTH", "1".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(opts.env.iter().cloned());
        env
    }

    /// An API (port 8080) or a manager (port 9090, the settings of docs/containers.md), on
    /// the edge network and then joined to each dependency's.
    async fn start_wolf(
        &mut self,
        opts: &Options,
        env: &[(String, String)],
        name: &str,
        manager: bool,
    ) -> anyhow::Result<Node> {
        let port = free_port();
        let (cmd, inner) = if manager {
            (["wolf", "manager", "--listen", "0.0.0.0:9090"], 9090)
        } else {
            (["wolf", "api", "--listen", "0.0.0.0:8080"], 8080)
        };
        let mut req = image(&opts.images.wolf)
            .with_container_name(name)
            .with_network(&self.networks.edge)
            .with_label(LABEL, &self.run)
            .with_mapped_port(port, ContainerPort::Tcp(inner))
            .with_host_config_modifier(loopback_only)
            .with_cap_drop("ALL")
            .with_security_opt("no-new-privileges:true")
            .with_cmd(cmd);
        if manager {
            let profile = std::fs::read_to_string(&opts.seccomp)
                .with_context(|| format!("read the seccomp profile {}", opts.seccomp.display()))?;
            for cap in [
                "SYS_ADMIN",
                "SETPCAP",
                "SETUID",
                "SETGID",
                "CHOWN",
                "DAC_OVERRIDE",
                "KILL",
            ] {
                req = req.with_cap_add(cap);
            }
            // The engine's API takes the profile itself, not a path (the CLI reads the file).
            req = req.with_security_opt(format!("seccomp={profile}"));
        }
        for (k, v) in env {
            req = req.with_env_var(k, v);
        }
        let c = req.start().await.with_context(|| format!("start {name}"))?;
        let id = c.id().to_string();
        self.held.push(c);
        // NATS retries its first connection, so joining the other networks now is in time.
        for net in [&self.networks.nats, &self.networks.postgres, &self.networks.s3] {
            connect(&self.docker, net, &id).await?;
        }
        Ok(Node {
            name: name.to_string(),
            id,
            port,
            monitor: None,
        })
    }

    /// The testbed's JSON line (`testbed up`'s shape), plus `provider`, `containers` and
    /// `networks` for chaos.
    pub fn json(&self) -> String {
        let url = |n: &Node| format!("http://127.0.0.1:{}", n.port);
        let node = |n: &Node| serde_json::json!({"id": n.id, "name": n.name, "url": url(n), "monitor": n.monitor.map(|m| format!("http://127.0.0.1:{m}"))});
        let pid = |_n: &Node| 0;
        serde_json::json!({
            "provider": "containers",
            "api": self.apis.iter().map(url).collect::<Vec<_>>(),
            "nats": format!("nats://127.0.0.1:{}", self.nats[0].port),
            "database": format!("postgres://wolf:{DB_PASSWORD}@127.0.0.1:{}/wolf", self.postgres.port),
            "s3": {
                "endpoint": url(&self.s3),
                "bucket": "wolf",
                "accessKeyId": S3_KEY,
                "secretAccessKey": S3_SECRET,
            },
            // Host pids are chaos's to look up (a container restarted has a new one).
            "pids": {
                "api": self.apis.iter().map(pid).collect::<Vec<_>>(),
                "manager": self.managers.iter().map(pid).collect::<Vec<_>>(),
                "nats": 0, "postgres": 0, "s3": 0,
            },
            "containers": {
                "api": self.apis.iter().map(node).collect::<Vec<_>>(),
                "manager": self.managers.iter().map(node).collect::<Vec<_>>(),
                "nats": self.nats.iter().map(node).collect::<Vec<_>>(),
                "postgres": node(&self.postgres),
                "s3": node(&self.s3),
            },
            "networks": {
                "edge": self.networks.edge,
                "nats": self.networks.nats,
                "postgres": self.networks.postgres,
                "s3": self.networks.s3,
            },
        })
        .to_string()
    }

    /// Remove every container (with its volumes) and the networks.
    pub async fn down(mut self) {
        for c in self.held.drain(..).rev() {
            let _ = c.rm().await;
        }
        for n in [
            &self.networks.edge,
            &self.networks.nats,
            &self.networks.postgres,
            &self.networks.s3,
        ] {
            let _ = self.docker.remove_network(n).await;
        }
    }
}

/// Join container `id` to network `net`.
pub async fn connect(docker: &Docker, net: &str, id: &str) -> anyhow::Result<()> {
    docker
        .connect_network(
            net,
            NetworkConnectRequest {
                container: id.to_string(),
                ..Default::default()
            },
        )
        .await
        .with_context(|| format!("connect {id} to {net}"))
}

async fn wait_until<F, Fut>(timeout: Duration, what: &str, mut probe: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !probe().await {
        anyhow::ensure!(Instant::now() < deadline, "{what}: not after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// `GET path` on 127.0.0.1:`port`: the status and the body, `None` when nothing answers. (A
/// published port accepts connections before the container listens: only an HTTP answer
/// says the service is up.)
pub async fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(2), io).await.ok()?.ok()?;
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}
