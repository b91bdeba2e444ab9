//! One open-loop run through goose.
//!
//! Arrivals are scheduled, not reacted to: arrival `i` is due at `t0 + i / rps`. Each goose
//! user claims the next arrival, sleeps until it is due, submits it and follows the job to its
//! result (`GET /job/{id}?wait=true`, a long poll). With enough users the schedule is met; when
//! every user is busy an arrival starts late, and its latencies are still measured from the
//! time it was due (coordinated omission corrected: a stalled server cannot hide its stall by
//! slowing the generator). How late arrivals started is reported.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use goose::prelude::*;
use hdrhistogram::Histogram;
use serde_json::Value;
use tokio::time::Instant;

use crate::mix::{Job, pick};

/// The stages read from each record's `timings`, in table order: (JSON field, row label).
pub const STAGES: [(&str, &str); 7] = [
    ("workerCreation", "Worker creation"),
    ("queueWait", "Queue wait"),
    ("execution", "Worker execution"),
    ("storage", "Storage uploads"),
    ("server", "Wolf server"),
    ("workerAcquire", "Worker acquire"),
    ("compile", "Compile (compiled jobs)"),
];
/// Client-side rows.
pub const SUBMIT: &str = "Submit (client)";
/// Due time until the final record was readable.
pub const END_TO_END: &str = "End-to-end";
/// End-to-end minus the time in the sandbox (compile + execution), per job.
pub const ORCHESTRATION: &str = "Orchestration (end-to-end − sandbox)";

/// What one run is asked to do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Base URL of the API.
    pub url: String,
    /// Arrivals per second.
    pub rps: f64,
    /// Arrivals in this first part are run but not measured.
    pub warmup: Duration,
    /// The measured part.
    pub duration: Duration,
    /// Weighted jobs.
    pub mix: Vec<(Job, u32)>,
    /// Goose users (most jobs in flight at once).
    pub users: usize,
    /// How long to follow one job before calling it lost.
    pub follow_timeout: Duration,
}

