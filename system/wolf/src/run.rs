//! `wolf run --engine ENGINE [--stdin FILE] [--cpu-time-ms N] [--wall-time-ms N]
//! [--memory-mb N] [--pids N] [--output-bytes N] [--expected-output FILE] FILE`
//!
//! Prints one JSON object (`verdict`, `exitCode`, `signal`, `cpuTimeMs`, `wallTimeMs`,
//! `memoryKb`, `stdout`, `stderr`, `compileOutput`, `timings`); exit status 0 whenever a verdict
//! was reached. Outside checks rely on this interface.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use wolf_sandbox::runner::Plan;
use wolf_sandbox::{LimitRequest, Registry, RunRequest, Sandboxes};

/// Arguments of `wolf run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Execution engine (c, c++, python, javascript, java, rust, bash, ...).
    #[arg(long)]
    engine: String,
    /// File whose contents are the program's stdin.
    #[arg(long)]
    stdin: Option<PathBuf>,
    /// CPU time limit of the run step, ms.
    #[arg(long)]
    cpu_time_ms: Option<u64>,
    /// Wall-clock limit of the run step, ms.
    #[arg(long)]
    wall_time_ms: Option<u64>,
    /// Memory limit of the run step, MiB.
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Process/thread limit of the run step.
    #[arg(long)]
    pids: Option<u64>,
    /// Cap on stdout and stderr of the run step, bytes.
    #[arg(long)]
    output_bytes: Option<u64>,
    /// Expected stdout (enables WrongAnswer; trailing whitespace ignored).
    #[arg(long)]
    expected_output: Option<PathBuf>,
    /// CPU time limit of the compile step, ms (extension; the run-step flags above are the
    /// stable interface).
    #[arg(long)]
    compile_cpu_time_ms: Option<u64>,
    /// Wall-clock limit of the compile step, ms.
    #[arg(long)]
    compile_wall_time_ms: Option<u64>,
    /// Memory limit of the compile step, MiB.
    #[arg(long)]
    compile_memory_mb: Option<u64>,
    /// Extra program arguments for the run step (repeatable).
    #[arg(long = "arg")]
    args: Vec<String>,
    /// Cache for prepared artifacts (precompiled headers).
    #[arg(long, env = "WOLF_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// Source file.
    file: PathBuf,
}

/// Default cache directory: $XDG_CACHE_HOME/wolf, ~/.cache/wolf, or /var/cache/wolf.
pub fn default_cache_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(x).join("wolf");
    }
    if let Some(h) = std::env::var_os("HOME") {
        return PathBuf::from(h).join(".cache/wolf");
    }
    PathBuf::from("/var/cache/wolf")
}

pub fn main(args: RunArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let code = std::fs::read(&args.file).with_context(|| format!("read {}", args.file.display()))?;
    let stdin = args
        .stdin
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("read {}", p.display())))
        .transpose()?;
    let expected = args
        .expected_output
        .as_ref()
        .map(|p| std::fs::read(p).with_context(|| format!("read {}", p.display())))
        .transpose()?;
    let cache = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    std::fs::create_dir_all(&cache).with_context(|| format!("create cache dir {}", cache.display()))?;
    // Only this engine is resolved: another engine's probe (rustc through rustup, ~25 ms) is
    // not this run's to pay.
    let registry = Registry::builtin_for(&cache, &args.engine)?;
    let reg = &registry;
    let req = RunRequest {
        engine: args.engine.clone(),
        code,
        stdin,
        limits: LimitRequest {
            cpu_time_ms: args.cpu_time_ms,
            wall_time_ms: args.wall_time_ms,
            memory_mb: args.memory_mb,
            pids: args.pids,
            output_bytes: args.output_bytes,
        },
        compile_limits: LimitRequest {
            cpu_time_ms: args.compile_cpu_time_ms,
            wall_time_ms: args.compile_wall_time_ms,
            memory_mb: args.compile_memory_mb,
            ..Default::default()
        },
        args: args.args.clone(),
        expected_output: expected,
        ..Default::default()
    };
    // The configuration tree's file (WOLF_CONFIG) gives the caps and the sandbox's settings.
    let cfg = crate::config::Config::load(&crate::config::ConfigArgs {
        config: std::env::var_os("WOLF_CONFIG").map(PathBuf::from),
        ..Default::default()
    })?;
    let plan = Plan::new(reg, &cfg.caps, &req)?;
    let sandboxes = Sandboxes::new(cfg.sandbox(reg.bind_paths(), None))?;
    let created = Instant::now();
    let (out, sandbox) = match sandboxes.prepare() {
        Ok(mut sb) => (plan.run(&mut sb, created.elapsed().as_secs_f64() * 1000.0), Some(sb)),
        Err(e) => (wolf_sandbox::runner::internal(&e), None),
    };
    let mut result = out.result;
    result.timings.total = started.elapsed().as_secs_f64() * 1000.0;
    println!("{}", serde_json::to_string(&result)?);
    drop(sandbox);
    Ok(ExitCode::SUCCESS)
}
