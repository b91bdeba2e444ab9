//! Live jobs through the API: Server-Sent Events of a job accepted by another API, output that
//! arrives while the program still runs, a subscriber after the end, and the WebSocket of an
//! interactive run (stdin in rounds, end of file, signals really delivered, bad frames).

use std::io::{BufRead, BufReader};
use std::net::TcpStream;

use serde_json::{Value, json};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use super::{agent, call, json_of};

/// The events of `url` (SSE) as they come: each `data:` line's JSON, handed to `each`, which
/// says whether to go on.
pub(crate) fn sse(url: &str, mut each: impl FnMut(&Value) -> bool) -> (u16, String) {
    let mut r = agent().get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    if status != 200 {
        return (status, ctype);
    }
    let reader = BufReader::new(r.body_mut().as_reader());
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(data) = line.strip_prefix("data: ")
            && !each(&json_of(data))
        {
            break;
        }
    }
    (status, ctype)
}

/// The body of a raw HTTP/1.1 response with chunked transfer encoding, as text.
fn dechunk(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let Some((_, mut rest)) = text.split_once("\r\n\r\n") else {
        return String::new();
    };
    let mut body = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 || after.len() < n {
            break;
        }
        body.push_str(&after[..n]);
        rest = after[n..].trim_start_matches("\r\n");
    }
    body
}

fn submit(a: &str, sub: &Value) -> String {
    let (s, _, body) = call("POST", &format!("{a}/job"), Some(sub));
    assert_eq!(s, 200, "{body}");
    json_of(&body)["id"].as_str().unwrap().to_string()
}

fn ws(api: &str) -> WebSocket<MaybeTlsStream<TcpStream>> {
    let url = format!("{}/job/ws", api.replace("http://", "ws://"));
    let (socket, resp) = tungstenite::connect(url.as_str()).unwrap_or_else(|e| panic!("{url}: {e}"));
    assert_eq!(resp.status().as_u16(), 101);
    socket
}

fn send(socket: &mut WebSocket<MaybeTlsStream<TcpStream>>, v: Value) {
    socket.send(Message::Text(v.to_string().into())).unwrap();
}

/// The next JSON frame (None once the server closed).
fn recv(socket: &mut WebSocket<MaybeTlsStream<TcpStream>>) -> Option<Value> {
    loop {
        match socket.read() {
            Ok(Message::Text(t)) => return Some(json_of(&t)),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => continue,
        }
    }
}

/// Frames until one whose stdout holds `want` (the stdout seen so far returned), or the end.
fn until_stdout(socket: &mut WebSocket<MaybeTlsStream<TcpStream>>, want: &str, seen: &mut String) -> bool {
    while let Some(v) = recv(socket) {
        if v["type"] == "stdout" {
            seen.push_str(v["data"].as_str().unwrap_or(""));
            if seen.contains(want) {
                return true;
            }
        }
        if v["type"] == "result" {
            return false;
        }
    }
    false
}

