//! An auth replica that accepts connections and never answers, listed first
//! in `AUTH_URL` beside a working one: the gateway must still serve.

use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use wsauth_tests::{
    AuthOptions, GatewayOptions, Jwt, STEP, TestAuth, TestGateway, TestRedis, WsClient, warm_up,
};

/// A real peer that accepts TCP connections and holds them without a byte
/// of answer: what a hung auth process looks like from outside.
async fn silent_replica() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    url
}

#[tokio::test]
async fn a_replica_that_never_answers_does_not_stop_the_gateway() {
    const CALL_TIMEOUT_MS: u64 = 1000;
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(Some(&redis), AuthOptions::default()).await;
    let auth_url = format!("{},{}", silent_replica().await, auth.url());
    let gateway = TestGateway::spawn_with_auth_url(
        &auth_url,
        GatewayOptions::default().auth_call_timeout_ms(CALL_TIMEOUT_MS),
    )
    .await;
    // Subscribe gets past the silent replica.
    gateway.wait_ready(Duration::from_secs(20)).await;

    let mut refused = 0;
    for user in ["alice", "bob", "carol", "dave", "erin", "frank"] {
        let jwt = Jwt::for_user(user).sign();
        let client = loop {
            // IssueWsToken may be sent again: it always fails over, in time.
            let started = Instant::now();
            let token = gateway.ws_token(&jwt).await;
            assert!(
                started.elapsed() < Duration::from_millis(CALL_TIMEOUT_MS + 500),
                "/token/ws took {:?}",
                started.elapsed()
            );
            // ValidateToken is never sent twice (the silent replica may have
            // consumed the token), so it may answer 503; the silent replica
            // is then tried last and the next try goes to the working one.
            match WsClient::connect(gateway.addr(), &token, None).await {
                Ok(client) => break client,
                Err(503) => {
                    refused += 1;
                    assert!(refused <= 3, "503 again and again: no failover");
                }
                Err(status) => panic!("upgrade for {user} refused with {status}"),
            }
        };
        let mut client = client;
        // VerifyJwt fails over like IssueWsToken.
        client.send_jwt(&jwt).await;
        let first = client.recv_json(STEP).await;
        assert_eq!(first["type"], "auth_ok", "{first}");
        client.echo("still served").await;
    }
    // Events still flow through the working replica.
    let mut listener = WsClient::authenticated(&gateway, "grace").await;
    warm_up(&auth, &mut [&mut listener]).await;
    let id = auth.publish("seen live", None).await;
    assert_eq!(listener.recv_type("broadcast", STEP).await["id"], id);
}
