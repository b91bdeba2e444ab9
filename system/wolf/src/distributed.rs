//! The distributed mode: `wolf api` (stateless HTTP front, many hosts) and `wolf manager`
//! (worker pool, many hosts) on NATS JetStream, PostgreSQL and any S3 store.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use tokio::sync::watch;
use wolf_api::{ApiConfig, AppState};
use wolf_manager::{Manager, ManagerConfig};
use wolf_sandbox::{Registry, SandboxConfig, Sandboxes};
use wolf_store::{Events, JetStreamConfig, JetStreamQueue, PgStore, S3Config, S3Objects};

/// Where the shared services are (flags or environment).
#[derive(Debug, Clone, Args)]
pub struct Services {
    /// NATS server with JetStream.
    #[arg(long, env = "WOLF_NATS_URL")]
    nats_url: String,
    /// PostgreSQL for metadata (run `wolf migrate` once).
    #[arg(long, env = "WOLF_DATABASE_URL")]
    database_url: String,
    /// S3 endpoint (path-style), e.g. http://127.0.0.1:9000.
    #[arg(long, env = "WOLF_S3_ENDPOINT")]
    s3_endpoint: String,
    /// Bucket for code and output.
    #[arg(long, env = "WOLF_S3_BUCKET", default_value = "wolf")]
    s3_bucket: String,
    /// Region (any value for non-AWS stores).
    #[arg(long, env = "WOLF_S3_REGION", default_value = "us-east-1")]
    s3_region: String,
    /// Access key id (empty: the instance's role, through the metadata service).
    #[arg(long, env = "AWS_ACCESS_KEY_ID", hide_env_values = true, default_value = "")]
    aws_access_key_id: String,
    /// Secret key.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true, default_value = "")]
    aws_secret_access_key: String,
    /// Jobs queued at most (the stream's max_msgs; 503 past it).
    #[arg(long, env = "WOLF_MAX_PENDING", default_value_t = 10_000)]
    max_pending: u64,
    /// Seconds a delivery may go without an ack or in-progress ack before it is redelivered.
    #[arg(long, env = "WOLF_ACK_WAIT_SECS", default_value_t = 30)]
    ack_wait_secs: u64,
}

impl Services {
    fn s3(&self) -> S3Config {
        S3Config {
            endpoint: self.s3_endpoint.clone(),
            bucket: self.s3_bucket.clone(),
            region: self.s3_region.clone(),
            access_key_id: self.aws_access_key_id.clone(),
            secret_access_key: self.aws_secret_access_key.clone(),
        }
    }

    fn jetstream(&self) -> JetStreamConfig {
        JetStreamConfig {
            max_pending: self.max_pending,
            ack_wait: Duration::from_secs(self.ack_wait_secs.max(1)),
            ..Default::default()
        }
    }
}

/// `wolf api`.
#[derive(Debug, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    services: Services,
    /// Address to listen on.
    #[arg(long, env = "WOLF_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Requests in flight before 429.
    #[arg(long, env = "WOLF_MAX_INFLIGHT", default_value_t = 512)]
    max_inflight: usize,
    /// Cache for the language registry's artifacts (only versions are probed here).
    #[arg(long, env = "WOLF_CACHE_DIR", default_value = "wolf-cache")]
    cache_dir: PathBuf,
}

/// `wolf manager`.
#[derive(Debug, Args)]
pub struct ManagerArgs {
    #[command(flatten)]
    services: Services,
    /// Workers (pre-warmed sandboxes); default: the number of CPUs.
    #[arg(long, env = "WOLF_WORKERS")]
    workers: Option<usize>,
    /// Local directory: worker sockets and the cache.
    #[arg(long, env = "WOLF_DATA_DIR", default_value = "wolf-manager-data")]
    data_dir: PathBuf,
    /// Deliveries of a job before it is dead-lettered.
    #[arg(long, env = "WOLF_MAX_ATTEMPTS", default_value_t = 3)]
    max_attempts: u32,
    /// Serve /healthz and /metrics (Prometheus) on this address.
    #[arg(long, env = "WOLF_LISTEN")]
    listen: Option<String>,
}

