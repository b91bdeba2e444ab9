//! The API as a service: [`run_api`] serves one listener from its dependencies until shutdown,
//! the same way in both modes (`wolf serve` passes the embedded stores, `wolf api` the
//! distributed ones); [`probes`] is the health, readiness and metrics router a process without
//! the job routes (`wolf manager`) serves.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::TcpListener;
use wolf_core::Registry;
use wolf_store::{Events, Metadata, Objects, Queue};

use crate::{ApiConfig, ApiError, AppState, Readiness};

/// What an API serves from.
pub struct ApiDeps {
    /// Job records.
    pub meta: Arc<dyn Metadata>,
    /// Code and output.
    pub objects: Arc<dyn Objects>,
    /// The durable queue.
    pub queue: Arc<dyn Queue>,
    /// Languages.
    pub registry: &'static Registry,
    /// Queued and finished notifications (shared with an in-process manager).
    pub events: Events,
    /// Prometheus rendering for `/metrics`.
    pub prometheus: Option<PrometheusHandle>,
    /// A check `/readyz` adds (an in-process pool that cannot prepare sandboxes).
    pub readiness: Option<Readiness>,
    /// A second listener serving Judge0's API at its root (`judge0_listen`).
    pub judge0: Option<TcpListener>,
    /// A listener serving Piston's API under `/api/v2/` (`piston_listen`).
    pub piston: Option<TcpListener>,
    /// Where sessions live (none: no sessions here).
    pub sessions: Option<Arc<dyn wolf_store::SessionHost>>,
    /// API keys (the metadata store's), checked when `cfg.auth_required`.
    pub keys: Option<Arc<dyn wolf_store::Keys>>,
    /// The keys' quotas (the metadata store's), enforced when keys are.
    pub quotas: Option<Arc<dyn wolf_store::Quotas>>,
    /// The webhook outbox (the metadata store's): this API delivers from it.
    pub outbox: Option<Arc<dyn wolf_store::Outbox>>,
    /// Deleting jobs (the metadata store's): `DELETE /job/{id}`, and the retention loop when
    /// `cfg.retention` is set.
    pub retention: Option<Arc<dyn wolf_store::Retention>>,
}

/// Requests in flight get this long to finish after shutdown begins.
pub const DRAIN: Duration = Duration::from_secs(30);

/// Background writes of accepted jobs get this long after the listener closed (the queue holds
/// every accepted job regardless, and the manager writes its record too).
pub const WRITES_DRAIN: Duration = Duration::from_secs(10);

/// Serve the API on `listener` until `shutdown` resolves: intake stops at once (`/readyz` and
/// `POST /job` answer 503), requests in flight finish, then the background writes of accepted
/// jobs.
pub async fn run_api(listener: TcpListener, cfg: ApiConfig, deps: ApiDeps, shutdown: impl Future<Output = ()>) {
    let ready = Arc::new(AtomicBool::new(true));
    let mut state = AppState::new(
        deps.meta,
        deps.objects,
        deps.queue,
        deps.registry,
        cfg,
        deps.events,
        deps.prometheus,
        ready.clone(),
    );
    state.readiness = deps.readiness;
    state.sessions = deps.sessions;
    state.keys = deps.keys;
    state.quotas = deps.quotas;
    state.outbox = deps.outbox.clone();
    // Webhooks go out while the API serves (a delivery cut short by the exit is leased and
    // made again by whichever API takes it next).
    let sender = deps
        .outbox
        .map(|o| tokio::spawn(crate::webhooks::run(state.clone(), o)));
    state.retention = deps.retention.clone();
    let history = state.clone();
    tokio::spawn(async move { crate::deadline::learn_from_history(&history).await });
    let expiry = deps
        .retention
        .zip(state.cfg.retention)
        .map(|(r, keep)| tokio::spawn(crate::retention::run(state.clone(), r, keep)));
    let pending = state.pending_writes.clone();
    let (stopped, stopping) = tokio::sync::watch::channel(false);
    let stop = async move {
        shutdown.await;
        ready.store(false, Ordering::Relaxed);
        let _ = stopped.send(true);
    };
    // The doors' own listeners stop with the main one and drain the same way.
    let doors = [
        deps.judge0.map(|l| (l, crate::judge0_app(state.clone()))),
        deps.piston.map(|l| (l, crate::piston_app(state.clone()))),
    ];
    let doors: Vec<_> = doors
        .into_iter()
        .flatten()
        .map(|(l, app)| {
            let mut stopping = stopping.clone();
            tokio::spawn(crate::serve::serve(
                l,
                app,
                async move {
                    let _ = stopping.wait_for(|s| *s).await;
                },
                DRAIN,
            ))
        })
        .collect();
    crate::serve::serve(listener, crate::app(state), stop, DRAIN).await;
    for d in doors {
        let _ = d.await;
    }
    for task in [sender, expiry].into_iter().flatten() {
        task.abort();
    }
    let deadline = tokio::time::Instant::now() + WRITES_DRAIN;
    loop {
        let left = pending.lock().unwrap_or_else(|e| e.into_inner()).len();
        if left == 0 {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(
                left,
                "accepted jobs still being written at exit; the queue and the manager have them"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `/healthz`, `/readyz` (from `readiness`) and `/metrics`, for a process that serves no jobs.
pub fn probes(readiness: Readiness, prometheus: PrometheusHandle) -> Router {
    Router::new()
        .route("/healthz", get(crate::routes::healthz))
        .route(
            "/readyz",
            get(move || async move {
                match readiness() {
                    Ok(()) => Ok(axum::Json(serde_json::json!({"status": "ready"}))),
                    Err(why) => Err(ApiError::Unavailable(format!("not ready: {why}"))),
                }
            }),
        )
        .route("/metrics", get(move || async move { prometheus.render() }))
        .fallback(crate::routes::not_found)
}
