//! Webhooks: a submission's `callbackUrl` gets the job's final record when it ends.
//!
//! The outbox row is written with the job ([`wolf_store::Outbox`]); every API runs [`run`],
//! which leases due rows, sends each and settles it. A delivery is
//!
//! - `POST` of the record as `GET /job/{id}` shows it, with its `stdout` (lossy UTF-8) added
//!   (the Judge0 door's jobs: `PUT` of
//!   Judge0's submission shape, as Judge0's own callbacks are), `Content-Type:
//!   application/json`;
//! - signed: `Wolf-Signature: t=<unix seconds>, v1=<hex HMAC-SHA256 of "<t>.<body>">` under the
//!   owning key's webhook secret (`wolf keys webhook-secret` prints it), or the deployment's
//!   (`webhooks.secret`) for a job without a key; after a rotation, a second `v1` under the
//!   previous secret until its overlap ends;
//! - idempotent for the receiver: `Wolf-Webhook-Id` (and `Idempotency-Key`) is the job id, the
//!   same on every attempt; `Wolf-Webhook-Attempt` counts from 1.
//!
//! A 2xx is delivered; a network error or a 5xx is retried after 1, 2, 4 ... seconds (at most
//! an hour apart) until a day after the job was accepted; a 4xx or a 3xx (redirects are not
//! followed) ends it. Receivers on loopback, private, link-local (cloud metadata), shared,
//! multicast or reserved addresses are refused, after DNS resolution, unless the operator
//! allows them (`webhooks.allow`): a submitter cannot make Wolf call into its own network.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hmac::{KeyInit, Mac};
use ipnet::IpNet;
use wolf_core::Submission;
use wolf_store::{Outbox, Webhook, WebhookFate};

use crate::{ApiError, AppState};

/// Retries stop this long after the job was accepted.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(24 * 3600);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);
/// A sender holds a leased row this long before another may take it.
const LEASE: Duration = Duration::from_secs(60);
/// Rows leased per round, and deliveries in flight per API.
const BATCH: u32 = 32;
const IN_FLIGHT: usize = 16;
/// How often an idle sender looks for due rows.
const POLL: Duration = Duration::from_millis(250);
/// The longest callback URL.
pub const MAX_URL: usize = 2048;
/// The Judge0 fields a Judge0 callback carries (Judge0's own).
const JUDGE0_FIELDS: [&str; 8] = [
    "stdout",
    "time",
    "memory",
    "stderr",
    "token",
    "compile_output",
    "message",
    "status",
];

/// The operator's webhook settings.
#[derive(Clone, Default)]
pub struct WebhookConfig {
    /// Addresses allowed although they are private, loopback... (`webhooks.allow`).
    pub allow: Vec<IpNet>,
    /// Signs the webhooks of jobs without a key (`WOLF_WEBHOOK_SECRET`).
    pub secret: Option<String>,
    /// One attempt's time limit (connect, send, answer).
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("allow", &self.allow)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Why `ip` may not receive webhooks (none: a public address).
pub fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(a) => {
            let [b0, b1, ..] = a.octets();
            if a.is_loopback() {
                Some("a loopback address")
            } else if a.is_private() {
                Some("a private address")
            } else if a.is_link_local() {
                Some("a link-local address (cloud metadata lives there)")
            } else if b0 == 100 && (b1 & 0xc0) == 64 {
                Some("a shared (carrier-grade NAT) address")
            } else if a.is_unspecified() || b0 == 0 {
                Some("an unspecified address")
            } else if a.is_multicast() || a.is_broadcast() || b0 >= 240 {
                Some("a multicast, broadcast or reserved address")
            } else if (b0, b1) == (192, 0) && a.octets()[2] == 0 || (b0 == 198 && (b1 & 0xfe) == 18) {
                Some("a reserved address")
            } else {
                None
            }
        }
        IpAddr::V6(a) => {
            let s = a.segments();
            // An IPv4 address in IPv6 clothes is judged as itself.
            if let Some(v4) = a.to_ipv4_mapped() {
                return forbidden(IpAddr::V4(v4));
            }
            if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                let v4 = std::net::Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32);
                return forbidden(IpAddr::V4(v4));
            }
            if a.is_loopback() || a.is_unspecified() {
                Some("a loopback or unspecified address")
            } else if (s[0] & 0xfe00) == 0xfc00 {
                Some("a unique-local (private) address")
            } else if (s[0] & 0xffc0) == 0xfe80 {
                Some("a link-local address")
            } else if a.is_multicast() || s[..6] == [0; 6] || s[0] == 0x2002 {
                Some("a multicast, IPv4-compatible or 6to4 address")
            } else {
                None
            }
        }
    }
}

