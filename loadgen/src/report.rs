//! The table, the JSON record, the plot and the machine they were measured on.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::attack::{END_TO_END, ORCHESTRATION, Recorder, STAGES, SUBMIT};

/// Percentiles of one row, ms.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Row label.
    pub stage: String,
    /// Samples.
    pub count: u64,
    /// Median, ms.
    pub p50: f64,
    /// 95th percentile, ms.
    pub p95: f64,
    /// 99th percentile, ms.
    pub p99: f64,
    /// Largest, ms.
    pub max: f64,
}

fn row(stage: &str, h: &Histogram<u64>) -> Row {
    let ms = |q: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(q) as f64 / 1000.0
        }
    };
    Row {
        stage: stage.to_string(),
        count: h.len(),
        p50: ms(0.50),
        p95: ms(0.95),
        p99: ms(0.99),
        max: if h.is_empty() { 0.0 } else { h.max() as f64 / 1000.0 },
    }
}

/// Rows in the seed's order, then ours.
pub fn rows(rec: &Recorder) -> Vec<Row> {
    let mut out: Vec<Row> = STAGES.iter().map(|(_, label)| row(label, &rec.hist[label])).collect();
    out.push(row(SUBMIT, &rec.hist[SUBMIT]));
    out.push(row(END_TO_END, &rec.hist[END_TO_END]));
    out.push(row(ORCHESTRATION, &rec.hist[ORCHESTRATION]));
    out
}

fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut s = String::from("| Stage | p50 (ms) | p95 (ms) | p99 (ms) |\n|---|---|---|---|\n");
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} |",
            r.stage,
            fmt_ms(r.p50),
            fmt_ms(r.p95),
            fmt_ms(r.p99)
        );
    }
    s
}

/// Counts under the table.
pub fn summary(rec: &Recorder, secs: f64, rps: f64) -> String {
    let kinds = rec.error_kinds();
    let errors: u64 = kinds.values().sum();
    let mut s = format!(
        "offered {rps} jobs/s for {secs:.0} s: sent {}, accepted {}, completed {} ({:.2} jobs/s), refused {}, errors {}; \
         {} arrivals started > 5 ms late (latest {:.1} ms; latencies count from the due time)\n",
        rec.sent,
        rec.accepted,
        rec.completed,
        rec.completed as f64 / secs.max(1e-9),
        rec.refused,
        errors,
        rec.late,
        rec.max_late_us as f64 / 1000.0,
    );
    for (kind, n) in &kinds {
        let _ = writeln!(s, "  error: {kind}: {n}");
    }
    if !rec.refusal.is_empty() {
        let _ = writeln!(
            s,
            "  refusals answered in p50 {} ms, p99 {} ms",
            fmt_ms(rec.refusal.value_at_quantile(0.5) as f64 / 1000.0),
            fmt_ms(rec.refusal.value_at_quantile(0.99) as f64 / 1000.0)
        );
    }
    s
}

/// CPU model, cores, memory, kernel, git commit, and the `wolf` binary booted (if any).
pub fn machine() -> Value {
    let mut m = serde_json::to_value(wolf_core::machine::machine()).unwrap_or_default();
    m["commit"] = json!(wolf_core::machine::commit(std::path::Path::new(env!(
        "CARGO_MANIFEST_DIR"
    ))));
    if let Some(bin) = crate::target::wolf_binary_used() {
        m["wolfBinary"] = json!(bin);
    }
    m
}

/// One line naming the machine.
pub fn machine_line(m: &Value) -> String {
    format!(
        "{} ({} cores), {} GiB, Linux {}, commit {}",
        m["cpu"].as_str().unwrap_or("?"),
        m["cores"],
        m["memoryGiB"],
        m["kernel"].as_str().unwrap_or("?"),
        m["commit"].as_str().unwrap_or("?")
    ) + &m["wolfBinary"]
        .as_str()
        .map(|b| format!(", wolf binary {b}"))
        .unwrap_or_default()
}

/// p50/p95/p99 per stage as horizontal bars on a log scale.
pub fn svg(rows: &[Row], title: &str) -> String {
    let rows: Vec<&Row> = rows.iter().filter(|r| r.count > 0).collect();
    let (left, width, bar, gap) = (170.0, 560.0, 7.0, 10.0);
    let height = 60.0 + rows.len() as f64 * (3.0 * bar + gap) + 40.0;
    let hi = rows.iter().map(|r| r.p99).fold(1.0f64, f64::max).log10().ceil();
    let lo = rows
        .iter()
        .map(|r| r.p50)
        .filter(|v| *v > 0.0)
        .fold(1.0f64, f64::min)
        .log10()
        .floor()
        .min(hi - 1.0);
    let x = |v: f64| left + (v.max(10f64.powf(lo)).log10() - lo) / (hi - lo) * width;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n<text x=\"10\" y=\"20\" font-size=\"13\">{title}</text>\n",
        w = left + width + 30.0
    );
    let mut e = lo as i32;
    while e as f64 <= hi {
        let v = 10f64.powi(e);
        let _ = writeln!(
            s,
            "<line x1=\"{0}\" y1=\"35\" x2=\"{0}\" y2=\"{1}\" stroke=\"#ddd\"/><text x=\"{0}\" y=\"{2}\" text-anchor=\"middle\">{3} ms</text>",
            x(v),
            height - 30.0,
            height - 15.0,
            if v < 1.0 { format!("{v}") } else { format!("{v:.0}") }
        );
        e += 1;
    }
    let colors = [("p50", "#4c78a8"), ("p95", "#f58518"), ("p99", "#e45756")];
    for (i, (name, c)) in colors.iter().enumerate() {
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"27\" width=\"10\" height=\"8\" fill=\"{c}\"/><text x=\"{}\" y=\"35\">{name}</text>",
            left + i as f64 * 60.0,
            left + 14.0 + i as f64 * 60.0
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = 45.0 + i as f64 * (3.0 * bar + gap);
        let _ = writeln!(s, "<text x=\"10\" y=\"{}\">{}</text>", y + 1.5 * bar + 4.0, r.stage);
        for (j, (v, (_, c))) in [r.p50, r.p95, r.p99].iter().zip(colors.iter()).enumerate() {
            let _ = writeln!(
                s,
                "<rect x=\"{left}\" y=\"{}\" width=\"{:.1}\" height=\"{bar}\" fill=\"{c}\"><title>{} {:.3} ms</title></rect>",
                y + j as f64 * bar,
                (x(*v) - left).max(0.5),
                r.stage,
                v
            );
        }
    }
    s.push_str("</svg>\n");
    s
}

/// `results/<UTC date>-<mode>-<rps>rps`, without extension.
pub fn base(dir: &Path, mode: &str, rps: f64, sweep: bool) -> PathBuf {
    let date = chrono::Utc::now().format("%Y-%m-%d");
    let rate = if rps.fract() == 0.0 {
        format!("{rps:.0}")
    } else {
        format!("{rps}")
    };
    let kind = if sweep { "-sweep" } else { "" };
    dir.join(format!("{date}-{mode}-{rate}rps{kind}"))
}
