//! A real WebSocket client (tokio-tungstenite) speaking the gateway's
//! protocol, with a deadline on every await.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::gateway::TestGateway;
use crate::jwt::Jwt;
use crate::tls_client::{self, Stream};

/// The default deadline of one step (connect, send, receive one frame).
pub const STEP: Duration = Duration::from_secs(10);

/// What the gateway sent next.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A text frame, parsed as JSON (the gateway sends nothing else).
    Json(Value),
    /// A close frame and its code (`None`: close without a status).
    Close(Option<u16>),
    /// The connection ended without a close frame.
    Ended(String),
}

/// Where a refused upgrade got stuck: the HTTP status instead of `101`.
pub type Refused = u16;

/// One WebSocket connection to a gateway.
pub struct WsClient {
    ws: WebSocketStream<Box<dyn Stream>>,
    user: Option<String>,
}

impl WsClient {
    /// Upgrades `GET /ws?token=…`, with an `Origin` header when given.
    /// `Err(status)` when the gateway answers anything but `101`.
    pub async fn connect(
        gateway: SocketAddr,
        token: &str,
        origin: Option<&str>,
    ) -> Result<Self, Refused> {
        let mut headers = Vec::new();
        if let Some(origin) = origin {
            headers.push(("origin", origin));
        }
        Self::connect_to(gateway, &format!("/ws?token={token}"), &headers, None).await
    }

    /// The general upgrade: any path and query, extra headers, and optionally
    /// a tiny socket receive buffer (so a client that stops reading makes the
    /// gateway's writes block quickly).
    pub async fn connect_to(
        gateway: SocketAddr,
        path_and_query: &str,
        headers: &[(&str, &str)],
        recv_buffer: Option<u32>,
    ) -> Result<Self, Refused> {
        let mut request = format!("ws://{gateway}{path_and_query}")
            .into_client_request()
            .expect("a ws:// URL with a socket address is a valid request");
        for (name, value) in headers {
            let name: tungstenite::http::HeaderName =
                name.parse().expect("test header names are valid");
            request.headers_mut().insert(
                name,
                HeaderValue::from_str(value).expect("test header values are valid"),
            );
        }
        let upgrade = async {
            let socket = TcpSocket::new_v4()?;
            if let Some(size) = recv_buffer {
                socket.set_recv_buffer_size(size)?;
            }
            let stream: Box<dyn Stream> = Box::new(socket.connect(gateway).await?);
            tokio_tungstenite::client_async(request, stream).await
        };
        match tokio::time::timeout(STEP, upgrade).await {
            Ok(Ok((ws, _response))) => Ok(Self { ws, user: None }),
            Ok(Err(tungstenite::Error::Http(response))) => Err(response.status().as_u16()),
            Ok(Err(e)) => panic!("WebSocket upgrade to {gateway}{path_and_query} failed: {e}"),
            Err(_) => panic!("WebSocket upgrade to {gateway} got no answer within {STEP:?}"),
        }
    }

    /// Upgrades `GET path_and_query` over `wss://`, trusting `ca_pem`.
    /// `Err(status)` when the gateway answers anything but `101`.
    pub async fn connect_tls(
        gateway: SocketAddr,
        ca_pem: &str,
        path_and_query: &str,
    ) -> Result<Self, Refused> {
        let request = format!("wss://localhost:{}{path_and_query}", gateway.port())
            .into_client_request()
            .expect("a wss:// URL is a valid request");
        let upgrade = async {
            let stream: Box<dyn Stream> = Box::new(tls_client::connect(gateway, ca_pem).await?);
            tokio_tungstenite::client_async(request, stream).await
        };
        match tokio::time::timeout(STEP, upgrade).await {
            Ok(Ok((ws, _response))) => Ok(Self { ws, user: None }),
            Ok(Err(tungstenite::Error::Http(response))) => Err(response.status().as_u16()),
            Ok(Err(e)) => panic!("wss upgrade to {gateway}{path_and_query} failed: {e}"),
            Err(_) => panic!("wss upgrade to {gateway} got no answer within {STEP:?}"),
        }
    }

    /// Marks this client as authenticated as `user` (after its `auth_ok`).
    pub fn set_user(&mut self, user: &str) {
        self.user = Some(user.to_string());
    }

    /// The whole flow for `user`: mint a JWT, `GET /token/ws`, upgrade, send
    /// the jwt frame, and receive `auth_ok`.
    pub async fn authenticated(gateway: &TestGateway, user: &str) -> Self {
        Self::authenticated_with(gateway, &Jwt::for_user(user).sign(), user, None).await
    }

    /// The whole flow for `user` over a socket with a tiny receive buffer
    /// (4 KiB): once this client stops reading, the gateway's writes block soon.
    pub async fn authenticated_slow_reader(gateway: &TestGateway, user: &str) -> Self {
        let jwt = Jwt::for_user(user).sign();
        let token = gateway.ws_token(&jwt).await;
        let mut client = Self::connect_to(
            gateway.addr(),
            &format!("/ws?token={token}"),
            &[],
            Some(4096),
        )
        .await
        .unwrap_or_else(|status| panic!("upgrade for {user} refused with {status}"));
        client.send_jwt(&jwt).await;
        assert_eq!(
            client.recv_json(STEP).await,
            json!({"type": "auth_ok", "user_id": user}),
            "first frame after a valid jwt frame"
        );
        client
    }

