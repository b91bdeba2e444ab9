//! `wolf check`: prove on this host, before a service takes jobs, that every layer of the jail
//! holds — a container's entrypoint runs it and refuses to start the service when it fails
//! (deploy/docker/entrypoint.sh). Four real jobs through the real sandbox:
//!
//! 1. a probe that reports from inside: seccomp in filter mode, no_new_privs, an unprivileged
//!    identity, the sandbox's hostname, only a loopback interface, a read-only root, no host
//!    process in its /proc;
//! 2. a memory bomb under a 32 MB limit, which the memory cgroup must stop;
//! 3. 64 processes under a limit of 8, which the pids cgroup must stop;
//! 4. a process that stops itself (SIGSTOP), which the wall clock must end.
//!
//! Prints one JSON line (each check and what was seen) and exits 1 when any check fails.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde_json::json;
use wolf_core::Verdict;
use wolf_sandbox::LimitRequest;
use wolf_sandbox::runner::{Plan, RunOutput};
use wolf_sandbox::{RunRequest, Sandboxes};

use crate::config::{Config, ConfigArgs};

/// `wolf check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    cfg: ConfigArgs,
}

const PROBE: &str = r#"
grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status | tr -d '\t' | tr ':' '='
echo "uid=$(id -u 2>/dev/null || awk '/^Uid:/ {print $2}' /proc/self/status)"
echo "hostname=$(cat /proc/sys/kernel/hostname)"
echo "interfaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\n' ',')"
if (echo x > /usr/.wolf-check) 2>/dev/null; then echo "root=writable"; else echo "root=read-only"; fi
echo "processes=$(ls /proc | grep -c '^[0-9]')"
"#;

pub fn main(args: CheckArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let cfg = Config::load(&args.cfg)?;
    let cache = cfg.cache_dir(&cfg.data_dir);
    std::fs::create_dir_all(&cache).with_context(|| format!("create cache dir {}", cache.display()))?;
    let registry = crate::runtime_cli::registry(&cfg, &cfg.data_dir, &cache, |spec| spec.name == "bash")?;
    let sandboxes = Sandboxes::new(cfg.sandbox(registry.bind_paths(), None))
        .context("the sandbox cannot start on this host (a layer cannot be applied)")?;
    // The jobs run on a thread of their own: one the sandbox cannot end (its supervisor may
    // not signal it here) must fail the check, not hang it.
    let (tx, rx) = std::sync::mpsc::channel();
    let caps = cfg.caps;
    std::thread::spawn(move || {
        let _ = tx.send(jobs(&registry, &caps, &sandboxes));
    });
    let checks = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(checks) => checks?,
        Err(_) => vec![(
            "jobs end",
            false,
            "a job outlived its limits by half a minute: the supervisor cannot end it here (it needs CAP_KILL)"
                .to_string(),
        )],
    };
    let ok = checks.iter().all(|(_, ok, _)| *ok);
    let report = json!({
        "ok": ok,
        "checks": checks
            .iter()
            .map(|(name, ok, seen)| json!({"check": name, "ok": ok, "seen": seen}))
            .collect::<Vec<_>>(),
        "ms": started.elapsed().as_millis() as u64,
    });
    println!("{report}");
    for (name, ok, seen) in &checks {
        if !ok {
            eprintln!("wolf check: {name} does not hold here (seen: {seen:?})");
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

type Check = (&'static str, bool, String);

/// The check's jobs, each judged.
fn jobs(
    registry: &wolf_sandbox::Registry,
    caps: &wolf_sandbox::Caps,
    sandboxes: &Sandboxes,
) -> anyhow::Result<Vec<Check>> {
    let run = |code: &str, limits: LimitRequest| -> anyhow::Result<RunOutput> {
        let req = RunRequest {
            engine: "bash".into(),
            code: code.as_bytes().to_vec(),
            limits,
            ..Default::default()
        };
        let plan = Plan::new(registry, caps, &req)?;
        let mut sb = sandboxes.prepare().context("prepare a sandbox")?;
        Ok(plan.run(&mut sb, 0.0))
    };
    let probe = run(PROBE, LimitRequest::default())?;
    let seen: std::collections::BTreeMap<String, String> = String::from_utf8_lossy(&probe.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let get = |k: &str| seen.get(k).map(String::as_str).unwrap_or("");
    let mut checks = vec![
        (
            "probe ran",
            probe.result.verdict == Verdict::Accepted,
            format!(
                "{:?} {}",
                probe.result.verdict,
                probe.result.error.as_deref().unwrap_or_default()
            ),
        ),
        ("seccomp filter", get("Seccomp") == "2", get("Seccomp").to_string()),
        ("no_new_privs", get("NoNewPrivs") == "1", get("NoNewPrivs").to_string()),
        (
            "unprivileged",
            !get("uid").is_empty() && get("uid") != "0",
            get("uid").to_string(),
        ),
        ("own hostname", get("hostname") == "wolf", get("hostname").to_string()),
        (
            "loopback only",
            get("interfaces") == "lo,",
            get("interfaces").to_string(),
        ),
        ("read-only root", get("root") == "read-only", get("root").to_string()),
        (
            "own pid namespace",
            get("processes").parse::<u32>().is_ok_and(|n| n <= 8),
            get("processes").to_string(),
        ),
    ];
    // A job under a limit, and whether the limit held.
    let limited = |name: &'static str, code: &str, limits: LimitRequest, held: fn(&RunOutput) -> bool| {
        run(code, limits).map(|out| (name, held(&out), format!("{:?}", out.result.verdict)))
    };
    checks.push(limited(
        "memory cgroup",
        "a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done",
        LimitRequest {
            memory_mb: Some(32),
            wall_time_ms: Some(10_000),
            ..Default::default()
        },
        |out| out.result.verdict == Verdict::MemoryLimitExceeded,
    )?);
    checks.push(limited(
        "pids cgroup",
        // Unlimited, 64 half-second sleeps end in about 0.6 s; at 8 processes bash's forks
        // fail and it waits before retrying them, past the wall clock.
        "for i in $(seq 1 64); do sleep 0.5 & done 2>/dev/null; wait; echo survived",
        LimitRequest {
            pids: Some(8),
            wall_time_ms: Some(1_500),
            ..Default::default()
        },
        |out| !String::from_utf8_lossy(&out.stdout).contains("survived") || out.result.verdict != Verdict::Accepted,
    )?);
    // A process that stops itself: only the supervisor's kill at the wall clock ends it.
    checks.push(limited(
        "wall clock",
        "kill -STOP $$; echo resumed",
        LimitRequest {
            wall_time_ms: Some(500),
            ..Default::default()
        },
        |out| out.result.verdict == Verdict::TimeLimitExceeded,
    )?);
    Ok(checks)
}
