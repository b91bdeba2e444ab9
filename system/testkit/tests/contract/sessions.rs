//! Sessions through the API: state kept across 20 execs, files in and out, limits per exec, the
//! idle timeout, isolation from another session, a hostile exec contained, and the refusals.

use serde_json::{Value, json};

use super::{call, get_bytes, json_of};

fn create(a: &str, spec: &Value) -> String {
    let (s, _, body) = call("POST", &format!("{a}/session"), Some(spec));
    assert_eq!(s, 201, "{body}");
    json_of(&body)["id"].as_str().unwrap().to_string()
}

fn exec(a: &str, id: &str, req: &Value) -> Value {
    let (s, _, body) = call("POST", &format!("{a}/session/{id}/exec"), Some(req));
    assert_eq!(s, 200, "{req}: {body}");
    json_of(&body)
}

fn put(url: &str, data: &[u8]) -> u16 {
    super::agent()
        .put(url)
        .send(data)
        .map(|r| r.status().as_u16())
        .unwrap_or_else(|e| panic!("PUT {url}: {e}"))
}

pub(crate) fn sessions_contract(mode: &str, a: &str) {
    let id = create(
        a,
        &json!({"executionEngine": "python", "limits": {"memoryMb": 128}, "files": [{"name": "n.txt", "content": "0"}]}),
    );
    // Each exec sees what the one before it wrote.
    let bump = json!({"code": "n = int(open('n.txt').read()) + 1\nopen('n.txt', 'w').write(str(n))\nprint(n)"});
    for n in 1..=20 {
        let r = exec(a, &id, &bump);
        assert_eq!(
            (r["verdict"].as_str(), r["exec"].as_u64()),
            (Some("Accepted"), Some(n)),
            "{mode}: {r}"
        );
        assert_eq!(r["stdout"], format!("{n}\n"), "{mode}: {r}");
    }
    // Each exec is in the metadata store as a finished job of its own, tagged with the session.
    let r = exec(a, &id, &bump);
    let job = r["jobId"].as_str().unwrap_or_else(|| panic!("{mode}: {r}")).to_string();
    let mut rec = Value::Null;
    for _ in 0..100 {
        let (s, _, body) = call("GET", &format!("{a}/job/{job}"), None);
        if s == 200 {
            rec = json_of(&body);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(rec["status"], "Completed", "{mode}: {rec}");
    assert_eq!(rec["tags"][0], format!("session:{id}"), "{mode}: {rec}");
    let (_, _, out) = call("GET", &format!("{a}/job/{job}/output"), None);
    assert_eq!(out, "21\n", "{mode}");
    // The execs stream on the session's events: each exec's stage, its output, its exit.
    exec(
        a,
        &id,
        &json!({"code": "import sys\nprint('streamed', flush=True)\nsys.stderr.write('err')"}),
    );
    let mut seen = Vec::new();
    let (s, _) = super::live::sse(&format!("{a}/session/{id}/events"), |e| {
        seen.push(e.clone());
        !(e["type"] == "exit" && seen.iter().any(|x| x["data"] == "streamed\n"))
    });
    assert_eq!(s, 200, "{mode}");
    let tail: Vec<String> = seen[seen.len().saturating_sub(4)..]
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["type"].as_str().unwrap_or(""),
                e["data"].as_str().or(e["name"].as_str()).unwrap_or("")
            )
        })
        .collect();
    // stdout and stderr are two pipes read apart: their chunks keep each stream's order, not
    // an order between the two.
    let mut tail = tail;
    tail[1..3].sort();
    assert_eq!(
        tail,
        ["stage:22", "stderr:err", "stdout:streamed\n", "exit:"],
        "{mode}: {seen:?}"
    );
    // A shell command in the same work dir, and a file written by one exec read over HTTP.
    let r = exec(a, &id, &json!({"command": "cat n.txt; echo; echo made > made.txt"}));
    assert_eq!(r["stdout"], "21\n", "{mode}: {r}");
    let (s, _, _, bytes) = get_bytes(&format!("{a}/session/{id}/files/made.txt"));
    assert_eq!((s, bytes.as_slice()), (200, &b"made\n"[..]), "{mode}");
    // Bytes in, read by an exec, and back out unchanged (a subdirectory made on the way).
    let all: Vec<u8> = (0..=255u8).collect();
    assert_eq!(put(&format!("{a}/session/{id}/files/in/all.bin"), &all), 204, "{mode}");
    let r = exec(
        a,
        &id,
        &json!({"code": "print(len(open('in/all.bin', 'rb').read()))", "outputFiles": ["in/*.bin"]}),
    );
    assert_eq!(r["stdout"], "256\n", "{mode}: {r}");
    assert_eq!(r["files"][0]["path"], "in/all.bin", "{mode}: {r}");
    let (_, _, _, back) = get_bytes(&format!("{a}/session/{id}/files/in/all.bin"));
    assert_eq!(back, all, "{mode}");
    // A link planted by an exec is never read through.
    exec(a, &id, &json!({"command": "ln -s /etc/passwd link.txt"}));
    let (s, _, _, _) = get_bytes(&format!("{a}/session/{id}/files/link.txt"));
    assert_eq!(s, 404, "{mode}: a link is not a file of the session");
    // The memory limit holds in every exec, and the session outlives an exec that breaks it.
    let r = exec(a, &id, &json!({"code": "x = bytearray(400 << 20)\nprint(len(x))"}));
    assert_eq!(r["verdict"], "MemoryLimitExceeded", "{mode}: {r}");
    let r = exec(a, &id, &json!({"code": "print(open('n.txt').read())"}));
    assert_eq!(r["stdout"], "21\n", "{mode}: the state survived: {r}");
    // Contained like a job.
    let escape = format!(
        "{}print(\"escaped: \" + \", \".join(got) if got else \"contained\")\n",
        super::ESCAPE_PROBE
    );
    let r = exec(a, &id, &json!({"code": escape}));
    assert_eq!(r["stdout"], "contained\n", "{mode}: {r}");
    // Another session sees nothing of this one.
    let other = create(a, &json!({"executionEngine": "bash"}));
    let r = exec(a, &other, &json!({"command": "ls; cat n.txt made.txt 2>&1 | head -2"}));
    let out = r["stdout"].as_str().unwrap();
    assert!(
        out.contains("n.txt: No such file") && out.contains("made.txt: No such file"),
        "{mode}: {r}"
    );
    let (s, _, _, _) = get_bytes(&format!("{a}/session/{other}/files/n.txt"));
    assert_eq!(s, 404, "{mode}");
    // Its state, then its end: deleted is gone (410), as is a second delete.
    let (s, _, body) = call("GET", &format!("{a}/session/{id}"), None);
    let info = json_of(&body);
    assert_eq!((s, info["execs"].as_u64()), (200, Some(28)), "{mode}: {body}");
    assert_eq!(info["state"], "ready", "{mode}");
    let (s, _, _) = call("DELETE", &format!("{a}/session/{id}"), None);
    assert_eq!(s, 204, "{mode}");
    for (method, body) in [("GET", None), ("DELETE", None), ("POST", Some(&bump))] {
        let url = if method == "POST" {
            format!("{a}/session/{id}/exec")
        } else {
            format!("{a}/session/{id}")
        };
        let (s, _, text) = call(method, &url, body);
        assert_eq!(s, 410, "{mode}: {method}: {text}");
        assert_eq!(json_of(&text)["error"]["code"], "gone", "{mode}");
    }
    // Reaped after its idle timeout.
    let short = create(a, &json!({"executionEngine": "bash", "idleTimeoutS": 1}));
    std::thread::sleep(std::time::Duration::from_millis(3000));
    let (s, _, text) = call("GET", &format!("{a}/session/{short}"), None);
    assert_eq!(s, 410, "{mode}: {text}");
    assert!(text.contains("idle timeout"), "{mode}: {text}");
    // Refusals.
    let live = create(a, &json!({}));
    for (req, status) in [
        (json!({"code": "print(1)", "command": "echo 1"}), 422),
        (json!({}), 422),
        (json!({"code": "x", "executionEngine": "cobol"}), 422),
        (json!({"code": "   "}), 422),
        (json!({"code": "print(1)", "extra": true}), 422),
        (json!({"code": "print(1)", "outputFiles": ["../x"]}), 422),
    ] {
        let (s, _, text) = call("POST", &format!("{a}/session/{live}/exec"), Some(&req));
        assert_eq!(s, status, "{mode}: {req}: {text}");
    }
    for (spec, status) in [
        (json!({"executionEngine": "cobol"}), 422),
        (json!({"idleTimeoutS": 0}), 422),
        (json!({"ttlS": 999_999}), 422),
        (json!({"limits": {"memoryMb": 999_999}}), 422),
        (json!({"files": [{"name": "../x", "content": "1"}]}), 422),
    ] {
        let (s, _, text) = call("POST", &format!("{a}/session"), Some(&spec));
        assert_eq!(s, status, "{mode}: {spec}: {text}");
    }
    let (s, _, _) = call("GET", &format!("{a}/session/nope"), None);
    assert_eq!(s, 404, "{mode}");
    // Never made: 404 on one host; across hosts no manager answers for it, which is 410 (its
    // manager may have died with it).
    let (s, _, _) = call("GET", &format!("{a}/session/s-{}", "0".repeat(32)), None);
    assert!(s == 404 || (mode == "distributed" && s == 410), "{mode}: {s}");
    assert_eq!(
        put(&format!("{a}/session/{live}/files/a/.hidden/../x"), b"1"),
        422,
        "{mode}"
    );
    let (s, _, _) = call("DELETE", &format!("{a}/session/{live}"), None);
    assert_eq!(s, 204, "{mode}");
}

