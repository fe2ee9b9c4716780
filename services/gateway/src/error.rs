//! The gateway's HTTP errors, mapped to responses in one place.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::auth_client::{AuthCallError, ErrorKind};
use crate::metrics::Handshake;

/// Every way an HTTP request to the gateway fails. The client sees the status
/// and a fixed message; the cause is logged where the error is made.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("missing or malformed bearer token")]
    MissingBearer,
    #[error("missing ws token")]
    MissingToken,
    #[error("credential refused")]
    Unauthorized,
    #[error("origin not allowed")]
    ForbiddenOrigin,
    #[error("auth unavailable")]
    AuthUnavailable,
    #[error("gateway shutting down")]
    ShuttingDown,
}

impl From<AuthCallError> for HttpError {
    fn from(error: AuthCallError) -> Self {
        match error.kind() {
            ErrorKind::Rejected => Self::Unauthorized,
            ErrorKind::OutOfRange | ErrorKind::Unavailable => {
                tracing::warn!(%error, "auth call failed");
                Self::AuthUnavailable
            }
        }
    }
}

impl HttpError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingBearer | Self::MissingToken | Self::Unauthorized => {
                StatusCode::UNAUTHORIZED
            }
            Self::ForbiddenOrigin => StatusCode::FORBIDDEN,
            Self::AuthUnavailable | Self::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// How a refused WebSocket handshake is counted.
    pub fn handshake(&self) -> Handshake {
        match self {
            Self::MissingBearer | Self::MissingToken | Self::Unauthorized => {
                Handshake::Unauthorized
            }
            Self::ForbiddenOrigin => Handshake::Forbidden,
            Self::AuthUnavailable => Handshake::Unavailable,
            Self::ShuttingDown => Handshake::ShuttingDown,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        (self.status(), Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn statuses_match_the_contract() {
        assert_eq!(HttpError::MissingBearer.status(), 401);
        assert_eq!(HttpError::Unauthorized.status(), 401);
        assert_eq!(HttpError::ForbiddenOrigin.status(), 403);
        assert_eq!(HttpError::AuthUnavailable.status(), 503);
        assert_eq!(HttpError::ShuttingDown.status(), 503);
        assert_eq!(HttpError::ShuttingDown.handshake(), Handshake::ShuttingDown);
        assert_eq!(HttpError::MissingToken.handshake(), Handshake::Unauthorized);
        assert!(matches!(
            HttpError::from(AuthCallError::TooLarge),
            HttpError::AuthUnavailable
        ));
        assert!(matches!(
            HttpError::from(AuthCallError::Failed(Code::Internal)),
            HttpError::AuthUnavailable
        ));
        assert!(matches!(
            HttpError::from(AuthCallError::Rejected(Code::Unauthenticated)),
            HttpError::Unauthorized
        ));
        assert!(matches!(
            HttpError::from(AuthCallError::Unavailable("down".into())),
            HttpError::AuthUnavailable
        ));
    }
}
