//! Auth replicas and Redis going away while clients are connected.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::future::join_all;
use tonic::Code;
use wsauth_tests::{
    AuthOptions, Cluster, GatewayOptions, Jwt, STEP, TestAuth, WARMUP, WsClient, collect_events,
    wait_until, warm_up,
};

#[tokio::test]
async fn with_auth_killed_new_handshakes_get_503_and_established_connections_keep_echoing() {
    let mut stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    let mut clients = vec![
        WsClient::authenticated(stack.gateway(), "alice").await,
        WsClient::authenticated(stack.gateway(), "bob").await,
    ];
    let jwt = Jwt::for_user("carol").sign();
    let token = stack.gateway().ws_token(&jwt).await;

    stack.auths[0].kill().await;

    assert_eq!(stack.gateway().token_ws(Some(&jwt)).await.status, 503);
    assert_eq!(
        WsClient::connect(stack.gateway().addr(), &token, None)
            .await
            .err(),
        Some(503)
    );
    for client in &mut clients {
        client.echo("auth is gone").await;
        client.echo("and still echoing").await;
    }
}

#[tokio::test]
async fn auth_killed_during_phase_two_closes_with_1011() {
    let mut stack = Cluster::single(
        AuthOptions::default(),
        GatewayOptions::default().auth_call_timeout_ms(500),
    )
    .await;
    let jwt = Jwt::for_user("alice").sign();
    let token = stack.gateway().ws_token(&jwt).await;
    let mut client = WsClient::connect(stack.gateway().addr(), &token, None)
        .await
        .expect("upgrade");

    stack.auths[0].kill().await;
    client.send_jwt(&jwt).await;

    client.expect_close(1011, STEP).await;
}

