//! `chaos <fault> --every 5s --for 60s`: inject a fault on a schedule into the stack that
//! `testbed up` describes (its JSON line: `--stack FILE`, `-` or `$WOLF_TESTBED` for stdin).
//! Prints one JSON line per action (inject, heal, skip) with its time.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use chaos::{Cluster, ContainerCluster, Fault, Log, ProcCluster, Rng};
use clap::Parser;
use wolf_testkit::parse_duration;

/// Fault injection against a running Wolf stack.
#[derive(Debug, Parser)]
#[command(name = "chaos", version)]
struct Args {
    /// kill-worker, kill-template, kill-manager, kill-api, restart-nats, restart-postgres,
    /// restart-s3, pause-nats, pause-postgres, pause-s3, random; on a stack of containers also
    /// cut-{api,manager}-{nats,postgres,s3} (a real partition) and kill-nats-node.
    fault: Fault,
    /// Time between injections.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    every: Duration,
    /// How long to keep injecting.
    #[arg(long = "for", default_value = "60s", value_parser = parse_duration)]
    total: Duration,
    /// How long a restarted or paused dependency stays down.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    down: Duration,
    /// File holding the testbed's JSON line (`-`: stdin).
    #[arg(long, env = "WOLF_TESTBED", default_value = "-")]
    stack: String,
    /// Seed of the random choices (printed; replay a run with it).
    #[arg(long)]
    seed: Option<u64>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let text = if args.stack == "-" {
        let mut s = String::new();
        let _ = std::io::stdin().read_to_string(&mut s);
        s
    } else {
        match std::fs::read_to_string(&args.stack) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("chaos: read {}: {e}", args.stack);
                return ExitCode::from(2);
            }
        }
    };
    // The JSON line is the last line that parses (testbed may log before it).
    let Some(v) = text
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
    else {
        eprintln!("chaos: no JSON line from `testbed up` in {}", args.stack);
        return ExitCode::from(2);
    };
    // A stack of containers (`testbed up --containers`) is acted on through Docker.
    let made: anyhow::Result<Box<dyn Cluster>> = match ContainerCluster::from_testbed(&v) {
        Ok(Some(c)) => Ok(Box::new(c)),
        Ok(None) => ProcCluster::from_testbed(&v).map(|c| Box::new(c) as Box<dyn Cluster>),
        Err(e) => Err(e),
    };
    let mut cluster = match made {
        Ok(c) => c,
        Err(e) => {
            eprintln!("chaos: {e:#}");
            return ExitCode::from(2);
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    eprintln!(
        "chaos: {} every {:?} for {:?} (down {:?}), seed {seed}; managers {:?}, apis {:?}",
        args.fault,
        args.every,
        args.total,
        args.down,
        cluster.managers(),
        cluster.apis()
    );
    let mut log = Log::new(true);
    let schedule = chaos::Schedule {
        fault: args.fault,
        every: args.every,
        total: args.total,
        down: args.down,
    };
    chaos::run_schedule(cluster.as_mut(), schedule, &mut Rng::new(seed), &mut log, &|| false);
    eprintln!("chaos: {} injections", log.injected());
    ExitCode::SUCCESS
}
