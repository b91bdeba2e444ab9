//! One configuration tree for `serve`, `api`, `manager`, `run` and `config`.
//!
//! Sources, each overriding the one before: the TOML file (`--config` / `WOLF_CONFIG`), then
//! the `WOLF_*` environment, then flags (clap reads a flag or, when it is absent, its
//! variable). Every field is documented once, here, with one named default ([`Config::default`]).
//! Secrets (the database URL, the S3 secret key) come from the environment or from a file named
//! by `*_FILE`, never from the TOML file, and are never printed or logged ([`Secret`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::{Deserialize, Serialize};
use wolf_core::Caps;

/// The API's (and `wolf serve`'s) address when none is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// A value that is never shown: `Debug` and `wolf config` print `<redacted>`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "<redacted>" })
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(if self.0.is_empty() { "" } else { "<redacted>" })
    }
}

/// The whole tree. TOML keys are the field names; sections are the nested structs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address this process serves HTTP on: the API (`serve`, `api`; default
    /// [`DEFAULT_LISTEN`], port 0 picks a free one) or health, readiness and metrics
    /// (`manager`; none by default).
    pub listen: Option<String>,
    /// A second address serving only Judge0's API at its root (`serve`, `api`), for Judge0
    /// clients that take a host and port (Judge0's own is 2358); none by default. The same API
    /// is always under `/judge0/` on `listen`.
    pub judge0_listen: Option<String>,
    /// A second address serving only Piston's API (under `/api/v2/`, as Piston's port 2000
    /// does), for Piston clients given a host and port; none by default. The same API is always
    /// under `/api/v2/` on `listen`.
    pub piston_listen: Option<String>,
    /// Data directory: `wolf.db` and `jobs/` (serve), worker sockets (serve, manager).
    pub data_dir: PathBuf,
    /// Prepared artifacts (precompiled headers); default `<data_dir>/cache`.
    pub cache_dir: Option<PathBuf>,
    /// Workers: pre-warmed sandboxes, jobs run in parallel. Default: the number of CPUs.
    pub workers: usize,
    /// Sessions (sandboxes kept between execs) live at once on this host; more get 503.
    pub max_sessions: usize,
    /// Requests handled at once; more get 429.
    pub max_inflight: usize,
    /// Long polls (`wait=true`) held at once, outside `max_inflight`; more get 429.
    pub max_waits: usize,
    /// Jobs queued at most, both queues (JetStream: the stream's `max_msgs`); more get 503.
    pub max_pending: u64,
    /// Largest `code`, bytes (413).
    pub max_code_bytes: usize,
    /// Extra files per submission (422 past it).
    pub max_files: usize,
    /// Seconds a request body may take to arrive (408 after).
    pub body_timeout_secs: u64,
    /// Deliveries of a job before it is Failed and dead-lettered.
    pub max_attempts: u32,
    /// Seconds a job stays with a manager that sends no news (no progress, no ack) before the
    /// queue offers it again; a working manager renews it every third of it. Both queues.
    pub lease_secs: u64,
    /// Operator caps on the compile and run limits (`[caps.compile]`, `[caps.run]`).
    pub caps: Caps,
    /// The jail.
    pub sandbox: SandboxSection,
    /// NATS JetStream (distributed mode).
    pub nats: NatsSection,
    /// PostgreSQL (distributed mode).
    #[serde(skip_deserializing)]
    pub postgres: PostgresSection,
    /// S3-compatible object store (distributed mode).
    pub s3: S3Section,
    /// Whether every request needs an API key (`wolf keys`): `auto` (the default) when any
    /// listener is beyond loopback, `on` always. Off only by `--insecure-no-auth`.
    pub auth: AuthMode,
    /// `--insecure-no-auth` (`WOLF_INSECURE_NO_AUTH`): no keys even beyond loopback; never
    /// from the file, and warned about at every start.
    #[serde(skip)]
    pub insecure_no_auth: bool,
    /// Engines added to the built-in ones (`[[language]]`, the fields of the registry file
    /// `system/core/languages.toml`, plus `runtime = "NAME"` to run in an imported runtime's
    /// root: `wolf runtime import`). None by default.
    pub language: Vec<toml::Table>,
    /// Webhooks (`callbackUrl`).
    pub webhooks: WebhooksSection,
    /// How long an ended job (record, code, output, files), a dead letter and an idempotency
    /// key are kept: `7d` by default, any `humantime` span (`12h`, `30d`), or `forever`.
    /// Expired ones are deleted in the background, in batches; `DELETE /job/{id}` deletes one.
    pub retention: String,
    /// A submission whose estimated queue wait (jobs ahead × recent run time / workers) is past
    /// this is refused with 503 and a `Retry-After`: `30s` by default, or `off`.
    pub max_queue_wait: String,
    /// Fair dispatch between keys in the distributed mode: each key keeps at most the live
    /// workers plus one of its jobs in the queue or running, the rest held in PostgreSQL until
    /// one of its jobs ends (`true` by default; `false`: JetStream's first come, first served).
    /// The embedded queue is always fair (its order is by fair-queuing tags).
    pub fair_dispatch: bool,
    /// A tracing UI's page of one trace, `{trace_id}` standing for the id (Jaeger:
    /// `http://localhost:16686/trace/{trace_id}`). The console links each job's trace there,
    /// and `/job/{id}/timeline` gives it as `traceUrl`. Unset by default.
    pub trace_url: Option<String>,
}

