//! The gateway's admission limits, answered before the ws token is looked
//! at: `MAX_CONNECTIONS`, `MAX_PENDING_AUTH` (a flood of sockets that never
//! authenticate, beside clients that keep working) and `PER_IP_RATE` with
//! `TRUSTED_PROXIES`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use futures::stream;
use serde_json::json;
use wsauth_tests::http::HttpConn;
use wsauth_tests::{
    AuthOptions, Cluster, GatewayOptions, Jwt, STEP, TestGateway, WsClient, wait_until,
};

/// Sockets in the hostile test: `WSAUTH_HOSTILE_SOCKETS` (the note's run
/// used 20,000, spread by the gateway's own limit), 2,000 by default so
/// `make test` stays quick.
fn hostile_sockets() -> usize {
    std::env::var("WSAUTH_HOSTILE_SOCKETS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(2_000)
}

/// `wsauth_gateway_http_refusals_total` for `route` and `reason`.
async fn refusals(gateway: &TestGateway, route: &str, reason: &str) -> f64 {
    let wanted =
        format!("wsauth_gateway_http_refusals_total{{route=\"{route}\",reason=\"{reason}\"}} ");
    gateway
        .metrics()
        .await
        .lines()
        .find_map(|line| line.strip_prefix(&wanted)?.trim().parse().ok())
        .unwrap_or(0.0)
}

async fn upgrade(gateway: &TestGateway, token: &str) -> Result<WsClient, u16> {
    WsClient::connect(gateway.addr(), token, None).await
}

#[tokio::test]
async fn a_full_gateway_answers_503_and_leaves_the_token_unspent() {
    let stack = Cluster::single(
        AuthOptions::default(),
        GatewayOptions::default().env("MAX_CONNECTIONS", 2),
    )
    .await;
    let gateway = stack.gateway();
    let first = WsClient::authenticated(gateway, "alice").await;
    let _second = WsClient::authenticated(gateway, "bob").await;

    let jwt = Jwt::for_user("carol").sign();
    let token = gateway.ws_token(&jwt).await;
    let refused = gateway
        .get(&format!("/ws?token={token}"), &upgrade_headers())
        .await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.json(), json!({"error": "gateway full"}));
    assert_eq!(refusals(gateway, "/ws", "gateway_full").await, 1.0);

    drop(first);
    wait_until(STEP, "alice's socket is gone", || async {
        gateway.gauge("wsauth_gateway_sockets_open").await == 1.0
    })
    .await;
    // The same token: the refusal never reached ValidateToken.
    let mut carol = upgrade(gateway, &token)
        .await
        .expect("101 once there is room");
    carol.send_jwt(&jwt).await;
    assert_eq!(
        carol.recv_json(STEP).await,
        json!({"type": "auth_ok", "user_id": "carol"})
    );
}

fn upgrade_headers() -> [(&'static str, &'static str); 4] {
    [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ]
}

#[tokio::test]
async fn sockets_that_never_authenticate_are_capped_while_clients_keep_working() {
    const MAX_PENDING: usize = 64;
    let stack = Cluster::single(
        AuthOptions::default(),
        GatewayOptions::default()
            .env("MAX_PENDING_AUTH", MAX_PENDING)
            .auth_timeout_s(600),
    )
    .await;
    let gateway = stack.gateway();
    let mut worker = WsClient::authenticated(gateway, "worker").await;

    // Every hostile socket has a valid ws token, upgrades, and never sends
    // its JWT. 32 at a time, so admissions race; each task fetches its tokens
    // over one kept-alive connection, so 20,000 attempts fit the port range.
    const TASKS: usize = 32;
    let bearer = format!("Bearer {}", Jwt::for_user("mallory").sign());
    let attempts = hostile_sockets();
    let outcomes: Vec<Result<WsClient, u16>> = stream::iter(0..TASKS)
        .map(|task| {
            let bearer = bearer.clone();
            let share = attempts / TASKS + usize::from(task < attempts % TASKS);
            async move {
                let mut tokens = HttpConn::connect(gateway.addr(), None)
                    .await
                    .expect("connect");
                let mut outcomes = Vec::with_capacity(share);
                for _ in 0..share {
                    if !tokens.reusable() {
                        tokens = HttpConn::connect(gateway.addr(), None)
                            .await
                            .expect("connect");
                    }
                    let response = tokens
                        .get("/token/ws", &[("authorization", &bearer)])
                        .await
                        .expect("/token/ws answers");
                    assert_eq!(response.status, 200, "{}", response.body);
                    let token = response.json()["token"]
                        .as_str()
                        .expect("a token")
                        .to_owned();
                    outcomes.push(upgrade(gateway, &token).await);
                }
                outcomes
            }
        })
        .buffer_unordered(TASKS)
        .flat_map(stream::iter)
        .collect()
        .await;
    let (held, refused): (Vec<_>, Vec<_>) = outcomes.into_iter().partition(Result::is_ok);
    assert_eq!(
        held.len(),
        MAX_PENDING,
        "exactly MAX_PENDING_AUTH sockets upgrade"
    );
    assert!(refused.iter().all(|outcome| matches!(outcome, Err(503))));
    assert_eq!(
        refusals(gateway, "/ws", "pending_auth_full").await,
        (attempts - MAX_PENDING) as f64
    );
    assert_eq!(
        gateway.gauge("wsauth_gateway_pending_auth").await,
        MAX_PENDING as f64
    );

    // The authenticated client is served throughout.
    worker.send_text("still here").await;
    assert_eq!(
        worker.recv_json(STEP).await,
        json!({"type": "echo", "data": "still here"})
    );
    stack.auth().publish("to everyone", None).await;
    assert_eq!(
        worker.recv_type("broadcast", STEP).await["data"],
        "to everyone"
    );
    // A new client is refused while the flood holds every pending place…
    let token = gateway.ws_token(&Jwt::for_user("late").sign()).await;
    assert_eq!(upgrade(gateway, &token).await.err(), Some(503));

    // …and admitted once the flood lets go.
    drop(held);
    wait_until(STEP, "the flood's sockets are gone", || async {
        gateway.gauge("wsauth_gateway_pending_auth").await == 0.0
    })
    .await;
    WsClient::authenticated(gateway, "late").await;
}

