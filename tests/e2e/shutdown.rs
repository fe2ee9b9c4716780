//! SIGTERM: clients are told (1001) and the processes exit within their grace.

use std::time::Duration;

use futures::future::join_all;
use wsauth_tests::{AuthOptions, Cluster, GatewayOptions, Jwt, WsClient};

#[tokio::test]
async fn sigterm_closes_every_client_with_1001_and_the_gateway_exits_promptly() {
    let mut stack = Cluster::single(
        AuthOptions::default(),
        GatewayOptions::default().shutdown_grace_s(3),
    )
    .await;
    let mut clients = Vec::new();
    for user in ["alice", "bob", "carol"] {
        clients.push(WsClient::authenticated(stack.gateway(), user).await);
    }
    let token = stack
        .gateway()
        .ws_token(&Jwt::for_user("dave").sign())
        .await;
    let mut in_phase_2 = WsClient::connect(stack.gateway().addr(), &token, None)
        .await
        .expect("upgrade");

    stack.gateways[0].terminate().await;

    join_all(
        clients
            .iter_mut()
            .map(|c| c.expect_close(1001, Duration::from_secs(5))),
    )
    .await;
    let (_, code) = in_phase_2.drain_until_close(Duration::from_secs(5)).await;
    assert_eq!(code, Some(1001), "a socket still in phase 2");
    let status = stack.gateways[0]
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("the gateway exits within its grace");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn sigterm_stops_auth_promptly_even_with_a_gateway_subscribed() {
    let mut stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    stack.wait_ready().await;

    stack.auths[0].terminate().await;

    let status = stack.auths[0]
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("auth exits within its grace");
    assert!(status.success(), "exit status {status:?}");
}
