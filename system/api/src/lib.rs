//! # wolf-api
//!
//! The HTTP API (ARCHITECTURE §4), seed-compatible: `POST /job`, `GET /job/{id}`,
//! `GET /job/{id}/output`, plus code, listing, languages, health, readiness, metrics and the
//! OpenAPI document generated from these handlers.
//!
//! Backpressure: an in-flight cap answers 429 + Retry-After at once; a job that would wait past
//! `max_queue_wait` ([`deadline`]) and the queue's pending bound answer 503. Bad input is a JSON error with the right status, never a 500.
//!
//! # Layout
//! - [`AppState`], [`app`]: dependencies and the router.
//! - [`routes`]: the handlers.
//! - [`error`]: [`ApiError`], the one error type at the edge.
//! - [`extract`]: ids and query values checked before use, with JSON rejections.
//! - [`serve`]: the HTTP server loop (header-read timeout, graceful shutdown).
//! - [`service`]: [`run_api`], the API as a service in either mode, and the probes router.
//! - [`persist`]: the admission's background writes (record and code object).
//! - [`deadline`]: admission by deadline (the estimated queue wait).
//! - [`retention`]: deleting ended jobs (by age, and `DELETE /job/{id}`).

pub mod auth;
pub mod callbacks;
pub mod console;
pub mod deadline;
pub mod error;
pub mod extract;
pub mod judge0;
pub mod live;
pub mod persist;
pub mod piston;
pub mod quota;
pub mod retention;
pub mod routes;
pub mod schema;
pub mod serve;
pub mod service;
pub mod sessions;
pub mod webhooks;
pub mod ws;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::Semaphore;
use wolf_core::{Caps, Registry};
use wolf_store::{Events, Metadata, Objects, Queue};

pub use error::ApiError;
pub use service::{ApiDeps, run_api};

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Requests handled at once; more are refused with 429.
    pub max_inflight: usize,
    /// Largest `code`, bytes (413 past it).
    pub max_code_bytes: usize,
    /// Largest request body, bytes (413 past it).
    pub max_body_bytes: usize,
    /// Default and maximum `?wait=true` timeout.
    pub wait_default: Duration,
    /// See `wait_default`.
    pub wait_max: Duration,
    /// Operator caps on limits.
    pub caps: Caps,
    /// A request body must arrive within this (408 after it): an idle client cannot hold an
    /// in-flight permit.
    pub body_timeout: Duration,
    /// Long polls (`wait=true`) held at once; they do not count against `max_inflight`.
    pub max_waits: usize,
    /// Extra files per submission.
    pub max_files: usize,
    /// Every request but the probes needs an API key ([`auth`]).
    pub auth_required: bool,
    /// Where webhooks may go and what signs them.
    pub webhooks: webhooks::WebhookConfig,
    /// Ended jobs older than this are deleted ([`retention`]); `None` keeps them.
    pub retention: Option<Duration>,
    /// A submission that would wait longer than this in the queue is refused ([`deadline`]);
    /// `None`: never.
    pub max_queue_wait: Option<Duration>,
    /// Workers taking jobs from this API's queue when the queue does not say (embedded: the
    /// process's own); 0: unknown.
    pub workers: usize,
    /// A tracing UI's page of a trace, `{trace_id}` standing for the id (`traceUrl` in the
    /// timeline, linked by the console).
    pub trace_url: Option<String>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_inflight: 512,
            max_code_bytes: 1 << 20,
            max_body_bytes: 16 << 20,
            wait_default: Duration::from_secs(30),
            wait_max: Duration::from_secs(300),
            caps: Caps::default(),
            body_timeout: Duration::from_secs(10),
            max_waits: 4096,
            max_files: 1000,
            auth_required: false,
            webhooks: webhooks::WebhookConfig {
                timeout: Duration::from_secs(10),
                ..Default::default()
            },
            retention: None,
            max_queue_wait: Some(Duration::from_secs(30)),
            workers: 0,
            trace_url: None,
        }
    }
}

