//! `loadgen`: open-loop load against Wolf, followed to every result, reported per stage.
//!
//! With no arguments it boots an embedded `wolf serve` on a free port and offers 5 jobs/s (the
//! seed's C++ hello world and a python job) for 60 s after a 5 s warmup, then prints the
//! latency table in the seed's format and writes it to `results/`. `--target URL` drives an
//! existing deployment; `--testbed` boots the distributed testbed; `--sweep` steps the rate up
//! until refusals appear.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use serde_json::json;

use loadgen::attack::{self, END_TO_END, Plan, Recorder};
use loadgen::target::Target;
use loadgen::{mix, report};

/// Open-loop load generator for Wolf.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version)]
struct Args {
    /// Drive an existing deployment at this base URL instead of booting one.
    #[arg(long, conflicts_with = "testbed")]
    target: Option<String>,
    /// Boot the distributed testbed (nats-server, PostgreSQL, S3, wolf api + manager).
    #[arg(long)]
    testbed: bool,
    /// Testbed: API processes (the load goes to the first).
    #[arg(long, default_value_t = 1)]
    apis: usize,
    /// Testbed: manager processes.
    #[arg(long, default_value_t = 1)]
    managers: usize,
    /// Workers of the booted server or of each manager (default: the number of CPUs).
    #[arg(long)]
    workers: Option<usize>,
    /// Pending bound of the booted server (default: the server's; 20 with --sweep).
    #[arg(long)]
    max_pending: Option<u64>,
    /// Arrivals per second (the first step with --sweep).
    #[arg(long, default_value_t = 5.0)]
    rps: f64,
    /// Measured duration (per step with --sweep), e.g. 60s, 2m, 500ms.
    #[arg(long, value_parser = wolf_testkit::parse_duration)]
    duration: Option<Duration>,
    /// Arrivals run before measuring (per step with --sweep).
    #[arg(long, value_parser = wolf_testkit::parse_duration)]
    warmup: Option<Duration>,
    /// Job mix: name[=weight],... of cpp, python, c, bash.
    #[arg(long, default_value = "cpp,python")]
    mix: String,
    /// Step the rate up (x2 per step) until refusals appear.
    #[arg(long)]
    sweep: bool,
    /// Highest rate a sweep tries.
    #[arg(long, default_value_t = 640.0)]
    sweep_max: f64,
    /// Goose users, i.e. most jobs in flight (default: enough for the rate).
    #[arg(long)]
    users: Option<usize>,
    /// Where the results go.
    #[arg(long, default_value = "results")]
    out: PathBuf,
    /// Print only; write nothing.
    #[arg(long)]
    no_write: bool,
}

/// Each job of the mix once, waited for: fails early and clearly when a toolchain is absent,
/// and warms what a first job prepares (the C++ precompiled header).
async fn preflight(client: &reqwest::Client, url: &str, mix: &[(mix::Job, u32)]) -> anyhow::Result<()> {
    for (job, _) in mix {
        let r = client
            .post(format!("{url}/job?wait=true&timeout=120"))
            .json(&job.body)
            .send()
            .await?;
        let status = r.status();
        let rec: serde_json::Value = r.json().await.unwrap_or_default();
        anyhow::ensure!(
            status.is_success() && rec["status"] == "Completed" && rec["result"]["verdict"] == "Accepted",
            "the {} job does not run on {url} ({status}): {rec}",
            job.name
        );
    }
    Ok(())
}

