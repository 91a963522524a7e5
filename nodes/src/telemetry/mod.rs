//! What a node tells its operators: metrics at `GET /metrics` (Prometheus text from
//! OpenTelemetry instruments), and the vitals the supervisor dashboard shows.

pub mod metrics;
mod process;
pub mod vitals;

pub use metrics::NodeMetrics;
