//! What a node tells its operators: metrics at `GET /metrics` (Prometheus text from
//! OpenTelemetry instruments).

pub mod metrics;
mod process;

pub use metrics::NodeMetrics;
