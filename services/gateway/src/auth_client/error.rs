//! What a failed call to auth means for the gateway: one classification, and
//! the one mapping from it to a WebSocket close code.

use tonic::{Code, Status};

use crate::close::CloseCode;

/// Why a call to auth did not give an answer the gateway can use.
#[derive(Debug, thiserror::Error)]
pub enum AuthCallError {
    /// Auth looked at the credential and refused it.
    #[error("auth refused the credential ({0:?})")]
    Rejected(Code),
    /// Auth could not be reached or did not answer within the deadline.
    #[error("auth unavailable ({0})")]
    Unavailable(String),
    /// The `after_id` is older than what auth retains, of another epoch, or
    /// ahead of the stream. Only auth's own OUT_OF_RANGE: the transport's
    /// size limit is `TooLarge`.
    #[error("event id out of range")]
    OutOfRange,
    /// Anything else auth answered; the gateway treats it like an outage.
    #[error("auth call failed ({0:?})")]
    Failed(Code),
    /// Auth answered with something the gateway cannot read.
    #[error("malformed answer from auth: {0}")]
    Malformed(&'static str),
    /// The answer was over the client's decoding limit (the transport's
    /// OUT_OF_RANGE, not auth's): ask for less.
    #[error("answer from auth over the size limit")]
    TooLarge,
}

/// What the gateway does about an [`AuthCallError`]: the one classification
/// every caller (HTTP handlers, sessions, the subscriber) goes by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The credential is bad: 401 / close 4401.
    Rejected,
    /// The resume point is gone: continue live, log the possible gap.
    OutOfRange,
    /// Auth did not give a usable answer: 503 / close 1011, retry later.
    Unavailable,
}

impl AuthCallError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Rejected(_) => ErrorKind::Rejected,
            Self::OutOfRange => ErrorKind::OutOfRange,
            Self::Unavailable(_) | Self::Failed(_) | Self::Malformed(_) | Self::TooLarge => {
                ErrorKind::Unavailable
            }
        }
    }

    /// The close code for a socket whose JWT check failed this way, for phase
    /// 2 and refreshes alike: the only such mapping. OUT_OF_RANGE never
    /// answers a JWT check, so it counts as auth misbehaving.
    pub fn close_code(&self) -> CloseCode {
        match self.kind() {
            ErrorKind::Rejected => CloseCode::Unauthorized,
            ErrorKind::OutOfRange | ErrorKind::Unavailable => CloseCode::AuthUnavailable,
        }
    }
}

/// tonic reports a message over its decoding limit as OUT_OF_RANGE too; its
/// text is fixed (tonic's codec/decode.rs), and never one auth writes.
fn is_transport_size_limit(status: &Status) -> bool {
    status.message().contains("message length too large")
}

impl From<Status> for AuthCallError {
    fn from(status: Status) -> Self {
        match status.code() {
            Code::Unauthenticated
            | Code::InvalidArgument
            | Code::PermissionDenied
            | Code::NotFound => Self::Rejected(status.code()),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                // The message of a transport error says which endpoint failed and
                // how; it never holds a credential.
                Self::Unavailable(format!("{:?}: {}", status.code(), status.message()))
            }
            Code::OutOfRange if is_transport_size_limit(&status) => Self::TooLarge,
            Code::OutOfRange => Self::OutOfRange,
            code => Self::Failed(code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_what_the_gateway_does() {
        let map = |code| AuthCallError::from(Status::new(code, "x"));
        assert!(matches!(
            map(Code::Unauthenticated),
            AuthCallError::Rejected(_)
        ));
        assert!(matches!(
            map(Code::InvalidArgument),
            AuthCallError::Rejected(_)
        ));
        assert!(matches!(
            map(Code::Unavailable),
            AuthCallError::Unavailable(_)
        ));
        assert!(matches!(
            map(Code::DeadlineExceeded),
            AuthCallError::Unavailable(_)
        ));
        assert!(matches!(map(Code::OutOfRange), AuthCallError::OutOfRange));
        assert!(matches!(map(Code::Internal), AuthCallError::Failed(_)));
    }

    #[test]
    fn the_transports_size_limit_is_not_a_retention_miss() {
        // tonic's own text for an answer over max_decoding_message_size.
        let size = Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        );
        let error = AuthCallError::from(size);
        assert!(matches!(error, AuthCallError::TooLarge), "{error:?}");
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        // auth's own retention, epoch and ahead-of-stream answers.
        for message in [
            "event id ab:1-0 is older than the retained events; resubscribe without after_id",
            "event id ab:1-0 is from another stream epoch (current epoch cd): events may have been lost",
            "event id ab:9-0 is ahead of the stream (the stream was rolled back or the id is from the future)",
        ] {
            let error = AuthCallError::from(Status::out_of_range(message));
            assert!(matches!(error, AuthCallError::OutOfRange), "{message}");
            assert_eq!(error.kind(), ErrorKind::OutOfRange);
        }
    }

    #[test]
    fn one_classification_gives_the_close_code() {
        use CloseCode::*;
        let cases = [
            (AuthCallError::Rejected(Code::Unauthenticated), Unauthorized),
            (AuthCallError::Rejected(Code::InvalidArgument), Unauthorized),
            (AuthCallError::Unavailable("down".into()), AuthUnavailable),
            (AuthCallError::Failed(Code::Internal), AuthUnavailable),
            (AuthCallError::Malformed("x"), AuthUnavailable),
            (AuthCallError::TooLarge, AuthUnavailable),
            (AuthCallError::OutOfRange, AuthUnavailable),
        ];
        for (error, code) in cases {
            assert_eq!(error.close_code(), code, "{error:?}");
        }
    }
}
