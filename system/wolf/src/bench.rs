//! `wolf bench [--runs N] [--out FILE]`: the sandbox overhead table, measured side by side in
//! one run (bare spawn, pre-warmed and cold sandbox, bubblewrap, python), written as markdown
//! with the machine and commit it ran on.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use wolf_sandbox::{SandboxConfig, Sandboxes, bench};

/// Arguments of `wolf bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Rounds (each round samples every row once).
    #[arg(long, default_value_t = 300)]
    runs: usize,
    /// Where to write the table (default: results/<UTC date>-sandbox.md, or -serve.md).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Measure the engine end to end (`wolf serve`, ?wait=true jobs) instead of the sandbox.
    #[arg(long)]
    serve: bool,
    /// Measure what a test case costs beyond its program (`wolf serve`, jobs of 100 tests of a
    /// C++ A+B); --runs is the number of jobs.
    #[arg(long, conflicts_with = "serve")]
    tests: bool,
    /// With --serve or --tests: drive this deployment (e.g. a testbed API) instead of starting
    /// `wolf serve`.
    #[arg(long)]
    target: Option<String>,
}

fn git_commit() -> String {
    bench::commit(std::path::Path::new("."))
}

fn utc_date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "undated".into())
}

pub fn main(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.tests {
        let table = crate::bench_tests::run(args.runs, args.target.as_deref())?;
        let doc = format!(
            "# Test cases: the cost of one beyond its program ({})\n\nMachine: {}\nCommit: {}\n\
             Command: `cargo run --release -p wolf -- bench --tests --runs {}`\n\n{table}",
            args.target.as_deref().unwrap_or("wolf serve, embedded mode"),
            bench::machine(),
            git_commit(),
            args.runs
        );
        return write(&table, &doc, args.out, "tests");
    }
    if args.serve {
        let table = crate::bench_serve::run(args.runs, args.target.as_deref())?;
        let doc = format!(
            "# Engine overhead ({})\n\nMachine: {}\nCommit: {}\nCommand: `cargo run --release -p wolf -- bench --serve{} --runs {}`\n\
             Sequential `POST /job?wait=true` of python `pass` (client-side latency, HTTP included), interleaved\n\
             with bare spawns of `/usr/bin/python3 -c pass`.\n\n{table}",
            args.target
                .as_deref()
                .map(|t| format!("deployment at {t}"))
                .unwrap_or_else(|| "wolf serve, embedded mode".into()),
            bench::machine(),
            git_commit(),
            args.target
                .as_deref()
                .map(|t| format!(" --target {t}"))
                .unwrap_or_default(),
            args.runs
        );
        let mode = if args.target.is_some() { "target" } else { "serve" };
        return write(&table, &doc, args.out, mode);
    }
    let sandboxes = Sandboxes::new(SandboxConfig {
        binds: ["/usr", "/bin", "/lib", "/lib64", "/etc/ld.so.cache"]
            .iter()
            .map(|p| (p.into(), p.into()))
            .collect(),
        ..Default::default()
    })?;
    let rows = bench::measure(&sandboxes, args.runs);
    let table = bench::table(&rows);
    let doc = format!(
        "# Sandbox overhead\n\nMachine: {}\nCommit: {}\nCommand: `cargo run --release -p wolf -- bench --runs {}`\n\
         Each round samples every row once (interleaved). Pre-warmed rows exclude preparation, as in the\n\
         engine's pool; cold rows include it. Times are wall clock around spawn-and-wait.\n\n{table}",
        bench::machine(),
        git_commit(),
        args.runs
    );
    write(&table, &doc, args.out, "sandbox")
}

/// Print `table`, and write `doc` to `out` (default `results/<UTC date>-<kind>.md`).
fn write(table: &str, doc: &str, out: Option<PathBuf>, kind: &str) -> anyhow::Result<ExitCode> {
    print!("{table}");
    let out = out.unwrap_or_else(|| PathBuf::from(format!("results/{}-{kind}.md", utc_date())));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, doc)?;
    eprintln!("written to {}", out.display());
    Ok(ExitCode::SUCCESS)
}