pub fn api(args: ApiArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async move {
        std::fs::create_dir_all(&args.cache_dir)?;
        let registry = Registry::builtin(&args.cache_dir)?;
        let queue = Arc::new(JetStreamQueue::connect(&args.services.nats_url, args.services.jetstream()).await?);
        let meta = Arc::new(PgStore::connect(&args.services.database_url)?);
        let objects = Arc::new(S3Objects::new(&args.services.s3())?);
        let prometheus = crate::telemetry::install()?;
        let ready = Arc::new(AtomicBool::new(true));
        // Managers announce stored results on NATS: waiting requests answer at once.
        let events = Events::default();
        if let Err(e) = queue.follow_done(events.clone()).await {
            tracing::warn!(error = %e, "no result announcements; wait=true falls back to polling");
        }
        let cfg = ApiConfig {
            max_inflight: args.max_inflight,
            max_pending: args.services.max_pending,
            background_persistence: true,
            ..Default::default()
        };
        let state = AppState::new(
            meta,
            objects,
            queue,
            registry,
            cfg,
            events,
            Some(prometheus),
            ready.clone(),
        );
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .with_context(|| format!("listen on {}", args.listen))?;
        eprintln!("wolf: listening on http://{} (api)", listener.local_addr()?);
        let stop = async move {
            crate::serve::shutdown_signal().await;
            ready.store(false, Ordering::Relaxed);
        };
        wolf_api::serve::serve(listener, wolf_api::app(state), stop, Duration::from_secs(30)).await;
        // Background writes of accepted jobs get a moment to finish; the queue holds the jobs
        // regardless.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn manager(args: ManagerArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let code = rt.block_on(async move {
        std::fs::create_dir_all(&args.data_dir)?;
        let data_dir = std::fs::canonicalize(&args.data_dir)?;
        let cache = data_dir.join("cache");
        let workers_dir = data_dir.join("workers");
        std::fs::create_dir_all(&cache)?;
        std::fs::create_dir_all(&workers_dir)?;
        let registry = Registry::builtin(&cache)?;
        let sandboxes = Arc::new(Sandboxes::new(SandboxConfig {
            binds: registry.bind_paths(),
            worker_socket_dir: Some(workers_dir),
            ..Default::default()
        })?);
        tokio::task::spawn_blocking(move || {
            for lang in registry.all().iter().filter(|l| l.absent.is_none()) {
                let _ = registry.get(&lang.spec.name);
            }
        });
        let queue = Arc::new(JetStreamQueue::connect(&args.services.nats_url, args.services.jetstream()).await?);
        let meta = Arc::new(PgStore::connect(&args.services.database_url)?);
        let objects = Arc::new(S3Objects::new(&args.services.s3())?);
        let prometheus = crate::telemetry::install()?;
        let cfg = ManagerConfig {
            workers: args.workers.unwrap_or_else(|| ManagerConfig::default().workers),
            max_attempts: args.max_attempts,
            progress_every: Some(Duration::from_secs(args.services.ack_wait_secs.max(1)) / 3),
            ..Default::default()
        };
        let manager = Arc::new(Manager::new(
            meta,
            objects,
            queue,
            sandboxes,
            registry,
            cfg,
            Events::default(),
        ));
        if let Some(addr) = &args.listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("listen on {addr}"))?;
            eprintln!("wolf: manager metrics on http://{}", listener.local_addr()?);
            let app = axum::Router::new()
                .route(
                    "/healthz",
                    axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
                )
                .route(
                    "/readyz",
                    axum::routing::get({
                        let pool = manager.gauges.clone();
                        move || async move {
                            match pool.readiness() {
                                Ok(()) => Ok(axum::Json(serde_json::json!({"status": "ready"}))),
                                Err(why) => Err(wolf_api::ApiError::Unavailable(format!("not ready: {why}"))),
                            }
                        }
                    }),
                )
                .route(
                    "/metrics",
                    axum::routing::get(move || async move { prometheus.render() }),
                );
            // May be dropped at shutdown: it only reports.
            tokio::spawn(async move { axum::serve(listener, app).await });
        }
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(manager.run(stop_rx));
        eprintln!("wolf: manager running");
        crate::serve::shutdown_signal().await;
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(120), task).await;
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    });
    rt.shutdown_background();
    code
}
