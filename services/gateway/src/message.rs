//! The JSON frames of the WebSocket protocol and the event id order.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The largest JWT the gateway passes on to auth (the contract's limit).
pub const MAX_CREDENTIAL_BYTES: usize = 8 * 1024;
/// The largest event id accepted from a client (the contract's limit).
pub const MAX_ID_BYTES: usize = 256;

// === impl EventId ===

/// An event id `"<epoch>:<millis>-<seq>"`. Ids of one epoch are ordered by
/// (millis, seq) numerically; ids of different epochs are not comparable.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EventId {
    epoch: Box<str>,
    millis: u64,
    seq: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed event id")]
pub struct BadEventId;

impl FromStr for EventId {
    type Err = BadEventId;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() > MAX_ID_BYTES {
            return Err(BadEventId);
        }
        let (epoch, rest) = s.rsplit_once(':').ok_or(BadEventId)?;
        let (millis, seq) = rest.split_once('-').ok_or(BadEventId)?;
        let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
        if epoch.is_empty() || !digits(millis) || !digits(seq) {
            return Err(BadEventId);
        }
        Ok(Self {
            epoch: epoch.into(),
            millis: millis.parse().map_err(|_| BadEventId)?,
            seq: seq.parse().map_err(|_| BadEventId)?,
        })
    }
}

impl PartialOrd for EventId {
    /// `None` across epochs: a new epoch means a new stream, not a later id.
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (self.epoch == other.epoch).then(|| (self.millis, self.seq).cmp(&(other.millis, other.seq)))
    }
}

impl EventId {
    /// True when `self` is in `last`'s epoch and not after it: already delivered.
    pub fn is_at_or_before(&self, last: &EventId) -> bool {
        matches!(
            self.partial_cmp(last),
            Some(Ordering::Less | Ordering::Equal)
        )
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}-{}", self.epoch, self.millis, self.seq)
    }
}

// === client frames ===

/// A frame received from a client, as far as the gateway cares.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientFrame {
    /// `{"type":"jwt","token":…}`, optionally `"since":"<event id>"`.
    Jwt {
        token: String,
        since: Option<EventId>,
    },
    /// Anything else (valid JSON or not): echoed after authentication.
    Other,
}

#[derive(Deserialize)]
struct RawFrame {
    #[serde(rename = "type")]
    kind: Option<String>,
    token: Option<String>,
    since: Option<String>,
}

/// Why a first frame was refused (close 4400).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("frame is not a JSON object")]
    NotJson,
    #[error("frame type is not jwt")]
    NotJwt,
    #[error("jwt frame has no token")]
    NoToken,
    #[error("jwt frame token is too long")]
    TokenTooLong,
    #[error("since is not an event id")]
    BadSince,
}

impl ClientFrame {
    /// Parses the first frame: it must be a jwt frame.
    pub fn parse_first(text: &str) -> Result<(String, Option<EventId>), FrameError> {
        let raw: RawFrame = serde_json::from_str(text).map_err(|_| FrameError::NotJson)?;
        if raw.kind.as_deref() != Some("jwt") {
            return Err(FrameError::NotJwt);
        }
        let token = raw
            .token
            .filter(|t| !t.is_empty())
            .ok_or(FrameError::NoToken)?;
        if token.len() > MAX_CREDENTIAL_BYTES {
            return Err(FrameError::TokenTooLong);
        }
        let since = match raw.since {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| FrameError::BadSince)?),
        };
        Ok((token, since))
    }

    /// Classifies a frame after authentication: a jwt frame with a token
    /// refreshes, everything else is echoed.
    pub fn parse_later(text: &str) -> Self {
        // Cheap pre-check: most echoed frames never reach the JSON parser.
        if !text.contains("jwt") {
            return Self::Other;
        }
        match Self::parse_first(text) {
            Ok((token, since)) => Self::Jwt { token, since },
            Err(_) => Self::Other,
        }
    }
}

