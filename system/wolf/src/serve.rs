//! `wolf serve`: API + embedded durable queue + manager + pre-warmed worker pool in one
//! process, on one data directory (SQLite file and object files). No external service.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use tokio::sync::watch;
use wolf_api::{ApiConfig, AppState};
use wolf_manager::{Manager, ManagerConfig};
use wolf_sandbox::{Registry, SandboxConfig, Sandboxes};
use wolf_store::{Events, LocalObjects, SqliteStore};

/// Arguments of `wolf serve` (flags win over `WOLF_*` variables, which win over the file).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free one; the address is logged).
    #[arg(long, env = "WOLF_LISTEN")]
    listen: Option<String>,
    /// Data directory: wolf.db, jobs/<id>/..., the cache.
    #[arg(long, env = "WOLF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Workers (pre-warmed sandboxes); default: the number of CPUs.
    #[arg(long, env = "WOLF_WORKERS")]
    workers: Option<usize>,
    /// TOML configuration file (see README, Configuration).
    #[arg(long, env = "WOLF_CONFIG")]
    config: Option<PathBuf>,
}

/// The configuration file. Every field is optional; defaults are in [`Config::default`].
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listen address.
    pub listen: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Workers.
    pub workers: usize,
    /// Requests in flight before 429.
    pub max_inflight: usize,
    /// Queued jobs before 503.
    pub max_pending: u64,
    /// Largest `code`, bytes.
    pub max_code_bytes: usize,
    /// Deliveries of a job before it is Failed.
    pub max_attempts: u32,
    /// Operator caps on the compile and run limits.
    pub caps: wolf_sandbox::Caps,
    /// Prepared artifacts (precompiled headers); default `<data_dir>/cache`.
    pub cache_dir: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("wolf-data"),
            workers: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            max_inflight: 512,
            max_pending: 10_000,
            max_code_bytes: 1 << 20,
            max_attempts: 3,
            caps: wolf_sandbox::Caps::default(),
            cache_dir: None,
        }
    }
}

fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut cfg = match &args.config {
        Some(p) => {
            let text = std::fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
            toml::from_str(&text).with_context(|| format!("parse {}", p.display()))?
        }
        None => Config::default(),
    };
    if let Some(l) = &args.listen {
        cfg.listen = l.clone();
    }
    if let Some(d) = &args.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(w) = args.workers {
        cfg.workers = w.max(1);
    }
    if let Some(c) = std::env::var_os("WOLF_CACHE_DIR") {
        cfg.cache_dir = Some(PathBuf::from(c));
    }
    Ok(cfg)
}

/// SIGTERM or SIGINT (every long-running command stops on either).
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

pub fn main(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = load(&args)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let code = rt.block_on(serve(cfg));
    // Do not wait for background preparation (a compiler building a header writes to a
    // temporary name and renames, so abandoning it is safe).
    rt.shutdown_background();
    code
}

async fn serve(cfg: Config) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| format!("create {}", cfg.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&cfg.data_dir)?;
    let prometheus = crate::telemetry::install().context("install the metrics recorder")?;
    let store = Arc::new(SqliteStore::open(&data_dir.join("wolf.db")).await?);
    let objects = Arc::new(LocalObjects::new(&data_dir));
    let cache = cfg.cache_dir.clone().unwrap_or_else(|| data_dir.join("cache"));
    std::fs::create_dir_all(&cache)?;
    let registry = Registry::builtin(&cache)?;
    let workers_dir = data_dir.join("workers");
    std::fs::create_dir_all(&workers_dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&workers_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let sandboxes = Arc::new(
        Sandboxes::new(SandboxConfig {
            binds: registry.bind_paths(),
            // Each worker serves its job over gRPC on a socket here (outside every sandbox).
            worker_socket_dir: Some(workers_dir.clone()),
            ..Default::default()
        })
        .context("the sandbox cannot start on this host (Wolf needs root, or a delegated cgroup)")?,
    );
    // Build per-language artifacts (the C++ precompiled header) before the first job needs them.
    tokio::task::spawn_blocking(move || {
        for lang in registry.all().iter().filter(|l| l.absent.is_none()) {
            if let Err(e) = registry.get(&lang.spec.name) {
                tracing::warn!(engine = %lang.spec.name, error = %e, "engine preparation failed");
            }
        }
    });
    let events = Events::default();
    let manager = Arc::new(Manager::new(
        store.clone(),
        objects.clone(),
        store.clone(),
        sandboxes,
        registry,
        ManagerConfig {
            workers: cfg.workers,
            max_attempts: cfg.max_attempts,
            caps: cfg.caps,
            ..Default::default()
        },
        events.clone(),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let manager_task = tokio::spawn(manager.clone().run(stop_rx));
    let ready = Arc::new(AtomicBool::new(false));
    let api_cfg = ApiConfig {
        max_inflight: cfg.max_inflight,
        max_pending: cfg.max_pending,
        max_code_bytes: cfg.max_code_bytes,
        caps: cfg.caps,
        ..Default::default()
    };
    let state = AppState::new(
        store.clone(),
        objects,
        store,
        registry,
        api_cfg,
        events,
        Some(prometheus),
        ready.clone(),
    )
    .with_readiness({
        let pool = manager.gauges.clone();
        move || pool.readiness()
    });
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("listen on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    ready.store(true, Ordering::Relaxed);
    eprintln!(
        "wolf: listening on http://{addr} (data dir {}, {} workers)",
        data_dir.display(),
        cfg.workers
    );
    tracing::info!(%addr, "listening");
    let app = wolf_api::app(state);
    let ready_on_stop = ready.clone();
    let stop = async move {
        shutdown_signal().await;
        // Stop intake; requests in flight finish.
        ready_on_stop.store(false, Ordering::Relaxed);
        eprintln!("wolf: shutting down: intake stopped, finishing running jobs");
    };
    wolf_api::serve::serve(listener, app, stop, Duration::from_secs(30)).await;
    // Running jobs finish and are persisted; queued ones stay queued for the next start.
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(120), manager_task).await;
    eprintln!("wolf: stopped");
    Ok(ExitCode::SUCCESS)
}
