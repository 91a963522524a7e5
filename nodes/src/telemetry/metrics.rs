//! `GET /metrics`: the node's OpenTelemetry metrics as Prometheus text.
//!
//! One [`SdkMeterProvider`] per node with the Prometheus exporter as its reader: the live
//! layer's instruments ([`LiveMetrics`]: joins, restarts, failovers, cluster messages,
//! WebSocket connections) record into it; gauges of what runs now (meetings, participants, media
//! peers, lease) and the media socket's counters are observed when Prometheus scrapes. The
//! forward-latency histogram is kept lock-free by the media socket itself (one relaxed add per
//! packet, no OpenTelemetry on the hot path) and is rendered here in Prometheus form beside
//! the exporter's text.

use std::fmt::Write as _;
use std::sync::{Arc, Weak};

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Meter, MeterProvider as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use parley_actors::LiveServices;
use parley_actors::metrics::LiveMetrics;
use parley_media::latency::{self, LatencySnapshot};
use prometheus::{Encoder as _, TextEncoder};

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot build the Prometheus exporter: {0}")]
    Exporter(String),
    #[error("cannot encode metrics: {0}")]
    Encode(String),
}

/// Upper bounds (seconds) the forward-latency histogram is shown with: the media socket's
/// fine buckets (10 % apart) folded into these; each is the largest fine bound not above the
/// nominal one, so every count is exact for the bound printed.
const FORWARD_LATENCY_BOUNDS_S: [f64; 13] =
    [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0];

/// The node's meter provider and what it exports.
pub struct NodeMetrics {
    provider: SdkMeterProvider,
    registry: prometheus::Registry,
    meter: Meter,
    /// Handed to the live actors (`LiveServices::metrics`).
    pub live: Arc<LiveMetrics>,
}

impl NodeMetrics {
    pub fn new(node: &str) -> Result<NodeMetrics, MetricsError> {
        let registry = prometheus::Registry::new();
        let exporter = opentelemetry_prometheus::exporter()
            .with_registry(registry.clone())
            .without_scope_info()
            .build()
            .map_err(|e| MetricsError::Exporter(e.to_string()))?;
        let resource = Resource::builder()
            .with_service_name("parley")
            .with_attribute(KeyValue::new("service.instance.id", node.to_owned()))
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkMeterProvider::builder().with_reader(exporter).with_resource(resource).build();
        let meter = provider.meter("parley");
        let live = Arc::new(LiveMetrics::new(&meter));
        if !super::calls::NODE_CALLS.bind(&meter) {
            tracing::debug!("database and presence call metrics already go to another node of this process");
        }
        Ok(NodeMetrics { provider, registry, meter, live })
    }

