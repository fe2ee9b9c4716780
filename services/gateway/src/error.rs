//! The gateway's HTTP refusals: one enum, one status mapping, one
//! `IntoResponse`; [`crate::routes`] counts every refusal from the response.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::admission::Full;
use crate::auth_client::{AuthCallError, ErrorKind};
use crate::metrics::Refusal;

/// Every way an HTTP request to the gateway is refused. The client sees the
/// status and a fixed message; the cause is logged where the error is made.
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
    /// Not a valid WebSocket upgrade request (RFC 6455 §4.2.1); says which part.
    #[error("{0}")]
    BadUpgrade(&'static str),
    /// A WebSocket version other than 13 (RFC 6455 §4.2.2).
    #[error("`Sec-WebSocket-Version` header did not include '13'")]
    UnsupportedVersion,
    /// An upgrade request on a connection that cannot be upgraded.
    #[error("WebSocket request couldn't be upgraded since no upgrade state was present")]
    NotUpgradable,
    #[error("not found")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed,
    /// `MAX_CONNECTIONS` or `MAX_PENDING_AUTH` is reached: the client may
    /// try another replica with the same token, which was not looked at.
    #[error("gateway full")]
    Full(Full),
    /// Over `PER_IP_RATE`; the client may retry after this many seconds.
    #[error("rate limited")]
    RateLimited { retry_after_s: u64 },
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
    /// The contract's status for each refusal.
    pub fn status(&self) -> StatusCode {
        match self.refusal() {
            Refusal::Unauthorized => StatusCode::UNAUTHORIZED,
            Refusal::ForbiddenOrigin => StatusCode::FORBIDDEN,
            Refusal::AuthUnavailable
            | Refusal::ShuttingDown
            | Refusal::GatewayFull
            | Refusal::PendingAuthFull => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Refusal::BadRequest => StatusCode::BAD_REQUEST,
            Refusal::UpgradeRequired => StatusCode::UPGRADE_REQUIRED,
            Refusal::NotFound => StatusCode::NOT_FOUND,
            Refusal::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// How the refusal is counted.
    pub fn refusal(&self) -> Refusal {
        match self {
            Self::MissingBearer | Self::MissingToken | Self::Unauthorized => Refusal::Unauthorized,
            Self::ForbiddenOrigin => Refusal::ForbiddenOrigin,
            Self::AuthUnavailable => Refusal::AuthUnavailable,
            Self::ShuttingDown => Refusal::ShuttingDown,
            Self::BadUpgrade(_) => Refusal::BadRequest,
            Self::UnsupportedVersion | Self::NotUpgradable => Refusal::UpgradeRequired,
            Self::NotFound => Refusal::NotFound,
            Self::MethodNotAllowed => Refusal::MethodNotAllowed,
            Self::Full(Full::Connections) => Refusal::GatewayFull,
            Self::Full(Full::PendingAuth) => Refusal::PendingAuthFull,
            Self::RateLimited { .. } => Refusal::RateLimited,
        }
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "error": self.to_string() });
        let mut response = (self.status(), Json(body)).into_response();
        match self {
            // Names the version we speak, so the client can retry with it.
            Self::UnsupportedVersion => {
                response.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    HeaderValue::from_static("13"),
                );
            }
            Self::RateLimited { retry_after_s } => {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(retry_after_s));
            }
            _ => {}
        }
        // Read back by the counting layer in `routes`.
        response.extensions_mut().insert(self.refusal());
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn statuses_match_the_contract() {
        for (error, status) in [
            (HttpError::MissingBearer, 401),
            (HttpError::MissingToken, 401),
            (HttpError::Unauthorized, 401),
            (HttpError::ForbiddenOrigin, 403),
            (HttpError::AuthUnavailable, 503),
            (HttpError::ShuttingDown, 503),
            (HttpError::BadUpgrade("no key"), 400),
            (HttpError::UnsupportedVersion, 426),
            (HttpError::NotUpgradable, 426),
            (HttpError::NotFound, 404),
            (HttpError::MethodNotAllowed, 405),
            (HttpError::Full(Full::Connections), 503),
            (HttpError::Full(Full::PendingAuth), 503),
            (HttpError::RateLimited { retry_after_s: 1 }, 429),
        ] {
            assert_eq!(error.status(), status, "{error:?}");
        }
        assert_eq!(HttpError::MissingToken.refusal(), Refusal::Unauthorized);
    }

    #[test]
    fn auth_errors_map_to_401_or_503() {
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

    #[test]
    fn the_response_is_json_and_carries_its_refusal() {
        let response = HttpError::UnsupportedVersion.into_response();
        assert_eq!(response.status(), StatusCode::UPGRADE_REQUIRED);
        assert_eq!(response.headers()[header::SEC_WEBSOCKET_VERSION], "13");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(
            response.extensions().get::<Refusal>(),
            Some(&Refusal::UpgradeRequired)
        );
    }
}
