//! A client that stops reading is closed with 1008 and slows nobody else.

use std::time::Duration;

use wsauth_tests::{AuthOptions, Cluster, GatewayOptions, WsClient, collect_events, warm_up};

const EVENTS: usize = 200;
/// Big enough that the kernel buffers between gateway and slow client
/// (a few MiB on loopback) fill within the run.
const EVENT_BYTES: usize = 60_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_is_closed_with_1008_while_a_fast_one_receives_every_event() {
    let stack = Cluster::single(
        AuthOptions::default(),
        GatewayOptions::default().send_queue_capacity(32),
    )
    .await;
    stack.wait_ready().await;
    let gateway = stack.gateway();
    let mut fast = WsClient::authenticated(gateway, "fast").await;
    let mut slow = WsClient::authenticated_slow_reader(gateway, "slow").await;
    warm_up(stack.auth(), &mut [&mut fast, &mut slow]).await;

    let fast_reader = tokio::spawn(async move {
        let events = collect_events(&mut fast, "big-", EVENTS, Duration::from_secs(60)).await;
        (fast, events)
    });
    let mut ids = Vec::with_capacity(EVENTS);
    for i in 0..EVENTS {
        let data = format!("big-{i:04}-{}", "x".repeat(EVENT_BYTES));
        ids.push(stack.auth().publish(&data, None).await);
    }

    let (mut fast, events) = fast_reader.await.expect("the fast reader does not panic");
    let got: Vec<&str> = events
        .iter()
        .map(|e| e["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(got, ids, "the fast client receives every event, in order");
    fast.echo("still fast").await;

    let (frames, code) = slow.drain_until_close(Duration::from_secs(30)).await;
    assert_eq!(
        code,
        Some(1008),
        "the slow client's close code, after {} frames",
        frames.len()
    );
    assert!(
        frames.len() < EVENTS,
        "the slow client was closed before it got everything"
    );
    let slow_ids: Vec<&str> = frames
        .iter()
        .filter(|f| f["data"].as_str().is_some_and(|d| d.starts_with("big-")))
        .map(|f| f["id"].as_str().expect("an id"))
        .collect();
    assert_eq!(
        slow_ids,
        ids[..slow_ids.len()],
        "what the slow client got is an in-order prefix"
    );
    wsauth_tests::wait_until(
        Duration::from_secs(10),
        "the slow connection left the registry",
        || async { gateway.gauge("wsauth_gateway_connections_open").await == 1.0 },
    )
    .await;
}
