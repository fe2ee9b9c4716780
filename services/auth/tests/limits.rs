//! auth's limits against hostile callers, over real HTTP/2: keys checked from
//! the headers before a body is read, decoded sizes bounded per service,
//! concurrent streams bounded per connection, a server-side deadline on every
//! call, and rapid reset survived. Raw `h2` where tonic's client would be too polite.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use h2::client::SendRequest;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tonic::Code;
use wsauth_shared::proto::{IssueWsTokenRequest, PublishRequest};

const PUBLISH: &str = "/wsauth.v1.BroadcastService/Publish";
const VALIDATE: &str = "/wsauth.v1.AuthService/ValidateToken";
const HEALTH: &str = "/grpc.health.v1.Health/Check";

/// A raw HTTP/2 connection to auth.
async fn h2_connect(addr: SocketAddr) -> SendRequest<Bytes> {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let (client, connection) = timeout(CALL_DEADLINE, h2::client::handshake(tcp))
        .await
        .expect("handshake in time")
        .expect("h2 handshake");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn grpc_request(addr: SocketAddr, path: &str, key: Option<&str>) -> http::Request<()> {
    let mut builder = http::Request::builder()
        .method("POST")
        .uri(format!("http://{addr}{path}"))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    builder.body(()).expect("valid request")
}

/// The 5-byte gRPC message prefix declaring `len` bytes.
fn prefix(len: u32) -> Bytes {
    let mut frame = vec![0u8];
    frame.extend_from_slice(&len.to_be_bytes());
    Bytes::from(frame)
}

/// The call's grpc-status, from a trailers-only answer or the trailers.
async fn grpc_status(response: h2::client::ResponseFuture) -> Option<i32> {
    let response = response.await.ok()?;
    let parse = |headers: &http::HeaderMap| {
        headers
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
    };
    if let Some(code) = parse(response.headers()) {
        return Some(code);
    }
    let mut body = response.into_body();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.ok()?;
        let _ = body.flow_control().release_capacity(chunk.len());
    }
    parse(&body.trailers().await.ok()??)
}

/// Opens a call on `client` that declares a `declared`-byte message and sends
/// only `sent` bytes of it, then stalls.
async fn stalled_call(
    client: &mut SendRequest<Bytes>,
    request: http::Request<()>,
    declared: u32,
    sent: usize,
) -> (h2::client::ResponseFuture, h2::SendStream<Bytes>) {
    let mut ready = client.clone().ready().await.expect("connection usable");
    let (response, mut body) = ready.send_request(request, false).expect("open stream");
    body.send_data(prefix(declared), false)
        .expect("send prefix");
    if sent > 0 {
        body.reserve_capacity(sent);
        body.send_data(Bytes::from(vec![b'x'; sent]), false)
            .expect("send part of the body");
    }
    (response, body)
}

#[tokio::test]
async fn a_keyless_4_mib_publish_is_refused_from_its_headers_alone() {
    let auth = TestAuth::spawn(config(None)).await;
    let mut client = h2_connect(auth.addr).await;
    // 4 MiB declared, 16 KiB sent, the rest held back: the answer can only
    // come from the headers.
    let (response, _body) = stalled_call(
        &mut client,
        grpc_request(auth.addr, PUBLISH, None),
        4 * 1024 * 1024,
        16 * 1024,
    )
    .await;
    let status = timeout(Duration::from_secs(2), grpc_status(response))
        .await
        .expect("answered without waiting for the body");
    assert_eq!(status, Some(Code::Unauthenticated as i32));

    // An internal key is not enough for Publish either, and a wrong key is no key.
    for key in [INTERNAL_KEY, "wrong-key"] {
        let (response, _body) = stalled_call(
            &mut client,
            grpc_request(auth.addr, PUBLISH, Some(key)),
            4 * 1024 * 1024,
            0,
        )
        .await;
        let status = timeout(Duration::from_secs(2), grpc_status(response)).await;
        assert_eq!(
            status.expect("answered"),
            Some(Code::Unauthenticated as i32)
        );
    }
}

