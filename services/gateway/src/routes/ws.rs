//! `GET /ws?token=…`: phase 1 of the handshake. Origin, then the ws token,
//! both before the 101, so a refused request never opens a socket.

use std::future::Future;
use std::sync::Arc;

use axum::extract::{Query, Request, State, rejection::QueryRejection};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::FutureExt as _;
use futures::future::{Either, ready};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tracing::Span;
use wsauth_shared::limits::MAX_CREDENTIAL_BYTES;
use wsauth_shared::trace_context;

use crate::admission::Admitted;
use crate::error::HttpError;
use crate::hub::ConnId;
use crate::session;
use crate::session::conn_log::{ConnLog, Logged, conn_debug, conn_error};
use crate::socket::FrameIo;
use crate::state::AppState;
use crate::tls::Conn;

/// tungstenite reads into a buffer of this size, allocated up front (its
/// default is 128 KiB per socket); larger frames grow it as they arrive.
/// Small because idle sockets dominate memory (2 KiB → 512 B measured
/// -1.5 KiB RSS per idle connection at 19k); it also caps each read syscall.
const READ_BUFFER_BYTES: usize = 512;
/// tungstenite's write buffer only carries control frames (text frames are
/// written by [`FrameIo`]): a close, a ping and a pong fit many times over.
const MAX_WRITE_BUFFER_BYTES: usize = 16 * 1024;

#[derive(Deserialize)]
pub struct WsParams {
    token: Option<String>,
}

pub async fn upgrade(
    State(state): State<AppState>,
    params: Result<Query<WsParams>, QueryRejection>,
    mut request: Request,
) -> Result<Response, HttpError> {
    // Origin first: a cross-site page must not be able to burn a token.
    let headers = request.headers();
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !state.origin_allowed(origin) {
        return Err(HttpError::ForbiddenOrigin);
    }
    // A full gateway refuses before the token is looked at, so the client can
    // spend it on another replica. Held until the socket closes.
    let admitted = state.admission.try_admit().map_err(HttpError::Full)?;
    let token = params
        .ok()
        .and_then(|Query(params)| params.token)
        .filter(|t| !t.is_empty() && t.len() <= MAX_CREDENTIAL_BYTES)
        .ok_or(HttpError::MissingToken)?;
    // Before ValidateToken: a socket opened now would be closed at once,
    // after its token was spent.
    if state.shutdown.is_cancelled() {
        return Err(HttpError::ShuttingDown);
    }
    // Not a valid upgrade request: refuse before touching the token.
    let accept = accept_key(headers)?;
    let on_upgrade = request
        .extensions_mut()
        .remove::<OnUpgrade>()
        .ok_or(HttpError::NotUpgradable)?;
    let user_id = state.auth.validate_token(token).await?;
    let conn_id = state.hub.next_conn_id();
    let max = state.limits.max_message_bytes;
    let config = WebSocketConfig::default()
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
        .read_buffer_size(READ_BUFFER_BYTES)
        // Write each frame straight out: the session flushes every send anyway.
        .write_buffer_size(0)
        .max_write_buffer_size(MAX_WRITE_BUFFER_BYTES);
    // Shared with the hub's registry, which keys the user's connections by it.
    let user_id: Arc<str> = Arc::from(user_id);
    let span = session_span(conn_id, &user_id);
    let conn = ConnLog::new(conn_id, Arc::clone(&user_id));
    let tracker = state.tracker.clone();
    let task = session_task(on_upgrade, config, state, conn_id, user_id, admitted);
    tracker.spawn(Logged::new(conn, span, task));
    Ok((
        StatusCode::SWITCHING_PROTOCOLS,
        [
            (header::CONNECTION, HeaderValue::from_static("upgrade")),
            (header::UPGRADE, HeaderValue::from_static("websocket")),
            (header::SEC_WEBSOCKET_ACCEPT, accept),
        ],
    )
        .into_response())
}

/// The upgraded socket's task: the upgrade, then the session.
///
/// Made of combinators, not an `async` block: a block keeps what it captured
/// (the config, the state, the user, the permits) beside the session's
/// future that they were moved into, in every idle connection's task; each
/// step of a `then` holds only its own.
fn session_task(
    on_upgrade: OnUpgrade,
    config: WebSocketConfig,
    state: AppState,
    conn_id: ConnId,
    user_id: Arc<str>,
    admitted: Admitted,
) -> impl Future<Output = ()> + Send {
    on_upgrade.then(move |upgraded| {
        // The connection itself, out of hyper's box: the box and its room for
        // bytes read ahead were kept for the socket's life.
        let parts = match upgraded.map(Upgraded::downcast::<TokioIo<Conn>>) {
            Ok(Ok(parts)) => parts,
            Ok(Err(_)) => {
                // `serve` only serves a `Conn`: not reached unless someone wraps
                // the served IO, which would break every WebSocket: say so loudly.
                conn_error!("upgraded connection is not a tls::Conn; closing the socket");
                return Either::Right(ready(()));
            }
            Err(error) => {
                conn_debug!(%error, "websocket upgrade failed");
                return Either::Right(ready(()));
            }
        };
        let io = FrameIo::new(parts.io.into_inner());
        // What the client sent after its upgrade request without waiting
        // for the 101 (usually nothing) is the start of its first frame.
        let read_ahead = parts.read_buf.to_vec();
        let session =
            WebSocketStream::from_partially_read(io, read_ahead, Role::Server, Some(config))
                .then(move |socket| session::run(socket, state, conn_id, user_id, admitted));
        Either::Left(session)
    })
}

