//! Interactors through the API: a guessing game whose interactor (C++, compiled once) answers
//! a program live, test by test, with each outcome a judge needs: correct, wrong, a program
//! that never answers, an interactor that crashes or does not compile, a program that floods
//! its output, one that looks for the interactor's input, an interactor that tries to escape,
//! and the refusals.

use serde_json::{Value, json};

use super::{call, json_of};

/// The interactor: reads the secret from its input file, answers each guess with `<`, `>` or
/// `=`, and allows 20 guesses. testlib's exit codes: 0 found, 1 wrong, 3 a broken input file.
const GUESS_INTERACTOR: &str = r#"#include <cstdio>
int main(int argc, char **argv) {
  if (argc != 4) { std::fprintf(stderr, "usage: interactor input output answer"); return 3; }
  std::FILE *in = std::fopen(argv[1], "r");
  long secret;
  if (!in || std::fscanf(in, "%ld", &secret) != 1) { std::fprintf(stderr, "bad input file"); return 3; }
  for (int q = 1; q <= 20; q++) {
    long guess;
    if (std::scanf("%ld", &guess) != 1) { std::fprintf(stderr, "no guess after %d queries", q - 1); return 1; }
    if (guess == secret) { std::printf("=\n"); std::fflush(stdout); std::fprintf(stderr, "found in %d queries", q); return 0; }
    std::printf(guess > secret ? "<\n" : ">\n");
    std::fflush(stdout);
  }
  std::fprintf(stderr, "too many queries");
  return 1;
}
"#;

/// A program that finds the secret between 1 and 1000 by bisection (and says on stderr
/// whether it can see the interactor's input file: it must not).
const BISECT: &str = r#"import os, sys
sys.stderr.write("input file visible" if os.path.exists("input") or os.path.exists("answer") else "no input file")
lo, hi = 1, 1000
while True:
    mid = (lo + hi) // 2
    print(mid, flush=True)
    r = input().strip()
    if r == "=":
        break
    if r == "<":
        hi = mid - 1
    else:
        lo = mid + 1
"#;

fn judged(mode: &str, a: &str, b: &str, sub: &Value) -> Value {
    let (s, _, body) = call("POST", &format!("{a}/job?wait=true&timeout=240"), Some(sub));
    assert_eq!(s, 200, "{mode}: {body}");
    let id = json_of(&body)["id"].as_str().unwrap().to_string();
    let (s, _, body) = call("GET", &format!("{b}/job/{id}"), None);
    assert_eq!(s, 200, "{mode}: {body}");
    json_of(&body)
}

fn guessing(code: &str, interactor: Value, tests: Value) -> Value {
    json!({"code": code, "executionEngine": "python", "interactor": interactor, "tests": tests})
}

