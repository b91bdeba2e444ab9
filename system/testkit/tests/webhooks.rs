//! Webhooks (`callbackUrl`), both modes: a receiver on loopback (allow-listed, as an operator
//! would allow an internal receiver) gets each job's final record, signed with the key's
//! webhook secret; a 5xx is retried, a 4xx is not; the Judge0 door PUTs Judge0's shape;
//! receivers on private or metadata addresses are refused at admission, and a hostname that
//! resolves to one is refused at delivery; a webhook outlives a kill -9 of `wolf serve`.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use serde_json::{Value, json};
use wolf_testkit::Stack;
use wolf_testkit::client::{call, wolf};

fn root() -> bool {
    wolf_testkit::running_as_root("sandboxes and the testkit's PostgreSQL need root")
}

/// One request a receiver got.
#[derive(Debug)]
struct Got {
    method: String,
    path: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// An HTTP receiver on `listener`: answers each request with the next scripted status (200
/// when the script is empty) and reports what it got.
struct Hook {
    port: u16,
    script: Arc<Mutex<VecDeque<u16>>>,
    got: Receiver<Got>,
}

impl Hook {
    fn on(listener: TcpListener) -> Self {
        let port = listener.local_addr().unwrap().port();
        let script: Arc<Mutex<VecDeque<u16>>> = Default::default();
        let (tx, got) = std::sync::mpsc::channel();
        let s = script.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().map_while(Result::ok) {
                let (tx, s) = (tx.clone(), s.clone());
                std::thread::spawn(move || answer(conn, &tx, &s));
            }
        });
        Self { port, script, got }
    }

    fn new() -> Self {
        Self::on(TcpListener::bind("127.0.0.1:0").unwrap())
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn then(&self, statuses: &[u16]) {
        self.script.lock().unwrap().extend(statuses);
    }

    /// The next request, within `wait`.
    fn next(&self, wait: Duration) -> Option<Got> {
        self.got.recv_timeout(wait).ok()
    }
}

fn answer(conn: TcpStream, tx: &Sender<Got>, script: &Mutex<VecDeque<u16>>) {
    let mut r = BufReader::new(conn);
    let mut line = String::new();
    if r.read_line(&mut line).is_err() {
        return;
    }
    let mut parts = line.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if r.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0; len];
    if r.read_exact(&mut body).is_err() {
        return;
    }
    let status = script.lock().unwrap().pop_front().unwrap_or(200);
    let _ = tx.send(Got {
        method,
        path,
        headers,
        body,
    });
    let _ = write!(
        r.get_mut(),
        "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
}

/// The `v1` signatures of `Wolf-Signature` (one per signing secret) and its `t`.
fn signatures(g: &Got) -> (String, Vec<String>) {
    let sig = g.headers.get("wolf-signature").cloned().unwrap_or_default();
    let mut t = String::new();
    let mut v1 = Vec::new();
    for part in sig.split(',').map(str::trim) {
        if let Some(v) = part.strip_prefix("t=") {
            t = v.to_string();
        } else if let Some(v) = part.strip_prefix("v1=") {
            v1.push(v.to_string());
        }
    }
    (t, v1)
}

/// The check a receiver makes: one `v1` of `Wolf-Signature` is HMAC-SHA256 of "t.body" under
/// `secret`.
fn signed_by(g: &Got, secret: &str) -> bool {
    let (t, v1) = signatures(g);
    if t.is_empty() {
        return false;
    }
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(&g.body);
    let want = hex::encode(mac.finalize().into_bytes());
    v1.contains(&want)
}

