//! One upgraded WebSocket, from its first frame to its close.
//!
//! Phase 2 waits for the jwt frame and checks it against the ws token's user;
//! nothing is sent before `auth_ok`. Then one `select!` loop over an inbound
//! frame, the hub's [`Signal`] (close, event, ping: one future for all), JWT
//! expiry, and a refresh in flight. Every write has a deadline and watches
//! the hub and the expiry, so a client that stops reading cannot hold it.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::{SinkExt as _, StreamExt as _};
use secrecy::SecretString;
use tokio::time::{Instant, Sleep, sleep, sleep_until, timeout_at};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use crate::auth_client::{AuthCallError, EventAction, Verified};
use crate::close::CloseCode;
use crate::hub::{ConnId, DisconnectMark, Signal, Slot};
use crate::message::{self, ClientFrame, EventId};
use crate::metrics::{Closed, Handshake, Metrics};
use crate::rate::RateLimiter;
use crate::socket::{self, Socket};
use crate::state::AppState;

/// How long the closing handshake may take before the socket is dropped.
/// Generous because a slow consumer's close frame (1008) queues behind the
/// frames already in its TCP buffers: it sees the code only once it reads
/// them. The session's queue is gone by then, so waiting holds no events.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long the reply to a client's close may take to be written.
const CLOSE_REPLY_GRACE: Duration = Duration::from_secs(2);
/// After a 1009 the rest of the oversized frame is still unread; closing at
/// once would answer it with a reset that can overtake the close frame.
const TOO_BIG_LINGER: Duration = Duration::from_millis(500);
/// One frame that cannot be written for this long means the client stopped
/// reading: closed with 1008.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// Ping intervals without any frame from the peer before it is presumed dead.
const MISSED_PINGS: u8 = 2;
/// A `since` replay gives up (1008, the client reconnects from the last id it
/// got) after this many History pages or this long.
const REPLAY_MAX_PAGES: usize = 200;
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);
/// When the JWT expired while a refresh could not be checked, how long the
/// retried check may take before the connection closes anyway.
const EXPIRY_RECHECK_GRACE: Duration = Duration::from_secs(30);

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

/// What phase 2 hands to the authenticated phase.
struct Authenticated {
    verified: Verified,
    since: Option<EventId>,
    mark: DisconnectMark,
}

/// Runs a socket whose ws token belonged to `ws_user`, until it closes.
///
/// Not an `async fn`: those store their arguments twice (as arguments and as
/// the body's locals), and this future is what every idle connection keeps.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
pub fn run(
    mut socket: Socket,
    state: AppState,
    conn_id: ConnId,
    ws_user: String,
) -> impl Future<Output = ()> + Send {
    async move {
        let _count = SocketCount::new(&state.metrics);
        // Phase 2 and the close are boxed: transient, they should not size
        // the future every idle connection keeps for its whole life.
        let end = match Box::pin(authenticate(&mut socket, &state, ws_user)).await {
            Ok(authenticated) => {
                state.metrics.handshake(Handshake::Ok);
                tracing::info!("authenticated");
                connected(&mut socket, &state, conn_id, authenticated).await
            }
            Err(end) => {
                state.metrics.handshake(Handshake::Phase2Failed);
                end
            }
        };
        Box::pin(finish(socket, &state.metrics, end)).await;
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
            tracing::debug!(%error, "client broke the websocket protocol");
            End::Close(CloseCode::ProtocolError)
        }
        error => {
            tracing::debug!(%error, "websocket read failed");
            End::Gone(Closed::Error)
        }
    }
}

