//! `wolf serve`: API + embedded durable queue + manager + pre-warmed worker pool in one
//! process, on one data directory (SQLite file and object files). No external service.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use wolf_api::{ApiDeps, run_api};
use wolf_manager::{Manager, run_manager};
use wolf_sandbox::Sandboxes;

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
    let store = Arc::new(
        SqliteStore::open(&data_dir.join("wolf.db"))
            .await?
            .with_queue(cfg.queue()),
    );
    let objects = Arc::new(LocalObjects::new(&data_dir));
    let cache = cfg.cache_dir(&data_dir);
    std::fs::create_dir_all(&cache)?;
    // The built-in engines, the configuration's, and those on the runtimes imported here.
    let registry = crate::runtime_cli::registry_static(&cfg, &data_dir, &cache)?;
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
    let runtime_pools = crate::runtime_cli::pools(&cfg, registry, &data_dir, Some(workers_dir.clone()))?;
    // The engines on runtimes say their version before the first request asks for it.
    wolf_manager::probe_runtime_versions(registry, &runtime_pools).await;
    let warm = prepare_engines(registry);
    let events = Events::default();
    // Sessions live beside the jobs' pool, on the same sandboxes.
    let node = format!("serve/{}", std::process::id());
    let sessions: Arc<dyn wolf_store::SessionHost> = wolf_manager::sessions::Sessions::new(
        sandboxes.clone(),
        registry,
        cfg.caps,
        cfg.max_sessions,
        node,
        Some((store.clone(), objects.clone())),
        Some(events.streams.clone()),
    );
    let manager = Arc::new(
        Manager::new(
            store.clone(),
            objects.clone(),
            store.clone(),
            sandboxes,
            registry,
            cfg.manager(),
            events.clone(),
        )
        .with_runtimes(runtime_pools),
    );
    let listen = cfg.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let pool = manager.gauges.clone();
    let deps = ApiDeps {
        meta: store.clone(),
        objects,
        queue: store.clone(),
        registry,
        events,
        prometheus: Some(prometheus),
        readiness: Some(Arc::new(move || warm.check().and_then(|()| pool.readiness()))),
        judge0: cfg.judge0_listener().await?,
        piston: cfg.piston_listener().await?,
        sessions: Some(sessions),
        keys: Some(store.clone()),
        quotas: Some(store.clone()),
        outbox: Some(store.clone()),
        retention: Some(store),
    };
    // The two services of the distributed mode, in one process on the embedded stores.
    let (stop_manager, manager_stops) = tokio::sync::oneshot::channel::<()>();
    let manager_task = tokio::spawn(run_manager(
        manager,
        async move {
            let _ = manager_stops.await;
        },
        Duration::from_secs(120),
    ));
    eprintln!(
        "wolf: listening on http://{addr} (data dir {}, {} workers)",
        data_dir.display(),
        cfg.workers
    );
    tracing::info!(%addr, "listening");
    let stop = async {
        shutdown_signal().await;
        eprintln!("wolf: shutting down: intake stopped, finishing running jobs");
    };
    run_api(listener, cfg.api(), deps, stop).await;
    // Running jobs finish and are persisted; queued ones stay queued for the next start.
    let _ = stop_manager.send(());
    let _ = manager_task.await;
    eprintln!("wolf: stopped");
    Ok(ExitCode::SUCCESS)
}

/// Engines whose artifacts (the C++ precompiled header) are still being built at start.
#[derive(Debug, Clone, Default)]
pub(crate) struct Warming(Arc<std::sync::Mutex<Vec<String>>>);

impl Warming {
    /// `/readyz`'s part: not ready while an engine is being prepared.
    pub(crate) fn check(&self) -> Result<(), String> {
        let left = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!("preparing {}", left.join(", ")))
        }
    }
}

/// Build every present engine's artifacts before the first job needs them, each engine on a
/// thread of its own (a job of one engine never waits for another's build, and a job of an
/// engine being built waits for that build only). Readiness reports them until done.
pub(crate) fn prepare_engines(registry: &'static wolf_core::Registry) -> Warming {
    let warming = Warming::default();
    let engines: Vec<&'static wolf_core::language::Language> = registry
        .all()
        .iter()
        .filter(|l| l.absent.is_none() && l.spec.prepare.is_some())
        .collect();
    warming
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .extend(engines.iter().map(|l| l.spec.name.clone()));
    for lang in engines {
        let w = warming.clone();
        tokio::task::spawn_blocking(move || {
            let name = &lang.spec.name;
            if let Err(e) = registry.get(name) {
                tracing::warn!(engine = %name, error = %e, "engine preparation failed");
            }
            w.0.lock().unwrap_or_else(|e| e.into_inner()).retain(|n| n != name);
        });
    }
    warming
}
