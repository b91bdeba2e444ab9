//! Sessions over HTTP: `POST /session`, `GET` and `DELETE /session/{id}`, `POST
//! /session/{id}/exec`, and `PUT` / `GET /session/{id}/files/{path}`, answered by wherever the
//! deployment keeps sessions ([`wolf_store::SessionHost`]).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use wolf_core::session::{ExecRequest, ExecResult, SessionError, SessionInfo, SessionSpec};
use wolf_store::SessionHost;

use crate::error::ErrorBody;
use crate::{ApiError, AppState};

impl From<SessionError> for ApiError {
    fn from(e: SessionError) -> Self {
        match e {
            SessionError::NotFound(m) => ApiError::NotFound(m),
            SessionError::Gone(m) => ApiError::Gone(m),
            SessionError::Invalid(m) => ApiError::Invalid(m),
            SessionError::Full(m) | SessionError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

/// A JSON body of type `T` (415 for another content type, 400 for bad JSON, 422 for a field).
fn json_body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &[u8]) -> Result<T, ApiError> {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !ctype.starts_with("application/json") {
        return Err(ApiError::MediaType("send application/json".into()));
    }
    // An object, never an array: serde would read a struct from a JSON array by position.
    let v: serde_json::Value = serde_json::from_slice(body).map_err(crate::routes::json_error)?;
    if !v.is_object() {
        return Err(ApiError::Invalid("the body must be a JSON object".into()));
    }
    serde_json::from_value(v).map_err(crate::routes::json_error)
}

fn host(st: &AppState) -> Result<Arc<dyn SessionHost>, ApiError> {
    st.sessions
        .clone()
        .ok_or_else(|| ApiError::NotImplemented("this deployment keeps no sessions".into()))
}

/// A session id from the path: `s-` and 32 hex digits, as sessions are named.
pub struct SessionId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SessionId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(mut params) = Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound("no session has this id".into()))?;
        let id = params.remove("id").unwrap_or_default();
        let ok = id.len() == 34
            && id.starts_with("s-")
            && id[2..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
        if !ok {
            return Err(ApiError::NotFound(
                "no session has this id (ids are s- and 32 hex digits)".into(),
            ));
        }
        Ok(SessionId(id))
    }
}

/// The `{id}` path parameter of a session.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct SessionPath {
    /// The session's id.
    #[param(pattern = "^s-[0-9a-f]{32}$")]
    pub id: String,
}

