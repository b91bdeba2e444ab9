//! Black-box tests of `wolf serve`: the built binary, over HTTP.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::privileged;

/// A running `wolf serve` on a free port; killed on drop.
struct Server {
    child: Child,
    base: String,
    data: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

/// How long `/readyz` may take to say ready after a start (the C++ precompiled header).
const READY: std::time::Duration = std::time::Duration::from_secs(120);

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

impl Server {
    fn start(config: &str) -> Server {
        Server::start_env(config, &[])
    }

    fn start_env(config: &str, env: &[(&str, &str)]) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let mut s = Server::start_on_env(&data, config, None, env);
        s._dir = Some(dir);
        s
    }

    fn start_on(data: &Path, config: &str, port: Option<u16>) -> Server {
        Server::start_on_env(data, config, port, &[])
    }

    fn start_on_env(data: &Path, config: &str, port: Option<u16>, env: &[(&str, &str)]) -> Server {
        std::fs::create_dir_all(data).unwrap();
        let cfg = data.parent().unwrap().join("wolf.toml");
        std::fs::write(&cfg, config).unwrap();
        let listen = format!("127.0.0.1:{}", port.unwrap_or(0));
        let mut child = Command::new(env!("CARGO_BIN_EXE_wolf"))
            .args(["serve", "--listen", &listen, "--data-dir"])
            .arg(data)
            .arg("--config")
            .arg(&cfg)
            .env("WOLF_LOG", "warn")
            .env("WOLF_CACHE_DIR", common::cache_dir())
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn wolf serve");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let mut base = None;
        for line in lines.by_ref() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("wolf: listening on ") {
                base = Some(rest.split_whitespace().next().unwrap().to_string());
                break;
            }
            eprintln!("serve: {line}");
        }
        // Keep draining stderr so the server never blocks on a full pipe.
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                eprintln!("serve: {l}");
            }
        });
        let base = base.expect("wolf serve printed its address");
        let s = Server {
            child,
            base,
            data: data.to_path_buf(),
            _dir: None,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while s.get("/healthz").0 != 200 {
            assert!(Instant::now() < deadline, "healthz never answered");
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    fn port(&self) -> u16 {
        self.base.rsplit(':').next().unwrap().parse().unwrap()
    }

    fn get(&self, path: &str) -> (u16, String) {
        match agent().get(format!("{}{path}", self.base)).call() {
            Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
            Err(_) => (0, String::new()),
        }
    }

    fn get_json(&self, path: &str) -> (u16, Value) {
        let (s, b) = self.get(path);
        (s, serde_json::from_str(&b).unwrap_or(Value::Null))
    }

    fn post(&self, path: &str, ctype: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, Value) {
        let mut req = agent()
            .post(format!("{}{path}", self.base))
            .header("Content-Type", ctype);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        match req.send(&body[..]) {
            Ok(mut r) => {
                let status = r.status().as_u16();
                let text = r
                    .body_mut()
                    .with_config()
                    .limit(64 << 20)
                    .read_to_string()
                    .unwrap_or_default();
                (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
            }
            Err(e) => panic!("POST {path}: {e}"),
        }
    }

    fn submit(&self, body: &Value) -> (u16, Value) {
        self.post("/job", "application/json", body.to_string().into_bytes(), &[])
    }

    /// Follow the job until it is final (long polls of `GET /job/{id}?wait=true`).
    fn wait(&self, id: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let (s, v) = self.get_json(&format!("/job/{id}?wait=true&timeout=5"));
            if s == 200 && matches!(v["status"].as_str(), Some("Completed" | "Failed")) {
                return v;
            }
            assert!(Instant::now() < deadline, "job {id} not final in time: {v}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_hex(data: &[u8]) -> String {
    let out = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(data)?;
            c.wait_with_output()
        });
    String::from_utf8_lossy(&out.unwrap().stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

const SEED_CODE: &str =
    "#include <bits/stdc++.h>\nusing namespace std;\n\nint main() {\n    cout << \"Hello World\";\n    return 0;\n}";

#[test]
fn seed_flow_works_unchanged() {
    if !privileged() {
        return;
    }
    let s = Server::start("");
    let (status, rec) = s.submit(&json!({"code": SEED_CODE, "executionEngine": "c++"}));
    assert_eq!(status, 200, "{rec}");
    assert_eq!(rec["status"], "Pending");
    assert_eq!(rec["retryCount"], 0);
    assert!(rec["tags"].is_null());
    let id = rec["id"].as_str().unwrap();
    assert_eq!(rec["codePath"], format!("jobs/{id}/code.bin"));
    assert_eq!(rec["codeHash"], sha256_hex(SEED_CODE.as_bytes()));
    let done = s.wait(id, Duration::from_secs(60));
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(done["outputPath"], format!("jobs/{id}/output.log"));
    assert_eq!(done["outputHash"], sha256_hex(b"Hello World"));
    assert_eq!(done["result"]["verdict"], "Accepted");
    assert!(done["endTime"].is_string() && done["startTime"].is_string());
    for k in [
        "server",
        "queueWait",
        "workerCreation",
        "workerAcquire",
        "compile",
        "execution",
        "storage",
        "total",
    ] {
        assert!(done["timings"][k].is_number(), "timings.{k}: {done}");
    }
    assert_eq!(s.get(&format!("/job/{id}/output")), (200, "Hello World".to_string()));
    assert_eq!(s.get(&format!("/job/{id}/code")), (200, SEED_CODE.to_string()));
    // The waterfall: every stage once, in start order, with the worker and the trace id.
    let (st, tl) = s.get_json(&format!("/job/{id}/timeline"));
    assert_eq!(st, 200, "{tl}");
    let trace = tl["traceId"].as_str().unwrap_or_default();
    assert!(
        trace.len() == 32 && trace.chars().all(|c| c.is_ascii_hexdigit()),
        "{tl}"
    );
    assert_eq!(done["traceId"], tl["traceId"]);
    let spans = tl["spans"].as_array().unwrap();
    let mut stages: Vec<&str> = spans.iter().map(|s| s["stage"].as_str().unwrap()).collect();
    stages.sort();
    assert_eq!(
        stages,
        [
            "compile",
            "end_to_end",
            "execution",
            "queue_wait",
            "server",
            "storage",
            "worker_acquire",
            "worker_creation"
        ],
        "{tl}"
    );
    let starts: Vec<&str> = spans.iter().map(|s| s["start"].as_str().unwrap()).collect();
    assert!(starts.windows(2).all(|w| w[0] <= w[1]), "start order: {tl}");
    let exec = spans.iter().find(|s| s["stage"] == "execution").unwrap();
    assert_eq!(exec["attempt"], 1);
    assert!(exec["worker"].as_str().unwrap().contains("/w"), "{exec}");
    assert_eq!(s.get_json("/job/nope/timeline").0, 404);
    assert!(
        s.data.join(format!("jobs/{id}/code.bin")).exists() && s.data.join(format!("jobs/{id}/output.log")).exists()
    );
}

#[test]
fn every_field_of_a_submission_is_honoured() {
    if !privileged() {
        return;
    }
    let s = Server::start("");
    let code = "import sys\nextra = open('data.txt').read().strip()\nprint(sys.stdin.read().strip(), ' '.join(sys.argv[1:]), extra)\n";
    let body = json!({
        "code": code, "executionEngine": "python", "stdin": "in", "args": ["a", "b"],
        "files": [{"name": "data.txt", "content": "file"}],
        "limits": {"cpuTimeMs": 1000, "wallTimeMs": 3000, "memoryMb": 128, "pids": 8, "outputBytes": 1000},
        "expectedOutput": "in a b file\n", "tags": ["t1", "t2"]
    });
    let (status, rec) = s.post(
        "/job?wait=true&timeout=30",
        "application/json",
        body.to_string().into_bytes(),
        &[],
    );
    assert_eq!(status, 200, "{rec}");
    assert_eq!(rec["status"], "Completed");
    assert_eq!(rec["result"]["verdict"], "Accepted", "{rec}");
    assert_eq!(rec["tags"], json!(["t1", "t2"]));
    assert_eq!(
        s.get(&format!("/job/{}/output", rec["id"].as_str().unwrap())).1,
        "in a b file\n"
    );
    let mut wrong = body.clone();
    wrong["expectedOutput"] = json!("something else");
    let (_, rec) = s.post(
        "/job?wait=true",
        "application/json",
        wrong.to_string().into_bytes(),
        &[],
    );
    assert_eq!(rec["result"]["verdict"], "WrongAnswer", "{rec}");
    let (_, rec) = s.post(
        "/job?wait=true",
        "application/json",
        json!({"code": "while True: pass", "executionEngine": "python", "limits": {"cpuTimeMs": 300}})
            .to_string()
            .into_bytes(),
        &[],
    );
    assert_eq!(rec["result"]["verdict"], "TimeLimitExceeded", "{rec}");
}

#[test]
fn idempotency_key_same_body_same_job_other_body_conflict() {
    if !privileged() {
        return;
    }
    let s = Server::start("");
    let body = json!({"code": "print('once')", "executionEngine": "python"})
        .to_string()
        .into_bytes();
    let (a, ra) = s.post(
        "/job",
        "application/json",
        body.clone(),
        &[("Idempotency-Key", "key-1")],
    );
    let (b, rb) = s.post("/job", "application/json", body, &[("Idempotency-Key", "key-1")]);
    assert_eq!((a, b), (200, 200));
    assert_eq!(ra["id"], rb["id"], "same key, same body: same job");
    let other = json!({"code": "print('twice')", "executionEngine": "python"})
        .to_string()
        .into_bytes();
    let (c, rc) = s.post("/job", "application/json", other, &[("Idempotency-Key", "key-1")]);
    assert_eq!(c, 409, "{rc}");
    assert_eq!(rc["error"]["code"], "conflict");
    let done = s.wait(ra["id"].as_str().unwrap(), Duration::from_secs(30));
    assert_eq!(done["retryCount"], 0);
    let (_, page) = s.get_json("/job?limit=100");
    assert_eq!(page["jobs"].as_array().unwrap().len(), 1, "it ran once: {page}");
}

#[test]
fn multipart_submission_with_metadata_and_code_parts() {
    if !privileged() {
        return;
    }
    let s = Server::start("");
    let boundary = "wolfboundary42";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"metadata\"\r\nContent-Type: application/json\r\n\r\n{}\r\n\
         --{boundary}\r\nContent-Disposition: form-data; name=\"code\"; filename=\"main.sh\"\r\n\r\necho multipart $1\r\n--{boundary}--\r\n",
        json!({"executionEngine": "bash", "args": ["ok"]})
    );
    let (status, rec) = s.post(
        "/job?wait=true",
        &format!("multipart/form-data; boundary={boundary}"),
        body.into_bytes(),
        &[],
    );
    assert_eq!(status, 200, "{rec}");
    assert_eq!(rec["result"]["verdict"], "Accepted", "{rec}");
    assert_eq!(
        s.get(&format!("/job/{}/output", rec["id"].as_str().unwrap())).1,
        "multipart ok\n"
    );
}

#[test]
fn each_error_class_has_its_status_and_a_json_body() {
    if !privileged() {
        return;
    }
    let s = Server::start("");
    let check = |(status, v): (u16, Value), want: u16, code: &str| {
        assert_eq!(status, want, "{v}");
        assert_eq!(v["error"]["code"], code, "{v}");
        assert!(v["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    };
    check(
        s.post("/job", "application/json", b"{not json".to_vec(), &[]),
        400,
        "malformed_request",
    );
    check(s.get_json("/job/does-not-exist"), 404, "not_found");
    check(s.get_json("/job/does-not-exist/output"), 404, "not_found");
    check(s.get_json("/no/such/route"), 404, "not_found");
    let big = "x".repeat((1 << 20) + 1);
    check(
        s.submit(&json!({"code": big, "executionEngine": "python"})),
        413,
        "too_large",
    );
    check(
        s.post("/job", "text/plain", b"print(1)".to_vec(), &[]),
        415,
        "unsupported_media_type",
    );
    let (status, v) = s.submit(&json!({"code": "x", "executionEngine": "cobol"}));
    check((status, v.clone()), 422, "invalid_field");
    let msg = v["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("cobol") && msg.contains("python") && msg.contains("c++"),
        "lists the known engines: {msg}"
    );
    check(s.submit(&json!({"executionEngine": "python"})), 422, "invalid_field");
    check(
        s.submit(&json!({"code": "x", "executionEngine": "python", "limits": {"memoryMb": 1_000_000}})),
        422,
        "invalid_field",
    );
    check(
        s.submit(&json!({"code": "x", "executionEngine": "python", "files": [{"name": "../x", "content": ""}]})),
        422,
        "invalid_field",
    );
    check(s.get_json("/job?limit=0"), 422, "invalid_field");
    // Output of an unfinished job: 409.
    let (_, rec) = s.submit(&json!({"code": "import time; time.sleep(2)", "executionEngine": "python"}));
    check(
        s.get_json(&format!("/job/{}/output", rec["id"].as_str().unwrap())),
        409,
        "conflict",
    );
}

#[test]
fn listing_languages_health_metrics_and_openapi() {
    if !privileged() {
        return;
    }
    let s = Server::start("");
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, r) = s.submit(&json!({"code": format!("print({i})"), "executionEngine": "python"}));
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    let (status, page) = s.get_json("/job?limit=2");
    assert_eq!(status, 200);
    let got: Vec<&str> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, [ids[2].as_str(), ids[1].as_str()], "newest first");
    let (_, next) = s.get_json(&format!("/job?limit=2&offset={}", page["nextOffset"].as_str().unwrap()));
    assert_eq!(next["jobs"][0]["id"], ids[0]);
    let (_, langs) = s.get_json("/languages");
    let names: Vec<&str> = langs
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    for want in ["c", "c++", "python", "bash"] {
        assert!(names.contains(&want), "{langs}");
    }
    assert!(langs[0]["version"].is_string(), "{langs}");
    assert_eq!(wolf_testkit::client::ready(&s.base, READY), 200);
    for id in &ids {
        s.wait(id, Duration::from_secs(30));
    }
    let (status, metrics) = s.get("/metrics");
    assert_eq!(status, 200);
    for stage in [
        "server",
        "queue_wait",
        "worker_creation",
        "execution",
        "storage",
        "end_to_end",
    ] {
        assert!(
            metrics.contains(&format!(
                "wolf_stage_duration_seconds_bucket{{stage=\"{stage}\",le=\"0.0001\"}}"
            )),
            "stage {stage}:\n{metrics}"
        );
    }
    assert!(metrics.contains("wolf_jobs_total"), "{metrics}");
    let (status, doc) = s.get_json("/openapi.json");
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    assert!(
        doc["paths"]["/job"]["post"].is_object() && doc["components"]["schemas"]["JobRecord"].is_object(),
        "{doc}"
    );
}

/// With a cache that has no precompiled header yet, `/readyz` says which engines are still being
/// prepared, then ready; a python job meanwhile does not wait for the C++ build.
#[test]
fn readiness_waits_for_engine_preparation_and_other_engines_do_not() {
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = cache.path().display().to_string();
    let s = Server::start_env("", &[("WOLF_CACHE_DIR", &cache_dir)]);
    let (status, body) = s.get("/readyz");
    if status == 200 {
        // Only when no present engine has anything to prepare (no C or C++ compiler here).
        let (_, langs) = s.get_json("/languages");
        assert!(
            !langs.to_string().contains("\"c++\""),
            "ready before the C++ header was built: {body}"
        );
        return;
    }
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("preparing") && body.contains("c++"), "{body}");
    let (status, rec) = s.post(
        "/job?wait=true",
        "application/json",
        br#"{"code": "print('not waiting')", "executionEngine": "python"}"#.to_vec(),
        &[],
    );
    assert_eq!((status, rec["status"].as_str()), (200, Some("Completed")), "{rec}");
    let (_, still) = s.get("/readyz");
    eprintln!("after a python job: {still}");
    assert_eq!(wolf_testkit::client::ready(&s.base, READY), 200);
}

#[test]
fn many_jobs_in_parallel_all_correct() {
    if !privileged() {
        return;
    }
    let s = Server::start("");
    let n = 40;
    let ids: Vec<String> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let s = &s;
                sc.spawn(move || {
                    let (st, r) = s.submit(&json!({"code": format!("print({i} * {i})"), "executionEngine": "python"}));
                    assert_eq!(st, 200, "{r}");
                    r["id"].as_str().unwrap().to_string()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, id) in ids.iter().enumerate() {
        let done = s.wait(id, Duration::from_secs(120));
        assert_eq!(done["result"]["verdict"], "Accepted", "{done}");
        assert_eq!(s.get(&format!("/job/{id}/output")).1, format!("{}\n", i * i));
    }
}

#[test]
fn overload_gets_only_fast_refusals_and_every_accepted_job_completes() {
    if !privileged() {
        return;
    }
    let s = Server::start("max_inflight = 4\nmax_pending = 20\nworkers = 2\n");
    let results: Vec<(u16, Value, Duration)> = std::thread::scope(|sc| {
        let hs: Vec<_> = (0..16)
            .map(|t| {
                let s = &s;
                sc.spawn(move || {
                    (0..25)
                        .map(|i| {
                            let started = Instant::now();
                            let (st, v) = s.submit(
                                &json!({"code": format!("print({t} * 1000 + {i})"), "executionEngine": "python"}),
                            );
                            (st, v, started.elapsed())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    let mut accepted = Vec::new();
    let mut refused = 0;
    for (st, v, _) in &results {
        match st {
            200 => accepted.push((v["id"].as_str().unwrap().to_string(), v.clone())),
            429 | 503 => refused += 1,
            other => panic!("only 2xx/429/503 under overload, got {other}: {v}"),
        }
    }
    assert!(
        refused > 0,
        "a burst of 400 against 4 in flight and 20 pending is refused in part"
    );
    assert!(!accepted.is_empty());
    for (id, _) in &accepted {
        let done = s.wait(id, Duration::from_secs(180));
        assert_eq!(done["status"], "Completed", "{done}");
    }
    let slowest_refusal = results
        .iter()
        .filter(|(st, _, _)| *st != 200)
        .map(|(_, _, d)| *d)
        .max()
        .unwrap_or_default();
    eprintln!(
        "overload: {} accepted, {refused} refused, slowest refusal {slowest_refusal:?}",
        accepted.len()
    );
    // Memory stays bounded: nothing is buffered per refused request.
    let status = std::fs::read_to_string(format!("/proc/{}/status", s.child.id())).unwrap();
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(rss_kb < 256 * 1024, "wolf serve grew to {rss_kb} KiB under the burst");
}

#[test]
fn kill_9_under_load_then_restart_loses_no_accepted_job() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut s = Server::start_on(&data, "workers = 2\n", None);
    let port = s.port();
    let mut accepted = Vec::new();
    for i in 0..30 {
        let (st, r) = s.submit(
            &json!({"code": format!("import time\ntime.sleep(0.05)\nprint({i} + 1000)"), "executionEngine": "python"}),
        );
        assert_eq!(st, 200);
        accepted.push((r["id"].as_str().unwrap().to_string(), i));
        if i == 20 {
            s.kill9();
            break;
        }
    }
    // Nothing of the killed process survives it: no sandbox process is left orphaned.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let orphans: Vec<i32> = orphaned_sandbox_processes();
        if orphans.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "sandbox processes outlived their host: {orphans:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let s = Server::start_on(&data, "workers = 2\n", Some(port));
    for (id, i) in &accepted {
        let done = s.wait(id, Duration::from_secs(120));
        assert_eq!(done["status"], "Completed", "{done}");
        assert_eq!(done["result"]["verdict"], "Accepted", "{done}");
        assert_eq!(
            s.get(&format!("/job/{id}/output")).1,
            format!("{}\n", i + 1000),
            "job {id}"
        );
        assert_eq!(done["outputHash"], sha256_hex(format!("{}\n", i + 1000).as_bytes()));
    }
}

/// Sandbox processes (template, init, supervisors) whose parent is PID 1: their host is gone.
fn orphaned_sandbox_processes() -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if !String::from_utf8_lossy(&cmd).contains("__wolf-sandbox") {
            continue;
        }
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let ppid: i32 = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == 1 {
            out.push(pid);
        }
    }
    out
}

/// The sandbox init process whose tree runs a process with `marker` in its command line.
fn init_running(marker: &str) -> Option<i32> {
    let ppid = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit(')').next()?.split_whitespace().nth(1)?.parse().ok()
    };
    let cmdline = |pid: i32| {
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default()
    };
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if !cmdline(pid).contains(marker) || cmdline(pid).contains("wolf serve") {
            continue;
        }
        // program -> step supervisor -> init -> (template ->) wolf serve
        let mut p = pid;
        for _ in 0..5 {
            let parent = ppid(p)?;
            let via_exec = cmdline(parent).contains("wolf serve");
            let via_template =
                cmdline(parent).contains("__wolf-sandbox-template") && cmdline(ppid(parent)?).contains("wolf serve");
            if via_exec || via_template {
                return Some(p);
            }
            p = parent;
        }
    }
    None
}

#[test]
fn a_worker_killed_mid_job_is_retried_and_the_pool_heals() {
    if !privileged() {
        return;
    }
    let s = Server::start("workers = 2\n");
    let marker = format!("marker{}", std::process::id());
    let (_, rec) = s.submit(&json!({"code": "import time, sys\ntime.sleep(1.5)\nprint('survived', sys.argv[1][:6])", "executionEngine": "python", "args": [marker]}));
    let id = rec["id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let init = loop {
        if let Some(p) = init_running(&marker) {
            break p;
        }
        assert!(Instant::now() < deadline, "the job never started");
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = Command::new("kill").args(["-9", &init.to_string()]).status();
    let done = s.wait(id, Duration::from_secs(60));
    assert_eq!(done["status"], "Completed", "{done}");
    assert!(done["retryCount"].as_u64().unwrap() >= 1, "{done}");
    assert_eq!(s.get(&format!("/job/{id}/output")).1, "survived marker\n");
    // Both deliveries are in the record and on the timeline.
    assert_eq!(
        done["attempts"].as_array().map(Vec::len),
        Some(done["retryCount"].as_u64().unwrap() as usize + 1),
        "{done}"
    );
    let (_, tl) = s.get_json(&format!("/job/{id}/timeline"));
    assert!(
        tl["spans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["stage"] == "attempt" && s["attempt"] == 1),
        "{tl}"
    );
    // The pool healed: more jobs run.
    let (_, after) = s.post(
        "/job?wait=true",
        "application/json",
        json!({"code": "print('next')", "executionEngine": "python"})
            .to_string()
            .into_bytes(),
        &[],
    );
    assert_eq!(after["result"]["verdict"], "Accepted", "{after}");
}

#[test]
fn sigterm_stops_intake_and_finishes_running_jobs() {
    if !privileged() {
        return;
    }
    let mut s = Server::start("workers = 1\n");
    let (_, rec) =
        s.submit(&json!({"code": "import time\ntime.sleep(1)\nprint('finished')", "executionEngine": "python"}));
    let id = rec["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.get_json(&format!("/job/{id}")).1["status"] != "Running" {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = s.terminate();
    assert!(status.success(), "{status:?}");
    // Restart on the same data: the job finished before the exit.
    let data = s.data.clone();
    let s2 = Server::start_on(&data, "workers = 1\n", None);
    let done = s2.get_json(&format!("/job/{id}")).1;
    assert_eq!(done["status"], "Completed", "{done}");
    assert_eq!(done["retryCount"], 0, "finished once, not re-run: {done}");
}

#[test]
fn a_worker_socket_serves_only_its_manager() {
    if !privileged() {
        return;
    }
    let s = Server::start("workers = 1\n");
    let dir = s.data.join("workers");
    let deadline = Instant::now() + Duration::from_secs(20);
    let sock = loop {
        let found = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "sock"));
        if let Some(p) = found {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "no worker socket appeared in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o600);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let spec = wolf_sandbox::protocol::JobSpec {
        files: vec![],
        steps: vec![],
        collect: None,
    };
    for token in ["", "not-the-token"] {
        // Same uid as the manager, outside the sandbox: SO_PEERCRED passes, the token does not.
        match rt.block_on(wolf_worker::client::run(&sock, token, "rogue", &spec, vec![])) {
            Err(wolf_worker::client::ClientError::Call(st)) => {
                assert_eq!(st.code(), tonic::Code::PermissionDenied, "{st:?}")
            }
            other => panic!("a rogue caller must be refused, got {other:?}"),
        }
    }
    // The refused calls did not consume the worker: the manager's job still runs on it.
    let (_, rec) = s.post(
        "/job?wait=true",
        "application/json",
        json!({"code": "print('mine')", "executionEngine": "python"})
            .to_string()
            .into_bytes(),
        &[],
    );
    assert_eq!(rec["result"]["verdict"], "Accepted", "{rec}");
    assert_eq!(rec["retryCount"], 0, "{rec}");
}

#[test]
fn wolf_migrate_applies_the_postgres_schema_idempotently() {
    if !privileged() {
        return;
    }
    let pg = wolf_testkit::Postgres::start().unwrap();
    for _ in 0..2 {
        let out = Command::new(env!("CARGO_BIN_EXE_wolf"))
            .args(["migrate", "--database-url", &pg.url()])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        // The last migration's number (0005: fair dispatch's held jobs).
        let version = wolf_store::postgres::MIGRATIONS.last().map(|(v, _)| *v).unwrap_or(0);
        assert_eq!(version, 5);
        assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("schema at version {version}")));
    }
    for table in [
        "wolf_jobs",
        "wolf_api_keys",
        "wolf_owners",
        "wolf_rate_buckets",
        "wolf_webhooks",
    ] {
        let out = Command::new("psql")
            .args([&pg.url(), "-tAc", &format!("SELECT count(*) FROM {table}")])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0", "{table}");
    }
}

/// Metric names in a PromQL expression (`wolf_...`).
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("wolf_") {
        let start = i + pos;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        if start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_') {
            out.push(expr[start..end].to_string());
        }
        i = end;
    }
    out
}

/// Label names a PromQL expression groups by or matches on, per metric it names.
fn label_names(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for part in expr.split("by (").skip(1) {
        let inner = part.split(')').next().unwrap_or_default();
        out.extend(inner.split(',').map(|l| l.trim().to_string()));
    }
    for part in expr.split('{').skip(1) {
        let inner = part.split('}').next().unwrap_or_default();
        for m in inner.split(',') {
            if let Some(name) = m.split(['=', '!']).next() {
                out.push(name.trim().to_string());
            }
        }
    }
    out.retain(|l| !l.is_empty() && l != "le");
    out
}

#[test]
fn every_dashboard_query_names_exported_metrics_with_fine_buckets_and_bounded_labels() {
    if !privileged() {
        return;
    }
    let s = Server::start("");
    for (engine, code) in [
        ("python", "print(1)"),
        ("c", "#include <stdio.h>\nint main(void){puts(\"1\");return 0;}"),
    ] {
        let (_, rec) = s.post(
            "/job?wait=true",
            "application/json",
            json!({"code": code, "executionEngine": engine})
                .to_string()
                .into_bytes(),
            &[],
        );
        assert_eq!(rec["result"]["verdict"], "Accepted", "{rec}");
    }
    let (st, text) = s.get("/metrics");
    assert_eq!(st, 200);
    let exported: std::collections::BTreeMap<String, String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    let base = |name: &str| -> String {
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(b) = name.strip_suffix(suffix)
                && exported.get(b).map(String::as_str) == Some("histogram")
            {
                return b.to_string();
            }
        }
        name.to_string()
    };
    // Samples of a metric (histogram samples carry the suffixes).
    let samples = |metric: &str| -> Vec<&str> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| l.split(['{', ' ']).next().is_some_and(|n| base(n) == metric))
            .collect()
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dashboards");
    let mut checked = 0;
    for entry in std::fs::read_dir(&root).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let dash: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        for panel in dash["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().unwrap() {
                let expr = target["expr"].as_str().unwrap();
                let names = metric_names(expr);
                assert!(
                    !names.is_empty(),
                    "{}: a query names no wolf metric: {expr}",
                    path.display()
                );
                for name in names {
                    let metric = base(&name);
                    assert!(
                        exported.contains_key(&metric),
                        "{}: panel {:?} queries {name}, which Wolf does not export",
                        path.display(),
                        panel["title"]
                    );
                    for label in label_names(expr) {
                        assert!(
                            samples(&metric).iter().any(|l| l.contains(&format!("{label}=\""))),
                            "{}: {metric} has no label {label:?} (query {expr})",
                            path.display()
                        );
                    }
                    checked += 1;
                }
            }
        }
        // The stage variable offers exactly the stages Wolf measures.
        let stages = dash["templating"]["list"][0]["query"].as_str().unwrap();
        for stage in stages.split(',') {
            assert!(
                text.contains(&format!("wolf_stage_duration_seconds_count{{stage=\"{stage}\"}}")),
                "stage {stage} has no samples after a compiled and an interpreted job"
            );
        }
    }
    assert!(
        checked >= 10,
        "the dashboards query the metrics ({checked} names checked)"
    );
    // Buckets from 50 µs to 5 minutes; no label value is a job id.
    for le in ["0.00005", "0.001", "300"] {
        assert!(
            text.contains(&format!(
                "wolf_stage_duration_seconds_bucket{{stage=\"execution\",le=\"{le}\"}}"
            )),
            "bucket le={le} missing"
        );
    }
    let (_, rec) = s.submit(&json!({"code": "print(2)", "executionEngine": "python"}));
    let id = rec["id"].as_str().unwrap();
    let (_, text) = s.get("/metrics");
    assert!(!text.contains(id), "a job id appeared in a label");
    for name in [
        "wolf_jobs_total",
        "wolf_refusals_total",
        "wolf_persistence_retries_total",
        "wolf_redeliveries_total",
        "wolf_dead_letters_total",
        "wolf_queue_depth",
        "wolf_workers",
    ] {
        assert!(text.contains(&format!("# TYPE {name} ")), "{name} is not exported");
    }
    assert!(root.join("prometheus.yml").is_file() && root.join("provisioning/datasources/prometheus.yaml").is_file());
}

#[test]
fn the_embedded_queue_carries_the_trace_from_the_request_to_the_worker() {
    if !privileged() {
        return;
    }
    let otlp = wolf_testkit::otlp::OtlpReceiver::start().unwrap();
    let s = Server::start_env(
        "",
        &[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint()),
            ("OTEL_BSP_SCHEDULE_DELAY", "100"),
        ],
    );
    let (_, rec) = s.post(
        "/job?wait=true",
        "application/json",
        json!({"code": "print(1)", "executionEngine": "python"})
            .to_string()
            .into_bytes(),
        &[],
    );
    assert_eq!(rec["status"], "Completed", "{rec}");
    let trace = rec["traceId"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let spans: Vec<_> = otlp.spans().into_iter().filter(|s| s.trace_id == trace).collect();
        let api = spans.iter().find(|s| s.name == "api.submit");
        let job = spans.iter().find(|s| s.name == "manager.job");
        if let (Some(api), Some(job)) = (api, job) {
            assert_eq!(job.parent_span_id, api.span_id, "through the SQLite queue row");
            assert!(spans.iter().all(|s| s.service == "wolf-serve"));
            assert!(spans.iter().any(|s| s.name == "worker.execution"));
            break;
        }
        assert!(Instant::now() < deadline, "trace {trace} incomplete: {spans:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn json_logs_carry_the_job_and_trace_id_on_every_line_of_a_job() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("stderr")).unwrap();
    let port = wolf_testkit::port::free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wolf"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .env("WOLF_LOG", "info,wolf_manager=debug")
        .env("WOLF_LOG_FORMAT", "json")
        .env("WOLF_CACHE_DIR", common::cache_dir())
        .stderr(log)
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while agent().get(format!("{base}/healthz")).call().is_err() {
        assert!(Instant::now() < deadline, "healthz never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut r = agent()
        .post(format!("{base}/job?wait=true"))
        .header("Content-Type", "application/json")
        .send(json!({"code": "print(1)", "executionEngine": "python"}).to_string())
        .unwrap();
    let rec: Value = serde_json::from_str(&r.body_mut().read_to_string().unwrap()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let text = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    let lines: Vec<Value> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(!lines.is_empty(), "no JSON log line: {text}");
    let job_lines: Vec<&Value> = lines.iter().filter(|l| l["span"]["job_id"] == rec["id"]).collect();
    assert!(
        job_lines.iter().any(|l| l["fields"]["message"] == "job completed"),
        "{text}"
    );
    for l in job_lines {
        assert_eq!(l["span"]["trace_id"], rec["traceId"], "{l}");
    }
}

#[test]
fn a_dead_sandbox_template_is_replaced_and_the_pool_serves_again() {
    if !privileged() {
        return;
    }
    let s = Server::start("workers = 2\n");
    let run = |i: u32| {
        let (st, v) = s.post(
            "/job?wait=true&timeout=60",
            "application/json",
            json!({"code": format!("print({i})"), "executionEngine": "python"})
                .to_string()
                .into_bytes(),
            &[],
        );
        assert_eq!(st, 200, "{v}");
        assert_eq!(v["result"]["verdict"], "Accepted", "job {i}: {v}");
        assert_eq!(v["retryCount"], 0, "a dead warm sandbox cost job {i} an attempt: {v}");
    };
    run(0);
    let server = s.child.id() as i32;
    let mut seen = Vec::new();
    for round in 0..3 {
        let templates = wolf_testkit::procs::templates_of(server);
        assert_eq!(templates.len(), 1, "round {round}: {templates:?}");
        assert!(!seen.contains(&templates[0]), "the same template after a kill");
        seen.push(templates[0]);
        let _ = Command::new("kill").args(["-9", &templates[0].to_string()]).status();
        std::thread::sleep(Duration::from_millis(200));
        // Both warm sandboxes died with their template; every job still runs, first time.
        for i in 0..4 {
            run(round * 10 + i);
        }
        assert_eq!(s.get("/readyz").0, 200, "round {round}");
    }
    let (_, metrics) = s.get("/metrics");
    let restarts = metrics
        .lines()
        .find(|l| l.starts_with("wolf_sandbox_template_restarts_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse::<f64>().ok());
    assert_eq!(restarts, Some(3.0), "{metrics}");
}

#[test]
fn output_that_is_not_utf8_is_flagged_and_kept_raw() {
    if !privileged() {
        return;
    }
    let s = Server::start("workers = 1\n");
    let (st, v) = s.post(
        "/job?wait=true&timeout=60",
        "application/json",
        json!({"code": "import sys\nsys.stdout.buffer.write(b'ok \\xff\\xfe end')\nsys.stderr.buffer.write(b'\\xc3(')\n", "executionEngine": "python"})
            .to_string()
            .into_bytes(),
        &[],
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["result"]["verdict"], "Accepted", "{v}");
    assert_eq!(v["result"]["outputNotUtf8"], true, "{v}");
    assert!(v["result"]["stderr"].as_str().unwrap().contains('\u{fffd}'), "{v}");
    // The raw bytes, as the program wrote them.
    let id = v["id"].as_str().unwrap();
    let mut r = agent().get(format!("{}/job/{id}/output", s.base)).call().unwrap();
    let raw = r.body_mut().read_to_vec().unwrap();
    assert_eq!(raw, b"ok \xff\xfe end");
    // Valid output carries no flag.
    let (_, v) = s.post(
        "/job?wait=true&timeout=60",
        "application/json",
        json!({"code": "print('fine')", "executionEngine": "python"})
            .to_string()
            .into_bytes(),
        &[],
    );
    assert!(v["result"].get("outputNotUtf8").is_none(), "{v}");
}