/// The span a session runs in, when one is worth its memory (see
/// [`crate::session::conn_log`]): when spans are exported, an info span that
/// continues the upgrade request's trace; otherwise a debug span, which
/// exists only when `RUST_LOG` asks for debug here, for the dependencies'
/// debug lines. Not a tracing child of the upgrade request: that would keep
/// the request's span open for the connection's whole life.
fn session_span(conn_id: ConnId, user_id: &str) -> Span {
    if trace_context::is_exporting() {
        let span = tracing::info_span!(parent: None, "session", conn_id, user_id);
        trace_context::continue_current_trace(&span);
        span
    } else {
        tracing::debug_span!(parent: None, "session", conn_id, user_id)
    }
}

/// Checks the upgrade headers (RFC 6455 §4.2.1, in the order axum's
/// `WebSocketUpgrade` did, with its messages); the `Sec-WebSocket-Accept`
/// value for the 101. `pub` for the fuzz target `http_headers` (its own
/// crate), which runs it on arbitrary headers.
pub fn accept_key(headers: &HeaderMap) -> Result<HeaderValue, HttpError> {
    let refused = HttpError::BadUpgrade;
    if !header_contains(headers, header::CONNECTION, "upgrade") {
        return Err(refused("Connection header did not include 'upgrade'"));
    }
    if !header_eq(headers, header::UPGRADE, "websocket") {
        return Err(refused("`Upgrade` header did not include 'websocket'"));
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return Err(refused("`Sec-WebSocket-Key` header missing"));
    };
    if !header_eq(headers, header::SEC_WEBSOCKET_VERSION, "13") {
        return Err(HttpError::UnsupportedVersion);
    }
    if !is_websocket_key(key.as_bytes()) {
        return Err(refused("`Sec-WebSocket-Key` is not 16 bytes in base64"));
    }
    HeaderValue::try_from(derive_accept_key(key.as_bytes()))
        .map_err(|_| refused("invalid `Sec-WebSocket-Key`"))
}

/// Whether `key` is 16 bytes in padded base64: 22 base64 characters and `==`.
fn is_websocket_key(key: &[u8]) -> bool {
    key.len() == 24
        && key.ends_with(b"==")
        && key[..22]
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}

fn header_eq(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|header| header.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// Whether the header holds `token` (lower case) among its values.
fn header_contains(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get(name).is_some_and(|header| {
        header
            .as_bytes()
            .split(|&b| b == b',')
            .any(|item| item.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
    use axum::response::IntoResponse;
    use hyper::upgrade::OnUpgrade;
    use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
    use tokio_util::task::task_tracker::TrackedFuture;

    use super::accept_key;
    use crate::admission::Admitted;
    use crate::hub::ConnId;
    use crate::session::conn_log::Logged;
    use crate::state::AppState;

    fn upgrade_headers() -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        // RFC 6455 §1.3's example key and its accept value.
        headers.insert(
            header::SEC_WEBSOCKET_KEY,
            HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="),
        );
        headers
    }

    /// The future each idle connection's task holds, all wrappers
    /// included. tokio adds about 96 bytes of its own and rounds the task up
    /// to 128 bytes (its alignment): at 928 bytes the task takes 1,024, one
    /// byte more and it takes 1,152: 0.125 KiB more per connection.
    #[test]
    fn the_task_future_stays_small() {
        fn task_size<A, B, C, D, E, G, F>(_: fn(A, B, C, D, E, G) -> F) -> usize {
            size_of::<TrackedFuture<Logged<F>>>()
        }
        let size = task_size(
            super::session_task
                as fn(OnUpgrade, WebSocketConfig, AppState, ConnId, Arc<str>, Admitted) -> _,
        );
        println!("session task future: {size} bytes");
        assert!(size <= 928, "the session task's future is {size} bytes");
    }

    #[test]
    fn a_valid_request_gets_the_rfcs_accept_value() {
        let accept = accept_key(&upgrade_headers()).expect("a valid upgrade request");
        assert_eq!(accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn an_unsupported_version_gets_426_naming_version_13() {
        let mut headers = upgrade_headers();
        headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("8"));
        let refused = accept_key(&headers)
            .map(|_| ())
            .map_err(IntoResponse::into_response)
            .expect_err("version 8 is refused");
        assert_eq!(refused.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(refused.headers()[header::SEC_WEBSOCKET_VERSION], "13");
    }

    #[test]
    fn a_key_that_is_not_16_bytes_of_base64_gets_400() {
        for key in [
            "short",
            "dGhlIHNhbXBsZSBub25jZQ",
            "dGhlIHNhbXBsZSBub25j!Q==",
        ] {
            let mut headers = upgrade_headers();
            headers.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static(key));
            let refused = accept_key(&headers)
                .map(|_| ())
                .map_err(IntoResponse::into_response)
                .expect_err("a malformed key is refused");
            assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{key}");
        }
    }

    #[test]
    fn missing_upgrade_headers_get_400() {
        for name in [
            header::CONNECTION,
            header::UPGRADE,
            header::SEC_WEBSOCKET_KEY,
        ] {
            let mut headers = upgrade_headers();
            headers.remove(&name);
            let refused = accept_key(&headers)
                .map(|_| ())
                .map_err(IntoResponse::into_response)
                .expect_err("an incomplete request is refused");
            assert_eq!(refused.status(), StatusCode::BAD_REQUEST, "{name}");
        }
    }
}

#[cfg(test)]
#[path = "ws_props.rs"]
mod props;
