//! Tracing across the pair: both services export their spans over OTLP to a
//! receiver run inside the test, and one handshake is one trace from the
//! gateway into auth, continuing the client's W3C `traceparent`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use serde_json::json;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use wsauth_tests::{
    AuthOptions, GatewayOptions, Jwt, STEP, TestAuth, TestGateway, TestRedis, WsClient, wait_until,
};

/// Exported batches arrive every 100 ms (`OTEL_BSP_SCHEDULE_DELAY`); this
/// leaves room for a loaded machine.
const EXPORTED: Duration = Duration::from_secs(20);

/// One exported span: which service, its name, its trace id in hex.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SpanSeen {
    service: String,
    name: String,
    trace_id: String,
}

/// An OTLP/gRPC trace collector that keeps what it is sent.
#[derive(Clone, Default)]
struct Receiver {
    spans: Arc<Mutex<Vec<SpanSeen>>>,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let mut seen = Vec::new();
        for resource_spans in request.into_inner().resource_spans {
            let service = resource_spans
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| attribute.value.as_ref()?.value.as_ref())
                .map(|value| match value {
                    Value::StringValue(name) => name.clone(),
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for span in resource_spans
                .scope_spans
                .into_iter()
                .flat_map(|scope| scope.spans)
            {
                seen.push(SpanSeen {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                });
            }
        }
        self.spans.lock().expect("not poisoned").extend(seen);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Receiver {
    async fn serve() -> (Self, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let receiver = Self::default();
        let service = TraceServiceServer::new(receiver.clone());
        tokio::spawn(
            Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpIncoming::from(listener)),
        );
        (receiver, addr)
    }

    /// `(service, name)` of every span exported in `trace_id`.
    fn trace(&self, trace_id: &str) -> BTreeSet<(String, String)> {
        self.spans
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|span| span.trace_id == trace_id)
            .map(|span| (span.service.clone(), span.name.clone()))
            .collect()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn exporting_to(collector: SocketAddr) -> [(&'static str, String); 2] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{collector}")),
        ("OTEL_BSP_SCHEDULE_DELAY", "100".to_string()),
    ]
}

fn pair(names: &[(&str, &str)]) -> BTreeSet<(String, String)> {
    names
        .iter()
        .map(|(service, name)| (service.to_string(), name.to_string()))
        .collect()
}

#[tokio::test]
async fn one_handshake_is_one_trace_across_the_gateway_and_auth() {
    let (receiver, collector) = Receiver::serve().await;
    let redis = TestRedis::spawn();
    let mut auth_options = AuthOptions::default();
    let mut gateway_options = GatewayOptions::default();
    for (name, value) in exporting_to(collector) {
        auth_options = auth_options.env(name, &value);
        gateway_options = gateway_options.env(name, &value);
    }
    let auth = TestAuth::spawn(Some(&redis), auth_options).await;
    let gateway = TestGateway::spawn(&[&auth], gateway_options).await;

    // A client that sends its own trace context on both requests.
    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let traceparent = format!("00-{trace_id}-00f067aa0ba902b7-01");
    let jwt = Jwt::for_user("tracy").sign();
    let response = gateway
        .get(
            "/token/ws",
            &[
                ("authorization", &format!("Bearer {jwt}")),
                ("traceparent", &traceparent),
            ],
        )
        .await;
    assert_eq!(response.status, 200, "{}", response.body);
    let token = response.json()["token"]
        .as_str()
        .expect("a token")
        .to_string();
    let mut client = WsClient::connect_to(
        gateway.addr(),
        &format!("/ws?token={token}"),
        &[("traceparent", &traceparent)],
        None,
    )
    .await
    .expect("101");
    client.send_jwt(&jwt).await;
    assert_eq!(
        client.recv_json(STEP).await,
        json!({"type": "auth_ok", "user_id": "tracy"})
    );

    let expected = pair(&[
        ("wsauth-gateway", "GET /token/ws"),
        ("wsauth-auth", "wsauth.v1.AuthService/IssueWsToken"),
        ("wsauth-gateway", "GET /ws"),
        ("wsauth-auth", "wsauth.v1.AuthService/ValidateToken"),
        ("wsauth-auth", "wsauth.v1.AuthService/VerifyJwt"),
    ]);
    wait_until(
        EXPORTED,
        "both services exported the handshake's spans in the client's trace",
        || async { receiver.trace(&trace_id).is_superset(&expected) },
    )
    .await;

    // Without a traceparent the gateway starts the trace, and auth joins it.
    let plain = WsClient::authenticated(&gateway, "untraced").await;
    let upgrade = pair(&[
        ("wsauth-gateway", "GET /ws"),
        ("wsauth-auth", "wsauth.v1.AuthService/ValidateToken"),
        ("wsauth-auth", "wsauth.v1.AuthService/VerifyJwt"),
    ]);
    wait_until(EXPORTED, "the gateway's own trace reaches auth", || async {
        let started: BTreeSet<String> = receiver
            .spans
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|span| span.name == "GET /ws" && span.trace_id != trace_id)
            .map(|span| span.trace_id.clone())
            .collect();
        started
            .iter()
            .any(|id| receiver.trace(id).is_superset(&upgrade))
    })
    .await;
    drop((client, plain));
}
