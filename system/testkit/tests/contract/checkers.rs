//! Checker programs through the API: a testlib-style checker compiled once and run per test,
//! with every exit code it can give, a checker that fails or tries to escape, and the refusals.

use serde_json::{Value, json};

use super::{call, error, json_of};

/// A float checker in C++ (no testlib.h: its conventions only): accepted within 1e-6, half a
/// point within 1e-2, wrong beyond, a presentation error when the output is not a number; it
/// reads its input file too and says so.
const FLOAT_CHECKER: &str = r#"#include <cmath>
#include <cstdio>
int main(int argc, char **argv) {
  if (argc != 4) { std::fprintf(stderr, "usage: checker input output answer"); return 3; }
  std::FILE *in = std::fopen(argv[1], "r"), *out = std::fopen(argv[2], "r"), *ans = std::fopen(argv[3], "r");
  if (!in || !out || !ans) { std::fprintf(stderr, "cannot open the files"); return 3; }
  double given, want, got;
  if (std::fscanf(in, "%lf", &given) != 1) given = -1;
  if (std::fscanf(ans, "%lf", &want) != 1) { std::fprintf(stderr, "bad answer file"); return 3; }
  if (std::fscanf(out, "%lf", &got) != 1) { std::fprintf(stderr, "expected a number"); return 2; }
  double d = std::fabs(got - want);
  if (d <= 1e-6) { std::fprintf(stderr, "ok input %.3f", given); return 0; }
  if (d <= 1e-2) { std::fprintf(stderr, "points 0.5 close, off by %.4f", d); return 7; }
  std::fprintf(stderr, "wrong answer expected %.6f, found %.6f", want, got);
  return 1;
}
"#;

fn judged(mode: &str, a: &str, b: &str, sub: &Value) -> Value {
    let (s, _, body) = call("POST", &format!("{a}/job?wait=true&timeout=240"), Some(sub));
    assert_eq!(s, 200, "{mode}: {body}");
    let id = json_of(&body)["id"].as_str().unwrap().to_string();
    let (s, _, body) = call("GET", &format!("{b}/job/{id}"), None);
    assert_eq!(s, 200, "{mode}: {body}");
    json_of(&body)
}

