//! Redis losing the stream (FLUSHALL, a restart without persistence): the
//! events of the new epoch still arrive, once and in order, after a
//! `{"type":"gap"}`; a RevokeUser among them still closes with 4401; a
//! `since` from the lost stream gets `auth_ok` with `"gap":true`. And a
//! gateway's live stream broken before its first event loses nothing.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tonic::Code;
use wsauth_tests::metrics::sample_sum;
use wsauth_tests::{
    ApiKey, AuthOptions, Cluster, Frame, GatewayOptions, Jwt, STEP, TestAuth, TestGateway,
    TestRedis, WsClient, redis_cli, warm_up,
};

pub(crate) const GAP: &str = r#"{"type":"gap"}"#;
/// How long a gateway may take to notice the new epoch and resume.
pub(crate) const RESUME: Duration = Duration::from_secs(20);

fn flushall(cluster: &Cluster) {
    assert_eq!(redis_cli(cluster.redis.port(), &["FLUSHALL"]), "OK");
}

/// Publish, retried (quickly: the point is to append before the gateways
/// notice) while auth's Redis connection comes back.
pub(crate) async fn publish_when_up(auth: &TestAuth, data: &str, user: Option<&str>) -> String {
    let deadline = Instant::now() + RESUME;
    loop {
        match auth.try_publish(data, user).await {
            Ok(id) => return id,
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(status) => panic!("Publish did not recover: {status:?}"),
        }
    }
}

/// RevokeUser, retried the same way.
pub(crate) async fn revoke_when_up(auth: &TestAuth, user: &str) {
    let request = wsauth_shared::proto::RevokeUserRequest {
        user_id: user.to_owned(),
    };
    let deadline = Instant::now() + RESUME;
    loop {
        match auth
            .auth_client(ApiKey::Admin)
            .revoke_user(request.clone())
            .await
        {
            Ok(_) => return,
            Err(status) if Instant::now() < deadline => {
                assert_eq!(status.code(), Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(status) => panic!("RevokeUser did not recover: {status:?}"),
        }
    }
}

/// The frames a client received, as text, leaving out warm-up broadcasts.
pub(crate) fn texts(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| {
            !f["data"]
                .as_str()
                .is_some_and(|d| d.starts_with(wsauth_tests::WARMUP))
        })
        .map(Value::to_string)
        .collect()
}

/// Reads frames until one has `data`; all of them, in order.
pub(crate) async fn frames_until(client: &mut WsClient, data: &str) -> Vec<Value> {
    let deadline = Instant::now() + RESUME;
    let mut frames = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_frame(left).await {
            Some(Frame::Json(frame)) => {
                let done = frame["data"] == data;
                frames.push(frame);
                if done {
                    return frames;
                }
            }
            other => panic!(
                "{:?}: got {other:?} before {data:?} ({frames:?})",
                client.user()
            ),
        }
    }
}

/// Redis emptied right before a Publish and a RevokeUser: the revoked user is
/// closed with 4401 (receiving at most the gap and the event first: a close
/// goes before queued frames), the other user receives the gap, then the
/// event exactly once, and stays connected.
async fn emptied_before_publish_and_revoke(empty: impl FnOnce(&mut Cluster)) {
    let mut cluster = Cluster::single(
        AuthOptions::default().env("REDIS_TIMEOUT_MS", 500),
        GatewayOptions::default(),
    )
    .await;
    cluster.wait_ready().await;
    let mut alice = WsClient::authenticated(cluster.gateway(), "alice").await;
    let mut bob = WsClient::authenticated(cluster.gateway(), "bob").await;
    warm_up(cluster.auth(), &mut [&mut alice, &mut bob]).await;
    let before = cluster.auth().publish("before", None).await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(client.recv_type("broadcast", STEP).await["id"], before);
    }

    empty(&mut cluster);
    let event = publish_when_up(cluster.auth(), "after", None).await;
    revoke_when_up(cluster.auth(), "alice").await;
    assert_ne!(
        event.split(':').next(),
        before.split(':').next(),
        "a new stream epoch"
    );

    let (got, code) = alice.drain_until_close(RESUME).await;
    assert_eq!(code, Some(4401), "alice is revoked: {got:?}");
    let got = texts(&got);
    let want = [GAP.to_owned(), broadcast(&event, "after")];
    assert!(
        want.starts_with(&got),
        "alice gets at most the gap and the event, in order: {got:?}"
    );

    let got = texts(&frames_until(&mut bob, "after").await);
    assert_eq!(got, want, "bob: the gap, then the event");
    let live = cluster.auth().publish("live", None).await;
    let got = texts(&frames_until(&mut bob, "live").await);
    assert_eq!(
        got,
        [broadcast(&live, "live")],
        "nothing twice, no second gap"
    );
    bob.echo("still connected").await;
    let metrics = cluster.gateway().metrics().await;
    assert_eq!(
        sample_sum(&metrics, "wsauth_gateway_stream_gaps_total"),
        Some(1.0),
        "one gap, counted once"
    );
}