/// Start a session: a sandbox kept between execs, its work dir persisting.
#[utoipa::path(post, path = "/session", request_body = SessionSpec,
    responses((status = 201, body = SessionInfo), (status = 400, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 501, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create(State(st): State<AppState>, headers: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let spec: SessionSpec = json_body(&headers, &body)?;
    if let Some(engine) = &spec.execution_engine {
        crate::auth::check_engine(engine)?;
    }
    let host = host(&st)?;
    let info = host.create(spec).await?;
    // A key's session is its own: recorded before the id is given out (the middleware checks
    // it on every later request); if it cannot be recorded, the session goes.
    if let (Some(owner), Some(keys)) = (crate::auth::current().owner().map(str::to_string), &st.keys)
        && let Err(e) = keys.set_owner(&info.id, &owner).await
    {
        let _ = host.delete(&info.id).await;
        return Err(e.into());
    }
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// A session's state, usage and expiry.
#[utoipa::path(get, path = "/session/{id}", params(SessionPath),
    responses((status = 200, body = SessionInfo), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 501, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn info(State(st): State<AppState>, SessionId(id): SessionId) -> Result<Json<SessionInfo>, ApiError> {
    Ok(Json(host(&st)?.info(&id).await?))
}

/// End a session: its sandbox and everything in it.
#[utoipa::path(delete, path = "/session/{id}", params(SessionPath),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 501, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete(State(st): State<AppState>, SessionId(id): SessionId) -> Result<StatusCode, ApiError> {
    host(&st)?.delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run a program or a shell command in the session's work dir.
#[utoipa::path(post, path = "/session/{id}/exec", params(SessionPath), request_body = ExecRequest,
    responses((status = 200, body = ExecResult), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 410, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 501, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn exec(
    State(st): State<AppState>,
    SessionId(id): SessionId,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<ExecResult>, ApiError> {
    let req: ExecRequest = json_body(&headers, &body)?;
    check_exec(&st, &req)?;
    Ok(Json(host(&st)?.exec(&id, req).await?))
}

/// What can be told of an exec without its session (before looking it up, so a bad request is
/// a 4xx for what it is, wherever the session lives).
fn check_exec(st: &AppState, req: &ExecRequest) -> Result<(), ApiError> {
    let text = match (&req.code, &req.command) {
        (Some(c), None) => c,
        (None, Some(c)) if req.execution_engine.is_none() => c,
        _ => {
            return Err(ApiError::Invalid(
                "give exactly one of code and command (a command takes no executionEngine)".into(),
            ));
        }
    };
    if text.len() > st.cfg.max_code_bytes {
        return Err(ApiError::TooLarge(format!(
            "the code is {} bytes; the limit is {}",
            text.len(),
            st.cfg.max_code_bytes
        )));
    }
    if wolf_core::names::is_blank(text) {
        return Err(ApiError::Invalid("the code or command is empty".into()));
    }
    if let Some(e) = &req.execution_engine {
        st.registry.find(e).map_err(|e| ApiError::Invalid(e.to_string()))?;
    }
    if req.output_files.len() > wolf_core::job::MAX_OUTPUT_PATTERNS {
        return Err(ApiError::Invalid(format!(
            "{} outputFiles; at most {} are allowed",
            req.output_files.len(),
            wolf_core::job::MAX_OUTPUT_PATTERNS
        )));
    }
    for p in &req.output_files {
        if !wolf_core::names::valid_output_pattern(p) {
            return Err(ApiError::Invalid(format!(
                "outputFiles: {p:?} is not a relative path or glob"
            )));
        }
    }
    Ok(())
}

fn file_path(raw: &str) -> Result<String, ApiError> {
    if !wolf_core::names::valid_file_path(raw) {
        return Err(ApiError::Invalid(format!(
            "{raw:?} is not a relative path of plain names (at most {} deep)",
            wolf_core::names::MAX_FILE_DEPTH
        )));
    }
    Ok(raw.to_string())
}

/// Write a file of the session's work dir (the body, as bytes), replacing one at that path.
pub async fn put_file(
    State(st): State<AppState>,
    SessionId(id): SessionId,
    Path((_, path)): Path<(String, String)>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let path = file_path(&path)?;
    host(&st)?.put_file(&id, &path, body.to_vec()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Read a file of the session's work dir, with a type from its extension.
pub async fn get_file(
    State(st): State<AppState>,
    SessionId(id): SessionId,
    Path((_, path)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let path = file_path(&path)?;
    let data = host(&st)?.get_file(&id, &path).await?;
    Ok((
        [
            (header::CONTENT_TYPE, crate::routes::content_type(&path)),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CONTENT_SECURITY_POLICY, "default-src 'none'; sandbox"),
        ],
        data,
    )
        .into_response())
}

/// The session's execs as they run, as Server-Sent Events: `stage` `exec` (its number in
/// `name`), the `stdout` and `stderr` chunks of an exec-mode session's programs, and `exit`;
/// the stream ends when the session does.
#[utoipa::path(get, path = "/session/{id}/events", params(SessionPath),
    responses((status = 200, description = "Server-Sent Events: stage, stdout, stderr, exit, lagged",
        content_type = "text/event-stream", body = String),
        (status = 404, body = ErrorBody), (status = 410, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 501, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn events(State(st): State<AppState>, SessionId(id): SessionId) -> Result<Response, ApiError> {
    let permit = crate::ws::permit(&st)?;
    let host = host(&st)?;
    let mut sub = st.events.streams.subscribe(&id).await;
    host.info(&id).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(crate::live::SUBSCRIBER_BUFFER);
    tokio::spawn(async move {
        let _permit = permit;
        for e in std::mem::take(&mut sub.replay) {
            if tx.send(e).await.is_err() {
                return;
            }
        }
        loop {
            let next = tokio::select! {
                e = sub.next() => e,
                // Quiet: the stream ends with the session.
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {
                    if host.info(&id).await.is_err() {
                        return;
                    }
                    continue;
                }
                _ = tx.closed() => return,
            };
            match next {
                Some(e) => {
                    if tx.send(e).await.is_err() {
                        return;
                    }
                }
                None => return,
            }
        }
    });
    Ok(crate::live::sse(rx))
}
