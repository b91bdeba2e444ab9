//! The HTTP contract, written once and run against both modes: `wolf serve` (embedded) and the
//! distributed testbed (two APIs, one manager, JetStream, PostgreSQL, S3). Every request that
//! can go to "another API" goes to the second one in the distributed run, so a behaviour that
//! differs between the modes, or between APIs, fails here.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wolf_testkit::Stack;

#[path = "contract/checkers.rs"]
mod checkers;
#[path = "contract/inputs.rs"]
mod inputs;
#[path = "contract/interactors.rs"]
mod interactors;
#[path = "contract/live.rs"]
mod live;
#[path = "contract/sessions.rs"]
mod sessions;

/// Python that tries the usual ways out of a sandbox (the host's secrets, the network, a write
/// under /usr) and leaves in `got` what worked; each caller adds how its program reports it.
const ESCAPE_PROBE: &str = r#"import os, socket, sys
got = []
for path in ["/etc/shadow", "/root", "/proc/1/environ"]:
    try:
        open(path).read() if not os.path.isdir(path) else os.listdir(path)
        got.append(path)
    except OSError:
        pass
try:
    socket.create_connection(("1.1.1.1", 53), timeout=1)
    got.append("network")
except OSError:
    pass
try:
    open("/usr/wolf-was-here", "w")
    got.append("/usr")
except OSError:
    pass
"#;

/// How long `/readyz` may take to say ready after a start (the C++ precompiled header).
const READY: std::time::Duration = std::time::Duration::from_secs(120);

fn root() -> bool {
    wolf_testkit::running_as_root("sandboxes and the testkit's PostgreSQL need root")
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(90)))
        .build()
        .into()
}

/// Status, content type and body of one request.
fn call(method: &str, url: &str, body: Option<&Value>) -> (u16, String, String) {
    let a = agent();
    let resp = match (method, body) {
        ("GET", _) => a.get(url).call(),
        ("POST", Some(b)) => a
            .post(url)
            .header("Content-Type", "application/json")
            .send(b.to_string()),
        ("POST", None) => a.post(url).send_empty(),
        ("DELETE", _) => a.delete(url).call(),
        _ => unreachable!(),
    };
    match resp {
        Ok(mut r) => {
            let ctype = r
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
            (
                r.status().as_u16(),
                ctype,
                r.body_mut().read_to_string().unwrap_or_default(),
            )
        }
        Err(e) => panic!("{method} {url}: {e}"),
    }
}

fn json_of(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or(Value::Null)
}

