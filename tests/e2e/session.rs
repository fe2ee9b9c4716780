//! Phase 2 and the authenticated session: the jwt frame, its close codes,
//! echo, refresh and expiry.

use std::time::Duration;

use serde_json::json;
use wsauth_tests::{
    AuthOptions, Cluster, Frame, GatewayOptions, Jwt, JwtAlg, STEP, TestGateway, WsClient, now_unix,
};

async fn stack(gateway: GatewayOptions) -> Cluster {
    Cluster::single(AuthOptions::default(), gateway).await
}

/// A socket past phase 1 (101) for `user`, before any frame.
async fn upgraded(gateway: &TestGateway, user: &str) -> WsClient {
    let token = gateway.ws_token(&Jwt::for_user(user).sign()).await;
    WsClient::connect(gateway.addr(), &token, None)
        .await
        .expect("a fresh token upgrades")
}

#[tokio::test]
async fn a_valid_jwt_frame_gets_auth_ok_and_then_every_text_frame_is_echoed() {
    let stack = stack(GatewayOptions::default()).await;
    let mut client = WsClient::authenticated(stack.gateway(), "alice").await;

    client.send_text("hello").await;
    assert_eq!(
        client.recv_json(STEP).await,
        json!({"type": "echo", "data": "hello"})
    );
    let frame = r#"{"type":"chat","text":"ünïcode \" quoted"}"#;
    client.send_text(frame).await;
    assert_eq!(
        client.recv_json(STEP).await,
        json!({"type": "echo", "data": frame})
    );
}

#[tokio::test]
async fn first_frames_that_are_not_a_jwt_frame_close_with_4400() {
    let stack = stack(GatewayOptions::default()).await;

    for first in [
        "hello",
        "[1,2]",
        r#"{"type":"hello"}"#,
        r#"{"type":"jwt"}"#,
        r#"{"token":"x"}"#,
    ] {
        let mut client = upgraded(stack.gateway(), "alice").await;
        client.send_text(first).await;
        client.expect_close(4400, STEP).await;
    }
}

#[tokio::test]
async fn a_since_that_auth_would_refuse_closes_with_4400_not_1011() {
    let stack = stack(GatewayOptions::default()).await;
    let jwt = Jwt::for_user("alice").sign();

    // Epochs are letters and digits: `a-b` is malformed for auth, so the
    // gateway must refuse it itself rather than pass it on and fail.
    for since in ["a-b:1-0", "ab:+1-0", "nope"] {
        let mut client = upgraded(stack.gateway(), "alice").await;
        client
            .send_text(&json!({"type": "jwt", "token": jwt, "since": since}).to_string())
            .await;
        client.expect_close(4400, STEP).await;
    }
}