pub(crate) fn live_contract(mode: &str, a: &str, b: &str) {
    // A job accepted by one API, followed on the other: its first line arrives while it still
    // runs (its record says Running when the line is read), then the rest, in order.
    let id = submit(
        a,
        &json!({"code": "import time\nprint('one', flush=True)\ntime.sleep(3)\nprint('two')", "executionEngine": "python"}),
    );
    let mut events: Vec<Value> = Vec::new();
    let mut running_when_first_line = None;
    let (s, ctype) = sse(&format!("{b}/job/{id}/events"), |e| {
        if e["type"] == "stdout" && running_when_first_line.is_none() {
            let (_, _, body) = call("GET", &format!("{b}/job/{id}"), None);
            running_when_first_line = Some(json_of(&body)["status"].as_str().unwrap_or("").to_string());
        }
        events.push(e.clone());
        e["type"] != "result"
    });
    assert_eq!((s, ctype.as_str()), (200, "text/event-stream"), "{mode}");
    assert_eq!(
        running_when_first_line.as_deref(),
        Some("Running"),
        "{mode}: the first line is streamed before the program ends: {events:?}"
    );
    let kinds: Vec<&str> = events.iter().map(|e| e["type"].as_str().unwrap_or("")).collect();
    let out: String = events
        .iter()
        .filter(|e| e["type"] == "stdout")
        .map(|e| e["data"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(out, "one\ntwo\n", "{mode}: {events:?}");
    assert_eq!(kinds.last(), Some(&"result"), "{mode}: {kinds:?}");
    assert!(kinds.contains(&"exit"), "{mode}: {kinds:?}");
    let seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .filter(|s| *s > 0)
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{mode}: in order: {seqs:?}");
    let last = events.last().unwrap();
    assert_eq!(last["record"]["id"], id.as_str(), "{mode}");
    assert_eq!(last["record"]["status"], "Completed", "{mode}");

    // After the end: the final events, from the record.
    let mut after = Vec::new();
    sse(&format!("{a}/job/{id}/events"), |e| {
        after.push(e.clone());
        true
    });
    let kinds: Vec<&str> = after.iter().map(|e| e["type"].as_str().unwrap_or("")).collect();
    assert_eq!(kinds, ["stdout", "exit", "result"], "{mode}: {after:?}");
    assert_eq!(after[0]["data"], "one\ntwo\n", "{mode}");
    assert_eq!(after[1]["verdict"], "Accepted", "{mode}");

    // Not UTF-8: base64. And an unknown job is a 404.
    let id = submit(
        a,
        &json!({"code": "import sys\nsys.stdout.buffer.write(bytes([255, 0, 1]))", "executionEngine": "python"}),
    );
    let mut chunks = Vec::new();
    sse(&format!("{b}/job/{id}/events"), |e| {
        if e["type"] == "stdout" {
            chunks.push(e.clone());
        }
        e["type"] != "result"
    });
    assert_eq!(chunks.len(), 1, "{mode}: {chunks:?}");
    assert_eq!(
        (chunks[0]["data"].as_str(), chunks[0]["encoding"].as_str()),
        (Some("/wAB"), Some("base64")),
        "{mode}"
    );
    let (s, _) = sse(&format!("{b}/job/00000000-0000-7000-8000-000000000000/events"), |_| {
        true
    });
    assert_eq!(s, 404, "{mode}");

    // A job with tests streams too: the compile stage, then a `test` stage named per test
    // with that test's output after it, then the job's exit and result.
    let id = submit(
        a,
        &json!({"code": "#include <stdio.h>\nint main(){int x; if(scanf(\"%d\",&x)!=1) return 1; printf(\"got %d\\n\", x*2); return 0;}",
            "executionEngine": "c",
            "tests": [{"name": "one", "stdin": "1", "expectedOutput": "got 2\n"},
                      {"name": "two", "stdin": "2", "expectedOutput": "got 4\n"},
                      {"name": "three", "stdin": "3", "expectedOutput": "got 7\n"}]}),
    );
    // Followed live (when the job is not over by then), and again after the end, from the
    // record: the same shape.
    let followed = |api: &str| {
        let mut events = Vec::new();
        sse(&format!("{api}/job/{id}/events"), |e| {
            events.push(e.clone());
            e["type"] != "result"
        });
        // (`queued` comes first only to a subscriber that came before the job started.)
        let shape: Vec<String> = events
            .iter()
            .filter(|e| e["stage"] != "queued")
            .map(|e| match e["type"].as_str().unwrap_or("") {
                "stage" => format!(
                    "stage {}",
                    e["name"].as_str().unwrap_or(e["stage"].as_str().unwrap_or(""))
                ),
                "stdout" => format!("out {}", e["data"].as_str().unwrap_or("")),
                other => other.to_string(),
            })
            .collect();
        (events, shape)
    };
    let want = [
        "stage compile",
        "stage one",
        "out got 2\n",
        "stage two",
        "out got 4\n",
        "stage three",
        "out got 6\n",
        "exit",
        "result",
    ];
    let (events, shape) = followed(b);
    assert_eq!(shape, want, "{mode}: {events:?}");
    let (after, shape) = followed(a);
    assert_eq!(shape, want, "{mode}: after the end: {after:?}");
    let exit = events.iter().find(|e| e["type"] == "exit").unwrap();
    assert_eq!(exit["verdict"], "WrongAnswer", "{mode}: {events:?}");
    assert!(
        events
            .iter()
            .filter(|e| e["name"].is_string())
            .all(|e| e["stage"] == "test"),
        "{mode}: {events:?}"
    );

    // A reader that stops reading never holds the program up: the job completes while its
    // stream is unread, and the reader, once it reads, has every line or is told it missed
    // some (the hub's own tests make a subscriber lag for certain).
    let url = b.trim_start_matches("http://").to_string();
    let id = submit(
        a,
        &json!({"code": "import sys, time\ntime.sleep(0.5)\nfor i in range(20000):\n    print(f'line {i:05} ' + 'x' * 24, flush=True)",
            "executionEngine": "python"}),
    );
    let mut stalled = TcpStream::connect(&url).unwrap();
    std::io::Write::write_all(
        &mut stalled,
        format!("GET /job/{id}/events HTTP/1.1\r\nHost: {url}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let (_, _, body) = call("GET", &format!("{a}/job/{id}?wait=true&timeout=120"), None);
    let rec = json_of(&body);
    assert_eq!(
        (rec["status"].as_str(), rec["result"]["verdict"].as_str()),
        (Some("Completed"), Some("Accepted")),
        "{mode}: {rec}"
    );
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut stalled, &mut raw).unwrap();
    let text = dechunk(&raw);
    // Either the buffers held it all (every line, in order), or the stream says it lagged.
    let streamed: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(json_of)
        .filter(|e| e["type"] == "stdout")
        .map(|e| e["data"].as_str().unwrap_or("").to_string())
        .collect();
    let streamed = streamed.lines().count();
    assert!(
        text.contains("event: lagged") || streamed == 20000,
        "{mode}: {streamed} lines streamed and no lagged event"
    );
    assert!(text.contains("event: result"), "{mode}");
    let (_, _, out) = call("GET", &format!("{a}/job/{id}/output"), None);
    assert_eq!(out.lines().count(), 20000, "{mode}: the record has every line");

    // An interactive run: each answer comes back before the next line is sent.
    let mut socket = ws(a);
    send(
        &mut socket,
        json!({"type": "init", "executionEngine": "python",
            "code": "import sys\nprint('ready', flush=True)\nfor line in sys.stdin:\n    print('echo: ' + line.strip(), flush=True)\nprint('bye')"}),
    );
    let accepted = recv(&mut socket).unwrap();
    assert_eq!(accepted["type"], "accepted", "{mode}: {accepted}");
    let job = accepted["id"].as_str().unwrap().to_string();
    let mut seen = String::new();
    assert!(until_stdout(&mut socket, "ready", &mut seen), "{mode}: {seen}");
    for round in ["alpha", "beta", "gamma"] {
        send(&mut socket, json!({"type": "stdin", "data": format!("{round}\n")}));
        assert!(
            until_stdout(&mut socket, &format!("echo: {round}"), &mut seen),
            "{mode}: {seen}"
        );
    }
    send(&mut socket, json!({"type": "eof"}));
    assert!(until_stdout(&mut socket, "bye", &mut seen), "{mode}: {seen}");
    let mut last = None;
    while let Some(v) = recv(&mut socket) {
        last = Some(v);
    }
    let last = last.expect("a result");
    assert_eq!(last["type"], "result", "{mode}: {last}");
    assert_eq!(last["record"]["interactive"], true, "{mode}");
    // Durable like any job: its record and output on the other API.
    let (_, _, body) = call("GET", &format!("{b}/job/{job}?wait=true"), None);
    let rec = json_of(&body);
    assert_eq!(rec["result"]["verdict"], "Accepted", "{mode}: {rec}");
    let (_, _, out) = call("GET", &format!("{b}/job/{job}/output"), None);
    assert_eq!(out, "ready\necho: alpha\necho: beta\necho: gamma\nbye\n", "{mode}");

    // Signals reach the program: SIGINT to its handler, SIGKILL for real.
    for (signal, code, sig, says) in [("SIGINT", Some(3), None, "got SIGINT"), ("SIGKILL", None, Some(9), "")] {
        let mut socket = ws(a);
        send(
            &mut socket,
            json!({"type": "init", "executionEngine": "python",
                // os.write, not print: the signal can land while `print('ready')` is still
                // inside stdout's buffered writer, and a print from the handler then fails
                // with "reentrant call" (the flake seen in CI).
                "code": "import os, signal, sys, time\ndef h(n, f):\n    os.write(1, b'got SIGINT\\n')\n    sys.exit(3)\nsignal.signal(signal.SIGINT, h)\nprint('ready', flush=True)\ntime.sleep(60)"}),
        );
        let mut seen = String::new();
        assert!(until_stdout(&mut socket, "ready", &mut seen), "{mode}: {seen}");
        send(&mut socket, json!({"type": "signal", "signal": signal}));
        let mut exit = Value::Null;
        let mut errors = String::new();
        while let Some(v) = recv(&mut socket) {
            if v["type"] == "stdout" {
                seen.push_str(v["data"].as_str().unwrap_or(""));
            }
            if v["type"] == "stderr" {
                errors.push_str(v["data"].as_str().unwrap_or(""));
            }
            if v["type"] == "exit" {
                exit = v;
            }
        }
        assert_eq!(
            (exit["exitCode"].as_i64(), exit["signal"].as_i64()),
            (code, sig),
            "{mode}: {signal}: {exit}; stdout {seen:?}; stderr {errors:?}"
        );
        assert!(seen.contains(says), "{mode}: {signal}: {seen}");
    }

    // Bad frames: an init that is not a submission is refused with a reason and closed; a
    // frame the server cannot read is answered with an error and the run goes on.
    for (first, says) in [
        ("not json".to_string(), "not JSON"),
        (
            json!({"type": "stdin", "data": "x"}).to_string(),
            "the first frame must be",
        ),
        (
            json!({"type": "init", "executionEngine": "cobol", "code": "x"}).to_string(),
            "cobol",
        ),
        (
            json!({"type": "init", "executionEngine": "python", "code": "x", "tests": [{"stdin": "1"}]}).to_string(),
            "no tests",
        ),
    ] {
        let mut socket = ws(a);
        socket.send(Message::Text(first.clone().into())).unwrap();
        let err = recv(&mut socket).unwrap_or(Value::Null);
        assert_eq!(err["type"], "error", "{mode}: {first}: {err}");
        assert!(
            err["message"].as_str().unwrap_or("").contains(says),
            "{mode}: {first}: {err}"
        );
        assert!(recv(&mut socket).is_none(), "{mode}: closed after {first}");
    }
    let mut socket = ws(a);
    send(
        &mut socket,
        json!({"type": "init", "executionEngine": "python", "code": "print(input())"}),
    );
    assert_eq!(recv(&mut socket).unwrap()["type"], "accepted");
    socket.send(Message::Text("{\"type\": \"launch\"}".into())).unwrap();
    send(&mut socket, json!({"type": "stdin", "data": "still here\n"}));
    let mut seen = String::new();
    let mut errors = 0;
    while let Some(v) = recv(&mut socket) {
        errors += usize::from(v["type"] == "error");
        if v["type"] == "stdout" {
            seen.push_str(v["data"].as_str().unwrap_or(""));
        }
    }
    assert_eq!((errors, seen.as_str()), (1, "still here\n"), "{mode}");
}

/// Piston's `/api/v2/connect`, as its clients speak it: init, runtime, stages, data, a signal
/// that really arrives, exit and the close codes.
pub(crate) fn piston_connect_contract(mode: &str, a: &str) {
    let connect = |api: &str| {
        let url = format!("{}/api/v2/connect", api.replace("http://", "ws://"));
        tungstenite::connect(url.as_str())
            .unwrap_or_else(|e| panic!("{url}: {e}"))
            .0
    };
    let close_code = |socket: &mut WebSocket<MaybeTlsStream<TcpStream>>| loop {
        match socket.read() {
            Ok(Message::Close(Some(f))) => return Some(u16::from(f.code)),
            Ok(Message::Close(None)) | Err(_) => return None,
            Ok(_) => continue,
        }
    };
    // stdin as data, answered on stdout; the program ends by itself: exit, then 4999.
    let mut s = connect(a);
    send(
        &mut s,
        json!({"type": "init", "language": "python", "version": "*",
            "files": [{"content": "import sys\nprint('ready', flush=True)\nname = sys.stdin.readline().strip()\nprint('hi ' + name)\nsys.stderr.write('bye')"}]}),
    );
    let first = recv(&mut s).unwrap();
    assert_eq!(first["type"], "runtime", "{mode}: {first}");
    assert_eq!(first["language"], "python", "{mode}");
    let mut stdout = String::new();
    let mut seen = Vec::new();
    loop {
        let Ok(Message::Text(t)) = s.read() else { break };
        let v = json_of(&t);
        if v["type"] == "data" && v["stream"] == "stdout" {
            stdout.push_str(v["data"].as_str().unwrap_or(""));
            if stdout == "ready\n" {
                send(&mut s, json!({"type": "data", "stream": "stdin", "data": "wolf\n"}));
            }
        }
        let end = v["type"] == "exit";
        seen.push(v);
        if end {
            break;
        }
    }
    assert_eq!(stdout, "ready\nhi wolf\n", "{mode}: {seen:?}");
    assert_eq!(seen[0], json!({"type": "stage", "stage": "run"}), "{mode}: {seen:?}");
    assert!(
        seen.iter()
            .any(|v| v == &json!({"type": "data", "stream": "stderr", "data": "bye"})),
        "{mode}: {seen:?}"
    );
    let exit = seen.last().unwrap();
    assert_eq!(
        (exit["stage"].as_str(), exit["code"].as_i64(), exit["signal"].is_null()),
        (Some("run"), Some(0), true),
        "{mode}: {exit}"
    );
    assert_eq!(close_code(&mut s), Some(4999), "{mode}: Job Completed");

    // A signal reaches the program (SIGTERM to its handler), a compiled language shows its
    // compile stage, and a SIGKILL is reported by name.
    let mut s = connect(a);
    send(
        &mut s,
        json!({"type": "init", "language": "c", "version": "*", "files": [{"name": "main.c", "content":
            "#include <signal.h>\n#include <stdio.h>\n#include <unistd.h>\nstatic void h(int s) { (void)s; write(1, \"term\\n\", 5); _exit(7); }\nint main(void) { signal(SIGTERM, h); printf(\"ready\\n\"); fflush(stdout); for (;;) pause(); }"}]}),
    );
    let mut stages = Vec::new();
    let mut stdout = String::new();
    let mut exit = Value::Null;
    loop {
        let Ok(Message::Text(t)) = s.read() else { break };
        let v = json_of(&t);
        if v["type"] == "stage" {
            stages.push(v["stage"].as_str().unwrap_or("").to_string());
        }
        if v["type"] == "data" {
            stdout.push_str(v["data"].as_str().unwrap_or(""));
            if stdout == "ready\n" {
                send(&mut s, json!({"type": "signal", "signal": "SIGTERM"}));
            }
        }
        if v["type"] == "exit" {
            exit = v;
            break;
        }
    }
    assert_eq!(stages, ["compile", "run"], "{mode}: {stages:?}");
    assert_eq!(stdout, "ready\nterm\n", "{mode}");
    assert_eq!(exit["code"], 7, "{mode}: {exit}");
    assert_eq!(close_code(&mut s), Some(4999), "{mode}");

    // The close codes of the protocol.
    let mut s = connect(a);
    assert_eq!(close_code(&mut s), Some(4001), "{mode}: no init within a second");
    let mut s = connect(a);
    send(&mut s, json!({"type": "data", "stream": "stdin", "data": "x"}));
    assert_eq!(close_code(&mut s), Some(4003), "{mode}: not yet initialized");
    let mut s = connect(a);
    send(
        &mut s,
        json!({"type": "init", "language": "cobol", "version": "*", "files": [{"content": "x"}]}),
    );
    let e = recv(&mut s).unwrap();
    assert_eq!(e["type"], "error", "{mode}: {e}");
    assert!(
        e["message"].as_str().unwrap().contains("runtime is unknown"),
        "{mode}: {e}"
    );
    assert_eq!(close_code(&mut s), Some(4002), "{mode}");
    let init = json!({"type": "init", "language": "python", "version": "*",
        "files": [{"content": "import time\nprint('ready', flush=True)\ntime.sleep(30)"}]});
    for (frame, code) in [
        (init.clone(), 4000),
        (json!({"type": "data", "stream": "stdout", "data": "x"}), 4004),
        (json!({"type": "signal", "signal": "SIGSTOP"}), 4005),
    ] {
        let mut s = connect(a);
        send(&mut s, init.clone());
        loop {
            let Ok(Message::Text(t)) = s.read() else {
                panic!("{mode}: no output before {frame}")
            };
            if json_of(&t)["data"] == "ready\n" {
                break;
            }
        }
        send(&mut s, frame.clone());
        assert_eq!(close_code(&mut s), Some(code), "{mode}: {frame}");
    }
}