/// What holds in both modes; jobs go in at `a`, the Judge0 door is used at `b`.
fn webhooks_contract(mode: &str, a: &str, b: &str, env: &[(&str, String)]) {
    let alice = wolf(&["keys", "create", "--name", "alice"], env);
    let secret = wolf(&["keys", "webhook-secret", "alice"], env);
    assert!(secret.starts_with("whsec_"), "{mode}: {secret}");
    let listed = wolf(&["keys", "list"], env);
    assert!(!listed.contains(&secret), "{mode}: the webhook secret is not listed");
    let hook = Hook::new();

    // A 500 is retried (the same id, the next attempt); the 200 after it ends it.
    hook.then(&[500]);
    let job = json!({"code": "print('hooked')", "executionEngine": "python", "callbackUrl": hook.url("/native")});
    let (s, v) = call("POST", &format!("{a}/job"), &alice, &job);
    assert_eq!(s, 200, "{mode}: {v}");
    let id = v["id"].as_str().unwrap().to_string();
    let first = hook.next(Duration::from_secs(60)).expect("the first attempt");
    let second = hook.next(Duration::from_secs(30)).expect("the retry after a 500");
    for (g, n) in [(&first, "1"), (&second, "2")] {
        assert_eq!((g.method.as_str(), g.path.as_str()), ("POST", "/native"), "{mode}");
        assert_eq!(g.headers.get("wolf-webhook-id"), Some(&id), "{mode}");
        assert_eq!(g.headers.get("idempotency-key"), Some(&id), "{mode}");
        assert_eq!(
            g.headers.get("wolf-webhook-attempt").map(String::as_str),
            Some(n),
            "{mode}"
        );
        assert!(signed_by(g, &secret), "{mode}: a bad signature: {:?}", g.headers);
        assert!(!signed_by(g, "whsec_other"), "{mode}");
    }
    let rec: Value = serde_json::from_slice(&second.body).unwrap();
    assert_eq!(
        (rec["id"].as_str(), rec["status"].as_str(), rec["stdout"].as_str()),
        (Some(id.as_str()), Some("Completed"), Some("hooked\n")),
        "{mode}: {rec}"
    );
    assert_eq!(rec["result"]["verdict"], "Accepted", "{mode}: {rec}");
    assert!(
        hook.next(Duration::from_secs(3)).is_none(),
        "{mode}: delivered once, then no more"
    );

    // A 4xx is the receiver's final word: not retried (a retry would come after 1 s).
    hook.then(&[410]);
    let job = json!({"code": "print(1)", "executionEngine": "python", "callbackUrl": hook.url("/gone")});
    let (s, v) = call("POST", &format!("{a}/job"), &alice, &job);
    assert_eq!(s, 200, "{mode}: {v}");
    let gone = v["id"].as_str().unwrap().to_string();
    let g = hook.next(Duration::from_secs(60)).expect("the attempt");
    assert_eq!(g.path, "/gone", "{mode}");
    assert!(hook.next(Duration::from_secs(4)).is_none(), "{mode}: a 4xx was retried");

    // Where each webhook stands, asked of the other API; a redelivery of the failed one is
    // sent again, signed, as the next attempt; another key sees neither.
    let state = |id: &str| call("GET", &format!("{b}/job/{id}/webhook"), &alice, &Value::Null);
    let (s, w) = state(&id);
    assert_eq!(s, 200, "{mode}: {w}");
    assert_eq!(
        (w["state"].as_str(), w["attempts"].as_u64(), w["url"].as_str()),
        (Some("delivered"), Some(2), Some(hook.url("/native").as_str())),
        "{mode}: {w}"
    );
    let (_, w) = state(&gone);
    assert_eq!(
        (w["state"].as_str(), w["attempts"].as_u64()),
        (Some("failed"), Some(1)),
        "{mode}: {w}"
    );
    assert!(w["lastError"].as_str().unwrap_or("").contains("410"), "{mode}: {w}");
    let bob = wolf(&["keys", "create", "--name", "bob-hooks"], env);
    let redeliver = |id: &str, key: &str| call("POST", &format!("{b}/job/{id}/webhook/redeliver"), key, &Value::Null);
    assert_eq!(
        call("GET", &format!("{a}/job/{gone}/webhook"), &bob, &Value::Null).0,
        404,
        "{mode}"
    );
    assert_eq!(redeliver(&gone, &bob).0, 404, "{mode}: another key's job");
    assert!(
        hook.next(Duration::from_millis(500)).is_none(),
        "{mode}: bob redelivered alice's webhook"
    );
    let (s, w) = redeliver(&gone, &alice);
    assert_eq!(s, 202, "{mode}: {w}");
    assert_eq!(w["state"], "waiting", "{mode}: {w}");
    let g = hook.next(Duration::from_secs(60)).expect("the redelivery");
    assert_eq!(g.path, "/gone", "{mode}");
    assert_eq!(g.headers.get("idempotency-key"), Some(&gone), "{mode}");
    assert_eq!(
        g.headers.get("wolf-webhook-attempt").map(String::as_str),
        Some("2"),
        "{mode}"
    );
    assert!(signed_by(&g, &secret), "{mode}");
    let mut w = Value::Null;
    for _ in 0..100 {
        w = state(&gone).1;
        if w["state"] == "delivered" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        (w["state"].as_str(), w["attempts"].as_u64()),
        (Some("delivered"), Some(2)),
        "{mode}: {w}"
    );
    let plain = json!({"code": "print(1)", "executionEngine": "python"});
    let (_, v) = call("POST", &format!("{a}/job?wait=true"), &alice, &plain);
    let plain = v["id"].as_str().unwrap().to_string();
    let (s, v) = state(&plain);
    assert_eq!(
        (s, v["state"].as_str()),
        (200, Some("none")),
        "{mode}: no callbackUrl: {v}"
    );
    assert!(v.get("url").is_none(), "{mode}: {v}");
    let (s, v) = redeliver(&plain, &alice);
    assert_eq!(s, 409, "{mode}: nothing to redeliver: {v}");

    // The Judge0 door: a PUT of Judge0's shape, base64 as the submission asked.
    let sub = json!({"source_code": "print('j0')", "language_id": 71, "callback_url": hook.url("/judge0")});
    let (s, v) = call(
        "POST",
        &format!("{b}/judge0/submissions?base64_encoded=true"),
        &alice,
        &json!({"source_code": "cHJpbnQoJ2owJyk=", "language_id": 71, "callback_url": sub["callback_url"]}),
    );
    assert_eq!(s, 201, "{mode}: {v}");
    let token = v["token"].as_str().unwrap().to_string();
    let g = hook.next(Duration::from_secs(60)).expect("the Judge0 callback");
    assert_eq!((g.method.as_str(), g.path.as_str()), ("PUT", "/judge0"), "{mode}");
    assert!(signed_by(&g, &secret), "{mode}");
    let j0: Value = serde_json::from_slice(&g.body).unwrap();
    // Ruby's base64 (Judge0's) ends with a newline, as the door's answers do.
    assert_eq!(
        (j0["token"].as_str(), j0["status"]["id"].as_u64(), j0["stdout"].as_str()),
        (Some(token.as_str()), Some(3), Some("ajAK\n")),
        "{mode}: {j0}"
    );
    let (_, shown) = call(
        "GET",
        &format!("{b}/judge0/submissions/{token}?fields=callback_url"),
        &alice,
        &Value::Null,
    );
    assert_eq!(shown["callback_url"], sub["callback_url"], "{mode}: {shown}");

    // Refused at admission: not http(s), private, metadata, loopback beyond the allow-list.
    for bad in [
        "file:///etc/passwd".to_string(),
        "gopher://127.0.0.1:70/".into(),
        "http://169.254.169.254/latest/meta-data/".into(),
        "http://10.0.0.1/".into(),
        "http://[::1]/".into(),
        "http://[::ffff:169.254.169.254]/".into(),
        format!("http://127.0.0.2:{}/", hook.port),
        "not a url".into(),
        format!("http://h/{}", "x".repeat(3000)),
    ] {
        let job = json!({"code": "print(1)", "executionEngine": "python", "callbackUrl": bad});
        let (s, v) = call("POST", &format!("{a}/job"), &alice, &job);
        assert_eq!(s, 422, "{mode}: {bad}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap_or("").contains("callbackUrl"),
            "{mode}: {v}"
        );
        let (s, v) = call(
            "POST",
            &format!("{b}/judge0/submissions"),
            &alice,
            &json!({"source_code": "print(1)", "language_id": 71, "callback_url": bad}),
        );
        assert_eq!(s, 422, "{mode}: Judge0 door: {bad}: {v}");
    }
    assert!(hook.next(Duration::from_millis(500)).is_none(), "{mode}");

    // A job that has not ended cannot be redelivered: its webhook goes once it ends.
    let slow =
        json!({"code": "import time\ntime.sleep(2)", "executionEngine": "python", "callbackUrl": hook.url("/slow")});
    let (_, v) = call("POST", &format!("{a}/job"), &alice, &slow);
    let slow = v["id"].as_str().unwrap().to_string();
    let (s, v) = redeliver(&slow, &alice);
    assert_eq!(s, 409, "{mode}: {v}");
    let g = hook.next(Duration::from_secs(60)).expect("the slow job's webhook");
    assert_eq!(g.path, "/slow", "{mode}");

    // A rotation: the new secret signs, and the old one beside it (a second v1) during the
    // overlap; rotated again with no overlap, only the newest signs.
    let fresh = wolf(&["keys", "webhook-secret", "alice", "--rotate", "--overlap", "1h"], env);
    assert!(fresh.starts_with("whsec_") && fresh != secret, "{mode}: {fresh}");
    assert_eq!(wolf(&["keys", "webhook-secret", "alice"], env), fresh, "{mode}");
    assert!(
        !wolf(&["keys", "list"], env).contains(&secret),
        "{mode}: the old secret is not listed"
    );
    let job = json!({"code": "print(1)", "executionEngine": "python", "callbackUrl": hook.url("/rotated")});
    assert_eq!(call("POST", &format!("{a}/job"), &alice, &job).0, 200, "{mode}");
    let g = hook
        .next(Duration::from_secs(60))
        .expect("a webhook after the rotation");
    assert_eq!(g.path, "/rotated", "{mode}");
    assert_eq!(
        signatures(&g).1.len(),
        2,
        "{mode}: {:?}",
        g.headers.get("wolf-signature")
    );
    assert!(
        signed_by(&g, &fresh) && signed_by(&g, &secret),
        "{mode}: both secrets verify"
    );
    let newest = wolf(&["keys", "webhook-secret", "alice", "--rotate", "--overlap", "0s"], env);
    let job = json!({"code": "print(1)", "executionEngine": "python", "callbackUrl": hook.url("/rotated-again")});
    assert_eq!(call("POST", &format!("{a}/job"), &alice, &job).0, 200, "{mode}");
    let g = hook
        .next(Duration::from_secs(60))
        .expect("a webhook after the second rotation");
    assert_eq!(
        signatures(&g).1.len(),
        1,
        "{mode}: {:?}",
        g.headers.get("wolf-signature")
    );
    assert!(signed_by(&g, &newest), "{mode}");
    assert!(
        !signed_by(&g, &fresh) && !signed_by(&g, &secret),
        "{mode}: the old secrets sign no more"
    );
}

