//! `GET /ws?token=…`: phase 1 of the handshake. Origin, then the ws token,
//! both before the 101, so a refused request never opens a socket.

use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{Query, State, rejection::QueryRejection};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tracing::Instrument as _;

use crate::error::HttpError;
use crate::message::MAX_CREDENTIAL_BYTES;
use crate::session;
use crate::state::AppState;

/// tungstenite reads into a buffer of this size, allocated up front (its
/// default is 128 KiB per socket); larger frames grow it as they arrive.
/// Small because idle sockets dominate memory (2 KiB → 512 B measured
/// -1.5 KiB RSS per idle connection at 19k); it also caps each read syscall.
const READ_BUFFER_BYTES: usize = 512;

#[derive(Deserialize)]
pub struct WsParams {
    token: Option<String>,
}

/// Counts and answers a refused handshake.
fn refuse(state: &AppState, error: HttpError) -> Response {
    state.metrics.handshake(error.handshake());
    error.into_response()
}

pub async fn upgrade(
    State(state): State<AppState>,
    headers: HeaderMap,
    params: Result<Query<WsParams>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Origin first: a cross-site page must not be able to burn a token.
    let origin = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok());
    if !state.origin_allowed(origin) {
        return refuse(&state, HttpError::ForbiddenOrigin);
    }
    let token = params
        .ok()
        .and_then(|Query(params)| params.token)
        .filter(|t| !t.is_empty() && t.len() <= MAX_CREDENTIAL_BYTES);
    let Some(token) = token else {
        return refuse(&state, HttpError::MissingToken);
    };
    // Before ValidateToken: a socket opened now would be closed at once,
    // after its token was spent.
    if state.shutdown.is_cancelled() {
        return refuse(&state, HttpError::ShuttingDown);
    }
    // Not a valid upgrade request: refuse before touching the token.
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let user_id = match state.auth.validate_token(token).await {
        Ok(user_id) => user_id,
        Err(error) => return refuse(&state, HttpError::from(error)),
    };
    let conn_id = state.hub.next_conn_id();
    let max = state.limits.max_message_bytes;
    let span = tracing::info_span!("session", conn_id, user_id = %user_id);
    let tracker = state.tracker.clone();
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER_BYTES)
        // Write each frame straight out: the session flushes every send anyway.
        .write_buffer_size(0)
        .on_failed_upgrade(|error| tracing::debug!(%error, "websocket upgrade failed"))
        .on_upgrade(move |socket| {
            tracker.track_future(session::run(socket, state, conn_id, user_id).instrument(span))
        })
}
