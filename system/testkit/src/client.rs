//! What tests do over HTTP and on the command line: one request with an API key, one `wolf`
//! command.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

/// An answer: its status, `Retry-After` (seconds) and body as JSON (Null when not JSON).
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Retry-After`, when given in seconds.
    pub retry_after: Option<u64>,
    /// The body as JSON.
    pub body: Value,
}

/// [`request`]'s status and body.
pub fn call(method: &str, url: &str, key: &str, body: &Value) -> (u16, Value) {
    let a = request(method, url, key, body);
    (a.status, a.body)
}

/// `method url` with `key` (empty: none) as a bearer token and as Judge0's X-Auth-Token; a
/// POST sends `body` as JSON (other methods send none). Panics when no answer comes (within
/// 60 s).
pub fn request(method: &str, url: &str, key: &str, body: &Value) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into();
    let auth: Vec<(&str, String)> = if key.is_empty() {
        Vec::new()
    } else {
        vec![
            ("Authorization", format!("Bearer {key}")),
            ("X-Auth-Token", key.to_string()),
        ]
    };
    let r = if method == "POST" {
        let mut r = agent.post(url).header("Content-Type", "application/json");
        for (k, v) in &auth {
            r = r.header(*k, v);
        }
        r.send(body.to_string())
    } else {
        let mut r = match method {
            "DELETE" => agent.delete(url),
            "GET" => agent.get(url),
            other => panic!("call: no {other} here"),
        };
        for (k, v) in &auth {
            r = r.header(*k, v);
        }
        r.call()
    };
    let mut r = r.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let text = r.body_mut().read_to_string().unwrap_or_default();
    Answer {
        status: r.status().as_u16(),
        retry_after,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

/// `wolf args…` with `env` (and quiet logs); its stdout, trimmed. Panics when it fails.
pub fn wolf(args: &[&str], env: &[(&str, String)]) -> String {
    let out = Command::new(crate::stack::wolf_binary().expect("the wolf binary"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("WOLF_LOG", "warn")
        .output()
        .expect("run wolf");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("wolf prints UTF-8")
        .trim()
        .to_string()
}

/// `GET base/readyz` until it answers 200 (engines prepared, workers warm) or `within` passes;
/// the last status (0 when nothing answered).
pub fn ready(base: &str, within: Duration) -> u16 {
    let deadline = std::time::Instant::now() + within;
    loop {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(5)))
            .build()
            .into();
        let status = agent
            .get(format!("{base}/readyz"))
            .call()
            .map_or(0, |r| r.status().as_u16());
        if status == 200 || std::time::Instant::now() >= deadline {
            return status;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