/// `[webhooks]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksSection {
    /// Addresses or networks (`10.0.0.0/8`, `127.0.0.1`) webhooks may go to although they are
    /// loopback, private, link-local...: by default none (a receiver must be public).
    pub allow: Vec<String>,
    /// Seconds one delivery attempt may take (connect, send, answer).
    pub timeout_secs: u64,
    /// `WOLF_WEBHOOK_SECRET` (or the file `WOLF_WEBHOOK_SECRET_FILE` names): signs the webhooks
    /// of jobs without a key (a key's own secret signs its jobs'). None by default: then a
    /// callback needs a key.
    #[serde(skip_deserializing)]
    pub secret: Secret,
}

impl Default for WebhooksSection {
    fn default() -> Self {
        Self {
            allow: Vec::new(),
            timeout_secs: 10,
            secret: Secret::default(),
        }
    }
}

/// `[sandbox]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SandboxSection {
    /// First uid (and gid) of the per-sandbox range (docs/sandbox.md).
    pub uid_base: u32,
    /// Uids in the range: at least the sandboxes alive at once on the host.
    pub uid_count: u32,
}

/// `[nats]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSection {
    /// Server URL (`WOLF_NATS_URL`); a cluster's servers comma-separated.
    pub url: String,
    /// Copies of the queue's streams and buckets (`WOLF_NATS_REPLICAS`): 3 on a 3-node
    /// cluster, so that a node lost loses no job and stops no submission.
    pub replicas: usize,
}

/// PostgreSQL: only from the environment (a secret).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PostgresSection {
    /// `WOLF_DATABASE_URL` or the file `WOLF_DATABASE_URL_FILE` names.
    pub url: Secret,
}