/// An error answer: its status, and the JSON shape every error has.
fn error(method: &str, url: &str, body: Option<&Value>) -> (u16, String) {
    let (s, ctype, b) = call(method, url, body);
    assert!(ctype.starts_with("application/json"), "{method} {url}: {s} {ctype} {b}");
    let v = json_of(&b);
    let code = v["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("{method} {url}: {b}"));
    assert!(v["error"]["message"].is_string(), "{b}");
    (s, code.to_string())
}

/// The contract. `a` accepts jobs; `b` is where a client behind a load balancer may land next
/// (the same API in the embedded mode).
fn contract(mode: &str, a: &str, b: &str) {
    // Submit and follow a job on the other API at once.
    let sub = json!({"code": "import sys\nprint(input()[::-1], sys.argv[1])", "executionEngine": "python",
        "stdin": "flow", "args": ["x"], "tags": ["contract"], "limits": {"wallTimeMs": 10000}});
    let (s, _, body) = call("POST", &format!("{a}/job"), Some(&sub));
    assert_eq!(s, 200, "{mode}: {body}");
    let rec = json_of(&body);
    let id = rec["id"].as_str().unwrap().to_string();
    assert_eq!(rec["status"], "Pending", "{mode}: {rec}");
    assert_eq!(rec["codePath"], format!("jobs/{id}/code.bin"));
    assert_eq!(rec["tags"], json!(["contract"]));
    assert!(rec["traceId"].as_str().is_some_and(|t| t.len() == 32), "{rec}");
    let (s, _, body) = call("GET", &format!("{b}/job/{id}"), None);
    assert_eq!(s, 200, "{mode}: the other API does not know the job: {body}");
    assert_eq!(json_of(&body)["codeHash"], rec["codeHash"]);
    let (s, ctype, code) = call("GET", &format!("{b}/job/{id}/code"), None);
    assert_eq!((s, code.as_str()), (200, sub["code"].as_str().unwrap()), "{mode}");
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    // The long poll answers with the final record.
    let (s, _, body) = call("GET", &format!("{b}/job/{id}?wait=true&timeout=60"), None);
    assert_eq!(s, 200, "{mode}: {body}");
    let done = json_of(&body);
    assert_eq!(done["status"], "Completed", "{mode}: {done}");
    let r = &done["result"];
    assert_eq!(r["verdict"], "Accepted", "{mode}: {done}");
    for k in [
        "exitCode",
        "signal",
        "cpuTimeMs",
        "wallTimeMs",
        "memoryKb",
        "stderr",
        "compileOutput",
        "truncated",
    ] {
        assert!(r.get(k).is_some(), "{mode}: result lacks {k}: {done}");
    }
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
        assert!(done["timings"][k].is_number(), "{mode}: timings lack {k}: {done}");
    }
    assert_eq!(done["attempts"].as_array().map(Vec::len), Some(1), "{mode}: {done}");
    assert_eq!(
        call("GET", &format!("{b}/job/{id}/output"), None).2,
        "wolf x\n",
        "{mode}"
    );
    let (s, _, tl) = call("GET", &format!("{a}/job/{id}/timeline"), None);
    assert_eq!(s, 200, "{mode}: {tl}");
    assert!(
        json_of(&tl)["spans"].as_array().is_some_and(|s| !s.is_empty()),
        "{mode}: {tl}"
    );
    // wait=true on the submission itself; a verdict other than Accepted.
    let (s, _, body) = call(
        "POST",
        &format!("{a}/job?wait=true&timeout=60"),
        Some(&json!({"code": "print(1)", "executionEngine": "python", "expectedOutput": "2"})),
    );
    assert_eq!(s, 200, "{body}");
    assert_eq!(json_of(&body)["result"]["verdict"], "WrongAnswer", "{mode}: {body}");
    // A compile error, through a compiled engine.
    let (_, _, body) = call(
        "POST",
        &format!("{a}/job?wait=true&timeout=120"),
        Some(&json!({"code": "int main( {", "executionEngine": "c"})),
    );
    let ce = json_of(&body);
    assert_eq!(ce["result"]["verdict"], "CompileError", "{mode}: {body}");
    assert!(!ce["result"]["compileOutput"].as_str().unwrap_or("").is_empty());
    // Idempotency: same key and body, same job; another body, 409 — across APIs.
    let key = format!("contract-{}", uuid_like());
    let body1 = json!({"code": "print('once')", "executionEngine": "python"});
    let first = json_of(&post_with_key(a, &key, &body1).1);
    let again = post_with_key(b, &key, &body1);
    assert_eq!(again.0, 200, "{mode}: {}", again.1);
    assert_eq!(
        json_of(&again.1)["id"],
        first["id"],
        "{mode}: the same key gave another job"
    );
    let other = post_with_key(b, &key, &json!({"code": "print('twice')", "executionEngine": "python"}));
    assert_eq!(other.0, 409, "{mode}: {}", other.1);
    // The listing finds the jobs (newest first, cursor paging).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, page) = call("GET", &format!("{b}/job?limit=100"), None);
        let p = json_of(&page);
        if p["jobs"]
            .as_array()
            .is_some_and(|j| j.iter().any(|r| r["id"] == id.as_str()))
        {
            let (_, _, one) = call("GET", &format!("{b}/job?limit=1"), None);
            let one = json_of(&one);
            let next = one["nextOffset"].as_str().expect("a cursor").to_string();
            let (_, _, two) = call("GET", &format!("{b}/job?limit=1&offset={next}"), None);
            assert_ne!(
                json_of(&two)["jobs"][0]["id"],
                one["jobs"][0]["id"],
                "{mode}: paging repeats"
            );
            break;
        }
        assert!(Instant::now() < deadline, "{mode}: job {id} never listed: {page}");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Errors: one shape, the same status in both modes.
    let unknown = "0190c0a0-0000-7000-8000-000000000000";
    for (method, path, body, want) in [
        ("GET", format!("/job/{unknown}"), None, (404, "not_found")),
        ("GET", "/job/not-an-id/code".to_string(), None, (404, "not_found")),
        ("GET", "/nowhere".to_string(), None, (404, "not_found")),
        ("DELETE", "/job".to_string(), None, (405, "method_not_allowed")),
        ("GET", "/job?limit=0".to_string(), None, (422, "invalid_field")),
        ("GET", "/job?limit=x".to_string(), None, (400, "malformed_request")),
        (
            "POST",
            "/job".to_string(),
            Some(json!({"code": "x", "executionEngine": "cobol"})),
            (422, "invalid_field"),
        ),
        (
            "POST",
            "/job".to_string(),
            Some(json!({"code": ""})),
            (422, "invalid_field"),
        ),
        (
            "POST",
            "/job?wait=true&timeout=NaN".to_string(),
            Some(json!({"code": "x", "executionEngine": "python"})),
            (422, "invalid_field"),
        ),
        ("POST", "/job".to_string(), None, (415, "unsupported_media_type")),
    ] {
        let got = error(method, &format!("{b}{path}"), body.as_ref());
        assert_eq!((got.0, got.1.as_str()), want, "{mode}: {method} {path}");
    }
    // The languages, health and the document.
    let (s, _, langs) = call("GET", &format!("{b}/languages"), None);
    assert_eq!(s, 200);
    assert!(
        json_of(&langs)
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x["name"] == "python")),
        "{langs}"
    );
    assert_eq!(call("GET", &format!("{b}/healthz"), None).0, 200);
    assert_eq!(wolf_testkit::client::ready(b, READY), 200, "{mode}");
    let (s, _, doc) = call("GET", &format!("{b}/openapi.json"), None);
    assert_eq!(s, 200);
    assert!(json_of(&doc)["paths"]["/job/{id}"].is_object());
}