#[tokio::test]
async fn the_same_refusal_reaches_a_tonic_client() {
    let auth = TestAuth::spawn(config(None)).await;
    let mut client = auth.broadcast_client().await;
    let publish = PublishRequest {
        data: "x".repeat(4 * 1024 * 1024 - 64),
        user_id: None,
    };
    let status = call(client.publish(req(publish, None))).await;
    assert_code(status, Code::Unauthenticated);
}

#[tokio::test]
async fn decoded_requests_are_bounded_per_service() {
    let mut cfg = config(None);
    cfg.max_event_bytes = 4096;
    let auth = TestAuth::spawn(cfg).await;
    let is_transport_limit = |status: &tonic::Status| {
        matches!(status.code(), Code::OutOfRange | Code::ResourceExhausted)
    };

    // AuthService: 16 KiB. Over 8 KiB the handler says INVALID_ARGUMENT; over 16 KiB the transport refuses.
    let mut auth_client = auth.auth_client().await;
    let issue = |n: usize| IssueWsTokenRequest { jwt: "a".repeat(n) };
    assert_code(
        call(auth_client.issue_ws_token(req(issue(12 * 1024), None))).await,
        Code::InvalidArgument,
    );
    let status = call(auth_client.issue_ws_token(req(issue(17 * 1024), None)))
        .await
        .expect_err("over 16 KiB");
    assert!(is_transport_limit(&status), "{status:?}");

    // BroadcastService: MAX_EVENT_BYTES + 1 KiB.
    let mut broadcast = auth.broadcast_client().await;
    let publish = |n: usize| PublishRequest {
        data: "d".repeat(n),
        user_id: None,
    };
    call(broadcast.publish(req(publish(4096), Some(ADMIN_KEY))))
        .await
        .expect("at MAX_EVENT_BYTES");
    assert_code(
        call(broadcast.publish(req(publish(4097 + 512), Some(ADMIN_KEY)))).await,
        Code::InvalidArgument,
    );
    let status = call(broadcast.publish(req(publish(4096 + 2048), Some(ADMIN_KEY))))
        .await
        .expect_err("over MAX_EVENT_BYTES + 1 KiB");
    assert!(is_transport_limit(&status), "{status:?}");
}

#[tokio::test]
async fn a_slow_unary_call_hits_the_server_side_deadline() {
    let mut cfg = config(None);
    cfg.rpc_timeout_ms = 300;
    let auth = TestAuth::spawn(cfg).await;
    let mut client = h2_connect(auth.addr).await;
    // A caller with a key that starts a message and never finishes it.
    let started = Instant::now();
    let (response, _body) = stalled_call(
        &mut client,
        grpc_request(auth.addr, VALIDATE, Some(INTERNAL_KEY)),
        100,
        10,
    )
    .await;
    let status = timeout(Duration::from_secs(3), grpc_status(response))
        .await
        .expect("the server ended the call");
    assert_eq!(status, Some(Code::DeadlineExceeded as i32));
    assert!(started.elapsed() >= Duration::from_millis(250));
}

