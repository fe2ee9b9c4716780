//! The events of auth's stream as the gateway sees them: an ordered id and
//! what the event asks the gateway to do.

pub use wsauth_shared::event_id::EventId;

/// What an event asks the gateway to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    /// To every authenticated connection.
    Broadcast { data: String },
    /// To every connection of one user.
    Direct { user_id: String, data: String },
    /// Close every connection of one user with 4401 (RevokeUser).
    Disconnect { user_id: String },
    /// Close every connection authenticated with this JWT `jti` with 4401 (RevokeJwt).
    RevokeJwt { jti: String },
}

/// One event of auth's stream.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: EventId,
    /// The id as auth wrote it, sent to clients unchanged.
    pub id_text: String,
    pub action: EventAction,
}

/// Where a read of auth's stream starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start<'a> {
    /// Strictly after this id (refused by auth when it is gone: OUT_OF_RANGE).
    After(&'a EventId),
    /// At the oldest event auth still retains in the current stream epoch:
    /// all a reader whose position is gone can still get.
    Oldest,
}
