//! The connections of a soak run: one short life per [`Path`], each ending
//! the way the contract says that path ends. Built from the harness's
//! clients ([`WsClient`], [`Jwt`], the gateway's `/token/ws`) and the bench's
//! raw client ([`Connector`], whose TCP socket can be reset); a harness step
//! that fails panics, which [`run_one`] turns into a failed outcome.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wsauth_shared::proto::{RevokeJwtRequest, RevokeUserRequest};
use wsauth_tests::net::source_ip;
use wsauth_tests::{ApiKey, Jwt, TestAuth, TestGateway, WsClient};

use crate::client::Connector;

/// The gateway settings the paths below rely on.
pub const AUTH_TIMEOUT_S: u64 = 2;
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024;
pub const MAX_MESSAGES_PER_S: u32 = 50;
pub const SEND_QUEUE_CAPACITY: usize = 32;

/// How long a close may take to arrive (the churn shares two cores with debug builds).
const CLOSE_WITHIN: Duration = Duration::from_secs(30);
/// Direct events sent to the slow consumer: more than its send queue and the
/// kernel buffers between it and the gateway hold (cf. e2e `backpressure`).
const SLOW_EVENTS: usize = 200;
const SLOW_EVENT_BYTES: usize = 60_000;
/// How long the slow consumer stays silent after the last Publish.
const SLOW_SILENCE: Duration = Duration::from_secs(5);

/// Every way a connection ends in the contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Path {
    /// The client closes with 1000 after an echo.
    NormalClose,
    /// The client closes with 1001 (going away).
    GoingAway,
    /// The client's TCP ends (FIN) without a close frame.
    Dropped,
    /// The client's TCP is reset (SO_LINGER 0), no close frame.
    Reset,
    /// `GET /token/ws` without a JWT: 401.
    NoBearer,
    /// `/ws` with a token auth never issued: 401 before the 101.
    BadToken,
    /// A first frame that is not a jwt frame: 4400.
    BadFirstFrame,
    /// A JWT with a bad signature in the first frame: 4401.
    BadJwt,
    /// Another user's JWT in the first frame: 4403.
    OtherUser,
    /// No first frame within AUTH_TIMEOUT_S: 4408.
    AuthTimeout,
    /// A binary frame: 1003.
    Binary,
    /// A frame over MAX_MESSAGE_BYTES: 1009.
    TooBig,
    /// Frames faster than MAX_MESSAGES_PER_S: 1008.
    TooFast,
    /// RevokeUser of the connection's user: 4401.
    RevokeUser,
    /// RevokeJwt of the connection's jti: 4401.
    RevokeJwt,
    /// A client that stops reading while direct events pile up: 1008.
    SlowConsumer,
}

impl Path {
    /// What the churners cycle through (the slow consumer has a churner of its own).
    pub const CHURN: [Path; 15] = [
        Path::NormalClose,
        Path::GoingAway,
        Path::Dropped,
        Path::Reset,
        Path::NoBearer,
        Path::BadToken,
        Path::BadFirstFrame,
        Path::BadJwt,
        Path::OtherUser,
        Path::AuthTimeout,
        Path::Binary,
        Path::TooBig,
        Path::TooFast,
        Path::RevokeUser,
        Path::RevokeJwt,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Path::NormalClose => "client close 1000",
            Path::GoingAway => "client close 1001",
            Path::Dropped => "TCP FIN, no close frame",
            Path::Reset => "TCP RST (SO_LINGER 0)",
            Path::NoBearer => "/token/ws without JWT: 401",
            Path::BadToken => "bad ws token: 401 before 101",
            Path::BadFirstFrame => "bad first frame: 4400",
            Path::BadJwt => "bad JWT: 4401",
            Path::OtherUser => "other user's JWT: 4403",
            Path::AuthTimeout => "no first frame: 4408",
            Path::Binary => "binary frame: 1003",
            Path::TooBig => "frame too big: 1009",
            Path::TooFast => "frames too fast: 1008",
            Path::RevokeUser => "RevokeUser: 4401",
            Path::RevokeJwt => "RevokeJwt: 4401",
            Path::SlowConsumer => "slow consumer: 1008",
        }
    }
}

/// One connection's life along `path`, as user `user`; `Err` says what went
/// otherwise than the contract says (a panic of a harness step included).
pub async fn run_one(
    path: Path,
    user: String,
    gateway: Arc<TestGateway>,
    auth: Arc<TestAuth>,
) -> anyhow::Result<()> {
    let life = tokio::spawn(async move { live(path, user, &gateway, &auth).await });
    match tokio::time::timeout(Duration::from_secs(120), life).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(join)) => Err(anyhow!("{}", panic_text(join))),
        Err(_) => Err(anyhow!("no end within 120 s")),
    }
}

fn panic_text(join: tokio::task::JoinError) -> String {
    match join.try_into_panic() {
        Ok(panic) => panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "panicked".to_owned()),
        Err(join) => join.to_string(),
    }
}