/// `wolf serve` in `dir` with `env`; its URL, and its stderr lines.
fn serve(dir: &std::path::Path, env: &[(&str, &str)]) -> (wolf_testkit::serve::Reaped, String, Receiver<String>) {
    let s = wolf_testkit::serve::serve(dir, "127.0.0.1:0", env).unwrap();
    (s.child, s.url, s.log)
}

#[test]
fn webhooks_are_signed_retried_and_refused_where_they_must_be_embedded() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = [("WOLF_DATA_DIR", dir.path().join("data").display().to_string())];
    let (mut child, url, _) = serve(dir.path(), &[("WOLF_AUTH", "on"), ("WOLF_WEBHOOKS_ALLOW", "127.0.0.1")]);
    webhooks_contract("embedded", &url, &url, &env);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn webhooks_are_signed_retried_and_refused_where_they_must_be_distributed_across_two_apis() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Stack::up_with(
        dir.path(),
        2,
        1,
        &[
            ("WOLF_WORKERS", "2"),
            ("WOLF_AUTH", "on"),
            ("WOLF_WEBHOOKS_ALLOW", "127.0.0.1/32"),
        ],
    )
    .unwrap();
    let env = [("WOLF_DATABASE_URL", s.postgres.url())];
    webhooks_contract("distributed", &s.apis[0].1, &s.apis[1].1, &env);
}