/// Phase 2: the first frame must be a jwt frame for the ws token's user.
async fn authenticate(
    socket: &mut Socket,
    state: &AppState,
    ws_user: String,
) -> Result<Authenticated, End> {
    let deadline = Instant::now() + state.limits.auth_timeout;
    let text = loop {
        tokio::select! {
            biased;
            () = state.shutdown.cancelled() => return Err(End::Close(CloseCode::GoingAway)),
            () = sleep_until(deadline) => return Err(End::Close(CloseCode::AuthTimeout)),
            received = socket.next() => match received {
                None | Some(Ok(Message::Close(_))) => return Err(End::Gone(Closed::Client)),
                Some(Err(error)) => return Err(read_error(error)),
                Some(Ok(Message::Text(text))) => break text,
                Some(Ok(Message::Binary(_))) => return Err(End::Close(CloseCode::Unsupported)),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            },
        }
    };
    let (jwt, since) = ClientFrame::parse_first(&text).map_err(|error| {
        tracing::debug!(%error, "bad first frame");
        End::Close(CloseCode::BadFirstFrame)
    })?;
    drop(text);
    // Before VerifyJwt: a RevokeUser whose disconnect reaches the hub while
    // the JWT is being checked then still refuses the registration.
    let mark = state.hub.disconnect_mark(&ws_user);
    let verified = tokio::select! {
        () = state.shutdown.cancelled() => return Err(End::Close(CloseCode::GoingAway)),
        // Boxed: an in-flight gRPC call is large, and only lives this long.
        verified = Box::pin(state.auth.verify_jwt(jwt)) => verified,
    };
    match verified {
        // Auth accepts a JWT up to its leeway past exp; such a JWT would get
        // auth_ok and then an immediate 4401, so it is refused outright.
        Ok(verified) if verified.expires_at <= SystemTime::now() => {
            tracing::info!("jwt already past its exp");
            Err(End::Close(CloseCode::Unauthorized))
        }
        Ok(verified) if verified.user_id == ws_user => Ok(Authenticated {
            verified,
            since,
            mark,
        }),
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

fn write_error(error: tungstenite::Error) -> End {
    tracing::debug!(%error, "websocket write failed");
    End::Gone(Closed::Error)
}

/// Sends one frame. A write that does not finish at once waits at most
/// [`SEND_TIMEOUT`] (then 1008), and gives up when the hub asks for a close
/// or the JWT expires: a client that stops reading must not hold the session.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
fn send<'a>(
    socket: &'a mut Socket,
    message: Message,
    slot: &'a Slot,
    expiry: Pin<&'a mut Sleep>,
) -> impl Future<Output = Result<(), End>> + 'a {
    // Not an `async fn` (arguments stored twice): this future sits in every session.
    async move {
        let mut sending = pin!(socket::send(socket, message));
        // Most writes complete at once; only a blocked one pays for a timer.
        if let Poll::Ready(sent) = futures::poll!(sending.as_mut()) {
            return sent.map_err(write_error);
        }
        let deadline = Box::pin(sleep(SEND_TIMEOUT));
        tokio::select! {
            biased;
            code = poll_fn(|cx| slot.poll_kick(cx)) => Err(End::Close(code)),
            () = expiry => {
                tracing::info!("jwt expired while a write was blocked");
                Err(End::Close(CloseCode::Unauthorized))
            }
            () = deadline => {
                tracing::info!("client stopped reading");
                Err(End::Close(CloseCode::Policy))
            }
            sent = sending => sent.map_err(write_error),
        }
    }
}