/// Test cases: compiled once, each test in a fresh sandbox, judged and stored per test.
fn tests_contract(mode: &str, a: &str, b: &str) {
    // Prints "dirty" when an earlier test's file is still in the work dir.
    let code = r#"#include <stdio.h>
#include <unistd.h>
int main(void){ if (access("mark", F_OK) == 0) puts("dirty"); FILE *f = fopen("mark", "w"); if (f) fclose(f);
  long x, y; if (scanf("%ld %ld", &x, &y) != 2) return 3; printf("%ld\n", x + y); return 0; }"#;
    let tests: Vec<Value> = (0..50)
        .map(|i| {
            let want = if i == 36 { i + 2 * i + 1 } else { i + 2 * i };
            json!({"stdin": format!("{i} {}\n", 2 * i), "expectedOutput": format!("{want}\n")})
        })
        .collect();
    let run = |extra: Value| {
        let mut sub = json!({"code": code, "executionEngine": "c", "tests": tests});
        for (k, v) in extra.as_object().unwrap() {
            sub[k] = v.clone();
        }
        let (s, _, body) = call("POST", &format!("{a}/job?wait=true&timeout=240"), Some(&sub));
        assert_eq!(s, 200, "{mode}: {body}");
        let id = json_of(&body)["id"].as_str().unwrap().to_string();
        let (s, _, body) = call("GET", &format!("{b}/job/{id}"), None);
        assert_eq!(s, 200, "{mode}: {body}");
        (id, json_of(&body))
    };
    let (id, rec) = run(json!({}));
    let r = &rec["result"];
    assert_eq!(r["verdict"], "WrongAnswer", "{mode}: {rec}");
    let t = r["tests"].as_array().expect("tests");
    assert_eq!(t.len(), 50, "{mode}: every test ran: {rec}");
    assert_eq!(
        (r["passed"].as_u64(), r["score"].as_f64()),
        (Some(49), Some(49.0)),
        "{mode}"
    );
    for (i, x) in t.iter().enumerate() {
        let want = if i == 36 { "WrongAnswer" } else { "Accepted" };
        assert_eq!(x["verdict"], want, "{mode}: test {i} (a fresh work dir each time): {x}");
        assert_eq!(x["name"], format!("test-{}", i + 1));
    }
    assert_eq!(t[36]["stdout"], "108\n");
    assert!(
        rec["timings"]["compile"].as_f64().unwrap() > 0.0,
        "{mode}: compiled: {rec}"
    );
    let (s, _, out) = call("GET", &format!("{b}/job/{id}/tests/36/output"), None);
    assert_eq!((s, out.as_str()), (200, "108\n"), "{mode}");
    let (s, _, out) = call("GET", &format!("{b}/job/{id}/tests/0/output"), None);
    assert_eq!((s, out.as_str()), (200, "0\n"), "{mode}");
    for n in ["50", "x", "-1", "99999"] {
        assert_eq!(
            error("GET", &format!("{b}/job/{id}/tests/{n}/output"), None).0,
            404,
            "{mode}: {n}"
        );
    }
    // stopOnFirstFailure stops at the wrong test.
    let (_, rec) = run(json!({"stopOnFirstFailure": true}));
    assert_eq!(rec["result"]["verdict"], "WrongAnswer");
    assert_eq!(
        rec["result"]["tests"].as_array().map(Vec::len),
        Some(37),
        "{mode}: {rec}"
    );
    assert_eq!(rec["result"]["passed"], 36);
    // A compile error ends the job before any test.
    let (_, rec) = run(json!({"code": "int main(void){ return nope; }"}));
    assert_eq!(rec["result"]["verdict"], "CompileError", "{mode}: {rec}");
    assert!(rec["result"].get("tests").is_none(), "{mode}: {rec}");
    // Checkers: float within epsilon, exact refuses the same answer.
    let float = |checker: Value| {
        let sub = json!({"code": "print(1/3)", "executionEngine": "python", "checker": checker,
            "tests": [{"name": "third", "expectedOutput": "0.33333"}]});
        let (s, _, body) = call("POST", &format!("{a}/job?wait=true&timeout=120"), Some(&sub));
        assert_eq!(s, 200, "{mode}: {body}");
        json_of(&body)["result"]["tests"][0].clone()
    };
    let t = float(json!({"type": "float", "epsilon": 1e-4}));
    assert_eq!(
        (t["verdict"].as_str(), t["name"].as_str()),
        (Some("Accepted"), Some("third")),
        "{mode}: {t}"
    );
    assert_eq!(float(json!({"type": "exact"}))["verdict"], "WrongAnswer", "{mode}");
    assert_eq!(
        float(json!({"type": "float", "epsilon": 1e-9}))["verdict"],
        "WrongAnswer",
        "{mode}"
    );
    // Bad suites are refused before admission.
    let many: Vec<Value> = (0..1001).map(|_| json!({})).collect();
    for bad in [
        json!({"code": "print(1)", "executionEngine": "python", "tests": many}),
        json!({"code": "print(1)", "executionEngine": "python", "stdin": "1", "tests": [{}]}),
        json!({"code": "print(1)", "executionEngine": "python", "tests": [{"limits": {"cpuTimeMs": 999999999}}]}),
        json!({"code": "print(1)", "executionEngine": "python", "tests": [{"name": ""}]}),
        json!({"code": "print(1)", "executionEngine": "python", "tests": [{"args": ["a\u{0}b"]}]}),
        json!({"code": "print(1)", "executionEngine": "python", "tests": [{"stdn": "typo"}]}),
        json!({"code": "print(1)", "executionEngine": "python", "tests": [{}], "checker": {"type": "float", "epsilon": -1}}),
        json!({"code": "print(1)", "executionEngine": "python", "stopOnFirstFailure": true}),
    ] {
        let (s, code) = error("POST", &format!("{a}/job"), Some(&bad));
        assert!(s == 422 || s == 400, "{mode}: {s} {code} for {bad}");
    }
}

