//! Judge0 CE 1.13.1's API (COMPAT.md §1), served under `/judge0/`: a translation onto Wolf's
//! own job model. A submission is admitted through the same step as `POST /job` (one
//! execution path, the same durability, limits and sandbox), its token is the Wolf job id, and
//! the job is visible through Wolf's own API too. What Judge0 offers that Wolf does not do yet
//! is refused with Judge0's 422 shape, never silently ignored.

pub mod convert;

use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::AppState;
use crate::error::ApiError;
use convert::{Extra, LANGUAGES, STATUSES};

/// Judge0's version, exactly: the SDK picks its language table by it.
pub const VERSION: &str = "1.13.1";
/// At most this many submissions in one batch (Judge0's `max_submission_batch_size`).
pub const MAX_BATCH: usize = 20;

/// The routes, relative to where they are mounted (`/judge0`, or the root of `judge0_listen`).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(|| async { StatusCode::OK }))
        .route("/submissions", get(list).post(create))
        .route("/submissions/batch", get(batch_get).post(batch_create))
        .route("/submissions/{token}", get(show).delete(delete))
        .route("/languages", get(languages))
        .route("/languages/all", get(languages_all))
        .route("/languages/{id}", get(language))
        .route("/statuses", get(statuses))
        .route("/about", get(about))
        .route("/version", get(|| async { VERSION }))
        .route("/isolate", get(|| async { "Wolf's own sandbox (no isolate)" }))
        .route(
            "/license",
            get(|| async { "Wolf: see its repository. Judge0's API shape: GPL-3.0 Judge0 CE." }),
        )
        .route("/config_info", get(config_info))
        .route("/system_info", get(system_info))
        .route("/statistics", get(statistics))
        .route("/workers", get(workers))
}

#[derive(Debug, Default, Deserialize)]
struct Params {
    base64_encoded: Option<String>,
    wait: Option<String>,
    fields: Option<String>,
    tokens: Option<String>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true" | "1"))
}

fn j(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

/// A refusal: its status and Judge0's body for it (also a batch item's error hash).
/// A status, Judge0's body, and the `Retry-After` seconds of a refusal to retry.
struct Refusal(StatusCode, Value, Option<u64>);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let mut resp = j(self.0, self.1);
        if let Some(after) = self.2 {
            resp.headers_mut().insert(axum::http::header::RETRY_AFTER, after.into());
        }
        resp
    }
}

fn error(status: StatusCode, msg: impl Into<String>) -> Refusal {
    Refusal(status, json!({"error": msg.into()}), None)
}

/// Wolf's refusal in Judge0's shape: a field error for a 422 (the field guessed from Wolf's
/// message), `{"error"}` otherwise.
fn refusal(e: ApiError) -> Refusal {
    match e {
        ApiError::Invalid(msg) => {
            let field = [
                ("cpuTimeMs", "cpu_time_limit"),
                ("wallTimeMs", "wall_time_limit"),
                ("memoryMb", "memory_limit"),
                ("stackMb", "stack_limit"),
                ("fileSizeMb", "max_file_size"),
                ("pids", "max_processes_and_or_threads"),
                ("compilerOptions", "compiler_options"),
                ("args", "command_line_arguments"),
                ("engine", "language_id"),
                ("code", "source_code"),
            ]
            .iter()
            .find(|(w, _)| msg.contains(w))
            .map_or("submission", |(_, f)| f);
            Refusal(StatusCode::UNPROCESSABLE_ENTITY, convert::field_error(field, msg), None)
        }
        ApiError::Unavailable(_) => error(StatusCode::SERVICE_UNAVAILABLE, "queue is full"),
        ApiError::NotFound(m) => error(StatusCode::NOT_FOUND, m),
        ApiError::Limited(m, after) => Refusal(StatusCode::TOO_MANY_REQUESTS, json!({"error": m}), Some(after)),
        ApiError::Backlogged(m, after) => Refusal(StatusCode::SERVICE_UNAVAILABLE, json!({"error": m}), Some(after)),
        other => {
            let status = other.into_response().status();
            error(status, status.canonical_reason().unwrap_or("error"))
        }
    }
}

