//! One upgraded WebSocket, from its first frame to its close.
//!
//! Phase 2 waits for the jwt frame and checks it against the ws token's user;
//! nothing is sent before `auth_ok`. Then one `select!` loop: shutdown, a
//! kick from the hub, JWT expiry, an inbound frame, an outbound event, the
//! shared ping tick.

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite;

use crate::auth_client::{AuthCallError, EventAction, Verified};
use crate::close::CloseCode;
use crate::hub::{ConnId, Kick};
use crate::message::{self, ClientFrame, EventId};
use crate::metrics::{Closed, Handshake, Metrics};
use crate::rate::RateLimiter;
use crate::state::AppState;

/// How long the closing handshake may take before the socket is dropped.
/// Generous because a slow consumer's close frame (1008) queues behind the
/// frames already in its TCP buffers: it sees the code only once it reads
/// them. The session's queue is gone by then, so waiting holds no events.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// Ping intervals without any frame from the peer before it is presumed dead.
const MISSED_PINGS: u8 = 2;
/// History pages are at most this long (auth's default and maximum).
const HISTORY_PAGE: usize = 1000;
/// At most this many History pages are replayed for one `since`.
const HISTORY_MAX_PAGES: usize = 10;

/// How a session ends.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// The gateway closes with this code (closing handshake, bounded).
    Close(CloseCode),
    /// The peer left or the socket failed: nothing more to send.
    Gone(Closed),
}

/// Counts the socket in `sockets_open` for exactly as long as it lives.
struct SocketCount(Metrics);

impl SocketCount {
    fn new(metrics: &Metrics) -> Self {
        metrics.socket_opened();
        Self(metrics.clone())
    }
}

impl Drop for SocketCount {
    fn drop(&mut self) {
        self.0.socket_closed();
    }
}

/// Runs a socket whose ws token belonged to `ws_user`, until it closes.
pub async fn run(mut socket: WebSocket, state: AppState, conn_id: ConnId, ws_user: String) {
    let _count = SocketCount::new(&state.metrics);
    // Phase 2 and the close are boxed: transient, they should not size the
    // future every idle connection keeps for its whole life.
    let end = match Box::pin(authenticate(&mut socket, &state, &ws_user)).await {
        Ok((verified, since)) => {
            state.metrics.handshake(Handshake::Ok);
            tracing::info!("authenticated");
            connected(&mut socket, &state, conn_id, verified, since).await
        }
        Err(end) => {
            state.metrics.handshake(Handshake::Phase2Failed);
            end
        }
    };
    Box::pin(finish(socket, &state.metrics, end)).await;
}

/// What a read error means: an over-size frame gets 1009, anything else is
/// a broken socket.
fn read_error(error: axum::Error) -> End {
    let inner = error.into_inner();
    match inner.downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => End::Close(CloseCode::TooBig),
        _ => {
            tracing::debug!(error = %inner, "websocket read failed");
            End::Gone(Closed::Error)
        }
    }
}

/// Phase 2: the first frame must be a jwt frame for the ws token's user.
async fn authenticate(
    socket: &mut WebSocket,
    state: &AppState,
    ws_user: &str,
) -> Result<(Verified, Option<EventId>), End> {
    let deadline = Instant::now() + state.limits.auth_timeout;
    let text = loop {
        tokio::select! {
            biased;
            () = state.shutdown.cancelled() => return Err(End::Close(CloseCode::GoingAway)),
            () = sleep_until(deadline) => return Err(End::Close(CloseCode::AuthTimeout)),
            received = socket.recv() => match received {
                None | Some(Ok(Message::Close(_))) => return Err(End::Gone(Closed::Client)),
                Some(Err(error)) => return Err(read_error(error)),
                Some(Ok(Message::Text(text))) => break text,
                Some(Ok(Message::Binary(_))) => return Err(End::Close(CloseCode::Unsupported)),
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            },
        }
    };
    let (jwt, since) = ClientFrame::parse_first(&text).map_err(|error| {
        tracing::debug!(%error, "bad first frame");
        End::Close(CloseCode::BadFirstFrame)
    })?;
    drop(text);
    let verified = tokio::select! {
        () = state.shutdown.cancelled() => return Err(End::Close(CloseCode::GoingAway)),
        // Boxed: an in-flight gRPC call is large, and only lives this long.
        verified = Box::pin(state.auth.verify_jwt(jwt)) => verified,
    };
    match verified {
        Ok(verified) if verified.user_id == ws_user => Ok((verified, since)),
        Ok(_) => {
            tracing::info!("jwt sub differs from the ws token's user");
            Err(End::Close(CloseCode::Forbidden))
        }
        Err(error) => Err(End::Close(phase2_failure(error))),
    }
}

