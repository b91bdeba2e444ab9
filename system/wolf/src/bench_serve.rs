//! `wolf bench --serve`: the engine's end-to-end cost. Starts `wolf serve` (this executable) on
//! a temporary data dir and a free port, then, interleaved in one run: N sequential
//! `POST /job?wait=true` python `pass` jobs and N bare `/usr/bin/python3 -c pass` spawns; then
//! the throughput of trivial jobs (concurrent clients) against a bare parallel spawn loop on the
//! same cores.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use wolf_sandbox::bench::{Row, bare};

pub(crate) struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

fn job(agent: &ureq::Agent, base: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut r = agent
        .post(format!("{base}/job?wait=true"))
        .header("Content-Type", "application/json")
        .send(r#"{"code": "pass", "executionEngine": "python"}"#)?;
    let body = r.body_mut().read_to_string()?;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        r.status() == 200 && body.contains("\"Accepted\""),
        "job failed: {} {body}",
        r.status()
    );
    Ok(elapsed)
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The API to drive: `target`, or a `wolf serve` (this executable) started on a temporary data
/// dir and a free port, stopped when the returned guard drops.
pub(crate) fn start(target: Option<&str>, dir: &std::path::Path) -> anyhow::Result<(String, Option<Child>)> {
    Ok(match target {
        Some(url) => (url.trim_end_matches('/').to_string(), None),
        None => {
            let exe = std::env::current_exe()?;
            let mut child = Command::new(&exe)
                .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
                .arg(dir.join("data"))
                .env("WOLF_LOG", "warn")
                .stderr(Stdio::piped())
                .spawn()
                .context("start wolf serve")?;
            let stderr = child.stderr.take().expect("piped");
            let child = Child(child);
            let mut lines = BufReader::new(stderr).lines();
            let base = lines
                .by_ref()
                .map_while(Result::ok)
                .find_map(|l| {
                    l.strip_prefix("wolf: listening on ")
                        .map(|r| r.split_whitespace().next().unwrap_or("").to_string())
                })
                .context("wolf serve did not start")?;
            std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
            (base, Some(child))
        }
    })
}

/// Run the benchmark; returns the markdown section.
pub fn run(runs: usize, target: Option<&str>) -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join(format!("wolf-bench-{}", std::process::id()));
    let (base, child) = start(target, &dir)?;
    let agent = agent();
    for _ in 0..10 {
        job(&agent, &base)?;
        bare(&["/usr/bin/python3", "-c", "pass"]);
    }
    let mut served = Row {
        name: "POST /job?wait=true python pass".into(),
        samples: Vec::new(),
    };
    let mut baseline = Row {
        name: "bare /usr/bin/python3 -c pass".into(),
        samples: Vec::new(),
    };
    for _ in 0..runs {
        served.samples.push(ms(job(&agent, &base)?));
        baseline.samples.push(ms(bare(&["/usr/bin/python3", "-c", "pass"])));
    }
    // Throughput: 4 concurrent clients against the pool vs 2 threads spawning bare.
    let total = runs.max(40);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cores * 2 {
            let (agent, base) = (agent.clone(), base.clone());
            s.spawn(move || {
                for _ in 0..total / (cores * 2) {
                    job(&agent, &base).expect("job");
                }
            });
        }
    });
    let served_rate = (total / (cores * 2) * cores * 2) as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(move || {
                for _ in 0..total / cores {
                    bare(&["/usr/bin/python3", "-c", "pass"]);
                }
            });
        }
    });
    let bare_rate = (total / cores * cores) as f64 / t.elapsed().as_secs_f64();
    drop(child);
    let _ = std::fs::remove_dir_all(&dir);
    let mut out = String::from("| Measurement | p50 (ms) | p95 (ms) | p99 (ms) | vs bare |\n|---|---|---|---|---|\n");
    for (r, ratio) in [
        (
            &served,
            Some((
                served.quantile(0.5) / baseline.quantile(0.5),
                served.quantile(0.99) / baseline.quantile(0.99),
            )),
        ),
        (&baseline, None),
    ] {
        let ratio = ratio
            .map(|(a, b)| format!("p50 {a:.2}×, p99 {b:.2}×"))
            .unwrap_or_else(|| "1.00×".into());
        out.push_str(&format!(
            "| {} | {:.2} | {:.2} | {:.2} | {ratio} |\n",
            r.name,
            r.quantile(0.5),
            r.quantile(0.95),
            r.quantile(0.99)
        ));
    }
    out.push_str(&format!(
        "\nThroughput of trivial jobs ({} concurrent clients, {cores} workers): {served_rate:.1} jobs/s; bare parallel spawn loop \
         ({cores} threads): {bare_rate:.1} spawns/s; ratio {:.0}%.\n",
        cores * 2,
        100.0 * served_rate / bare_rate
    ));
    Ok(out)
}