    /// The whole flow with a given JWT (whose `sub` is `user`) and an optional
    /// `since` event id.
    pub async fn authenticated_with(
        gateway: &TestGateway,
        jwt: &str,
        user: &str,
        since: Option<&str>,
    ) -> Self {
        let (mut client, first) = Self::upgraded_with_jwt(gateway, jwt, since).await;
        assert_eq!(
            first,
            json!({"type": "auth_ok", "user_id": user}),
            "first frame after a valid jwt frame"
        );
        client.user = Some(user.to_string());
        client
    }

    /// A fresh ws token for `jwt`, the upgrade, and the jwt frame (with
    /// `since` when given); the client and the first frame the gateway
    /// answered, for tests that expect something other than a plain `auth_ok`.
    pub async fn upgraded_with_jwt(
        gateway: &TestGateway,
        jwt: &str,
        since: Option<&str>,
    ) -> (Self, Value) {
        let token = gateway.ws_token(jwt).await;
        let mut client = Self::connect(gateway.addr(), &token, None)
            .await
            .unwrap_or_else(|status| panic!("upgrade with a fresh token refused with {status}"));
        match since {
            Some(since) => {
                client
                    .send_json(&json!({"type": "jwt", "token": jwt, "since": since}))
                    .await
            }
            None => client.send_jwt(jwt).await,
        }
        let first = client.recv_json(STEP).await;
        (client, first)
    }

    /// The user this client authenticated as, if it did.
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }

    /// Sends a frame; errors when the connection is already gone.
    pub async fn try_send(&mut self, message: Message) -> Result<(), tungstenite::Error> {
        match tokio::time::timeout(STEP, self.ws.send(message)).await {
            Ok(result) => result,
            Err(_) => panic!("sending one frame took longer than {STEP:?}"),
        }
    }

    /// Sends a frame; panics when the connection is already gone.
    pub async fn send(&mut self, message: Message) {
        if let Err(e) = self.try_send(message).await {
            panic!("sending a frame failed: {e}");
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text)).await;
    }

    pub async fn send_json(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// `{"type":"jwt","token":jwt}`.
    pub async fn send_jwt(&mut self, jwt: &str) {
        self.send_json(&json!({"type": "jwt", "token": jwt})).await;
    }

    pub async fn send_binary(&mut self, bytes: &[u8]) {
        self.send(Message::binary(bytes.to_vec())).await;
    }

    /// The next frame, skipping pings and pongs; `None` if nothing arrives
    /// within `within`.
    pub async fn next_frame(&mut self, within: Duration) -> Option<Frame> {
        let deadline = Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()?;
            return Some(match next {
                None => Frame::Ended("stream ended".into()),
                Some(Err(e)) => Frame::Ended(e.to_string()),
                Some(Ok(Message::Text(text))) => Frame::Json(
                    serde_json::from_str(&text)
                        .unwrap_or_else(|e| panic!("gateway sent non-JSON text ({e}): {text}")),
                ),
                Some(Ok(Message::Binary(bytes))) => {
                    panic!("gateway sent a binary frame of {} bytes", bytes.len())
                }
                Some(Ok(Message::Close(frame))) => Frame::Close(frame.map(|f| u16::from(f.code))),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            });
        }
    }

    /// The next JSON frame; panics on close, end or timeout.
    pub async fn recv_json(&mut self, within: Duration) -> Value {
        match self.next_frame(within).await {
            Some(Frame::Json(value)) => value,
            other => panic!("expected a JSON frame within {within:?}, got {other:?}"),
        }
    }

    /// The next frame of `kind` (e.g. `"broadcast"`), skipping others.
    pub async fn recv_type(&mut self, kind: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let value = self.recv_json(left).await;
            if value["type"] == kind {
                return value;
            }
        }
    }

    /// The next frame must be a close with `code`; nothing else may come first.
    pub async fn expect_close(&mut self, code: u16, within: Duration) {
        match self.next_frame(within).await {
            Some(Frame::Close(Some(got))) if got == code => {}
            other => panic!("expected close {code} within {within:?}, got {other:?}"),
        }
    }

    /// Reads (and returns) every JSON frame until the connection closes;
    /// returns the close code (`None` when it ended without a close frame).
    pub async fn drain_until_close(&mut self, within: Duration) -> (Vec<Value>, Option<u16>) {
        let deadline = Instant::now() + within;
        let mut received = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next_frame(left).await {
                Some(Frame::Json(value)) => received.push(value),
                Some(Frame::Close(code)) => return (received, code),
                Some(Frame::Ended(_)) => return (received, None),
                None => panic!(
                    "connection still open after {within:?} ({} frames read)",
                    received.len()
                ),
            }
        }
    }

    /// Sends `text` and waits for its echo, skipping events that arrive first.
    pub async fn echo(&mut self, text: &str) {
        self.send_text(text).await;
        let echo = self.recv_type("echo", STEP).await;
        assert_eq!(echo["data"], text, "echo of {text:?}");
    }

    /// A polite close handshake start, then drop.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(STEP, self.ws.close(None)).await;
    }
}