#[tokio::test]
async fn invalid_jwts_close_with_4401_and_nothing_before() {
    let stack = stack(GatewayOptions::default()).await;
    let alice = || Jwt::for_user("alice");
    let cases = [
        (
            "signed with another key",
            alice().signed_with(b"not the configured secret").sign(),
        ),
        ("expired beyond the leeway", alice().expires_in(-120).sign()),
        (
            "not yet valid beyond the leeway",
            alice().not_before_in(600).sign(),
        ),
        ("alg none", alice().alg(JwtAlg::None).sign()),
        (
            "an algorithm that is not configured (HS384)",
            alice().alg(JwtAlg::Hs384).sign(),
        ),
        ("without exp", alice().without("exp").sign()),
        ("not a JWT at all", "abc.def.ghi".to_string()),
    ];

    for (case, jwt) in cases {
        let mut client = upgraded(stack.gateway(), "alice").await;
        client.send_jwt(&jwt).await;
        match client.next_frame(STEP).await {
            Some(Frame::Close(Some(4401))) => {}
            other => panic!("JWT {case}: expected close 4401, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_jwt_of_another_user_closes_with_4403() {
    let stack = stack(GatewayOptions::default()).await;
    let mut client = upgraded(stack.gateway(), "alice").await;

    client.send_jwt(&Jwt::for_user("mallory").sign()).await;

    client.expect_close(4403, STEP).await;
}

#[tokio::test]
async fn no_first_frame_within_auth_timeout_closes_with_4408() {
    let stack = stack(GatewayOptions::default().auth_timeout_s(1)).await;
    let mut client = upgraded(stack.gateway(), "alice").await;

    let started = std::time::Instant::now();
    client.expect_close(4408, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "closed after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn nothing_is_received_before_auth_ok() {
    let stack = stack(GatewayOptions::default()).await;
    stack.wait_ready().await;
    let mut ready = WsClient::authenticated(stack.gateway(), "bob").await;
    wsauth_tests::warm_up(stack.auth(), &mut [&mut ready]).await;
    let jwt = Jwt::for_user("alice").sign();
    let token = stack.gateway().ws_token(&jwt).await;
    let mut pending = WsClient::connect(stack.gateway().addr(), &token, None)
        .await
        .expect("upgrade");

    // Published while `pending` is in phase 2: once `ready` has it, the gateway has fanned it out.
    stack.auth().publish("early-direct", Some("alice")).await;
    let early = stack.auth().publish("early", None).await;
    assert_eq!(ready.recv_type("broadcast", STEP).await["id"], early);
    pending.send_jwt(&jwt).await;

    assert_eq!(
        pending.recv_json(STEP).await,
        json!({"type": "auth_ok", "user_id": "alice"})
    );
    let late = stack.auth().publish("late", None).await;
    assert_eq!(
        pending.recv_json(STEP).await,
        json!({"type": "broadcast", "id": late, "data": "late"})
    );
}

#[tokio::test]
async fn a_refreshed_jwt_keeps_the_connection_open_past_the_first_exp() {
    let stack = Cluster::single(
        AuthOptions::default().leeway_s(0),
        GatewayOptions::default(),
    )
    .await;
    let short = Jwt::for_user("alice").expires_in(3);
    let exp = short.exp_claim().expect("exp is set");
    let mut client =
        WsClient::authenticated_with(stack.gateway(), &short.sign(), "alice", None).await;

    client
        .send_jwt(&Jwt::for_user("alice").expires_in(120).sign())
        .await;
    // A refresh is silent: auth_ok is sent once, so the next frame is the echo.
    client.send_text("refreshed").await;
    assert_eq!(
        client.recv_json(STEP).await,
        json!({"type": "echo", "data": "refreshed"})
    );
    // The condition is the first JWT's expiry itself: wait until it has passed.
    wait_past_unix(exp + 1).await;

    client.echo("still here").await;
}

#[tokio::test]
async fn without_refresh_the_connection_closes_with_4401_when_the_jwt_expires() {
    let stack = Cluster::single(
        AuthOptions::default().leeway_s(0),
        GatewayOptions::default(),
    )
    .await;
    let short = Jwt::for_user("alice").expires_in(2);
    let mut client =
        WsClient::authenticated_with(stack.gateway(), &short.sign(), "alice", None).await;
    client.echo("before expiry").await;

    client.expect_close(4401, Duration::from_secs(6)).await;
    assert!(
        now_unix() >= short.exp_claim().expect("exp is set"),
        "closed before exp"
    );
}

#[tokio::test]
async fn a_refresh_with_another_users_jwt_closes_with_4403() {
    let stack = stack(GatewayOptions::default()).await;
    let mut client = WsClient::authenticated(stack.gateway(), "alice").await;

    client.send_jwt(&Jwt::for_user("mallory").sign()).await;

    let (frames, code) = client.drain_until_close(STEP).await;
    assert!(frames.iter().all(|f| f["type"] != "auth_ok"), "{frames:?}");
    assert_eq!(code, Some(4403));
}

#[tokio::test]
async fn a_refresh_with_an_invalid_jwt_closes_with_4401() {
    let stack = stack(GatewayOptions::default()).await;
    let mut client = WsClient::authenticated(stack.gateway(), "alice").await;

    client
        .send_jwt(&Jwt::for_user("alice").expires_in(-120).sign())
        .await;

    let (_, code) = client.drain_until_close(STEP).await;
    assert_eq!(code, Some(4401));
}

/// Waits until the wall clock is at or past `unix` seconds.
async fn wait_past_unix(unix: i64) {
    let now = now_unix();
    if unix > now {
        let secs = u64::try_from(unix - now).expect("positive");
        tokio::time::sleep(Duration::from_secs(secs) + Duration::from_millis(100)).await;
    }
}

/// The gateway's JSON log lines whose message is `message`.
fn log_lines(gateway: &TestGateway, message: &str) -> Vec<serde_json::Value> {
    gateway
        .logs()
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|line| line["message"] == message)
        .collect()
}

/// A session runs without a span of its own at the default `RUST_LOG=info`
/// (it cost a tenth of an idle connection's memory), so each of its log
/// lines names the connection itself: `conn_id` and `user_id`.
#[tokio::test]
async fn a_sessions_log_lines_carry_its_conn_id_and_user_id() {
    let stack = stack(GatewayOptions::default().max_messages_per_s(5)).await;
    let gateway = stack.gateway();
    let mut client = WsClient::authenticated(gateway, "carol").await;
    for i in 0..60 {
        // The gateway may close (and reset) before all of them are written.
        if client.try_send(format!("burst {i}").into()).await.is_err() {
            break;
        }
    }
    let (_, code) = client.drain_until_close(STEP).await;
    assert_eq!(code, Some(1008));

    wsauth_tests::wait_until(STEP, "the rate limit's log line", || async {
        !log_lines(gateway, "client over its message rate").is_empty()
    })
    .await;
    let authenticated = log_lines(gateway, "authenticated");
    let over_rate = log_lines(gateway, "client over its message rate");
    assert_eq!(authenticated.len(), 1, "{authenticated:?}");
    assert_eq!(over_rate.len(), 1, "{over_rate:?}");
    let conn_id = authenticated[0]["conn_id"].as_u64();
    assert!(conn_id.is_some(), "{authenticated:?}");
    for line in [&authenticated[0], &over_rate[0]] {
        assert_eq!(line["conn_id"].as_u64(), conn_id, "{line}");
        assert_eq!(line["user_id"], "carol", "{line}");
    }
}
