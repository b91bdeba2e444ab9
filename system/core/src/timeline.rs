//! A job's stages as a waterfall (`GET /job/{id}/timeline`), derived from its record.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use crate::job::{Attempt, JobRecord};

/// One bar of the waterfall.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Span {
    /// `server`, `queue_wait`, `worker_creation`, `worker_acquire`, `compile`, `execution`,
    /// `storage`, `end_to_end`, or `attempt` (an earlier delivery that did not finish); with
    /// test cases also `test` (one per test, within `execution`) and `checker` (a checker
    /// program's run, within its test).
    pub stage: &'static str,
    /// The test's name, for `test` and `checker`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Start.
    pub start: DateTime<Utc>,
    /// Duration, ms.
    pub duration_ms: f64,
    /// Delivery it belongs to (absent for `server` and `end_to_end`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Worker that ran it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// Done ahead, not on the job's path (the sandbox was pre-warmed before the job came).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub off_path: bool,
}

/// The waterfall.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeline {
    /// The job.
    pub job_id: String,
    /// Its trace.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Its trace's page in a tracing UI, when the server is configured with one (`trace_url`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_url: Option<String>,
    /// Status now.
    #[schema(value_type = String)]
    pub status: crate::Status,
    /// Deliveries beyond the first.
    pub retry_count: u32,
    /// Bars, in start order.
    pub spans: Vec<Span>,
}

fn ms(d: f64) -> Duration {
    Duration::microseconds((d * 1000.0).round() as i64)
}

/// The waterfall of `rec` as far as it has got.
pub fn timeline(rec: &JobRecord) -> Timeline {
    let t = rec.timings.unwrap_or_default();
    let mut spans = Vec::new();
    let span = |stage, start, duration_ms: f64, a: Option<&Attempt>| Span {
        stage,
        start,
        duration_ms,
        name: None,
        attempt: a.map(|a| a.attempt),
        worker: a.map(|a| a.worker.clone()),
        off_path: false,
    };
    spans.push(span("server", rec.creation_time, t.server, None));
    let queued_at = rec.creation_time + ms(t.server);
    // Earlier deliveries: each lasted until the next one was leased.
    for pair in rec.attempts.windows(2) {
        let d = (pair[1].started_at - pair[0].started_at)
            .num_microseconds()
            .unwrap_or(0) as f64
            / 1000.0;
        spans.push(span("attempt", pair[0].started_at, d, Some(&pair[0])));
    }
    let last = rec.attempts.last();
    if let Some(leased) = last.map(|a| a.started_at).or(rec.start_time) {
        if rec.attempts.len() <= 1 {
            spans.push(span("queue_wait", queued_at, t.queue_wait, last));
        }
        if t.worker_creation > 0.0 {
            spans.push(Span {
                off_path: true,
                ..span(
                    "worker_creation",
                    leased - ms(t.worker_creation),
                    t.worker_creation,
                    last,
                )
            });
        }
        let mut at = leased;
        for (stage, d) in [
            ("worker_acquire", t.worker_acquire),
            ("compile", t.compile),
            ("execution", t.execution),
        ] {
            if d > 0.0 || stage == "execution" && rec.status.is_final() {
                spans.push(span(stage, at, d, last));
            }
            if stage == "execution" {
                test_spans(rec, at, last, &mut spans);
            }
            at += ms(d);
        }
        if t.storage > 0.0 {
            let start = rec.end_time.map(|e| e - ms(t.storage)).unwrap_or(at);
            spans.push(span("storage", start, t.storage, last));
        }
    }
    if rec.status.is_final() && t.total > 0.0 {
        spans.push(span("end_to_end", rec.creation_time, t.total, None));
    }
    spans.sort_by_key(|s| s.start);
    Timeline {
        job_id: rec.id.clone(),
        trace_id: rec.trace_id.clone(),
        trace_url: None,
        status: rec.status,
        retry_count: rec.retry_count,
        spans,
    }
}

