//! Sessions across hosts: each session lives on the manager that created it, and any API
//! reaches it through NATS request/reply. A session's id carries its manager's tag (its first
//! eight hex digits after `s-`): the API asks `wolf.session.<tag>`, and only that manager
//! answers. A new session goes to `wolf.session.new`, a queue group: any one manager takes it.
//! If the manager is gone, nobody answers: the session is lost and says so (410), never
//! silently made again with its state missing. A request NATS delivered to a manager that was
//! dying (killed mid-exec, or a moment before the request, while the server had not yet seen
//! its connection close) is never answered; so while a call waits, the API probes the
//! manager's subject (`ping`) and answers 410 as soon as NATS says nobody listens there,
//! rather than after the exec's whole wall limit.
//!
//! A request is `{"op", "id"?, "spec"?, "req"?, "path"?, "data"?}` (file contents base64); an
//! answer is `{"ok": ...}` or `{"err": {"kind", "message"}}`.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use futures::StreamExt;
use serde_json::{Value, json};
use wolf_core::session::{ExecRequest, ExecResult, SessionError, SessionInfo, SessionSpec};

use crate::SessionHost;

const NEW: &str = "wolf.session.new";
/// How long a call waits beyond the work it asks for (an exec's own limit comes on top).
const SLACK: Duration = Duration::from_secs(10);
/// While a call waits, its manager is asked this often whether it is still there, and each
/// probe waits this long for an answer.
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_WAIT: Duration = Duration::from_secs(2);

fn subject(tag: &str) -> String {
    format!("wolf.session.{tag}")
}

/// The tag of a session id (`s-` then the manager's eight hex digits).
fn tag_of(id: &str) -> Result<&str, SessionError> {
    id.strip_prefix("s-")
        .and_then(|h| h.get(..8))
        .ok_or_else(|| SessionError::NotFound(format!("session {id} not found")))
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn err_json(e: &SessionError) -> Value {
    let kind = match e {
        SessionError::NotFound(_) => "not_found",
        SessionError::Gone(_) => "gone",
        SessionError::Invalid(_) => "invalid",
        SessionError::Full(_) => "full",
        SessionError::Unavailable(_) => "unavailable",
    };
    json!({"err": {"kind": kind, "message": e.to_string()}})
}

fn err_of(v: &Value) -> SessionError {
    let m = v["message"].as_str().unwrap_or("").to_string();
    match v["kind"].as_str() {
        Some("not_found") => SessionError::NotFound(m),
        Some("gone") => SessionError::Gone(m),
        Some("invalid") => SessionError::Invalid(m),
        Some("full") => SessionError::Full(m),
        _ => SessionError::Unavailable(m),
    }
}

/// Sessions as an API sees them in the distributed mode.
pub struct NatsSessions {
    nats: async_nats::Client,
    /// The longest exec (the operator's wall cap), to wait for its answer.
    exec_limit: Duration,
}

impl NatsSessions {
    /// Sessions through `nats`; an exec's answer is awaited for `exec_limit` and then some.
    pub fn new(nats: async_nats::Client, exec_limit: Duration) -> Self {
        Self { nats, exec_limit }
    }

    async fn ask(&self, subject: String, body: Value, wait: Duration, id: Option<&str>) -> Result<Value, SessionError> {
        let payload = serde_json::to_vec(&body).map_err(|e| SessionError::Invalid(e.to_string()))?;
        let max = self.nats.server_info().max_payload;
        if payload.len() > max {
            return Err(SessionError::Invalid(format!(
                "{} bytes is more than NATS carries in one message here ({max})",
                payload.len()
            )));
        }
        let request = async_nats::Request::new().payload(payload.into()).timeout(Some(wait));
        let reply = match self.nats.send_request(subject, request).await {
            Ok(m) => m,
            Err(e) => {
                return Err(match (e.kind(), id) {
                    (async_nats::RequestErrorKind::NoResponders, Some(id)) => SessionError::Gone(format!(
                        "no live manager holds session {id}: the manager that held it is gone (its state \
                         is lost), or it never existed"
                    )),
                    (async_nats::RequestErrorKind::NoResponders, None) => {
                        SessionError::Unavailable("no manager takes sessions now".into())
                    }
                    (async_nats::RequestErrorKind::TimedOut, _) => {
                        SessionError::Unavailable("the session's manager did not answer in time".into())
                    }
                    _ => SessionError::Unavailable(format!("NATS: {e}")),
                });
            }
        };
        let v: Value = serde_json::from_slice(&reply.payload)
            .map_err(|e| SessionError::Unavailable(format!("bad answer: {e}")))?;
        match v.get("ok") {
            Some(ok) => Ok(ok.clone()),
            None => Err(err_of(&v["err"])),
        }
    }

    async fn on(&self, id: &str, body: Value, wait: Duration) -> Result<Value, SessionError> {
        let tag = tag_of(id)?;
        let call = self.ask(subject(tag), body, wait, Some(id));
        tokio::pin!(call);
        let probes = self.gone(subject(tag), id);
        tokio::pin!(probes);
        // The answer wins over a probe's verdict when both are there.
        tokio::select! {
            biased;
            answer = &mut call => answer,
            gone = &mut probes => Err(gone),
        }
    }

    /// Resolves only when NATS says nobody listens on the session's subject: its manager is
    /// gone. A probe that is answered (by any manager version: an unknown op is an answer too)
    /// or that times out (a busy manager, a slow link) proves nothing, and probing goes on.
    async fn gone(&self, subject: String, id: &str) -> SessionError {
        let ping = serde_json::to_vec(&json!({"op": "ping", "id": id})).unwrap_or_default();
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            let request = async_nats::Request::new()
                .payload(ping.clone().into())
                .timeout(Some(PROBE_WAIT));
            if let Err(e) = self.nats.send_request(subject.clone(), request).await
                && e.kind() == async_nats::RequestErrorKind::NoResponders
            {
                return SessionError::Gone(format!(
                    "session {id} is lost: the manager that held it is gone (its state is lost)"
                ));
            }
        }
    }
}

