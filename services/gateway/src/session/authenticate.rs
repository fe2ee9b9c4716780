//! Phase 2: the first frame must be a jwt frame, verified by auth, for the
//! ws token's user; nothing is sent to the client before `auth_ok`.

use std::time::SystemTime;

use futures::StreamExt as _;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::tungstenite::Message;

use super::conn_log::{conn_debug, conn_info, conn_warn};
use super::{End, read_error};
use crate::auth_client::Verified;
use crate::close::CloseCode;
use crate::event::EventId;
use crate::hub::DisconnectMark;
use crate::message::ClientFrame;
use crate::metrics::Closed;
use crate::socket::Socket;
use crate::state::AppState;

/// What phase 2 hands to the authenticated phase.
pub(super) struct Authenticated {
    pub verified: Verified,
    pub since: Option<EventId>,
    /// Taken before VerifyJwt, for [`crate::hub::Hub::register`].
    pub mark: DisconnectMark,
}

pub(super) async fn authenticate(
    socket: &mut Socket,
    state: &AppState,
    ws_user: &str,
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
        conn_debug!(%error, "bad first frame");
        End::Close(CloseCode::BadFirstFrame)
    })?;
    drop(text);
    // Before VerifyJwt: a RevokeUser whose disconnect reaches the hub while
    // the JWT is being checked then still refuses the registration.
    let mark = state.hub.disconnect_mark(ws_user);
    let verified = tokio::select! {
        () = state.shutdown.cancelled() => return Err(End::Close(CloseCode::GoingAway)),
        // Boxed: an in-flight gRPC call is large, and only lives this long.
        verified = Box::pin(state.auth.verify_jwt(jwt)) => verified,
    };
    match verified {
        // Auth accepts a JWT up to its leeway past exp; such a JWT would get
        // auth_ok and then an immediate 4401, so it is refused outright.
        Ok(verified) if verified.expires_at <= SystemTime::now() => {
            conn_info!("jwt already past its exp");
            Err(End::Close(CloseCode::Unauthorized))
        }
        Ok(verified) if verified.user_id == ws_user => Ok(Authenticated {
            verified,
            since,
            mark,
        }),
        Ok(_) => {
            conn_info!("jwt sub differs from the ws token's user");
            Err(End::Close(CloseCode::Forbidden))
        }
        Err(error) => {
            let code = error.close_code();
            if code == CloseCode::Unauthorized {
                conn_info!(%error, "jwt refused");
            } else {
                conn_warn!(%error, "auth unavailable during phase 2");
            }
            Err(End::Close(code))
        }
    }
}
