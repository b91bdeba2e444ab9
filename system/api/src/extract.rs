//! Extractors whose rejections are the API's JSON errors (axum's own answer in `text/plain`),
//! and the checks every query value and id passes before anything is read from a store.

use std::time::Duration;

use axum::extract::{FromRequestParts, Path, Query};
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::ApiError;

/// A job id from the path, checked to be a UUID before any store access: anything else names no
/// job (404), however long or strange it is.
#[derive(Debug, Clone)]
pub struct JobId(pub String);

/// At most this much of a rejected value is echoed back in a message.
const ECHO: usize = 64;

fn echo(s: &str) -> String {
    match s.char_indices().nth(ECHO) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for JobId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // By name: the same extractor serves `/job/{id}` and `/job/{id}/tests/{n}/output`.
        let Path(mut params) = Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound("no job has this id (ids are UUIDs)".into()))?;
        let raw = params
            .remove("id")
            .ok_or_else(|| ApiError::NotFound("no job has this id (ids are UUIDs)".into()))?;
        match uuid::Uuid::try_parse(&raw) {
            Ok(u) if raw.len() == 36 => Ok(JobId(u.hyphenated().to_string())),
            _ => Err(ApiError::NotFound(format!(
                "job {:?} not found (ids are UUIDs)",
                echo(&raw)
            ))),
        }
    }
}

/// A test's index from the path (`/job/{id}/tests/{n}/...`, counting from 0 as
/// `result.tests`): anything but a small whole number names no test (404).
#[derive(Debug, Clone, Copy)]
pub struct TestIndex(pub usize);

impl<S: Send + Sync> FromRequestParts<S> for TestIndex {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Path(params) = Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound("no such test".into()))?;
        let raw = params.get("n").map(String::as_str).unwrap_or("");
        match raw.parse::<usize>() {
            Ok(n) if raw.len() <= 4 && raw.bytes().all(|b| b.is_ascii_digit()) => Ok(TestIndex(n)),
            _ => Err(ApiError::NotFound(format!(
                "test {:?} not found (tests are numbered from 0, as result.tests)",
                echo(raw)
            ))),
        }
    }
}

/// `Query<T>` answering malformed values with the JSON error shape (400).
#[derive(Debug, Clone, Copy, Default)]
pub struct Q<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Q<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Q(v))
            .map_err(|e| ApiError::Malformed(format!("invalid query: {}", e.body_text())))
    }
}

/// A query value that is a whole number, also written with a zero fraction (`20.0`).
pub fn whole_query_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    if let Ok(n) = text.parse::<u64>() {
        return Ok(Some(n));
    }
    match text.parse::<f64>() {
        Ok(f) if f.fract() == 0.0 && (0.0..=u64::MAX as f64).contains(&f) => Ok(Some(f as u64)),
        _ => Err(serde::de::Error::custom(format!("{text:?} is not a whole number"))),
    }
}

/// A `?timeout=` in seconds: finite, not negative; clamped to `max`; `default` when absent.
pub fn wait_timeout(secs: Option<f64>, default: Duration, max: Duration) -> Result<Duration, ApiError> {
    match secs {
        None => Ok(default),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Duration::from_secs_f64(s.min(max.as_secs_f64()))),
        Some(s) => Err(ApiError::Invalid(format!(
            "timeout must be a number of seconds from 0 to {}; got {s}",
            max.as_secs()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_finite_and_not_negative() {
        let (d, m) = (Duration::from_secs(30), Duration::from_secs(300));
        assert_eq!(wait_timeout(None, d, m).unwrap(), d);
        assert_eq!(wait_timeout(Some(1.5), d, m).unwrap(), Duration::from_millis(1500));
        assert_eq!(wait_timeout(Some(1e300), d, m).unwrap(), m);
        for bad in [f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -1.0] {
            assert!(
                matches!(wait_timeout(Some(bad), d, m), Err(ApiError::Invalid(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn echoed_values_are_cut() {
        assert_eq!(echo("abc"), "abc");
        assert_eq!(echo(&"é".repeat(5000)).chars().count(), ECHO + 1);
    }
}