    /// Registers the gauges read from the running node when scraped. Holds `services` weakly:
    /// the metrics never keep a stopped node's actors alive.
    pub fn observe(&self, services: &Arc<LiveServices>) {
        let m = &self.meter;
        let weak = Arc::downgrade(services);
        let gauge = |name: &'static str, help: &'static str, read: fn(&LiveServices) -> u64| {
            let weak: Weak<LiveServices> = weak.clone();
            m.u64_observable_gauge(name)
                .with_description(help)
                .with_callback(move |o| {
                    if let Some(s) = weak.upgrade() {
                        o.observe(read(&s), &[]);
                    }
                })
                .build();
        };
        gauge("parley.meetings", "Live meetings this node owns", |s| u64::from(s.meetings.load().0));
        gauge("parley.participants", "Participants in the meetings this node owns", |s| u64::from(s.meetings.load().1));
        gauge("parley.media.peers", "WebRTC peers of this node's media routers", |s| {
            s.meetings.list().iter().map(|(_, _, peers)| u64::from(*peers)).sum()
        });
        gauge("parley.node.lease_held", "1 while this node holds its cluster lease (it can take meetings)", |s| {
            u64::from(s.membership.lease_held())
        });
        gauge("parley.node.draining", "1 while this node is draining (takes no new meetings)", |s| {
            u64::from(s.membership.draining())
        });
        gauge("parley.cluster.peers_connected", "Other nodes this node has a cluster session with", |s| {
            let m = &s.membership;
            m.peers().iter().filter(|p| m.peer(&p.name).is_some_and(|st| st.connected)).count() as u64
        });

        let socket_counter =
            |name: &'static str, help: &'static str, read: fn(&SocketCounts) -> Vec<(u64, KeyValue)>| {
                let weak: Weak<LiveServices> = weak.clone();
                m.u64_observable_counter(name)
                    .with_description(help)
                    .with_callback(move |o| {
                        if let Some(counts) = weak.upgrade().and_then(|s| SocketCounts::of(&s)) {
                            for (v, kv) in read(&counts) {
                                o.observe(v, &[kv]);
                            }
                        }
                    })
                    .build();
            };
        socket_counter("parley.media.datagrams", "UDP datagrams through the shared media port, by direction", |c| {
            vec![
                (c.datagrams_in, KeyValue::new("direction", "in")),
                (c.datagrams_out, KeyValue::new("direction", "out")),
            ]
        });
        socket_counter(
            "parley.media.forwarded",
            "RTP packets forwarded to subscribers, by path between driver threads",
            |c| {
                vec![
                    (c.forwarded_inline, KeyValue::new("path", "inline")),
                    (c.forwarded_across, KeyValue::new("path", "across")),
                ]
            },
        );
        socket_counter(
            "parley.media.dropped",
            "Datagrams not delivered, by reason (unclaimed address, refused by its connection, a full queue between threads)",
            |c| {
                vec![
                    (c.unclaimed, KeyValue::new("reason", "unclaimed")),
                    (c.refused, KeyValue::new("reason", "refused")),
                    (c.dropped_across, KeyValue::new("reason", "queue_full")),
                ]
            },
        );

        m.f64_observable_counter("parley.process.cpu")
            .with_unit("s")
            .with_description("CPU time this process used (user + system)")
            .with_callback(|o| {
                if let Some(p) = super::process::sample() {
                    o.observe(p.cpu_seconds, &[]);
                }
            })
            .build();
        m.u64_observable_gauge("parley.process.memory")
            .with_unit("By")
            .with_description("Resident memory of this process")
            .with_callback(|o| {
                if let Some(p) = super::process::sample() {
                    o.observe(p.resident_bytes, &[]);
                }
            })
            .build();
        // The forward-latency histogram is read in `render`: nothing to register.
    }

    /// Everything, as Prometheus text exposition (format 0.0.4).
    pub fn render(&self, services: &LiveServices) -> Result<String, MetricsError> {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut out)
            .map_err(|e| MetricsError::Encode(e.to_string()))?;
        let mut text = String::from_utf8(out).map_err(|e| MetricsError::Encode(e.to_string()))?;
        if let Some(socket) = &services.media.shared_socket {
            render_forward_latency(&mut text, &socket.stats().forward_latency);
        }
        Ok(text)
    }

    /// Flushes and stops the provider (at node shutdown).
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::debug!(error = %e, "metrics provider shutdown");
        }
    }
}

/// The shared media socket's cumulative counters, when the node has one.
struct SocketCounts {
    datagrams_in: u64,
    datagrams_out: u64,
    forwarded_inline: u64,
    forwarded_across: u64,
    unclaimed: u64,
    refused: u64,
    dropped_across: u64,
}

impl SocketCounts {
    fn of(s: &LiveServices) -> Option<SocketCounts> {
        let st = s.media.shared_socket.as_ref()?.stats();
        Some(SocketCounts {
            datagrams_in: st.datagrams_in,
            datagrams_out: st.datagrams_out,
            forwarded_inline: st.forwarded_inline,
            forwarded_across: st.forwarded_across,
            unclaimed: st.unclaimed,
            refused: st.refused,
            dropped_across: st.dropped_across,
        })
    }
}

