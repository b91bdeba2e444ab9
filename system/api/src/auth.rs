//! Authentication, scopes and ownership at the edge.
//!
//! When authentication is required (Wolf listens beyond loopback, or `auth = "on"`), every
//! route but the probes, `/metrics` and `/openapi.json` takes an API key: `Authorization:
//! Bearer <key>` or `X-Auth-Token: <key>` (Judge0's header). No key, a malformed one, an
//! unknown one or a revoked one is 401; a valid key outside its scopes (an engine it may not
//! use, the dead letters without admin) is 403. What a key creates is its own: a job or a
//! session of another key is 404 everywhere, never 403, so an id tells nothing.
//!
//! The principal travels with the request as a task-local ([`current`]), so every front door
//! (Wolf's, Judge0's, Piston's, the WebSocket) stamps and checks ownership in the one place
//! each already goes through: admission and the job lookup. Without authentication the
//! principal is [`Principal::Open`]: everything visible, as before keys existed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use wolf_core::auth::{ApiKey, Principal, hash_secret, well_formed};

use crate::{ApiError, AppState};

tokio::task_local! {
    static PRINCIPAL: Principal;
}

/// Who the current request is (`Open` outside a request or without authentication).
pub fn current() -> Principal {
    PRINCIPAL.try_with(Clone::clone).unwrap_or(Principal::Open)
}

/// The current key's name, for an audit line ("" without authentication).
pub fn key_name() -> String {
    match current() {
        Principal::Key(k) => k.name,
        Principal::Open => String::new(),
    }
}

/// The current key when it has a quota (rate, concurrency or max_queued); cloned only then,
/// so the admission of a key without quotas pays nothing here.
pub fn limited_key() -> Option<ApiKey> {
    PRINCIPAL
        .try_with(|p| match p {
            Principal::Key(k) if k.rate.is_some() || k.concurrency.is_some() || k.max_queued.is_some() => {
                Some((**k).clone())
            }
            _ => None,
        })
        .ok()
        .flatten()
}

/// Whether the current request may see what `owner` created (no clone of the key).
pub fn may_see(owner: Option<&str>) -> bool {
    PRINCIPAL.try_with(|p| p.may_see(owner)).unwrap_or(true)
}

/// Run `f` as `p` (a task the request spawns, e.g. a WebSocket after its upgrade).
pub async fn scope<F: std::future::Future>(p: Principal, f: F) -> F::Output {
    PRINCIPAL.scope(p, f).await
}

/// How long a key looked up (or found missing) is trusted before the store is asked again: a
/// revocation takes effect on every API within this.
pub const CACHE_TTL: Duration = Duration::from_secs(2);
/// Entries kept at most (a flood of random keys cannot grow it without bound).
const CACHE_MAX: usize = 10_000;

/// Keys by secret hash, briefly.
#[derive(Debug, Default)]
pub struct KeyCache {
    entries: Mutex<HashMap<String, (Option<ApiKey>, Instant)>>,
}

impl KeyCache {
    fn get(&self, hash: &str) -> Option<Option<ApiKey>> {
        let map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        map.get(hash)
            .filter(|(_, at)| at.elapsed() < CACHE_TTL)
            .map(|(k, _)| k.clone())
    }

    fn put(&self, hash: String, key: Option<ApiKey>) {
        let mut map = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= CACHE_MAX {
            map.retain(|_, (_, at)| at.elapsed() < CACHE_TTL);
            if map.len() >= CACHE_MAX {
                map.clear();
            }
        }
        map.insert(hash, (key, Instant::now()));
    }
}

/// The WebSocket subprotocol a key rides in when the client cannot set a header (a browser's
/// `new WebSocket(url, ["wolf.v1", "wolf.bearer." + key])`); the server answers `wolf.v1`.
pub const WS_BEARER: &str = "wolf.bearer.";