/// Why `ip` is refused under `allow` (none: it may receive).
fn refused(ip: IpAddr, allow: &[IpNet]) -> Option<&'static str> {
    forbidden(ip).filter(|_| !allow.iter().any(|n| n.contains(&ip)))
}

/// The address of a URL whose host is an address literal, and why it is refused (none: a
/// host name, which the resolver checks, or an address allowed).
fn literal_refused(url: &reqwest::Url, allow: &[IpNet]) -> Option<(IpAddr, &'static str)> {
    let ip = match url.host()? {
        url::Host::Ipv4(a) => IpAddr::V4(a),
        url::Host::Ipv6(a) => IpAddr::V6(a),
        url::Host::Domain(_) => return None,
    };
    refused(ip, allow).map(|why| (ip, why))
}

/// The resolver every delivery connects through: it drops refused addresses, so neither a
/// hostname nor a DNS answer that changes between check and use reaches one.
struct Guard {
    allow: Arc<Vec<IpNet>>,
}

/// A connection the guard refused: the delivery fails for good, it is not retried.
#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl reqwest::dns::Resolve for Guard {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let mut why = None;
            let ok: Vec<SocketAddr> = all
                .into_iter()
                .filter(|a| match refused(a.ip(), &allow) {
                    Some(w) => {
                        why = Some(format!("{host} resolves to {}, {w}", a.ip()));
                        false
                    }
                    None => true,
                })
                .collect();
            if ok.is_empty() {
                let why = why.unwrap_or_else(|| format!("{host} resolves to no address"));
                return Err(Box::new(Refused(why)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Check a submission's callback at admission: a URL Wolf will call, and a secret to sign it
/// with (422 otherwise).
pub(crate) fn check_callback(st: &AppState, sub: &Submission) -> Result<(), ApiError> {
    let Some(raw) = &sub.callback_url else { return Ok(()) };
    if st.outbox.is_none() {
        return Err(ApiError::NotImplemented("this deployment delivers no webhooks".into()));
    }
    let bad = |why: String| ApiError::Invalid(format!("callbackUrl: {why}"));
    if raw.len() > MAX_URL {
        return Err(bad(format!("{} bytes; at most {MAX_URL}", raw.len())));
    }
    let url = reqwest::Url::parse(raw).map_err(|e| bad(format!("{raw:?} is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(bad(format!("{raw:?}: only http and https are called")));
    }
    if url.host().is_none() {
        return Err(bad(format!("{raw:?} has no host")));
    }
    if let Some((ip, why)) = literal_refused(&url, &st.cfg.webhooks.allow) {
        return Err(bad(format!(
            "{ip} is {why}; webhooks do not go there unless the operator allows it (webhooks.allow)"
        )));
    }
    let has_secret = match crate::auth::current() {
        wolf_core::auth::Principal::Key(k) => k.webhook_secret.is_some() || st.cfg.webhooks.secret.is_some(),
        wolf_core::auth::Principal::Open => st.cfg.webhooks.secret.is_some(),
    };
    if !has_secret {
        return Err(bad(
            "nothing to sign it with: give the deployment a webhook secret (WOLF_WEBHOOK_SECRET), \
             or submit with a key made by `wolf keys create`"
                .into(),
        ));
    }
    Ok(())
}

/// The signature header of `body` sent at `t` (unix seconds) under `secret`.
pub fn signature(secret: &str, t: i64, body: &[u8]) -> String {
    signatures(&[secret.to_string()], t, body)
}

/// The signature header of `body` sent at `t` under each of `secrets`, in order: one `v1` per
/// secret (while a rotated key's old secret still signs, a receiver that knows either one
/// verifies the delivery).
pub fn signatures(secrets: &[String], t: i64, body: &[u8]) -> String {
    let mut header = format!("t={t}");
    for secret in secrets {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        mac.update(t.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        header.push_str(&format!(", v1={}", hex::encode(mac.finalize().into_bytes())));
    }
    header
}

/// When to try again after `attempts` failed ones (the first retry a second later), or `None`
/// when that would be past the day retries are allowed.
fn retry_at(w: &Webhook, now_ms: i64) -> Option<i64> {
    let wait = Duration::from_secs(1u64 << w.attempts.min(12)).min(MAX_BACKOFF);
    let at = now_ms + wait.as_millis() as i64;
    (at <= w.created_ms + GIVE_UP_AFTER.as_millis() as i64).then_some(at)
}

/// Deliver due webhooks until the process ends.
pub async fn run(st: AppState, outbox: Arc<dyn Outbox>) {
    let cfg = st.cfg.webhooks.clone();
    let client = match reqwest::Client::builder()
        .dns_resolver(Arc::new(Guard {
            allow: Arc::new(cfg.allow.clone()),
        }))
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve the receiver itself, past the guard.
        .no_proxy()
        .timeout(cfg.timeout)
        .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
        .user_agent(concat!("wolf-webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: no HTTP client; webhooks wait in the outbox");
            return;
        }
    };
    loop {
        let due = match outbox.due_webhooks(BATCH, LEASE).await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "webhooks: the outbox is unavailable; trying again");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if due.is_empty() {
            tokio::time::sleep(POLL).await;
            continue;
        }
        use futures::StreamExt;
        futures::stream::iter(due)
            .for_each_concurrent(IN_FLIGHT, |w| {
                let (st, client, outbox) = (&st, &client, &outbox);
                async move {
                    let fate = attempt(st, client, &w).await;
                    let outcome = match &fate {
                        WebhookFate::Delivered => "delivered",
                        WebhookFate::Retry { .. } => "retry",
                        WebhookFate::Failed { .. } => "failed",
                    };
                    metrics::counter!("wolf_webhook_attempts_total", "outcome" => outcome).increment(1);
                    match &fate {
                        WebhookFate::Delivered => {}
                        WebhookFate::Retry { error, .. } | WebhookFate::Failed { error } => {
                            tracing::warn!(job = %w.job_id, attempt = w.attempts + 1, outcome, %error, "webhook not delivered")
                        }
                    }
                    // Unsettled (the store is away), the row is tried again when its lease ends.
                    if let Err(e) = outbox.settle_webhook(&w.job_id, &fate).await {
                        tracing::warn!(job = %w.job_id, error = %e, "webhooks: cannot record an attempt");
                    }
                }
            })
            .await;
    }
}

/// One attempt at `w`.
async fn attempt(st: &AppState, client: &reqwest::Client, w: &Webhook) -> WebhookFate {
    let now = chrono::Utc::now();
    let retry = |error: String| match retry_at(w, now.timestamp_millis()) {
        Some(at_ms) => WebhookFate::Retry { at_ms, error },
        None => WebhookFate::Failed {
            error: format!("gave up a day after the job was accepted; last: {error}"),
        },
    };
    let (method, body, secret) = match prepare(st, &w.job_id).await {
        Ok(Some(p)) => p,
        Ok(None) => {
            return WebhookFate::Failed {
                error: "the job or its key is gone".into(),
            };
        }
        Err(e) => return retry(format!("reading the job: {e}")),
    };
    if secret.is_empty() {
        return WebhookFate::Failed {
            error: "no secret to sign it with".into(),
        };
    }
    // A literal address is not resolved, so the guard does not see it: checked here.
    if let Some((_, why)) = reqwest::Url::parse(&w.url)
        .ok()
        .and_then(|url| literal_refused(&url, &st.cfg.webhooks.allow))
    {
        return WebhookFate::Failed {
            error: format!("refused: the receiver is {why}"),
        };
    }
    let sent = client
        .request(method, &w.url)
        .header("content-type", "application/json")
        .header("wolf-signature", signatures(&secret, now.timestamp(), &body))
        .header("wolf-webhook-id", &w.job_id)
        .header("idempotency-key", &w.job_id)
        .header("wolf-webhook-attempt", (w.attempts + 1).to_string())
        .body(body)
        .send()
        .await;
    match sent {
        Ok(r) if r.status().is_success() => WebhookFate::Delivered,
        Ok(r) if r.status().is_server_error() => retry(format!("HTTP {}", r.status().as_u16())),
        Ok(r) if r.status().is_redirection() => WebhookFate::Failed {
            error: format!("HTTP {}: redirects are not followed", r.status().as_u16()),
        },
        Ok(r) => WebhookFate::Failed {
            error: format!("HTTP {}", r.status().as_u16()),
        },
        Err(e) => {
            let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            while let Some(c) = cause {
                if let Some(r) = c.downcast_ref::<Refused>() {
                    return WebhookFate::Failed {
                        error: format!("refused: {r}"),
                    };
                }
                cause = c.source();
            }
            retry(error_chain(&e))
        }
    }
}

/// An error and its causes, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// The method, body and signing secrets of `job_id`'s webhook (none: nothing to sign with);
/// `None` when the job is gone or its key was revoked (its webhooks stop with it).
async fn prepare(
    st: &AppState,
    job_id: &str,
) -> Result<Option<(reqwest::Method, Vec<u8>, Vec<String>)>, wolf_store::StoreError> {
    let Some(rec) = st.meta.get(job_id).await? else {
        return Ok(None);
    };
    let deployment = || st.cfg.webhooks.secret.clone().into_iter().collect::<Vec<_>>();
    let secret = match (&rec.owner, &st.keys) {
        (Some(owner), Some(keys)) => {
            let key = keys.keys().await?.into_iter().find(|k| &k.id == owner);
            match key {
                Some(k) if k.revoked_at.is_none() => {
                    let own = k.webhook_secrets(chrono::Utc::now());
                    if own.is_empty() { deployment() } else { own }
                }
                _ => return Ok(None),
            }
        }
        _ => deployment(),
    };
    let tags = rec.tags.as_deref().unwrap_or_default();
    let judge0 = tags.iter().any(|t| t.starts_with(crate::judge0::convert::LANGUAGE_TAG));
    let stdout = st.objects.get(&wolf_core::job::output_key(job_id)).await?;
    if !judge0 {
        // The record, and its stdout (`GET /job/{id}/output`) so the receiver need not call back.
        let mut v = serde_json::to_value(&rec).unwrap_or_default();
        if let (Some(o), Some(out)) = (v.as_object_mut(), &stdout) {
            o.insert("stdout".into(), String::from_utf8_lossy(out).into());
        }
        return Ok(Some((
            reqwest::Method::POST,
            serde_json::to_vec(&v).unwrap_or_default(),
            secret,
        )));
    }
    let b64 = tags.iter().any(|t| t == crate::judge0::convert::BASE64_TAG);
    let extra = crate::judge0::convert::Extra {
        stdout,
        ..Default::default()
    };
    let body = match crate::judge0::convert::answer(&rec, &extra, &JUDGE0_FIELDS, b64) {
        Ok(v) => v,
        // Judge0's answer when a text is not UTF-8 and base64 was not asked for.
        Err(msg) => serde_json::json!({"token": job_id, "error": msg}),
    };
    Ok(Some((
        reqwest::Method::PUT,
        serde_json::to_vec(&body).unwrap_or_default(),
        secret,
    )))
}

/// Attempts within the day retries last (1 s doubling to an hour apart), for Judge0's
/// `callbacks_max_tries`.
pub const JUDGE0_MAX_TRIES: u32 = 36;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_loopback_metadata_and_disguised_addresses_are_refused() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "::1",
            "::",
            "fd00:ec2::254",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
        ] {
            let ip: IpAddr = bad.parse().unwrap();
            assert!(forbidden(ip).is_some(), "{bad} is allowed");
        }
        for good in ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"] {
            assert_eq!(forbidden(good.parse().unwrap()), None, "{good}");
        }
        let allow: Vec<IpNet> = vec!["127.0.0.1/32".parse().unwrap()];
        assert_eq!(refused("127.0.0.1".parse().unwrap(), &allow), None);
        assert!(refused("127.0.0.2".parse().unwrap(), &allow).is_some());
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // Computed apart from this code: Python's hmac.new(b"Jefe", b"0.what do ya want for
        // nothing?", hashlib.sha256).hexdigest().
        assert_eq!(
            signature("Jefe", 0, b"what do ya want for nothing?"),
            "t=0, v1=37f471929915ccd2cbbe79feb84ffcff4f2bb25e15fc41c2506687331ae179cc"
        );
        assert_ne!(signature("Jefe", 1, b"x"), signature("Jefe", 2, b"x"));
    }

    #[test]
    fn retries_double_to_an_hour_and_stop_after_a_day() {
        let w = |attempts| Webhook {
            job_id: "j".into(),
            url: "http://x".into(),
            attempts,
            created_ms: 0,
        };
        assert_eq!(retry_at(&w(0), 0), Some(1000));
        assert_eq!(retry_at(&w(3), 0), Some(8000));
        assert_eq!(retry_at(&w(20), 0), Some(3_600_000));
        assert_eq!(retry_at(&w(20), GIVE_UP_AFTER.as_millis() as i64), None);
    }
}