/// Replays what the client missed since `since`, page by page, one permit
/// among all sessions; the last id covered.
async fn replay(
    socket: &mut Socket,
    state: &AppState,
    slot: &Slot,
    mut expiry: Pin<&mut Sleep>,
    user_id: &str,
    since: EventId,
) -> Result<EventId, End> {
    let deadline = Instant::now() + REPLAY_TIMEOUT;
    let gave_up = || {
        tracing::warn!("history replay over its limits; the client resumes on reconnect");
        End::Close(CloseCode::Policy)
    };
    let _permit = tokio::select! {
        biased;
        code = poll_fn(|cx| slot.poll_kick(cx)) => return Err(End::Close(code)),
        permit = timeout_at(deadline, state.hub.replay_permit()) => permit.map_err(|_| gave_up())?,
    };
    let mut after = since;
    for _ in 0..REPLAY_MAX_PAGES {
        let page = tokio::select! {
            biased;
            code = poll_fn(|cx| slot.poll_kick(cx)) => return Err(End::Close(code)),
            page = timeout_at(deadline, Box::pin(state.auth.history(&after, user_id))) => {
                page.map_err(|_| gave_up())?
            }
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
        // The page size is auth's to choose: only an empty page is the end.
        let Some(last) = events.last().map(|event| event.id.clone()) else {
            return Ok(after);
        };
        for event in events {
            let text = match &event.action {
                EventAction::Broadcast { data } => message::broadcast(&event.id_text, data),
                EventAction::Direct { user_id: to, data } if to == user_id => {
                    message::direct(&event.id_text, data)
                }
                // A past revocation does not apply to a JWT auth just accepted.
                _ => continue,
            };
            // Under the replay's deadline too: a client trickling its reads
            // must not hold a replay permit for a page's worth of sends.
            let sent = send(socket, Message::Text(text.into()), slot, expiry.as_mut());
            timeout_at(deadline, sent).await.map_err(|_| gave_up())??;
        }
        // Past skipped events too, so the next page starts after them.
        after = last;
    }
    Err(gave_up())
}

/// A refresh JWT being verified; yields the token back for a retry.
type Refresh =
    Pin<Box<dyn Future<Output = (SecretString, Result<Verified, AuthCallError>)> + Send>>;

fn verify_refresh(state: &AppState, token: SecretString) -> Refresh {
    let auth = state.auth.clone();
    Box::pin(async move {
        let verified = auth.verify_jwt(token.clone()).await;
        (token, verified)
    })
}

/// The authenticated life of a socket. Not an `async fn`, which would store
/// its arguments twice in a future every connection keeps.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
fn connected<'a>(
    socket: &'a mut Socket,
    state: &'a AppState,
    conn_id: ConnId,
    authenticated: Authenticated,
) -> impl Future<Output = End> + 'a {
    async move {
        let Authenticated {
            verified,
            since,
            mark,
        } = authenticated;
        state
            .hub
            .start_driver(&state.shutdown, &state.ping_tick, &state.tracker);
        // Registered before auth_ok and History: live events queue meanwhile, so
        // the seam between replay and live has no gap.
        let registration = match state.hub.register(
            conn_id,
            &verified.user_id,
            state.limits.send_queue_capacity,
            mark,
        ) {
            Ok(registration) => registration,
            Err(code) => {
                tracing::info!(code = code.code(), "registration refused");
                return End::Close(code);
            }
        };
        drop(verified.user_id);
        let slot = registration.slot();
        let socket_waker = registration.socket_waker();
        let mut expiry = pin!(sleep_until(expiry_instant(verified.expires_at)));

        let auth_ok = Message::Text(message::auth_ok(registration.user()).into());
        if let Err(end) = send(socket, auth_ok, slot, expiry.as_mut()).await {
            return end;
        }
        // Live events at or before this id were already replayed.
        let mut replayed_through = match since {
            Some(since) => {
                let replayed = Box::pin(replay(
                    socket,
                    state,
                    slot,
                    expiry.as_mut(),
                    registration.user(),
                    since,
                ))
                .await;
                match replayed {
                    Ok(last) => Some(Box::new(last)),
                    Err(end) => return end,
                }
            }
            None => None,
        };

        let mut limiter = RateLimiter::new(state.limits.max_messages_per_s);
        let mut silent_ticks: u8 = 0;
        let mut refresh: Option<Refresh> = None;
        // A refresh JWT auth could not check (unavailable): retried at expiry.
        let mut unchecked: Option<SecretString> = None;
        // The JWT's exp passed and the connection waits for a refresh verdict.
        let mut past_exp = false;

        loop {
            tokio::select! {
                biased;
                received = poll_fn(|_| {
                // Only when the socket woke us: a wakeup for an event (most
                // of them, in a fan-out) need not pay for a read attempt.
                if !slot.take_socket_ready() {
                    return Poll::Pending;
                }
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
                        tracing::info!("client over its message rate");
                        return End::Close(CloseCode::Policy);
                    }
                    let text = match message {
                        Message::Text(text) => text,
                        Message::Binary(_) => return End::Close(CloseCode::Unsupported),
                        _ => continue,
                    };
                    match ClientFrame::parse_later(&text) {
                        // A newer refresh replaces one still in flight.
                        ClientFrame::Jwt { token, .. } => {
                            refresh = Some(verify_refresh(state, token));
                        }
                        ClientFrame::Other => {
                            let echo = Message::Text(message::echo(&text).into());
                            if let Err(end) = send(socket, echo, slot, expiry.as_mut()).await {
                                return end;
                            }
                        }
                    }
                }
                signal = poll_fn(|cx| slot.poll_signal(cx)) => match signal {
                    Signal::Close(code) => return End::Close(code),
                    Signal::Frame(frame) => {
                        if let Some(through) = &replayed_through {
                            if frame.id.is_at_or_before(through) {
                                continue;
                            }
                            replayed_through = None;
                        }
                        let text: Utf8Bytes = frame.text.clone();
                        drop(frame);
                        if let Err(end) = send(socket, Message::Text(text), slot, expiry.as_mut()).await {
                            return end;
                        }
                    }
                    Signal::Ping => {
                        if silent_ticks >= MISSED_PINGS {
                            tracing::info!("peer stopped answering pings");
                            return End::Gone(Closed::Dead);
                        }
                        silent_ticks += 1;
                        let ping = Message::Ping(Default::default());
                        if let Err(end) = send(socket, ping, slot, expiry.as_mut()).await {
                            return end;
                        }
                    }
                },
                () = expiry.as_mut() => {
                    if past_exp {
                        // The grace for the refresh verdict ran out too.
                        tracing::warn!("jwt expired and its refresh was not verified in time");
                        return End::Close(CloseCode::AuthUnavailable);
                    }
                    if refresh.is_none() {
                        let Some(token) = unchecked.take() else {
                            tracing::info!("jwt expired without a refresh");
                            return End::Close(CloseCode::Unauthorized);
                        };
                        refresh = Some(verify_refresh(state, token));
                    }
                    // The verdict decides; this only bounds the wait for it.
                    past_exp = true;
                    expiry.as_mut().reset(Instant::now() + EXPIRY_RECHECK_GRACE);
                }
                (token, verified) = async { refresh.as_mut().expect("branch runs only with a refresh").await }, if refresh.is_some() => {
                    refresh = None;
                    match verified {
                        Ok(fresh) if *fresh.user_id == *registration.user() => {
                            expiry.as_mut().reset(expiry_instant(fresh.expires_at));
                            past_exp = false;
                            unchecked = None;
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
                        Err(error) if past_exp => {
                            tracing::warn!(%error, "jwt expired and its refresh cannot be verified");
                            return End::Close(CloseCode::AuthUnavailable);
                        }
                        // The current JWT still holds until its exp; retried then.
                        Err(error) => {
                            tracing::warn!(%error, "cannot verify refresh jwt yet");
                            unchecked = Some(token);
                        }
                    }
                }
            }
        }
    }
}