fn phase2_failure(error: AuthCallError) -> CloseCode {
    match error {
        AuthCallError::Rejected(code) => {
            tracing::info!(?code, "jwt refused");
            CloseCode::Unauthorized
        }
        other => {
            tracing::warn!(error = %other, "auth unavailable during phase 2");
            CloseCode::AuthUnavailable
        }
    }
}

/// When a JWT expiring at `expires_at` stops being good, on tokio's clock.
fn expiry_instant(expires_at: SystemTime) -> Instant {
    let left = expires_at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + left
}

/// Sends one frame, giving up when the hub kicks or the gateway shuts down
/// (a client too slow to take this frame must not hold the session).
async fn send(
    socket: &mut WebSocket,
    message: Message,
    kick: &Kick,
    state: &AppState,
) -> Result<(), End> {
    tokio::select! {
        biased;
        () = state.shutdown.cancelled() => Err(End::Close(CloseCode::GoingAway)),
        code = kick.kicked() => Err(End::Close(code)),
        sent = socket.send(message) => sent.map_err(|error| {
            tracing::debug!(%error, "websocket write failed");
            End::Gone(Closed::Error)
        }),
    }
}

/// Replays what the client missed since `since`; the last id sent.
async fn replay(
    socket: &mut WebSocket,
    state: &AppState,
    kick: &Kick,
    user_id: &str,
    since: EventId,
) -> Result<EventId, End> {
    let mut after = since;
    for _ in 0..HISTORY_MAX_PAGES {
        let page = tokio::select! {
            () = state.shutdown.cancelled() => return Err(End::Close(CloseCode::GoingAway)),
            code = kick.kicked() => return Err(End::Close(code)),
            page = Box::pin(state.auth.history(&after, user_id)) => page,
        };
        let events = match page {
            Ok(events) => events,
            Err(AuthCallError::OutOfRange) => {
                tracing::warn!(since = %after, "client's since is no longer retained; live events only");
                return Ok(after);
            }
            Err(error) => {
                tracing::warn!(%error, "history unavailable for a recovering client");
                return Err(End::Close(CloseCode::AuthUnavailable));
            }
        };
        let full_page = events.len() >= HISTORY_PAGE;
        for event in events {
            let text = match &event.action {
                EventAction::Broadcast { data } => message::broadcast(&event.id_text, data),
                EventAction::Direct { user_id: to, data } if to == user_id => {
                    message::direct(&event.id_text, data)
                }
                // A past revocation does not apply to a JWT auth just accepted.
                _ => continue,
            };
            send(socket, Message::Text(text.into()), kick, state).await?;
            after = event.id;
        }
        if !full_page {
            break;
        }
    }
    Ok(after)
}