/// `GET /token/ws` from `source`, with an optional `X-Forwarded-For`.
async fn token_from(
    gateway: &TestGateway,
    source: Ipv4Addr,
    forwarded_for: Option<&str>,
) -> wsauth_tests::http::HttpResponse {
    let jwt = Jwt::for_user("rate").sign();
    let bearer = format!("Bearer {jwt}");
    let mut headers = vec![("authorization", bearer.as_str())];
    if let Some(forwarded) = forwarded_for {
        headers.push(("x-forwarded-for", forwarded));
    }
    let mut conn = HttpConn::connect(gateway.addr(), Some(source))
        .await
        .expect("connect");
    conn.get("/token/ws", &headers).await.expect("a response")
}

/// Requests from `source` until the first 429: how many passed before it.
async fn passed_before_429(
    gateway: &TestGateway,
    source: Ipv4Addr,
    forwarded: Option<&str>,
) -> usize {
    for passed in 0..100 {
        let response = token_from(gateway, source, forwarded).await;
        if response.status == 429 {
            assert_eq!(response.json(), json!({"error": "rate limited"}));
            let retry_after: u64 = response
                .header("retry-after")
                .and_then(|value| value.parse().ok())
                .expect("a Retry-After in seconds");
            assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
            return passed;
        }
        assert_eq!(response.status, 200, "{}", response.body);
    }
    panic!("no 429 within 100 requests");
}

#[tokio::test]
async fn per_ip_rate_limits_each_address_and_ignores_forwarding_from_untrusted_peers() {
    let stack = Cluster::single(
        AuthOptions::default(),
        GatewayOptions::default().env("PER_IP_RATE", 5),
    )
    .await;
    let gateway = stack.gateway();
    let started = Instant::now();
    let passed = passed_before_429(gateway, Ipv4Addr::LOCALHOST, None).await;
    // The burst (2 × 5), plus what refilled while the requests ran.
    let refilled = (started.elapsed().as_secs_f64() * 5.0).ceil() as usize;
    assert!(
        (10..=10 + refilled).contains(&passed),
        "{passed} passed before the first 429"
    );
    // The same peer claiming to forward someone else is still itself…
    let forged = token_from(gateway, Ipv4Addr::LOCALHOST, Some("203.0.113.5")).await;
    assert_eq!(forged.status, 429);
    // …and /ws shares the bucket, refused before its (absent) token.
    let upgrade = gateway.get("/ws", &upgrade_headers()).await;
    assert_eq!(upgrade.status, 429);
    // Another address has its own bucket.
    let other = token_from(gateway, Ipv4Addr::new(127, 0, 0, 2), None).await;
    assert_eq!(other.status, 200);
    assert!(refusals(gateway, "/token/ws", "rate_limited").await >= 2.0);
    assert_eq!(refusals(gateway, "/ws", "rate_limited").await, 1.0);

    // Once the bucket refills, the client is served again.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(
        token_from(gateway, Ipv4Addr::LOCALHOST, None).await.status,
        200
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_bucket() {
    let stack = Cluster::single(
        AuthOptions::default(),
        GatewayOptions::default()
            .env("PER_IP_RATE", 1)
            .env("TRUSTED_PROXIES", "127.0.0.1/32"),
    )
    .await;
    let gateway = stack.gateway();
    let proxy = Ipv4Addr::LOCALHOST;
    // A client's own forged entry, left of what the proxy appended, is ignored.
    let alice = "6.6.6.6, 198.51.100.1";
    let passed = passed_before_429(gateway, proxy, Some(alice)).await;
    assert!((2..=4).contains(&passed), "{passed} passed (burst 2)");
    assert_eq!(
        token_from(gateway, proxy, Some("198.51.100.2"))
            .await
            .status,
        200
    );
    assert_eq!(
        token_from(gateway, proxy, Some("6.6.6.6")).await.status,
        200
    );
    // The proxy itself, with no header, is one more client.
    assert_eq!(token_from(gateway, proxy, None).await.status, 200);
    // An untrusted peer's header changes nothing: its own address counts.
    let untrusted = Ipv4Addr::new(127, 0, 0, 3);
    let passed = passed_before_429(gateway, untrusted, Some("198.51.100.77")).await;
    assert!((2..=4).contains(&passed));
    assert_eq!(
        token_from(gateway, untrusted, Some("198.51.100.78"))
            .await
            .status,
        429
    );
}