/// Each test of `rec` (and its checker's run) as a bar within the execution stage at `start`.
fn test_spans(rec: &JobRecord, start: DateTime<Utc>, a: Option<&Attempt>, spans: &mut Vec<Span>) {
    let Some(result) = &rec.result else { return };
    for t in &result.tests {
        let Some(st) = t.stage else { continue };
        let bar = |stage, from: f64, duration_ms| Span {
            stage,
            start: start + ms(from),
            duration_ms,
            name: Some(t.name.clone()),
            attempt: a.map(|a| a.attempt),
            worker: a.map(|a| a.worker.clone()),
            off_path: false,
        };
        spans.push(bar("test", st.start_ms, st.duration_ms));
        if let Some(c) = st.checker_ms {
            spans.push(bar("checker", st.start_ms + st.duration_ms - c, c));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Status, Submission, Timings};

    fn rec() -> JobRecord {
        let sub: Submission = serde_json::from_value(serde_json::json!({"code": "x", "executionEngine": "c"})).unwrap();
        let t0 = DateTime::parse_from_rfc3339("2026-11-27T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut r = JobRecord::new("j".into(), &sub, t0);
        r.status = Status::Completed;
        r.retry_count = 1;
        r.attempts = vec![
            Attempt {
                attempt: 1,
                worker: "h/1/w0".into(),
                started_at: t0 + ms(10.0),
            },
            Attempt {
                attempt: 2,
                worker: "h/2/w1".into(),
                started_at: t0 + ms(500.0),
            },
        ];
        r.start_time = Some(t0 + ms(500.0));
        r.end_time = Some(t0 + ms(600.0));
        r.timings = Some(Timings {
            server: 1.0,
            queue_wait: 9.0,
            worker_creation: 5.0,
            worker_acquire: 2.0,
            compile: 40.0,
            execution: 50.0,
            storage: 8.0,
            total: 600.0,
        });
        r
    }

    #[test]
    fn a_retried_job_shows_the_superseded_attempt_and_the_last_one_stage_by_stage() {
        let tl = timeline(&rec());
        let names: Vec<_> = tl.spans.iter().map(|s| (s.stage, s.attempt)).collect();
        assert_eq!(
            names,
            [
                ("server", None),
                ("end_to_end", None),
                ("attempt", Some(1)),
                ("worker_creation", Some(2)),
                ("worker_acquire", Some(2)),
                ("compile", Some(2)),
                ("execution", Some(2)),
                ("storage", Some(2)),
            ]
        );
        let attempt = &tl.spans[2];
        assert_eq!(
            (attempt.duration_ms, attempt.worker.as_deref()),
            (490.0, Some("h/1/w0"))
        );
        let exec = tl.spans.iter().find(|s| s.stage == "execution").unwrap();
        assert_eq!(exec.start, rec().creation_time + ms(542.0), "after acquire and compile");
        let storage = tl.spans.iter().find(|s| s.stage == "storage").unwrap();
        assert_eq!(storage.start, rec().creation_time + ms(592.0), "ends at the end time");
        assert!(tl.spans.iter().find(|s| s.stage == "worker_creation").unwrap().off_path);
    }

    #[test]
    fn each_test_and_its_checker_is_a_bar_within_execution() {
        let mut r = rec();
        let test = |name: &str, start: f64, checker: Option<f64>| {
            serde_json::json!({"name": name, "verdict": "Accepted", "exitCode": 0, "signal": null,
                "cpuTimeMs": 1, "wallTimeMs": 2, "memoryKb": 3, "stdout": "", "stderr": "",
                "truncated": false, "score": 1.0,
                "stage": {"startMs": start, "durationMs": 20.0, "checkerMs": checker}})
        };
        r.result = Some(
            serde_json::from_value(serde_json::json!({"verdict": "Accepted", "exitCode": 0, "signal": null,
                "cpuTimeMs": 1, "wallTimeMs": 2, "memoryKb": 3, "stderr": "", "compileOutput": "",
                "truncated": false, "tests": [test("a", 0.0, None), test("b", 25.0, Some(5.0))]}))
            .unwrap(),
        );
        let tl = timeline(&r);
        let exec = tl.spans.iter().find(|s| s.stage == "execution").unwrap().start;
        let bars: Vec<_> = tl
            .spans
            .iter()
            .filter(|s| s.stage == "test" || s.stage == "checker")
            .map(|s| {
                (
                    s.stage,
                    s.name.as_deref().unwrap(),
                    (s.start - exec).num_milliseconds(),
                    s.duration_ms,
                )
            })
            .collect();
        assert_eq!(
            bars,
            [
                ("test", "a", 0, 20.0),
                ("test", "b", 25, 20.0),
                ("checker", "b", 40, 5.0)
            ],
            "the checker ends its test"
        );
    }

    #[test]
    fn a_pending_job_has_only_its_server_span() {
        let mut r = rec();
        r.status = Status::Pending;
        r.attempts.clear();
        r.start_time = None;
        let tl = timeline(&r);
        assert_eq!(tl.spans.iter().map(|s| s.stage).collect::<Vec<_>>(), ["server"]);
    }
}