fn users_for(rps: f64, users: Option<usize>) -> usize {
    users.unwrap_or_else(|| ((rps * 4.0).ceil() as usize).clamp(16, 4000))
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let mix = mix::parse(&args.mix)?;
    anyhow::ensure!(args.rps > 0.0 && args.rps.is_finite(), "--rps must be positive");
    let duration = args.duration.unwrap_or(if args.sweep {
        Duration::from_secs(10)
    } else {
        Duration::from_secs(60)
    });
    let warmup = args.warmup.unwrap_or(if args.sweep {
        Duration::from_secs(2)
    } else {
        Duration::from_secs(5)
    });
    anyhow::ensure!(duration > Duration::ZERO, "--duration must be positive");
    let max_pending = args.max_pending.or(args.sweep.then_some(20));
    let mut target = match &args.target {
        Some(u) => Target::Remote(u.clone()),
        None if args.testbed => {
            eprintln!(
                "loadgen: booting the testbed ({} api, {} manager)",
                args.apis, args.managers
            );
            Target::testbed(args.apis, args.managers, args.workers, max_pending)?
        }
        None => {
            eprintln!("loadgen: booting wolf serve");
            Target::embedded(args.workers, max_pending)?
        }
    };
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(150))
        .default_headers(loadgen::attack::key_headers())
        .build()?;
    target.ready(&client, Duration::from_secs(120)).await?;
    let url = target.url();
    preflight(&client, &url, &mix).await?;
    let machine = report::machine();
    let names: Vec<String> = mix.iter().map(|(j, w)| format!("{}={w}", j.name)).collect();
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    let plan = |rps: f64| Plan {
        url: url.clone(),
        rps,
        warmup,
        duration,
        mix: mix.clone(),
        users: users_for(rps, args.users),
        follow_timeout: Duration::from_secs(120),
    };
    let secs = duration.as_secs_f64();
    if !args.sweep {
        eprintln!(
            "loadgen: {} jobs/s for {secs:.0} s after {:.0} s warmup against {url} ({})",
            args.rps,
            warmup.as_secs_f64(),
            target.mode()
        );
        let rec = attack::run(plan(args.rps)).await?;
        let rows = report::rows(&rec);
        let title = format!(
            "Wolf {} at {} jobs/s ({}), {secs:.0} s, open loop",
            target.mode(),
            args.rps,
            names.join(",")
        );
        let table = report::table(&rows);
        let summary = report::summary(&rec, secs, args.rps);
        println!("{title}\n\n{table}\n{summary}{}", report::machine_line(&machine));
        if !args.no_write {
            let base = report::base(&args.out, target.mode(), args.rps, false);
            write(
                &base,
                &title,
                &command,
                &table,
                &summary,
                &machine,
                &rows,
                &rec,
                &args,
                &report::svg(&rows, &title),
            )?;
        }
        return Ok(rec.clean());
    }
    // Sweep.
    let mut steps = Vec::new();
    let mut rps = args.rps;
    let mut ok = true;
    while rps <= args.sweep_max {
        eprintln!("loadgen: sweep step {rps} jobs/s for {secs:.0} s");
        let rec = attack::run(plan(rps)).await?;
        let e2e = &rec.hist[END_TO_END];
        let q = |h: &hdrhistogram::Histogram<u64>, p: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(p) as f64 / 1000.0
            }
        };
        let kinds = rec.error_kinds();
        let errors: u64 = kinds.values().sum();
        let step = json!({
            "offered": rps,
            "sent": rec.sent,
            "accepted": rec.accepted,
            "completedPerSec": rec.completed as f64 / secs,
            "refused": rec.refused,
            "refusedPct": if rec.sent > 0 { 100.0 * rec.refused as f64 / rec.sent as f64 } else { 0.0 },
            "errors": errors,
            "errorKinds": kinds,
            "acceptedP50Ms": q(e2e, 0.5),
            "acceptedP99Ms": q(e2e, 0.99),
            "refusalP99Ms": q(&rec.refusal, 0.99),
            "lateStarts": rec.late,
        });
        eprintln!("  {step}");
        let refused = rec.refused > 0;
        ok &= errors == 0;
        steps.push(step);
        if refused {
            break;
        }
        rps *= 2.0;
    }
    let mut table = String::from(
        "| Offered (jobs/s) | Sent | Completed (jobs/s) | Refused | Errors | Accepted p50 (ms) | Accepted p99 (ms) | Refusal p99 (ms) |\n|---|---|---|---|---|---|---|---|\n",
    );
    for s in &steps {
        table.push_str(&format!(
            "| {} | {} | {:.1} | {} ({:.1}%) | {} | {:.1} | {:.1} | {:.2} |\n",
            s["offered"],
            s["sent"],
            s["completedPerSec"].as_f64().unwrap_or(0.0),
            s["refused"],
            s["refusedPct"].as_f64().unwrap_or(0.0),
            s["errors"],
            s["acceptedP50Ms"].as_f64().unwrap_or(0.0),
            s["acceptedP99Ms"].as_f64().unwrap_or(0.0),
            s["refusalP99Ms"].as_f64().unwrap_or(0.0),
        ));
    }
    let title = format!(
        "Wolf {} sweep ({}), {secs:.0} s per step, pending bound {}",
        target.mode(),
        names.join(","),
        max_pending
            .map(|p| p.to_string())
            .unwrap_or_else(|| "of the target".into())
    );
    println!("{title}\n\n{table}\n{}", report::machine_line(&machine));
    if !args.no_write {
        let base = report::base(&args.out, target.mode(), args.rps, true);
        std::fs::create_dir_all(&args.out)?;
        let md = format!(
            "# {title}\n\n`{command}`\n\nMachine: {}\n\n{table}\nLatencies count from each arrival's due time (open loop, coordinated omission corrected).\n",
            report::machine_line(&machine)
        );
        std::fs::write(base.with_extension("md"), md)?;
        let j = json!({"title": title, "command": command, "machine": machine, "steps": steps});
        std::fs::write(base.with_extension("json"), serde_json::to_string_pretty(&j)?)?;
        eprintln!("loadgen: wrote {}.{{md,json}}", base.display());
    }
    Ok(ok)
}

#[allow(clippy::too_many_arguments)]
fn write(
    base: &std::path::Path,
    title: &str,
    command: &str,
    table: &str,
    summary: &str,
    machine: &serde_json::Value,
    rows: &[report::Row],
    rec: &Recorder,
    args: &Args,
    svg: &str,
) -> anyhow::Result<()> {
    if let Some(d) = base.parent() {
        std::fs::create_dir_all(d)?;
    }
    let name = base.file_name().and_then(|n| n.to_str()).unwrap_or("results");
    let md = format!(
        "# {title}\n\n`{command}`\n\nMachine: {}\n\n{table}\n{summary}\nStage rows come from each job record's `timings` (server side); `Submit (client)` is due time to \
         the POST's answer and `End-to-end` due time to the final record being readable (client side). Arrivals are \
         scheduled open loop; latencies count from the due time, so a stall is not hidden (coordinated omission \
         corrected).\n\n![percentiles per stage]({name}.svg)\n",
        report::machine_line(machine)
    );
    std::fs::write(base.with_extension("md"), md)?;
    let j = json!({
        "title": title,
        "command": command,
        "machine": machine,
        "rps": args.rps,
        "mix": args.mix,
        "rows": rows,
        "sent": rec.sent,
        "accepted": rec.accepted,
        "completed": rec.completed,
        "refused": rec.refused,
        "errors": rec.error_kinds(),
        "lateStarts": rec.late,
        "maxLateMs": rec.max_late_us as f64 / 1000.0,
    });
    std::fs::write(base.with_extension("json"), serde_json::to_string_pretty(&j)?)?;
    std::fs::write(base.with_extension("svg"), svg)?;
    eprintln!("loadgen: wrote {}.{{md,json,svg}}", base.display());
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("loadgen: some jobs failed (see errors above)");
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}
