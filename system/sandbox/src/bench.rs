//! Sandbox overhead, measured side by side in one run (`wolf bench`, and the criterion bench).
//!
//! Rows, each sampled round-robin so that machine noise hits all of them alike:
//! bare spawn of `/bin/true`; `/bin/true` in a pre-warmed sandbox (preparation not timed, as in
//! the engine's pool); cold sandbox creation (prepare until Ready); cold creation plus the run;
//! bubblewrap `--unshare-all` running `/bin/true` (when installed); bare and sandboxed
//! `python3 -c pass`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::limits::Limits;
use crate::sandbox::{Sandboxes, Step};

/// Percentiles of one row, milliseconds.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// Samples, ms.
    pub samples: Vec<f64>,
}

impl Row {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            samples: Vec::new(),
        }
    }

    /// The q-quantile (nearest rank), ms.
    pub fn quantile(&self, q: f64) -> f64 {
        if self.samples.is_empty() {
            return f64::NAN;
        }
        let mut s = self.samples.clone();
        s.sort_by(|a, b| a.total_cmp(b));
        let rank = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len());
        s[rank - 1]
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Time one bare spawn-and-wait of `argv`.
pub fn bare(argv: &[&str]) -> Duration {
    let t = Instant::now();
    let st = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("spawn");
    assert!(st.success(), "{argv:?} failed");
    t.elapsed()
}

fn step(argv: &[&str]) -> Step {
    Step {
        name: "run".into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        env: vec!["PATH=/usr/bin:/bin".into()],
        stdin: None,
        live: None,
        merge_stderr: false,
        limits: Limits {
            cpu_time_ms: 5000,
            wall_time_ms: 10000,
            memory_mb: 256,
            pids: 16,
            output_bytes: 1 << 20,
            stack_mb: None,
            file_size_mb: None,
        },
    }
}

/// Prepare a sandbox (returned: creation time), then time the run of `argv` in it.
pub fn sandboxed(sb: &Sandboxes, argv: &[&str]) -> (Duration, Duration) {
    let (created, ran, _) = sandboxed_detail(sb, argv);
    (created, ran)
}

/// Like [`sandboxed`], plus the step's own wall time as the supervisor measured it (order to
/// the step's supervisor until the program's exit status), to split the overhead.
pub fn sandboxed_detail(sb: &Sandboxes, argv: &[&str]) -> (Duration, Duration, Duration) {
    let t = Instant::now();
    let mut p = sb.prepare().expect("prepare sandbox");
    let created = t.elapsed();
    let steps = [step(argv)];
    let t = Instant::now();
    let out = p.run(&[], &steps).expect("run in sandbox");
    let ran = t.elapsed();
    assert_eq!(out[0].facts.exit_code, Some(0), "{argv:?} in the sandbox: {:?}", out[0]);
    drop(p);
    (created, ran, Duration::from_micros(out[0].facts.wall_time_us))
}

/// bubblewrap with every namespace unshared, if installed.
pub fn bwrap(argv: &[&str]) -> Option<Duration> {
    let bw = ["/usr/bin/bwrap", "/bin/bwrap"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let mut full = vec![
        bw,
        "--unshare-all",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--",
    ];
    full.extend_from_slice(argv);
    Some(bare(&full))
}

/// Run `runs` rounds of every row.
pub fn measure(sb: &Sandboxes, runs: usize) -> Vec<Row> {
    let mut rows: Vec<Row> = [
        "bare spawn /bin/true",
        "pre-warmed sandbox /bin/true",
        "  of which inside: order to exit status",
        "cold sandbox creation",
        "cold creation + /bin/true",
        "bubblewrap --unshare-all /bin/true",
        "bare python3 -c pass",
        "pre-warmed sandbox python3 -c pass",
    ]
    .into_iter()
    .map(Row::new)
    .collect();
    let python = ["/usr/bin/python3", "-c", "pass"];
    // Warm-up: page cache, the cgroup base directories, first-run costs.
    for _ in 0..3 {
        bare(&["/bin/true"]);
        sandboxed(sb, &["/bin/true"]);
        bare(&python);
    }
    for _ in 0..runs {
        rows[0].samples.push(ms(bare(&["/bin/true"])));
        let (created, ran, inside) = sandboxed_detail(sb, &["/bin/true"]);
        rows[1].samples.push(ms(ran));
        rows[2].samples.push(ms(inside));
        rows[3].samples.push(ms(created));
        rows[4].samples.push(ms(created + ran));
        if let Some(d) = bwrap(&["/bin/true"]) {
            rows[5].samples.push(ms(d));
        }
        rows[6].samples.push(ms(bare(&python)));
        rows[7].samples.push(ms(sandboxed(sb, &python).1));
    }
    rows.retain(|r| !r.samples.is_empty());
    rows
}

pub use wolf_core::machine::{Machine, commit, machine};

/// Markdown table: p50/p95/p99 and the p50 ratio to the bare spawn of the same program.
pub fn table(rows: &[Row]) -> String {
    let p50 = |name: &str| rows.iter().find(|r| r.name == name).map(|r| r.quantile(0.5));
    let mut s = String::from("| Measurement | p50 (ms) | p95 (ms) | p99 (ms) | p50 vs bare |\n|---|---|---|---|---|\n");
    for r in rows {
        let base = if r.name.contains("python") {
            p50("bare python3 -c pass")
        } else {
            p50("bare spawn /bin/true")
        };
        let ratio = base.map(|b| format!("{:.2}×", r.quantile(0.5) / b)).unwrap_or_default();
        s.push_str(&format!(
            "| {} | {:.3} | {:.3} | {:.3} | {} |\n",
            r.name,
            r.quantile(0.5),
            r.quantile(0.95),
            r.quantile(0.99),
            ratio
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let r = Row {
            name: "x".into(),
            samples: (1..=100).map(f64::from).collect(),
        };
        assert_eq!(r.quantile(0.5), 50.0);
        assert_eq!(r.quantile(0.99), 99.0);
        assert_eq!(r.quantile(1.0), 100.0);
        let t = table(&[
            Row {
                name: "bare spawn /bin/true".into(),
                samples: vec![1.0, 1.0],
            },
            Row {
                name: "y".into(),
                samples: vec![2.0],
            },
        ]);
        assert!(t.contains("| y | 2.000 | 2.000 | 2.000 | 2.00× |"), "{t}");
    }
}
