//! The errors of the auth domain and of its store, and their one mapping to
//! gRPC status codes. A leaf: every other module may return these.

use tonic::Status;

/// Why a request failed, in the contract's terms.
///
/// Messages of the client-facing variants are safe to send; the causes held by
/// [`AuthError::Store`] are logged and replaced by a generic message.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// A field is empty or over its limit.
    #[error("{0}")]
    InvalidArgument(&'static str),
    /// A missing or wrong caller key, or a bad, expired or revoked credential.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// The requested event id is no longer retained or belongs to another stream epoch.
    #[error("{0}")]
    OutOfRange(String),
    /// A subscriber fell too far behind the live stream.
    #[error("subscriber too slow: resume with after_id set to the last event id received")]
    Lagged,
    /// A local failure that is not the caller's fault (e.g. no randomness).
    #[error("{0}")]
    Internal(&'static str),
    /// The store failed (unreachable, timed out, or returned something unexpected).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A store failure. Never carries a token.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Unreachable, timed out or refused: the caller may retry later.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The store answered with data this version cannot read.
    #[error("store returned unexpected data: {0}")]
    Corrupt(String),
    /// The store refused the command (wrong type, script error, missing
    /// permission, unsupported version): retrying will not help, an operator must look.
    #[error("store refused the command: {0}")]
    Failed(String),
    /// The Redis settings are contradictory or unreadable (found at start).
    #[error("{0}")]
    Config(String),
}
impl From<AuthError> for Status {
    fn from(error: AuthError) -> Self {
        match error {
            AuthError::InvalidArgument(message) => Status::invalid_argument(message),
            AuthError::Unauthenticated(message) => Status::unauthenticated(message),
            AuthError::OutOfRange(message) => Status::out_of_range(message),
            AuthError::Lagged => Status::resource_exhausted(AuthError::Lagged.to_string()),
            AuthError::Internal(cause) => {
                tracing::error!(cause, "internal error");
                Status::internal("internal error")
            }
            AuthError::Store(StoreError::Unavailable(cause)) => {
                // Per request, so debug: during an outage this fires thousands of
                // times a second; the stream reader logs the outage itself.
                tracing::debug!(%cause, "store unavailable");
                Status::unavailable("the store (Redis) is unavailable")
            }
            AuthError::Store(StoreError::Failed(cause)) => {
                tracing::error!(%cause, "store refused the command");
                Status::internal("internal error")
            }
            AuthError::Store(StoreError::Config(cause)) => {
                tracing::error!(%cause, "store misconfigured");
                Status::internal("internal error")
            }
            AuthError::Store(StoreError::Corrupt(cause)) => {
                tracing::error!(%cause, "store returned unexpected data");
                Status::internal("internal error")
            }
        }
    }
}