fn parse<T: serde::de::DeserializeOwned>(v: Value) -> Result<T, SessionError> {
    serde_json::from_value(v).map_err(|e| SessionError::Unavailable(format!("bad answer: {e}")))
}

#[async_trait]
impl SessionHost for NatsSessions {
    async fn create(&self, spec: SessionSpec) -> Result<SessionInfo, SessionError> {
        let v = self
            .ask(NEW.into(), json!({"op": "create", "spec": spec}), SLACK * 3, None)
            .await?;
        parse(v)
    }

    async fn exec(&self, id: &str, req: ExecRequest) -> Result<ExecResult, SessionError> {
        let v = self
            .on(id, json!({"op": "exec", "id": id, "req": req}), self.exec_limit + SLACK)
            .await?;
        parse(v)
    }

    async fn put_file(&self, id: &str, path: &str, data: Vec<u8>) -> Result<(), SessionError> {
        let body = json!({"op": "put", "id": id, "path": path, "data": b64().encode(data)});
        self.on(id, body, SLACK).await.map(drop)
    }

    async fn get_file(&self, id: &str, path: &str) -> Result<Vec<u8>, SessionError> {
        let v = self.on(id, json!({"op": "get", "id": id, "path": path}), SLACK).await?;
        b64()
            .decode(v.as_str().unwrap_or(""))
            .map_err(|e| SessionError::Unavailable(format!("bad answer: {e}")))
    }

    async fn info(&self, id: &str) -> Result<SessionInfo, SessionError> {
        parse(self.on(id, json!({"op": "info", "id": id}), SLACK).await?)
    }

    async fn delete(&self, id: &str) -> Result<(), SessionError> {
        self.on(id, json!({"op": "delete", "id": id}), SLACK).await.map(drop)
    }
}

/// Answer session requests for `host` (a manager's sessions, their ids tagged `tag`) until
/// the connection ends: the new ones in the queue group, and those of its own sessions.
pub async fn serve(nats: async_nats::Client, host: Arc<dyn SessionHost>, tag: String) {
    let (own, new) = match (
        nats.subscribe(subject(&tag)).await,
        nats.queue_subscribe(NEW, "wolf-managers".into()).await,
    ) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            tracing::warn!("cannot take session requests: sessions are unavailable through this manager");
            return;
        }
    };
    let mut both = futures::stream::select(own, new);
    while let Some(m) = both.next().await {
        let Some(reply) = m.reply.clone() else { continue };
        let (nats, host) = (nats.clone(), host.clone());
        // Each request on its own task: one session's long exec does not hold up another's.
        tokio::spawn(async move {
            let answer = match serde_json::from_slice::<Value>(&m.payload) {
                Ok(req) => handle(&*host, req).await,
                Err(e) => err_json(&SessionError::Invalid(format!("bad request: {e}"))),
            };
            let body = serde_json::to_vec(&answer).unwrap_or_default();
            let _ = nats.publish(reply, body.into()).await;
        });
    }
}

async fn handle(host: &dyn SessionHost, req: Value) -> Value {
    let id = req["id"].as_str().unwrap_or("").to_string();
    let path = req["path"].as_str().unwrap_or("").to_string();
    let done: Result<Value, SessionError> = async {
        let invalid = |e: serde_json::Error| SessionError::Invalid(e.to_string());
        Ok(match req["op"].as_str() {
            Some("create") => {
                let spec = serde_json::from_value(req["spec"].clone()).map_err(invalid)?;
                json!(host.create(spec).await?)
            }
            Some("exec") => {
                let r = serde_json::from_value(req["req"].clone()).map_err(invalid)?;
                json!(host.exec(&id, r).await?)
            }
            Some("put") => {
                let data = b64()
                    .decode(req["data"].as_str().unwrap_or(""))
                    .map_err(|e| SessionError::Invalid(e.to_string()))?;
                host.put_file(&id, &path, data).await?;
                Value::Null
            }
            Some("get") => json!(b64().encode(host.get_file(&id, &path).await?)),
            Some("info") => json!(host.info(&id).await?),
            // An API's probe while it waits on this manager: the answer is that it is here.
            Some("ping") => Value::Null,
            Some("delete") => {
                host.delete(&id).await?;
                Value::Null
            }
            _ => return Err(SessionError::Invalid("unknown op".into())),
        })
    }
    .await;
    match done {
        Ok(v) => json!({"ok": v}),
        Err(e) => err_json(&e),
    }
}