pub(crate) fn broadcast(id: &str, data: &str) -> String {
    json!({"type": "broadcast", "id": id, "data": data}).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_right_before_a_publish_and_a_revoke_user_is_told_and_still_closes_with_4401() {
    emptied_before_publish_and_revoke(|cluster| flushall(cluster)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_without_persistence_before_a_publish_and_a_revoke_user_is_told_and_still_closes_with_4401()
 {
    emptied_before_publish_and_revoke(|cluster| cluster.redis.restart()).await;
}

/// A `since` from before a FLUSHALL cannot be honoured: `auth_ok` says so
/// and the new epoch's retained events follow, once, then live ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_since_from_before_a_flushall_gets_auth_ok_with_gap_and_the_new_epochs_events() {
    let cluster = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    cluster.wait_ready().await;
    let auth = cluster.auth();
    let mut alice = WsClient::authenticated(cluster.gateway(), "alice").await;
    let mut bob = WsClient::authenticated(cluster.gateway(), "bob").await;
    warm_up(auth, &mut [&mut alice, &mut bob]).await;
    let seen = auth.publish("seen", None).await;
    for client in [&mut alice, &mut bob] {
        assert_eq!(client.recv_type("broadcast", STEP).await["id"], seen);
    }
    alice.close().await;

    flushall(&cluster);
    let new0 = auth.publish("new-0", None).await;
    let new1 = auth.publish("new-1", Some("alice")).await;
    auth.publish("for-bob", Some("bob")).await;
    let new2 = auth.publish("new-2", None).await;
    // The gateway has resumed on the new epoch: its queue holds nothing
    // for alice that could arrive twice.
    let got = texts(&frames_until(&mut bob, "new-2").await);
    assert_eq!(got.first().map(String::as_str), Some(GAP), "bob: {got:?}");
    assert_eq!(got.len(), 4, "bob: the gap, new-0, for-bob, new-2: {got:?}");

    let jwt = Jwt::for_user("alice").sign();
    let (mut alice, first) =
        WsClient::upgraded_with_jwt(cluster.gateway(), &jwt, Some(&seen)).await;
    assert_eq!(
        first,
        json!({"type": "auth_ok", "user_id": "alice", "gap": true})
    );
    let live = auth.publish("live", None).await;
    let got = texts(&frames_until(&mut alice, "live").await);
    assert_eq!(
        got,
        [
            broadcast(&new0, "new-0"),
            json!({"type": "message", "id": new1, "data": "new-1"}).to_string(),
            broadcast(&new2, "new-2"),
            broadcast(&live, "live"),
        ]
    );
    // A since that is fine: plain auth_ok, no gap field.
    let jwt = Jwt::for_user("carol").sign();
    WsClient::authenticated_with(cluster.gateway(), &jwt, "carol", Some(&new2)).await;
}

/// The gateway's first stream, opened live, breaks before any event (its
/// only auth replica is killed) while another replica publishes: auth said
/// where the live stream began, so the gateway resumes from there and the
/// event arrives, with no gap. `published_before`: the stream already held
/// an event (auth names its id), or was empty (auth says `oldest`).
async fn a_live_stream_broken_before_its_first_event_loses_nothing(published_before: bool) {
    let redis = TestRedis::spawn();
    let mut streamer = TestAuth::spawn(Some(&redis), AuthOptions::default()).await;
    let publisher = TestAuth::spawn(Some(&redis), AuthOptions::default()).await;
    if published_before {
        publisher.publish("before the gateway", None).await;
    }
    let gateway = TestGateway::spawn(&[&streamer], GatewayOptions::default()).await;
    gateway.wait_ready(RESUME).await;
    let mut alice = WsClient::authenticated(&gateway, "alice").await;

    streamer.kill().await;
    let missed = publisher.publish("missed", None).await;
    streamer.restart().await;

    let got = texts(&frames_until(&mut alice, "missed").await);
    assert_eq!(
        got,
        [broadcast(&missed, "missed")],
        "the event published while the stream was down, and no gap"
    );
    let live = publisher.publish("live", None).await;
    let got = texts(&frames_until(&mut alice, "live").await);
    assert_eq!(got, [broadcast(&live, "live")], "then live, once");
    let metrics = gateway.metrics().await;
    assert_eq!(
        sample_sum(&metrics, "wsauth_gateway_stream_gaps_total").unwrap_or(0.0),
        0.0,
        "no gap counted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_broken_before_its_first_event_resumes_after_the_id_auth_gave() {
    a_live_stream_broken_before_its_first_event_loses_nothing(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_stream_on_an_empty_stream_broken_before_its_first_event_resumes_from_the_oldest() {
    a_live_stream_broken_before_its_first_event_loses_nothing(false).await;
}
