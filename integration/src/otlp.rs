//! An OTLP/HTTP trace collector for tests and benchmarks: `POST /v1/traces` on a loopback port,
//! decoding the real protobuf the nodes post (`ExportTraceServiceRequest`), answering as a
//! collector does. It either keeps every span ([`collector`]) or only counts them
//! ([`counting_collector`], for long benchmark runs).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

/// One span as received.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// `service.instance.id` of its resource: the node.
    pub node: String,
    pub name: String,
    pub trace_id: Vec<u8>,
    pub span_id: Vec<u8>,
    /// Empty for a root span.
    pub parent: Vec<u8>,
    pub attributes: BTreeMap<String, String>,
}

/// Every span received so far, in arrival order.
pub type Spans = Arc<Mutex<Vec<ReceivedSpan>>>;

#[derive(Clone)]
enum Sink {
    Keep(Spans),
    Count(Arc<AtomicU64>),
}

fn text(v: &Option<AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        other => format!("{other:?}"),
    }
}

fn attrs(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect()
}

async fn receive(State(sink): State<Sink>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    match sink {
        Sink::Count(n) => {
            let spans: usize =
                request.resource_spans.iter().flat_map(|rs| &rs.scope_spans).map(|ss| ss.spans.len()).sum();
            n.fetch_add(spans as u64, Ordering::Relaxed);
        }
        Sink::Keep(spans) => {
            let mut got = Vec::new();
            for rs in request.resource_spans {
                let resource = attrs(&rs.resource.map(|r| r.attributes).unwrap_or_default());
                let node = resource.get("service.instance.id").cloned().unwrap_or_default();
                for ss in rs.scope_spans {
                    for s in ss.spans {
                        got.push(ReceivedSpan {
                            node: node.clone(),
                            name: s.name,
                            trace_id: s.trace_id,
                            span_id: s.span_id,
                            parent: s.parent_span_id,
                            attributes: attrs(&s.attributes),
                        });
                    }
                }
            }
            spans.lock().unwrap_or_else(|e| e.into_inner()).extend(got);
        }
    }
    (StatusCode::OK, ExportTraceServiceResponse::default().encode_to_vec())
}

async fn serve(sink: Sink) -> String {
    let app = axum::Router::new().route("/v1/traces", axum::routing::post(receive)).with_state(sink);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the OTLP collector");
    let url = format!("http://{}", listener.local_addr().expect("collector address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    url
}

/// A collector that keeps every span; returns its endpoint (for `PARLEY_OTLP_ENDPOINT`).
pub async fn collector() -> (String, Spans) {
    let spans: Spans = Arc::default();
    (serve(Sink::Keep(spans.clone())).await, spans)
}

/// A collector that decodes every export and counts its spans.
pub async fn counting_collector() -> (String, Arc<AtomicU64>) {
    let n = Arc::new(AtomicU64::new(0));
    (serve(Sink::Count(n.clone())).await, n)
}
