//! Per-connection limits, and the connection registry emptying itself.

use std::time::Duration;

use futures::StreamExt;
use futures::stream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use wsauth_tests::{AuthOptions, Cluster, GatewayOptions, Jwt, STEP, WsClient, wait_until};

#[tokio::test]
async fn a_binary_frame_closes_with_1003() {
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    let mut client = WsClient::authenticated(stack.gateway(), "alice").await;

    client.send_binary(b"\x00\x01binary").await;

    client.expect_close(1003, STEP).await;
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    let mut client = WsClient::authenticated(stack.gateway(), "alice").await;

    let not_utf8 = Frame::message(&b"caf\xe9"[..], OpCode::Data(Data::Text), true);
    client
        .try_send(Message::Frame(not_utf8))
        .await
        .expect("the frame is sent");

    client.expect_close(1007, STEP).await;
}

#[tokio::test]
async fn a_protocol_violation_closes_with_1002() {
    let stack = Cluster::single(AuthOptions::default(), GatewayOptions::default()).await;
    let mut client = WsClient::authenticated(stack.gateway(), "alice").await;

    // A reserved bit set with no extension negotiated (RFC 6455 §5.2).
    let mut reserved_bit = Frame::message(&b"hello"[..], OpCode::Data(Data::Text), true);
    reserved_bit.header_mut().rsv1 = true;
    client
        .try_send(Message::Frame(reserved_bit))
        .await
        .expect("the frame is sent");

    client.expect_close(1002, STEP).await;
}

#[tokio::test]
async fn a_frame_over_max_message_bytes_closes_with_1009() {
    let stack = Cluster::single(
        AuthOptions::default(),
        GatewayOptions::default().max_message_bytes(1024),
    )
    .await;
    let mut client = WsClient::authenticated(stack.gateway(), "alice").await;
    client.echo(&"a".repeat(1000)).await;

    client.send_text(&"b".repeat(4096)).await;

    client.expect_close(1009, STEP).await;
}

#[tokio::test]
async fn an_oversized_first_frame_closes_with_1009() {
    let stack = Cluster::single(
        AuthOptions::default(),
        GatewayOptions::default().max_message_bytes(1024),
    )
    .await;
    let token = stack
        .gateway()
        .ws_token(&Jwt::for_user("alice").sign())
        .await;
    let mut client = WsClient::connect(stack.gateway().addr(), &token, None)
        .await
        .expect("upgrade");

    client
        .send_text(&format!(
            r#"{{"type":"jwt","token":"{}"}}"#,
            "x".repeat(4096)
        ))
        .await;

    client.expect_close(1009, STEP).await;
}

#[tokio::test]
async fn sending_faster_than_max_messages_per_s_closes_with_1008() {
    let stack = Cluster::single(
        AuthOptions::default(),
        GatewayOptions::default().max_messages_per_s(5),
    )
    .await;
    let mut client = WsClient::authenticated(stack.gateway(), "alice").await;

    for i in 0..60 {
        // The gateway may close (and reset) before all of them are written.
        if client.try_send(format!("burst {i}").into()).await.is_err() {
            break;
        }
    }

    let (frames, code) = client.drain_until_close(STEP).await;
    assert_eq!(code, Some(1008), "after {} echoes", frames.len());
    assert!(
        frames.len() < 60,
        "the limit of 5/s let {} of 60 frames through",
        frames.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_is_empty_again_after_two_thousand_connections_come_and_go() {
    let options = GatewayOptions::default().auth_timeout_s(30);
    let stack = Cluster::single(AuthOptions::default(), options).await;
    let gateway = stack.gateway();
    let addr = gateway.addr();

    let outcomes: Vec<&str> = stream::iter(0..2000)
        .map(|i| async move {
            let user = format!("user-{}", i % 97);
            match i % 5 {
                // Authenticated, then dropped without a close frame.
                0 => {
                    let client = WsClient::authenticated(gateway, &user).await;
                    drop(client);
                    "authenticated-dropped"
                }
                // Phase 2 failed: a JWT of another user (4403) or a bad one (4401).
                1 => {
                    let token = gateway.ws_token(&Jwt::for_user(&user).sign()).await;
                    let mut client = WsClient::connect(addr, &token, None)
                        .await
                        .expect("upgrade");
                    let (jwt, code) = match i % 2 {
                        0 => (Jwt::for_user("someone-else").sign(), 4403),
                        _ => (Jwt::for_user(&user).expires_in(-120).sign(), 4401),
                    };
                    client.send_jwt(&jwt).await;
                    client.expect_close(code, STEP).await;
                    "phase-2-failed"
                }
                // Authenticated, then closed politely.
                2 => {
                    WsClient::authenticated(gateway, &user).await.close().await;
                    "authenticated-closed"
                }
                // Upgraded, abandoned in phase 2.
                3 => {
                    let token = gateway.ws_token(&Jwt::for_user(&user).sign()).await;
                    drop(
                        WsClient::connect(addr, &token, None)
                            .await
                            .expect("upgrade"),
                    );
                    "phase-2-abandoned"
                }
                // Refused before the upgrade.
                _ => {
                    assert_eq!(
                        WsClient::connect(addr, "no-such-token", None).await.err(),
                        Some(401)
                    );
                    "refused"
                }
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert_eq!(outcomes.len(), 2000);

    wait_until(
        Duration::from_secs(30),
        "every connection and socket is gone from the registry",
        || async {
            gateway.gauge("wsauth_gateway_connections_open").await == 0.0
                && gateway.gauge("wsauth_gateway_sockets_open").await == 0.0
        },
    )
    .await;
    let handshakes = gateway.gauge("wsauth_gateway_handshakes_total").await;
    assert!(
        handshakes >= 1600.0,
        "1600 handshakes that passed phase 1 or were refused, counted {handshakes}"
    );
    let mut client = WsClient::authenticated(gateway, "after").await;
    client.echo("the gateway still works").await;
}
