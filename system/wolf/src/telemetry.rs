//! Metrics (Prometheus text at `/metrics`) shared by `wolf serve`, `wolf api` and `wolf manager`.
//!
//! Every metric is described and registered at startup, so a scrape names all of them before
//! the first job (the dashboards test relies on it). No label takes unbounded values: no job
//! ids, only stages, statuses, verdicts, engines, layers and outcomes.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Bucket bounds of `wolf_stage_duration_seconds`: fine from 50 µs (a warm sandbox hand-off)
/// up to 5 minutes (the longest wall limit).
pub const STAGE_BUCKETS: [f64; 21] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 120.0, 300.0,
];

/// Install the process-wide recorder and register every metric.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full("wolf_stage_duration_seconds".into()), &STAGE_BUCKETS)?
        .install_recorder()?;
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_histogram!(
        "wolf_stage_duration_seconds",
        Unit::Seconds,
        "Time a job spent in each stage (server, queue_wait, worker_creation, worker_acquire, compile, execution, storage, end_to_end)"
    );
    describe_counter!("wolf_jobs_total", "Jobs finished, by status, verdict and engine");
    describe_counter!(
        "wolf_refusals_total",
        "Submissions refused, by layer (ingress: in-flight cap; queue: pending bound)"
    );
    describe_counter!(
        "wolf_persistence_retries_total",
        "Writes retried because a store was unavailable, by what"
    );
    describe_counter!(
        "wolf_redeliveries_total",
        "Jobs delivered again, by outcome (retried, already_final)"
    );
    describe_counter!(
        "wolf_dead_letters_total",
        "Jobs that exhausted their attempts and were dead-lettered"
    );
    describe_counter!(
        "wolf_orphans_requeued_total",
        "Queue messages orphaned below the ack floor and queued again"
    );
    describe_gauge!("wolf_queue_depth", "Jobs queued (leased or not)");
    describe_gauge!("wolf_workers", "Workers by state (idle, busy, warming)");
    for layer in ["ingress", "queue"] {
        metrics::counter!("wolf_refusals_total", "layer" => layer).absolute(0);
    }
    for outcome in ["retried", "already_final"] {
        metrics::counter!("wolf_redeliveries_total", "outcome" => outcome).absolute(0);
    }
    metrics::counter!("wolf_persistence_retries_total", "what" => "admission").absolute(0);
    metrics::counter!("wolf_dead_letters_total").absolute(0);
    metrics::counter!("wolf_orphans_requeued_total").absolute(0);
    metrics::counter!("wolf_jobs_total", "status" => "Completed", "verdict" => "Accepted", "engine" => "python")
        .absolute(0);
    metrics::gauge!("wolf_queue_depth").set(0.0);
    for state in ["idle", "busy", "warming"] {
        metrics::gauge!("wolf_workers", "state" => state).set(0.0);
    }
    Ok(handle)
}
