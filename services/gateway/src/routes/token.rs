//! `GET /token/ws`: a JWT in, a single-use ws token out.

use std::time::SystemTime;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret as _;
use serde::Serialize;
use wsauth_shared::bearer;

use crate::error::HttpError;
use crate::state::AppState;

#[derive(Serialize)]
struct TokenBody<'a> {
    token: &'a str,
    expires_in: u64,
}

/// The credential of the `Authorization: Bearer <credential>` header; `None`
/// is a 401 ([`HttpError::MissingBearer`]). `pub` for the fuzz target
/// `http_headers` (its own crate), which runs it on arbitrary headers.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?;
    std::str::from_utf8(bearer::credential(value.as_bytes())?).ok()
}

/// Seconds from now until `expires_at`, rounded to the nearest second.
fn seconds_until(expires_at: SystemTime) -> u64 {
    let millis = expires_at
        .duration_since(SystemTime::now())
        .map_or(0, |d| d.as_millis());
    u64::try_from(millis.saturating_add(500) / 1000).unwrap_or(u64::MAX)
}

pub async fn issue(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let jwt = bearer(&headers).ok_or(HttpError::MissingBearer)?;
    let grant = state.auth.issue_ws_token(jwt).await?;
    let body = TokenBody {
        token: grant.token.expose_secret(),
        expires_in: seconds_until(grant.expires_at),
    };
    // The token is a credential: no cache may keep it.
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bearer_reads_the_authorization_header() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        headers.insert(
            header::AUTHORIZATION,
            "Bearer a.b.c".parse().expect("header"),
        );
        assert_eq!(bearer(&headers), Some("a.b.c"));
    }

    #[test]
    fn expires_in_rounds_to_whole_seconds() {
        let in_60 = SystemTime::now() + Duration::from_millis(59_800);
        assert_eq!(seconds_until(in_60), 60);
        assert_eq!(seconds_until(SystemTime::UNIX_EPOCH), 0);
    }
}

#[cfg(test)]
#[path = "token_props.rs"]
mod props;
