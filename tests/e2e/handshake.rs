//! Phase 1: `GET /token/ws` and the `/ws` upgrade, before any WebSocket frame.

use std::time::Duration;

use futures::future::join_all;
use tonic::Code;
use wsauth_shared::proto::ValidateTokenRequest;
use wsauth_tests::{
    ADMIN_KEY, ApiKey, AuthOptions, Cluster, GatewayOptions, INTERNAL_KEY, JWT_SECRET, Jwt, JwtAlg,
    STEP, WsClient,
};

async fn stack() -> Cluster {
    Cluster::single(AuthOptions::default(), GatewayOptions::default()).await
}

#[tokio::test]
async fn token_endpoint_issues_a_ws_token_for_a_valid_jwt() {
    let stack = stack().await;
    let jwt = Jwt::for_user("alice").sign();

    let response = stack.gateway().token_ws(Some(&jwt)).await;

    assert_eq!(response.status, 200, "{}", response.body);
    let body = response.json();
    let token = body["token"].as_str().expect("a token string");
    assert!(
        token.len() >= 43,
        "256 bits in base64 are at least 43 chars: {token:?}"
    );
    assert!(
        token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "URL-safe: {token:?}"
    );
    assert_eq!(body["expires_in"], 60);
}

#[tokio::test]
async fn token_endpoint_refuses_missing_malformed_and_invalid_jwts_with_401() {
    let stack = stack().await;
    let gateway = stack.gateway();
    let expired = Jwt::for_user("alice").expires_in(-120).sign();
    let wrong_key = Jwt::for_user("alice").signed_with(b"another secret").sign();
    let unsigned = Jwt::for_user("alice").alg(JwtAlg::None).sign();
    let no_sub = Jwt::for_user("alice").without("sub").sign();
    let oversized = Jwt::for_user("alice").claim("pad", "x".repeat(9000)).sign();

    let cases: Vec<(&str, Vec<(&str, String)>)> = vec![
        ("no Authorization header", vec![]),
        (
            "not a Bearer scheme",
            vec![("authorization", format!("Basic {expired}"))],
        ),
        (
            "garbage JWT",
            vec![("authorization", "Bearer not.a.jwt".into())],
        ),
        (
            "expired JWT",
            vec![("authorization", format!("Bearer {expired}"))],
        ),
        (
            "JWT signed with another key",
            vec![("authorization", format!("Bearer {wrong_key}"))],
        ),
        (
            "alg none JWT",
            vec![("authorization", format!("Bearer {unsigned}"))],
        ),
        (
            "JWT without sub",
            vec![("authorization", format!("Bearer {no_sub}"))],
        ),
        (
            "JWT over 8 KiB",
            vec![("authorization", format!("Bearer {oversized}"))],
        ),
    ];
    for (case, headers) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = gateway.get("/token/ws", &headers).await;
        assert_eq!(response.status, 401, "{case}: {}", response.body);
        assert!(
            response.json()["error"].is_string(),
            "{case}: a JSON error body: {}",
            response.body
        );
    }
}

#[tokio::test]
async fn upgrades_without_a_valid_token_are_refused_with_401() {
    let stack = stack().await;
    let addr = stack.gateway().addr();

    assert_eq!(
        WsClient::connect_to(addr, "/ws", &[], None).await.err(),
        Some(401),
        "no token"
    );
    assert_eq!(
        WsClient::connect(addr, "", None).await.err(),
        Some(401),
        "empty token"
    );
    let unknown = "A".repeat(43);
    assert_eq!(
        WsClient::connect(addr, &unknown, None).await.err(),
        Some(401),
        "unknown token"
    );
    let oversized = "A".repeat(9000);
    assert_eq!(
        WsClient::connect(addr, &oversized, None).await.err(),
        Some(401),
        "oversized token"
    );
}

