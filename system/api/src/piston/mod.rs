//! Piston v2's API (COMPAT.md §3), served under `/api/v2/`: `GET /runtimes`, `POST /execute`
//! and `GET /packages`, as a translation onto Wolf's job model. An execute is admitted through
//! the same step as `POST /job` and waited for; the job stays visible through Wolf's own API.
//! A body is read as JSON whatever its Content-Type says: the npm `piston-client` sends none.

pub mod connect;
pub mod convert;

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use convert::Runtime;

/// The Piston version this door speaks.
pub const VERSION: &str = "3.1.1";

/// The routes, relative to `/api/v2`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/",
            get(|| async { message(StatusCode::OK, format!("Piston v{VERSION} (Wolf)")) }),
        )
        .route("/runtimes", get(runtimes))
        .route("/execute", post(execute))
        .route("/packages", get(packages))
        .route("/connect", get(connect::connect))
        .fallback(|| async { message(StatusCode::NOT_FOUND, "Not Found") })
}

fn message(status: StatusCode, m: impl Into<String>) -> Response {
    (status, axum::Json(json!({"message": m.into()}))).into_response()
}

/// Wolf's engines present here, each one runtime at the host's version.
async fn present(st: &AppState) -> Vec<Runtime> {
    let reg = st.registry;
    tokio::task::spawn_blocking(move || {
        reg.all()
            .iter()
            .filter(|l| l.absent.is_none())
            .map(|l| Runtime {
                language: l.spec.name.clone(),
                version: reg
                    .version(l)
                    .and_then(|v| convert::semver_of(&v))
                    .unwrap_or_else(|| "0.0.0".into()),
                aliases: l.spec.aliases.clone(),
                source: l.spec.source.clone(),
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

async fn runtimes(State(st): State<AppState>) -> Response {
    let list: Vec<Value> = present(&st)
        .await
        .into_iter()
        .map(|r| json!({"language": r.language, "version": r.version, "aliases": r.aliases}))
        .collect();
    (StatusCode::OK, axum::Json(list)).into_response()
}

async fn packages(State(st): State<AppState>) -> Response {
    let list: Vec<Value> = present(&st)
        .await
        .into_iter()
        .map(|r| json!({"language": r.language, "language_version": r.version, "installed": true}))
        .collect();
    (StatusCode::OK, axum::Json(list)).into_response()
}

/// Wolf's refusal as Piston's: 400 with a message for a bad request, the status otherwise.
fn refusal(e: ApiError) -> Response {
    match e {
        ApiError::Invalid(m) | ApiError::Malformed(m) => message(StatusCode::BAD_REQUEST, m),
        ApiError::Forbidden(m) => message(StatusCode::FORBIDDEN, m),
        e @ (ApiError::Limited(..) | ApiError::Backlogged(..)) => {
            let after = e.retry_after().unwrap_or(1);
            let mut resp = message(e.status(), e.message());
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, after.into());
            resp
        }
        other => {
            let status = other.into_response().status();
            message(status, status.canonical_reason().unwrap_or("error"))
        }
    }
}

async fn execute(State(st): State<AppState>, body: Bytes) -> Response {
    let started = Instant::now();
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return message(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")),
    };
    let runtimes = present(&st).await;
    let (sub, rt) = match convert::submission(&body, &runtimes, &st.cfg.caps) {
        Ok(x) => x,
        Err(m) => return message(StatusCode::BAD_REQUEST, m),
    };
    if let Err(e) = crate::routes::validate(&st, &sub) {
        return refusal(e);
    }
    let rec = match crate::routes::accept(&st, &sub, None, started).await {
        Ok(r) => r,
        Err(e) => return refusal(e),
    };
    let rec = match crate::routes::wait_final(&st, &rec.id, st.cfg.wait_max).await {
        Ok(r) if r.status.is_final() => r,
        Ok(r) => {
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "job {} did not finish within {} s; GET /job/{} follows it",
                    r.id,
                    st.cfg.wait_max.as_secs(),
                    r.id
                ),
            );
        }
        Err(e) => return refusal(e),
    };
    let stdout = match st.objects.get(&wolf_core::job::output_key(&rec.id)).await {
        Ok(d) => d.unwrap_or_default(),
        Err(e) => return refusal(e.into()),
    };
    let compiled = st.registry.find(&rt.language).is_ok_and(|l| l.spec.compile.is_some());
    (
        StatusCode::OK,
        axum::Json(convert::answer(&rec, &rt, compiled, &stdout)),
    )
        .into_response()
}