#[tokio::test]
async fn concurrent_streams_per_connection_are_bounded() {
    let mut cfg = config(None);
    cfg.max_concurrent_streams = 8;
    cfg.rpc_timeout_ms = 1500;
    let auth = TestAuth::spawn(cfg).await;
    let mut client = h2_connect(auth.addr).await;
    // One finished call first: its answer comes after the server's SETTINGS,
    // so the client knows the limit before it opens the rest.
    let (first, mut body) = client
        .send_request(grpc_request(auth.addr, HEALTH, None), false)
        .expect("open");
    body.send_data(prefix(0), true).expect("empty message");
    let status = timeout(CALL_DEADLINE, grpc_status(first)).await;
    assert_eq!(status.expect("served"), Some(0));
    let mut stalled = Vec::new();
    for _ in 0..8 {
        stalled.push(
            stalled_call(
                &mut client,
                grpc_request(auth.addr, VALIDATE, Some(INTERNAL_KEY)),
                100,
                0,
            )
            .await,
        );
    }
    // The ninth stream must wait for a slot the server has not given.
    let (ninth, _body) =
        stalled_call(&mut client, grpc_request(auth.addr, HEALTH, None), 0, 0).await;
    let mut ninth = Box::pin(grpc_status(ninth));
    assert!(
        timeout(Duration::from_millis(500), &mut ninth)
            .await
            .is_err(),
        "a ninth stream was served while eight were open"
    );
    // Other connections are served meanwhile.
    let mut other = h2_connect(auth.addr).await;
    let (response, mut body) = other
        .send_request(grpc_request(auth.addr, HEALTH, None), false)
        .expect("open");
    body.send_data(prefix(0), true).expect("empty message");
    let status = timeout(CALL_DEADLINE, grpc_status(response)).await;
    assert_eq!(status.expect("served"), Some(0));
    // Once the stalled calls hit their deadline, the ninth goes through.
    for (response, _) in stalled {
        let status = timeout(CALL_DEADLINE, grpc_status(response)).await;
        assert_eq!(status.expect("ended"), Some(Code::DeadlineExceeded as i32));
    }
    drop(_body);
    let status = timeout(CALL_DEADLINE, ninth).await.expect("served at last");
    assert!(status.is_some());
}

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmRSS line")
        * 1024
}

#[tokio::test]
async fn hundreds_of_oversized_streams_leave_memory_flat_and_others_served() {
    let auth = TestAuth::spawn(config(None)).await;
    let before = rss_bytes();
    let mut client = h2_connect(auth.addr).await;
    let mut calls = Vec::new();
    // 200 streams each declaring 4 MiB (800 MiB if buffered), half keyless,
    // half with the admin key (then the size limit refuses them).
    for i in 0..200 {
        let key = (i % 2 == 0).then_some(ADMIN_KEY);
        calls.push(
            stalled_call(
                &mut client,
                grpc_request(auth.addr, PUBLISH, key),
                4 * 1024 * 1024,
                8 * 1024,
            )
            .await,
        );
    }
    let mut broadcast = auth.broadcast_client().await;
    let publish = PublishRequest {
        data: "still served".into(),
        user_id: None,
    };
    call(broadcast.publish(req(publish, Some(ADMIN_KEY))))
        .await
        .expect("another caller is served");
    for (i, (response, _body)) in calls.into_iter().enumerate() {
        let status = timeout(CALL_DEADLINE, grpc_status(response))
            .await
            .expect("every oversized call is answered");
        let expected = if i % 2 == 0 {
            Code::OutOfRange
        } else {
            Code::Unauthenticated
        };
        assert_eq!(status, Some(expected as i32), "call {i}");
    }
    let grown = rss_bytes().saturating_sub(before);
    assert!(grown < 64 * 1024 * 1024, "RSS grew by {grown} bytes");
}

#[tokio::test]
async fn rapid_reset_does_not_take_auth_down() {
    let auth = TestAuth::spawn(config(None)).await;
    let attacker = h2_connect(auth.addr).await;
    let started = Instant::now();
    let mut sent = 0u32;
    // Open and cancel streams as fast as the connection lets us.
    while sent < 5000 && started.elapsed() < Duration::from_secs(10) {
        let Ok(ready) = timeout(Duration::from_secs(1), attacker.clone().ready()).await else {
            break;
        };
        let Ok(mut ready) = ready else { break };
        let Ok((response, mut body)) =
            ready.send_request(grpc_request(auth.addr, PUBLISH, Some(ADMIN_KEY)), false)
        else {
            break;
        };
        body.send_reset(h2::Reason::CANCEL);
        drop(response);
        sent += 1;
    }
    assert!(sent > 0);
    // A fresh caller is served promptly all the same.
    let mut broadcast = auth.broadcast_client().await;
    let publish = PublishRequest {
        data: "after the flood".into(),
        user_id: None,
    };
    call(broadcast.publish(req(publish, Some(ADMIN_KEY))))
        .await
        .expect("auth still serves");
    auth.shutdown().await.expect("clean shutdown");
}
