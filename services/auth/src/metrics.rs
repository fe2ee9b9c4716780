//! auth's Prometheus metrics (prometheus-client), served over HTTP at
//! `/metrics` on `AUTH_METRICS_LISTEN`. Every labelled handle is created at
//! setup; recording is an atomic add or one histogram observation.
//!
//! - [`grpc`]: a tower layer counting every call by RPC and status code;
//! - [`store`]: a [`crate::store::Store`] decorator timing each store call.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub mod grpc;
pub mod store;

pub use grpc::GrpcMetricsLayer;
pub use store::MeteredStore;

/// The Prometheus text format's media type.
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Every RPC auth serves, as `(grpc_service, grpc_method)`; a call to any
/// other path is counted as `("unknown", "unknown")`, so a scanner cannot
/// grow the label sets.
const RPCS: [(&str, &str); 14] = [
    ("wsauth.v1.AuthService", "IssueWsToken"),
    ("wsauth.v1.AuthService", "ValidateToken"),
    ("wsauth.v1.AuthService", "VerifyJwt"),
    ("wsauth.v1.AuthService", "RevokeJwt"),
    ("wsauth.v1.AuthService", "RevokeUser"),
    ("wsauth.v1.BroadcastService", "Publish"),
    ("wsauth.v1.BroadcastService", "History"),
    ("wsauth.v1.BroadcastService", "Subscribe"),
    ("wsauth.v1.AdminService", "ListGateways"),
    ("wsauth.v1.AdminService", "Presence"),
    ("wsauth.v1.AdminService", "ReportGateway"),
    ("grpc.health.v1.Health", "Check"),
    ("grpc.health.v1.Health", "Watch"),
    ("unknown", "unknown"),
];

/// gRPC status codes by number, as the `grpc_code` label (the names of
/// the gRPC specification's status code table).
const CODES: [&str; 17] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// The store calls, as the `op` label (one per [`crate::store::Store`] method
/// that reaches Redis).
pub const STORE_OPS: [&str; 8] = [
    "issue_ws_token",
    "take_ws_token",
    "revoke_jti",
    "revoke_user",
    "revocation",
    "append",
    "read_after",
    "stream_end",
];

/// How a store call failed, as the `kind` label.
pub const STORE_ERRORS: [&str; 3] = ["unavailable", "corrupt", "failed"];

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RpcLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RpcCodeLabels {
    grpc_service: &'static str,
    grpc_method: &'static str,
    grpc_code: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpErrorLabels {
    op: &'static str,
    kind: &'static str,
}

/// RPC latencies: 0.25 ms to ~4 s.
fn rpc_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.00025, 2.0, 15))
}

/// Store latencies: 0.1 ms to ~1.6 s.
fn store_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0001, 2.0, 15))
}

/// One RPC's handles.
pub(crate) struct RpcHandles {
    /// Indexed by the status code's number.
    pub(crate) handled: Vec<Counter>,
    pub(crate) seconds: Histogram,
    /// Whether this is the Subscribe stream (counted while open).
    pub(crate) is_subscribe: bool,
}

/// One store operation's handles.
pub(crate) struct OpHandles {
    pub(crate) seconds: Histogram,
    /// Indexed as [`STORE_ERRORS`].
    pub(crate) errors: Vec<Counter>,
}

struct Inner {
    registry: Registry,
    /// Indexed as [`RPCS`].
    rpcs: Vec<RpcHandles>,
    subscribe_streams: Gauge,
    /// Indexed as [`STORE_OPS`].
    store_ops: Vec<OpHandles>,
    events_published: Counter,
    reader_lag: Gauge<f64, AtomicU64>,
}

/// auth's metrics: a cheap-clone handle.
#[derive(Clone)]
pub struct AuthMetrics {
    inner: Arc<Inner>,
}