/// Without an allow-list, a hostname that resolves to loopback is refused when the webhook is
/// sent (after DNS resolution), though the name itself passed admission; without a key, the
/// deployment's secret signs; and the outbox survives kill -9: a webhook whose receiver was
/// down is delivered after `wolf serve` restarts.
#[test]
fn a_name_resolving_to_loopback_is_refused_and_the_outbox_survives_kill_9() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deployment = "whsec_deployment_test";
    let (mut child, url, log) = serve(dir.path(), &[("WOLF_WEBHOOK_SECRET", deployment)]);
    let hook = Hook::new();
    let job = json!({"code": "print(1)", "executionEngine": "python",
        "callbackUrl": format!("http://localhost:{}/dns", hook.port)});
    let (s, v) = call("POST", &format!("{url}/job?wait=true"), "", &job);
    assert_eq!((s, v["status"].as_str()), (200, Some("Completed")), "{v}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let refused = loop {
        match log.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains("webhook not delivered") => break l,
            Ok(_) => continue,
            Err(_) => panic!("no refusal logged"),
        }
    };
    assert!(
        refused.contains("refused") && refused.contains("127.0.0.1"),
        "{refused}"
    );
    assert!(refused.contains("failed"), "refused for good, not retried: {refused}");
    assert!(hook.next(Duration::from_secs(2)).is_none(), "the guard let it through");

    // The receiver is down (its port reserved, nothing listening): attempts fail and are
    // retried; kill -9; restart; the receiver comes up and gets it.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    // From here on the receiver's address is allow-listed: what fails is the connection.
    let _ = child.kill();
    let _ = child.wait();
    let env = [
        ("WOLF_WEBHOOK_SECRET", deployment),
        ("WOLF_WEBHOOKS_ALLOW", "127.0.0.1"),
    ];
    let (mut child, url, _) = serve(dir.path(), &env);
    let job = json!({"code": "print('durable')", "executionEngine": "python",
        "callbackUrl": format!("http://127.0.0.1:{port}/late")});
    let (s, v) = call("POST", &format!("{url}/job?wait=true"), "", &job);
    assert_eq!((s, v["status"].as_str()), (200, Some("Completed")), "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(2));
    let _ = child.kill();
    let _ = child.wait();
    let hook = Hook::on(TcpListener::bind(("127.0.0.1", port)).unwrap());
    let (mut child, _, _) = serve(dir.path(), &env);
    let g = hook.next(Duration::from_secs(90)).expect("delivered after the restart");
    assert_eq!(g.headers.get("wolf-webhook-id"), Some(&id));
    let attempt: u32 = g.headers["wolf-webhook-attempt"].parse().unwrap();
    assert!(attempt >= 2, "the attempts before the kill were counted: {attempt}");
    assert!(signed_by(&g, deployment), "the deployment's secret signs keyless jobs");
    let _ = child.kill();
    let _ = child.wait();
}