/// Status, content type, `X-Content-Type-Options` and the raw body of a GET.
fn get_bytes(url: &str) -> (u16, String, String, Vec<u8>) {
    let mut r = agent().get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let h = |k: &str| {
        r.headers()
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (ctype, nosniff) = (h("content-type"), h("x-content-type-options"));
    (
        r.status().as_u16(),
        ctype,
        nosniff,
        r.body_mut().read_to_vec().unwrap_or_default(),
    )
}

/// Output files: collected after the run, stored, listed and served; links, oversize files and
/// patterns that match nothing are refused with the reason.
fn output_files_contract(mode: &str, a: &str, b: &str) {
    let code = r#"import os
png = b'\x89PNG\r\n\x1a\n' + bytes(range(256))
open('plot.png', 'wb').write(png)
os.makedirs('out', exist_ok=True)
open('out/data.csv', 'w').write('a,b\n1,2\n')
open('out/skip.txt', 'w').write('not asked for')
os.symlink('/etc/passwd', 'leak.txt')
open('big.bin', 'wb').write(b'\0' * (17 << 20))
print('done')
"#;
    let sub = json!({"code": code, "executionEngine": "python", "limits": {"memoryMb": 512},
        "outputFiles": ["plot.png", "out/*.csv", "leak.txt", "big.bin", "nothing/*.x"]});
    let (s, _, body) = call("POST", &format!("{a}/job?wait=true&timeout=120"), Some(&sub));
    assert_eq!(s, 200, "{mode}: {body}");
    let id = json_of(&body)["id"].as_str().unwrap().to_string();
    let rec = json_of(&call("GET", &format!("{b}/job/{id}"), None).2);
    let r = &rec["result"];
    assert_eq!(r["verdict"], "Accepted", "{mode}: {rec}");
    let files: Vec<&str> = r["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    assert_eq!(files, ["plot.png", "out/data.csv"], "{mode}: {rec}");
    assert_eq!(r["files"][0]["size"], 264);
    let why = |p: &str| {
        r["filesRefused"]
            .as_array()
            .and_then(|v| v.iter().find(|x| x["path"] == p))
            .map(|x| x["reason"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert!(why("leak.txt").contains("symbolic link"), "{mode}: {rec}");
    assert!(why("big.bin").contains("larger than"), "{mode}: {rec}");
    assert!(why("nothing/*.x").contains("no file"), "{mode}: {rec}");
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(0..=255u8);
    let (s, ctype, nosniff, data) = get_bytes(&format!("{b}/job/{id}/files/plot.png"));
    assert_eq!(
        (s, ctype.as_str(), nosniff.as_str()),
        (200, "image/png", "nosniff"),
        "{mode}"
    );
    assert_eq!(data, png, "{mode}: the bytes the program wrote");
    let (s, ctype, _, data) = get_bytes(&format!("{b}/job/{id}/files/out/data.csv"));
    assert_eq!(
        (s, ctype.as_str(), data.as_slice()),
        (200, "text/csv; charset=utf-8", &b"a,b\n1,2\n"[..])
    );
    for p in [
        "leak.txt",
        "big.bin",
        "out/skip.txt",
        "%2e%2e/code.bin",
        "..%2fcode.bin",
        "code.bin",
    ] {
        assert_eq!(
            error("GET", &format!("{b}/job/{id}/files/{p}"), None).0,
            404,
            "{mode}: {p}"
        );
    }
    for bad in ["/etc/passwd", "../x", "a/../b", "a b"] {
        let sub = json!({"code": "print(1)", "executionEngine": "python", "outputFiles": [bad]});
        assert_eq!(error("POST", &format!("{a}/job"), Some(&sub)).0, 422, "{mode}: {bad}");
    }
}

fn post_with_key(api: &str, key: &str, body: &Value) -> (u16, String) {
    match agent()
        .post(format!("{api}/job"))
        .header("Content-Type", "application/json")
        .header("Idempotency-Key", key)
        .send(body.to_string())
    {
        Ok(mut r) => (r.status().as_u16(), r.body_mut().read_to_string().unwrap_or_default()),
        Err(e) => panic!("{e}"),
    }
}

fn uuid_like() -> String {
    format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    )
}

/// `wolf serve` on a free port in `dir`.
fn serve(dir: &std::path::Path) -> (Child, String) {
    let wolf = wolf_testkit::stack::wolf_binary().unwrap();
    let mut child = Command::new(wolf)
        .args(["serve", "--listen", "127.0.0.1:0", "--workers", "2", "--data-dir"])
        .arg(dir.join("data"))
        .env("WOLF_LOG", "warn")
        .env("WOLF_CACHE_DIR", dir.join("cache"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("wolf: listening on ")
                .map(|r| r.split_whitespace().next().unwrap().to_string())
        })
        .expect("wolf serve printed its address");
    std::thread::spawn(move || lines.map_while(Result::ok).for_each(drop));
    (child, url)
}

#[test]
fn the_contract_holds_embedded() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = serve(dir.path());
    contract("embedded", &url, &url);
    tests_contract("embedded", &url, &url);
    output_files_contract("embedded", &url, &url);
    checkers::checkers_contract("embedded", &url, &url);
    inputs::inputs_contract("embedded", &url, &url);
    interactors::interactors_contract("embedded", &url, &url);
    live::live_contract("embedded", &url, &url);
    live::piston_connect_contract("embedded", &url);
    sessions::sessions_contract("embedded", &url);
    sessions::repl_contract("embedded", &url);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_contract_holds_distributed_across_two_apis() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mut s = Stack::up_with(dir.path(), 2, 1, &[("WOLF_WORKERS", "2")]).unwrap();
    contract("distributed", &s.apis[0].1, &s.apis[1].1);
    tests_contract("distributed", &s.apis[0].1, &s.apis[1].1);
    output_files_contract("distributed", &s.apis[0].1, &s.apis[1].1);
    checkers::checkers_contract("distributed", &s.apis[0].1, &s.apis[1].1);
    inputs::inputs_contract("distributed", &s.apis[0].1, &s.apis[1].1);
    interactors::interactors_contract("distributed", &s.apis[0].1, &s.apis[1].1);
    live::live_contract("distributed", &s.apis[0].1, &s.apis[1].1);
    live::piston_connect_contract("distributed", &s.apis[1].1);
    sessions::sessions_contract("distributed", &s.apis[0].1);
    sessions::repl_contract("distributed", &s.apis[1].1);
    let (a, b) = (s.apis[0].1.clone(), s.apis[1].1.clone());
    sessions::sessions_across("distributed", &a, &b, || s.kill_manager(0));
}
