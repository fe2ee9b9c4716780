//! SIGTERM: clients are told (1001) and the processes exit within their grace.

use std::time::Duration;

use futures::future::join_all;
use wsauth_tests::{AuthOptions, Cluster, GatewayOptions, Jwt, STEP, WsClient, warm_up};

/// Events of 32 KiB: a burst of them is far more than the socket buffers
/// between the gateway and a client that stopped reading, so most of it
/// waits in the gateway's queue when SIGTERM comes.
const BURST: usize = 200;

fn burst_data(i: usize) -> String {
    format!("burst-{i:04}-{}", "x".repeat(32 * 1024))
}

/// A stack with a slow reader (tiny receive buffer, not reading) holding a
/// burst in the gateway's queue, and a reader that got the whole burst: from
/// then on every event of it is queued for (or sent to) the slow reader.
async fn burst_queued_for_a_slow_reader(grace_s: u64) -> (Cluster, WsClient) {
    let stack = Cluster::single(
        AuthOptions::default(),
        GatewayOptions::default()
            .shutdown_grace_s(grace_s)
            .send_queue_capacity(4096),
    )
    .await;
    let mut slow = WsClient::authenticated_slow_reader(stack.gateway(), "slow").await;
    let mut witness = WsClient::authenticated(stack.gateway(), "witness").await;
    warm_up(stack.auth(), &mut [&mut slow, &mut witness]).await;
    let mut last = String::new();
    for i in 0..BURST {
        last = stack.auth().publish(&burst_data(i), None).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if witness.recv_type("broadcast", left).await["id"] == last {
            break;
        }
    }
    (stack, slow)
}

#[tokio::test]
async fn sigterm_sends_the_frames_already_queued_before_the_1001() {
    let (mut stack, mut slow) = burst_queued_for_a_slow_reader(10).await;

    stack.gateways[0].terminate().await;

    let (frames, code) = slow.drain_until_close(Duration::from_secs(10)).await;
    let burst: Vec<&str> = frames
        .iter()
        .filter_map(|f| f["data"].as_str())
        .filter(|d| d.starts_with("burst-"))
        .collect();
    assert_eq!(
        burst.len(),
        BURST,
        "every queued event before the close (then {code:?})"
    );
    for (i, data) in burst.iter().enumerate() {
        assert!(data.starts_with(&format!("burst-{i:04}-")), "in order");
    }
    assert_eq!(code, Some(1001));
    // Completes the closing handshake, which the gateway waits for.
    slow.close().await;
    let status = stack.gateways[0]
        .wait_exit(Duration::from_secs(8))
        .await
        .expect("the gateway exits once drained");
    assert!(status.success(), "exit status {status:?}");
}

#[tokio::test]
async fn a_client_that_does_not_read_cannot_hold_shutdown_past_the_grace() {
    let (mut stack, slow) = burst_queued_for_a_slow_reader(2).await;

    let started = std::time::Instant::now();
    stack.gateways[0].terminate().await;
    let status = stack.gateways[0]
        .wait_exit(Duration::from_secs(2) + STEP)
        .await
        .expect("the gateway exits within its grace, whatever the slow reader does");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "it did wait for the drain ({:?})",
        started.elapsed()
    );
    drop(slow);
}

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
