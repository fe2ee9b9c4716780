//! `/metrics` of both services, scraped from running processes: auth's calls
//! by RPC and code, store calls, Subscribe streams, events; the gateway's
//! refusals and its latency of calls to auth.

use std::time::Duration;

use wsauth_tests::metrics::sample_sum;
use wsauth_tests::{AuthOptions, Cluster, GatewayOptions, Jwt, WsClient, wait_until};

/// The value of one exact series (`name{labels}`) in `text`, 0 when absent.
fn series(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn auth_counts_calls_by_rpc_and_code_store_calls_streams_and_events() {
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    stack.wait_ready().await;
    let (auth, gateway) = (stack.auth(), stack.gateway());

    let mut client = WsClient::authenticated(gateway, "mia").await;
    let refused = gateway
        .token_ws(Some(&Jwt::for_user("mia").expires_in(-120).sign()))
        .await;
    assert_eq!(refused.status, 401);
    auth.publish("hello", None).await;
    client.recv_type("broadcast", Duration::from_secs(10)).await;

    let text = auth.metrics().await;
    let handled = |service: &str, method: &str, code: &str| {
        series(
            &text,
            &format!(
                "wsauth_auth_grpc_server_handled_total{{grpc_service=\"wsauth.v1.{service}\",grpc_method=\"{method}\",grpc_code=\"{code}\"}}"
            ),
        )
    };
    assert_eq!(handled("AuthService", "IssueWsToken", "OK"), 1.0, "{text}");
    assert_eq!(
        handled("AuthService", "IssueWsToken", "UNAUTHENTICATED"),
        1.0,
        "{text}"
    );
    assert_eq!(handled("AuthService", "ValidateToken", "OK"), 1.0, "{text}");
    assert_eq!(handled("AuthService", "VerifyJwt", "OK"), 1.0, "{text}");
    assert_eq!(handled("BroadcastService", "Publish", "OK"), 1.0, "{text}");
    assert_eq!(
        series(
            &text,
            "wsauth_auth_grpc_server_handling_seconds_count{grpc_service=\"wsauth.v1.AuthService\",grpc_method=\"VerifyJwt\"}"
        ),
        1.0
    );
    assert_eq!(
        series(&text, "wsauth_auth_subscribe_streams"),
        1.0,
        "{text}"
    );
    assert_eq!(
        series(&text, "wsauth_auth_events_published_total"),
        1.0,
        "{text}"
    );
    assert!(
        series(
            &text,
            "wsauth_auth_store_call_duration_seconds_count{op=\"take_ws_token\"}"
        ) >= 1.0
    );
    assert!(
        series(
            &text,
            "wsauth_auth_store_call_duration_seconds_count{op=\"append\"}"
        ) >= 1.0
    );
    assert_eq!(
        sample_sum(&text, "wsauth_auth_store_errors_total"),
        Some(0.0)
    );
    let lag = series(&text, "wsauth_auth_stream_reader_lag_seconds");
    assert!((0.0..5.0).contains(&lag), "reader lag {lag}");

    let gateway_text = gateway.metrics().await;
    assert_eq!(
        series(
            &gateway_text,
            "wsauth_gateway_auth_call_duration_seconds_count{method=\"ValidateToken\"}"
        ),
        1.0,
        "{gateway_text}"
    );
    assert_eq!(
        series(
            &gateway_text,
            "wsauth_gateway_http_refusals_total{route=\"/token/ws\",reason=\"unauthorized\"}"
        ),
        1.0,
        "{gateway_text}"
    );

    // The gateway leaving ends its stream: the gauge follows.
    let mut stack = stack;
    stack.gateways[0].kill().await;
    wait_until(
        Duration::from_secs(10),
        "auth sees the Subscribe stream end",
        || async {
            series(
                &stack.auth().metrics().await,
                "wsauth_auth_subscribe_streams",
            ) == 0.0
        },
    )
    .await;
}

#[tokio::test]
async fn metrics_names_follow_prometheus_conventions() {
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    for text in [
        stack.auth().metrics().await,
        stack.gateway().metrics().await,
    ] {
        for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
            let mut parts = line["# TYPE ".len()..].split(' ');
            let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            assert!(name.starts_with("wsauth_"), "{line}");
            match kind {
                "counter" => assert!(name.ends_with("_total"), "{line}"),
                "histogram" => assert!(name.ends_with("_seconds"), "{line}"),
                "gauge" => assert!(!name.ends_with("_total"), "{line}"),
                other => panic!("unexpected type {other}: {line}"),
            }
        }
    }
}
