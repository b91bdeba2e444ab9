//! The HTTP edge through `app(state).oneshot(request)`, on the embedded store in a temporary
//! directory, without root and without a worker: hostile requests get the JSON error shape
//! with the right status, never a panic, never an accepted job the client cannot learn of.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt;
use wolf_api::{ApiConfig, AppState};
use wolf_core::Registry;
use wolf_store::{Events, LocalObjects, SqliteStore};

struct Edge {
    app: Router,
    store: Arc<SqliteStore>,
    _dir: tempfile::TempDir,
}

async fn edge(cfg: ApiConfig) -> Edge {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("wolf.db")).await.unwrap());
    let objects = Arc::new(LocalObjects::new(dir.path()));
    let store_handle = store.clone();
    let registry = Registry::builtin(&dir.path().join("cache")).unwrap();
    let state = AppState::new(
        store.clone(),
        objects,
        store,
        registry,
        cfg,
        Events::default(),
        None,
        Arc::new(AtomicBool::new(true)),
    );
    Edge {
        app: wolf_api::app(state),
        store: store_handle,
        _dir: dir,
    }
}

async fn call(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
    let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if !status.is_success() {
        assert!(ctype.starts_with("application/json"), "{status}: {ctype:?} {body:?}");
        assert!(v["error"]["code"].is_string(), "{status}: {v}");
    }
    (status, v)
}

fn get(uri: &str) -> Request<Body> {
    Request::get(uri).body(Body::empty()).unwrap()
}