/// A REPL session: one interpreter, cells that see each other's variables.
pub(crate) fn repl_contract(mode: &str, a: &str) {
    let id = create(
        a,
        &json!({"mode": "repl", "limits": {"wallTimeMs": 1500, "memoryMb": 128}}),
    );
    exec(a, &id, &json!({"code": "x = 0"}));
    for n in 1..=20 {
        let r = exec(a, &id, &json!({"code": "x = x + 1\nx"}));
        assert_eq!(r["value"], n.to_string(), "{mode}: {r}");
    }
    let r = exec(
        a,
        &id,
        &json!({"code": "print('x is', x)\nimport os\nos.write(1, b'raw\\n')\nNone"}),
    );
    assert_eq!(
        (r["verdict"].as_str(), r["stdout"].as_str()),
        (Some("Accepted"), Some("x is 20\nraw\n")),
        "{mode}: {r}"
    );
    assert!(r.get("value").is_none(), "{mode}: None is no value: {r}");
    // A cell's prints stream as they happen (the last one without a newline too), and bytes
    // that are not UTF-8 do not break the interpreter's channel.
    let r = exec(
        a,
        &id,
        &json!({"code": "import sys, os\nprint('live', flush=True)\nos.write(1, b'\\xff\\n')\nsys.stderr.write('warn\\n')\nsys.stdout.write('tail')"}),
    );
    assert_eq!(r["verdict"], "Accepted", "{mode}: {r}");
    assert_eq!(r["stderr"], "warn\n", "{mode}: {r}");
    assert!(
        r["memoryKb"].as_u64().unwrap_or(0) > 1000,
        "{mode}: the interpreter's peak: {r}"
    );
    assert!(
        r["stdout"].as_str().unwrap().starts_with("live\n") && r["stdout"].as_str().unwrap().ends_with("tail"),
        "{mode}: {r}"
    );
    let mut seen = Vec::new();
    super::live::sse(&format!("{a}/session/{id}/events"), |e| {
        seen.push(e.clone());
        !(e["type"] == "exit" && seen.iter().any(|x| x["data"] == "live\n"))
    });
    assert!(
        seen.iter().any(|e| e["type"] == "stdout" && e["data"] == "live\n"),
        "{mode}: {seen:?}"
    );
    // Its stderr streams too, before its exit, and nothing of the channel's markers.
    let exit_at = seen.iter().rposition(|e| e["type"] == "exit").unwrap();
    let cell = seen[..exit_at].iter().rposition(|e| e["type"] == "stage").unwrap();
    let errs: Vec<&Value> = seen[cell..exit_at].iter().filter(|e| e["type"] == "stderr").collect();
    let streamed: String = errs.iter().map(|e| e["data"].as_str().unwrap_or("")).collect();
    assert_eq!(streamed, "warn\n", "{mode}: {seen:?}");
    // An exception is the cell's, with a traceback of the cell alone; the state lives on.
    let r = exec(a, &id, &json!({"code": "def f():\n    return 1 / 0\nf()"}));
    assert_eq!(r["verdict"], "RuntimeError", "{mode}: {r}");
    assert_eq!(r["error"], "ZeroDivisionError: division by zero", "{mode}");
    let tb = r["traceback"].as_str().unwrap();
    assert!(tb.contains("<cell>") && !tb.contains("run_cell"), "{mode}: {tb}");
    // A cell past its wall limit is interrupted; the interpreter and its variables survive.
    let r = exec(a, &id, &json!({"code": "while True:\n    pass"}));
    assert_eq!(r["verdict"], "TimeLimitExceeded", "{mode}: {r}");
    assert_eq!(exec(a, &id, &json!({"code": "x"}))["value"], "20", "{mode}");
    // Files through the interpreter, in and out, and output files reported.
    assert_eq!(
        put(&format!("{a}/session/{id}/files/in.txt"), b"uploaded"),
        204,
        "{mode}"
    );
    let r = exec(
        a,
        &id,
        &json!({"code": "open('out.csv', 'w').write(open('in.txt').read().upper())", "outputFiles": ["*.csv"]}),
    );
    assert_eq!(r["files"][0]["path"], "out.csv", "{mode}: {r}");
    let (s, _, _, bytes) = get_bytes(&format!("{a}/session/{id}/files/out.csv"));
    assert_eq!((s, bytes.as_slice()), (200, &b"UPLOADED"[..]), "{mode}");
    // A command runs under bash beside the interpreter, in the same work dir.
    let r = exec(a, &id, &json!({"command": "cat out.csv; exit 3"}));
    assert_eq!(
        (r["stdout"].as_str(), r["exitCode"].as_i64(), r["verdict"].as_str()),
        (Some("UPLOADED"), Some(3), Some("RuntimeError")),
        "{mode}: {r}"
    );
    // The interpreter's death by its memory limit ends the session.
    let r = exec(a, &id, &json!({"code": "b = bytearray(400 << 20)"}));
    assert_eq!(r["verdict"], "MemoryLimitExceeded", "{mode}: {r}");
    let (s, _, text) = call("POST", &format!("{a}/session/{id}/exec"), Some(&json!({"code": "x"})));
    assert_eq!(s, 410, "{mode}: {text}");
    // Only Python has a REPL here.
    let (s, _, _) = call(
        "POST",
        &format!("{a}/session"),
        Some(&json!({"mode": "repl", "executionEngine": "bash"})),
    );
    assert_eq!(s, 422, "{mode}");
}

