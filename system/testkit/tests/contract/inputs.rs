//! Richer inputs through the API: projects with subdirectories (Java packages, Python
//! packages), compiled once for many tests, and binary files given as base64 that come back
//! byte for byte.

use serde_json::{Value, json};

use super::{call, get_bytes, json_of};

fn finished(mode: &str, a: &str, sub: &Value) -> Value {
    let (s, _, body) = call("POST", &format!("{a}/job?wait=true&timeout=240"), Some(sub));
    assert_eq!(s, 200, "{mode}: {body}");
    json_of(&body)
}

pub(crate) fn inputs_contract(mode: &str, a: &str, b: &str) {
    // Java: Main in the default package uses a class of a package two directories down; javac
    // finds its source there, and every test's sandbox gets the compiled classes of both.
    let main = "import com.example.util.Adder;\npublic class Main { public static void main(String[] a) {\n\
        java.util.Scanner s = new java.util.Scanner(System.in);\n\
        System.out.println(Adder.add(s.nextInt(), s.nextInt())); } }";
    let adder =
        "package com.example.util;\npublic class Adder { public static int add(int x, int y) { return x + y; } }";
    let rec = finished(
        mode,
        a,
        &json!({"code": main, "executionEngine": "java",
            "files": [{"name": "com/example/util/Adder.java", "content": adder}],
            "tests": [{"stdin": "1 2", "expectedOutput": "3"}, {"stdin": "20 22", "expectedOutput": "42"}]}),
    );
    assert_eq!(rec["result"]["verdict"], "Accepted", "{mode}: {rec}");
    assert_eq!(rec["result"]["passed"], 2, "{mode}: {rec}");

    // Python: a package in a subdirectory, imported by the main file.
    let rec = finished(
        mode,
        a,
        &json!({"code": "from lib.text import shout\nprint(shout(input()))", "executionEngine": "python",
            "stdin": "hi", "files": [{"name": "lib/__init__.py", "content": ""},
                {"name": "lib/text.py", "content": "def shout(s):\n    return s.upper() + '!'"}]}),
    );
    let id = rec["id"].as_str().unwrap();
    let (s, _, out) = call("GET", &format!("{b}/job/{id}/output"), None);
    assert_eq!((s, out.as_str()), (200, "HI!\n"), "{mode}: {rec}");

    // Compiler options: passed as arguments of the compile command, never through a shell.
    let rec = finished(
        mode,
        a,
        &json!({"code": "#include <stdio.h>\nint main(void){ printf(\"%d %s\\n\", ANSWER, WHO); return 0; }",
            "executionEngine": "c", "compilerOptions": ["-DANSWER=42", "-DWHO=\"a b; $(id)\""]}),
    );
    let id = rec["id"].as_str().unwrap();
    let (s, _, out) = call("GET", &format!("{b}/job/{id}/output"), None);
    assert_eq!((s, out.as_str()), (200, "42 a b; $(id)\n"), "{mode}: {rec}");
    for bad in [
        json!({"code": "print(1)", "executionEngine": "python", "compilerOptions": ["-O2"]}),
        json!({"code": "int main(){}", "executionEngine": "c", "compilerOptions": ["-O2\u{0}"]}),
    ] {
        let (s, _, body) = call("POST", &format!("{a}/job"), Some(&bad));
        assert_eq!(s, 422, "{mode}: {body} for {bad}");
    }

    // Per-step stack and file size: a recursion 100 MiB deep needs the stack asked for, and a
    // file past fileSizeMb ends the program (SIGXFSZ) as an output limit.
    let deep = "#include <stdio.h>\nstatic int down(int n) { volatile char pad[1024]; pad[0] = (char)n; \
        if (n == 0) return 0; int r = down(n - 1); return r + pad[0] % 2; }\nint main(void) { printf(\"%d\\n\", down(100000)); return 0; }";
    let stack = |limits: Value| {
        finished(
            mode,
            a,
            &json!({"code": deep, "executionEngine": "c", "limits": limits}),
        )["result"]["verdict"]
            .clone()
    };
    assert_eq!(stack(json!({"memoryMb": 256, "stackMb": 200})), "Accepted", "{mode}");
    assert_eq!(
        stack(json!({"memoryMb": 256})),
        "RuntimeError",
        "{mode}: the default 64 MiB stack"
    );
    let big = "#include <stdio.h>\nint main(void) { static char b[1 << 20]; FILE *f = fopen(\"big\", \"w\"); \
        for (int i = 0; i < 3; i++) fwrite(b, 1, sizeof b, f); fclose(f); return 0; }";
    let rec = finished(
        mode,
        a,
        &json!({"code": big, "executionEngine": "c", "limits": {"fileSizeMb": 1}}),
    );
    assert_eq!(rec["result"]["verdict"], "OutputLimitExceeded", "{mode}: {rec}");
    let rec = finished(
        mode,
        a,
        &json!({"code": big, "executionEngine": "c", "limits": {"fileSizeMb": 8}}),
    );
    assert_eq!(rec["result"]["verdict"], "Accepted", "{mode}: {rec}");
    for bad in [
        json!({"stackMb": 0}),
        json!({"stackMb": 99_999_999}),
        json!({"fileSizeMb": 0}),
    ] {
        let sub = json!({"code": "int main(){}", "executionEngine": "c", "limits": bad});
        let (s, _, body) = call("POST", &format!("{a}/job"), Some(&sub));
        assert_eq!(s, 422, "{mode}: {body} for {sub}");
    }

    // Binary in, binary out: every byte value, given as base64, copied to stdout unchanged.
    let all: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
    let b64 = base64_encode(&all);
    let rec = finished(
        mode,
        a,
        &json!({"code": "cat data/all.bin", "executionEngine": "bash",
            "files": [{"name": "data/all.bin", "content": b64, "encoding": "base64"}]}),
    );
    assert_eq!(rec["result"]["verdict"], "Accepted", "{mode}: {rec}");
    let id = rec["id"].as_str().unwrap();
    let (s, _, _, body) = get_bytes(&format!("{b}/job/{id}/output"));
    assert_eq!((s, body), (200, all), "{mode}: the output object holds the raw bytes");

    // mergeStderr: one stream, in the order written; stderr stays empty.
    let (st, _, body) = call(
        "POST",
        &format!("{a}/job?wait=true"),
        Some(
            &json!({"code": "import sys\nprint('a', flush=True)\nsys.stderr.write('b\\n'); sys.stderr.flush()\nprint('c')",
            "executionEngine": "python", "mergeStderr": true}),
        ),
    );
    assert_eq!(st, 200, "{mode}: {body}");
    let id = json_of(&body)["id"].as_str().unwrap().to_string();
    let (_, _, out) = call("GET", &format!("{b}/job/{id}/output"), None);
    assert_eq!(out, "a\nb\nc\n", "{mode}");
    assert_eq!(json_of(&body)["result"]["stderr"], "", "{mode}: {body}");
}

/// Standard padded base64, written out here so the test does not share the server's decoder.
fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn the_test_encoder_is_standard_base64() {
    assert_eq!(base64_encode(b""), "");
    assert_eq!(base64_encode(b"f"), "Zg==");
    assert_eq!(base64_encode(b"fo"), "Zm8=");
    assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
    assert_eq!(base64_encode(&[0, 255, 254]), "AP/+");
}
