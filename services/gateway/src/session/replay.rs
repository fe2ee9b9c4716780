//! A `since` reconnect: `auth_ok`, then the retained events after the
//! client's id, sent before the live events, page by page under one deadline.
//!
//! Each History call holds one of the hub's replay permits (tokio's
//! semaphore: first come, first served) only while auth answers, never while
//! the page is written to the client: a slow reader cannot keep the permits
//! from others. A session waits at most [`PERMIT_WAIT`] for one; then it closes
//! with 1011 like any History that auth cannot serve (the client reconnects
//! with the same `since` and misses nothing). Memory per replay is one page
//! (at most 64 events), and auth's work per page is bounded too: pages are
//! `resumable`, so a user with few events among many others' gets small
//! steps (some empty) rather than one call that scans the whole stream.

use std::future::poll_fn;
use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep, timeout_at};
use tokio_tungstenite::tungstenite::Message;

use super::End;
use super::conn_log::{conn_info, conn_warn};
use super::send::send;
use crate::auth_client::{AuthCallError, HistoryPage};
use crate::close::CloseCode;
use crate::event::{Event, EventAction, EventId, Start};
use crate::hub::Slot;
use crate::message;
use crate::socket::Socket;
use crate::state::AppState;

/// A replay gives up (1008, the client reconnects from the last id it got)
/// after this many History pages (of at most 64 events) or this long.
const REPLAY_MAX_PAGES: usize = 4096;
const REPLAY_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a History call waits for a replay permit.
pub(super) const PERMIT_WAIT: Duration = Duration::from_secs(2);

fn busy() -> End {
    conn_warn!("every history replay permit stayed taken; the client retries");
    End::Close(CloseCode::AuthUnavailable)
}

fn gave_up() -> End {
    conn_warn!("history replay over its limits; the client resumes on reconnect");
    End::Close(CloseCode::Policy)
}

fn unavailable(error: &AuthCallError) -> End {
    conn_warn!(%error, "history unavailable for a recovering client");
    End::Close(CloseCode::AuthUnavailable)
}

/// Sends `auth_ok` and then the retained events after `since` meant for
/// `user_id`, page by page.
///
/// A `since` auth refuses (older than retention, another epoch, or ahead of
/// the stream: the client's state is from a stream auth no longer has) is a
/// gap: `auth_ok` carries `"gap":true` and the replay starts at the oldest
/// retained event. So the first page is read before `auth_ok` is sent. A
/// `since` lost during the replay (trimmed under it) is told with
/// `{"type":"gap"}` and the replay goes on from the oldest retained event.
///
/// Returns the replay boundary: the last id auth confirmed as part of the
/// stream (`since` itself once History accepted it, then each page's last
/// id). Live events queued meanwhile at or before it (same epoch) were
/// already sent or the client had them. `None` when nothing was confirmed:
/// every live event is sent.
pub(super) async fn replay(
    socket: &mut Socket,
    state: &AppState,
    slot: &Slot,
    mut expiry: Pin<&mut Sleep>,
    user_id: &str,
    since: EventId,
) -> Result<Option<EventId>, End> {
    let deadline = Instant::now() + REPLAY_TIMEOUT;
    let (mut events, gap) = match page(state, slot, deadline, Start::After(&since), user_id).await?
    {
        Ok(events) => (events, false),
        Err(AuthCallError::OutOfRange) => {
            conn_info!(%since, "client's since is not in the retained stream: a gap; replaying from the oldest retained event");
            let oldest = page(state, slot, deadline, Start::Oldest, user_id).await?;
            (oldest.map_err(|error| unavailable(&error))?, true)
        }
        Err(error) => return Err(unavailable(&error)),
    };
    let auth_ok = Message::Text(message::auth_ok(user_id, gap).into());
    send(socket, auth_ok, slot, expiry.as_mut()).await?;
    let mut boundary = (!gap).then_some(since);
    for _ in 0..REPLAY_MAX_PAGES {
        // The page size is auth's to choose: a page that gives no position
        // to go on from (empty, and no scan position) is the end.
        let Some(last) = events.last_id.take() else {
            return Ok(boundary);
        };
        for event in std::mem::take(&mut events.events) {
            let Some(text) = frame_for(&event, user_id) else {
                continue;
            };
            // Under the replay's deadline too: a client trickling its reads
            // must not hold a replay permit for a page's worth of sends.
            let sent = send(socket, Message::Text(text.into()), slot, expiry.as_mut());
            timeout_at(deadline, sent).await.map_err(|_| gave_up())??;
        }
        // Past skipped events too, so the next page starts after them.
        boundary = Some(last.clone());
        events = match page(state, slot, deadline, Start::After(&last), user_id).await? {
            Ok(events) => events,
            Err(AuthCallError::OutOfRange) => {
                conn_info!(after = %last, "replay position lost during the replay: telling the client of a gap");
                let sent = send(
                    socket,
                    Message::Text(message::gap().into()),
                    slot,
                    expiry.as_mut(),
                );
                timeout_at(deadline, sent).await.map_err(|_| gave_up())??;
                let oldest = page(state, slot, deadline, Start::Oldest, user_id).await?;
                oldest.map_err(|error| unavailable(&error))?
            }
            Err(error) => return Err(unavailable(&error)),
        };
    }
    Err(gave_up())
}

/// One History page from `start`, under a replay permit (waited for at most
/// [`PERMIT_WAIT`]); given up on when the session is kicked or the replay's
/// deadline passes.
async fn page(
    state: &AppState,
    slot: &Slot,
    deadline: Instant,
    start: Start<'_>,
    user_id: &str,
) -> Result<Result<HistoryPage, AuthCallError>, End> {
    let call = async {
        let permit = tokio::time::timeout(PERMIT_WAIT, state.hub.replay_permit())
            .await
            .map_err(|_| busy())?;
        let page = state.auth.history(start, user_id).await;
        drop(permit);
        Ok(page)
    };
    tokio::select! {
        biased;
        code = poll_fn(|cx| slot.poll_kick(cx)) => Err(End::Close(code)),
        page = timeout_at(deadline, Box::pin(call)) => page.map_err(|_| gave_up())?,
    }
}

/// What a replayed event becomes for `user_id`, if anything.
fn frame_for(event: &Event, user_id: &str) -> Option<String> {
    match &event.action {
        EventAction::Broadcast { data } => Some(message::broadcast(&event.id_text, data)),
        EventAction::Direct { user_id: to, data } if to == user_id => {
            Some(message::direct(&event.id_text, data))
        }
        // A past revocation does not apply to a JWT auth just accepted.
        _ => None,
    }
}
