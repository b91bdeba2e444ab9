//! The containers provider (`--provider containers`): every component a container started by
//! testcontainers from the local images, on private networks (a 3-node NATS cluster with the
//! queue replicated on every node, PostgreSQL, S3, APIs and managers in the non-privileged
//! settings of docs/containers.md), and faults that act on containers and networks: a real
//! partition (one container disconnected from one dependency's network), a cluster node lost,
//! a manager's host killed with everything in it.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chaos::{Cluster, ContainerCluster, Fault, Role, Schedule, Server};
use loadgen::attack;
use serde_json::{Value, json};
use wolf_testkit::containers::{ContainerStack, Options};

use crate::{Ctx, Outcome, Run, plan, preflight, steady_load, targets_check, under_chaos, verify};

/// The scenarios of this provider.
pub const SCENARIOS: [(&str, &str, Run); 6] = [
    (
        "steady",
        "containers, no faults: the same latency targets as the processes",
        steady,
    ),
    (
        "manager-cut-nats",
        "a manager running a job cut off from NATS (its network) for 6 s, then reconnected",
        manager_cut_nats,
    ),
    (
        "api-cut-postgres",
        "the API cut off from PostgreSQL for 5 s under load",
        api_cut_postgres,
    ),
    (
        "nats-node-lost",
        "the NATS node leading the job stream killed -9 for 8 s, then started on its data",
        nats_node_lost,
    ),
    (
        "manager-host-kill",
        "a manager's container killed mid-job (its sandboxes with it), started after 4 s",
        manager_host_kill,
    ),
    (
        "random",
        "a random container fault every 4 s (kills, pauses, partitions, a NATS node)",
        random,
    ),
];

/// A stack of containers and the cluster handle chaos acts on; removed when dropped.
struct Ct {
    stack: Option<ContainerStack>,
    cluster: ContainerCluster,
    url: String,
    rt: tokio::runtime::Handle,
}

impl Drop for Ct {
    fn drop(&mut self) {
        if let Some(s) = self.stack.take() {
            self.rt.block_on(s.down());
        }
    }
}

impl Ct {
    fn up(ctx: &Ctx, apis: usize, managers: usize) -> anyhow::Result<Self> {
        let mut opts = Options::new(apis, managers);
        opts.env = [("WOLF_WORKERS", "2"), ("WOLF_LEASE_SECS", "3")]
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .to_vec();
        let started = Instant::now();
        let stack = ctx.rt.block_on(ContainerStack::up(&opts))?;
        eprintln!("  stack of containers up in {:.1} s", started.elapsed().as_secs_f64());
        let line: Value = serde_json::from_str(&stack.json())?;
        let url = line["api"][0].as_str().unwrap_or_default().to_string();
        let ct = Self {
            cluster: ContainerCluster::from_testbed(&line)?.ok_or_else(|| anyhow::anyhow!("no containers"))?,
            stack: Some(stack),
            url,
            rt: ctx.rt.handle().clone(),
        };
        Ok(ct)
    }

    fn stack(&self) -> &ContainerStack {
        self.stack.as_ref().expect("up")
    }

    /// The hosts (container ids, 12 characters) whose managers ran the jobs of a few rounds
    /// of 8 submissions, until `want` hosts were seen or 5 rounds passed.
    fn ran_on(&self, ctx: &Ctx, want: usize) -> anyhow::Result<BTreeSet<String>> {
        let mut hosts = BTreeSet::new();
        for round in 0..5 {
            let jobs: Vec<Value> = ctx.rt.block_on(async {
                let sends = (0..8).map(|i| {
                    ctx.client
                        .post(format!("{}/job?wait=true&timeout=60", self.url))
                        .json(&json!({"code": format!("print({round} * 8 + {i})"), "executionEngine": "python"}))
                        .send()
                });
                let mut out = Vec::new();
                for r in futures::future::join_all(sends).await {
                    out.push(r?.json::<Value>().await?);
                }
                Ok::<_, reqwest::Error>(out)
            })?;
            for j in jobs.iter().filter(|j| j["result"]["verdict"] == "Accepted") {
                for a in j["attempts"].as_array().into_iter().flatten() {
                    // worker: <host>/<manager pid>/w<slot>; a container's host name is its id.
                    if let Some(h) = a["worker"].as_str().and_then(|w| w.split('/').next()) {
                        hosts.insert(h.to_string());
                    }
                }
            }
            if hosts.len() >= want {
                break;
            }
        }
        Ok(hosts)
    }

    fn manager_host(&self, i: usize) -> String {
        self.stack().managers[i].id.chars().take(12).collect()
    }