async fn live(
    path: Path,
    user: String,
    gateway: &TestGateway,
    auth: &TestAuth,
) -> anyhow::Result<()> {
    let jwt = Jwt::for_user(&user);
    let signed = jwt.sign();
    match path {
        Path::NormalClose | Path::GoingAway => {
            let mut client = WsClient::authenticated_with(gateway, &signed, &user, None).await;
            client.echo("soak").await;
            let code = if path == Path::NormalClose {
                CloseCode::Normal
            } else {
                CloseCode::Away
            };
            client
                .send(Message::Close(Some(CloseFrame {
                    code,
                    reason: "".into(),
                })))
                .await;
            // The gateway answers a client's close with the same code.
            closes_with(&mut client, Some(u16::from(code))).await
        }
        Path::Dropped => {
            let mut client = WsClient::authenticated_with(gateway, &signed, &user, None).await;
            client.echo("soak").await;
            drop(client);
            Ok(())
        }
        Path::Reset => {
            let mut connector = Connector::new(gateway.addr(), source_ip(0));
            let ws = connector
                .authenticate(&signed, &user, source_ip(1))
                .await
                .context("reset path: the flow")?;
            ws.get_ref().set_zero_linger().context("SO_LINGER 0")?;
            drop(ws);
            Ok(())
        }
        Path::NoBearer => expect_status(gateway.token_ws(None).await.status, 401),
        Path::BadToken => match WsClient::connect(gateway.addr(), "not-a-ws-token", None).await {
            Err(status) => expect_status(status, 401),
            Ok(_) => bail!("a made-up ws token was upgraded"),
        },
        Path::BadFirstFrame | Path::BadJwt | Path::OtherUser | Path::AuthTimeout => {
            let token = gateway.ws_token(&signed).await;
            let mut client = WsClient::connect(gateway.addr(), &token, None)
                .await
                .map_err(|status| anyhow!("upgrade refused with {status}"))?;
            let code = match path {
                Path::BadFirstFrame => {
                    client.send_text("hello").await;
                    4400
                }
                Path::BadJwt => {
                    client
                        .send_jwt(&jwt.signed_with(b"not-the-secret").sign())
                        .await;
                    4401
                }
                Path::OtherUser => {
                    client
                        .send_jwt(&Jwt::for_user(&format!("{user}-other")).sign())
                        .await;
                    4403
                }
                _ => 4408,
            };
            closes_with(&mut client, Some(code)).await
        }
        Path::Binary | Path::TooBig | Path::TooFast => {
            let mut client = WsClient::authenticated_with(gateway, &signed, &user, None).await;
            let code = match path {
                Path::Binary => {
                    client.send_binary(b"soak").await;
                    1003
                }
                Path::TooBig => {
                    client.send_text(&"x".repeat(MAX_MESSAGE_BYTES + 1)).await;
                    1009
                }
                _ => {
                    // The bucket holds one second's worth: three seconds' worth at once.
                    for i in 0..MAX_MESSAGES_PER_S * 3 {
                        if client
                            .try_send(Message::text(format!("fast {i}")))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    1008
                }
            };
            closes_with(&mut client, Some(code)).await
        }
        Path::RevokeUser => {
            let mut client = WsClient::authenticated_with(gateway, &signed, &user, None).await;
            auth.auth_client(ApiKey::Admin)
                .revoke_user(RevokeUserRequest {
                    user_id: user.clone(),
                })
                .await
                .map_err(|s| anyhow!("RevokeUser: {s:?}"))?;
            closes_with(&mut client, Some(4401)).await
        }
        Path::RevokeJwt => {
            let mut client = WsClient::authenticated_with(gateway, &signed, &user, None).await;
            let jti = jwt.jti_claim().context("minted JWTs carry a jti")?;
            auth.auth_client(ApiKey::Admin)
                .revoke_jwt(RevokeJwtRequest {
                    jti: jti.to_owned(),
                    expires_at: None,
                })
                .await
                .map_err(|s| anyhow!("RevokeJwt: {s:?}"))?;
            closes_with(&mut client, Some(4401)).await
        }
        Path::SlowConsumer => {
            let mut client = WsClient::authenticated_slow_reader(gateway, &user).await;
            let data = "x".repeat(SLOW_EVENT_BYTES);
            for _ in 0..SLOW_EVENTS {
                auth.try_publish(&data, Some(&user))
                    .await
                    .map_err(|s| anyhow!("Publish: {s:?}"))?;
            }
            // Still not reading while the gateway catches up with the stream
            // (it lags behind Publish on a loaded machine); reading now would
            // make room in its queue.
            tokio::time::sleep(SLOW_SILENCE).await;
            closes_with(&mut client, Some(1008)).await
        }
    }
}

/// Reads past any events until the close, which must carry `code`.
async fn closes_with(client: &mut WsClient, code: Option<u16>) -> anyhow::Result<()> {
    let (frames, got) = client.drain_until_close(CLOSE_WITHIN).await;
    if got != code {
        bail!(
            "closed with {got:?} after {} frames, not {code:?}",
            frames.len()
        );
    }
    Ok(())
}

fn expect_status(got: u16, wanted: u16) -> anyhow::Result<()> {
    if got != wanted {
        bail!("HTTP {got}, not {wanted}");
    }
    Ok(())
}