/// Parse a body as JSON whatever its content type says (Rails merges JSON and form params).
fn body_json(body: &Bytes) -> Result<Value, Refusal> {
    if body.is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_slice(body).map_err(|e| error(StatusCode::BAD_REQUEST, format!("the body is not JSON: {e}")))
}

/// Admit one Judge0 submission; its token, or the refusal.
async fn admit(st: &AppState, body: &Value, b64: bool) -> Result<String, Refusal> {
    let started = Instant::now();
    let sub = convert::submission(body, b64).map_err(|e| Refusal(StatusCode::UNPROCESSABLE_ENTITY, e, None))?;
    crate::routes::validate(st, &sub).map_err(refusal)?;
    let rec = crate::routes::accept(st, &sub, None, started).await.map_err(refusal)?;
    Ok(rec.id)
}

/// The record of `token` with what its answer needs, or `None` when Wolf has no such job.
async fn find(st: &AppState, token: &str, fields: &[&str]) -> Result<Option<(wolf_core::JobRecord, Extra)>, ApiError> {
    if uuid::Uuid::parse_str(token).is_err() {
        return Ok(None);
    }
    let Some(rec) = crate::routes::lookup(st, token).await? else {
        return Ok(None);
    };
    let mut extra = Extra::default();
    if fields.contains(&"stdout") && rec.status.is_final() {
        extra.stdout = st.objects.get(&wolf_core::job::output_key(token)).await?;
    }
    let wants_sub = fields.iter().any(|f| {
        matches!(
            *f,
            "source_code"
                | "stdin"
                | "expected_output"
                | "compiler_options"
                | "command_line_arguments"
                | "callback_url"
        ) || f.ends_with("_limit")
            || *f == "max_file_size"
            || *f == "max_processes_and_or_threads"
    });
    if wants_sub {
        extra.submission = st.meta.submission(token).await.ok().flatten();
    }
    Ok(Some((rec, extra)))
}

async fn create(State(st): State<AppState>, Query(q): Query<Params>, body: Bytes) -> Result<Response, Refusal> {
    let b64 = truthy(&q.base64_encoded);
    let fields = convert::fields(q.fields.as_deref()).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let token = admit(&st, &body_json(&body)?, b64).await?;
    if !truthy(&q.wait) {
        return Ok(j(StatusCode::CREATED, json!({"token": token})));
    }
    crate::routes::wait_final(&st, &token, st.cfg.wait_max)
        .await
        .map_err(refusal)?;
    let (rec, extra) = find(&st, &token, &fields)
        .await
        .map_err(refusal)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "submission not found"))?;
    Ok(match convert::answer(&rec, &extra, &fields, b64) {
        Ok(v) => j(StatusCode::CREATED, v),
        Err(msg) => j(StatusCode::CREATED, json!({"token": token, "error": msg})),
    })
}

async fn show(
    State(st): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, Refusal> {
    let fields = convert::fields(q.fields.as_deref()).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let (rec, extra) = found(&st, &token, &fields).await?;
    let v = convert::answer(&rec, &extra, &fields, truthy(&q.base64_encoded))
        .map_err(|msg| error(StatusCode::BAD_REQUEST, msg))?;
    Ok(j(StatusCode::OK, v))
}

/// [`find`], or Judge0's 404.
async fn found(st: &AppState, token: &str, fields: &[&str]) -> Result<(wolf_core::JobRecord, Extra), Refusal> {
    find(st, token, fields)
        .await
        .map_err(refusal)?
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "submission not found"))
}

async fn batch_create(State(st): State<AppState>, Query(q): Query<Params>, body: Bytes) -> Result<Response, Refusal> {
    let b64 = truthy(&q.base64_encoded);
    let body = body_json(&body)?;
    let subs = body
        .get("submissions")
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            error(
                StatusCode::BAD_REQUEST,
                "there should be at least one submission in a batch",
            )
        })?;
    if subs.len() > MAX_BATCH {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("number of submissions in a batch should be less than or equal to {MAX_BATCH}"),
        ));
    }
    let mut out = Vec::with_capacity(subs.len());
    let mut any = false;
    for s in subs {
        match admit(&st, s, b64).await {
            Ok(token) => {
                any = true;
                out.push(json!({"token": token}));
            }
            // The refusal's body is the item's error hash.
            Err(Refusal(_, why, _)) => out.push(why),
        }
    }
    let status = if any {
        StatusCode::CREATED
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok(j(status, Value::Array(out)))
}

