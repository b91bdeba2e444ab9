//! The distributed mode: `wolf api` (stateless HTTP front, many hosts) and `wolf manager`
//! (worker pool, many hosts) on NATS JetStream, PostgreSQL and any S3 store.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use wolf_api::{ApiDeps, run_api};
use wolf_manager::{Manager, run_manager};
use wolf_sandbox::Sandboxes;
use wolf_store::{Events, JetStreamQueue, PgStore, S3Objects};

use crate::config::{Config, ConfigArgs, DEFAULT_LISTEN};

/// `wolf api`: the configuration tree's flags (see [`crate::config`]).
#[derive(Debug, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
}

/// `wolf manager`: the configuration tree's flags; `--listen` serves /healthz, /readyz and
/// /metrics.
#[derive(Debug, Args)]
pub struct ManagerArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
}

pub fn api(args: ApiArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&args.cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        // Only the engines' versions are probed here; nothing is built.
        let cache = cfg.cache_dir(&cfg.data_dir);
        std::fs::create_dir_all(&cache)?;
        // Engines on runtimes come from the configuration; whether one can run is what the
        // live managers offer (their runtimes need not be imported where this API runs).
        let registry = crate::runtime_cli::registry_static(&cfg, &cfg.data_dir, &cache)?;
        let queue = Arc::new(
            JetStreamQueue::connect(&cfg.nats.url, cfg.jetstream())
                .await?
                .with_routes(crate::runtime_cli::routes(registry)),
        );
        queue.follow_engines().await;
        let meta = Arc::new(PgStore::connect(cfg.postgres.url.expose())?);
        let keys: Arc<dyn wolf_store::Keys> = meta.clone();
        let quotas: Arc<dyn wolf_store::Quotas> = meta.clone();
        let outbox: Arc<dyn wolf_store::Outbox> = meta.clone();
        let retention: Arc<dyn wolf_store::Retention> = meta.clone();
        let objects = Arc::new(S3Objects::new(&cfg.s3())?);
        let prometheus = crate::telemetry::install()?;
        // Managers announce stored results on NATS: waiting requests answer at once. Job
        // streams come from whichever manager runs the job, over NATS too.
        let events = Events::with_streams(wolf_store::Streams::over(queue.client()));
        if let Err(e) = queue.follow_done(events.clone()).await {
            tracing::warn!(error = %e, "no result announcements; wait=true falls back to polling");
        }
        let sessions: Arc<dyn wolf_store::SessionHost> = Arc::new(wolf_store::session_rpc::NatsSessions::new(
            queue.client(),
            Duration::from_millis(cfg.caps.run.wall_time_ms),
        ));
        // Fair dispatch: a window of jobs per key in the queue, the rest held in PostgreSQL and
        // published as the key's jobs end (any API promotes any key's).
        // Off, the promotion passes still publish what was held while it was on.
        let fair = wolf_store::FairQueue::new(queue.clone(), PgStore::connect(cfg.postgres.url.expose())?);
        let fair = Arc::new(if cfg.fair_dispatch { fair } else { fair.disabled() });
        tokio::spawn(fair.clone().promote_forever(events.clone()));
        let deps = ApiDeps {
            meta,
            objects,
            queue: fair,
            registry,
            events,
            prometheus: Some(prometheus),
            readiness: None,
            judge0: cfg.judge0_listener().await?,
            piston: cfg.piston_listener().await?,
            // Sessions live on the managers; this API reaches each one's over NATS.
            sessions: Some(sessions),
            keys: Some(keys),
            quotas: Some(quotas),
            // Every API delivers webhooks from the shared outbox.
            outbox: Some(outbox),
            // Every API expires old jobs too (the deletes are idempotent).
            retention: Some(retention),
        };
        let listen = cfg.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listen on {listen}"))?;
        eprintln!("wolf: listening on http://{} (api)", listener.local_addr()?);
        let mut api = cfg.api();
        // The workers are the managers', as they advertise them; this host's count says nothing.
        api.workers = 0;
        run_api(listener, api, deps, crate::serve::shutdown_signal()).await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn manager(args: ManagerArgs) -> anyhow::Result<ExitCode> {
    let cfg = Config::load(&args.cfg)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let code = rt.block_on(async move {
        std::fs::create_dir_all(&cfg.data_dir)?;
        let data_dir = std::fs::canonicalize(&cfg.data_dir)?;
        let cache = cfg.cache_dir(&data_dir);
        let workers_dir = data_dir.join("workers");
        std::fs::create_dir_all(&cache)?;
        std::fs::create_dir_all(&workers_dir)?;
        let registry = crate::runtime_cli::registry_static(&cfg, &data_dir, &cache)?;
        let runtime_pools = crate::runtime_cli::pools(&cfg, registry, &data_dir, Some(workers_dir.clone()))?;
        let sandboxes = Arc::new(Sandboxes::new(cfg.sandbox(registry.bind_paths(), Some(workers_dir)))?);
        let warm = crate::serve::prepare_engines(registry);
        wolf_manager::probe_runtime_versions(registry, &runtime_pools).await;
        // Jobs for the engines on the runtimes this manager has come through their lanes.
        let offers = crate::runtime_cli::offers(registry, &runtime_pools);
        let queue = Arc::new(
            JetStreamQueue::connect(&cfg.nats.url, cfg.jetstream())
                .await?
                .with_routes(crate::runtime_cli::routes(registry))
                .serving(runtime_pools.keys().cloned()),
        );
        let meta = Arc::new(PgStore::connect(cfg.postgres.url.expose())?);
        let objects = Arc::new(S3Objects::new(&cfg.s3())?);
        let prometheus = crate::telemetry::install()?;
        // This manager's jobs stream over NATS, and it answers late subscribers' replays.
        let events = Events::with_streams(wolf_store::Streams::over(queue.client()));
        let replays = events.streams.clone();
        tokio::spawn(async move { replays.serve_replays().await });
        // Sessions live here, and any API reaches them over NATS by this manager's tag.
        let node = format!("manager/{}", std::process::id());
        let sessions = wolf_manager::sessions::Sessions::new(
            sandboxes.clone(),
            registry,
            cfg.caps,
            cfg.max_sessions,
            node,
            Some((meta.clone(), objects.clone())),
            Some(events.streams.clone()),
        );
        let tag = sessions.tag().to_string();
        tokio::spawn(wolf_store::session_rpc::serve(queue.client(), sessions, tag.clone()));
        // Every manager advertises: its workers are capacity admission divides backlogs by.
        if !offers.is_empty() {
            tracing::info!(
                engines = offers.len(),
                "offering the engines on this manager's runtimes"
            );
        }
        let advertising = tokio::spawn(queue.clone().advertise(tag.clone(), offers, cfg.workers));
        let withdraw = queue.clone();
        let manager = Arc::new(
            Manager::new(meta, objects, queue, sandboxes, registry, cfg.manager(), events).with_runtimes(runtime_pools),
        );
        if let Some(addr) = &cfg.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listen on {addr}"))?;
            eprintln!("wolf: manager metrics on http://{}", listener.local_addr()?);
            let pool = manager.gauges.clone();
            let app = wolf_api::service::probes(
                Arc::new(move || warm.check().and_then(|()| pool.readiness())),
                prometheus,
            );
            // May be dropped at shutdown: it only reports.
            tokio::spawn(wolf_api::serve::serve(
                listener,
                app,
                std::future::pending(),
                Duration::ZERO,
            ));
        }
        eprintln!("wolf: manager running");
        run_manager(manager, crate::serve::shutdown_signal(), Duration::from_secs(120)).await;
        // APIs stop accepting jobs for engines only this manager had, and stop counting its
        // workers, without waiting out the TTL.
        advertising.abort();
        withdraw.withdraw(&tag).await;
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    });
    rt.shutdown_background();
    code
}
