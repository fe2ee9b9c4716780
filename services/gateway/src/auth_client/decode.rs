//! Proto answers from auth turned into the gateway's own types: proto types
//! stop here.

use std::str::FromStr;
use std::time::SystemTime;

use wsauth_shared::event_id::{LIVE_FROM_METADATA, LIVE_FROM_OLDEST};
use wsauth_shared::proto;

use super::AuthCallError;
use crate::event::{Event, EventAction, EventId};

/// An event the gateway cannot act on. Skipped, never fatal: one bad event
/// must not stop delivery of every later one.
#[derive(Debug)]
pub struct Unreadable {
    /// Its id when that parses, so the resume point can still move past it.
    pub id: Option<EventId>,
    pub what: &'static str,
}

/// Reads one event of auth's stream.
fn decode_event(event: proto::Event) -> Result<Event, Unreadable> {
    let id = EventId::from_str(&event.id).map_err(|_| Unreadable {
        id: None,
        what: "event id",
    })?;
    let action = match event.kind() {
        proto::EventKind::Broadcast => EventAction::Broadcast { data: event.data },
        proto::EventKind::Direct if !event.user_id.is_empty() => EventAction::Direct {
            user_id: event.user_id,
            data: event.data,
        },
        proto::EventKind::Disconnect if !event.user_id.is_empty() => EventAction::Disconnect {
            user_id: event.user_id,
        },
        proto::EventKind::RevokeJwt if !event.data.is_empty() => {
            EventAction::RevokeJwt { jti: event.data }
        }
        proto::EventKind::RevokeJwt => {
            return Err(Unreadable {
                id: Some(id),
                what: "revoke_jwt event without jti",
            });
        }
        proto::EventKind::Direct | proto::EventKind::Disconnect => {
            return Err(Unreadable {
                id: Some(id),
                what: "event without user_id",
            });
        }
        proto::EventKind::Unspecified => {
            return Err(Unreadable {
                id: Some(id),
                what: "event kind",
            });
        }
    };
    Ok(Event {
        id,
        id_text: event.id,
        action,
    })
}

/// One item of the Subscribe stream.
#[derive(Debug)]
pub enum Incoming {
    Event(Event),
    Unreadable(Unreadable),
}

/// Where auth says a live Subscribe began (its `wsauth-live-from` metadata).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveFrom {
    /// After this id: the stream's last event when the subscription opened.
    After(EventId),
    /// The stream was empty: everything that comes is new.
    Oldest,
}

impl LiveFrom {
    /// Reads the metadata; `None` when absent (an auth that predates it, or
    /// a Subscribe that was not live) or unreadable.
    pub(super) fn read(metadata: &tonic::metadata::MetadataMap) -> Option<Self> {
        let value = metadata.get(LIVE_FROM_METADATA)?;
        let parsed = value.to_str().ok().and_then(|text| {
            if text == LIVE_FROM_OLDEST {
                Some(Self::Oldest)
            } else {
                text.parse().ok().map(Self::After)
            }
        });
        if parsed.is_none() {
            tracing::warn!(?value, "unreadable {LIVE_FROM_METADATA} from auth; ignored");
        }
        parsed
    }
}

/// A Subscribe stream.
pub struct EventStream {
    pub(super) inner: tonic::Streaming<proto::Event>,
    /// Where a live stream began, when auth said.
    pub live_from: Option<LiveFrom>,
}

impl EventStream {
    /// The next item; `None` when auth ended the stream.
    pub async fn next(&mut self) -> Option<Result<Incoming, AuthCallError>> {
        match self.inner.message().await {
            Ok(Some(event)) => Some(Ok(match decode_event(event) {
                Ok(event) => Incoming::Event(event),
                Err(bad) => Incoming::Unreadable(bad),
            })),
            Ok(None) => None,
            Err(status) => Some(Err(status.into())),
        }
    }
}

/// One page of History.
#[derive(Debug, Default)]
pub struct HistoryPage {
    /// The readable events, oldest first.
    pub events: Vec<Event>,
    /// Where the next page starts: the position auth gave (the last event
    /// it examined, for a user's page that skipped other users' events), else
    /// the page's last event, readable or not. `None`: the end of the stream.
    pub last_id: Option<EventId>,
}