pub(crate) fn interactors_contract(mode: &str, a: &str, b: &str) {
    let interactor = json!({"code": GUESS_INTERACTOR, "executionEngine": "c++"});
    let rec = judged(
        mode,
        a,
        b,
        &guessing(
            BISECT,
            interactor.clone(),
            json!([{"stdin": "777"}, {"stdin": "1"}, {"stdin": "1000"}]),
        ),
    );
    let r = &rec["result"];
    let t = r["tests"].as_array().unwrap_or_else(|| panic!("{mode}: {rec}"));
    let seen: Vec<_> = t
        .iter()
        .map(|x| {
            (
                x["verdict"].as_str().unwrap_or(""),
                x["checkerMessage"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("Accepted", "found in 8 queries"),
            ("Accepted", "found in 9 queries"),
            ("Accepted", "found in 10 queries")
        ],
        "{mode}: {rec}"
    );
    assert_eq!(r["verdict"], "Accepted", "{mode}: {rec}");
    // The program's stdout is the transcript of what it sent; it never saw the secret's file.
    assert_eq!(t[0]["stdout"], "500\n750\n875\n812\n781\n765\n773\n777\n", "{mode}");
    assert_eq!(t[0]["stderr"], "no input file", "{mode}: {rec}");
    assert!(
        rec["timings"]["compile"].as_f64().unwrap() > 0.0,
        "{mode}: the interactor compiled once"
    );
    let id = rec["id"].as_str().unwrap();
    let (s, _, body) = call("GET", &format!("{b}/job/{id}/timeline"), None);
    assert_eq!(s, 200, "{mode}: {body}");
    let spans = json_of(&body)["spans"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        spans.iter().filter(|x| x["stage"] == "test").count(),
        3,
        "{mode}: {body}"
    );

    // Without tests, the top-level stdin is the interactor's input: a wrong final answer.
    let wrong = "print(5, flush=True)\nprint(input(), file=__import__('sys').stderr)";
    let rec = judged(
        mode,
        a,
        b,
        &json!({"code": wrong, "executionEngine": "python", "interactor": interactor, "stdin": "6"}),
    );
    let t0 = &rec["result"]["tests"][0];
    assert_eq!(t0["verdict"], "WrongAnswer", "{mode}: {rec}");
    assert_eq!(t0["checkerMessage"], "no guess after 1 queries", "{mode}: {rec}");
    assert_eq!(t0["stderr"], ">\n", "{mode}: the program got the interactor's answer");

    // A program that never answers ends by its own wall limit: TimeLimitExceeded, no deadlock.
    let rec = judged(
        mode,
        a,
        b,
        &json!({"code": "import time\ntime.sleep(60)", "executionEngine": "python", "interactor": interactor,
            "limits": {"wallTimeMs": 1000}, "tests": [{"stdin": "5"}]}),
    );
    assert_eq!(rec["result"]["verdict"], "TimeLimitExceeded", "{mode}: {rec}");

    // A program that reads and never writes, beside an interactor that waits for it: the same.
    let rec = judged(
        mode,
        a,
        b,
        &json!({"code": "import sys\nsys.stdin.read()", "executionEngine": "python", "interactor": interactor,
            "limits": {"wallTimeMs": 1000}, "tests": [{"stdin": "5"}]}),
    );
    assert_eq!(rec["result"]["verdict"], "TimeLimitExceeded", "{mode}: {rec}");

    // A program that writes 8 MiB: every byte reaches the interactor, through the bounded
    // relay, and the program's own output cap does not apply to what it sends.
    let counter = "import sys\nn = len(sys.stdin.buffer.read())\nsys.stderr.write(f'{n} bytes')\nsys.exit(0 if n == 8 << 20 else 1)";
    let rec = judged(
        mode,
        a,
        b,
        &guessing(
            "import sys\nsys.stdout.buffer.write(b'y' * (8 << 20))",
            json!({"code": counter, "executionEngine": "python"}),
            json!([{"stdin": ""}]),
        ),
    );
    let t0 = &rec["result"]["tests"][0];
    assert_eq!(
        (t0["verdict"].as_str(), t0["checkerMessage"].as_str()),
        (Some("Accepted"), Some("8388608 bytes")),
        "{mode}: {rec}"
    );
    assert_eq!(t0["truncated"], true, "{mode}: the transcript is capped: {rec}");

    // An interactor that fails is the judge's fault, even when the program then fails on the
    // end of file it left.
    for (code, limits, says) in [
        (
            "import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)",
            Value::Null,
            "signal 11",
        ),
        ("import time\ntime.sleep(60)", json!({"wallTimeMs": 800}), "time limit"),
        (
            "import sys\nsys.stderr.write('secret file unreadable')\nsys.exit(3)",
            Value::Null,
            "secret file unreadable",
        ),
        ("raise SystemExit(120)", Value::Null, "exited 120"),
    ] {
        let mut i = json!({"code": code, "executionEngine": "python"});
        if !limits.is_null() {
            i["limits"] = limits;
        }
        let rec = judged(mode, a, b, &guessing(BISECT, i, json!([{"stdin": "3"}])));
        let t0 = &rec["result"]["tests"][0];
        assert_eq!(t0["verdict"], "InternalError", "{mode}: {code}: {rec}");
        let msg = t0["checkerMessage"].as_str().unwrap_or("");
        assert!(msg.contains(says), "{mode}: {code}: {msg:?} should say {says:?}");
    }

    // An interactor that does not compile: the job is an InternalError that says so.
    let rec = judged(
        mode,
        a,
        b,
        &guessing(
            BISECT,
            json!({"code": "int main( {", "executionEngine": "c++"}),
            json!([{"stdin": "3"}]),
        ),
    );
    assert_eq!(rec["result"]["verdict"], "InternalError", "{mode}: {rec}");
    assert!(
        rec["result"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("the interactor does not compile"),
        "{mode}: {rec}"
    );

    // An interactor is contained like any program: it exits 0 only if an escape worked.
    let escape = format!(
        "{}sys.stderr.write(\"escaped: \" + \", \".join(got) if got else \"contained\")\nsys.exit(0 if got else 1)\n",
        super::ESCAPE_PROBE
    );
    let rec = judged(
        mode,
        a,
        b,
        &guessing(
            "print(1, flush=True)",
            json!({"code": escape, "executionEngine": "python"}),
            json!([{"stdin": "1"}]),
        ),
    );
    let t0 = &rec["result"]["tests"][0];
    assert_eq!(
        (t0["verdict"].as_str(), t0["checkerMessage"].as_str()),
        (Some("WrongAnswer"), Some("contained")),
        "{mode}: {rec}"
    );

    // Refused before admission.
    let bisect = |extra: Value| {
        let mut s = guessing(BISECT, interactor.clone(), json!([{"stdin": "3"}]));
        for (k, v) in extra.as_object().unwrap() {
            s[k] = v.clone();
        }
        s
    };
    for (sub, says) in [
        (bisect(json!({"checker": {"type": "tokens"}})), "give no checker"),
        (
            bisect(json!({"interactor": {"code": "x", "executionEngine": "cobol"}})),
            "interactor:",
        ),
        (
            bisect(json!({"interactor": {"code": " ", "executionEngine": "python"}})),
            "interactor: code is empty",
        ),
        (
            bisect(json!({"interactor": {"code": "x", "executionEngine": "python",
                "files": [{"name": "input", "content": "1"}]}})),
            "interactor:",
        ),
        (
            bisect(json!({"interactor": {"code": "x", "executionEngine": "python",
                "limits": {"wallTimeMs": 99_999_999}}})),
            "interactor:",
        ),
        (bisect(json!({"outputFiles": ["x.txt"]})), "outputFiles"),
        (
            bisect(json!({"interactor": {"code": "x", "executionEngine": "python", "extra": 1}})),
            "",
        ),
    ] {
        let (s, _, body) = call("POST", &format!("{a}/job"), Some(&sub));
        assert!(s == 422 || s == 400, "{mode}: {sub}: {s} {body}");
        let msg = json_of(&body)["error"]["message"].as_str().unwrap_or("").to_string();
        assert!(msg.contains(says), "{mode}: {msg:?} should say {says:?}");
    }
}
