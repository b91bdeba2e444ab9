//! # wolf-telemetry
//!
//! Logs and traces for every Wolf process.
//!
//! - [`init`]: the `tracing` subscriber. `WOLF_LOG` filters (default `info`);
//!   `WOLF_LOG_FORMAT=json` prints one JSON object per line with the current span's fields, so
//!   every line logged while a job is handled carries its `job_id` and `trace_id`. When
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans are also exported over OTLP/gRPC
//!   (opentelemetry-otlp, batched; `OTEL_BSP_SCHEDULE_DELAY` and the other `OTEL_*` variables
//!   apply) with `service.name` = the process's role.
//! - W3C trace context crosses processes as a `traceparent` string: in NATS message headers, in
//!   the embedded queue's rows and in gRPC metadata. [`traceparent`] reads the current span's,
//!   [`adopt`] makes a span the child of a received one.
//! - [`trace_id`] is the current trace's id: the API stores it in the job record.
//! - [`record_span`] emits a span with given start and end times under the current span: the
//!   worker runs in a sandbox without network, so its compile and execution spans are emitted by
//!   the manager from the times the worker reports.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::SystemTime;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Install the subscriber. `service` names the process in traces (`wolf-api`, `wolf-manager`,
/// `wolf-serve`); `None` never exports (one-shot commands).
pub fn init(service: Option<&'static str>) {
    let filter = EnvFilter::try_from_env("WOLF_LOG").unwrap_or_else(|_| "info".into());
    let json = std::env::var("WOLF_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let fmt = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(std::io::stderr)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer().with_writer(std::io::stderr).boxed()
    };
    let otel = service
        .filter(|_| std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some_and(|v| !v.is_empty()))
        .and_then(|name| match provider(name) {
            Ok(p) => {
                let tracer = p.tracer("wolf");
                let _ = PROVIDER.set(p);
                Some(tracing_opentelemetry::layer().with_tracer(tracer))
            }
            Err(e) => {
                eprintln!("wolf: OTLP export disabled: {e}");
                None
            }
        });
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let _ = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(otel)
        .try_init();
}

fn provider(service: &'static str) -> Result<SdkTracerProvider, Box<dyn std::error::Error>> {
    // The gRPC channel's background task needs a Tokio runtime that outlives every export: a
    // small one of its own, for the life of the process (the processes' own runtimes start
    // later and stop earlier than the last flush).
    let rt = Box::leak(Box::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("wolf-otlp")
            .enable_all()
            .build()?,
    ));
    let _enter = rt.enter();
    let exporter = opentelemetry_otlp::SpanExporter::builder().with_tonic().build()?;
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name(service)
                .build(),
        )
        .build();
    opentelemetry::global::set_tracer_provider(provider.clone());
    Ok(provider)
}

/// Export what is buffered and stop exporting (call before the process exits).
pub fn shutdown() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
        let _ = p.shutdown();
    }
}

/// Whether spans are exported.
pub fn exporting() -> bool {
    PROVIDER.get().is_some()
}

/// The current span's trace id (32 hex digits), when it is part of a trace.
pub fn trace_id() -> Option<String> {
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The current span's W3C `traceparent`, when it is part of a trace.
pub fn traceparent() -> Option<String> {
    let cx = tracing::Span::current().context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

fn context_of(traceparent: &str) -> Context {
    let carrier = HashMap::from([("traceparent".to_string(), traceparent.to_string())]);
    TraceContextPropagator::new().extract(&carrier)
}

/// Make `span` a child of the span that sent `traceparent` (no-op when absent or malformed).
pub fn adopt(span: &tracing::Span, traceparent: Option<&str>) {
    if let Some(tp) = traceparent {
        let cx = context_of(tp);
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }
}

/// Emit a finished span `name` from `start` to `end` under the current span, with attributes.
pub fn record_span(name: &'static str, start: SystemTime, end: SystemTime, attributes: Vec<(&'static str, String)>) {
    if !exporting() {
        return;
    }
    let parent = tracing::Span::current().context();
    if !parent.span().span_context().is_valid() {
        return;
    }
    let tracer = opentelemetry::global::tracer("wolf");
    let mut span = tracer
        .span_builder(name)
        .with_start_time(start)
        .with_attributes(attributes.into_iter().map(|(k, v)| KeyValue::new(k, v)))
        .start_with_context(&tracer, &parent);
    span.end_with_timestamp(end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_round_trips_and_junk_is_ignored() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let cx = context_of(tp);
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid());
        assert_eq!(sc.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let mut carrier = HashMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut carrier);
        assert_eq!(carrier["traceparent"], tp);
        assert!(!context_of("garbage").span().span_context().is_valid());
        // Without a trace: nothing to carry.
        assert_eq!(traceparent(), None);
        assert_eq!(trace_id(), None);
    }
}
