//! Broadcasts and direct messages across 2 auth replicas and 3 gateways,
//! reconnect with `since`, and grpcurl as the README shows it.

use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use tokio::process::Command;
use wsauth_tests::{
    ADMIN_KEY, AuthOptions, Cluster, GatewayOptions, Jwt, STEP, TestAuth, TestGateway, WARMUP,
    WsClient, collect_events, warm_up, within,
};

const EVENTS: usize = 40;
const CLIENTS_PER_GATEWAY: usize = 11;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_authenticated_client_receives_every_broadcast_exactly_once_and_in_order() {
    let cluster = Cluster::spawn(2, 3, GatewayOptions::default()).await;
    cluster.wait_ready().await;
    let mut clients = Vec::new();
    for (g, gateway) in cluster.gateways.iter().enumerate() {
        for c in 0..CLIENTS_PER_GATEWAY {
            clients.push(WsClient::authenticated(gateway, &format!("user-{g}-{c}")).await);
        }
    }
    let mut pending = Vec::new();
    for gateway in &cluster.gateways {
        let jwt = Jwt::for_user("late").sign();
        let token = gateway.ws_token(&jwt).await;
        pending.push((
            WsClient::connect(gateway.addr(), &token, None)
                .await
                .expect("upgrade"),
            jwt,
        ));
    }
    warm_up(
        &cluster.auths[0],
        &mut clients.iter_mut().collect::<Vec<_>>(),
    )
    .await;

    let mut ids = Vec::new();
    for i in 0..EVENTS {
        // Alternate replicas: both append to the same Redis stream.
        ids.push(
            cluster.auths[i % 2]
                .publish(&format!("event-{i:03}"), None)
                .await,
        );
    }

    let received = join_all(clients.iter_mut().map(|client| async move {
        let events = collect_events(client, "event-", EVENTS, Duration::from_secs(30)).await;
        (client.user().unwrap_or_default().to_string(), events)
    }))
    .await;
    for (user, events) in received {
        let got: Vec<(&str, &str)> = events
            .iter()
            .map(|e| {
                (
                    e["id"].as_str().unwrap_or(""),
                    e["data"].as_str().unwrap_or(""),
                )
            })
            .collect();
        let expected: Vec<(&str, String)> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), format!("event-{i:03}")))
            .collect();
        let expected: Vec<(&str, &str)> =
            expected.iter().map(|(id, d)| (*id, d.as_str())).collect();
        assert_eq!(got, expected, "{user}: every broadcast once, in order");
        assert!(
            events.iter().all(|e| e["type"] == "broadcast"),
            "{user}: {events:?}"
        );
    }
    // Nothing extra: the next event each client sees is a fresh marker.
    let end = cluster.auths[1].publish("end-marker", None).await;
    for client in &mut clients {
        let next = collect_events(client, "end-", 1, STEP).await;
        assert_eq!(
            next[0]["id"],
            end,
            "{:?}: no duplicate after the last event",
            client.user()
        );
    }
    // Phase-2 clients got none of it: their first frame after the jwt frame is auth_ok, then the next event.
    for (client, jwt) in &mut pending {
        client.send_jwt(jwt).await;
        assert_eq!(
            client.recv_json(STEP).await,
            json!({"type": "auth_ok", "user_id": "late"})
        );
    }
    let after = cluster.auths[0].publish("after-auth", None).await;
    for (client, _) in &mut pending {
        assert_eq!(
            client.recv_json(STEP).await,
            json!({"type": "broadcast", "id": after, "data": "after-auth"})
        );
    }
}

#[tokio::test]
async fn direct_messages_reach_only_their_user_on_every_gateway() {
    let cluster = Cluster::spawn(2, 3, GatewayOptions::default()).await;
    cluster.wait_ready().await;
    let mut alices = Vec::new();
    let mut others = Vec::new();
    for gateway in &cluster.gateways {
        alices.push(WsClient::authenticated(gateway, "alice").await);
        others.push(WsClient::authenticated(gateway, "bob").await);
        others.push(WsClient::authenticated(gateway, "alice2").await);
    }
    warm_up(
        &cluster.auths[0],
        &mut alices
            .iter_mut()
            .chain(others.iter_mut())
            .collect::<Vec<_>>(),
    )
    .await;

    let direct = cluster.auths[1].publish("for-alice", Some("alice")).await;
    let marker = cluster.auths[0].publish("marker", None).await;

    for alice in &mut alices {
        assert_eq!(
            alice.recv_json(STEP).await,
            json!({"type": "message", "id": direct, "data": "for-alice"})
        );
        assert_eq!(
            alice.recv_json(STEP).await,
            json!({"type": "broadcast", "id": marker, "data": "marker"})
        );
    }
    for other in &mut others {
        // The marker was published after the direct message, so it shows the direct one was skipped.
        let next = other.recv_json(STEP).await;
        assert_eq!(
            next,
            json!({"type": "broadcast", "id": marker, "data": "marker"}),
            "{:?}",
            other.user()
        );
    }
}