async fn batch_get(State(st): State<AppState>, Query(q): Query<Params>) -> Result<Response, Refusal> {
    let fields = convert::fields(q.fields.as_deref()).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let tokens: Vec<&str> = q
        .tokens
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() || tokens.len() > MAX_BATCH {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!("give 1 to {MAX_BATCH} comma-separated tokens"),
        ));
    }
    let b64 = truthy(&q.base64_encoded);
    let mut out = Vec::with_capacity(tokens.len());
    for t in tokens {
        out.push(match find(&st, t, &fields).await.map_err(refusal)? {
            Some((rec, extra)) => {
                convert::answer(&rec, &extra, &fields, b64).map_err(|msg| error(StatusCode::BAD_REQUEST, msg))?
            }
            None => Value::Null,
        });
    }
    Ok(j(StatusCode::OK, json!({"submissions": out})))
}

/// Judge0 lists submissions only for an authorized user (`X-Auth-User`), and none is
/// configured: 403, as Judge0 answers by default. Wolf's own `GET /job` lists them.
async fn list() -> Response {
    StatusCode::FORBIDDEN.into_response()
}

/// Judge0's delete (as with ENABLE_SUBMISSION_DELETE): the submission as it was, always in
/// base64; one still In Queue or Processing is 400. The key rules of Wolf's `DELETE /job/{id}`.
async fn delete(
    State(st): State<AppState>,
    Path(token): Path<String>,
    Query(q): Query<Params>,
) -> Result<Response, Refusal> {
    let fields = convert::fields(q.fields.as_deref()).map_err(|e| error(StatusCode::BAD_REQUEST, e))?;
    let (rec, extra) = found(&st, &token, &fields).await?;
    if !rec.status.is_final() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "submission cannot be deleted because its status is {}",
                rec.status.as_str()
            ),
        ));
    }
    let v = convert::answer(&rec, &extra, &fields, true).map_err(|msg| error(StatusCode::BAD_REQUEST, msg))?;
    crate::routes::delete_ended(&st, &token).await.map_err(refusal)?;
    Ok(j(StatusCode::OK, v))
}

/// Wolf's engines present here, under their Judge0 ids, named by Judge0 with this host's
/// version.
async fn present(st: &AppState) -> Vec<(u32, String, &'static str)> {
    let reg = st.registry;
    tokio::task::spawn_blocking(move || {
        LANGUAGES
            .iter()
            .filter_map(|(id, engine, name)| {
                let l = reg.find(engine).ok().filter(|l| l.absent.is_none())?;
                let version = reg.version(l).unwrap_or_default();
                let family = name.split(" (").next().unwrap_or(name);
                let shown = if version.is_empty() {
                    name.to_string()
                } else {
                    format!("{family} ({version}; Judge0 id of {name})")
                };
                Some((*id, shown, *engine))
            })
            .collect()
    })
    .await
    .unwrap_or_default()
}

async fn languages(State(st): State<AppState>) -> Response {
    let mut l: Vec<Value> = present(&st)
        .await
        .into_iter()
        .map(|(id, name, _)| json!({"id": id, "name": name}))
        .collect();
    l.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    j(StatusCode::OK, Value::Array(l))
}

async fn languages_all(State(st): State<AppState>) -> Response {
    let l: Vec<Value> = present(&st)
        .await
        .into_iter()
        .map(|(id, name, _)| json!({"id": id, "name": name, "is_archived": false}))
        .collect();
    j(StatusCode::OK, Value::Array(l))
}

async fn language(State(st): State<AppState>, Path(id): Path<String>) -> Response {
    let found = present(&st)
        .await
        .into_iter()
        .find(|(i, _, _)| id.parse::<u32>() == Ok(*i));
    let Some((id, name, engine)) = found else {
        return error(StatusCode::NOT_FOUND, "language not found").into_response();
    };
    let Ok(l) = st.registry.find(engine) else {
        return error(StatusCode::NOT_FOUND, "language not found").into_response();
    };
    j(
        StatusCode::OK,
        json!({"id": id, "name": name, "is_archived": false, "source_file": l.spec.source,
            "compile_cmd": l.spec.compile.as_ref().map(|c| c.join(" ")), "run_cmd": l.spec.run.join(" ")}),
    )
}

