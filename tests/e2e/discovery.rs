//! `AUTH_URL=dns:///localhost:PORT` through the system resolver, with the
//! real binaries: the gateway finds auth behind the name and a WebSocket
//! authenticates end to end. (Balancing over several replicas behind a name,
//! and following the name as it changes, is tested against real auths with
//! an injected resolver in `services/gateway/tests/discovery.rs`.)

use std::time::Duration;

use wsauth_tests::{AuthOptions, GatewayOptions, TestAuth, TestGateway, TestRedis, WsClient};

#[tokio::test]
async fn a_gateway_finds_auth_behind_a_dns_name_with_the_system_resolver() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(Some(&redis), AuthOptions::default()).await;
    let auth_url = format!("dns:///localhost:{}", auth.addr().port());
    let gateway = TestGateway::spawn_with_auth_url(
        &auth_url,
        GatewayOptions::default().env("AUTH_RESOLVE_INTERVAL_S", 1),
    )
    .await;
    gateway.wait_ready(Duration::from_secs(20)).await;
    let mut client = WsClient::authenticated(&gateway, "dns-user").await;
    client.echo("through the name").await;
    assert!(
        gateway.logs().contains("auth replicas resolved"),
        "the gateway says what the name resolved to"
    );
}