/// Everything the handlers need; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Job records.
    pub meta: Arc<dyn Metadata>,
    /// Code and output.
    pub objects: Arc<dyn Objects>,
    /// The durable queue.
    pub queue: Arc<dyn Queue>,
    /// Languages.
    pub registry: &'static Registry,
    /// Settings.
    pub cfg: Arc<ApiConfig>,
    /// Queued/finished notifications.
    pub events: Events,
    /// Prometheus rendering.
    pub prometheus: Option<PrometheusHandle>,
    /// In-flight permits.
    pub inflight: Arc<Semaphore>,
    /// Long-poll permits.
    pub waits: Arc<Semaphore>,
    /// Set once workers are warm; cleared at shutdown.
    pub ready: Arc<AtomicBool>,
    /// A check `/readyz` adds (the embedded pool: `Err(why)` while no sandbox can be prepared).
    pub readiness: Option<Readiness>,
    /// Jobs accepted here whose record is not in the metadata store yet.
    pub pending_writes: Arc<std::sync::Mutex<std::collections::HashMap<String, wolf_core::JobRecord>>>,
    /// Where sessions live (none: this deployment offers no sessions).
    pub sessions: Option<Arc<dyn wolf_store::SessionHost>>,
    /// API keys and session owners (none: no authentication possible).
    pub keys: Option<Arc<dyn wolf_store::Keys>>,
    /// Keys recently looked up.
    pub key_cache: Arc<auth::KeyCache>,
    /// The keys' quotas (none: no quota enforced).
    pub quotas: Option<Arc<dyn wolf_store::Quotas>>,
    /// Admissions of a capped key on this API, one at a time.
    pub quota_locks: Arc<quota::KeyLocks>,
    /// The webhook outbox (none: callbacks are refused).
    pub outbox: Option<Arc<dyn wolf_store::Outbox>>,
    /// Deleting jobs (none: `DELETE /job/{id}` is refused, nothing expires).
    pub retention: Option<Arc<dyn wolf_store::Retention>>,
    /// The queue's depth as admission by deadline last read it.
    pub depth_hint: Arc<deadline::DepthHint>,
}

impl AppState {
    /// State with the in-flight semaphore sized from `cfg`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        meta: Arc<dyn Metadata>,
        objects: Arc<dyn Objects>,
        queue: Arc<dyn Queue>,
        registry: &'static Registry,
        cfg: ApiConfig,
        events: Events,
        prometheus: Option<PrometheusHandle>,
        ready: Arc<AtomicBool>,
    ) -> Self {
        let inflight = Arc::new(Semaphore::new(cfg.max_inflight));
        let waits = Arc::new(Semaphore::new(cfg.max_waits));
        Self {
            waits,
            meta,
            objects,
            queue,
            registry,
            cfg: Arc::new(cfg),
            events,
            prometheus,
            inflight,
            ready,
            pending_writes: Default::default(),
            readiness: None,
            sessions: None,
            keys: None,
            key_cache: Default::default(),
            quotas: None,
            quota_locks: Default::default(),
            outbox: None,
            retention: None,
            depth_hint: Default::default(),
        }
    }

    /// Authenticate with these keys (when `cfg.auth_required`).
    pub fn with_keys(mut self, keys: Arc<dyn wolf_store::Keys>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// Add a readiness check to `/readyz`.
    pub fn with_readiness(mut self, check: impl Fn() -> Result<(), String> + Send + Sync + 'static) -> Self {
        self.readiness = Some(Arc::new(check));
        self
    }
}

/// A readiness check: `Err(why)` when not ready.
pub type Readiness = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

impl AppState {
    /// A record accepted here and not yet in the metadata store.
    pub fn recent(&self, id: &str) -> Option<wolf_core::JobRecord> {
        self.pending_writes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned()
    }
}