/// `user` connects to `gateway`, receives one broadcast and leaves: the id
/// of that broadcast, for a `since` reconnect.
async fn last_seen_before_leaving(auth: &TestAuth, gateway: &TestGateway, user: &str) -> String {
    let mut client = WsClient::authenticated(gateway, user).await;
    warm_up(auth, &mut [&mut client]).await;
    let seen = auth.publish("seen", None).await;
    assert_eq!(client.recv_type("broadcast", STEP).await["id"], seen);
    client.close().await;
    seen
}

#[tokio::test]
async fn a_client_reconnecting_with_since_gets_exactly_what_it_missed() {
    let cluster = Cluster::spawn(1, 2, GatewayOptions::default()).await;
    cluster.wait_ready().await;
    let auth = cluster.auth();
    let seen = last_seen_before_leaving(auth, &cluster.gateways[0], "alice").await;

    let missed_broadcast = auth.publish("missed-broadcast", None).await;
    let missed_direct = auth.publish("missed-direct", Some("alice")).await;
    auth.publish("for-bob", Some("bob")).await;
    let missed_last = auth.publish("missed-last", None).await;

    let jwt = Jwt::for_user("alice").sign();
    let mut alice =
        WsClient::authenticated_with(&cluster.gateways[1], &jwt, "alice", Some(&seen)).await;
    assert_eq!(
        alice.recv_json(STEP).await,
        json!({"type": "broadcast", "id": missed_broadcast, "data": "missed-broadcast"})
    );
    assert_eq!(
        alice.recv_json(STEP).await,
        json!({"type": "message", "id": missed_direct, "data": "missed-direct"})
    );
    assert_eq!(
        alice.recv_json(STEP).await,
        json!({"type": "broadcast", "id": missed_last, "data": "missed-last"})
    );
    let live = auth.publish("live", None).await;
    assert_eq!(
        alice.recv_json(STEP).await,
        json!({"type": "broadcast", "id": live, "data": "live"})
    );
}

