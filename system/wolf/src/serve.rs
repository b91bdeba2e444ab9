//! `wolf serve`: API + embedded durable queue + manager + pre-warmed worker pool in one
//! process, on one data directory (SQLite file and object files). No external service.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;
use wolf_api::AppState;
use wolf_manager::Manager;
use wolf_sandbox::{Registry, Sandboxes};

use crate::config::{Config, ConfigArgs, DEFAULT_LISTEN};
use wolf_store::{Events, LocalObjects, SqliteStore};

/// Arguments of `wolf serve`: the configuration tree's flags (see [`crate::config`]).
#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
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
    let cfg = Config::load(&args.cfg)?;
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
    let cache = cfg.cache_dir(&data_dir);
    std::fs::create_dir_all(&cache)?;
    let registry = Registry::builtin(&cache)?;
    let workers_dir = data_dir.join("workers");
    std::fs::create_dir_all(&workers_dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&workers_dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let sandboxes = Arc::new(
        // Each worker serves its job over gRPC on a socket here (outside every sandbox).
        Sandboxes::new(cfg.sandbox(registry.bind_paths(), Some(workers_dir.clone())))
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
        cfg.manager(),
        events.clone(),
    ));
    let (stop_tx, stop_rx) = watch::channel(false);
    let manager_task = tokio::spawn(manager.clone().run(stop_rx));
    let ready = Arc::new(AtomicBool::new(false));
    let api_cfg = cfg.api();
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
    let listen = cfg.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
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