pub(crate) fn checkers_contract(mode: &str, a: &str, b: &str) {
    // The program echoes its stdin: each test's stdin is the answer it gives.
    let echo = "import sys\nsys.stdout.write(sys.stdin.read())";
    let checker = json!({"type": "testlib", "code": FLOAT_CHECKER, "executionEngine": "c++"});
    let test = |out: &str| json!({"stdin": out, "expectedOutput": "0.3333333333\n"});
    let rec = judged(
        mode,
        a,
        b,
        &json!({"code": echo, "executionEngine": "python", "checker": checker,
            "tests": [test("0.3333333\n"), test("0.334\n"), test("0.5\n"), test("a third\n")]}),
    );
    let r = &rec["result"];
    let t = r["tests"].as_array().unwrap_or_else(|| panic!("{mode}: {rec}"));
    let seen: Vec<_> = t
        .iter()
        .map(|x| (x["verdict"].as_str().unwrap_or(""), x["score"].as_f64().unwrap_or(-1.0)))
        .collect();
    assert_eq!(
        seen,
        [
            ("Accepted", 1.0),
            ("Accepted", 0.5),
            ("WrongAnswer", 0.0),
            ("PresentationError", 0.0)
        ],
        "{mode}: {rec}"
    );
    assert_eq!(
        t[0]["checkerMessage"], "ok input 0.333",
        "{mode}: the checker read its input file"
    );
    assert_eq!(t[1]["checkerMessage"], "close, off by 0.0007", "{mode}");
    assert!(
        t[2]["checkerMessage"]
            .as_str()
            .unwrap()
            .starts_with("wrong answer expected 0.333333")
    );
    assert_eq!(t[3]["checkerMessage"], "expected a number", "{mode}");
    assert_eq!(
        r["verdict"], "WrongAnswer",
        "{mode}: the first test not accepted decides"
    );
    assert_eq!(
        (r["passed"].as_u64(), r["score"].as_f64()),
        (Some(2), Some(1.5)),
        "{mode}"
    );
    assert!(
        rec["timings"]["compile"].as_f64().unwrap() > 0.0,
        "{mode}: the checker compiled"
    );
    // The timeline: one bar per test and one per checker run, within the execution stage.
    let id = rec["id"].as_str().unwrap();
    let (s, _, body) = call("GET", &format!("{b}/job/{id}/timeline"), None);
    assert_eq!(s, 200, "{mode}: {body}");
    let spans = json_of(&body)["spans"].as_array().cloned().unwrap_or_default();
    let count = |stage: &str| spans.iter().filter(|x| x["stage"] == stage).count();
    assert_eq!(
        (count("test"), count("checker"), count("compile")),
        (4, 4, 1),
        "{mode}: {body}"
    );
    let names: Vec<&str> = spans
        .iter()
        .filter(|x| x["stage"] == "test")
        .filter_map(|x| x["name"].as_str())
        .collect();
    assert_eq!(names, ["test-1", "test-2", "test-3", "test-4"], "{mode}: {body}");

    // Without tests the top-level stdin and expected output are the one test; a presentation
    // error is the job's verdict when it comes first.
    let rec = judged(
        mode,
        a,
        b,
        &json!({"code": echo, "executionEngine": "python", "checker": checker,
            "stdin": "three\n", "expectedOutput": "3\n"}),
    );
    assert_eq!(rec["result"]["verdict"], "PresentationError", "{mode}: {rec}");
    assert_eq!(rec["result"]["tests"].as_array().map(Vec::len), Some(1), "{mode}");

    // A checker with a header of its own (as testlib.h travels), given in its files.
    let header = "#include <stdio.h>\n#include <string.h>\nstatic int judge(const char *o, const char *a) {\n\
        char x[64] = {0}, y[64] = {0}; FILE *f = fopen(o, \"r\"), *g = fopen(a, \"r\");\n\
        if (!f || !g) return 3; fscanf(f, \"%63s\", x); fscanf(g, \"%63s\", y);\n\
        fprintf(stderr, \"judged by judge.h\"); return strcmp(x, y) ? 1 : 0; }\n";
    let with_header = json!({"type": "testlib", "executionEngine": "c",
        "code": "#include \"lib/judge.h\"\nint main(int argc, char **argv) { return argc == 4 ? judge(argv[2], argv[3]) : 3; }",
        "files": [{"name": "lib/judge.h", "content": header}]});
    let rec = judged(
        mode,
        a,
        b,
        &json!({"code": echo, "executionEngine": "python", "checker": with_header,
            "tests": [{"stdin": "yes", "expectedOutput": "yes"}, {"stdin": "no", "expectedOutput": "yes"}]}),
    );
    let t = &rec["result"]["tests"];
    assert_eq!(
        (t[0]["verdict"].as_str(), t[1]["verdict"].as_str()),
        (Some("Accepted"), Some("WrongAnswer")),
        "{mode}: {rec}"
    );
    assert_eq!(t[0]["checkerMessage"], "judged by judge.h", "{mode}: {rec}");

    // A program that fails is not judged: its own verdict stands.
    let rec = judged(
        mode,
        a,
        b,
        &json!({"code": "raise SystemExit(4)", "executionEngine": "python", "checker": checker,
            "tests": [test("1")]}),
    );
    let t0 = &rec["result"]["tests"][0];
    assert_eq!(t0["verdict"], "RuntimeError", "{mode}: {rec}");
    assert!(t0.get("checkerMessage").is_none(), "{mode}: {rec}");

    // A checker that fails is the judge's fault, never the submission's.
    let python_checker = |code: &str, limits: Value| {
        let mut c = json!({"type": "testlib", "code": code, "executionEngine": "python"});
        if !limits.is_null() {
            c["limits"] = limits;
        }
        let rec = judged(
            mode,
            a,
            b,
            &json!({"code": "print(1)", "executionEngine": "python", "checker": c, "tests": [{"expectedOutput": "1"}]}),
        );
        rec["result"]["tests"][0].clone()
    };
    for (code, limits, says) in [
        (
            "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)",
            Value::Null,
            "signal 9",
        ),
        ("while True: pass", json!({"cpuTimeMs": 300}), "time limit"),
        (
            "import sys\nsys.stderr.write('answer file is broken')\nsys.exit(3)",
            Value::Null,
            "answer file is broken",
        ),
        ("raise SystemExit(120)", Value::Null, "exited 120"),
        (
            "import sys\nsys.stderr.write('points many')\nsys.exit(7)",
            Value::Null,
            "score",
        ),
    ] {
        let t = python_checker(code, limits);
        assert_eq!(t["verdict"], "InternalError", "{mode}: {code}: {t}");
        let msg = t["checkerMessage"].as_str().unwrap_or("");
        assert!(msg.contains(says), "{mode}: {code}: {msg:?} should say {says:?}: {t}");
    }

    // A checker is contained like any program: it can read its three files and nothing of the
    // host's; it says "accepted" only if an escape worked.
    let escape = format!(
        "{}{}",
        super::ESCAPE_PROBE,
        r#"files = sorted(os.listdir("."))
if got:
    sys.stderr.write("escaped: " + ", ".join(got)); sys.exit(0)
sys.stderr.write("contained; saw " + " ".join(f for f in files if f in ("input", "output", "answer")))
sys.exit(1)
"#
    );
    let t = python_checker(&escape, Value::Null);
    assert_eq!(t["verdict"], "WrongAnswer", "{mode}: the checker got out: {t}");
    assert_eq!(t["checkerMessage"], "contained; saw answer input output", "{mode}: {t}");

    // A checker that does not compile: an InternalError that says so, before any test ran.
    let rec = judged(
        mode,
        a,
        b,
        &json!({"code": "print(1)", "executionEngine": "python",
            "checker": {"type": "testlib", "code": "int main( {", "executionEngine": "c"},
            "tests": [{"expectedOutput": "1"}]}),
    );
    assert_eq!(rec["result"]["verdict"], "InternalError", "{mode}: {rec}");
    assert!(
        rec["result"]["error"]
            .as_str()
            .unwrap_or("")
            .contains("the checker does not compile"),
        "{mode}: {rec}"
    );

    // Refused before admission.
    for bad in [
        json!({"type": "testlib", "code": "x", "executionEngine": "cobol"}),
        json!({"type": "testlib", "code": "  ", "executionEngine": "python"}),
        json!({"type": "testlib", "code": "x", "executionEngine": "python", "limits": {"cpuTimeMs": 999999999}}),
        json!({"type": "testlib", "code": "x", "executionEngine": "python", "epsilon": 1}),
        json!({"type": "testlib", "executionEngine": "python"}),
        json!({"type": "testlib", "code": "x", "executionEngine": "python", "files": [{"name": "answer", "content": ""}]}),
        json!({"type": "testlib", "code": "x", "executionEngine": "python", "files": [{"name": "../h", "content": ""}]}),
        json!({"type": "testlib", "code": "x", "executionEngine": "python",
            "files": [{"name": "h", "content": "%%", "encoding": "base64"}]}),
    ] {
        let sub = json!({"code": "print(1)", "executionEngine": "python", "checker": bad, "tests": [{}]});
        let (s, body) = error("POST", &format!("{a}/job"), Some(&sub));
        assert!(s == 422 || s == 400, "{mode}: {s} {body} for {sub}");
    }
    let sub = json!({"code": "print(1)", "executionEngine": "python", "outputFiles": ["x"],
        "checker": {"type": "testlib", "code": "x", "executionEngine": "python"}});
    assert_eq!(error("POST", &format!("{a}/job"), Some(&sub)).0, 422, "{mode}");
}