impl HistoryPage {
    /// Reads a History answer. Unreadable events are left out (logged) but
    /// still move `last_id`.
    pub(super) fn decode(response: proto::HistoryResponse) -> Result<Self, AuthCallError> {
        // An auth that predates `resumable` gives no position: its pages
        // end at their last event.
        let next_after = match response.next_after_id.as_str() {
            "" => None,
            id => {
                Some(EventId::from_str(id).map_err(|_| AuthCallError::Malformed("next_after_id"))?)
            }
        };
        let mut page = Self {
            events: Vec::with_capacity(response.events.len()),
            last_id: None,
        };
        for event in response.events {
            match decode_event(event) {
                Ok(event) => {
                    page.last_id = Some(event.id.clone());
                    page.events.push(event);
                }
                Err(bad) => {
                    // Called from a session's replay: the line names the connection.
                    crate::session::conn_log::conn_error!(what = bad.what, id = ?bad.id.as_ref().map(ToString::to_string), "skipping unreadable event in history");
                    if bad.id.is_some() {
                        page.last_id = bad.id;
                    }
                }
            }
        }
        if next_after.is_some() {
            page.last_id = next_after;
        }
        Ok(page)
    }
}

/// A `google.protobuf.Timestamp` auth must have set.
pub(super) fn timestamp(ts: Option<prost_types::Timestamp>) -> Result<SystemTime, AuthCallError> {
    ts.and_then(|ts| SystemTime::try_from(ts).ok())
        .ok_or(AuthCallError::Malformed("expires_at"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, kind: proto::EventKind, user: &str) -> proto::Event {
        let mut event = proto::Event {
            id: id.into(),
            data: "d".into(),
            user_id: user.into(),
            ..Default::default()
        };
        event.set_kind(kind);
        event
    }

    #[test]
    fn unreadable_events_keep_their_id_when_it_parses() {
        let ok = decode_event(event("ab:1-0", proto::EventKind::Broadcast, "")).expect("readable");
        assert_eq!(ok.action, EventAction::Broadcast { data: "d".into() });
        let bad = decode_event(event("ab:2-0", proto::EventKind::Unspecified, ""))
            .expect_err("unknown kind");
        assert_eq!(bad.id.map(|id| id.to_string()).as_deref(), Some("ab:2-0"));
        let bad = decode_event(event("ab:3-0", proto::EventKind::Direct, ""))
            .expect_err("direct without user");
        assert!(bad.id.is_some());
        let bad = decode_event(event("nope", proto::EventKind::Broadcast, "")).expect_err("bad id");
        assert!(bad.id.is_none());
    }

    fn response(events: Vec<proto::Event>, next_after_id: &str) -> proto::HistoryResponse {
        proto::HistoryResponse {
            events,
            next_after_id: next_after_id.into(),
        }
    }

    #[test]
    fn a_history_page_resumes_after_its_last_id_even_when_unreadable() {
        let page = HistoryPage::decode(response(
            vec![
                event("ab:1-0", proto::EventKind::Broadcast, ""),
                event("ab:2-0", proto::EventKind::Unspecified, ""),
            ],
            "",
        ))
        .expect("readable page");
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.last_id, Some("ab:2-0".parse().expect("valid id")));
        let empty = HistoryPage::decode(response(Vec::new(), "")).expect("readable page");
        assert!(
            empty.last_id.is_none(),
            "an empty page with no position is the end"
        );
    }

    #[test]
    fn a_history_page_resumes_from_the_position_auth_gives() {
        let page = HistoryPage::decode(response(
            vec![event("ab:3-0", proto::EventKind::Direct, "u")],
            "ab:9-0",
        ))
        .expect("readable page");
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.last_id, Some("ab:9-0".parse().expect("valid id")));
        let skipped = HistoryPage::decode(response(Vec::new(), "ab:20-0")).expect("readable page");
        assert!(skipped.events.is_empty());
        assert_eq!(
            skipped.last_id,
            Some("ab:20-0".parse().expect("valid id")),
            "a page of only other users' events still moves on"
        );
        assert!(matches!(
            HistoryPage::decode(response(Vec::new(), "nope")),
            Err(AuthCallError::Malformed("next_after_id"))
        ));
    }
}