/// Ends the socket: for a gateway close, send the code and wait (bounded)
/// for the peer's close so the frame is not lost to a reset.
async fn finish(mut socket: Socket, metrics: &Metrics, end: End) {
    match end {
        End::Gone(Closed::Client) => {
            metrics.closed(Closed::Client);
            // tungstenite queued the reply to the client's close, but writes
            // it only on the next read or flush.
            let _ = tokio::time::timeout(CLOSE_REPLY_GRACE, socket.flush()).await;
        }
        End::Gone(closed) => metrics.closed(closed),
        End::Close(code) => {
            metrics.closed(Closed::Code(code));
            tracing::debug!(code = code.code(), "closing");
            let frame = Message::Close(Some(CloseFrame {
                code: code.code().into(),
                reason: Utf8Bytes::from_static(code.reason()),
            }));
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                if socket::send(&mut socket, frame).await.is_err() {
                    return;
                }
                while let Some(Ok(message)) = socket.next().await {
                    if matches!(message, Message::Close(_)) {
                        return;
                    }
                }
                if code == CloseCode::TooBig {
                    // The reader stopped mid-frame and cannot drain it.
                    sleep(TOO_BIG_LINGER).await;
                }
            })
            .await;
        }
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an `async fn` of four arguments returns.
    fn future_size<A, B, C, D, F>(_: fn(A, B, C, D) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// The session future is each connection's main allocation: keep an eye
    /// on it (measured on the function itself, as the task holds it).
    #[test]
    fn session_future_stays_small() {
        let size = future_size(run as fn(Socket, AppState, ConnId, String) -> _);
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

    const SESSION_FUTURE_LIMIT: usize = 1584 * 11 / 10;
}
