//! API keys, ownership, scopes and quotas, written once and run against both modes: `wolf serve` with
//! its keys in SQLite, and the distributed testbed (two APIs, keys in PostgreSQL) where every
//! "other key" request goes to the other API. Keys are made with `wolf keys create`, as an
//! operator makes them.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wolf_testkit::Stack;

/// How long `/readyz` may take to say ready after a start (the C++ precompiled header).
const READY: std::time::Duration = std::time::Duration::from_secs(120);

fn root() -> bool {
    wolf_testkit::running_as_root("sandboxes and the testkit's PostgreSQL need root")
}

/// Status and body of `method url` with `key` (as a bearer token, or as Judge0's X-Auth-Token
/// when `judge0` is set) and an optional JSON body; also the WWW-Authenticate header.
fn req(
    method: &str,
    url: &str,
    key: Option<&str>,
    body: Option<&Value>,
    extra: &[(&str, &str)],
) -> (u16, String, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(90)))
        .build()
        .into();
    let mut headers: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    if let Some(k) = key {
        headers.push(("Authorization".into(), format!("Bearer {k}")));
    }
    let r = match method {
        "GET" => {
            let mut r = agent.get(url);
            for (k, v) in &headers {
                r = r.header(k, v);
            }
            r.call()
        }
        _ => {
            let mut r = agent.post(url).header("Content-Type", "application/json");
            for (k, v) in &headers {
                r = r.header(k, v);
            }
            r.send(body.map(Value::to_string).unwrap_or_default())
        }
    };
    match r {
        Ok(mut r) => {
            let www = r
                .headers()
                .get("www-authenticate")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (
                r.status().as_u16(),
                r.body_mut().read_to_string().unwrap_or_default(),
                www,
            )
        }
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

fn get(url: &str, key: Option<&str>) -> (u16, String) {
    let (s, b, _) = req("GET", url, key, None, &[]);
    (s, b)
}

/// `wolf keys create` with `args`, in the store `env` names; the secret.
fn create_key(env: &[(&str, String)], args: &[&str]) -> String {
    let out = Command::new(wolf_testkit::stack::wolf_binary().unwrap())
        .args(["keys", "create"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("WOLF_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn keys_cmd(env: &[(&str, String)], args: &[&str]) -> std::process::Output {
    Command::new(wolf_testkit::stack::wolf_binary().unwrap())
        .arg("keys")
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("WOLF_LOG", "warn")
        .output()
        .unwrap()
}

/// The rules. `a` is where alice works; `b` is where bob (and the admin) land.
fn tenants_contract(mode: &str, a: &str, b: &str, env: &[(&str, String)]) {
    let alice = create_key(env, &["--name", "alice", "--engines", "python,bash"]);
    let bob = create_key(env, &["--name", "bob"]);
    let admin = create_key(env, &["--name", "root", "--admin"]);
    let listed = keys_cmd(env, &["list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert_eq!(listed.lines().count(), 3, "{mode}: {listed}");
    assert!(
        !listed.contains(&alice[14..]) && !listed.contains("hash"),
        "{mode}: no secret, no hash listed"
    );
    let dup = keys_cmd(env, &["create", "--name", "bob"]);
    assert!(!dup.status.success(), "{mode}: a name is unique");

    // 401 without a key, with a malformed one, an unknown one.
    let (s, body, www) = req("GET", &format!("{a}/job"), None, None, &[]);
    assert_eq!((s, www.starts_with("Bearer")), (401, true), "{mode}: {body}");
    assert!(body.contains("\"unauthorized\""), "{mode}: {body}");
    assert_eq!(get(&format!("{a}/job"), Some("not-a-key")).0, 401, "{mode}");
    let forged = format!("wolf_{}_{}", &alice[5..13], "0".repeat(64));
    assert_eq!(
        get(&format!("{a}/job"), Some(&forged)).0,
        401,
        "{mode}: an unknown secret"
    );
    let (s, _, _) = req(
        "GET",
        &format!("{a}/job"),
        None,
        None,
        &[("Authorization", "Basic YTpi")],
    );
    assert_eq!(s, 401, "{mode}: only bearer");
    // The document says so, and stays open itself.
    let (s, doc) = get(&format!("{a}/openapi.json"), None);
    let doc: Value = serde_json::from_str(&doc).unwrap();
    assert_eq!(s, 200, "{mode}");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer",
        "{mode}"
    );
    assert!(doc["paths"]["/job"]["post"]["responses"]["401"].is_object(), "{mode}");
    assert!(doc["paths"]["/healthz"]["get"]["security"].is_null(), "{mode}");
    // The probes stay open (load balancers, Prometheus).
    assert_eq!(get(&format!("{a}/healthz"), None).0, 200, "{mode}");
    assert_eq!(wolf_testkit::client::ready(a, READY), 200, "{mode}");

    // Alice's job: hers, the admin's, nobody else's (404 everywhere, never 403).
    let job = json!({"code": "print('alice was here')", "executionEngine": "python"});
    let (s, body, _) = req("POST", &format!("{a}/job?wait=true"), Some(&alice), Some(&job), &[]);
    assert_eq!(s, 200, "{mode}: {body}");
    let rec: Value = serde_json::from_str(&body).unwrap();
    let id = rec["id"].as_str().unwrap().to_string();
    assert_eq!(rec["status"], "Completed", "{mode}: {rec}");
    let owner = rec["owner"].as_str().unwrap_or_default().to_string();
    assert_eq!(owner, &alice[5..13], "{mode}: the owner is alice's key id");
    for path in [
        format!("/job/{id}"),
        format!("/job/{id}/output"),
        format!("/job/{id}/code"),
        format!("/job/{id}/timeline"),
        format!("/job/{id}/files/out.txt"),
        format!("/job/{id}/tests/1/output"),
        format!("/job/{id}?wait=true&timeout=1"),
        format!("/judge0/submissions/{id}"),
        format!("/judge0/submissions/batch?tokens={id}"),
    ] {
        let (s, body) = get(&format!("{b}{path}"), Some(&bob));
        let hidden = if path.contains("batch") {
            s == 200 && !body.contains("alice was here") && !body.contains("\"status\":{\"id\":3")
        } else {
            s == 404
        };
        assert!(hidden, "{mode}: bob GET {path}: {s} {body}");
    }
    assert_eq!(
        get(&format!("{b}/job/{id}/output"), Some(&admin)),
        (200, "alice was here\n".into()),
        "{mode}"
    );
    assert_eq!(get(&format!("{a}/job/{id}/output"), Some(&alice)).0, 200, "{mode}");
    let (s, _, _) = req(
        "GET",
        &format!("{b}/judge0/submissions/{id}"),
        None,
        None,
        &[("X-Auth-Token", &alice)],
    );
    assert_eq!(s, 200, "{mode}: Judge0's header carries the key");
    // The live stream of another key's job is not found either.
    assert_eq!(get(&format!("{b}/job/{id}/events"), Some(&bob)).0, 404, "{mode}");

    // Listings are per key; the admin's has everyone's.
    let ids = |key: &str| -> Vec<String> {
        let (s, body) = get(&format!("{b}/job?limit=100"), Some(key));
        assert_eq!(s, 200, "{mode}: {body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| j["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(
        ids(&alice).contains(&id) && !ids(&bob).contains(&id) && ids(&admin).contains(&id),
        "{mode}"
    );

    // Scopes: an engine outside the key's list, the dead letters without admin: 403.
    let cpp = json!({"code": "int main(){}", "executionEngine": "cpp"});
    let (s, body, _) = req("POST", &format!("{a}/job"), Some(&alice), Some(&cpp), &[]);
    assert_eq!(s, 403, "{mode}: {body}");
    assert!(body.contains("\"forbidden\""), "{mode}: {body}");
    assert_eq!(get(&format!("{a}/dead-letters"), Some(&alice)).0, 403, "{mode}");
    assert_eq!(get(&format!("{a}/dead-letters"), Some(&admin)).0, 200, "{mode}");
    // ... and through the Piston door, the same rule.
    let piston = json!({"language": "c++", "version": "*", "files": [{"content": "int main(){}"}]});
    let (s, body, _) = req("POST", &format!("{a}/api/v2/execute"), Some(&alice), Some(&piston), &[]);
    assert_eq!(s, 403, "{mode}: piston cpp for alice: {body}");
    assert!(body.contains("may not use"), "{mode}: {body}");
    let (s, _, _) = req("POST", &format!("{a}/api/v2/execute"), None, Some(&piston), &[]);
    assert_eq!(s, 401, "{mode}: the Piston door needs a key too");

    // The same Idempotency-Key from two keys is two jobs.
    let idem = [("Idempotency-Key", "shared-key-1")];
    let (_, one, _) = req("POST", &format!("{a}/job"), Some(&alice), Some(&job), &idem);
    let (_, two, _) = req("POST", &format!("{b}/job"), Some(&bob), Some(&job), &idem);
    let one: Value = serde_json::from_str(&one).unwrap();
    let two: Value = serde_json::from_str(&two).unwrap();
    assert_ne!(one["id"], two["id"], "{mode}: {one} {two}");

    // Sessions are their creator's.
    let (s, body, _) = req(
        "POST",
        &format!("{a}/session"),
        Some(&alice),
        Some(&json!({"executionEngine": "python"})),
        &[],
    );
    if s == 201 {
        let sid = serde_json::from_str::<Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            get(&format!("{b}/session/{sid}"), Some(&bob)).0,
            404,
            "{mode}: bob sees no session of alice"
        );
        let exec = json!({"code": "print(1)"});
        let (s, _, _) = req("POST", &format!("{b}/session/{sid}/exec"), Some(&bob), Some(&exec), &[]);
        assert_eq!(s, 404, "{mode}: nor runs in it");
        assert_eq!(get(&format!("{a}/session/{sid}"), Some(&alice)).0, 200, "{mode}");
    } else {
        panic!("{mode}: alice's session: {s} {body}");
    }

    // Revoked: 401 on every API within the cache's life (2 s).
    let out = keys_cmd(env, &["revoke", "bob"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (sa, sb) = (
            get(&format!("{a}/job"), Some(&bob)).0,
            get(&format!("{b}/job"), Some(&bob)).0,
        );
        if sa == 401 && sb == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{mode}: bob still answered {sa}/{sb} 10 s after revocation"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        get(&format!("{a}/job"), Some(&alice)).0,
        200,
        "{mode}: alice is unaffected"
    );
}

/// `POST url` with `key` and `body`: status, body, `Retry-After`.
fn post(url: &str, key: &str, body: &Value) -> (u16, Value, Option<u64>) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(90)))
        .build()
        .into();
    let mut r = agent
        .post(url)
        .header("Authorization", format!("Bearer {key}"))
        .header("Content-Type", "application/json")
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let text = r.body_mut().read_to_string().unwrap_or_default();
    (
        r.status().as_u16(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        after,
    )
}

/// Poll `GET url/job/{id}` as `key` until `done(record)`.
fn until(url: &str, key: &str, id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (s, body) = get(&format!("{url}/job/{id}"), Some(key));
        if s == 200 {
            let rec: Value = serde_json::from_str(&body).unwrap();
            if done(&rec) {
                return rec;
            }
        }
        assert!(Instant::now() < deadline, "job {id} never {what}: {s} {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The quotas, shared by both APIs when there are two (`a`, `b`): a rate-limited key gets 429
/// with `Retry-After` through every door while another key is unaffected; the concurrency and
/// waiting caps refuse past them and admit again once the key's jobs move on.
fn quotas_contract(mode: &str, a: &str, b: &str, env: &[(&str, String)]) {
    let limited = create_key(env, &["--name", "limited", "--rate", "0.5/s", "--burst", "3"]);
    let free = create_key(env, &["--name", "free"]);
    let job = json!({"code": "print(1)", "executionEngine": "python"});
    let started = Instant::now();
    let mut accepted = 0;
    for i in 0..8 {
        let (s, body, after) = post(&format!("{}/job", [a, b][i % 2]), &limited, &job);
        match s {
            200 => accepted += 1,
            429 => {
                assert_eq!(body["error"]["code"], "quota_exceeded", "{mode}: {body}");
                assert!(after.is_some_and(|s| s >= 1), "{mode}: a Retry-After: {after:?}");
            }
            other => panic!("{mode}: {other} {body}"),
        }
    }
    // One bucket for both APIs: its burst, and what its rate gave back meanwhile (two buckets
    // would have admitted six at once).
    let bound = 3 + (0.5 * started.elapsed().as_secs_f64()).floor() as i32;
    assert!(
        (3..=bound).contains(&accepted),
        "{mode}: {accepted} of 8 admitted; the bucket allows 3 to {bound}"
    );
    let (s, body, _) = post(&format!("{b}/job"), &free, &job);
    assert_eq!(s, 200, "{mode}: another key is unaffected: {body}");
    // The doors refuse alike, in their own shapes (a token may have come back: one admission
    // empties the bucket again).
    let judge0 = json!({"source_code": "print(1)", "language_id": 71});
    let piston = json!({"language": "python", "version": "*", "files": [{"content": "print(1)"}]});
    for (door, body) in [("/judge0/submissions", &judge0), ("/api/v2/execute", &piston)] {
        let refused = (0..3).find_map(|_| {
            let (s, reply, after) = post(&format!("{a}{door}"), &limited, body);
            (s == 429).then_some((reply, after))
        });
        let (reply, after) = refused.unwrap_or_else(|| panic!("{mode}: {door} never refused the limited key"));
        assert!(after.is_some_and(|s| s >= 1), "{mode}: {door}: Retry-After {after:?}");
        assert!(reply.to_string().contains("rate"), "{mode}: {door}: {reply}");
    }

    // Concurrency 1: a second unfinished job is refused on either API, admitted once the
    // first finished.
    let capped = create_key(env, &["--name", "capped", "--concurrency", "1"]);
    let sleep = json!({"code": "import time; time.sleep(3)", "executionEngine": "python"});
    let (s, first, _) = post(&format!("{a}/job"), &capped, &sleep);
    assert_eq!(s, 200, "{mode}: {first}");
    let first = first["id"].as_str().unwrap().to_string();
    let (s, body, after) = post(&format!("{a}/job"), &capped, &job);
    assert_eq!(
        (s, after),
        (429, Some(1)),
        "{mode}: the same API counts its fresh job: {body}"
    );
    assert!(
        body["error"]["message"].as_str().unwrap().contains("concurrency"),
        "{mode}: {body}"
    );
    until(a, &capped, &first, "ran", |r| r["status"] == "Running");
    let (s, body, _) = post(&format!("{b}/job"), &capped, &job);
    assert_eq!(s, 429, "{mode}: the other API counts it too: {body}");
    until(a, &capped, &first, "finished", |r| r["status"] == "Completed");
    let (s, body, _) = post(&format!("{b}/job"), &capped, &job);
    assert_eq!(s, 200, "{mode}: admitted again once it finished: {body}");

    // max_queued 1: with both workers busy, one job waits and the next is refused.
    let queued = create_key(env, &["--name", "queued", "--max-queued", "1"]);
    let mut running = Vec::new();
    for _ in 0..2 {
        let (s, body, _) = post(&format!("{a}/job"), &queued, &sleep);
        assert_eq!(s, 200, "{mode}: {body}");
        let id = body["id"].as_str().unwrap().to_string();
        until(a, &queued, &id, "ran", |r| r["status"] == "Running");
        running.push(id);
    }
    let (s, waiting, _) = post(&format!("{a}/job"), &queued, &job);
    assert_eq!(s, 200, "{mode}: one may wait: {waiting}");
    let (s, body, _) = post(&format!("{a}/job"), &queued, &job);
    assert_eq!(s, 429, "{mode}: a second may not: {body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("max_queued"),
        "{mode}: {body}"
    );
    let waiting = waiting["id"].as_str().unwrap().to_string();
    until(a, &queued, &waiting, "finished", |r| r["status"] == "Completed");
}

/// `wolf serve` on `listen` in `dir`, with `env`; its URL (127.0.0.1) and its stderr lines.
fn serve(
    dir: &std::path::Path,
    listen: &str,
    env: &[(&str, &str)],
) -> (wolf_testkit::serve::Reaped, String, std::sync::mpsc::Receiver<String>) {
    let s = wolf_testkit::serve::serve(dir, listen, env).unwrap();
    (s.child, s.url, s.log)
}

#[test]
fn keys_ownership_and_scopes_hold_embedded() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = [("WOLF_DATA_DIR", dir.path().join("data").display().to_string())];
    let (mut child, url, _) = serve(dir.path(), "127.0.0.1:0", &[("WOLF_AUTH", "on")]);
    tenants_contract("embedded", &url, &url, &env);
    quotas_contract("embedded", &url, &url, &env);
    let _ = child.kill();
    let _ = child.wait();
}

/// Fair dispatch in the embedded queue: behind one key's flood of 0.5 s jobs on two workers,
/// another key's job starts within about one job per worker, not after the flood.
#[test]
fn a_flood_from_one_key_does_not_delay_another_embedded() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = [("WOLF_DATA_DIR", dir.path().join("data").display().to_string())];
    let (mut child, url, _) = serve(dir.path(), "127.0.0.1:0", &[("WOLF_AUTH", "on")]);
    let flood = create_key(&env, &["--name", "flood"]);
    let other = create_key(&env, &["--name", "other"]);
    let slow = json!({"code": "import time; time.sleep(0.5)", "executionEngine": "python"});
    const N: usize = 40;
    for _ in 0..N {
        let (s, body, _) = post(&format!("{url}/job"), &flood, &slow);
        assert_eq!(s, 200, "{body}");
    }
    let job = json!({"code": "print('mine')", "executionEngine": "python"});
    let (s, rec, _) = post(&format!("{url}/job?wait=true&timeout=60"), &other, &job);
    assert_eq!((s, &rec["status"]), (200, &json!("Completed")), "{rec}");
    let (_, page) = get(&format!("{url}/job?limit=100"), Some(&flood));
    let page: Value = serde_json::from_str(&page).unwrap();
    let waiting = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["status"] == "Pending")
        .count();
    eprintln!(
        "fairness: the other key's queue wait {} ms behind a flood of {N} x 0.5 s jobs on 2 workers; {waiting} of the flood still waiting",
        rec["timings"]["queueWait"]
    );
    // First come, first served would have run the whole flood first (about 10 s).
    assert!(
        waiting >= N - 8,
        "only {waiting} of {N} flood jobs still waited: the other key's job queued behind the flood"
    );
    let _ = child.kill();
    let _ = child.wait();
}

/// Fair dispatch in the distributed mode (a window per key over JetStream, fair.rs): behind one
/// key's flood through one API, another key's job through the other API starts within about one
/// job per worker. Then the API that admitted the flood is killed (-9) with most of it held in
/// PostgreSQL: the other API promotes the rest, and every flood job completes.
#[test]
fn a_flood_from_one_key_does_not_delay_another_distributed() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = Stack::up_with(dir.path(), 2, 1, &[("WOLF_WORKERS", "2"), ("WOLF_AUTH", "on")]).unwrap();
    let env = [("WOLF_DATABASE_URL", s.postgres.url())];
    let flood = create_key(&env, &["--name", "flood"]);
    let other = create_key(&env, &["--name", "other"]);
    let (a, b) = (s.apis[0].1.clone(), s.apis[1].1.clone());
    // The window is the managers' workers plus one: wait until the API has read them (the
    // manager advertises once its pool is up), or the flood would be queued as without keys.
    let warm = json!({"code": "pass", "executionEngine": "python"});
    let (st, rec, _) = post(&format!("{a}/job?wait=true&timeout=60"), &flood, &warm);
    assert_eq!((st, &rec["status"]), (200, &json!("Completed")), "{rec}");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let slow = json!({"code": "import time; time.sleep(0.5)", "executionEngine": "python"});
    const N: usize = 40;
    let mut ids = Vec::new();
    for _ in 0..N {
        let (st, body, _) = post(&format!("{a}/job"), &flood, &slow);
        assert_eq!(st, 200, "{body}");
        ids.push(body["id"].as_str().unwrap().to_string());
    }
    // A held job under an Idempotency-Key, repeated: the same job, and (checked at the end) run
    // once: a repeat does not publish a held job beside its promotion.
    let once = || {
        let (st, body, _) = req(
            "POST",
            &format!("{a}/job"),
            Some(&flood),
            Some(&slow),
            &[("Idempotency-Key", "fair-1")],
        );
        assert_eq!(st, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let keyed = once();
    assert_eq!(once(), keyed, "a repeat answers the first job");
    let job = json!({"code": "print('mine')", "executionEngine": "python"});
    let (st, rec, _) = post(&format!("{b}/job?wait=true&timeout=60"), &other, &job);
    assert_eq!((st, &rec["status"]), (200, &json!("Completed")), "{rec}");
    assert_eq!(rec["result"]["exitCode"], 0, "{rec}");
    let pending = |url: &str| {
        let (_, page) = get(&format!("{url}/job?limit=100"), Some(&flood));
        let page: Value = serde_json::from_str(&page).unwrap();
        page["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|j| j["status"] == "Pending")
            .count()
    };
    let waiting = pending(&b);
    eprintln!(
        "fairness (distributed): the other key's queue wait {} ms behind a flood of {N} x 0.5 s jobs on 2 workers; {waiting} of the flood still waiting",
        rec["timings"]["queueWait"]
    );
    // First come, first served would have run the whole flood first (about 10 s).
    assert!(
        waiting >= N - 8,
        "only {waiting} of {N} flood jobs still waited: the other key's job queued behind the flood"
    );
    // The held jobs are in PostgreSQL, not in the API that admitted them: the other API
    // promotes them. Halfway, it restarts with fair dispatch off, and its passes publish the
    // rest without a window.
    s.kill_api(0);
    let half = &ids[N / 2];
    until(&b, &flood, half, "completed after the admitting API was killed", |r| {
        r["status"] == "Completed"
    });
    s.set_env("WOLF_FAIR_DISPATCH", "false");
    s.restart_api(1).unwrap();
    // Off, the first pass publishes every held job: none is held while more jobs are unfinished
    // than a window (3) would allow.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let _in_rt = rt.enter();
    let pg = wolf_store::PgStore::connect(&s.postgres.url()).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !rt.block_on(pg.held_by_owner()).unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "held jobs were not published with fair dispatch off"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let unfinished = ids
        .iter()
        .filter(|id| get(&format!("{b}/job/{id}"), Some(&flood)).1.contains("\"Pending\""))
        .count();
    assert!(
        unfinished >= 5,
        "only {unfinished} flood jobs waited when the held ones were published"
    );
    for id in &ids {
        let r = until(&b, &flood, id, "completed with fair dispatch off", |r| {
            r["status"] == "Completed"
        });
        assert_eq!(r["result"]["exitCode"], 0, "{r}");
    }
    let r = until(&b, &flood, &keyed, "completed", |r| r["status"] == "Completed");
    assert_eq!(
        r["attempts"].as_array().map(Vec::len),
        Some(1),
        "the held job ran once: {r}"
    );
}

#[test]
fn keys_ownership_and_scopes_hold_distributed_across_two_apis() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = Stack::up_with(dir.path(), 2, 1, &[("WOLF_WORKERS", "2"), ("WOLF_AUTH", "on")]).unwrap();
    let env = [("WOLF_DATABASE_URL", s.postgres.url())];
    tenants_contract("distributed", &s.apis[0].1, &s.apis[1].1, &env);
    quotas_contract("distributed", &s.apis[0].1, &s.apis[1].1, &env);
}

#[test]
fn beyond_loopback_keys_are_on_unless_insecure_is_said() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sub = |n: &str| {
        let d = dir.path().join(n);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (mut secure, url, _) = serve(&sub("secure"), "0.0.0.0:0", &[]);
    assert_eq!(
        get(&format!("{url}/job"), None).0,
        401,
        "listening on 0.0.0.0 needs a key by default"
    );
    let _ = secure.kill();
    let _ = secure.wait();
    let (mut open, url, lines) = serve(
        &sub("open"),
        "0.0.0.0:0",
        &[("WOLF_INSECURE_NO_AUTH", "1"), ("WOLF_LOG", "warn")],
    );
    assert_eq!(
        get(&format!("{url}/job"), None).0,
        200,
        "--insecure-no-auth serves without keys"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut warned = false;
    while !warned && Instant::now() < deadline {
        warned = lines
            .recv_timeout(Duration::from_millis(200))
            .is_ok_and(|l| l.contains("authentication is off"));
    }
    assert!(warned, "the start warns that authentication is off");
    let _ = open.kill();
    let _ = open.wait();
    // On loopback without a setting: as before keys (the README's first command).
    let (mut local, url, _) = serve(&sub("local"), "127.0.0.1:0", &[]);
    assert_eq!(get(&format!("{url}/job"), None).0, 200);
    let _ = local.kill();
    let _ = local.wait();
}

/// A browser cannot set a header on a WebSocket: its key rides as the subprotocol
/// `wolf.bearer.<key>` beside `wolf.v1`, which the server picks. The job is the key's; the
/// subprotocol is no key on a request that is not an upgrade; a wrong one is 401.
#[test]
fn a_websocket_presents_its_key_as_a_subprotocol_embedded() {
    use tungstenite::client::IntoClientRequest;
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let env = [("WOLF_DATA_DIR", dir.path().join("data").display().to_string())];
    let (_child, url, _) = serve(dir.path(), "127.0.0.1:0", &[("WOLF_AUTH", "on")]);
    let alice = create_key(&env, &["--name", "ws-alice"]);
    let bob = create_key(&env, &["--name", "ws-bob"]);
    let connect = |protocols: &str| {
        let mut r = format!("{}/job/ws", url.replace("http://", "ws://"))
            .into_client_request()
            .unwrap();
        if !protocols.is_empty() {
            r.headers_mut()
                .insert("Sec-WebSocket-Protocol", protocols.parse().unwrap());
        }
        tungstenite::connect(r)
    };
    match connect("") {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => panic!("no key: {:?}", other.map(|(_, r)| r.status())),
    }
    let wrong = format!("wolf.v1, wolf.bearer.wolf_00000000_{}", "0".repeat(64));
    match connect(&wrong) {
        Err(tungstenite::Error::Http(r)) => assert_eq!(r.status().as_u16(), 401),
        other => panic!("a wrong key: {:?}", other.map(|(_, r)| r.status())),
    }
    let (mut socket, resp) = connect(&format!("wolf.v1, wolf.bearer.{alice}")).expect("alice's key as a subprotocol");
    assert_eq!(
        resp.headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some("wolf.v1"),
        "the server answers with the protocol, never the key"
    );
    let init = json!({"type": "init", "executionEngine": "python", "code": "print('hi ' + input())"});
    socket
        .send(tungstenite::Message::Text(init.to_string().into()))
        .unwrap();
    let stdin = json!({"type": "stdin", "data": "ws\n"});
    socket
        .send(tungstenite::Message::Text(stdin.to_string().into()))
        .unwrap();
    let mut id = String::new();
    let mut out = String::new();
    while let Ok(m) = socket.read() {
        let tungstenite::Message::Text(t) = m else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        match v["type"].as_str() {
            Some("accepted") => id = v["id"].as_str().unwrap().to_string(),
            Some("stdout") => out.push_str(v["data"].as_str().unwrap_or("")),
            Some("result") => break,
            _ => {}
        }
    }
    assert_eq!(out, "hi ws\n");
    assert_eq!(get(&format!("{url}/job/{id}"), Some(&alice)).0, 200, "alice's job");
    assert_eq!(get(&format!("{url}/job/{id}"), Some(&bob)).0, 404, "not bob's");
    let sneaky = format!("wolf.bearer.{alice}");
    let (s, _, _) = req(
        "GET",
        &format!("{url}/job/{id}"),
        None,
        None,
        &[("Sec-WebSocket-Protocol", &sneaky)],
    );
    assert_eq!(s, 401, "the subprotocol is a key on an upgrade only");
}