/// The authenticated life of a socket.
async fn connected(
    socket: &mut WebSocket,
    state: &AppState,
    conn_id: ConnId,
    verified: Verified,
    since: Option<EventId>,
) -> End {
    let kick = Arc::new(Kick::default());
    let user_id = verified.user_id;
    // Registered before auth_ok and History: live events queue meanwhile, so
    // the seam between replay and live has no gap.
    let (_registration, mut queue) = state.hub.register(
        conn_id,
        &user_id,
        state.limits.send_queue_capacity,
        Arc::clone(&kick),
    );
    let auth_ok = Message::Text(message::auth_ok(&user_id).into());
    if let Err(end) = send(socket, auth_ok, &kick, state).await {
        return end;
    }
    // Live events at or before this id were already replayed.
    let mut replayed_through = match since {
        Some(since) => match Box::pin(replay(socket, state, &kick, &user_id, since)).await {
            Ok(last) => Some(last),
            Err(end) => return end,
        },
        None => None,
    };

    let mut expiry = pin!(sleep_until(expiry_instant(verified.expires_at)));
    let mut limiter = RateLimiter::new(state.limits.max_messages_per_s);
    let mut tick = state.ping_tick.clone();
    tick.mark_unchanged();
    let mut silent_ticks: u8 = 0;

    loop {
        tokio::select! {
            biased;
            () = state.shutdown.cancelled() => return End::Close(CloseCode::GoingAway),
            code = kick.kicked() => return End::Close(code),
            () = &mut expiry => {
                tracing::info!("jwt expired without a refresh");
                return End::Close(CloseCode::Unauthorized);
            }
            received = socket.recv() => {
                silent_ticks = 0;
                let text = match received {
                    None | Some(Ok(Message::Close(_))) => return End::Gone(Closed::Client),
                    Some(Err(error)) => return read_error(error),
                    Some(Ok(Message::Binary(_))) => return End::Close(CloseCode::Unsupported),
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Text(text))) => text,
                };
                if !limiter.allow() {
                    tracing::info!("client over its message rate");
                    return End::Close(CloseCode::Policy);
                }
                match ClientFrame::parse_later(&text) {
                    ClientFrame::Jwt { token, .. } => {
                        let verified = tokio::select! {
                            () = state.shutdown.cancelled() => return End::Close(CloseCode::GoingAway),
                            verified = Box::pin(state.auth.verify_jwt(token)) => verified,
                        };
                        match verified {
                            Ok(fresh) if fresh.user_id == user_id => {
                                expiry.as_mut().reset(expiry_instant(fresh.expires_at));
                                tracing::debug!("jwt refreshed");
                            }
                            Ok(_) => {
                                tracing::info!("refresh jwt is for another user");
                                return End::Close(CloseCode::Forbidden);
                            }
                            Err(AuthCallError::Rejected(code)) => {
                                tracing::info!(?code, "refresh jwt refused");
                                return End::Close(CloseCode::Unauthorized);
                            }
                            // The connection's current JWT still holds until its exp.
                            Err(error) => tracing::warn!(%error, "cannot verify refresh jwt"),
                        }
                    }
                    ClientFrame::Other => {
                        let echo = Message::Text(message::echo(&text).into());
                        if let Err(end) = send(socket, echo, &kick, state).await {
                            return end;
                        }
                    }
                }
            }
            frame = queue.recv() => {
                // The hub holds the sender while we are registered.
                let Some(frame) = frame else { return End::Gone(Closed::Error) };
                if let Some(through) = &replayed_through {
                    if frame.id.is_at_or_before(through) {
                        continue;
                    }
                    replayed_through = None;
                }
                let text: Utf8Bytes = frame.text.clone();
                if let Err(end) = send(socket, Message::Text(text), &kick, state).await {
                    return end;
                }
            }
            changed = tick.changed() => {
                if changed.is_err() {
                    // The ticker only stops when the gateway shuts down.
                    return End::Close(CloseCode::GoingAway);
                }
                if silent_ticks >= MISSED_PINGS {
                    tracing::info!("peer stopped answering pings");
                    return End::Gone(Closed::Dead);
                }
                silent_ticks += 1;
                if let Err(end) = send(socket, Message::Ping(Default::default()), &kick, state).await {
                    return end;
                }
            }
        }
    }
}

/// Ends the socket: for a gateway close, send the code and wait (bounded)
/// for the peer's close so the frame is not lost to a reset.
async fn finish(mut socket: WebSocket, metrics: &Metrics, end: End) {
    match end {
        End::Gone(closed) => metrics.closed(closed),
        End::Close(code) => {
            metrics.closed(Closed::Code(code));
            tracing::debug!(code = code.code(), "closing");
            let frame = Message::Close(Some(CloseFrame {
                code: code.code(),
                reason: Utf8Bytes::from_static(code.reason()),
            }));
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                if socket.send(frame).await.is_err() {
                    return;
                }
                while let Some(Ok(message)) = socket.recv().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The session future is each connection's main allocation: keep an eye on it.
    #[test]
    fn session_future_stays_small() {
        fn size_of_future<F: Future>(_: &F) -> usize {
            std::mem::size_of::<F>()
        }
        // Never polled: only its size matters.
        let fut = async {
            let socket: WebSocket = unreachable_socket().await;
            let state: AppState = unreachable_socket().await;
            run(socket, state, 0, String::new()).await;
        };
        let size = size_of_future(&fut);
        println!(
            "session future: {size} bytes (socket {}, state {})",
            std::mem::size_of::<WebSocket>(),
            std::mem::size_of::<AppState>()
        );
        assert!(size < 4096, "session future is {size} bytes");
    }

    async fn unreachable_socket<T>() -> T {
        std::future::pending().await
    }
}
