//! The JSON frames of the WebSocket protocol.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub use wsauth_shared::event_id::EventId;

// === client frames ===

/// A frame received from a client, as far as the gateway cares. The JWT is
/// a credential: Debug redacts it.
#[derive(Debug)]
pub enum ClientFrame {
    /// `{"type":"jwt","token":…}` after the first frame: a refresh.
    Jwt { token: SecretString },
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
        let raw = RawFrame::parse(text).ok_or(FrameError::NotJson)?;
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
        // A `\u` escape can spell "jwt" too (`"\u006awt"`), which JSON reads
        // as a jwt frame all the same (found by the fuzz target first_frame).
        if !text.contains("jwt") && !text.contains("\\u") {
            return Self::Other;
        }
        let Some(raw) = RawFrame::parse(text) else {
            return Self::Other;
        };
        match jwt_token(&raw) {
            Ok(token) => Self::Jwt { token },
            Err(_) => Self::Other,
        }
    }
}

impl RawFrame {
    /// A JSON object's fields. Only an object: serde would also read the
    /// struct from an array (`["jwt","<token>"]`), which is no jwt frame.
    fn parse(text: &str) -> Option<Self> {
        let json_whitespace = [' ', '\t', '\n', '\r'];
        if !text.trim_start_matches(json_whitespace).starts_with('{') {
            return None;
        }
        serde_json::from_str(text).ok()
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
    AuthOk {
        user_id: &'a str,
        /// Only when true: a `since` that could not be honoured in full.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        gap: bool,
    },
    Gap,
    Echo {
        data: &'a str,
    },
    Broadcast {
        id: &'a str,
        data: &'a str,
    },
    Message {
        id: &'a str,
        data: &'a str,
    },
}

fn to_json(frame: &ServerFrame<'_>) -> String {
    serde_json::to_string(frame).expect("a struct of strings always serialises")
}

/// `{"type":"auth_ok","user_id":…}`, with `"gap":true` when the client's
/// `since` could not be honoured in full (it may have missed events).
pub fn auth_ok(user_id: &str, gap: bool) -> String {
    to_json(&ServerFrame::AuthOk { user_id, gap })
}

/// `{"type":"gap"}`: events may have been missed since the previous frame.
pub fn gap() -> String {
    to_json(&ServerFrame::Gap)
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
            ClientFrame::Jwt { token } => Some(token.expose_secret().to_owned()),
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
            // auth refuses epochs other than letters and digits: so does the gateway (4400, not 1011).
            (r#"{"type":"jwt","token":"a","since":"a-b:1-0"}"#, BadSince),
        ];
        for (text, want) in cases {
            assert_eq!(first(text), Err(want), "{text}");
        }
    }

    #[test]
    fn an_oversized_jwt_is_a_jwt_to_refuse_not_a_bad_frame() {
        let token = "a".repeat(wsauth_shared::limits::MAX_CREDENTIAL_BYTES + 1);
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
    fn a_jwt_frame_spelled_with_escapes_is_a_refresh() {
        assert_eq!(
            later(r#"{"type":"\u006awt","token":"t"}"#),
            Some("t".into())
        );
        assert_eq!(later(r#"{"type":"\u006a","token":"t"}"#), None);
    }

    #[test]
    fn outgoing_frames_have_the_contract_shapes() {
        assert_eq!(
            auth_ok("alice", false),
            r#"{"type":"auth_ok","user_id":"alice"}"#
        );
        assert_eq!(
            auth_ok("alice", true),
            r#"{"type":"auth_ok","user_id":"alice","gap":true}"#
        );
        assert_eq!(gap(), r#"{"type":"gap"}"#);
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

#[cfg(test)]
#[path = "message_props.rs"]
mod props;
