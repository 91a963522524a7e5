//! Traces: `tracing` spans → tracing-opentelemetry → the OpenTelemetry SDK → OTLP over
//! HTTP/protobuf to a collector (`[telemetry] otlp_endpoint`). The batch exporter runs on a
//! thread of its own; a collector that is down loses spans, never slows a request.
//!
//! What is traced: each client request (`ws.request`, a trace of its own, except a join's
//! media signalling, which continues the join's), each HTTP request (`http.request`), a
//! meeting's handling of a request (`meeting.request`, `media.request`), every cluster hop
//! (`cluster.receive`, a child of the sender's span through the envelope's W3C context), the
//! database and Redis calls of a join, and the media join (`media.join`: `media.ice` →
//! `media.dtls` → `media.first_packet`, ending when the first packet reaches the peer).

use std::time::Duration;

use tracing::level_filters::LevelFilter;
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::LookupSpan;

use opentelemetry::KeyValue;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{BatchConfigBuilder, BatchSpanProcessor, SdkTracer, SdkTracerProvider};

/// How often finished spans are sent (at most this late in the collector).
const EXPORT_EVERY: Duration = Duration::from_millis(500);

/// The trace layer's filter: the node's default log filter, except that a database or Redis
/// call made outside any span (a heartbeat's presence refresh, a lease renewal) is not offered
/// to the trace layer at all. Such a call could only start a trace, which the
/// [`EntrySampler`] would refuse after the layer had built the span; its call metrics come
/// from their own layer either way.
pub struct TracedFilter {
    env: EnvFilter,
}

impl TracedFilter {
    pub fn new(env: EnvFilter) -> TracedFilter {
        TracedFilter { env }
    }

    fn is_call(meta: &Metadata<'_>) -> bool {
        meta.is_span() && (meta.name().starts_with("db.") || meta.name().starts_with("presence."))
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Filter<S> for TracedFilter {
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        Filter::<S>::enabled(&self.env, meta, cx) && (!TracedFilter::is_call(meta) || cx.lookup_current().is_some())
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        let interest = Filter::<S>::callsite_enabled(&self.env, meta);
        if TracedFilter::is_call(meta) && !interest.is_never() { Interest::sometimes() } else { interest }
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Filter::<S>::max_level_hint(&self.env)
    }

    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, cx: Context<'_, S>) {
        Filter::<S>::on_new_span(&self.env, attrs, id, cx)
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, cx: Context<'_, S>) {
        Filter::<S>::on_record(&self.env, id, values, cx)
    }

    fn on_enter(&self, id: &Id, cx: Context<'_, S>) {
        Filter::<S>::on_enter(&self.env, id, cx)
    }

    fn on_exit(&self, id: &Id, cx: Context<'_, S>) {
        Filter::<S>::on_exit(&self.env, id, cx)
    }

    fn on_close(&self, id: Id, cx: Context<'_, S>) {
        Filter::<S>::on_close(&self.env, id, cx)
    }
}

/// A node's trace pipeline; [`Traces::shutdown`] sends what is still queued.
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// The pipeline to `url` (`…/v1/traces`), its spans labelled with `node` as
    /// `service.instance.id`. Must be built outside the async runtime (the HTTP client is
    /// the blocking one, on the exporter's thread).
    pub fn start(url: &str, node: &str) -> Result<(Traces, SdkTracer), opentelemetry_otlp::ExporterBuildError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(url)
            .with_timeout(Duration::from_secs(5))
            .build()?;
        let batch = BatchConfigBuilder::default().with_scheduled_delay(EXPORT_EVERY).build();
        let resource = Resource::builder()
            .with_service_name("parley")
            .with_attribute(KeyValue::new("service.instance.id", node.to_owned()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_sampler(EntrySampler)
            .with_span_processor(BatchSpanProcessor::builder(exporter).with_batch_config(batch).build())
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("parley");
        Ok((Traces { provider }, tracer))
    }

    /// Sends the spans still queued, then stops the exporter.
    pub fn shutdown(self) {
        if let Err(e) = self.provider.shutdown() {
            eprintln!("parley: traces not all sent at shutdown: {e}");
        }
    }
}

/// Which spans start a trace: a client's request, an HTTP request, a message from another
/// node. Any other span (a database or Redis call, a meeting's handling) is traced only as
/// part of one of those — so the background work (leases, sweeps) sends no traces of its own.
#[derive(Debug, Clone)]
pub struct EntrySampler;

/// The spans that may start a trace.
const ENTRY_SPANS: &[&str] = &["ws.request", "http.request", "cluster.receive"];

impl opentelemetry_sdk::trace::ShouldSample for EntrySampler {
    fn should_sample(
        &self,
        parent: Option<&opentelemetry::Context>,
        trace_id: opentelemetry::trace::TraceId,
        name: &str,
        kind: &opentelemetry::trace::SpanKind,
        attributes: &[KeyValue],
        links: &[opentelemetry::trace::Link],
    ) -> opentelemetry::trace::SamplingResult {
        use opentelemetry::trace::{SamplingDecision, SamplingResult, TraceContextExt as _};
        let parent_span = parent.map(|cx| cx.span().span_context().clone()).filter(|sc| sc.is_valid());
        let decision = match &parent_span {
            Some(sc) if sc.is_sampled() => SamplingDecision::RecordAndSample,
            Some(_) => SamplingDecision::Drop,
            None if ENTRY_SPANS.contains(&name) => SamplingDecision::RecordAndSample,
            None => SamplingDecision::Drop,
        };
        let _ = (trace_id, kind, attributes, links);
        SamplingResult {
            decision,
            attributes: Vec::new(),
            trace_state: parent_span.map(|sc| sc.trace_state().clone()).unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SamplingDecision, SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use opentelemetry_sdk::trace::ShouldSample;

    fn decide(parent: Option<&opentelemetry::Context>, name: &str) -> SamplingDecision {
        let kind = opentelemetry::trace::SpanKind::Internal;
        EntrySampler.should_sample(parent, TraceId::from(7), name, &kind, &[], &[]).decision
    }

    fn parent(sampled: bool) -> opentelemetry::Context {
        let flags = if sampled { TraceFlags::SAMPLED } else { TraceFlags::default() };
        let sc = SpanContext::new(TraceId::from(7), SpanId::from(9), flags, true, TraceState::default());
        opentelemetry::Context::new().with_remote_span_context(sc)
    }

    #[test]
    fn only_entry_spans_start_a_trace_and_children_follow_their_parent() {
        assert_eq!(decide(None, "ws.request"), SamplingDecision::RecordAndSample);
        assert_eq!(decide(None, "http.request"), SamplingDecision::RecordAndSample);
        assert_eq!(decide(None, "presence.upsert"), SamplingDecision::Drop, "a sweep's Redis call alone");
        assert_eq!(decide(None, "db.end_meeting"), SamplingDecision::Drop);
        assert_eq!(decide(Some(&parent(true)), "db.join_facts"), SamplingDecision::RecordAndSample);
        assert_eq!(decide(Some(&parent(false)), "db.join_facts"), SamplingDecision::Drop);
        assert_eq!(decide(Some(&opentelemetry::Context::new()), "db.join_facts"), SamplingDecision::Drop);
    }
}