/// auth examines at most 2,000 retained events per History page for a
/// replay, so alice's two events among 4,100 of bob's come in three pages, the
/// middle one empty: the gateway must go on from the position auth gives
/// rather than take an empty page for the end.
#[tokio::test]
async fn a_since_replay_finds_a_users_events_among_thousands_of_others() {
    let cluster = Cluster::spawn(1, 1, GatewayOptions::default()).await;
    cluster.wait_ready().await;
    let auth = cluster.auth();
    let seen = last_seen_before_leaving(auth, &cluster.gateways[0], "alice").await;

    let first = auth.publish("first", Some("alice")).await;
    // In batches, so the 4,100 calls take a second, not a minute.
    for _ in 0..41 {
        join_all((0..100).map(|_| auth.publish("for-bob", Some("bob")))).await;
    }
    let last = auth.publish("last", Some("alice")).await;

    let jwt = Jwt::for_user("alice").sign();
    let mut alice =
        WsClient::authenticated_with(&cluster.gateways[0], &jwt, "alice", Some(&seen)).await;
    assert_eq!(
        alice.recv_json(STEP).await,
        json!({"type": "message", "id": first, "data": "first"})
    );
    assert_eq!(
        alice.recv_json(STEP).await,
        json!({"type": "message", "id": last, "data": "last"})
    );
    let live = auth.publish("live", None).await;
    assert_eq!(
        alice.recv_json(STEP).await,
        json!({"type": "broadcast", "id": live, "data": "live"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_during_a_since_reconnect_arrive_once_with_no_gap_at_the_seam() {
    let cluster = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    cluster.wait_ready().await;
    let mut alice = WsClient::authenticated(cluster.gateway(), "alice").await;
    warm_up(cluster.auth(), &mut [&mut alice]).await;
    let first = cluster.auth().publish("seam-000", None).await;
    assert_eq!(alice.recv_type("broadcast", STEP).await["id"], first);
    alice.close().await;

    // Publish continuously while alice reconnects with `since`.
    let auth_url = cluster.auth().url();
    let publisher = {
        let channel = cluster.auth().channel();
        tokio::spawn(async move {
            let mut client = wsauth_shared::proto::broadcast_service_client::BroadcastServiceClient::with_interceptor(
                channel,
                wsauth_tests::Bearer::new(wsauth_tests::ApiKey::Admin),
            );
            let mut ids = Vec::new();
            for i in 1..=60 {
                let request = wsauth_shared::proto::PublishRequest {
                    data: format!("seam-{i:03}"),
                    user_id: None,
                };
                let id = client
                    .publish(request)
                    .await
                    .unwrap_or_else(|s| panic!("Publish to {auth_url}: {s:?}"));
                ids.push(id.into_inner().id);
            }
            ids
        })
    };
    let jwt = Jwt::for_user("alice").sign();
    let mut alice =
        WsClient::authenticated_with(cluster.gateway(), &jwt, "alice", Some(&first)).await;
    let ids = publisher.await.expect("the publisher does not panic");

    let events = collect_events(&mut alice, "seam-", ids.len(), Duration::from_secs(30)).await;
    let got: Vec<&str> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(got, ids, "every event after `since`, once, in order");
}

/// grpcurl from PATH, else where `make setup` installs it (.tools/bin, which
/// `make test` puts on PATH; the fallback serves a bare `cargo test`).
fn grpcurl_program() -> std::path::PathBuf {
    let runs = |program: &std::path::Path| {
        std::process::Command::new(program)
            .arg("-version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let on_path = std::path::PathBuf::from("grpcurl");
    if runs(&on_path) {
        return on_path;
    }
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/bin/grpcurl");
    assert!(
        runs(&local),
        "grpcurl is missing: run `make setup` (installs it into .tools/bin; `make test` does)"
    );
    local
}

/// Runs grpcurl with `args` (within 20 s) and returns what it printed, after
/// checking it succeeded.
pub(crate) async fn grpcurl(what: &str, args: &[&str]) -> Vec<u8> {
    let program = grpcurl_program();
    let output = within(
        Duration::from_secs(20),
        what,
        Command::new(program).args(args).output(),
    )
    .await
    .expect("grpcurl runs");
    assert!(
        output.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

#[tokio::test]
async fn a_grpcurl_publish_as_in_the_readme_reaches_a_connected_client() {
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    stack.wait_ready().await;
    let mut client = WsClient::authenticated(stack.gateway(), "alice").await;
    warm_up(stack.auth(), &mut [&mut client]).await;

    let addr = stack.auth().addr().to_string();
    let stdout = grpcurl(
        "grpcurl Publish",
        &[
            "-plaintext",
            "-H",
            &format!("authorization: Bearer {ADMIN_KEY}"),
            "-d",
            r#"{"data":"hi"}"#,
            &addr,
            "wsauth.v1.BroadcastService/Publish",
        ],
    )
    .await;

    let reply: serde_json::Value = serde_json::from_slice(&stdout).expect("grpcurl prints JSON");
    let id = reply["id"].as_str().expect("Publish returns an id");
    assert_eq!(
        client.recv_json(STEP).await,
        json!({"type": "broadcast", "id": id, "data": "hi"})
    );
}

#[tokio::test]
async fn grpcurl_lists_the_services_through_reflection() {
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    let addr = stack.auth().addr().to_string();

    let stdout = grpcurl("grpcurl list", &["-plaintext", &addr, "list"]).await;
    let services = String::from_utf8_lossy(&stdout);
    for service in [
        "wsauth.v1.AuthService",
        "wsauth.v1.BroadcastService",
        "grpc.health.v1.Health",
    ] {
        assert!(
            services.lines().any(|l| l.trim() == service),
            "{service} in {services:?}"
        );
    }

    let stdout = grpcurl(
        "grpcurl Health/Check",
        &[
            "-plaintext",
            "-d",
            r#"{"service":"wsauth.v1.AuthService"}"#,
            &addr,
            "grpc.health.v1.Health/Check",
        ],
    )
    .await;
    let health: serde_json::Value = serde_json::from_slice(&stdout).expect("grpcurl prints JSON");
    assert_eq!(health["status"], "SERVING");
}

#[tokio::test]
async fn history_returns_what_a_user_missed_oldest_first() {
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    let auth = stack.auth();
    let start = auth.publish("start", None).await;
    let a = auth.publish("a", None).await;
    let b = auth.publish("b", Some("alice")).await;
    auth.publish("c", Some("bob")).await;

    let mut client = auth.broadcast_client(wsauth_tests::ApiKey::Internal);
    let request = wsauth_shared::proto::HistoryRequest {
        after_id: start,
        user_id: Some("alice".into()),
        limit: None,
        from_oldest: false,
        resumable: false,
    };
    let events = client
        .history(request)
        .await
        .expect("History with the internal key")
        .into_inner()
        .events;

    let got: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e.id.as_str(), e.data.as_str()))
        .collect();
    assert_eq!(got, [(a.as_str(), "a"), (b.as_str(), "b")]);
}

#[tokio::test]
async fn publish_refuses_empty_and_oversized_data_with_invalid_argument() {
    let stack = Cluster::single(
        AuthOptions::default().env("MAX_EVENT_BYTES", 1000),
        GatewayOptions::default(),
    )
    .await;

    for (case, data) in [
        ("empty", String::new()),
        ("over MAX_EVENT_BYTES", "x".repeat(1001)),
    ] {
        let status = stack.auth().try_publish(&data, None).await.expect_err(case);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{case}: {status:?}"
        );
    }
    stack.auth().publish(&"x".repeat(1000), None).await;
}

#[tokio::test]
async fn subscribe_and_history_refuse_an_after_id_of_another_epoch_with_out_of_range() {
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    let id = stack.auth().publish("creates the stream", None).await;
    let (epoch, position) = id.split_once(':').expect("ids are <epoch>:<millis>-<seq>");
    let foreign = format!(
        "{}{}:{position}",
        if epoch.starts_with('0') { "1" } else { "0" },
        &epoch[1..]
    );
    let mut client = stack
        .auth()
        .broadcast_client(wsauth_tests::ApiKey::Internal);

    let history = wsauth_shared::proto::HistoryRequest {
        after_id: foreign.clone(),
        user_id: None,
        limit: None,
        from_oldest: false,
        resumable: false,
    };
    let status = client
        .history(history)
        .await
        .expect_err("History after a foreign epoch");
    assert_eq!(
        status.code(),
        tonic::Code::OutOfRange,
        "History: {status:?}"
    );

    let subscribe = wsauth_shared::proto::SubscribeRequest {
        gateway_id: "e2e".into(),
        after_id: Some(foreign),
        from_oldest: false,
    };
    let status = match client.subscribe(subscribe).await {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            within(
                STEP,
                "the Subscribe stream ends with an error",
                stream.message(),
            )
            .await
            .expect_err("Subscribe after a foreign epoch yields no event")
        }
    };
    assert_eq!(
        status.code(),
        tonic::Code::OutOfRange,
        "Subscribe: {status:?}"
    );
}

#[tokio::test]
async fn a_since_ahead_of_the_stream_is_a_gap_and_still_gets_every_live_event() {
    let cluster = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    cluster.wait_ready().await;
    let auth = cluster.auth();
    let mut bob = WsClient::authenticated(cluster.gateway(), "bob").await;
    warm_up(auth, &mut [&mut bob]).await;
    let seen = auth.publish("before", None).await;
    assert_eq!(bob.recv_type("broadcast", STEP).await["id"], seen);

    // Same epoch, far ahead: a stream rolled back, or an id from the future.
    // The client's state is from a stream auth does not have: a gap, then
    // what is retained (from the oldest), then live events.
    let (epoch, _) = seen.rsplit_once(':').expect("ids are epoch:millis-seq");
    let ahead = format!("{epoch}:99999999999999-0");
    let jwt = Jwt::for_user("alice").sign();
    let (mut alice, first) =
        WsClient::upgraded_with_jwt(cluster.gateway(), &jwt, Some(&ahead)).await;
    assert_eq!(
        first,
        json!({"type": "auth_ok", "user_id": "alice", "gap": true})
    );
    let retained = alice.recv_type("broadcast", STEP).await;
    assert!(
        retained["data"]
            .as_str()
            .is_some_and(|d| d.starts_with(WARMUP)),
        "the oldest retained event first: {retained}"
    );
    assert_eq!(
        alice.recv_type("broadcast", STEP).await["id"],
        seen,
        "the retained events up to the last"
    );

    let broadcast = auth.publish("live-broadcast", None).await;
    let direct = auth.publish("live-direct", Some("alice")).await;
    assert_eq!(
        alice.recv_json(STEP).await,
        json!({"type": "broadcast", "id": broadcast, "data": "live-broadcast"})
    );
    assert_eq!(
        alice.recv_json(STEP).await,
        json!({"type": "message", "id": direct, "data": "live-direct"})
    );
}
