//! The trace context that rides with a request across the cluster: the W3C `traceparent` /
//! `tracestate` keys of the current span, put into an [`Envelope`](crate::wire::Envelope)'s
//! `trace` field by the sender and adopted by the receiver's span, so one trace follows a join
//! from the connection's node to the meeting's owner.
//!
//! Without an OpenTelemetry layer (telemetry off) the current span has no context: nothing is
//! sent and nothing adopted. A context that does not parse starts a new trace; it never fails
//! the message.

use std::collections::BTreeMap;

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The keys of a trace context (`traceparent`, `tracestate`).
pub type TraceContext = BTreeMap<String, String>;

/// Longest value adopted: a `traceparent` is 55 characters, a `tracestate` at most 512.
const MAX_VALUE_LEN: usize = 600;

struct Writer<'a>(&'a mut TraceContext);

impl Injector for Writer<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

struct Reader<'a>(&'a TraceContext);

impl Extractor for Reader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str).filter(|v| v.len() <= MAX_VALUE_LEN)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// The current span's context, to send along (empty when it is not traced).
pub fn current() -> TraceContext {
    of(&tracing::Span::current())
}

/// `span`'s context, to send along (empty when it is not traced).
pub fn of(span: &tracing::Span) -> TraceContext {
    let mut trace = TraceContext::new();
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut Writer(&mut trace));
    }
    trace
}

/// Makes `span` a child of the operation `trace` names (nothing when it names none).
pub fn adopt(span: &tracing::Span, trace: &TraceContext) {
    if trace.is_empty() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Reader(trace));
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}

/// Records `span`'s trace id in its `trace_id` field (declared empty), so the log lines under
/// it carry it; nothing when it is not traced.
pub fn record_trace_id(span: &tracing::Span) {
    if let Some(id) = trace_id(span) {
        span.record("trace_id", id);
    }
}

/// The trace id of `span` as 32 hex digits, `None` when it is not traced: what log lines carry.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::TracerProvider as _;
    use tracing_subscriber::layer::SubscriberExt;

    fn traced<R>(f: impl FnOnce() -> R) -> R {
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f)
    }

    #[test]
    fn untraced_sends_nothing_and_adopts_nothing() {
        let span = tracing::info_span!("x");
        assert!(of(&span).is_empty());
        assert_eq!(trace_id(&span), None);
        adopt(&span, &TraceContext::from([("traceparent".to_owned(), "garbage".to_owned())]));
    }

    #[test]
    fn a_context_sent_along_makes_the_receiving_span_a_child_of_the_same_trace() {
        traced(|| {
            let sender = tracing::info_span!("sender");
            let trace = of(&sender);
            let parent = trace.get("traceparent").cloned().unwrap_or_default();
            assert!(parent.starts_with("00-") && parent.len() == 55, "{parent}");
            let receiver = tracing::info_span!(parent: None, "receiver");
            adopt(&receiver, &trace);
            assert_eq!(trace_id(&receiver), trace_id(&sender));
            assert!(trace_id(&sender).is_some());
            // The receiver's own context names the receiver, not the sender.
            assert_ne!(of(&receiver).get("traceparent"), Some(&parent));
        });
    }

    #[test]
    fn a_context_that_does_not_parse_starts_a_new_trace() {
        traced(|| {
            let other = tracing::info_span!("other");
            for bad in ["garbage", "00-zz-yy-01", &"0".repeat(5000)] {
                let receiver = tracing::info_span!(parent: None, "receiver");
                adopt(&receiver, &TraceContext::from([("traceparent".to_owned(), bad.to_owned())]));
                assert!(trace_id(&receiver).is_some());
                assert_ne!(trace_id(&receiver), trace_id(&other));
            }
        });
    }
}