    /// Wait up to `limit` until manager `i` runs a job (a sandbox with a program in it).
    fn until_busy(&self, i: usize, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            let pid = self.cluster.managers()[i];
            if pid > 0 && !chaos::busy_workers(&[pid]).is_empty() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

fn steady(ctx: &Ctx, o: &mut Outcome) -> anyhow::Result<()> {
    let mut ct = Ct::up(ctx, 1, 1)?;
    let url = ct.url.clone();
    steady_load(ctx, &url, &mut ct.cluster, o)
}

/// Load on the first API while `fault` is applied once by `act` from 2 s on; then verify at
/// least once and the `faults` targets.
fn with_fault(
    ctx: &Ctx,
    ct: &mut Ct,
    o: &mut Outcome,
    secs: u64,
    act: &mut dyn FnMut(&mut Ct, &mut chaos::Log),
) -> anyhow::Result<()> {
    let url = ct.url.clone();
    preflight(ctx, &url, "python,sleep")?;
    let load = ctx.rt.spawn(attack::run(plan(&url, 4.0, secs, "python,sleep")?));
    std::thread::sleep(Duration::from_secs(2));
    let mut log = chaos::Log::new(false);
    act(ct, &mut log);
    o.check(
        format!("the fault was injected ({} times)", log.injected()),
        log.injected() > 0,
    );
    let healed_ok = !log.events.iter().any(|e| e.detail.contains("FAILED"));
    o.check("every fault was healed", healed_ok);
    o.chaos = log.events;
    let rec = ctx.rt.block_on(load)??;
    let fives = rec.submit_failures.get(&500).copied().unwrap_or(0);
    o.check(format!("no 500 answers ({fives})"), fives == 0);
    verify(ctx, &url, &rec, o);
    targets_check(ctx, "faults", o);
    Ok(())
}

/// Inject `fault` on index `i` (a fixed target, not a random one), hold it `down`, heal.
fn once(ct: &mut Ct, log: &mut chaos::Log, fault: Fault, i: usize, down: Duration) {
    let injected = chaos::inject_at(&mut ct.cluster, fault, i, log);
    std::thread::sleep(down);
    if let Some(what) = injected {
        chaos::heal(&mut ct.cluster, what, log);
    }
}

fn manager_cut_nats(ctx: &Ctx, o: &mut Outcome) -> anyhow::Result<()> {
    let mut ct = Ct::up(ctx, 1, 2)?;
    let mut busy = false;
    with_fault(ctx, &mut ct, o, 14, &mut |ct, log| {
        busy = ct.until_busy(0, Duration::from_secs(5));
        once(
            ct,
            log,
            Fault::Cut(Role::Manager, Server::Nats),
            0,
            Duration::from_secs(6),
        );
    })?;
    o.check("manager 0 was running a job when it was cut off", busy);
    let host = ct.manager_host(0);
    let hosts = ct.ran_on(ctx, 2)?;
    o.check(
        format!("manager 0 runs jobs again after the partition healed (ran on {hosts:?})"),
        hosts.contains(&host),
    );
    Ok(())
}

fn api_cut_postgres(ctx: &Ctx, o: &mut Outcome) -> anyhow::Result<()> {
    let mut ct = Ct::up(ctx, 1, 1)?;
    with_fault(ctx, &mut ct, o, 14, &mut |ct, log| {
        once(
            ct,
            log,
            Fault::Cut(Role::Api, Server::Postgres),
            0,
            Duration::from_secs(5),
        );
    })?;
    o.counts["submitFailures"] = json!(o.counts["notAcceptedDuringOutage"]);
    Ok(())
}

fn nats_node_lost(ctx: &Ctx, o: &mut Outcome) -> anyhow::Result<()> {
    let mut ct = Ct::up(ctx, 1, 1)?;
    let leader = ct.cluster.nats_stream_leader();
    o.check(
        format!("the job stream has a leader (node {leader:?}) among 3 replicas"),
        leader.is_some(),
    );
    let node = leader.unwrap_or(0);
    with_fault(ctx, &mut ct, o, 16, &mut |ct, log| {
        once(ct, log, Fault::KillNatsNode, node, Duration::from_secs(8));
    })?;
    let after = ct.cluster.nats_stream_leader();
    o.check(
        format!("the stream has a leader again (node {after:?})"),
        after.is_some(),
    );
    Ok(())
}

fn manager_host_kill(ctx: &Ctx, o: &mut Outcome) -> anyhow::Result<()> {
    let mut ct = Ct::up(ctx, 1, 2)?;
    let mut busy = false;
    with_fault(ctx, &mut ct, o, 14, &mut |ct, log| {
        busy = ct.until_busy(0, Duration::from_secs(5));
        once(ct, log, Fault::KillManager, 0, Duration::from_secs(4));
    })?;
    o.check("manager 0 was running a job when its container was killed", busy);
    let retries = o.counts["retries"].as_u64().unwrap_or(0);
    o.check(format!("its jobs ran again elsewhere ({retries} retries)"), retries > 0);
    let host = ct.manager_host(0);
    let hosts = ct.ran_on(ctx, 2)?;
    o.check(
        format!("manager 0 runs jobs again after its restart (ran on {hosts:?})"),
        hosts.contains(&host),
    );
    Ok(())
}

fn random(ctx: &Ctx, o: &mut Outcome) -> anyhow::Result<()> {
    let mut ct = Ct::up(ctx, 1, 2)?;
    let url = ct.url.clone();
    preflight(ctx, &url, "python,sleep")?;
    let schedule = Schedule {
        fault: Fault::Random,
        every: Duration::from_secs(4),
        total: Duration::from_secs(16),
        down: Duration::from_secs(2),
    };
    let rec = under_chaos(
        ctx,
        plan(&url, 4.0, 20, "python,sleep")?,
        &mut ct.cluster,
        Some(schedule),
        o,
    )?;
    let fives = rec.submit_failures.get(&500).copied().unwrap_or(0);
    o.check(format!("no 500 answers ({fives})"), fives == 0);
    verify(ctx, &url, &rec, o);
    Ok(())
}