#[tokio::test]
async fn a_used_token_cannot_open_a_second_socket() {
    let stack = stack().await;
    let token = stack
        .gateway()
        .ws_token(&Jwt::for_user("alice").sign())
        .await;

    let first = WsClient::connect(stack.gateway().addr(), &token, None).await;
    let second = WsClient::connect(stack.gateway().addr(), &token, None).await;

    assert!(first.is_ok(), "the first upgrade succeeds");
    assert_eq!(
        second.err(),
        Some(401),
        "the second upgrade with the same token"
    );
}

#[tokio::test]
async fn twenty_racing_upgrades_with_one_token_give_exactly_one_101() {
    let stack = stack().await;
    let addr = stack.gateway().addr();
    let token = stack
        .gateway()
        .ws_token(&Jwt::for_user("alice").sign())
        .await;

    let results = join_all((0..20).map(|_| WsClient::connect(addr, &token, None))).await;

    let statuses: Vec<u16> = results
        .iter()
        .map(|r| r.as_ref().map(|_| 101).unwrap_or_else(|s| *s))
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 101).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| *s == 101 || *s == 401),
        "{statuses:?}"
    );
}

#[tokio::test]
async fn an_expired_ws_token_is_refused_with_401() {
    let stack = Cluster::single(
        AuthOptions::default().ws_token_ttl_s(1),
        GatewayOptions::default(),
    )
    .await;
    let token = stack
        .gateway()
        .ws_token(&Jwt::for_user("alice").sign())
        .await;

    // The condition here is the passage of time itself: the TTL (1 s) must run out in Redis.
    tokio::time::sleep(Duration::from_millis(2200)).await;

    assert_eq!(
        WsClient::connect(stack.gateway().addr(), &token, None)
            .await
            .err(),
        Some(401)
    );
}

#[tokio::test]
async fn an_origin_outside_allowed_origins_gets_403_and_the_token_still_works() {
    let options =
        GatewayOptions::default().allowed_origins("https://app.example,https://admin.example");
    let stack = Cluster::single(AuthOptions::default(), options).await;
    let addr = stack.gateway().addr();
    let jwt = Jwt::for_user("alice").sign();
    let token = stack.gateway().ws_token(&jwt).await;

    let refused = WsClient::connect(addr, &token, Some("https://evil.example")).await;
    assert_eq!(refused.err(), Some(403));

    let mut client = WsClient::connect(addr, &token, Some("https://admin.example"))
        .await
        .expect("the token was not burned by the refused request");
    client.send_jwt(&jwt).await;
    assert_eq!(client.recv_json(STEP).await["type"], "auth_ok");
}

#[tokio::test]
async fn handshakes_answer_503_while_auth_is_unreachable() {
    let mut stack = stack().await;
    let jwt = Jwt::for_user("alice").sign();
    let token = stack.gateway().ws_token(&jwt).await;

    stack.auths[0].kill().await;

    let response = stack.gateway().token_ws(Some(&jwt)).await;
    assert_eq!(response.status, 503, "/token/ws: {}", response.body);
    assert_eq!(
        WsClient::connect(stack.gateway().addr(), &token, None)
            .await
            .err(),
        Some(503),
        "/ws"
    );
    assert_eq!(stack.gateway().readyz().await, 503, "/readyz");
    assert_eq!(
        stack.gateway().get("/healthz", &[]).await.status,
        200,
        "/healthz"
    );
}

#[tokio::test]
async fn a_gateway_whose_auth_never_answers_still_serves_health_and_503s() {
    // Bound and never accepted from: connections complete in the kernel's
    // backlog and then nothing answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = silent
        .local_addr()
        .expect("a bound listener has an address");
    let gateway = wsauth_tests::TestGateway::spawn_with_auth_url(
        &format!("http://{addr}"),
        GatewayOptions::default().auth_call_timeout_ms(300),
    )
    .await;

    assert_eq!(gateway.get("/healthz", &[]).await.status, 200);
    assert_eq!(gateway.readyz().await, 503);
    assert_eq!(
        gateway
            .token_ws(Some(&Jwt::for_user("alice").sign()))
            .await
            .status,
        503
    );
}

