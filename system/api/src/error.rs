//! The one error type at the HTTP edge: a status, a stable code, a message meant for the
//! client. Internal causes are logged, never sent.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;
use wolf_store::StoreError;

/// An API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiError {
    /// 400: the body is not valid JSON / multipart.
    Malformed(String),
    /// 404.
    NotFound(String),
    /// 409: idempotency key reused with another body, or output not ready.
    Conflict(String),
    /// 413.
    TooLarge(String),
    /// 415.
    MediaType(String),
    /// 422: a field is invalid (unknown engine, limits past caps...).
    Invalid(String),
    /// 429: too many requests in flight.
    Overloaded,
    /// 429: past a quota of the API key; retry after this many seconds.
    Limited(String, u64),
    /// 503: queue full, shutting down, or a dependency is down.
    Unavailable(String),
    /// 503: the job would wait in the queue longer than `max_queue_wait`; retry after this many
    /// seconds (when the backlog should have drained below it).
    Backlogged(String, u64),
    /// 410: it existed and is gone (a session reaped, deleted, or lost with its host).
    Gone(String),
    /// 501: this deployment does not offer it.
    NotImplemented(String),
    /// 405: the route exists, the method does not.
    MethodNotAllowed(String),
    /// 408: the request body did not arrive in time.
    Timeout(String),
    /// 401: no API key, or not a valid one (`WWW-Authenticate: Bearer`).
    Unauthorized(String),
    /// 403: the key is valid and this is outside its scopes.
    Forbidden(String),
    /// 500: a bug (a handler panicked); logged, never with internals in the message.
    Internal,
}

/// The JSON body of every error.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable message.
    pub message: String,
}

impl ApiError {
    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::MediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Overloaded | ApiError::Limited(..) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) | ApiError::Backlogged(..) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Gone(_) => StatusCode::GONE,
            ApiError::NotImplemented(_) => StatusCode::NOT_IMPLEMENTED,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Malformed(_) => "malformed_request",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge(_) => "too_large",
            ApiError::MediaType(_) => "unsupported_media_type",
            ApiError::Invalid(_) => "invalid_field",
            ApiError::Overloaded => "overloaded",
            ApiError::Limited(..) => "quota_exceeded",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Backlogged(..) => "queue_wait_too_long",
            ApiError::MethodNotAllowed(_) => "method_not_allowed",
            ApiError::Gone(_) => "gone",
            ApiError::NotImplemented(_) => "not_implemented",
            ApiError::Timeout(_) => "request_timeout",
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Internal => "internal",
        }
    }

    /// Seconds for `Retry-After`, on the refusals a client should retry.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Overloaded | ApiError::Unavailable(_) => Some(1),
            ApiError::Limited(_, after) | ApiError::Backlogged(_, after) => Some(*after),
            _ => None,
        }
    }

    pub fn message(&self) -> String {
        match self {
            ApiError::Overloaded => "too many requests in flight; retry after the Retry-After delay".into(),
            ApiError::Internal => "an internal error occurred; it was logged".into(),
            ApiError::Malformed(m)
            | ApiError::NotFound(m)
            | ApiError::Conflict(m)
            | ApiError::TooLarge(m)
            | ApiError::MediaType(m)
            | ApiError::Invalid(m)
            | ApiError::Unavailable(m)
            | ApiError::MethodNotAllowed(m)
            | ApiError::Gone(m)
            | ApiError::NotImplemented(m)
            | ApiError::Timeout(m)
            | ApiError::Unauthorized(m)
            | ApiError::Forbidden(m)
            | ApiError::Limited(m, _)
            | ApiError::Backlogged(m, _) => m.clone(),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::QueueFull { .. } => {
                metrics::counter!("wolf_refusals_total", "layer" => "queue").increment(1);
                ApiError::Unavailable(e.to_string())
            }
            StoreError::IdempotencyConflict { .. } => ApiError::Conflict(e.to_string()),
            StoreError::InvalidKey(_) => ApiError::Invalid(e.to_string()),
            other => {
                tracing::error!(error = %other, source = ?std::error::Error::source(&other), "storage error");
                ApiError::Unavailable("storage is unavailable; retry later".into())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message: self.message(),
            },
        };
        let mut resp = (status, Json(body)).into_response();
        if let Some(after) = self.retry_after() {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(after));
        }
        if matches!(self, ApiError::Unauthorized(_)) {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"wolf\""),
            );
        }
        resp
    }
}
