//! The JSON frames of the WebSocket protocol and the event id order.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

/// The largest JWT or ws token the gateway passes on to auth (the contract's limit).
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

/// A frame received from a client, as far as the gateway cares. The JWT is
/// a credential: Debug redacts it.
#[derive(Debug)]
pub enum ClientFrame {
    /// `{"type":"jwt","token":…}`, optionally `"since":"<event id>"`.
    Jwt {
        token: SecretString,
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
    #[error("since is not an event id")]
    BadSince,
}

impl ClientFrame {
    /// Parses the first frame: it must be a jwt frame. A token over the
    /// contract's 8 KiB is not refused here: it is a bad JWT (4401, as
    /// `/token/ws` answers 401), refused by [`AuthClient::verify_jwt`]
    /// without calling auth.
    ///
    /// [`AuthClient::verify_jwt`]: crate::auth_client::AuthClient::verify_jwt
    pub fn parse_first(text: &str) -> Result<(SecretString, Option<EventId>), FrameError> {
        let raw: RawFrame = serde_json::from_str(text).map_err(|_| FrameError::NotJson)?;
        let token = jwt_token(&raw)?;
        let since = match raw.since {
            None => None,
            Some(s) => Some(s.parse().map_err(|_| FrameError::BadSince)?),
        };
        Ok((token, since))
    }

    /// Classifies a frame after authentication: a jwt frame with a token
    /// refreshes (whatever its size: an oversized one is a bad JWT, 4401),
    /// everything else is echoed. `since` only means something in the first
    /// frame and is ignored here.
    pub fn parse_later(text: &str) -> Self {
        // Cheap pre-check: most echoed frames never reach the JSON parser.
        if !text.contains("jwt") {
            return Self::Other;
        }
        let Ok(raw) = serde_json::from_str::<RawFrame>(text) else {
            return Self::Other;
        };
        match jwt_token(&raw) {
            Ok(token) => Self::Jwt { token, since: None },
            Err(_) => Self::Other,
        }
    }
}

/// The token of a jwt frame.
fn jwt_token(raw: &RawFrame) -> Result<SecretString, FrameError> {
    if raw.kind.as_deref() != Some("jwt") {
        return Err(FrameError::NotJwt);
    }
    match raw.token.as_deref() {
        Some(token) if !token.is_empty() => Ok(SecretString::from(token)),
        _ => Err(FrameError::NoToken),
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
    use secrecy::ExposeSecret as _;

    fn id(s: &str) -> EventId {
        s.parse().expect("valid id")
    }

    /// The parsed first frame with the token exposed, for comparison.
    fn first(text: &str) -> Result<(String, Option<EventId>), FrameError> {
        ClientFrame::parse_first(text).map(|(t, s)| (t.expose_secret().to_owned(), s))
    }

    /// A later frame: `Some(token)` for a refresh, `None` for an echo.
    fn later(text: &str) -> Option<String> {
        match ClientFrame::parse_later(text) {
            ClientFrame::Jwt { token, since } => {
                assert_eq!(since, None, "since is ignored after the first frame");
                Some(token.expose_secret().to_owned())
            }
            ClientFrame::Other => None,
        }
    }

    #[test]
    fn first_frame_with_token_parses() {
        assert_eq!(
            first(r#"{"type":"jwt","token":"abc"}"#),
            Ok(("abc".to_owned(), None))
        );
    }

    #[test]
    fn first_frame_with_since_parses_the_id() {
        assert_eq!(
            first(r#"{"type":"jwt","token":"abc","since":"e1:5-0"}"#),
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
            assert_eq!(first(text), Err(want), "{text}");
        }
    }

    #[test]
    fn an_oversized_jwt_is_a_jwt_to_refuse_not_a_bad_frame() {
        let token = "a".repeat(MAX_CREDENTIAL_BYTES + 1);
        let frame = format!(r#"{{"type":"jwt","token":"{token}"}}"#);
        assert_eq!(first(&frame), Ok((token.clone(), None)));
        assert_eq!(later(&frame), Some(token));
    }

    #[test]
    fn the_jwt_is_not_in_debug_output() {
        let frame = ClientFrame::parse_later(r#"{"type":"jwt","token":"s3cret.jwt.value"}"#);
        assert!(!format!("{frame:?}").contains("s3cret"), "{frame:?}");
    }

    #[test]
    fn later_frames_are_echo_unless_a_jwt_frame_with_token() {
        assert_eq!(later("hello"), None);
        assert_eq!(later(r#"{"type":"jwt"}"#), None);
        assert_eq!(later(r#"{"type":"jwt","token":""}"#), None);
        assert_eq!(later(r#"{"type":"jwt","token":"t"}"#), Some("t".into()));
        // A refresh with a malformed since is still a refresh: since is ignored.
        assert_eq!(
            later(r#"{"type":"jwt","token":"t","since":"nope"}"#),
            Some("t".into())
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
