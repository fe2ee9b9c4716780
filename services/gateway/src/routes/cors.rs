//! CORS for `/token/ws`: a page on another origin (a React app, say) may
//! trade its Bearer JWT for a ws token when `ALLOWED_ORIGINS` allows that
//! origin (any origin when unset), as `/ws` does.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::HttpError;
use crate::state::AppState;

/// How long a browser may cache a preflight answer, in seconds.
const PREFLIGHT_MAX_AGE_S: &str = "600";

/// The request's `Origin` when `ALLOWED_ORIGINS` lets that page in.
fn allowed_origin<'a>(state: &AppState, headers: &'a HeaderMap) -> Option<&'a HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    state
        .origin_allowed(Some(origin.to_str().ok()?))
        .then_some(origin)
}

/// `OPTIONS /token/ws`: lets an allowed page send `GET` with `Authorization`.
pub async fn preflight(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if headers.get(header::ORIGIN).is_none() {
        // Not a CORS preflight: say what the resource supports.
        return (
            StatusCode::NO_CONTENT,
            [(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            )],
        )
            .into_response();
    }
    if allowed_origin(&state, &headers).is_none() {
        return HttpError::ForbiddenOrigin.into_response();
    }
    (
        StatusCode::NO_CONTENT,
        [
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, OPTIONS"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static("authorization"),
            ),
            (
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(PREFLIGHT_MAX_AGE_S),
            ),
        ],
    )
        .into_response()
}

/// On every `/token/ws` answer (errors included, so a page can read them):
/// `Access-Control-Allow-Origin` = the page's origin when allowed, and
/// `Vary: Origin`, since the answer depends on it.
pub async fn allow_origin(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let origin = allowed_origin(&state, request.headers()).cloned();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("Origin"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        // A 429's Retry-After is not a CORS-safelisted header: name it.
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("Retry-After"),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Method, Request};
    use tower::ServiceExt as _;

    use super::*;
    use crate::auth_client::AuthClient;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use crate::routes::app;

    /// A gateway whose auth has nothing listening (`/token/ws` answers 503),
    /// allowing `origins` (empty: any).
    fn state(origins: &[&str]) -> AppState {
        let mut cfg = Config::with_auth_url("http://127.0.0.1:9");
        cfg.allowed_origins = origins.iter().map(|o| o.to_string()).collect();
        let metrics = Metrics::default();
        let auth = AuthClient::new(
            &cfg.auth_url,
            None,
            Duration::from_millis(200),
            metrics.clone(),
        )
        .expect("valid url");
        AppState::new(&cfg, auth, metrics)
    }

    async fn send(state: AppState, method: Method, headers: &[(&str, &str)]) -> Response {
        let mut request = Request::builder().method(method).uri("/token/ws");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        app(state)
            .oneshot(request.body(Body::empty()).expect("valid request"))
            .await
            .expect("infallible")
    }

    fn header(response: &Response, name: header::HeaderName) -> Option<&str> {
        response.headers().get(name).and_then(|v| v.to_str().ok())
    }

    const PAGE: &str = "http://app.example:3000";

    fn preflight_headers(origin: &str) -> [(&str, &str); 3] {
        [
            ("origin", origin),
            ("access-control-request-method", "GET"),
            ("access-control-request-headers", "authorization"),
        ]
    }

    #[tokio::test]
    async fn a_preflight_from_any_origin_is_allowed_when_origins_are_unset() {
        let response = send(state(&[]), Method::OPTIONS, &preflight_headers(PAGE)).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            header(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some(PAGE)
        );
        assert_eq!(header(&response, header::VARY), Some("Origin"));
        let allowed =
            header(&response, header::ACCESS_CONTROL_ALLOW_HEADERS).expect("allow-headers");
        assert!(
            allowed
                .split(',')
                .any(|h| h.trim().eq_ignore_ascii_case("authorization"))
        );
        let methods =
            header(&response, header::ACCESS_CONTROL_ALLOW_METHODS).expect("allow-methods");
        assert!(methods.contains("GET"), "{methods}");
    }

    #[tokio::test]
    async fn a_preflight_follows_allowed_origins() {
        let listed = state(&[PAGE, "http://other.example"]);
        let response = send(listed.clone(), Method::OPTIONS, &preflight_headers(PAGE)).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            header(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some(PAGE)
        );

        let response = send(
            listed,
            Method::OPTIONS,
            &preflight_headers("http://evil.example"),
        )
        .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(header(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
        assert_eq!(
            header(&response, header::ACCESS_CONTROL_ALLOW_HEADERS),
            None
        );
        assert_eq!(header(&response, header::VARY), Some("Origin"));
    }

    #[tokio::test]
    async fn token_answers_carry_the_allowed_origin_errors_included() {
        let listed = state(&[PAGE]);
        let jwt = [("origin", PAGE), ("authorization", "Bearer a.b.c")];
        let response = send(listed.clone(), Method::GET, &jwt).await;
        assert_eq!(
            response.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "auth is down"
        );
        assert_eq!(
            header(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some(PAGE)
        );
        assert_eq!(header(&response, header::VARY), Some("Origin"));

        let response = send(listed.clone(), Method::GET, &[("origin", PAGE)]).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(
            header(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN),
            Some(PAGE)
        );

        let foreign = [
            ("origin", "http://evil.example"),
            ("authorization", "Bearer a.b.c"),
        ];
        let response = send(listed.clone(), Method::GET, &foreign).await;
        assert_eq!(header(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
        assert_eq!(header(&response, header::VARY), Some("Origin"));

        let response = send(listed, Method::GET, &[]).await;
        assert_eq!(header(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
    }

    #[tokio::test]
    async fn an_options_without_origin_is_not_a_preflight() {
        let response = send(state(&[PAGE]), Method::OPTIONS, &[]).await;
        assert_eq!(response.status(), StatusCode::NO_CONTENT);
        assert_eq!(header(&response, header::ACCESS_CONTROL_ALLOW_ORIGIN), None);
        assert!(header(&response, header::ALLOW).is_some_and(|a| a.contains("GET")));
    }
}
