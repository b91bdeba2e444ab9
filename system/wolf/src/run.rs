//! `wolf run --engine ENGINE [--stdin FILE] [--cpu-time-ms N] [--wall-time-ms N]
//! [--memory-mb N] [--pids N] [--output-bytes N] [--expected-output FILE] FILE`
//!
//! Prints one JSON object (`verdict`, `exitCode`, `signal`, `cpuTimeMs`, `wallTimeMs`,
//! `memoryKb`, `stdout`, `stderr`, `compileOutput`, `timings`); exit status 0 whenever a verdict
//! was reached. Outside checks rely on this interface.
//!
//! Judge-grade runs add `--tests DIR` (compiled once, each test in a fresh sandbox, the same
//! `tests`, `passed` and `score` as the API's result), `--checker FILE` (a testlib-convention
//! checker program), `--interactor FILE` (a testlib-convention interactor the program talks
//! to live in each test), `--stop-on-first-failure`, and `--output-file PATTERN` (the files
//! the program wrote, listed in `files` and copied under `--output-dir`).

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
    /// Stack of each process of the run step, MiB (at most its memory).
    #[arg(long)]
    stack_mb: Option<u64>,
    /// Largest file the run step may write, MiB.
    #[arg(long)]
    file_size_mb: Option<u64>,
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
    /// Extra compiler arguments, appended to the compile command (repeatable).
    #[arg(long = "compiler-option", allow_hyphen_values = true)]
    compiler_options: Vec<String>,
    /// Test cases: NAME.in (stdin) with NAME.out or NAME.ans (expected output), in NAME order
    /// (numbers by value); the program is compiled once.
    #[arg(long)]
    tests: Option<PathBuf>,
    /// Stop at the first test that is not Accepted.
    #[arg(long, requires = "tests")]
    stop_on_first_failure: bool,
    /// A checker program (testlib conventions), run as `checker input output answer` after each
    /// test; without --tests, --stdin and --expected-output are the one test.
    #[arg(long)]
    checker: Option<PathBuf>,
    /// The checker's engine (default: from its extension).
    #[arg(long, requires = "checker")]
    checker_engine: Option<String>,
    /// A file beside the checker in its work dir, under its own name (`testlib.h`; repeatable).
    #[arg(long = "checker-file", requires = "checker")]
    checker_files: Vec<PathBuf>,
    /// An interactor (testlib conventions), run as `interactor input output answer` beside the
    /// program in each test, the program's stdout its stdin and its stdout the program's stdin;
    /// without --tests, --stdin and --expected-output are the one test.
    #[arg(long, conflicts_with = "checker")]
    interactor: Option<PathBuf>,
    /// The interactor's engine (default: from its extension).
    #[arg(long, requires = "interactor")]
    interactor_engine: Option<String>,
    /// A file beside the interactor in its work dir, under its own name (repeatable).
    #[arg(long = "interactor-file", requires = "interactor")]
    interactor_files: Vec<PathBuf>,
    /// Bring back the files the program wrote that match (a relative path or a glob with * and
    /// ?; repeatable).
    #[arg(long = "output-file", conflicts_with_all = ["tests", "checker", "interactor"])]
    output_files: Vec<String>,
    /// Where the files of --output-file are written (created; existing files are not replaced).
    #[arg(long, default_value = "wolf-output", requires = "output_files")]
    output_dir: PathBuf,
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
    let checker = match &args.checker {
        Some(file) => {
            let (code, execution_engine, files) =
                crate::run_suite::judge_program("checker", file, args.checker_engine.as_deref(), &args.checker_files)?;
            Some(wolf_core::Checker::Testlib {
                code,
                execution_engine,
                files,
                limits: None,
            })
        }
        None => None,
    };
    let interactor = match &args.interactor {
        Some(file) => {
            let (code, execution_engine, files) = crate::run_suite::judge_program(
                "interactor",
                file,
                args.interactor_engine.as_deref(),
                &args.interactor_files,
            )?;
            Some(wolf_core::Interactor {
                code,
                execution_engine,
                files,
                limits: None,
            })
        }
        None => None,
    };
    let mut engines = vec![args.engine.as_str()];
    if let Some(wolf_core::Checker::Testlib { execution_engine, .. }) = &checker {
        engines.push(execution_engine);
    }
    if let Some(i) = &interactor {
        engines.push(&i.execution_engine);
    }
    // The configuration tree's file (WOLF_CONFIG) gives the caps, the sandbox's settings and
    // the operator's engines; the data dir (WOLF_DATA_DIR) holds the imported runtimes.
    let cfg = crate::config::Config::load(&crate::config::ConfigArgs {
        config: std::env::var_os("WOLF_CONFIG").map(PathBuf::from),
        data_dir: std::env::var_os("WOLF_DATA_DIR").map(PathBuf::from),
        ..Default::default()
    })?;
    // Only these engines are resolved: another engine's probe (rustc through rustup, ~25 ms)
    // is not this run's to pay.
    let wanted: Vec<String> = engines.iter().map(|e| e.trim().to_ascii_lowercase()).collect();
    let registry = crate::runtime_cli::registry(&cfg, &cfg.data_dir, &cache, |spec| {
        wanted.iter().any(|n| spec.name == *n || spec.aliases.contains(n))
    })?;
    let reg = &registry;
    // One sandbox kind per run: every engine of it on the same root.
    let roots: std::collections::BTreeSet<Option<String>> = engines
        .iter()
        .map(|e| reg.find(e).ok().and_then(|l| l.spec.runtime.clone()))
        .collect();
    anyhow::ensure!(
        roots.len() == 1,
        "the program, checker and interactor must run on the same root (host or one runtime)"
    );
    let mut req = RunRequest {
        engine: args.engine.clone(),
        code,
        stdin,
        limits: LimitRequest {
            cpu_time_ms: args.cpu_time_ms,
            wall_time_ms: args.wall_time_ms,
            memory_mb: args.memory_mb,
            pids: args.pids,
            output_bytes: args.output_bytes,
            stack_mb: args.stack_mb,
            file_size_mb: args.file_size_mb,
        },
        compile_limits: LimitRequest {
            cpu_time_ms: args.compile_cpu_time_ms,
            wall_time_ms: args.compile_wall_time_ms,
            memory_mb: args.compile_memory_mb,
            ..Default::default()
        },
        args: args.args.clone(),
        compiler_options: args.compiler_options.clone(),
        expected_output: expected,
        stop_on_first_failure: args.stop_on_first_failure,
        output_files: args.output_files.clone(),
        ..Default::default()
    };
    if let Some(dir) = &args.tests {
        anyhow::ensure!(
            req.stdin.is_none() && req.expected_output.is_none(),
            "with --tests, stdin and expected output come from the tests directory"
        );
        req.tests = crate::run_suite::load_tests(dir)?;
    }
    if (checker.is_some() || interactor.is_some()) && req.tests.is_empty() {
        req.tests.push(wolf_sandbox::runner::TestRequest {
            name: "test-1".into(),
            stdin: req.stdin.take(),
            expected_output: req.expected_output.take(),
            ..Default::default()
        });
    }
    if let Some(c) = checker {
        c.validate().map_err(anyhow::Error::msg)?;
        req.checker = c;
    }
    req.interactor = interactor;
    for p in &req.output_files {
        anyhow::ensure!(
            wolf_core::names::valid_output_pattern(p),
            "--output-file {p:?}: a relative path (globs * and ?), no . or .. component"
        );
    }
    let binds = crate::runtime_cli::binds(reg, &cfg.data_dir, &args.engine)?;
    let sandboxes = Sandboxes::new(cfg.sandbox(binds, None))?;
    if !req.tests.is_empty() {
        return run_tests(reg, &cfg.caps, &req, sandboxes, started);
    }
    let plan = Plan::new(reg, &cfg.caps, &req)?;
    let created = Instant::now();
    let (out, sandbox) = match sandboxes.prepare() {
        Ok(mut sb) => (plan.run(&mut sb, created.elapsed().as_secs_f64() * 1000.0), Some(sb)),
        Err(e) => (wolf_sandbox::runner::internal(&e), None),
    };
    if !out.files.is_empty() {
        write_outputs(&args.output_dir, &out.files)?;
    }
    let mut result = out.result;
    result.timings.total = started.elapsed().as_secs_f64() * 1000.0;
    println!("{}", serde_json::to_string(&result)?);
    drop(sandbox);
    Ok(ExitCode::SUCCESS)
}

