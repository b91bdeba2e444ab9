//! The `wolf` binary: `serve` (the embedded mode: API, queue, workers), `run` (one program
//! through the sandbox, JSON out), `bench` (sandbox overhead table).
//!
//! The same executable is the sandbox's init process: [`wolf_sandbox::main_if_init`] must run
//! before anything else (before any thread exists).

mod bench;
mod bench_serve;
mod bench_tests;
mod check;
mod config;
mod distributed;
mod keys_cli;
mod migrate;
mod run;
mod run_suite;
mod runtime_cli;
mod serve;
mod session_cli;
mod telemetry;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Wolf: run untrusted code fast in a strict Linux sandbox.
#[derive(Debug, Parser)]
#[command(name = "wolf", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Compile and run one program in a fresh sandbox; print the result as JSON.
    Run(Box<run::RunArgs>),
    /// API, durable queue and worker pool in one process (the embedded mode).
    Serve(Box<serve::ServeArgs>),
    /// Distributed mode: the HTTP API on NATS JetStream, PostgreSQL and S3.
    Api(Box<distributed::ApiArgs>),
    /// Distributed mode: a worker pool consuming the JetStream queue.
    Manager(Box<distributed::ManagerArgs>),
    /// Apply the PostgreSQL schema of the distributed mode.
    Migrate(migrate::MigrateArgs),
    /// Measure sandbox overhead against a bare spawn and bubblewrap; print and save the table.
    Bench(bench::BenchArgs),
    /// Print the effective configuration (file, then environment, then flags; secrets redacted).
    Config(Box<config::ConfigArgs>),
    /// Try sessions against a running Wolf: new, exec, repl, rm.
    Session(session_cli::SessionArgs),
    /// Runtimes from container images: import, list, inspect, rm.
    Runtime(runtime_cli::RuntimeArgs),
    /// API keys: create (the secret printed once), list, revoke.
    Keys(keys_cli::KeysArgs),
    /// Prove that every layer of the sandbox holds on this host (four real jobs); JSON out,
    /// exit 1 when one does not.
    Check(Box<check::CheckArgs>),
}

fn main() -> ExitCode {
    // Sandboxes prepared by `wolf serve` take their job over gRPC on a Unix socket.
    wolf_sandbox::init::register_job_server(wolf_worker::server::serve_one);
    wolf_sandbox::main_if_init();
    let cli = Cli::parse();
    wolf_telemetry::init(match cli.command {
        Command::Serve(_) => Some("wolf-serve"),
        Command::Api(_) => Some("wolf-api"),
        Command::Manager(_) => Some("wolf-manager"),
        _ => None,
    });
    let result = match cli.command {
        Command::Run(args) => run::main(*args),
        Command::Bench(args) => bench::main(args),
        Command::Session(args) => session_cli::main(args),
        Command::Runtime(args) => runtime_cli::main(args),
        Command::Keys(args) => keys_cli::main(args),
        Command::Serve(args) => serve::main(*args),
        Command::Migrate(args) => migrate::main(args),
        Command::Api(args) => distributed::api(*args),
        Command::Manager(args) => distributed::manager(*args),
        Command::Config(args) => config::main(*args),
        Command::Check(args) => check::main(*args),
    };
    wolf_telemetry::shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wolf: {e:#}");
            ExitCode::from(2)
        }
    }
}