// === gateway frames ===

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerFrame<'a> {
    AuthOk { user_id: &'a str },
    Echo { data: &'a str },
    Broadcast { id: &'a str, data: &'a str },
    Message { id: &'a str, data: &'a str },
}

fn to_json(frame: &ServerFrame<'_>) -> String {
    serde_json::to_string(frame).expect("a struct of strings always serialises")
}

/// `{"type":"auth_ok","user_id":…}`
pub fn auth_ok(user_id: &str) -> String {
    to_json(&ServerFrame::AuthOk { user_id })
}

/// `{"type":"echo","data":…}`
pub fn echo(data: &str) -> String {
    to_json(&ServerFrame::Echo { data })
}

/// `{"type":"broadcast","id":…,"data":…}`
pub fn broadcast(id: &str, data: &str) -> String {
    to_json(&ServerFrame::Broadcast { id, data })
}

/// `{"type":"message","id":…,"data":…}`
pub fn direct(id: &str, data: &str) -> String {
    to_json(&ServerFrame::Message { id, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> EventId {
        s.parse().expect("valid id")
    }

    #[test]
    fn first_frame_with_token_parses() {
        assert_eq!(
            ClientFrame::parse_first(r#"{"type":"jwt","token":"abc"}"#),
            Ok(("abc".to_owned(), None))
        );
    }

    #[test]
    fn first_frame_with_since_parses_the_id() {
        assert_eq!(
            ClientFrame::parse_first(r#"{"type":"jwt","token":"abc","since":"e1:5-0"}"#),
            Ok(("abc".to_owned(), Some(id("e1:5-0"))))
        );
    }

    #[test]
    fn first_frame_errors_are_told_apart() {
        use FrameError::*;
        let cases = [
            ("not json", NotJson),
            ("[1,2]", NotJson),
            (r#"{"type":"echo","token":"a"}"#, NotJwt),
            (r#"{"token":"a"}"#, NotJwt),
            (r#"{"type":"jwt"}"#, NoToken),
            (r#"{"type":"jwt","token":""}"#, NoToken),
            (r#"{"type":"jwt","token":7}"#, NotJson),
            (r#"{"type":"jwt","token":"a","since":"nope"}"#, BadSince),
        ];
        for (text, want) in cases {
            assert_eq!(ClientFrame::parse_first(text), Err(want), "{text}");
        }
        let long = format!(r#"{{"type":"jwt","token":"{}"}}"#, "a".repeat(9000));
        assert_eq!(ClientFrame::parse_first(&long), Err(TokenTooLong));
    }

    #[test]
    fn later_frames_are_echo_unless_a_jwt_frame_with_token() {
        assert_eq!(ClientFrame::parse_later("hello"), ClientFrame::Other);
        assert_eq!(
            ClientFrame::parse_later(r#"{"type":"jwt"}"#),
            ClientFrame::Other
        );
        assert_eq!(
            ClientFrame::parse_later(r#"{"type":"jwt","token":"t"}"#),
            ClientFrame::Jwt {
                token: "t".into(),
                since: None
            }
        );
    }

    #[test]
    fn event_ids_order_numerically_within_an_epoch() {
        assert!(id("ab:9-0") < id("ab:10-0"));
        assert!(id("ab:10-2") < id("ab:10-10"));
        assert_eq!(
            id("ab:10-2").partial_cmp(&id("ab:10-2")),
            Some(Ordering::Equal)
        );
        assert!(id("ab:10-2").is_at_or_before(&id("ab:10-2")));
        assert!(!id("ab:10-3").is_at_or_before(&id("ab:10-2")));
    }

    #[test]
    fn event_ids_of_other_epochs_are_not_comparable() {
        assert_eq!(id("ab:1-0").partial_cmp(&id("cd:9-0")), None);
        assert!(!id("ab:1-0").is_at_or_before(&id("cd:9-0")));
    }

    #[test]
    fn malformed_event_ids_are_rejected() {
        for bad in [
            "", "ab", "ab:1", ":1-0", "ab:-0", "ab:1-", "ab:x-0", "ab:1-0x",
        ] {
            assert_eq!(bad.parse::<EventId>(), Err(BadEventId), "{bad}");
        }
        assert_eq!(id("ab:12-3").to_string(), "ab:12-3");
    }

    #[test]
    fn outgoing_frames_have_the_contract_shapes() {
        assert_eq!(auth_ok("alice"), r#"{"type":"auth_ok","user_id":"alice"}"#);
        assert_eq!(echo("hi \"x\""), r#"{"type":"echo","data":"hi \"x\""}"#);
        assert_eq!(
            broadcast("e:1-0", "d"),
            r#"{"type":"broadcast","id":"e:1-0","data":"d"}"#
        );
        assert_eq!(
            direct("e:1-0", "d"),
            r#"{"type":"message","id":"e:1-0","data":"d"}"#
        );
    }
}
