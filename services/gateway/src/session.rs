//! One upgraded WebSocket, from its first frame to its close.
//!
//! - [`authenticate`]: phase 2, the jwt frame, until `auth_ok`;
//! - [`replay`]: a `since` reconnect's missed events;
//! - [`refresh`]: later jwt frames and the JWT's expiry;
//! - [`send`]: every write under a deadline, and the closing handshake.
//!
//! After `auth_ok`, one `select!` loop over an inbound frame, the hub's
//! [`Signal`] (close, event, ping: one future for all), the JWT's expiry and
//! the verdict on a refresh in flight.

mod authenticate;
pub mod conn_log;
mod refresh;
mod replay;
mod send;

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::StreamExt as _;
use futures::future::{Either, Ready, ready};
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::{self, Message};

use self::authenticate::{Authenticated, authenticate};
use self::conn_log::{conn_debug, conn_info};
use self::refresh::{EXPIRY_RECHECK_GRACE, Refresh, expiry_instant};
use self::replay::replay;
use self::send::{finish, send};
use crate::admission::{Admitted, PendingPermit};
use crate::close::CloseCode;
use crate::hub::{ConnId, Signal};
use crate::message::{self, ClientFrame};
use crate::metrics::{Closed, Handshake, Metrics};
use crate::rate::RateLimiter;
use crate::socket::Socket;
use crate::state::AppState;

/// Ping intervals without any frame from the peer before it is presumed dead.
const MISSED_PINGS: u8 = 2;

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

/// Runs a socket whose ws token belonged to `ws_user`, until it closes;
/// `admitted` holds its places under `MAX_CONNECTIONS` and `MAX_PENDING_AUTH`.
///
/// Not an `async fn`: those store their arguments twice (as arguments and as
/// the body's locals), and this future is what every idle connection keeps.
/// For the same reason the body only borrows what it is given, or moves it
/// at the very end: an argument the body moves out early still takes its
/// room in the future for the connection's whole life.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
pub fn run(
    mut socket: Socket,
    state: AppState,
    conn_id: ConnId,
    ws_user: Arc<str>,
    admitted: Admitted,
) -> impl Future<Output = ()> + Send {
    let (open, pending) = admitted.into_parts();
    async move {
        let _count = SocketCount::new(&state.metrics);
        // Phase 2 and the close are boxed: transient, they should not size
        // the future every idle connection keeps for its whole life.
        // Made before it is awaited: a `match` around the await would keep
        // phase 2's result beside the session for its whole life.
        let session = match Box::pin(authenticate(&mut socket, &state, &ws_user)).await {
            Ok(authenticated) => {
                state.metrics.handshake(Handshake::Ok);
                conn_info!("authenticated");
                Either::Left(connected(
                    &mut socket,
                    &state,
                    conn_id,
                    &ws_user,
                    authenticated,
                    pending,
                ))
            }
            Err(end) => {
                state.metrics.handshake(Handshake::Phase2Failed);
                drop(pending);
                Either::Right(ready(end))
            }
        };
        let end = session.await;
        Box::pin(finish(socket, &state.metrics, end)).await;
        drop(open);
    }
}

/// What a read error means: an over-size frame gets 1009, a protocol
/// violation 1002, a text frame that is not UTF-8 1007 (RFC 6455 §7.1.7:
/// fail the connection with a close frame), anything else is a broken socket.
fn read_error(error: tungstenite::Error) -> End {
    use tungstenite::error::ProtocolError;
    match error {
        tungstenite::Error::Capacity(_) => End::Close(CloseCode::TooBig),
        tungstenite::Error::Utf8(_) => End::Close(CloseCode::InvalidPayload),
        // A TCP close without a close frame: nobody left to tell.
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            End::Gone(Closed::Error)
        }
        tungstenite::Error::Protocol(error) => {
            conn_debug!(%error, "client broke the websocket protocol");
            End::Close(CloseCode::ProtocolError)
        }
        error => {
            conn_debug!(%error, "websocket read failed");
            End::Gone(Closed::Error)
        }
    }
}

