//! The contract's core flows in each Redis deployment (standalone, Cluster,
//! Sentinel): one test body per flow, run once per mode, on the real
//! binaries over 2 auth replicas and 2 gateways; and Redis emptied under
//! a running stack (as `gap` shows on one server).

use std::time::Duration;

use futures::future::join_all;
use serde_json::json;
use wsauth_shared::proto::HistoryRequest;
use wsauth_tests::{
    ApiKey, AuthOptions, GatewayOptions, Jwt, ModeStack, RedisMode, STEP, WsClient, collect_events,
    warm_up,
};

use crate::gap::{GAP, RESUME, broadcast, frames_until, publish_when_up, revoke_when_up, texts};

const EVENTS: usize = 30;
const CLIENTS_PER_GATEWAY: usize = 3;

/// `mod $flow { standalone, cluster, sentinel, tls }`: one test per mode.
macro_rules! in_every_mode {
    ($flow:ident) => {
        mod $flow {
            use wsauth_tests::RedisMode;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn standalone() {
                super::$flow(RedisMode::Standalone).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                super::$flow(RedisMode::Cluster).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sentinel() {
                super::$flow(RedisMode::Sentinel).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn tls() {
                super::$flow(RedisMode::Tls).await;
            }
        }
    };
}

in_every_mode!(twenty_racing_upgrades_with_one_token_give_exactly_one_101);
in_every_mode!(revoke_user_closes_the_user_everywhere_with_4401);
in_every_mode!(delivery_is_exactly_once_in_order_and_since_and_history_replay_it);
in_every_mode!(flushall_before_a_publish_and_a_revoke_user_is_told_and_closes_with_4401);

/// One ws token, 20 upgrades racing over 2 gateways and 2 auth replicas.
async fn twenty_racing_upgrades_with_one_token_give_exactly_one_101(mode: RedisMode) {
    let stack = ModeStack::spawn(mode, 2, 2).await;
    let token = stack
        .gateway()
        .ws_token(&Jwt::for_user("alice").sign())
        .await;

    let results =
        join_all((0..20).map(|i| WsClient::connect(stack.gateways[i % 2].addr(), &token, None)))
            .await;

    let statuses: Vec<u16> = results
        .iter()
        .map(|r| r.as_ref().map(|_| 101).unwrap_or_else(|s| *s))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 101).count(),
        1,
        "{mode:?}: {statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 101 || *s == 401),
        "{mode:?}: {statuses:?}"
    );
}

async fn revoke_user_closes_the_user_everywhere_with_4401(mode: RedisMode) {
    let stack = ModeStack::spawn(mode, 2, 2).await;
    let alice_jwt = Jwt::for_user("alice").sign();
    let mut alices = Vec::new();
    let mut bobs = Vec::new();
    for gateway in &stack.gateways {
        alices.push(WsClient::authenticated_with(gateway, &alice_jwt, "alice", None).await);
        alices.push(WsClient::authenticated(gateway, "alice").await);
        bobs.push(WsClient::authenticated(gateway, "bob").await);
    }
    let mut everyone: Vec<&mut WsClient> = alices.iter_mut().chain(bobs.iter_mut()).collect();
    warm_up(&stack.auths[1], &mut everyone).await;
    let unused = stack.gateways[0].ws_token(&alice_jwt).await;

    stack.auths[0].revoke_user("alice").await;

    join_all(
        alices
            .iter_mut()
            .map(|alice| alice.expect_close(4401, STEP)),
    )
    .await;
    for bob in &mut bobs {
        bob.echo("bob stays").await;
    }
    let after = stack.auths[1].publish("after revocation", None).await;
    for bob in &mut bobs {
        assert_eq!(
            bob.recv_type("broadcast", STEP).await["id"],
            after,
            "{mode:?}"
        );
    }
    let gateway = &stack.gateways[1];
    assert_eq!(
        gateway.token_ws(Some(&alice_jwt)).await.status,
        401,
        "{mode:?}: the old JWT at /token/ws"
    );
    assert_eq!(
        WsClient::connect(gateway.addr(), &unused, None).await.err(),
        Some(401),
        "{mode:?}: a ws token issued before the revocation"
    );
}

