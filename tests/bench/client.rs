//! The client side of the wsauth flow: `GET /token/ws` with the JWT, the
//! WebSocket upgrade with `?token=`, the jwt frame, and `auth_ok`. Sockets
//! come from the harness's [`wsauth_tests::net`] (spread over source
//! addresses), `GET` from its [`wsauth_tests::http`].

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use wsauth_tests::http::HttpConn;
use wsauth_tests::net::connect_from;

pub type Ws = WebSocketStream<TcpStream>;

/// Deadline of each network step of the flow.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// Small buffers: a worker holds thousands of idle clients, and the frames
/// they read are a few hundred bytes.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// One client slot: a gateway, and a kept-alive HTTP connection to it for
/// `GET /token/ws`.
pub struct Connector {
    gateway: SocketAddr,
    http_source: Ipv4Addr,
    http: Option<HttpConn>,
}

impl Connector {
    pub fn new(gateway: SocketAddr, http_source: Ipv4Addr) -> Self {
        Self {
            gateway,
            http_source,
            http: None,
        }
    }

    /// `GET /token/ws`: the ws token for `jwt`. A kept-alive connection the
    /// server closed meanwhile is replaced once.
    pub async fn token(&mut self, jwt: &str) -> anyhow::Result<String> {
        let reused = self.http.is_some();
        match self.try_token(jwt).await {
            Err(error) if reused && self.http.is_none() => {
                tracing::debug!("retrying on a new connection after {error:#}");
                self.try_token(jwt).await
            }
            result => result,
        }
    }

    async fn try_token(&mut self, jwt: &str) -> anyhow::Result<String> {
        let mut http = match self.http.take() {
            Some(http) => http,
            None => HttpConn::connect(self.gateway, Some(self.http_source))
                .await
                .context("token: connect")?,
        };
        let bearer = format!("Bearer {jwt}");
        let response = http
            .get("/token/ws", &[("Authorization", &bearer)])
            .await
            .context("token")?;
        if http.reusable() {
            self.http = Some(http);
        }
        if response.status != 200 {
            bail!("token: HTTP {}", response.status);
        }
        #[derive(serde::Deserialize)]
        struct TokenBody {
            token: String,
        }
        let body: TokenBody =
            serde_json::from_str(&response.body).context("token: bad JSON body")?;
        Ok(body.token)
    }

    /// The whole flow up to `auth_ok`, the WebSocket from `ws_source`.
    pub async fn authenticate(
        &mut self,
        jwt: &str,
        user: &str,
        ws_source: Ipv4Addr,
    ) -> anyhow::Result<Ws> {
        let token = self.token(jwt).await?;
        let stream = timeout(STEP_TIMEOUT, connect_from(Some(ws_source), self.gateway))
            .await
            .map_err(|_| anyhow!("upgrade: connect timed out"))?
            .context("upgrade: connect")?;
        let url = format!("ws://{}/ws?token={token}", self.gateway);
        let (mut ws, _) = timeout(
            STEP_TIMEOUT,
            tokio_tungstenite::client_async_with_config(url, stream, Some(ws_config())),
        )
        .await
        .map_err(|_| anyhow!("upgrade: timed out"))?
        .map_err(|error| match error {
            tungstenite::Error::Http(response) => {
                anyhow!("upgrade: HTTP {}", response.status().as_u16())
            }
            other => anyhow!("upgrade: {other}"),
        })?;
        let frame = serde_json::json!({ "type": "jwt", "token": jwt }).to_string();
        timeout(STEP_TIMEOUT, ws.send(Message::text(frame)))
            .await
            .map_err(|_| anyhow!("jwt frame: timed out"))?
            .context("jwt frame: send")?;
        let reply = next_text(&mut ws).await.context("auth_ok")?;
        let reply: serde_json::Value = serde_json::from_str(&reply).context("auth_ok: bad JSON")?;
        if reply["type"] != "auth_ok" {
            bail!("auth_ok: got type {}", reply["type"]);
        }
        if reply["user_id"] != user {
            bail!("auth_ok: for user {}, not {user}", reply["user_id"]);
        }
        Ok(ws)
    }
}

/// The next text frame, skipping control frames; a close is an error naming its code.
async fn next_text(ws: &mut Ws) -> anyhow::Result<String> {
    loop {
        let frame = timeout(STEP_TIMEOUT, ws.next())
            .await
            .map_err(|_| anyhow!("timed out"))?;
        match frame {
            None => bail!("connection ended"),
            Some(Err(error)) => bail!("{error}"),
            Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_owned()),
            Some(Ok(Message::Close(frame))) => {
                bail!(
                    "closed with {}",
                    frame
                        .map(|f| u16::from(f.code).to_string())
                        .unwrap_or_else(|| "no code".into())
                )
            }
            Some(Ok(Message::Binary(_))) => bail!("unexpected binary frame"),
            Some(Ok(_)) => continue,
        }
    }
}

/// Closes politely (close frame, then the server's reply) within a deadline.
pub async fn close(mut ws: Ws) -> anyhow::Result<()> {
    timeout(STEP_TIMEOUT, async {
        ws.close(None).await.context("sending close")?;
        while let Some(frame) = ws.next().await {
            if frame.is_err() {
                break;
            }
        }
        anyhow::Ok(())
    })
    .await
    .map_err(|_| anyhow!("close: timed out"))?
}