/// `[s3]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Section {
    /// Endpoint, path-style (`http://127.0.0.1:9000`).
    pub endpoint: String,
    /// Bucket for code and output.
    pub bucket: String,
    /// Region (any value for stores other than AWS).
    pub region: String,
    /// Access key id (empty: the instance's role).
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY` or the file `AWS_SECRET_ACCESS_KEY_FILE` names.
    #[serde(skip_deserializing)]
    pub secret_access_key: Secret,
}

impl Config {
    /// The Judge0 listener, bound, when `judge0_listen` is set.
    pub async fn judge0_listener(&self) -> anyhow::Result<Option<tokio::net::TcpListener>> {
        bind_door(self.judge0_listen.as_deref(), "judge0").await
    }

    /// The Piston listener, bound, when `piston_listen` is set.
    pub async fn piston_listener(&self) -> anyhow::Result<Option<tokio::net::TcpListener>> {
        bind_door(self.piston_listen.as_deref(), "piston").await
    }
}

/// A front door's own listener, bound when its address is set; its address is printed, as the
/// API's is, for a caller that asked for port 0.
async fn bind_door(addr: Option<&str>, door: &str) -> anyhow::Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("{door}_listen {addr}: {e}"))?;
    eprintln!("wolf: {door} listening on http://{}", l.local_addr()?);
    Ok(Some(l))
}

impl Default for Config {
    fn default() -> Self {
        let api = wolf_api::ApiConfig::default();
        let queue = wolf_store::QueueConfig::default();
        let uids = wolf_sandbox::uids::UidRange::default();
        Self {
            listen: None,
            judge0_listen: None,
            piston_listen: None,
            data_dir: PathBuf::from("wolf-data"),
            cache_dir: None,
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            max_sessions: wolf_manager::sessions::DEFAULT_MAX_SESSIONS,
            max_inflight: api.max_inflight,
            max_waits: api.max_waits,
            max_pending: queue.max_pending,
            max_code_bytes: api.max_code_bytes,
            max_files: api.max_files,
            body_timeout_secs: api.body_timeout.as_secs(),
            max_attempts: queue.max_attempts,
            lease_secs: queue.lease.as_secs(),
            caps: Caps::default(),
            sandbox: SandboxSection {
                uid_base: uids.base,
                uid_count: uids.count,
            },
            nats: NatsSection::default(),
            postgres: PostgresSection::default(),
            s3: S3Section::default(),
            auth: AuthMode::Auto,
            insecure_no_auth: false,
            language: Vec::new(),
            webhooks: WebhooksSection::default(),
            retention: DEFAULT_RETENTION.into(),
            max_queue_wait: "30s".into(),
            fair_dispatch: true,
            trace_url: None,
        }
    }
}

/// The default `retention`.
pub const DEFAULT_RETENTION: &str = "7d";

/// A span setting (`retention`, `max_queue_wait`) parsed: `None` for `forever` or `off`.
fn span(key: &str, text: &str) -> anyhow::Result<Option<Duration>> {
    let text = text.trim();
    if matches!(text, "forever" | "off" | "never") {
        return Ok(None);
    }
    let d = humantime::parse_duration(text)
        .map_err(|e| anyhow::anyhow!("{key} {text:?}: {e} (give a span such as 30s, 12h, 7d, or off)"))?;
    anyhow::ensure!(
        d >= Duration::from_secs(1),
        "{key} {text:?} is shorter than a second (give off to have none)"
    );
    Ok(Some(d))
}

/// `trace_url` checked: an http(s) URL with `{trace_id}` in it, so that a link the console
/// draws goes to a tracing UI and names the trace.
fn trace_url(text: &str) -> anyhow::Result<()> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| {
            anyhow::anyhow!(
                "trace_url {text:?}: give an http or https URL, e.g. http://localhost:16686/trace/{{trace_id}}"
            )
        })?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    anyhow::ensure!(!host.is_empty(), "trace_url {text:?} names no host");
    anyhow::ensure!(
        !text
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || matches!(c, '"' | '<' | '>')),
        "trace_url {text:?} has a character a URL cannot hold"
    );
    anyhow::ensure!(
        text.contains("{trace_id}"),
        "trace_url {text:?} has no {{trace_id}}: every job would link the same page"
    );
    Ok(())
}

/// `retention` parsed: `None` keeps every job.
fn retention(text: &str) -> anyhow::Result<Option<Duration>> {
    span("retention", text)
}

impl Default for SandboxSection {
    fn default() -> Self {
        Config::default().sandbox
    }
}

impl Default for NatsSection {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            replicas: 1,
        }
    }
}

impl Default for S3Section {
    fn default() -> Self {
        Self {
            endpoint: String::new(),
            bucket: "wolf".into(),
            region: "us-east-1".into(),
            access_key_id: String::new(),
            secret_access_key: Secret::default(),
        }
    }
}

/// When API keys are required.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// When any listener is beyond loopback.
    #[default]
    Auto,
    /// Always.
    On,
}

/// An entry of `webhooks.allow`: a network, or one address (a network of one).
fn net(s: &str) -> anyhow::Result<ipnet::IpNet> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| anyhow::anyhow!("webhooks.allow: {s:?} is not an address or a network (10.0.0.0/8)"))
}

/// Whether `addr` (`host:port`) listens on loopback only.
fn loopback(addr: &str) -> bool {
    match addr.parse::<std::net::SocketAddr>() {
        Ok(a) => a.ip().is_loopback(),
        Err(_) => addr
            .rsplit_once(':')
            .is_some_and(|(h, _)| h.eq_ignore_ascii_case("localhost")),
    }
}

/// The flags every long-running command takes (each also read from its variable).
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigArgs {
    /// TOML configuration file.
    #[arg(long, env = "WOLF_CONFIG")]
    pub config: Option<PathBuf>,
    /// See `listen` in the configuration.
    #[arg(long, env = "WOLF_LISTEN")]
    pub listen: Option<String>,
    /// See `auth` in the configuration.
    #[arg(long, env = "WOLF_AUTH")]
    pub auth: Option<AuthMode>,
    /// Serve without API keys even beyond loopback: anyone who reaches the port sees and runs
    /// everything (warned about at every start).
    #[arg(long, env = "WOLF_INSECURE_NO_AUTH", action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_no_auth: bool,
    /// See `judge0_listen` in the configuration.
    #[arg(long, env = "WOLF_JUDGE0_LISTEN")]
    pub judge0_listen: Option<String>,
    /// See `piston_listen` in the configuration.
    #[arg(long, env = "WOLF_PISTON_LISTEN")]
    pub piston_listen: Option<String>,
    /// Data directory.
    #[arg(long, env = "WOLF_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Cache directory (default `<data_dir>/cache`).
    #[arg(long, env = "WOLF_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Workers (default: the number of CPUs).
    #[arg(long, env = "WOLF_WORKERS")]
    pub workers: Option<usize>,
    /// Sessions live at once on this host before 503.
    #[arg(long, env = "WOLF_MAX_SESSIONS")]
    pub max_sessions: Option<usize>,
    /// Requests in flight before 429.
    #[arg(long, env = "WOLF_MAX_INFLIGHT")]
    pub max_inflight: Option<usize>,
    /// Jobs queued before 503.
    #[arg(long, env = "WOLF_MAX_PENDING")]
    pub max_pending: Option<u64>,
    /// Deliveries of a job before it is dead-lettered.
    #[arg(long, env = "WOLF_MAX_ATTEMPTS")]
    pub max_attempts: Option<u32>,
    /// NATS server with JetStream.
    #[arg(long, env = "WOLF_NATS_URL")]
    pub nats_url: Option<String>,
    /// Copies of the queue's streams in a JetStream cluster (1..=5).
    #[arg(long, env = "WOLF_NATS_REPLICAS")]
    pub nats_replicas: Option<usize>,
    /// Seconds a job stays with a silent manager before it is offered again.
    #[arg(long, env = "WOLF_LEASE_SECS")]
    pub lease_secs: Option<u64>,
    /// PostgreSQL URL (prefer the environment, or WOLF_DATABASE_URL_FILE).
    #[arg(long, env = "WOLF_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// S3 endpoint (path-style).
    #[arg(long, env = "WOLF_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 bucket.
    #[arg(long, env = "WOLF_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3 region.
    #[arg(long, env = "WOLF_S3_REGION")]
    pub s3_region: Option<String>,
    /// S3 access key id.
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    pub aws_access_key_id: Option<String>,
    /// S3 secret key (prefer the environment, or AWS_SECRET_ACCESS_KEY_FILE).
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    pub aws_secret_access_key: Option<String>,
    /// See `webhooks.allow` (comma-separated).
    #[arg(long, env = "WOLF_WEBHOOKS_ALLOW", value_delimiter = ',')]
    pub webhooks_allow: Option<Vec<String>>,
    /// See `max_queue_wait` (`30s`, `off`).
    #[arg(long, env = "WOLF_MAX_QUEUE_WAIT")]
    pub max_queue_wait: Option<String>,
    /// See `fair_dispatch` (`true`, `false`).
    #[arg(long, env = "WOLF_FAIR_DISPATCH")]
    pub fair_dispatch: Option<bool>,
    /// See `trace_url` (`http://localhost:16686/trace/{trace_id}`).
    #[arg(long, env = "WOLF_TRACE_URL")]
    pub trace_url: Option<String>,
    /// See `retention` (`7d`, `12h`, `forever`).
    #[arg(long, env = "WOLF_RETENTION")]
    pub retention: Option<String>,
    /// See `webhooks.secret` (prefer the environment, or WOLF_WEBHOOK_SECRET_FILE).
    #[arg(long, env = "WOLF_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
}