#[tokio::test]
async fn an_auth_restarted_on_the_same_address_serves_handshakes_and_events_again() {
    let mut stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    stack.wait_ready().await;
    let mut alice = WsClient::authenticated(stack.gateway(), "alice").await;

    stack.auths[0].restart().await;

    stack.gateway().wait_ready(Duration::from_secs(20)).await;
    let mut bob = WsClient::authenticated(stack.gateway(), "bob").await;
    warm_up(stack.auth(), &mut [&mut alice, &mut bob]).await;
    let id = stack.auth().publish("after restart", None).await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(client.recv_type("broadcast", STEP).await["id"], id);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_auth_replica_while_publishing_through_the_other_loses_or_duplicates_no_event()
{
    const EVENTS: usize = 60;
    let mut cluster = Cluster::spawn(2, 3, GatewayOptions::default()).await;
    cluster.wait_ready().await;
    let mut clients = Vec::new();
    for (g, gateway) in cluster.gateways.iter().enumerate() {
        for c in 0..4 {
            clients.push(WsClient::authenticated(gateway, &format!("user-{g}-{c}")).await);
        }
    }
    warm_up(
        &cluster.auths[1],
        &mut clients.iter_mut().collect::<Vec<_>>(),
    )
    .await;

    // Kill the replica serving most gateway subscriptions (its log says so), so
    // that the Subscribe failover is exercised rather than left to chance.
    let subscribers = |auth: &TestAuth| auth.logs().matches("subscriber joined").count();
    if subscribers(&cluster.auths[1]) > subscribers(&cluster.auths[0]) {
        cluster.auths.swap(0, 1);
    }
    let survivor = cluster.auths.pop().expect("two replicas");
    let mut victim = cluster.auths.pop().expect("two replicas");
    let halfway = Arc::new(AtomicBool::new(false));
    let publisher = {
        let halfway = halfway.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..EVENTS {
                if i == EVENTS / 2 {
                    halfway.store(true, Ordering::SeqCst);
                }
                ids.push(survivor.publish(&format!("ev-{i:03}"), None).await);
                // Spread the publishes over the failover window.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (survivor, ids)
        })
    };
    wait_until(
        Duration::from_secs(30),
        "half of the events are published",
        || async { halfway.load(Ordering::SeqCst) },
    )
    .await;
    victim.kill().await;
    let (survivor, ids) = publisher.await.expect("the publisher does not panic");

    let received = join_all(
        clients
            .iter_mut()
            .map(|c| collect_events(c, "ev-", EVENTS, Duration::from_secs(40))),
    )
    .await;
    for (client, events) in clients.iter().zip(received) {
        let got: Vec<&str> = events
            .iter()
            .map(|e| e["id"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            got,
            ids,
            "{:?}: every event once, in order, across the failover",
            client.user()
        );
    }
    let end = survivor.publish("end", None).await;
    for client in &mut clients {
        assert_eq!(
            collect_events(client, "end", 1, STEP).await[0]["id"],
            end,
            "{:?}: no duplicates",
            client.user()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_redis_restart_gateways_resubscribe_and_delivery_resumes() {
    let mut cluster = Cluster::spawn_with(
        2,
        3,
        AuthOptions::default().env("REDIS_TIMEOUT_MS", 500),
        GatewayOptions::default(),
    )
    .await;
    cluster.wait_ready().await;
    let mut clients = Vec::new();
    for (g, gateway) in cluster.gateways.iter().enumerate() {
        clients.push(WsClient::authenticated(gateway, &format!("user-{g}")).await);
    }
    warm_up(
        &cluster.auths[0],
        &mut clients.iter_mut().collect::<Vec<_>>(),
    )
    .await;
    let before = cluster.auths[0].publish("before", None).await;

    cluster.redis.restart();

    for gateway in &cluster.gateways {
        gateway.wait_ready(Duration::from_secs(30)).await;
    }
    // A replica may answer UNAVAILABLE until its Redis connection is re-established.
    for auth in &cluster.auths {
        wait_until(
            Duration::from_secs(15),
            "each auth replica publishes again",
            || async {
                auth.try_publish(&format!("{WARMUP}probe"), None)
                    .await
                    .is_ok()
            },
        )
        .await;
    }
    // Until every gateway has resubscribed on the new stream epoch, a warm-up may be missed.
    warm_up(
        &cluster.auths[1],
        &mut clients.iter_mut().collect::<Vec<_>>(),
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..10 {
        ids.push(
            cluster.auths[i % 2]
                .publish(&format!("resumed-{i}"), None)
                .await,
        );
    }
    assert_ne!(
        ids[0].split(':').next(),
        before.split(':').next(),
        "a new stream epoch after Redis lost the stream"
    );
    for client in &mut clients {
        let events = collect_events(client, "resumed-", ids.len(), Duration::from_secs(20)).await;
        let got: Vec<&str> = events
            .iter()
            .map(|e| e["id"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(got, ids, "{:?}", client.user());
        client.echo("still connected").await;
    }
}

#[tokio::test]
async fn publish_with_redis_down_fails_with_unavailable_within_its_deadline() {
    let mut redis = wsauth_tests::TestRedis::spawn();
    let auth = TestAuth::spawn(
        Some(&redis),
        AuthOptions::default().env("REDIS_TIMEOUT_MS", 500),
    )
    .await;
    auth.publish("while up", None).await;

    redis.kill();

    let started = std::time::Instant::now();
    let status = auth
        .try_publish("while down", None)
        .await
        .expect_err("Redis is down");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn with_one_of_two_auth_replicas_killed_handshakes_still_succeed() {
    let mut cluster = Cluster::spawn(2, 1, GatewayOptions::default()).await;
    cluster.wait_ready().await;
    let mut before = WsClient::authenticated(cluster.gateway(), "before").await;

    cluster.auths[0].kill().await;

    // The gateway may need a moment to notice the dead replica; then it must stop using it.
    let jwt = Jwt::for_user("probe").sign();
    wait_until(
        Duration::from_secs(10),
        "a handshake succeeds through the surviving replica",
        || async { cluster.gateway().token_ws(Some(&jwt)).await.status == 200 },
    )
    .await;
    // Many handshakes in a row: a balancer that still picks the dead replica fails some.
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(cluster.gateway().token_ws(Some(&jwt)).await.status);
    }
    assert!(
        statuses.iter().all(|s| *s == 200),
        "/token/ws with one replica dead: {statuses:?}"
    );
    for i in 0..5 {
        let mut client = WsClient::authenticated(cluster.gateway(), &format!("after-{i}")).await;
        client.echo("served by the surviving replica").await;
    }
    before.echo("still connected").await;
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed_and_leaves_the_registry() {
    let options = GatewayOptions::default().env("PING_INTERVAL_S", 1);
    let stack = Cluster::single(AuthOptions::default(), options).await;
    let gateway = stack.gateway();
    let mut live = WsClient::authenticated(gateway, "live").await;
    // Never read again: tungstenite answers pings only while the socket is read.
    let _silent = WsClient::authenticated(gateway, "silent").await;
    assert_eq!(gateway.gauge("wsauth_gateway_connections_open").await, 2.0);

    let live_reader = async {
        // Keep `live` reading (and so answering pings) while waiting.
        while live
            .next_frame(Duration::from_millis(200))
            .await
            .is_none_or(|f| matches!(f, wsauth_tests::Frame::Json(_)))
        {}
    };
    tokio::select! {
        _ = live_reader => panic!("the live client was closed"),
        _ = wait_until(Duration::from_secs(15), "the silent client is dropped", || async {
            gateway.gauge("wsauth_gateway_connections_open").await == 1.0
        }) => {}
    }
    live.echo("the live client answered every ping").await;
}

#[tokio::test]
async fn with_redis_down_handshakes_answer_503_and_not_401() {
    let mut stack = Cluster::single(
        AuthOptions::default().env("REDIS_TIMEOUT_MS", 300),
        GatewayOptions::default().auth_call_timeout_ms(1500),
    )
    .await;
    let jwt = Jwt::for_user("alice").sign();
    let token = stack.gateway().ws_token(&jwt).await;
    let mut connected = WsClient::authenticated(stack.gateway(), "bob").await;

    stack.redis.kill();

    let response = stack.gateway().token_ws(Some(&jwt)).await;
    assert_eq!(
        response.status, 503,
        "/token/ws while Redis is down: {}",
        response.body
    );
    assert_eq!(
        WsClient::connect(stack.gateway().addr(), &token, None)
            .await
            .err(),
        Some(503),
        "/ws with a valid token while Redis is down"
    );
    connected.echo("Redis is down").await;
}
