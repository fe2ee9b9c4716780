//! The event stream's data types: ids, kinds, events and read chunks.
//! A leaf: the store, the read path and the gRPC edge all build on it.

pub use wsauth_shared::event_id::{BadEventId, EventId, StreamSeq};

/// A new random epoch: 8 hex digits.
pub fn new_epoch() -> String {
    format!("{:08x}", rand::random::<u32>())
}

/// What an event asks the gateways to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// `data` for every authenticated connection.
    Broadcast,
    /// `data` for the connections of `user_id`.
    Direct,
    /// Close the connections of `user_id` (RevokeUser).
    Disconnect,
    /// Close the connections authenticated with the JWT whose `jti` is
    /// `data` (RevokeJwt).
    RevokeJwt,
}

impl EventKind {
    /// The one-letter tag stored with the event.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Broadcast => "b",
            Self::Direct => "d",
            Self::Disconnect => "x",
            Self::RevokeJwt => "j",
        }
    }

    /// Reads [`EventKind::tag`].
    pub fn from_tag(tag: &[u8]) -> Option<Self> {
        match tag {
            b"b" => Some(Self::Broadcast),
            b"d" => Some(Self::Direct),
            b"x" => Some(Self::Disconnect),
            b"j" => Some(Self::RevokeJwt),
            _ => None,
        }
    }
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// What to do.
    pub kind: EventKind,
    /// The target user (DIRECT, DISCONNECT).
    pub user_id: Option<String>,
    /// The payload (empty for DISCONNECT, the jti for REVOKE_JWT).
    pub data: String,
}

/// An appended event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its id; `id.seq.ms` is the append time.
    pub id: EventId,
    /// What to do.
    pub kind: EventKind,
    /// The target user (DIRECT, DISCONNECT).
    pub user_id: Option<String>,
    /// The payload.
    pub data: String,
}

impl Event {
    /// Whether History for `user_id` (None: broadcasts only) includes this event.
    pub fn is_for(&self, user_id: Option<&str>) -> bool {
        match self.kind {
            EventKind::Broadcast => true,
            EventKind::Direct | EventKind::Disconnect => {
                user_id.is_some() && self.user_id.as_deref() == user_id
            }
            // Only live connections care: one replaying now had its JWT
            // checked after the revocation.
            EventKind::RevokeJwt => false,
        }
    }
}

/// One read from the stream, with what the caller needs to judge `after`.
#[derive(Debug, Clone, Default)]
pub struct EventChunk {
    /// The stream's current epoch; None when the stream does not exist.
    pub epoch: Option<String>,
    /// When trimming removed events: the oldest retained position (ids
    /// before it may be gone, so resuming from them could miss events).
    pub first_kept: Option<StreamSeq>,
    /// The last id the stream ever generated (0-0 when none): an id after
    /// it was never handed out in this epoch.
    pub last: StreamSeq,
    /// Events strictly after the requested id, oldest first.
    pub events: Vec<Event>,
    /// The read reached the end of the stream (no more events after `events`).
    pub complete: bool,
}

/// The approximate wire size of an event, for byte budgets.
pub fn event_bytes(event: &Event) -> usize {
    event.data.len() + event.user_id.as_ref().map_or(0, String::len) + event.id.epoch.len() + 48
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: EventKind, user_id: Option<&str>) -> Event {
        Event {
            id: "e:1-0".parse().expect("valid id"),
            kind,
            user_id: user_id.map(str::to_owned),
            data: String::new(),
        }
    }

    #[test]
    fn kinds_round_trip_through_their_tags() {
        for kind in [
            EventKind::Broadcast,
            EventKind::Direct,
            EventKind::Disconnect,
            EventKind::RevokeJwt,
        ] {
            assert_eq!(EventKind::from_tag(kind.tag().as_bytes()), Some(kind));
        }
        assert_eq!(EventKind::from_tag(b"?"), None);
    }

    #[test]
    fn history_for_a_user_holds_broadcasts_and_that_users_events_only() {
        let broadcast = event(EventKind::Broadcast, None);
        let direct = event(EventKind::Direct, Some("alice"));
        let disconnect = event(EventKind::Disconnect, Some("alice"));
        assert!(broadcast.is_for(None) && broadcast.is_for(Some("bob")));
        assert!(direct.is_for(Some("alice")) && disconnect.is_for(Some("alice")));
        assert!(!direct.is_for(Some("bob")) && !direct.is_for(None));
        let revoke_jwt = Event {
            data: "jti-1".into(),
            ..event(EventKind::RevokeJwt, None)
        };
        assert!(!revoke_jwt.is_for(Some("alice")) && !revoke_jwt.is_for(None));
    }

    #[test]
    fn new_epochs_are_valid_event_id_epochs() {
        let epoch = new_epoch();
        assert!(format!("{epoch}:1-0").parse::<EventId>().is_ok(), "{epoch}");
    }
}