fn post(uri: &str, body: Value) -> Request<Body> {
    Request::post(uri)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn jobs(app: &Router) -> usize {
    let (s, v) = call(app, get("/job?limit=100")).await;
    assert_eq!(s, StatusCode::OK);
    v["jobs"].as_array().unwrap().len()
}

const HELLO: &str = "print('hi')";

#[tokio::test]
async fn bad_wait_timeouts_are_refused_before_admission() {
    let e = edge(ApiConfig::default()).await;
    for t in ["NaN", "nan", "inf", "-inf", "-1", "1e999", "abc"] {
        let (s, v) = call(
            &e.app,
            post(
                &format!("/job?wait=true&timeout={t}"),
                json!({"code": HELLO, "executionEngine": "bash"}),
            ),
        )
        .await;
        // 1e999 parses as infinity; "abc" is not a number at all.
        let want = if t == "abc" {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        assert_eq!(s, want, "timeout={t}: {v}");
    }
    assert_eq!(jobs(&e.app).await, 0, "a refused request admitted a job");
    // The same on the long poll of a record.
    let (s, _) = call(
        &e.app,
        get("/job/0190c0a0-0000-7000-8000-000000000000?wait=true&timeout=NaN"),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn bad_ids_are_not_found_without_touching_the_store() {
    let e = edge(ApiConfig::default()).await;
    let long300 = "a".repeat(300);
    let long5000 = "b".repeat(5000);
    for id in [
        "%00",
        "%FF%FE",
        "..%2F..%2Fetc",
        long300.as_str(),
        long5000.as_str(),
        "not-a-uuid",
    ] {
        for suffix in ["", "/code", "/output", "/timeline"] {
            let (s, v) = call(&e.app, get(&format!("/job/{id}{suffix}"))).await;
            assert_eq!(
                s,
                StatusCode::NOT_FOUND,
                "/job/{}{suffix}: {v}",
                &id[..id.len().min(20)]
            );
            assert!(
                v["error"]["message"].as_str().unwrap().len() < 200,
                "the id is echoed whole"
            );
        }
    }
    // A well-formed id of no job.
    let (s, _) = call(&e.app, get("/job/0190c0a0-0000-7000-8000-000000000000/code")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn wrong_methods_and_malformed_queries_answer_json() {
    let e = edge(ApiConfig::default()).await;
    for (m, uri) in [
        ("DELETE", "/job"),
        ("PUT", "/job/0190c0a0-0000-7000-8000-000000000000"),
        ("POST", "/languages"),
    ] {
        let (s, _) = call(
            &e.app,
            Request::builder().method(m).uri(uri).body(Body::empty()).unwrap(),
        )
        .await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED, "{m} {uri}");
    }
    for q in ["limit=abc", "limit=-1", "limit=99999999999999999999999"] {
        let (s, _) = call(&e.app, get(&format!("/job?{q}"))).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{q}");
    }
    let (s, _) = call(&e.app, get("/job/0190c0a0-0000-7000-8000-000000000000?wait=maybe")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    for q in ["limit=0", "limit=101"] {
        let (s, _) = call(&e.app, get(&format!("/job?{q}"))).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{q}");
    }
}

#[tokio::test]
async fn a_huge_declared_body_is_refused_before_it_is_read() {
    let e = edge(ApiConfig::default()).await;
    // The body never arrives: only the declared length can be judged.
    let (_tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let req = Request::post("/job")
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_LENGTH, "1000000000000")
        .body(Body::from_stream(rx))
        .unwrap();
    let (s, _) = tokio::time::timeout(Duration::from_secs(5), call(&e.app, req))
        .await
        .expect("answered at once");
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn a_body_that_stalls_times_out_and_frees_its_permit() {
    let e = edge(ApiConfig {
        body_timeout: Duration::from_millis(300),
        max_inflight: 1,
        ..Default::default()
    })
    .await;
    let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    use futures::SinkExt;
    tx.send(Ok(b"{".to_vec())).await.unwrap();
    let req = Request::post("/job")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(rx))
        .unwrap();
    let (s, _) = tokio::time::timeout(Duration::from_secs(5), call(&e.app, req))
        .await
        .expect("the stalled body was given up on");
    assert_eq!(s, StatusCode::REQUEST_TIMEOUT);
    drop(tx);
    // The one in-flight permit is free again.
    let (s, _) = call(&e.app, get("/job")).await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn long_polls_do_not_take_the_in_flight_permits() {
    let e = edge(ApiConfig {
        max_inflight: 4,
        max_waits: 16,
        ..Default::default()
    })
    .await;
    let (s, v) = call(&e.app, post("/job", json!({"code": HELLO, "executionEngine": "bash"}))).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = v["id"].as_str().unwrap().to_string();
    // No worker runs here: each poll waits its whole timeout.
    let polls: Vec<_> = (0..12)
        .map(|_| {
            let app = e.app.clone();
            let uri = format!("/job/{id}?wait=true&timeout=3");
            tokio::spawn(async move { call(&app, get(&uri)).await.0 })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    for _ in 0..8 {
        let (s, _) = call(&e.app, get(&format!("/job/{id}"))).await;
        assert_eq!(s, StatusCode::OK, "a plain request was locked out by long polls");
    }
    // Past the long-poll pool: refused at once, not queued.
    let more: Vec<_> = (0..8)
        .map(|_| {
            let app = e.app.clone();
            let uri = format!("/job/{id}?wait=true&timeout=3");
            tokio::spawn(async move { call(&app, get(&uri)).await.0 })
        })
        .collect();
    let mut refused = 0;
    for h in more {
        if h.await.unwrap() == StatusCode::TOO_MANY_REQUESTS {
            refused += 1;
        }
    }
    assert!(refused >= 4, "the long-poll pool is not bounded ({refused} refused)");
    for h in polls {
        assert_eq!(h.await.unwrap(), StatusCode::OK);
    }
}

#[tokio::test]
async fn files_and_arguments_are_checked_in_linear_time_at_submission() {
    let e = edge(ApiConfig::default()).await;
    let dup = json!({"code": HELLO, "executionEngine": "bash",
        "files": [{"name": "a.txt", "content": ""}, {"name": "a.txt", "content": "x"}]});
    let (s, v) = call(&e.app, post("/job", dup)).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    // The source file's own name is taken.
    let clash = json!({"code": HELLO, "executionEngine": "bash", "files": [{"name": "main.sh", "content": ""}]});
    assert_eq!(
        call(&e.app, post("/job", clash)).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let many: Vec<Value> = (0..150_000)
        .map(|i| json!({"name": format!("f{i}"), "content": ""}))
        .collect();
    let started = Instant::now();
    let (s, _) = call(
        &e.app,
        post("/job", json!({"code": HELLO, "executionEngine": "bash", "files": many})),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    eprintln!("150000 files refused in {:?}", started.elapsed());
    let long = "x".repeat(200 * 1024);
    let (s, v) = call(
        &e.app,
        post(
            "/job",
            json!({"code": HELLO, "executionEngine": "bash", "args": [long]}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let many_args: Vec<String> = (0..20).map(|_| "y".repeat(100 * 1024)).collect();
    let (s, _) = call(
        &e.app,
        post(
            "/job",
            json!({"code": HELLO, "executionEngine": "bash", "args": many_args}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(jobs(&e.app).await, 0);
    // Within the limits: accepted.
    let too_many: Vec<String> = (0..257).map(|i| i.to_string()).collect();
    let (s, _) = call(
        &e.app,
        post(
            "/job",
            json!({"code": HELLO, "executionEngine": "bash", "args": too_many}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let bad_name = json!({"code": HELLO, "executionEngine": "bash", "files": [{"name": "é.txt", "content": ""}]});
    assert_eq!(
        call(&e.app, post("/job", bad_name)).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let ok = json!({"code": HELLO, "executionEngine": "bash", "args": ["x".repeat(1024), "é".repeat(1024)],
        "files": [{"name": "a.txt", "content": ""}, {"name": "b.txt", "content": ""}]});
    assert_eq!(call(&e.app, post("/job", ok)).await.0, StatusCode::OK);
}

#[tokio::test]
async fn file_paths_and_encodings_are_checked_at_submission() {
    let e = edge(ApiConfig::default()).await;
    let with = |files: Value| json!({"code": HELLO, "executionEngine": "bash", "files": files});
    for bad in [
        json!([{"name": "/etc/passwd", "content": ""}]),
        json!([{"name": "../up", "content": ""}]),
        json!([{"name": "a/../../up", "content": ""}]),
        json!([{"name": "a//b", "content": ""}]),
        json!([{"name": "./a", "content": ""}]),
        json!([{"name": "a/", "content": ""}]),
        json!([{"name": "a/b/c/d/e/f/g/h/i", "content": ""}]),
        json!([{"name": "src", "content": ""}, {"name": "src/x.py", "content": ""}]),
        json!([{"name": "src/x.py", "content": ""}, {"name": "src/x.py/y", "content": ""}]),
        json!([{"name": "x", "content": "not base64!", "encoding": "base64"}]),
        json!([{"name": "x", "content": "QQ", "encoding": "base64"}]),
        json!([{"name": "x", "content": "", "encoding": "rot13"}]),
    ] {
        let (s, v) = call(&e.app, post("/job", with(bad.clone()))).await;
        assert!(
            s == StatusCode::UNPROCESSABLE_ENTITY || s == StatusCode::BAD_REQUEST,
            "{s} {v} for {bad}"
        );
    }
    assert_eq!(jobs(&e.app).await, 0);
    let ok = with(
        json!([{"name": "src/pkg/util.py", "content": ""}, {"name": "src/main.txt", "content": ""},
        {"name": "blob.bin", "content": "AAH/", "encoding": "base64"}, {"name": "t", "content": "x", "encoding": "utf8"}]),
    );
    let (s, v) = call(&e.app, post("/job", ok)).await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn the_openapi_document_declares_every_path_parameter() {
    let e = edge(ApiConfig::default()).await;
    let (s, doc) = call(&e.app, get("/openapi.json")).await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for (path, ops) in paths {
        let wanted: Vec<&str> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .collect();
        for (method, op) in ops.as_object().unwrap() {
            for name in &wanted {
                let declared = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|p| p["name"] == *name && p["in"] == "path" && p["required"] == true);
                assert!(declared, "{method} {path} does not declare {{{name}}}");
            }
        }
    }
    let limit = doc["paths"]["/job"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()
        .clone();
    assert_eq!(limit["schema"]["maximum"], 100, "{limit}");
    assert_eq!(
        doc["components"]["schemas"]["Submission"]["properties"]["code"]["minLength"],
        1
    );
}

#[tokio::test]
async fn dead_letters_are_kept_and_listed_newest_first() {
    use wolf_store::Queue;
    let e = edge(ApiConfig::default()).await;
    let (s, v) = call(&e.app, get("/dead-letters")).await;
    assert_eq!((s, v), (StatusCode::OK, json!([])));
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, rec) = call(
            &e.app,
            post(
                "/job",
                json!({"code": format!("print({i})"), "executionEngine": "python"}),
            ),
        )
        .await;
        let id = rec["id"].as_str().unwrap().to_string();
        e.store.dead_letter(&id, &format!("reason {i}")).await.unwrap();
        ids.push(id);
    }
    let (s, v) = call(&e.app, get("/dead-letters?limit=2")).await;
    assert_eq!(s, StatusCode::OK);
    let got: Vec<(&str, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["jobId"].as_str().unwrap(), l["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(got, [(ids[2].as_str(), "reason 2"), (ids[1].as_str(), "reason 1")]);
    // Dead-lettered jobs left the queue.
    assert_eq!(e.store.depth().await.unwrap(), 0);
    assert_eq!(
        call(&e.app, get("/dead-letters?limit=0")).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
}

#[tokio::test]
async fn the_judge0_door_refuses_hostile_input_in_judge0s_shapes_and_admits_nothing() {
    let e = edge(ApiConfig::default()).await;
    let raw = |body: &'static str| {
        Request::post("/judge0/submissions")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from(body))
            .unwrap()
    };
    let (s, v) = call_j0(&e.app, raw("{not json")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].is_string(), "{v}");
    for (body, field) in [
        (
            json!({"source_code": "x", "language_id": 10_000_000_000u64}),
            "language_id",
        ),
        (json!({"source_code": "", "language_id": 71}), "source_code"),
        (
            json!({"source_code": "x", "language_id": 71, "memory_limit": "lots"}),
            "memory_limit",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "memory_limit": 1e300}),
            "memory_limit",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "stdin": ["not", "text"]}),
            "stdin",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "command_line_arguments": "a".repeat(600)}),
            "command_line_arguments",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "compiler_options": "-O2"}),
            "compiler_options",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "enable_network": true}),
            "enable_network",
        ),
        (
            json!({"source_code": "x", "language_id": 71, "additional_files": "UEsDBA=="}),
            "additional_files",
        ),
    ] {
        let (s, v) = call_j0(&e.app, post("/judge0/submissions", body.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body} → {v}");
        assert!(v[field].is_array(), "{body} → {v} (Judge0's field-error shape)");
    }
    let (s, v) = call_j0(
        &e.app,
        post(
            "/judge0/submissions?base64_encoded=true",
            json!({"source_code": "//8=", "language_id": 71}),
        ),
    )
    .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "base64 that is not UTF-8 once decoded: {v}"
    );
    let many: Vec<Value> = (0..21)
        .map(|_| json!({"source_code": "x", "language_id": 71}))
        .collect();
    let (s, _) = call_j0(&e.app, post("/judge0/submissions/batch", json!({"submissions": many}))).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, v) = call_j0(
        &e.app,
        post(
            "/judge0/submissions/batch",
            json!({"submissions": [{"language_id": 71}, {"source_code": "x"}]}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "no item valid: {v}");
    assert_eq!(v.as_array().map(Vec::len), Some(2), "one error hash per item: {v}");
    assert_eq!(jobs(&e.app).await, 0, "nothing refused was admitted");
    for path in [
        "/judge0/submissions/..%2F..%2Fetc",
        "/judge0/submissions/not-a-token",
        "/judge0/languages/999",
    ] {
        assert_eq!(call_j0(&e.app, get(path)).await.0, StatusCode::NOT_FOUND, "{path}");
    }
    let (s, _) = call_j0(&e.app, get("/judge0/submissions/batch?tokens=")).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = call_j0(
        &e.app,
        get(&format!("/judge0/submissions/batch?tokens={}", vec!["x"; 21].join(","))),
    )
    .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        call_j0(&e.app, get("/judge0/submissions")).await.0,
        StatusCode::FORBIDDEN
    );
    // Accepted: 201 and a token that Wolf's own API knows.
    let (s, v) = call_j0(
        &e.app,
        post(
            "/judge0/submissions",
            json!({"source_code": "print(1)", "language_id": "71"}),
        ),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let token = v["token"].as_str().unwrap();
    assert_eq!(call(&e.app, get(&format!("/job/{token}"))).await.0, StatusCode::OK);
}

/// A Judge0 answer: its status and JSON body (Judge0's shapes, not Wolf's error object).
async fn call_j0(app: &Router, req: Request<Body>) -> (StatusCode, Value) {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let body = axum::body::to_bytes(resp.into_body(), 1 << 24).await.unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_piston_door_refuses_hostile_input_with_400_messages_and_admits_nothing() {
    let e = edge(ApiConfig::default()).await;
    let raw = |body: String| {
        Request::post("/api/v2/execute")
            .header(header::CONTENT_TYPE, "text/plain;charset=UTF-8")
            .body(Body::from(body))
            .unwrap()
    };
    let many: Vec<Value> = (0..100_000)
        .map(|i| json!({"name": format!("f{i}"), "content": ""}))
        .collect();
    let mut files_bomb = vec![json!({"content": "print(1)"})];
    files_bomb.extend(many);
    for body in [
        "{not json".to_string(),
        "[1, 2]".to_string(),
        json!({"language": "bash", "version": "*", "files": files_bomb}).to_string(),
        json!({"language": "bash", "version": "x".repeat(100_000), "files": [{"content": "x"}]}).to_string(),
        json!({"language": "bash", "version": "*", "files": [{"content": "x"}, {"name": "/etc/passwd", "content": ""}]}).to_string(),
        json!({"language": "bash", "version": "*", "files": [{"content": "x", "encoding": "rot13"}]}).to_string(),
        json!({"language": "bash", "version": "*", "files": [{"content": "x"}], "args": [1]}).to_string(),
        json!({"language": "bash", "version": "*", "files": [{"content": "x"}], "run_memory_limit": 1e30}).to_string(),
    ] {
        let (s, v) = call_j0(&e.app, raw(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{} → {v}", &body[..body.len().min(120)]);
        assert!(v["message"].is_string(), "{v}");
    }
    assert_eq!(jobs(&e.app).await, 0, "nothing refused was admitted");
    let (s, v) = call_j0(&e.app, get("/api/v2/runtimes")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(v.as_array().unwrap().iter().any(|r| r["language"] == "bash"), "{v}");
    assert_eq!(call_j0(&e.app, get("/api/v2/nope")).await.0, StatusCode::NOT_FOUND);
}
