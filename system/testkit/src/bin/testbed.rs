//! `testbed up [--api N] [--managers M] [--dir DIR] [--containers]`: the distributed mode on
//! this machine.
//!
//! Starts nats-server (JetStream), PostgreSQL, the S3 server, `wolf migrate`, N `wolf api` and M
//! `wolf manager` processes on free loopback ports, prints one JSON line describing them, keeps
//! running without restarting anything, and stops everything on SIGINT or SIGTERM. The `wolf`
//! binary is taken from next to this one (or `$WOLF_BIN`); it is built if missing.
//!
//! `--containers`: the same stack as containers from the local images (`scripts/images.sh`) on
//! private networks, a 3-node NATS cluster instead of one server; the JSON line has the same
//! fields and also the containers and networks, which `chaos` acts on.

use std::path::PathBuf;

use wolf_testkit::Stack;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some("up") {
        eprintln!("usage: testbed up [--api N] [--managers M] [--dir DIR] [--containers]");
        std::process::exit(2);
    }
    let apis: usize = arg(&args, "--api").map(|v| v.parse()).transpose()?.unwrap_or(1);
    let managers: usize = arg(&args, "--managers").map(|v| v.parse()).transpose()?.unwrap_or(1);
    // Handlers (not a blocked mask, which the children would inherit) for the stop signals.
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let (mut int, mut term) = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        Ok::<_, std::io::Error>((signal(SignalKind::interrupt())?, signal(SignalKind::terminate())?))
    })?;
    let mut until_stopped = || {
        rt.block_on(async {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        })
    };
    if args.iter().any(|a| a == "--containers") {
        let opts = wolf_testkit::containers::Options::new(apis, managers);
        let stack = rt.block_on(wolf_testkit::containers::ContainerStack::up(&opts))?;
        println!("{}", stack.json());
        until_stopped();
        eprintln!("testbed: removing the containers");
        rt.block_on(stack.down());
        return Ok(());
    }
    // `cargo build --release -p wolf-testkit` builds this binary only: build `wolf` beside it.
    wolf_testkit::stack::build_wolf_binary(false)?;
    let tmp;
    let dir = match arg(&args, "--dir") {
        Some(d) => PathBuf::from(d),
        None => {
            tmp = tempfile::Builder::new().prefix("wolf-testbed-").tempdir()?;
            tmp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir)?;
    let stack = Stack::up(&dir, apis, managers)?;
    println!("{}", stack.json());
    until_stopped();
    eprintln!("testbed: stopping");
    drop(stack);
    Ok(())
}