/// Broadcasts from both auth replicas reach every client on both gateways
/// once and in order; a client that left gets exactly what it missed with
/// `since` on the other gateway, and History returns the same.
async fn delivery_is_exactly_once_in_order_and_since_and_history_replay_it(mode: RedisMode) {
    let stack = ModeStack::spawn(mode, 2, 2).await;
    let mut clients = Vec::new();
    for (g, gateway) in stack.gateways.iter().enumerate() {
        for c in 0..CLIENTS_PER_GATEWAY {
            clients.push(WsClient::authenticated(gateway, &format!("user-{g}-{c}")).await);
        }
    }
    let mut alice = WsClient::authenticated(&stack.gateways[0], "alice").await;
    warm_up(
        &stack.auths[0],
        &mut clients.iter_mut().chain([&mut alice]).collect::<Vec<_>>(),
    )
    .await;

    let mut expected = Vec::new();
    for i in 0..EVENTS {
        let data = format!("event-{i:03}");
        let id = stack.auths[i % 2].publish(&data, None).await;
        expected.push(json!({"type": "broadcast", "id": id, "data": data}));
    }
    let received = join_all(
        clients
            .iter_mut()
            .chain([&mut alice])
            .map(|client| async move {
                let events =
                    collect_events(client, "event-", EVENTS, Duration::from_secs(30)).await;
                (client.user().unwrap_or_default().to_owned(), events)
            }),
    )
    .await;
    for (user, events) in received {
        assert_eq!(
            events, expected,
            "{mode:?} {user}: every broadcast once, in order"
        );
    }
    let end = stack.auths[1].publish("end-marker", None).await;
    for client in clients.iter_mut().chain([&mut alice]) {
        let next = collect_events(client, "end-", 1, STEP).await;
        assert_eq!(
            next[0]["id"], end,
            "{mode:?}: no duplicate after the last event"
        );
    }

    // alice leaves; what she misses is replayed by `since` on the other gateway.
    let seen = end;
    alice.close().await;
    let (a, b) = (&stack.auths[0], &stack.auths[1]);
    let missed = vec![
        (
            "broadcast",
            a.publish("missed-broadcast", None).await,
            "missed-broadcast",
        ),
        (
            "message",
            b.publish("missed-direct", Some("alice")).await,
            "missed-direct",
        ),
    ];
    a.publish("for-bob", Some("bob")).await;
    let last = b.publish("missed-last", None).await;
    let missed: Vec<_> = missed
        .into_iter()
        .chain([("broadcast", last, "missed-last")])
        .collect();
    let jwt = Jwt::for_user("alice").sign();
    let mut alice =
        WsClient::authenticated_with(&stack.gateways[1], &jwt, "alice", Some(&seen)).await;
    for (kind, id, data) in &missed {
        assert_eq!(
            alice.recv_json(STEP).await,
            json!({"type": kind, "id": id, "data": data}),
            "{mode:?}: since replays what alice missed, in order"
        );
    }
    let live = a.publish("live", None).await;
    assert_eq!(
        alice.recv_json(STEP).await,
        json!({"type": "broadcast", "id": live, "data": "live"}),
        "{mode:?}: then live events, no duplicate"
    );

    let history = b
        .broadcast_client(ApiKey::Internal)
        .history(HistoryRequest {
            after_id: seen.clone(),
            user_id: Some("alice".into()),
            limit: None,
            from_oldest: false,
            resumable: false,
        })
        .await
        .unwrap_or_else(|s| panic!("{mode:?}: History: {s:?}"))
        .into_inner()
        .events;
    let got: Vec<(&str, &str)> = history
        .iter()
        .map(|e| (e.id.as_str(), e.data.as_str()))
        .collect();
    let want: Vec<(&str, &str)> = missed
        .iter()
        .map(|(_, id, data)| (id.as_str(), *data))
        .chain([(live.as_str(), "live")])
        .collect();
    assert_eq!(got, want, "{mode:?}: History after {seen} for alice");
}

/// Redis emptied (FLUSHALL on every master) right before a Publish and a
/// RevokeUser, as `gap` does on one server: the revoked user is closed with
/// 4401 (after at most the gap and the event), the other gets the gap, the
/// event once, and stays connected.
async fn flushall_before_a_publish_and_a_revoke_user_is_told_and_closes_with_4401(mode: RedisMode) {
    let stack = ModeStack::spawn_with(
        mode,
        1,
        1,
        AuthOptions::default().env("REDIS_TIMEOUT_MS", 500),
        GatewayOptions::default(),
    )
    .await;
    let mut alice = WsClient::authenticated(stack.gateway(), "alice").await;
    let mut bob = WsClient::authenticated(stack.gateway(), "bob").await;
    warm_up(stack.auth(), &mut [&mut alice, &mut bob]).await;
    let before = stack.auth().publish("before", None).await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(client.recv_type("broadcast", STEP).await["id"], before);
    }

    stack.backend.flushall();
    let event = publish_when_up(stack.auth(), "after", None).await;
    revoke_when_up(stack.auth(), "alice").await;
    assert_ne!(
        event.split(':').next(),
        before.split(':').next(),
        "{mode:?}: a new stream epoch"
    );

    let (got, code) = alice.drain_until_close(RESUME).await;
    assert_eq!(code, Some(4401), "{mode:?}: alice is revoked: {got:?}");
    let got = texts(&got);
    let want = [GAP.to_owned(), broadcast(&event, "after")];
    assert!(
        want.starts_with(&got),
        "{mode:?}: alice gets at most the gap and the event, in order: {got:?}"
    );
    let got = texts(&frames_until(&mut bob, "after").await);
    assert_eq!(got, want, "{mode:?}: bob: the gap, then the event");
    let live = stack.auth().publish("live", None).await;
    let got = texts(&frames_until(&mut bob, "live").await);
    assert_eq!(
        got,
        [broadcast(&live, "live")],
        "{mode:?}: nothing twice, no second gap"
    );
    bob.echo("still connected").await;
}