/// Reads a variable (the process environment; tests pass their own).
type Env<'a> = &'a dyn Fn(&str) -> Option<std::ffi::OsString>;

/// A secret from `value` (flag or variable), else from the file `$<var>_FILE` names.
fn secret(value: &Option<String>, var: &str, env: Env<'_>) -> anyhow::Result<Option<Secret>> {
    if let Some(v) = value {
        return Ok(Some(Secret(v.clone())));
    }
    match env(&format!("{var}_FILE")) {
        Some(path) => {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("read {var}_FILE ({})", Path::new(&path).display()))?;
            Ok(Some(Secret(text.trim_end_matches(['\n', '\r']).to_string())))
        }
        None => Ok(None),
    }
}

impl Config {
    /// The file (if any), then the environment and flags in `args`.
    pub fn load(args: &ConfigArgs) -> anyhow::Result<Self> {
        Self::load_with(args, &|k| std::env::var_os(k))
    }

    /// [`Config::load`] reading `*_FILE` variables through `env`.
    pub fn load_with(args: &ConfigArgs, env: Env<'_>) -> anyhow::Result<Self> {
        let mut c = match &args.config {
            Some(p) => {
                let text = std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
                toml::from_str(&text).with_context(|| format!("parse {}", p.display()))?
            }
            None => Config::default(),
        };
        macro_rules! set {
            ($field:expr, $arg:expr) => {
                if let Some(v) = $arg.clone() {
                    $field = v;
                }
            };
        }
        if args.listen.is_some() {
            c.listen = args.listen.clone();
        }
        if args.judge0_listen.is_some() {
            c.judge0_listen = args.judge0_listen.clone();
        }
        if args.piston_listen.is_some() {
            c.piston_listen = args.piston_listen.clone();
        }
        set!(c.data_dir, args.data_dir);
        if args.cache_dir.is_some() {
            c.cache_dir = args.cache_dir.clone();
        }
        set!(c.workers, args.workers);
        set!(c.max_sessions, args.max_sessions);
        set!(c.max_inflight, args.max_inflight);
        set!(c.max_pending, args.max_pending);
        set!(c.max_attempts, args.max_attempts);
        set!(c.auth, args.auth);
        c.insecure_no_auth = args.insecure_no_auth;
        set!(c.nats.url, args.nats_url);
        set!(c.nats.replicas, args.nats_replicas);
        set!(c.lease_secs, args.lease_secs);
        set!(c.s3.endpoint, args.s3_endpoint);
        set!(c.s3.bucket, args.s3_bucket);
        set!(c.s3.region, args.s3_region);
        set!(c.s3.access_key_id, args.aws_access_key_id);
        if let Some(s) = secret(&args.database_url, "WOLF_DATABASE_URL", env)? {
            c.postgres.url = s;
        }
        if let Some(s) = secret(&args.aws_secret_access_key, "AWS_SECRET_ACCESS_KEY", env)? {
            c.s3.secret_access_key = s;
        }
        set!(c.webhooks.allow, args.webhooks_allow);
        set!(c.retention, args.retention);
        retention(&c.retention)?;
        set!(c.max_queue_wait, args.max_queue_wait);
        span("max_queue_wait", &c.max_queue_wait)?;
        set!(c.fair_dispatch, args.fair_dispatch);
        if args.trace_url.is_some() {
            c.trace_url = args.trace_url.clone();
        }
        if let Some(t) = &c.trace_url {
            trace_url(t)?;
        }
        if let Some(s) = secret(&args.webhook_secret, "WOLF_WEBHOOK_SECRET", env)? {
            c.webhooks.secret = s;
        }
        for a in &c.webhooks.allow {
            net(a)?;
        }
        c.workers = c.workers.max(1);
        c.lease_secs = c.lease_secs.max(1);
        anyhow::ensure!(c.max_inflight > 0, "max_inflight must be at least 1");
        anyhow::ensure!(c.max_waits > 0, "max_waits must be at least 1");
        // JetStream's own bound: a stream has 1 to 5 copies.
        anyhow::ensure!(
            (1..=5).contains(&c.nats.replicas),
            "nats.replicas must be 1 to 5 (got {})",
            c.nats.replicas
        );
        Ok(c)
    }

