//! A `since` reconnect: the retained events after the client's id, sent
//! between `auth_ok` and the live events, under one permit and deadline.

use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use super::End;
use super::send::send;
use crate::auth_client::AuthCallError;
use crate::close::CloseCode;
use crate::event::{EventAction, EventId};
use crate::hub::Slot;
use crate::message;
use crate::socket::Socket;
use crate::state::AppState;

/// A replay gives up (1008, the client reconnects from the last id it got)
/// after this many History pages or this long.
const REPLAY_MAX_PAGES: usize = 200;
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends the retained events after `since` meant for `user_id`, page by
/// page, holding one permit among all sessions.
///
/// Returns the replay boundary: the last id auth confirmed as part of the
/// stream (`since` itself once History accepted it, then each page's last
/// id). Live events queued meanwhile at or before it were already sent (or
/// the client had them). `None` when auth refused `since` (older than
/// retention, another epoch, or ahead of the stream): the client's id then
/// says nothing about the live events, and every one of them is sent.
pub(super) async fn replay(
    socket: &mut Socket,
    state: &AppState,
    slot: &Slot,
    mut expiry: Pin<&mut Sleep>,
    user_id: &str,
    since: EventId,
) -> Result<Option<EventId>, End> {
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
    let mut boundary = None;
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
                tracing::warn!(since = %after, "client's since is not in the retained stream; live events only");
                return Ok(boundary);
            }
            Err(error) => {
                tracing::warn!(%error, "history unavailable for a recovering client");
                return Err(End::Close(CloseCode::AuthUnavailable));
            }
        };
        // The page size is auth's to choose: only an empty page is the end.
        let Some(last) = events.last().map(|event| event.id.clone()) else {
            return Ok(Some(after));
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
        boundary = Some(last.clone());
        after = last;
    }
    Err(gave_up())
}
