//! `wolf bench --tests`: what a test case costs beyond its program. Against `wolf serve` (or
//! `--target`), N jobs of a C++ A+B with 100 tests each; per job, the per-test overhead is
//! (the record's total − its compile) / 100 − the p50 of a bare exec of the same program on the
//! same input, compiled on the host with the same flags and run between the jobs. The job's
//! timeline shows how many compile stages it had (one is the promise).

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};
use wolf_sandbox::bench::Row;

use crate::bench_serve::{agent, ms, start};

const TESTS: usize = 100;
const PROGRAM: &str = "#include <cstdio>\nint main() { long a, b; if (std::scanf(\"%ld %ld\", &a, &b) != 2) return 1; \
    std::printf(\"%ld\\n\", a + b); return 0; }\n";

/// One bare exec of `bin` with `input` on stdin, waited for.
fn bare(bin: &std::path::Path, input: &[u8]) -> anyhow::Result<Duration> {
    let t = Instant::now();
    let mut child = Command::new(bin)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    child.stdin.take().context("stdin")?.write_all(input)?;
    let st = child.wait()?;
    anyhow::ensure!(st.success(), "the bare program failed");
    Ok(t.elapsed())
}

/// One job of [`TESTS`] tests; returns its record and the number of compile stages.
fn job(agent: &ureq::Agent, base: &str, body: &Value) -> anyhow::Result<(Value, usize)> {
    let mut r = agent
        .post(format!("{base}/job?wait=true&timeout=300"))
        .header("Content-Type", "application/json")
        .send(body.to_string())?;
    let rec: Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
    anyhow::ensure!(
        rec["result"]["verdict"] == "Accepted" && rec["result"]["passed"] == TESTS,
        "the job did not pass every test: {rec}"
    );
    let id = rec["id"].as_str().context("id")?;
    let tl: Value = serde_json::from_str(
        &agent
            .get(format!("{base}/job/{id}/timeline"))
            .call()?
            .body_mut()
            .read_to_string()?,
    )?;
    let compiles = tl["spans"]
        .as_array()
        .map(|s| s.iter().filter(|x| x["stage"] == "compile").count())
        .unwrap_or(0);
    Ok((rec, compiles))
}

/// Run it; returns the markdown section.
pub fn run(jobs: usize, target: Option<&str>) -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!("wolf-bench-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let src = dir.join("ab.cpp");
    std::fs::write(&src, PROGRAM)?;
    let bin = dir.join("ab");
    // The flags of the c++ engine (languages.toml), so the bare program is the same program.
    let st = Command::new("/usr/bin/g++")
        .args(["-O2", "-std=gnu++17", "-pipe", "-o"])
        .arg(&bin)
        .arg(&src)
        .status()
        .context("g++ (the bare baseline is compiled on the host)")?;
    anyhow::ensure!(st.success(), "g++ failed on the benchmark's program");
    let (base, child) = start(target, &dir)?;
    let agent = agent();
    let tests: Vec<Value> = (0..TESTS)
        .map(|i| json!({"stdin": format!("{i} {}\n", i * 3), "expectedOutput": format!("{}\n", i * 4)}))
        .collect();
    let body = json!({"code": PROGRAM, "executionEngine": "c++", "tests": tests});
    job(&agent, &base, &body)?; // warm: the precompiled header, the page cache
    let mut bare_row = Row {
        name: "bare exec of the same binary, same input".into(),
        samples: Vec::new(),
    };
    let mut per_test = Row {
        name: "per-test overhead: (total − compile) / 100 − bare p50".into(),
        samples: Vec::new(),
    };
    let mut raw = Row {
        name: "(total − compile) / 100".into(),
        samples: Vec::new(),
    };
    let mut compiles = Vec::new();
    let mut compile_ms = Vec::new();
    for _ in 0..jobs {
        for i in 0..TESTS {
            bare_row
                .samples
                .push(ms(bare(&bin, format!("{i} {}\n", i * 3).as_bytes())?));
        }
        let (rec, n) = job(&agent, &base, &body)?;
        let t = &rec["timings"];
        let (total, compile) = (t["total"].as_f64().unwrap_or(0.0), t["compile"].as_f64().unwrap_or(0.0));
        raw.samples.push((total - compile) / TESTS as f64);
        compiles.push(n);
        compile_ms.push(compile);
    }
    let bare_p50 = bare_row.quantile(0.5);
    per_test.samples = raw.samples.iter().map(|x| x - bare_p50).collect();
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = String::from("| Measurement | p50 (ms) | p95 (ms) | p99 (ms) |\n|---|---|---|---|\n");
    for r in [&per_test, &raw, &bare_row] {
        out.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} |\n",
            r.name,
            r.quantile(0.5),
            r.quantile(0.95),
            r.quantile(0.99)
        ));
    }
    let once = compiles.iter().all(|&n| n == 1);
    out.push_str(&format!(
        "\n{jobs} jobs of {TESTS} tests; compile stages per job in the timeline: {compiles:?} ({}); compile p50 {:.0} ms.\n",
        if once { "exactly one each" } else { "NOT one each" },
        {
            let mut c = compile_ms.clone();
            c.sort_by(f64::total_cmp);
            c.get(c.len() / 2).copied().unwrap_or(f64::NAN)
        }
    ));
    anyhow::ensure!(once, "a job compiled more than once: {compiles:?}");
    Ok(out)
}