/// Latencies (µs) and counts of the measured part.
#[derive(Debug)]
pub struct Recorder {
    /// Per row label.
    pub hist: BTreeMap<&'static str, Histogram<u64>>,
    /// 503/429 answers: how fast a refusal came.
    pub refusal: Histogram<u64>,
    /// Arrivals sent in the measured part.
    pub sent: u64,
    /// 2xx answers.
    pub accepted: u64,
    /// Followed to Completed with the expected output.
    pub completed: u64,
    /// 503 or 429.
    pub refused: u64,
    /// Submissions answered neither 2xx nor 503/429, by status (0: no answer at all). Not
    /// accepted, so not lost; against a healthy deployment each is a failure.
    pub submit_failures: BTreeMap<u16, u64>,
    /// Arrivals never sent: goose stopped its users first (all were following jobs).
    pub not_sent: u64,
    /// Accepted jobs that did not end Completed with the expected output, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Arrivals that started more than 5 ms after they were due.
    pub late: u64,
    /// The latest start, µs after due.
    pub max_late_us: u64,
    /// Every job answered 2xx, warmup included, with the name of its kind (for verification).
    pub accepted_ids: Vec<(String, &'static str)>,
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

impl Recorder {
    fn new() -> Self {
        let mut h = BTreeMap::new();
        for (_, label) in STAGES {
            h.insert(label, hist());
        }
        h.insert(SUBMIT, hist());
        h.insert(END_TO_END, hist());
        h.insert(ORCHESTRATION, hist());
        Self {
            hist: h,
            refusal: hist(),
            sent: 0,
            accepted: 0,
            completed: 0,
            refused: 0,
            submit_failures: BTreeMap::new(),
            not_sent: 0,
            errors: BTreeMap::new(),
            late: 0,
            max_late_us: 0,
            accepted_ids: Vec::new(),
        }
    }

    fn record(&mut self, label: &'static str, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, 3_600_000_000);
        if let Some(h) = self.hist.get_mut(label) {
            h.saturating_record(us);
        }
    }

    fn error(&mut self, kind: String) {
        *self.errors.entry(kind).or_default() += 1;
    }

    /// Nothing went wrong: every arrival was sent, answered 2xx or refused, and every accepted
    /// job completed correctly.
    pub fn clean(&self) -> bool {
        self.errors.is_empty() && self.submit_failures.is_empty() && self.not_sent == 0
    }

    /// Every kind of failure in one list, for the report: job errors, submissions answered
    /// otherwise than 2xx or a refusal, arrivals never sent.
    pub fn error_kinds(&self) -> BTreeMap<String, u64> {
        let mut all = self.errors.clone();
        for (status, n) in &self.submit_failures {
            all.insert(format!("submit answered {status}"), *n);
        }
        if self.not_sent > 0 {
            all.insert("never started (goose stopped first)".into(), self.not_sent);
        }
        all
    }
}

struct Shared {
    plan: Plan,
    arrivals: u64,
    t0: OnceLock<Instant>,
    next: AtomicU64,
    rec: Mutex<Recorder>,
}

impl Shared {
    /// The next arrival and when it is due; None once the schedule is exhausted.
    fn claim(&self) -> Option<(u64, Instant)> {
        let t0 = *self.t0.get_or_init(|| Instant::now() + Duration::from_millis(50));
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        (i < self.arrivals).then(|| (i, t0 + Duration::from_secs_f64(i as f64 / self.plan.rps)))
    }

    fn measured(&self, due: Instant) -> bool {
        self.t0.get().is_some_and(|t0| due >= *t0 + self.plan.warmup)
    }

    fn with<R>(&self, f: impl FnOnce(&mut Recorder) -> R) -> R {
        f(&mut self.rec.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

async fn body(resp: reqwest::Response) -> (u16, Value) {
    let status = resp.status().as_u16();
    (status, resp.json::<Value>().await.unwrap_or(Value::Null))
}

/// One arrival: wait until due, submit, follow to the result, record.
async fn arrival(user: &mut GooseUser, sh: &Shared) -> TransactionResult {
    let Some((i, due)) = sh.claim() else {
        // The schedule is done: idle until goose stops the users.
        tokio::time::sleep(Duration::from_millis(200)).await;
        return Ok(());
    };
    tokio::time::sleep_until(due).await;
    let measured = sh.measured(due);
    let late = Instant::now().saturating_duration_since(due);
    let job = pick(&sh.plan.mix, i);
    if measured {
        sh.with(|r| {
            r.sent += 1;
            if late > Duration::from_millis(5) {
                r.late += 1;
            }
            r.max_late_us = r.max_late_us.max(late.as_micros() as u64);
        });
    }
    let submitted = match user.post_json("/job", &job.body).await {
        Ok(g) => match g.response {
            Ok(resp) => body(resp).await,
            Err(e) => (0, Value::String(e.to_string())),
        },
        Err(e) => (0, Value::String(e.to_string())),
    };
    let answered = Instant::now();
    let id = match submitted {
        (200 | 202, rec) if rec["id"].is_string() => rec["id"].as_str().unwrap_or_default().to_string(),
        (503 | 429, _) => {
            if measured {
                sh.with(|r| {
                    r.refused += 1;
                    r.refusal.saturating_record((answered - due).as_micros().max(1) as u64);
                });
            }
            return Ok(());
        }
        (status, _) => {
            if measured {
                sh.with(|r| *r.submit_failures.entry(status).or_default() += 1);
            }
            return Ok(());
        }
    };
    sh.with(|r| {
        r.accepted_ids.push((id.clone(), job.name));
        if measured {
            r.accepted += 1;
            r.record(SUBMIT, answered - due);
        }
    });
    let path = format!("/job/{id}?wait=true&timeout=30");
    let deadline = due + sh.plan.follow_timeout;
    let fin = loop {
        let req = GooseRequest::builder()
            .method(GooseMethod::Get)
            .path(path.as_str())
            .name("/job/{id}?wait=true")
            .build();
        let got = match user.request(req).await {
            Ok(g) => match g.response {
                Ok(resp) => body(resp).await,
                Err(e) => (0, Value::String(e.to_string())),
            },
            Err(e) => (0, Value::String(e.to_string())),
        };
        match got {
            (200, rec) if matches!(rec["status"].as_str(), Some("Completed" | "Failed")) => break Some(rec),
            _ if Instant::now() >= deadline => break None,
            (200, _) => {}
            // The API may be briefly away (chaos): look again shortly.
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let done = Instant::now();
    if !measured {
        return Ok(());
    }
    sh.with(|r| match fin {
        None => r.error("not final in time".into()),
        Some(rec) => {
            r.record(END_TO_END, done - due);
            if let Some(t) = rec.get("timings") {
                let sandbox_ms = t["compile"].as_f64().unwrap_or(0.0) + t["execution"].as_f64().unwrap_or(0.0);
                let e2e_ms = (done - due).as_secs_f64() * 1000.0;
                r.record(
                    ORCHESTRATION,
                    Duration::from_secs_f64((e2e_ms - sandbox_ms).max(0.0) / 1000.0),
                );
                for (field, label) in STAGES {
                    // Interpreted jobs have no compile step: it is not a 0 ms sample.
                    if let Some(ms) = t[field].as_f64().filter(|ms| field != "compile" || *ms > 0.0) {
                        r.record(label, Duration::from_secs_f64(ms.max(0.0) / 1000.0));
                    }
                }
            }
            let verdict = rec["result"]["verdict"].as_str().unwrap_or("none");
            if rec["status"] == "Completed" && verdict == "Accepted" {
                r.completed += 1;
            } else {
                r.error(format!(
                    "{} {} ({})",
                    rec["status"].as_str().unwrap_or("?"),
                    verdict,
                    job.name
                ));
            }
        }
    });
    Ok(())
}

/// `Authorization: Bearer $WOLF_API_KEY` when that is set (a deployment that requires keys).
pub fn key_headers() -> reqwest::header::HeaderMap {
    let mut h = reqwest::header::HeaderMap::new();
    if let Some(v) = std::env::var("WOLF_API_KEY")
        .ok()
        .filter(|k| !k.is_empty())
        .and_then(|k| reqwest::header::HeaderValue::from_str(&format!("Bearer {k}")).ok())
    {
        h.insert(reqwest::header::AUTHORIZATION, v);
    }
    h
}

/// Run the plan; returns the measurements of its measured part.
pub async fn run(plan: Plan) -> anyhow::Result<Recorder> {
    let total = plan.warmup + plan.duration;
    let arrivals = (total.as_secs_f64() * plan.rps).round().max(1.0) as u64;
    let users = plan.users.max(1);
    let run_secs = total.as_secs_f64().ceil() as usize + 1;
    let url = plan.url.clone();
    let shared = Arc::new(Shared {
        plan,
        arrivals,
        t0: OnceLock::new(),
        next: AtomicU64::new(0),
        rec: Mutex::new(Recorder::new()),
    });
    let sh = shared.clone();
    let tx: TransactionFunction = Arc::new(move |user| {
        let sh = sh.clone();
        Box::pin(async move { arrival(user, &sh).await })
    });
    // Each user's client carries the API key, when one is given.
    let keyed: TransactionFunction = Arc::new(move |user| {
        Box::pin(async move {
            let headers = key_headers();
            if !headers.is_empty() {
                let builder = reqwest::Client::builder()
                    .default_headers(headers)
                    .timeout(Duration::from_secs(60));
                user.set_client_builder(builder).await?;
            }
            Ok(())
        })
    });
    // Goose's own command line is not parsed: loadgen's flags drive it.
    GooseAttack::initialize_with_config(goose::config::GooseConfiguration::default())?
        .register_scenario(
            scenario!("wolf")
                .register_transaction(Transaction::new(keyed).set_name("key").set_on_start())
                .register_transaction(Transaction::new(tx).set_name("arrival")),
        )
        .set_default(GooseDefault::Host, url.as_str())?
        .set_default(GooseDefault::Users, users)?
        .set_default(GooseDefault::HatchRate, format!("{}", users.max(100)).as_str())?
        .set_default(GooseDefault::RunTime, run_secs)?
        .set_default(GooseDefault::NoPrintMetrics, true)?
        .set_default(GooseDefault::NoTelnet, true)?
        .set_default(GooseDefault::NoWebSocket, true)?
        .set_default(GooseDefault::Quiet, 1)?
        .set_default(GooseDefault::Timeout, "60")?
        .execute()
        .await?;
    let unclaimed = arrivals.saturating_sub(shared.next.load(Ordering::Relaxed).min(arrivals));
    let mut rec = std::mem::replace(
        &mut *shared.rec.lock().unwrap_or_else(|e| e.into_inner()),
        Recorder::new(),
    );
    rec.not_sent = unclaimed;
    Ok(rec)
}
