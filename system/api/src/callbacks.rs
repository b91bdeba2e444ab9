//! A job's webhook as its owner sees it: where it stands (`GET /job/{id}/webhook`) and a
//! redelivery (`POST /job/{id}/webhook/redeliver`), for a receiver that lost a delivery or was
//! down past a day of retries. Both read the job through the same lookup as every route, so
//! another key's job is 404 here too; the outbox row is the one the senders work from
//! (webhooks.rs), so a redelivery is sent by whichever API leases it next, signed as always.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{TimeZone, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::extract::JobId;
use crate::routes::{IdPath, lookup};

/// Where a job's webhook stands.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookStatus {
    /// The job.
    pub job_id: String,
    /// Where it is sent (the submission's `callbackUrl`; absent when it had none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// `waiting` (for the job to end, or for the next attempt), `delivered`, `failed` (a 4xx or
    /// 3xx answer, a refused address, or a day of failed attempts), or `none` (the submission
    /// had no `callbackUrl`).
    pub state: String,
    /// Attempts made so far.
    pub attempts: u32,
    /// When the next attempt is due (waiting only; it waits for the job to end first).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<chrono::DateTime<Utc>>,
    /// What the last failed attempt met.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// The outbox the senders work from (501 where this deployment has none).
fn outbox(st: &AppState) -> Result<&std::sync::Arc<dyn wolf_store::Outbox>, ApiError> {
    st.outbox
        .as_ref()
        .ok_or_else(|| ApiError::NotImplemented("this deployment sends no webhooks".into()))
}

/// Job `id` as the current key may see it (404 otherwise, as on every route).
async fn job(st: &AppState, id: &str) -> Result<wolf_core::JobRecord, ApiError> {
    lookup(st, id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("job {id} not found")))
}

/// Where the webhook of job `id` stands (a job without a callback has the state `none`: the
/// job is there, so this is not a 404, which says only "no such job").
async fn status_of(st: &AppState, id: &str) -> Result<WebhookStatus, ApiError> {
    Ok(match outbox(st)?.webhook_state(id).await? {
        Some(w) => WebhookStatus {
            job_id: id.to_string(),
            url: Some(w.url),
            state: w.state,
            attempts: w.attempts,
            next_attempt_at: w.next_ms.and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
            last_error: w.last_error,
        },
        None => WebhookStatus {
            job_id: id.to_string(),
            url: None,
            state: "none".into(),
            attempts: 0,
            next_attempt_at: None,
            last_error: None,
        },
    })
}

/// Where the job's webhook stands: waiting, delivered or failed, its attempts and last error.
#[utoipa::path(get, path = "/job/{id}/webhook", params(IdPath),
    responses((status = 200, body = WebhookStatus), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody),
        (status = 501, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn webhook(State(st): State<AppState>, JobId(id): JobId) -> Result<Json<WebhookStatus>, ApiError> {
    job(&st, &id).await?;
    status_of(&st, &id).await.map(Json)
}

/// Send the job's final record to its `callbackUrl` again, now, with a fresh day of retries
/// (202; the delivery is asynchronous, as the first). 409 for a job that has not ended (its
/// webhook is sent when it does) or has no `callbackUrl`.
#[utoipa::path(post, path = "/job/{id}/webhook/redeliver", params(IdPath),
    responses((status = 202, body = WebhookStatus), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 429, body = ErrorBody), (status = 501, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn redeliver(
    State(st): State<AppState>,
    JobId(id): JobId,
) -> Result<(StatusCode, Json<WebhookStatus>), ApiError> {
    let rec = job(&st, &id).await?;
    if !rec.status.is_final() {
        return Err(ApiError::Conflict(format!(
            "job {id} is {}; its webhook is sent once it has ended",
            rec.status.as_str()
        )));
    }
    if !outbox(&st)?.redeliver_webhook(&id).await? {
        return Err(ApiError::Conflict(format!(
            "job {id} has no callbackUrl: there is no webhook to send"
        )));
    }
    metrics::counter!("wolf_webhook_redeliveries_total").increment(1);
    let key = crate::auth::key_name();
    tracing::info!(target: "wolf::audit", event = "webhook_redelivery", job = %id, key, "webhook redelivery asked for");
    Ok((StatusCode::ACCEPTED, Json(status_of(&st, &id).await?)))
}
