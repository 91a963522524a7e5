//! What a node tells its operators: metrics at `GET /metrics` (Prometheus text from
//! OpenTelemetry instruments), traces over OTLP (`traces`), and the vitals the supervisor
//! dashboard shows.

pub mod calls;
pub mod metrics;
mod process;
pub mod traces;
pub mod vitals;

pub use metrics::NodeMetrics;