#[tokio::test]
async fn health_ready_metrics_and_demo_page_answer() {
    let stack = stack().await;
    let gateway = stack.gateway();

    assert_eq!(gateway.get("/healthz", &[]).await.status, 200);
    gateway.wait_ready(Duration::from_secs(20)).await;
    assert_eq!(gateway.gauge("wsauth_gateway_connections_open").await, 0.0);
    let page = gateway.get("/", &[]).await;
    assert_eq!(page.status, 200);
    assert!(
        page.header("content-type")
            .is_some_and(|t| t.starts_with("text/html")),
        "{:?}",
        page.headers
    );
    assert!(page.body.contains("<script"), "the demo page has a script");
}

#[tokio::test]
async fn mint_jwt_prints_only_a_jwt_that_the_gateway_accepts() {
    let stack = stack().await;

    let output = stack.auth().mint_jwt_cli("carol").await;

    assert!(
        output.status.success(),
        "mint-jwt: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("a JWT is ASCII");
    assert!(
        stdout.ends_with('\n') && stdout.trim_end().lines().count() == 1,
        "only the JWT: {stdout:?}"
    );
    let jwt = stdout.trim_end();
    assert_eq!(jwt.split('.').count(), 3, "{jwt:?}");
    let mut client = WsClient::authenticated_with(stack.gateway(), jwt, "carol", None).await;
    client.echo("minted").await;
}

#[tokio::test]
async fn grpc_calls_with_a_wrong_or_missing_key_are_unauthenticated() {
    let stack = stack().await;
    let request = || ValidateTokenRequest {
        token: "A".repeat(43),
    };

    for key in [ApiKey::Wrong, ApiKey::Missing] {
        let status = stack
            .auth()
            .auth_client(key)
            .validate_token(request())
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::Unauthenticated,
            "ValidateToken with {key:?}"
        );
    }
    let status = stack
        .auth()
        .auth_client(ApiKey::Internal)
        .validate_token(request())
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::Unauthenticated,
        "an unknown token with the right key"
    );
    for key in [ApiKey::Wrong, ApiKey::Missing] {
        let status = stack
            .auth()
            .broadcast_client(key)
            .publish(wsauth_shared::proto::PublishRequest {
                data: "x".into(),
                user_id: None,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::Unauthenticated, "Publish with {key:?}");
    }
}

#[tokio::test]
async fn logs_never_contain_jwts_ws_tokens_or_keys() {
    // Everything at trace: tungstenite, h2 and hyper print frames and headers
    // there, and tower_http's default span records the full URI, query (the token) included.
    let debug = "trace";
    let stack = Cluster::single(
        AuthOptions::default().env("RUST_LOG", debug),
        GatewayOptions::default().env("RUST_LOG", debug),
    )
    .await;
    let jwt = Jwt::for_user("dave").sign();
    let mut client = WsClient::authenticated_with(stack.gateway(), &jwt, "dave", None).await;
    client.echo("hello").await;
    let token = stack.gateway().ws_token(&jwt).await;
    let _ = WsClient::connect(stack.gateway().addr(), &token, None).await;
    let _ = WsClient::connect(stack.gateway().addr(), &token, None).await;
    let bad = Jwt::for_user("dave").signed_with(b"wrong").sign();
    assert_eq!(stack.gateway().token_ws(Some(&bad)).await.status, 401);
    stack.auth().publish("event", None).await;
    client.recv_type("broadcast", STEP).await;

    let logs = format!("{}\n{}", stack.auth().logs(), stack.gateway().logs());
    assert!(
        logs.matches("\"listening\"").count() == 2,
        "both services' logs were captured"
    );
    let jwt_signature = jwt.rsplit('.').next().expect("a JWT has three parts");
    for (what, secret) in [
        ("a JWT", jwt_signature),
        ("a bad JWT", bad.rsplit('.').next().expect("three parts")),
        ("a ws token", token.as_str()),
        ("the internal key", INTERNAL_KEY),
        ("the admin key", ADMIN_KEY),
        ("the JWT secret", JWT_SECRET),
    ] {
        assert!(!logs.contains(secret), "the logs contain {what}");
    }
}