/// The distributed mode: a session created through one API is used through the other (its
/// manager answers over NATS), and when that manager dies the session is lost and says so.
pub(crate) fn sessions_across(mode: &str, a: &str, b: &str, kill_manager: impl FnOnce()) {
    // A wall limit beyond the client's own wait, for the exec the manager dies in.
    let id = create(a, &json!({"mode": "repl", "limits": {"wallTimeMs": 110_000}}));
    exec(a, &id, &json!({"code": "k = 'kept'"}));
    assert_eq!(exec(b, &id, &json!({"code": "k"}))["value"], "'kept'", "{mode}");
    let (s, _, body) = call("GET", &format!("{b}/session/{id}"), None);
    assert_eq!((s, json_of(&body)["execs"].as_u64()), (200, Some(2)), "{mode}: {body}");
    // The manager dies while an exec runs: the waiting call is told at once that the session
    // is lost (not after the exec's whole wall limit, which is longer than this client waits).
    let long = {
        let (b, id) = (b.to_string(), id.clone());
        std::thread::spawn(move || {
            call(
                "POST",
                &format!("{b}/session/{id}/exec"),
                Some(&json!({"code": "import time; time.sleep(100)"})),
            )
        })
    };
    std::thread::sleep(std::time::Duration::from_secs(2));
    kill_manager();
    let (s, _, text) = long.join().unwrap();
    assert_eq!(s, 410, "{mode}: {text}");
    assert!(text.contains("the manager that held it is gone"), "{mode}: {text}");
    let (s, _, text) = call("POST", &format!("{b}/session/{id}/exec"), Some(&json!({"code": "k"})));
    assert_eq!(s, 410, "{mode}: {text}");
    assert!(text.contains("the manager that held it is gone"), "{mode}: {text}");
}
