//! The gateway's HTTP errors, mapped to responses in one place.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::auth_client::AuthCallError;

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
}

impl From<AuthCallError> for HttpError {
    fn from(error: AuthCallError) -> Self {
        match error {
            AuthCallError::Rejected(_) => Self::Unauthorized,
            other => {
                tracing::warn!(error = %other, "auth call failed");
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
            Self::AuthUnavailable => StatusCode::SERVICE_UNAVAILABLE,
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
