//! A large outgoing frame must not leave every connection holding a buffer
//! its size: one 60 KB broadcast to many idle clients, then the gateway's RSS.

use std::time::Duration;

use futures::StreamExt;
use futures::stream;
use wsauth_tests::{AuthOptions, Cluster, GatewayOptions, WsClient, collect_events, warm_up};

const CLIENTS: usize = 200;
const BIG_BYTES: usize = 60_000;
/// Far below the ~60 KiB per connection a retained write buffer costs.
const MAX_GROWTH_PER_CLIENT: u64 = 16 * 1024;

/// The resident set size of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("cannot read /proc/{pid}/status: {e}"));
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kib| kib.trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status:\n{status}"));
    kib * 1024
}

/// Publishes `data` as a broadcast and waits until every client got it.
async fn broadcast_to_all(stack: &Cluster, clients: &mut [WsClient], prefix: &str, data: &str) {
    stack.auth().publish(data, None).await;
    let received = stream::iter(clients.iter_mut())
        .map(|client| async move {
            let events = collect_events(client, prefix, 1, Duration::from_secs(30)).await;
            events[0]["data"].as_str().map(str::len)
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    assert!(
        received.iter().all(|len| *len == Some(data.len())),
        "every client receives the whole {prefix}* broadcast"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_broadcast_does_not_raise_every_connections_memory() {
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    stack.wait_ready().await;
    let pid = stack.gateway().pid().expect("the gateway is running");
    let gateway = stack.gateway();
    let mut clients: Vec<WsClient> = stream::iter(0..CLIENTS)
        .map(|i| async move { WsClient::authenticated(gateway, &format!("user-{i}")).await })
        .buffer_unordered(16)
        .collect()
        .await;
    warm_up(stack.auth(), &mut clients.iter_mut().collect::<Vec<_>>()).await;
    // Small frames first, so every connection's steady state is in `before`.
    for i in 0..3 {
        broadcast_to_all(&stack, &mut clients, "small-", &format!("small-{i}")).await;
    }
    let before = rss_bytes(pid);

    let big = format!("big-{}", "x".repeat(BIG_BYTES - 4));
    broadcast_to_all(&stack, &mut clients, "big-", &big).await;
    for i in 0..3 {
        broadcast_to_all(&stack, &mut clients, "after-", &format!("after-{i}")).await;
    }
    let after = rss_bytes(pid);

    let growth = after.saturating_sub(before);
    println!(
        "gateway RSS {before} → {after} bytes: +{} per connection",
        growth / CLIENTS as u64
    );
    assert!(
        growth < CLIENTS as u64 * MAX_GROWTH_PER_CLIENT,
        "one {BIG_BYTES} B broadcast grew the gateway by {growth} B for {CLIENTS} connections \
         ({} B each; limit {MAX_GROWTH_PER_CLIENT})",
        growth / CLIENTS as u64
    );
}