impl Default for AuthMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl AuthMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();

        let handled = Family::<RpcCodeLabels, Counter>::default();
        registry.register(
            "wsauth_auth_grpc_server_handled",
            "gRPC calls completed, by RPC and status code.",
            handled.clone(),
        );
        let handling = Family::<RpcLabels, Histogram>::new_with_constructor(
            rpc_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "wsauth_auth_grpc_server_handling",
            "Time from a call's arrival to its status (a Subscribe stream's whole life)",
            Unit::Seconds,
            handling.clone(),
        );
        let rpcs = RPCS
            .iter()
            .map(|&(grpc_service, grpc_method)| RpcHandles {
                handled: CODES
                    .iter()
                    .map(|&grpc_code| {
                        handled.get_or_create_owned(&RpcCodeLabels {
                            grpc_service,
                            grpc_method,
                            grpc_code,
                        })
                    })
                    .collect(),
                seconds: handling.get_or_create_owned(&RpcLabels {
                    grpc_service,
                    grpc_method,
                }),
                is_subscribe: grpc_method == "Subscribe",
            })
            .collect();

        let subscribe_streams = Gauge::default();
        registry.register(
            "wsauth_auth_subscribe_streams",
            "Subscribe streams open now (one per connected gateway, normally)",
            subscribe_streams.clone(),
        );

        let store_seconds = Family::<OpLabels, Histogram>::new_with_constructor(
            store_histogram as fn() -> Histogram,
        );
        registry.register_with_unit(
            "wsauth_auth_store_call_duration",
            "Latency of store (Redis) calls, by operation",
            Unit::Seconds,
            store_seconds.clone(),
        );
        let store_errors = Family::<OpErrorLabels, Counter>::default();
        registry.register(
            "wsauth_auth_store_errors",
            "Failed store (Redis) calls, by operation and kind",
            store_errors.clone(),
        );
        let store_ops = STORE_OPS
            .iter()
            .map(|&op| OpHandles {
                seconds: store_seconds.get_or_create_owned(&OpLabels { op }),
                errors: STORE_ERRORS
                    .iter()
                    .map(|&kind| store_errors.get_or_create_owned(&OpErrorLabels { op, kind }))
                    .collect(),
            })
            .collect();

        let events_published = Counter::default();
        registry.register(
            "wsauth_auth_events_published",
            "Events appended to the stream by this replica",
            events_published.clone(),
        );
        let reader_lag = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "wsauth_auth_stream_reader_lag",
            "Age of the last event the stream reader handed to subscribers, when it did",
            Unit::Seconds,
            reader_lag.clone(),
        );

        Self {
            inner: Arc::new(Inner {
                registry,
                rpcs,
                subscribe_streams,
                store_ops,
                events_published,
                reader_lag,
            }),
        }
    }

    /// Which RPC a request `path` (`/package.Service/Method`) calls.
    pub(crate) fn rpc_index(path: &str) -> usize {
        let (service, method) = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .unwrap_or(("unknown", "unknown"));
        RPCS.iter()
            .position(|&(s, m)| s == service && m == method)
            .unwrap_or(RPCS.len() - 1)
    }

    /// The handles of the RPC at `index` (from [`Self::rpc_index`]).
    pub(crate) fn rpc(&self, index: usize) -> &RpcHandles {
        &self.inner.rpcs[index]
    }

    pub(crate) fn subscribe_streams(&self) -> &Gauge {
        &self.inner.subscribe_streams
    }

    /// The handles of the store operation at `index` in [`STORE_OPS`].
    pub(crate) fn store_op(&self, index: usize) -> &OpHandles {
        &self.inner.store_ops[index]
    }

    pub(crate) fn event_published(&self) {
        self.inner.events_published.inc();
    }

    /// Records how old an event was when the reader handed it on.
    pub fn reader_lag(&self, lag: Duration) {
        self.inner.reader_lag.set(lag.as_secs_f64());
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// The name of a gRPC status code number, for labels and logs.
pub(crate) fn code_index(status: &[u8]) -> usize {
    std::str::from_utf8(status)
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .filter(|&code| code < CODES.len())
        // A status that is not a known code: UNKNOWN, as gRPC clients read it.
        .unwrap_or(2)
}

/// Serves `/metrics` on `listener` until `stop`.
pub async fn serve(listener: TcpListener, metrics: AuthMetrics, stop: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(render))
        .with_state(metrics);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "metrics server failed");
    }
}

async fn render(State(metrics): State<AuthMetrics>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], metrics.render())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_map_to_known_rpcs_or_unknown() {
        let metrics = AuthMetrics::new();
        let rpc = |path| metrics.rpc(AuthMetrics::rpc_index(path));
        assert!(rpc("/wsauth.v1.BroadcastService/Subscribe").is_subscribe);
        rpc("/wsauth.v1.BroadcastService/Subscribe").handled[0].inc();
        rpc("/wsauth.v1.AuthService/Nope").handled[16].inc();
        rpc("garbage").handled[16].inc();
        let text = metrics.render();
        for line in [
            "wsauth_auth_grpc_server_handled_total{grpc_service=\"wsauth.v1.BroadcastService\",grpc_method=\"Subscribe\",grpc_code=\"OK\"} 1\n",
            "wsauth_auth_grpc_server_handled_total{grpc_service=\"unknown\",grpc_method=\"unknown\",grpc_code=\"UNAUTHENTICATED\"} 2\n",
            "wsauth_auth_grpc_server_handling_seconds_count{grpc_service=\"wsauth.v1.AuthService\",grpc_method=\"VerifyJwt\"} 0\n",
            "wsauth_auth_subscribe_streams 0\n",
            "wsauth_auth_events_published_total 0\n",
            "wsauth_auth_stream_reader_lag_seconds 0",
            "wsauth_auth_store_errors_total{op=\"append\",kind=\"unavailable\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[test]
    fn status_codes_parse_with_unknown_for_anything_else() {
        assert_eq!(CODES[code_index(b"0")], "OK");
        assert_eq!(CODES[code_index(b"16")], "UNAUTHENTICATED");
        assert_eq!(CODES[code_index(b"17")], "UNKNOWN");
        assert_eq!(CODES[code_index(b"x")], "UNKNOWN");
    }
}
