//! Latency and errors of the node's calls to its database and presence store, from their spans.
//!
//! The store and presence adapters already open one span per call (`db.start_meeting`,
//! `presence.upsert`, ...) and emit an event with target [`parley_core::CALL_FAILED`] inside it
//! when the server failed the call. [`CallTimings`] is a `tracing` layer that times those spans
//! from creation to close and records, per operation:
//!
//! - `parley_db_call_duration_seconds{op}` and `parley_db_call_errors_total{op}`;
//! - `parley_presence_call_duration_seconds{op,backend}` and
//!   `parley_presence_call_errors_total{op,backend}` (`backend` is `redis` or `in-process`).
//!
//! The layer is installed with the process's subscriber, before any node's meter exists;
//! [`CallRecorder::bind`] gives it the instruments once the node builds its metrics. Until
//! then (and in a process that runs no node) calls are timed into nothing.

use std::sync::OnceLock;
use std::time::Instant;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, Meter};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id};
use tracing::subscriber::Interest;
use tracing::{Event, Metadata, Subscriber};
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::{Context, Filter, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Upper bounds (seconds) of the call-duration histograms: a local Redis answers in ~0.1 ms,
/// a transaction on PostgreSQL in a few ms, a call against a server that went away waits for
/// its timeout.
const CALL_BOUNDARIES: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// The process's recorder: the subscriber is process-wide, so is what its layer records into.
pub static NODE_CALLS: CallRecorder = CallRecorder::new();

/// Where [`CallTimings`] records, once bound to a meter.
#[derive(Debug)]
pub struct CallRecorder {
    instruments: OnceLock<Instruments>,
}

#[derive(Debug)]
struct Instruments {
    db_duration: Histogram<f64>,
    db_errors: Counter<u64>,
    presence_duration: Histogram<f64>,
    presence_errors: Counter<u64>,
}

impl CallRecorder {
    pub const fn new() -> CallRecorder {
        CallRecorder { instruments: OnceLock::new() }
    }

    /// Creates the instruments on `meter`. The first meter bound wins (one node per process);
    /// returns whether this one was.
    pub fn bind(&self, meter: &Meter) -> bool {
        let mut bound = false;
        self.instruments.get_or_init(|| {
            bound = true;
            Instruments {
                db_duration: meter
                    .f64_histogram("parley.db.call.duration")
                    .with_unit("s")
                    .with_description("Time of a database call of the live path, by operation")
                    .with_boundaries(CALL_BOUNDARIES.to_vec())
                    .build(),
                db_errors: meter
                    .u64_counter("parley.db.call.errors")
                    .with_description(
                        "Database calls the server failed (connection, timeout, rejected query), by operation",
                    )
                    .build(),
                presence_duration: meter
                    .f64_histogram("parley.presence.call.duration")
                    .with_unit("s")
                    .with_description("Time of a presence call (Redis when backend=redis), by operation")
                    .with_boundaries(CALL_BOUNDARIES.to_vec())
                    .build(),
                presence_errors: meter
                    .u64_counter("parley.presence.call.errors")
                    .with_description(
                        "Presence calls that failed at Redis or were refused while it is down, by operation",
                    )
                    .build(),
            }
        });
        bound
    }

    fn record(&self, call: &Call) {
        let Some(i) = self.instruments.get() else { return };
        let seconds = call.started.elapsed().as_secs_f64();
        match call.family {
            Family::Db => {
                let attrs = [KeyValue::new("op", call.op)];
                i.db_duration.record(seconds, &attrs);
                if call.failed {
                    i.db_errors.add(1, &attrs);
                }
            }
            Family::Presence => {
                let attrs = [KeyValue::new("op", call.op), KeyValue::new("backend", call.backend)];
                i.presence_duration.record(seconds, &attrs);
                if call.failed {
                    i.presence_errors.add(1, &attrs);
                }
            }
        }
    }
}

impl Default for CallRecorder {
    fn default() -> Self {
        CallRecorder::new()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Db,
    Presence,
}

/// The family and operation of a call span's name: `db.start_meeting` → (Db, `start_meeting`).
fn call_of(name: &'static str) -> Option<(Family, &'static str)> {
    if let Some(op) = name.strip_prefix("db.") {
        Some((Family::Db, op))
    } else {
        name.strip_prefix("presence.").map(|op| (Family::Presence, op))
    }
}

fn call_of_str(name: &str) -> bool {
    name.starts_with("db.") || name.starts_with("presence.")
}

/// A call in flight, kept in its span's extensions.
struct Call {
    family: Family,
    op: &'static str,
    backend: &'static str,
    started: Instant,
    failed: bool,
}

/// Reads a presence span's `backend` field.
struct Backend(&'static str);

impl Visit for Backend {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "backend" {
            self.0 = if value == "redis" { "redis" } else { "in-process" };
        }
    }

    fn record_debug(&mut self, _field: &Field, _value: &dyn std::fmt::Debug) {}
}

/// The layer that times call spans into a [`CallRecorder`].
pub struct CallTimings {
    recorder: &'static CallRecorder,
}

impl CallTimings {
    pub fn new(recorder: &'static CallRecorder) -> CallTimings {
        CallTimings { recorder }
    }

    /// What this layer needs to see, whatever the log filter says: call spans and the failure
    /// events inside them (use with [`Layer::with_filter`]).
    pub fn interest() -> CallInterest {
        CallInterest
    }
}

/// The per-layer filter of [`CallTimings`].
pub struct CallInterest;

impl CallInterest {
    fn wants(meta: &Metadata<'_>) -> bool {
        if meta.is_span() { call_of_str(meta.name()) } else { meta.target() == parley_core::CALL_FAILED }
    }
}

impl<S> Filter<S> for CallInterest {
    fn enabled(&self, meta: &Metadata<'_>, _cx: &Context<'_, S>) -> bool {
        CallInterest::wants(meta)
    }

    // Decided once per callsite from its static metadata: no per-event cost elsewhere.
    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> Interest {
        if CallInterest::wants(meta) { Interest::always() } else { Interest::never() }
    }

    // The failure events are at DEBUG; nothing this layer wants is at TRACE.
    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(LevelFilter::DEBUG)
    }
}

impl<S> Layer<S> for CallTimings
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some((family, op)) = call_of(attrs.metadata().name()) else { return };
        let Some(span) = ctx.span(id) else { return };
        let mut backend = Backend("in-process");
        attrs.record(&mut backend);
        span.extensions_mut().insert(Call { family, op, backend: backend.0, started: Instant::now(), failed: false });
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if event.metadata().target() != parley_core::CALL_FAILED {
            return;
        }
        // The innermost call span around the event (the filter shows this layer no other span).
        let Some(scope) = ctx.event_scope(event) else { return };
        for span in scope {
            if let Some(call) = span.extensions_mut().get_mut::<Call>() {
                call.failed = true;
                return;
            }
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        if let Some(call) = span.extensions_mut().remove::<Call>() {
            self.recorder.record(&call);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::metrics::MeterProvider as _;
    use opentelemetry_sdk::metrics::SdkMeterProvider;
    use prometheus::{Encoder as _, TextEncoder};
    use tracing_subscriber::layer::SubscriberExt as _;

    /// A recorder bound to a Prometheus registry of its own, and that registry's text.
    fn bound() -> (&'static CallRecorder, impl Fn() -> String) {
        let recorder: &'static CallRecorder = Box::leak(Box::new(CallRecorder::new()));
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_scope_info()
            .without_target_info()
            .build()
            .unwrap();
        let provider = SdkMeterProvider::builder().with_reader(exporter).build();
        assert!(recorder.bind(&provider.meter("test")));
        assert!(!recorder.bind(&provider.meter("again")), "the first meter wins");
        let text = move || {
            let _keep = &provider;
            let mut out = Vec::new();
            TextEncoder::new().encode(&registry.gather(), &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        (recorder, text)
    }

    fn value(text: &str, prefix: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(prefix)).and_then(|v| v.trim().parse().ok())
    }

    #[tracing::instrument(name = "db.fetch_thing", skip_all)]
    async fn db_call(fail: bool) -> Result<(), String> {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if fail {
            tracing::debug!(target: parley_core::CALL_FAILED, "database call failed");
            return Err("gone".into());
        }
        Ok(())
    }

    #[tracing::instrument(name = "presence.touch", skip_all, fields(backend = "redis"))]
    async fn presence_call() {
        // Not a failure: an ordinary log line inside the call.
        tracing::debug!(error = "not mine", "something else");
    }

    #[tracing::instrument(name = "meeting.request", skip_all)]
    async fn not_a_call() {}

    #[tokio::test]
    async fn times_call_spans_and_counts_only_failures_reported_inside_them() {
        let (recorder, text) = bound();
        // The log filter of the node lets nothing through; the call layer still sees its spans.
        let subscriber = tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_filter(tracing_subscriber::filter::LevelFilter::OFF))
            .with(CallTimings::new(recorder).with_filter(CallTimings::interest()));
        let _guard = tracing::subscriber::set_default(subscriber);
        db_call(false).await.unwrap();
        db_call(true).await.unwrap_err();
        presence_call().await;
        not_a_call().await;
        // A failure event outside any call span marks nothing.
        tracing::debug!(target: parley_core::CALL_FAILED, "stray");

        let t = text();
        let count = value(&t, "parley_db_call_duration_seconds_count{op=\"fetch_thing\"}");
        assert_eq!(count, Some(2.0), "{t}");
        let sum = value(&t, "parley_db_call_duration_seconds_sum{op=\"fetch_thing\"}").unwrap();
        assert!(sum >= 0.04, "two calls of ≥ 20 ms each, from span creation to close: {sum}");
        assert_eq!(value(&t, "parley_db_call_errors_total{op=\"fetch_thing\"}"), Some(1.0), "{t}");
        assert_eq!(
            value(&t, "parley_presence_call_duration_seconds_count{backend=\"redis\",op=\"touch\"}"),
            Some(1.0),
            "{t}"
        );
        assert!(!t.contains("parley_presence_call_errors_total"), "an unrelated `error` field is no failure\n{t}");
        assert!(!t.contains("request"), "only db.* and presence.* spans are calls\n{t}");
        assert!(
            t.contains("parley_db_call_duration_seconds_bucket{op=\"fetch_thing\",le=\"0.025\"}"),
            "the call boundaries are used\n{t}"
        );
    }

    #[test]
    fn span_names_map_to_family_and_operation() {
        assert_eq!(call_of("db.start_meeting"), Some((Family::Db, "start_meeting")));
        assert_eq!(call_of("presence.upsert"), Some((Family::Presence, "upsert")));
        assert_eq!(call_of("media.join"), None);
        assert_eq!(call_of("dbx.thing"), None);
    }
}