async fn statuses() -> Response {
    let s: Vec<Value> = STATUSES
        .iter()
        .map(|(id, d)| json!({"id": id, "description": d}))
        .collect();
    j(StatusCode::OK, Value::Array(s))
}

async fn about() -> Response {
    j(
        StatusCode::OK,
        json!({"version": VERSION, "homepage": "https://github.com/judge0/judge0 (API shape); served by Wolf",
            "source_code": "https://github.com/judge0/judge0", "maintainer": "Wolf"}),
    )
}

/// Judge0's 39 configuration keys, with Wolf's values (in Judge0's units: seconds, KB).
async fn config_info(State(st): State<AppState>) -> Response {
    let caps = st.cfg.caps.run;
    let s = |ms: u64| ms as f64 / 1000.0;
    let compiled: Vec<String> = LANGUAGES
        .iter()
        .filter(|(_, e, _)| st.registry.find(e).is_ok_and(|l| l.spec.compile.is_some()))
        .map(|(_, _, n)| n.to_string())
        .collect();
    j(
        StatusCode::OK,
        json!({
            "maintenance_mode": false,
            "enable_wait_result": true,
            "enable_compiler_options": true,
            "allowed_languages_for_compile_options": compiled,
            "enable_command_line_arguments": true,
            "enable_submission_delete": st.retention.is_some(),
            "enable_callbacks": true,
            "callbacks_max_tries": crate::webhooks::JUDGE0_MAX_TRIES,
            "callbacks_timeout": st.cfg.webhooks.timeout.as_secs_f64(),
            "enable_additional_files": true,
            "max_queue_size": st.queue.config().max_pending,
            "cpu_time_limit": 2.0,
            "max_cpu_time_limit": s(caps.cpu_time_ms),
            "cpu_extra_time": 0.0,
            "max_cpu_extra_time": 0.0,
            "wall_time_limit": 5.0,
            "max_wall_time_limit": s(caps.wall_time_ms),
            "memory_limit": 256 * 1024,
            "max_memory_limit": caps.memory_mb * 1024,
            "stack_limit": 64 * 1024,
            "max_stack_limit": caps.stack_mb.unwrap_or(caps.memory_mb) * 1024,
            "max_processes_and_or_threads": 16,
            "max_max_processes_and_or_threads": caps.pids,
            "enable_per_process_and_thread_time_limit": false,
            "allow_enable_per_process_and_thread_time_limit": false,
            "enable_per_process_and_thread_memory_limit": false,
            "allow_enable_per_process_and_thread_memory_limit": false,
            "max_file_size": 64 * 1024,
            "max_max_file_size": caps.file_size_mb.unwrap_or(wolf_core::limits::MAX_FILE_SIZE_MB) * 1024,
            "number_of_runs": 1,
            "max_number_of_runs": 1,
            "redirect_stderr_to_stdout": false,
            "max_extract_size": 0,
            "enable_batched_submissions": true,
            "max_submission_batch_size": MAX_BATCH,
            "submission_cache_duration": 0.0,
            "use_docs_as_homepage": false,
            "allow_enable_network": false,
            "enable_network": false,
        }),
    )
}

async fn system_info() -> Response {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    j(
        StatusCode::OK,
        json!({"Architecture": std::env::consts::ARCH, "CPU(s)": cpus.to_string(), "Mem": "", "Swap": ""}),
    )
}

async fn statistics(State(st): State<AppState>) -> Response {
    let depth = st.queue.depth().await.unwrap_or(0);
    j(StatusCode::OK, json!({"queued": depth}))
}

async fn workers(State(st): State<AppState>) -> Response {
    let depth = st.queue.depth().await.unwrap_or(0);
    j(
        StatusCode::OK,
        json!([{"queue": "wolf", "size": depth, "available": 0, "idle": 0, "working": 0, "paused": 0, "failed": 0}]),
    )
}