/// A submission with test cases, through the manager's own suite runner on local sandboxes.
fn run_tests(
    reg: &Registry,
    caps: &wolf_sandbox::runner::Caps,
    req: &RunRequest,
    sandboxes: Sandboxes,
    started: Instant,
) -> anyhow::Result<ExitCode> {
    let suite = wolf_sandbox::suite::Suite::new(reg, caps, req)?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let pool: std::sync::Arc<dyn wolf_manager::Pool> = std::sync::Arc::new(sandboxes);
    let created = Instant::now();
    let out = rt.block_on(async {
        let first = pool.prepare()?;
        let creation = created.elapsed().as_secs_f64() * 1000.0;
        let streams = wolf_store::Streams::local();
        wolf_manager::run_suite(pool.clone(), &streams, "wolf-run", suite, first, creation).await
    });
    let mut result = match out {
        Ok(out) => out.result,
        Err(e) => wolf_sandbox::runner::internal(&e).result,
    };
    result.timings.total = started.elapsed().as_secs_f64() * 1000.0;
    println!("{}", serde_json::to_string(&result)?);
    Ok(ExitCode::SUCCESS)
}

/// Write the collected output files under `dir`; their paths were checked by the collector
/// (relative, no `.` or `..`), and an existing file is never replaced.
fn write_outputs(dir: &std::path::Path, files: &[wolf_sandbox::sandbox::JobFile]) -> anyhow::Result<()> {
    for f in files {
        anyhow::ensure!(
            wolf_sandbox::protocol::valid_work_path(&f.name),
            "output file {:?}: not a relative path",
            f.name
        );
        let path = dir.join(&f.name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("write {} (it must not exist yet)", path.display()))?;
        std::io::Write::write_all(&mut file, &f.contents).with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
