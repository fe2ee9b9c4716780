//! Session edge cases: writes that cannot finish, ping floods, the close
//! handshake, JWTs inside auth's leeway, refreshes while auth is down, and
//! `since` replays longer than one History page.

use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wsauth_tests::{
    AuthOptions, Cluster, Frame, GatewayOptions, Jwt, STEP, WsClient, collect_events, wait_until,
    warm_up,
};

/// Events big enough that a few MiB of them fill the kernel buffers between
/// the gateway and a client that does not read.
const BIG_EVENT: usize = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_with_1008_and_leaves_the_registry() {
    // The longest queue SEND_QUEUE_CAPACITY allows, far longer than the run:
    // only the write deadline can end it.
    let stack = Cluster::single(
        AuthOptions::default(),
        GatewayOptions::default().send_queue_capacity(65_536),
    )
    .await;
    stack.wait_ready().await;
    let gateway = stack.gateway();
    let mut deaf = WsClient::authenticated_slow_reader(gateway, "deaf").await;
    assert_eq!(gateway.gauge("wsauth_gateway_connections_open").await, 1.0);

    // ~9 MB, more than the socket buffers hold: the gateway's write blocks.
    const EVENTS: usize = 150;
    for i in 0..EVENTS {
        let data = format!("big-{i:04}-{}", "x".repeat(BIG_EVENT));
        stack.auth().publish(&data, None).await;
    }

    wait_until(
        Duration::from_secs(30),
        "the blocked session left the registry",
        || async { gateway.gauge("wsauth_gateway_connections_open").await == 0.0 },
    )
    .await;
    let (events, code) = deaf.drain_until_close(Duration::from_secs(30)).await;
    assert_eq!(code, Some(1008), "close code after {} events", events.len());
    assert!(
        events.len() < EVENTS,
        "the gateway gave up before sending everything"
    );
}

#[tokio::test]
async fn a_ping_flood_counts_against_the_rate_and_closes_with_1008() {
    let stack = Cluster::single(
        AuthOptions::default(),
        GatewayOptions::default().max_messages_per_s(5),
    )
    .await;
    let mut client = WsClient::authenticated(stack.gateway(), "alice").await;

    for _ in 0..60 {
        // The gateway may close (and reset) before all of them are written.
        if client
            .try_send(Message::Ping(Default::default()))
            .await
            .is_err()
        {
            break;
        }
    }

    let (frames, code) = client.drain_until_close(STEP).await;
    assert_eq!(code, Some(1008), "after {} frames", frames.len());
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    let mut client = WsClient::authenticated(stack.gateway(), "alice").await;

    client
        .send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "bye".into(),
        })))
        .await;

    assert_eq!(
        client.next_frame(STEP).await,
        Some(Frame::Close(Some(1000))),
        "the gateway completes the closing handshake"
    );
    wait_until(STEP, "the connection left the registry", || async {
        stack
            .gateway()
            .gauge("wsauth_gateway_connections_open")
            .await
            == 0.0
    })
    .await;
}

#[tokio::test]
async fn a_jwt_past_exp_but_inside_auths_leeway_closes_4401_without_auth_ok() {
    let stack = Cluster::single(
        AuthOptions::default().leeway_s(30),
        GatewayOptions::default(),
    )
    .await;
    let jwt = Jwt::for_user("alice").expires_in(-5).sign();
    // Auth itself accepts it (leeway), so the ws token is issued.
    let token = stack.gateway().ws_token(&jwt).await;
    let mut client = WsClient::connect(stack.gateway().addr(), &token, None)
        .await
        .expect("upgrade");

    client.send_jwt(&jwt).await;

    client.expect_close(4401, STEP).await;
}

#[tokio::test]
async fn a_refresh_that_auth_cannot_check_keeps_echoing_and_closes_1011_at_exp() {
    let mut stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    let jwt = Jwt::for_user("alice").expires_in(4).sign();
    let mut client = WsClient::authenticated_with(stack.gateway(), &jwt, "alice", None).await;

    stack.auths[0].kill().await;
    client
        .send_jwt(&Jwt::for_user("alice").expires_in(3600).sign())
        .await;
    // The refresh is checked beside the connection, not in its way.
    client.echo("while the refresh is being checked").await;

    // At exp the refresh is tried again; auth still down: 1011, not 4401.
    let (frames, code) = client.drain_until_close(Duration::from_secs(15)).await;
    assert_eq!(code, Some(1011), "after {frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_since_replay_longer_than_one_history_page_arrives_whole_and_in_order() {
    /// More than auth's largest History page (1000).
    const MISSED: usize = 1_100;
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    stack.wait_ready().await;
    let auth = stack.auth();
    let mut alice = WsClient::authenticated(stack.gateway(), "alice").await;
    warm_up(auth, &mut [&mut alice]).await;
    let seen = auth.publish("seen", None).await;
    assert_eq!(alice.recv_type("broadcast", STEP).await["id"], seen);
    alice.close().await;

    let mut ids = Vec::with_capacity(MISSED);
    for i in 0..MISSED {
        let user = (i % 3 == 0).then_some("alice");
        ids.push(auth.publish(&format!("missed-{i:05}"), user).await);
    }

    let jwt = Jwt::for_user("alice").sign();
    let mut alice = WsClient::authenticated_with(stack.gateway(), &jwt, "alice", Some(&seen)).await;
    let events = collect_events(&mut alice, "missed-", MISSED, Duration::from_secs(60)).await;
    let got: Vec<&str> = events
        .iter()
        .map(|e| e["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(got, ids, "every missed event once, in order");
    let live = auth.publish("live", None).await;
    assert_eq!(alice.recv_type("broadcast", STEP).await["id"], live);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_readers_replaying_cannot_starve_another_clients_replay() {
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    stack.wait_ready().await;
    let first = stack.auth().publish("replay-start", None).await;
    let payload = "r".repeat(32 * 1024);
    let mut last = String::new();
    for _ in 0..100 {
        last = stack.auth().publish(&payload, None).await;
    }
    // More slow replays than the gateway has permits (32), each blocked
    // writing a few MiB to a client that never reads.
    let mut slow = Vec::new();
    for i in 0..40 {
        let user = format!("slow-{i}");
        let jwt = Jwt::for_user(&user).sign();
        let token = stack.gateway().ws_token(&jwt).await;
        let mut client = WsClient::connect_to(
            stack.gateway().addr(),
            &format!("/ws?token={token}"),
            &[],
            Some(4096),
        )
        .await
        .expect("upgrade");
        client
            .send_json(&serde_json::json!({"type": "jwt", "token": jwt, "since": first}))
            .await;
        slow.push(client);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let started = std::time::Instant::now();
    let mut fresh = WsClient::authenticated_with(
        stack.gateway(),
        &Jwt::for_user("fresh").sign(),
        "fresh",
        Some(&first),
    )
    .await;
    let replayed = collect_events(&mut fresh, "r", 100, STEP).await;
    assert_eq!(replayed.last().expect("100 events")["id"], last);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the replay waited {:?} behind slow readers",
        started.elapsed()
    );
    drop(slow);
}