/// The presented secret: `Authorization: Bearer …`, else `X-Auth-Token`, else, on a WebSocket
/// upgrade only, a [`WS_BEARER`] subprotocol.
fn presented(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get(axum::http::header::AUTHORIZATION) {
        let v = v.to_str().ok()?;
        let (scheme, token) = v.split_once(' ')?;
        return scheme.eq_ignore_ascii_case("bearer").then(|| token.trim());
    }
    if let Some(v) = headers.get("x-auth-token") {
        return v.to_str().ok().map(str::trim);
    }
    let upgrade = headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return None;
    }
    headers
        .get_all(axum::http::header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .find_map(|p| p.trim().strip_prefix(WS_BEARER))
}

fn refuse(reason: &'static str, key: &str) -> Response {
    tracing::warn!(target: "wolf::audit", event = "auth_failure", reason, key, "request refused: {reason}");
    metrics::counter!("wolf_auth_failures_total", "reason" => reason, "key" => key.to_string()).increment(1);
    ApiError::Unauthorized(match reason {
        "missing" => "an API key is required: Authorization: Bearer <key>".into(),
        "revoked" => "this API key was revoked".into(),
        _ => "the API key is not valid".into(),
    })
    .into_response()
}

/// The middleware: authenticate, check the ownership of a session in the path, then run the
/// request as its principal.
pub async fn authenticate(State(st): State<AppState>, req: Request, next: Next) -> Response {
    // Without authentication nothing is scoped: `current()` is `Open` outside a scope.
    let Some(keys) = st.keys.clone().filter(|_| st.cfg.auth_required) else {
        return next.run(req).await;
    };
    let Some(secret) = presented(req.headers()) else {
        return refuse("missing", "-");
    };
    if !well_formed(secret) {
        return refuse("malformed", "-");
    }
    let hash = hash_secret(secret);
    let key = match st.key_cache.get(&hash) {
        Some(k) => k,
        None => match keys.key_by_hash(&hash).await {
            Ok(k) => {
                st.key_cache.put(hash, k.clone());
                k
            }
            Err(e) => return ApiError::from(e).into_response(),
        },
    };
    let Some(key) = key else {
        return refuse("unknown", "-");
    };
    if key.revoked_at.is_some() {
        return refuse("revoked", &key.name);
    }
    metrics::counter!("wolf_requests_by_key_total", "key" => key.name.clone()).increment(1);
    let p = Principal::Key(Box::new(key));
    if !p.sees_all()
        && let Some(id) = session_in_path(req.uri().path())
    {
        match keys.owner(id).await {
            Ok(owner) if p.may_see(owner.as_deref()) => {}
            Ok(_) => return ApiError::NotFound(format!("session {id} not found")).into_response(),
            Err(e) => return ApiError::from(e).into_response(),
        }
    }
    scope(p, next.run(req)).await
}

/// `/session/{id}` and below: the id.
fn session_in_path(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/session/")?;
    Some(rest.split('/').next().unwrap_or(rest)).filter(|id| !id.is_empty())
}

/// 403 unless the current principal sees everything.
pub fn require_admin(what: &str) -> Result<(), ApiError> {
    if current().sees_all() {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("{what} needs an admin key")))
    }
}

/// 403 when the current key may not use `engine`.
pub fn check_engine(engine: &str) -> Result<(), ApiError> {
    match current() {
        Principal::Key(k) if !k.allows_engine(engine) => Err(ApiError::Forbidden(format!(
            "this API key may not use the engine {engine:?}"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_comes_from_bearer_or_x_auth_token() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert("x-auth-token", "abc".parse().unwrap());
        assert_eq!(presented(&h), Some("abc"));
        h.insert("authorization", "Bearer xyz".parse().unwrap());
        assert_eq!(presented(&h), Some("xyz"), "Authorization wins");
        h.insert("authorization", "Basic xyz".parse().unwrap());
        assert_eq!(presented(&h), None, "only the bearer scheme");
        assert_eq!(session_in_path("/session/abc/exec"), Some("abc"));
        assert_eq!(session_in_path("/session/abc"), Some("abc"));
        assert_eq!(session_in_path("/session"), None);
        assert_eq!(session_in_path("/job/abc"), None);
    }
}