#[tokio::test]
async fn with_ws_token_reuse_a_token_opens_several_sockets() {
    let stack = Cluster::single(
        AuthOptions::default().env("WS_TOKEN_REUSE", "true"),
        GatewayOptions::default(),
    )
    .await;
    let jwt = Jwt::for_user("alice").sign();
    let token = stack.gateway().ws_token(&jwt).await;

    for _ in 0..3 {
        let mut client = WsClient::connect(stack.gateway().addr(), &token, None)
            .await
            .expect("a reusable token");
        client.send_jwt(&jwt).await;
        assert_eq!(client.recv_json(STEP).await["type"], "auth_ok");
    }
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let auth = AuthOptions::default()
        .env("JWT_ISSUER", "https://id.example")
        .env("JWT_AUDIENCE", "wsauth");
    let stack = Cluster::single(auth, GatewayOptions::default()).await;
    let good = || {
        Jwt::for_user("alice")
            .issuer("https://id.example")
            .audience("wsauth")
    };

    assert_eq!(
        stack.gateway().token_ws(Some(&good().sign())).await.status,
        200,
        "right iss and aud"
    );
    for (case, jwt) in [
        ("wrong iss", good().issuer("https://evil.example")),
        ("wrong aud", good().audience("other")),
        ("no iss", good().without("iss")),
        ("no aud", good().without("aud")),
    ] {
        assert_eq!(
            stack.gateway().token_ws(Some(&jwt.sign())).await.status,
            401,
            "{case}"
        );
    }
    let token = stack.gateway().ws_token(&good().sign()).await;
    let mut client = WsClient::connect(stack.gateway().addr(), &token, None)
        .await
        .expect("upgrade");
    client.send_jwt(&good().audience("other").sign()).await;
    client.expect_close(4401, STEP).await;
}

/// A client that sends its JWT frame in the same write as its upgrade
/// request: the frame arrives with the request, so the HTTP server has read
/// it before the 101, and it must reach the WebSocket (not be dropped with
/// the HTTP layer's buffer).
#[tokio::test]
async fn a_jwt_frame_sent_in_the_same_write_as_the_upgrade_is_not_lost() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let stack = stack().await;
    let gateway = stack.gateway();
    let jwt = Jwt::for_user("alice").sign();
    let token = gateway.ws_token(&jwt).await;
    let payload = serde_json::json!({"type": "jwt", "token": jwt}).to_string();
    let mut bytes = format!(
        "GET /ws?token={token} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        gateway.addr()
    )
    .into_bytes();
    // One masked text frame (RFC 6455 §5.2), the length in 16 bits.
    let mask = [0x12, 0x34, 0x56, 0x78];
    let len = u16::try_from(payload.len()).expect("a JWT frame under 64 KiB");
    assert!(len >= 126, "the 16-bit length form");
    bytes.extend([0x81, 0x80 | 126]);
    bytes.extend(len.to_be_bytes());
    bytes.extend(mask);
    bytes.extend(payload.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));

    let mut socket = tokio::net::TcpStream::connect(gateway.addr())
        .await
        .expect("the gateway accepts");
    socket.write_all(&bytes).await.expect("written at once");
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let auth_ok = loop {
        let mut chunk = [0u8; 4096];
        let read = tokio::time::timeout_at(deadline, socket.read(&mut chunk))
            .await
            .expect("auth_ok within 10 s: the JWT frame was not lost")
            .expect("the socket reads");
        assert!(
            read > 0,
            "closed early: {:?}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&chunk[..read]);
        let Some(head_end) = received.windows(4).position(|w| w == b"\r\n\r\n") else {
            continue;
        };
        let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        // The server's first frame: unmasked text, a 7-bit length.
        let frame = &received[head_end + 4..];
        if frame.len() < 2 || frame.len() < 2 + usize::from(frame[1] & 0x7f) {
            continue;
        }
        assert_eq!(frame[0], 0x81, "one text frame");
        let text = &frame[2..2 + usize::from(frame[1] & 0x7f)];
        break serde_json::from_slice::<serde_json::Value>(text).expect("JSON");
    };
    assert_eq!(auth_ok["type"], "auth_ok", "{auth_ok}");
}
