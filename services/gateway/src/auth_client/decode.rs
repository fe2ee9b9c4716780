//! Proto answers from auth turned into the gateway's own types: proto types
//! stop here.

use std::str::FromStr;
use std::time::SystemTime;

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

/// A live Subscribe stream.
pub struct EventStream {
    pub(super) inner: tonic::Streaming<proto::Event>,
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
    /// The id of the page's last event, readable or not: where the next page starts.
    pub last_id: Option<EventId>,
    /// Fewer events than asked for: nothing retained comes after this page.
    pub complete: bool,
}

impl HistoryPage {
    /// Reads a History answer to a call that asked for `limit` events.
    /// Unreadable events are left out (logged) but still move `last_id`.
    pub(super) fn decode(events: Vec<proto::Event>, limit: u32) -> Self {
        let mut page = Self {
            complete: events.len() < limit as usize,
            events: Vec::with_capacity(events.len()),
            last_id: None,
        };
        for event in events {
            match decode_event(event) {
                Ok(event) => {
                    page.last_id = Some(event.id.clone());
                    page.events.push(event);
                }
                Err(bad) => {
                    tracing::error!(what = bad.what, id = ?bad.id.as_ref().map(ToString::to_string), "skipping unreadable event in history");
                    if bad.id.is_some() {
                        page.last_id = bad.id;
                    }
                }
            }
        }
        page
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

    #[test]
    fn a_history_page_resumes_after_its_last_id_even_when_unreadable() {
        let page = HistoryPage::decode(
            vec![
                event("ab:1-0", proto::EventKind::Broadcast, ""),
                event("ab:2-0", proto::EventKind::Unspecified, ""),
            ],
            2,
        );
        assert_eq!(page.events.len(), 1);
        assert_eq!(page.last_id, Some("ab:2-0".parse().expect("valid id")));
        assert!(!page.complete, "as many as asked for: there may be more");
        let page = HistoryPage::decode(vec![event("ab:3-0", proto::EventKind::Direct, "u")], 2);
        assert!(page.complete);
        assert!(HistoryPage::decode(Vec::new(), 2).last_id.is_none());
    }
}