    /// The cache directory, resolved against `data_dir`.
    pub fn cache_dir(&self, data_dir: &Path) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| data_dir.join("cache"))
    }

    /// The operator's engines and the runtimes imported under `data_dir`, for the registry.
    pub fn extra(&self, data_dir: &Path) -> anyhow::Result<wolf_core::language::Extra> {
        let mut table = toml::Table::new();
        table.insert(
            "language".into(),
            toml::Value::Array(self.language.iter().cloned().map(toml::Value::Table).collect()),
        );
        let store = wolf_runtime::Store::new(data_dir);
        let runtimes = store
            .list()?
            .into_iter()
            .map(|r| {
                let root = wolf_core::language::RuntimeRoot {
                    root: store.root(&r.name),
                    digest: r.digest,
                    env: r.config.env,
                };
                (r.name, root)
            })
            .collect();
        Ok(wolf_core::language::Extra {
            languages: toml::to_string(&table)?,
            runtimes,
        })
    }

    /// The API's settings.
    pub fn api(&self) -> wolf_api::ApiConfig {
        wolf_api::ApiConfig {
            max_inflight: self.max_inflight,
            max_waits: self.max_waits,
            max_code_bytes: self.max_code_bytes,
            max_files: self.max_files,
            body_timeout: Duration::from_secs(self.body_timeout_secs.max(1)),
            caps: self.caps,
            auth_required: self.auth_required(),
            webhooks: wolf_api::webhooks::WebhookConfig {
                // Checked at load.
                allow: self.webhooks.allow.iter().filter_map(|a| net(a).ok()).collect(),
                secret: Some(self.webhooks.secret.expose().to_string()).filter(|s| !s.is_empty()),
                timeout: Duration::from_secs(self.webhooks.timeout_secs.max(1)),
            },
            // Checked at load.
            retention: retention(&self.retention).ok().flatten(),
            max_queue_wait: span("max_queue_wait", &self.max_queue_wait).ok().flatten(),
            workers: self.workers,
            trace_url: self.trace_url.clone(),
            ..Default::default()
        }
    }

    /// Whether the API requires keys: see `auth`. Says so, or warns, once per call.
    pub fn auth_required(&self) -> bool {
        let listeners = [&self.listen, &self.judge0_listen, &self.piston_listen];
        let beyond = listeners
            .iter()
            .filter_map(|l| l.as_deref())
            .find(|l| !loopback(l))
            .map(str::to_string);
        if self.insecure_no_auth {
            tracing::warn!(
                "authentication is off (--insecure-no-auth): anyone who reaches {} runs code and reads every job",
                beyond.as_deref().unwrap_or("this port")
            );
            return false;
        }
        let on = self.auth == AuthMode::On || beyond.is_some();
        if on {
            tracing::info!(
                listen = beyond.as_deref().unwrap_or("loopback"),
                "authentication on: every request needs an API key (wolf keys create)"
            );
        }
        on
    }

    /// The manager's settings.
    pub fn manager(&self) -> wolf_manager::ManagerConfig {
        wolf_manager::ManagerConfig {
            workers: self.workers,
            caps: self.caps,
            ..Default::default()
        }
    }

    /// How sandboxes are built.
    pub fn sandbox(
        &self,
        binds: Vec<(PathBuf, PathBuf)>,
        worker_socket_dir: Option<PathBuf>,
    ) -> wolf_sandbox::SandboxConfig {
        wolf_sandbox::SandboxConfig {
            binds,
            worker_socket_dir,
            uids: Some(wolf_sandbox::uids::UidRange {
                base: self.sandbox.uid_base,
                count: self.sandbox.uid_count,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// The queue's settings, the same for both queues.
    pub fn queue(&self) -> wolf_store::QueueConfig {
        wolf_store::QueueConfig {
            lease: Duration::from_secs(self.lease_secs),
            max_pending: self.max_pending,
            max_attempts: self.max_attempts,
        }
    }

    /// The JetStream queue's settings.
    pub fn jetstream(&self) -> wolf_store::JetStreamConfig {
        let keep = retention(&self.retention).ok().flatten();
        let d = wolf_store::JetStreamConfig::default();
        wolf_store::JetStreamConfig {
            queue: self.queue(),
            replicas: self.nats.replicas,
            // An Idempotency-Key is not remembered longer than its job.
            idempotency_ttl: keep.map_or(d.idempotency_ttl, |k| k.min(d.idempotency_ttl)),
            dead_letter_age: keep,
        }
    }

    /// The S3 store's settings.
    pub fn s3(&self) -> wolf_store::S3Config {
        wolf_store::S3Config {
            endpoint: self.s3.endpoint.clone(),
            bucket: self.s3.bucket.clone(),
            region: self.s3.region.clone(),
            access_key_id: self.s3.access_key_id.clone(),
            secret_access_key: self.s3.secret_access_key.expose().to_string(),
        }
    }

    /// The effective configuration as TOML, secrets redacted (`wolf config`).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render: {e}\n"))
    }
}

/// `wolf config`: print the effective configuration (secrets redacted).
pub fn main(args: ConfigArgs) -> anyhow::Result<std::process::ExitCode> {
    let c = Config::load(&args)?;
    print!("{}", c.to_toml());
    Ok(std::process::ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_replicas_are_jetstreams_one_to_five() {
        let with = |n| ConfigArgs {
            nats_replicas: Some(n),
            ..Default::default()
        };
        let none = |_: &str| None;
        assert_eq!(Config::load_with(&with(3), &none).unwrap().jetstream().replicas, 3);
        for bad in [0, 6] {
            let e = Config::load_with(&with(bad), &none).unwrap_err().to_string();
            assert!(e.contains("nats.replicas must be 1 to 5"), "{e}");
        }
        assert_eq!(
            Config::load_with(&ConfigArgs::default(), &none).unwrap().nats.replicas,
            1
        );
    }

    #[test]
    fn the_file_then_flags_and_secrets_never_shown() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("wolf.toml");
        std::fs::write(
            &file,
            "workers = 3\nmax_pending = 7\n[caps.run]\ncpuTimeMs = 1000\nwallTimeMs = 2000\nmemoryMb = 64\npids = 4\noutputBytes = 100\n[nats]\nurl = \"nats://n:1\"\n",
        )
        .unwrap();
        let secret_file = dir.path().join("db");
        std::fs::write(&secret_file, "postgres://u:hunter2@h/db\n").unwrap();
        let args = ConfigArgs {
            config: Some(file),
            max_pending: Some(9),
            aws_secret_access_key: Some("s3cr3t".into()),
            ..Default::default()
        };
        let env = |k: &str| (k == "WOLF_DATABASE_URL_FILE").then(|| secret_file.clone().into_os_string());
        let c = Config::load_with(&args, &env).unwrap();
        assert_eq!(c.workers, 3, "from the file");
        assert_eq!(c.max_pending, 9, "the flag wins over the file");
        assert_eq!(c.caps.run.memory_mb, 64);
        assert_eq!(c.nats.url, "nats://n:1");
        assert_eq!(c.postgres.url.expose(), "postgres://u:hunter2@h/db", "from the _FILE");
        let shown = format!("{}{:?}", c.to_toml(), c);
        assert!(!shown.contains("hunter2") && !shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains("<redacted>"));
        // Unknown keys are errors, not silently ignored.
        let bad = dir.path().join("bad.toml");
        std::fs::write(&bad, "wrokers = 2\n").unwrap();
        let e = Config::load(&ConfigArgs {
            config: Some(bad),
            ..Default::default()
        })
        .unwrap_err();
        assert!(format!("{e:#}").contains("wrokers"), "{e:#}");
        // A secret cannot come from the file.
        let leaky = dir.path().join("leaky.toml");
        std::fs::write(&leaky, "[postgres]\nurl = \"postgres://x\"\n").unwrap();
        assert!(
            Config::load(&ConfigArgs {
                config: Some(leaky),
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn a_trace_url_is_an_http_link_that_names_the_trace() {
        let with = |t: &str| ConfigArgs {
            trace_url: Some(t.into()),
            ..Default::default()
        };
        let none = |_: &str| None;
        let ok = "http://jaeger:16686/trace/{trace_id}";
        let c = Config::load_with(&with(ok), &none).unwrap();
        assert_eq!(c.api().trace_url.as_deref(), Some(ok));
        for (bad, says) in [
            ("javascript:alert(1)//{trace_id}", "http or https"),
            ("http:///trace/{trace_id}", "no host"),
            ("http://jaeger/trace/", "no {trace_id}"),
            ("http://jaeger/\"><script>/{trace_id}", "cannot hold"),
        ] {
            let e = Config::load_with(&with(bad), &none).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
        assert_eq!(
            Config::load_with(&ConfigArgs::default(), &none)
                .unwrap()
                .api()
                .trace_url,
            None
        );
    }
}