/// The authenticated life of a socket: registered with the hub, then the
/// session's loop. Registration is done here, before the loop's future is
/// made, so that what it consumes (the verified JWT's strings, the mark) is
/// not kept in a future every connection keeps; for the same reason not an
/// `async fn`, which would store its arguments twice.
fn connected<'a>(
    socket: &'a mut Socket,
    state: &'a AppState,
    conn_id: ConnId,
    user: &Arc<str>,
    authenticated: Authenticated,
    pending: PendingPermit,
) -> Either<Ready<End>, impl Future<Output = End> + 'a> {
    let Authenticated {
        verified,
        since,
        mark,
    } = authenticated;
    // Registered before auth_ok and History: live events queue meanwhile, so
    // the seam between replay and live has no gap.
    let capacity = state.limits.send_queue_capacity;
    let registration = match state.hub.register(conn_id, user, capacity, mark) {
        Ok(registration) => registration,
        Err(code) => {
            conn_info!(code = code.code(), "registration refused");
            return Either::Left(ready(End::Close(code)));
        }
    };
    if let Err(code) = registration.bind_jti(verified.jti.as_deref()) {
        conn_info!("jwt revoked while it was verified");
        return Either::Left(ready(End::Close(code)));
    }
    let expires_at = verified.expires_at;
    drop(verified);
    // Boxed: only a reconnect has one, and it is spent before the loop.
    let since = since.map(Box::new);
    Either::Right(async move {
        let slot = registration.slot();
        let mut expiry = pin!(sleep_until(expiry_instant(expires_at)));

        // Live events at or before this id (same epoch) were already replayed.
        // Counted under MAX_PENDING_AUTH until auth_ok is sent; a `since`
        // reconnect's auth_ok goes out with its replay, so until that is done.
        let mut replayed_through = match since {
            None => {
                let auth_ok = Message::Text(message::auth_ok(registration.user(), false).into());
                let sent = send(socket, auth_ok, slot, expiry.as_mut()).await;
                drop(pending);
                if let Err(end) = sent {
                    return end;
                }
                None
            }
            // Sends auth_ok itself: whether it carries a gap depends on History.
            Some(since) => {
                let replayed = Box::pin(replay(
                    socket,
                    state,
                    slot,
                    expiry.as_mut(),
                    registration.user(),
                    *since,
                ))
                .await;
                drop(pending);
                match replayed {
                    Ok(boundary) => boundary.map(Box::new),
                    Err(end) => return end,
                }
            }
        };

        let mut limiter = RateLimiter::new(state.limits.max_messages_per_s);
        let mut silent_ticks: u8 = 0;
        let mut refresh = Refresh::Idle;

        loop {
            // Echoes, events and pings are written at one place, after the
            // select: a write inside each branch would keep the select's
            // state beside the write's in every session's future.
            let outgoing = tokio::select! {
                biased;
                received = poll_fn(|_| {
                    // Only when the socket woke us: a wakeup for an event (most
                    // of them, in a fan-out) need not pay for a read attempt.
                    if !slot.take_socket_ready() {
                        return Poll::Pending;
                    }
                    // Made for each read, not kept: 16 bytes in every session's future.
                    let socket_waker = registration.socket_waker();
                    let polled = socket.poll_next_unpin(&mut Context::from_waker(&socket_waker));
                    if polled.is_ready() {
                        slot.set_socket_ready();
                    }
                    polled
                }) => {
                    silent_ticks = 0;
                    let message = match received {
                        None | Some(Ok(Message::Close(_))) => return End::Gone(Closed::Client),
                        Some(Err(error)) => return read_error(error),
                        Some(Ok(message)) => message,
                    };
                    // Every frame counts, pings too: a ping flood is a flood.
                    if !limiter.allow() {
                        conn_info!("client over its message rate");
                        return End::Close(CloseCode::Policy);
                    }
                    let text = match message {
                        Message::Text(text) => text,
                        Message::Binary(_) => return End::Close(CloseCode::Unsupported),
                        _ => continue,
                    };
                    match ClientFrame::parse_later(&text) {
                        ClientFrame::Jwt { token } => {
                            refresh.start(&state.auth, token);
                            continue;
                        }
                        ClientFrame::Other => Message::Text(message::echo(&text).into()),
                    }
                }
                signal = poll_fn(|cx| slot.poll_signal(cx)) => match signal {
                    Signal::Close(code) => return End::Close(code),
                    Signal::Frame(frame) => {
                        // Gap notices (no id) and other epochs' events pass:
                        // only the replayed epoch's next event ends the skipping.
                        if let (Some(through), Some(id)) = (&replayed_through, &frame.id) {
                            if id.is_at_or_before(through) {
                                continue;
                            }
                            if id.epoch == through.epoch {
                                replayed_through = None;
                            }
                        }
                        Message::Text(frame.text.clone())
                    }
                    Signal::Ping => {
                        if silent_ticks >= MISSED_PINGS {
                            conn_info!("peer stopped answering pings");
                            return End::Gone(Closed::Dead);
                        }
                        silent_ticks += 1;
                        Message::Ping(Default::default())
                    }
                },
                () = expiry.as_mut() => {
                    if let Err(code) = refresh.expired(&state.auth) {
                        return End::Close(code);
                    }
                    // The verdict decides; this only bounds the wait for it.
                    expiry.as_mut().reset(Instant::now() + EXPIRY_RECHECK_GRACE);
                    continue;
                }
                verdict = poll_fn(|cx| refresh.poll_verdict(cx, registration.user())) => match verdict {
                    Ok(Some(fresh)) => {
                        // From now on only the new JWT's revocation closes it.
                        if let Err(code) = registration.bind_jti(fresh.jti.as_deref()) {
                            conn_info!("refresh jwt revoked while it was verified");
                            return End::Close(code);
                        }
                        expiry.as_mut().reset(expiry_instant(fresh.expires_at));
                        continue;
                    }
                    Ok(None) => continue,
                    Err(code) => return End::Close(code),
                },
            };
            if let Err(end) = send(socket, outgoing, slot, expiry.as_mut()).await {
                return end;
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an `async fn` of five arguments returns.
    fn future_size<A, B, C, D, E, F>(_: fn(A, B, C, D, E) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The session future is each connection's main allocation: keep an eye
    /// on it (measured on the function itself, as the task holds it).
    #[test]
    fn session_future_stays_small() {
        let size = future_size(run as fn(Socket, AppState, ConnId, Arc<str>, Admitted) -> _);
        println!(
            "session future: {size} bytes (socket {}, state {})",
            std::mem::size_of::<Socket>(),
            std::mem::size_of::<AppState>()
        );
        assert!(
            size <= SESSION_FUTURE_LIMIT,
            "session future is {size} bytes"
        );
    }

    const SESSION_FUTURE_LIMIT: usize = 880 * 11 / 10;
}