/// `parley_media_forward_latency_seconds` from the socket's fine cumulative bucket counts:
/// from reading a datagram to sending the packet it carried on. `_sum` adds each packet at its
/// fine bucket's upper bound (at most 10 % above its true time).
fn render_forward_latency(out: &mut String, snapshot: &LatencySnapshot) {
    const NAME: &str = "parley_media_forward_latency_seconds";
    let _ = writeln!(out, "# HELP {NAME} Time a forwarded RTP packet spent in this node (read to send on)");
    let _ = writeln!(out, "# TYPE {NAME} histogram");
    let fine_upper_s = |i: usize| latency::bucket_upper_us(i) / 1e6;
    let mut cumulative = 0u64;
    let mut sum = 0f64;
    let mut next_fine = 0usize;
    for bound in FORWARD_LATENCY_BOUNDS_S {
        // The largest fine bound not above `bound`, and every count up to it.
        let mut shown = None;
        while next_fine < snapshot.counts.len() && fine_upper_s(next_fine) <= bound {
            let n = snapshot.counts[next_fine];
            cumulative += n;
            sum += n as f64 * fine_upper_s(next_fine);
            shown = Some(fine_upper_s(next_fine));
            next_fine += 1;
        }
        if let Some(le) = shown {
            let _ = writeln!(out, "{NAME}_bucket{{le=\"{}\"}} {cumulative}", format_le(le));
        }
    }
    for i in next_fine..snapshot.counts.len() {
        cumulative += snapshot.counts[i];
        sum += snapshot.counts[i] as f64 * fine_upper_s(i);
    }
    let _ = writeln!(out, "{NAME}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{NAME}_sum {sum}");
    let _ = writeln!(out, "{NAME}_count {cumulative}");
}

/// A bound with enough digits to tell neighbouring fine buckets apart.
fn format_le(seconds: f64) -> String {
    format!("{seconds:.9}").trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forward_latency_folds_fine_buckets_into_cumulative_prometheus_buckets() {
        let h = latency::LatencyHistogram::default();
        for us in [20u64, 20, 80, 400, 3_000, 3_000_000] {
            h.record(std::time::Duration::from_micros(us));
        }
        let mut text = String::new();
        render_forward_latency(&mut text, &h.snapshot());
        let buckets: Vec<(f64, u64)> = text
            .lines()
            .filter_map(|l| l.strip_prefix("parley_media_forward_latency_seconds_bucket{le=\""))
            .filter_map(|l| l.split_once("\"} "))
            .map(|(le, n)| (if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap() }, n.parse().unwrap()))
            .collect();
        assert!(buckets.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1), "{text}");
        // Every shown bound is at or under its nominal one, and counts what is under it.
        let at = |nominal: f64| buckets.iter().rfind(|(le, _)| *le <= nominal).map(|b| b.1).unwrap();
        assert_eq!(at(0.00005), 2, "{text}");
        assert_eq!(at(0.0001), 3, "{text}");
        assert_eq!(at(0.0005), 4, "{text}");
        assert_eq!(at(0.005), 5, "{text}");
        assert_eq!(at(1.0), 5, "the 3 s packet is above every finite bound\n{text}");
        assert_eq!(buckets.last().unwrap(), &(f64::INFINITY, 6));
        assert!(text.contains("parley_media_forward_latency_seconds_count 6"), "{text}");
        let sum: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("parley_media_forward_latency_seconds_sum "))
            .unwrap()
            .parse()
            .unwrap();
        let exact = (20.0 + 20.0 + 80.0 + 400.0 + 3_000.0 + 3_000_000.0) / 1e6;
        // The last fine bucket is open-ended (~2 s upper bound), so the 3 s packet counts at it.
        assert!(sum > 1.5 && sum < exact * 1.1, "sum {sum} vs {exact}");
    }

    #[test]
    fn an_empty_histogram_still_renders_count_zero() {
        let mut text = String::new();
        render_forward_latency(&mut text, &latency::LatencyHistogram::default().snapshot());
        assert!(text.contains("# TYPE parley_media_forward_latency_seconds histogram"));
        assert!(text.contains("parley_media_forward_latency_seconds_bucket{le=\"+Inf\"} 0"));
        assert!(text.contains("parley_media_forward_latency_seconds_count 0"));
    }
}