/// Refuse at once (429) when too many requests are in flight, instead of queueing them; refuse
/// a declared body past the limit (413) before reading any of it. A long poll (`wait=true`)
/// takes a permit of its own bounded pool instead: waiting clients never lock out the rest.
async fn shed(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared
        && n > st.cfg.max_body_bytes as u64
    {
        return ApiError::TooLarge(format!(
            "the request body ({n} bytes) exceeds {} bytes",
            st.cfg.max_body_bytes
        ))
        .into_response();
    }
    // A Piston execute always waits for its job: a long poll like `wait=true`.
    let long_poll = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "wait=true" || kv == "wait=1"))
        || req.uri().path() == "/api/v2/execute";
    let pool = if long_poll { &st.waits } else { &st.inflight };
    match pool.clone().try_acquire_owned() {
        Ok(_permit) => next.run(req).await,
        Err(_) => {
            let layer = if long_poll { "waits" } else { "ingress" };
            metrics::counter!("wolf_refusals_total", "layer" => layer).increment(1);
            ApiError::Overloaded.into_response()
        }
    }
}

/// A handler panicked: a JSON 500, logged; the connection and the process live on.
fn panicked(err: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let what = err
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| err.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = %what, "a request handler panicked");
    metrics::counter!("wolf_handler_panics_total").increment(1);
    ApiError::Internal.into_response()
}

/// Judge0's API alone, at the root (the `judge0_listen` listener).
pub fn judge0_app(state: AppState) -> Router {
    door_app(state, judge0::router())
}

/// Piston's API alone, under `/api/v2/` as Piston serves it (the `piston_listen` listener).
pub fn piston_app(state: AppState) -> Router {
    door_app(state, Router::new().nest("/api/v2", piston::router()))
}

/// A front door on a listener of its own: the same handlers as on the main listener, behind the
/// same load shedding, body limit and panic guard.
fn door_app(state: AppState, routes: Router<AppState>) -> Router {
    let limit = state.cfg.max_body_bytes;
    routes
        .layer(middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), shed))
        .layer(DefaultBodyLimit::max(limit))
        .fallback(routes::not_found)
        .with_state(state)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
}

/// The router.
pub fn app(state: AppState) -> Router {
    let limit = state.cfg.max_body_bytes;
    let jobs = Router::new()
        .route("/job", get(routes::list).post(routes::submit))
        .route("/job/{id}", get(routes::get_job).delete(routes::delete_job))
        .route("/job/{id}/timeline", get(routes::timeline))
        .route("/job/{id}/webhook", get(callbacks::webhook))
        .route("/job/{id}/webhook/redeliver", axum::routing::post(callbacks::redeliver))
        .route("/job/{id}/events", get(live::events))
        .route("/job/ws", get(ws::job_ws))
        .route("/session", axum::routing::post(sessions::create))
        .route("/session/{id}", get(sessions::info).delete(sessions::delete))
        .route("/session/{id}/exec", axum::routing::post(sessions::exec))
        .route("/session/{id}/events", get(sessions::events))
        .route(
            "/session/{id}/files/{*path}",
            get(sessions::get_file).put(sessions::put_file),
        )
        .route("/job/{id}/output", get(routes::output))
        .route("/job/{id}/tests/{n}/output", get(routes::test_output))
        .route("/job/{id}/files/{*path}", get(routes::output_file))
        .route("/job/{id}/code", get(routes::code))
        .route("/dead-letters", get(routes::dead_letters))
        .route("/languages", get(routes::languages))
        .nest("/judge0", judge0::router())
        .nest("/api/v2", piston::router())
        .layer(middleware::from_fn_with_state(state.clone(), auth::authenticate))
        .layer(middleware::from_fn_with_state(state.clone(), shed))
        .layer(DefaultBodyLimit::max(limit));
    Router::new()
        .merge(jobs)
        .merge(console::router())
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
        .route("/openapi.json", get(routes::openapi))
        .fallback(routes::not_found)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .with_state(state)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
}
