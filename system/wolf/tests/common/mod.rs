//! Shared helpers: run programs through the real `wolf run` binary and read its JSON.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// Exit code a probe uses when an attack got through (youki/nsjail convention).
pub const ESCAPED: i64 = 77;

/// Whether this process can create sandboxes (root: cgroups and namespaces).
pub fn privileged() -> bool {
    wolf_testkit::running_as_root("the sandbox tests need root (cgroup creation); run them as root, as CI does")
}

/// A cache shared by all tests (the C++ precompiled header is built once).
pub fn cache_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("wolf-cache");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The engine a case names, or the one `WOLF_TEST_ENGINES` (`c=c-ml,python=python-ml`) maps
/// it to: scripts/test.sh runs the adversarial suite again with the engines of an image
/// runtime (its root instead of the host's), with `WOLF_CONFIG` and `WOLF_DATA_DIR` naming them.
pub fn engine_for(engine: &str) -> String {
    std::env::var("WOLF_TEST_ENGINES")
        .ok()
        .and_then(|map| {
            map.split(',')
                .filter_map(|pair| pair.split_once('='))
                .find(|(from, _)| *from == engine)
                .map(|(_, to)| to.to_string())
        })
        .unwrap_or_else(|| engine.to_string())
}

/// Run `code` as `engine` with extra `wolf run` flags; returns the parsed JSON result.
pub fn run(engine: &str, code: &str, flags: &[&str]) -> Value {
    run_env(engine, code, flags, &[])
}

/// Like [`run`], with extra environment variables for the `wolf` process itself.
pub fn run_env(engine: &str, code: &str, flags: &[&str], env: &[(&str, &str)]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let ext = match engine {
        "c" => "c",
        "c++" => "cpp",
        "python" => "py",
        "javascript" => "js",
        "java" => "java",
        "rust" => "rs",
        _ => "sh",
    };
    let file = dir.path().join(format!("prog.{ext}"));
    std::fs::write(&file, code).unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wolf"));
    cmd.arg("run").arg("--engine").arg(engine_for(engine)).args(flags);
    // Under the guest suites' emulated CPU (WOLF_GUEST) a compiler or an interpreter's start
    // costs seconds of CPU, more on a busy host (seen: gcc past 10 s, python past 2 s): the
    // limits a case does not set itself get room there. A case about a limit sets that limit.
    if std::env::var_os("WOLF_GUEST").is_some() {
        for (flag, room) in [
            ("--cpu-time-ms", "20000"),
            ("--wall-time-ms", "60000"),
            ("--compile-cpu-time-ms", "60000"),
            ("--compile-wall-time-ms", "120000"),
        ] {
            if !flags.contains(&flag) {
                cmd.args([flag, room]);
            }
        }
    }
    cmd.arg(&file).env("WOLF_CACHE_DIR", cache_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("spawn wolf");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wolf run failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    for k in [
        "verdict",
        "exitCode",
        "signal",
        "cpuTimeMs",
        "wallTimeMs",
        "memoryKb",
        "stdout",
        "stderr",
        "compileOutput",
        "timings",
    ] {
        assert!(v.get(k).is_some(), "result lacks {k}: {v}");
    }
    v
}

/// Write a file into a temp dir and return its path (kept alive by the returned guard).
pub fn temp_file(contents: &[u8]) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("data");
    std::fs::write(&p, contents).unwrap();
    (dir, p)
}

/// The verdict string.
pub fn verdict(v: &Value) -> &str {
    v["verdict"].as_str().unwrap_or("?")
}

/// stdout.
pub fn stdout(v: &Value) -> &str {
    v["stdout"].as_str().unwrap_or("")
}

/// Assert the probe did not report an escape, with the whole result on failure.
pub fn assert_contained(v: &Value) {
    assert_ne!(v["exitCode"].as_i64(), Some(ESCAPED), "attack got through: {v}");
    assert!(!stdout(v).contains("ESCAPED"), "attack got through: {v}");
    assert_ne!(verdict(v), "InternalError", "sandbox failed instead of containing: {v}");
}
