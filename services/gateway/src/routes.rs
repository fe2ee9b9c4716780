//! The HTTP surface: [`app`] builds the router that `run` serves and tests
//! call with `oneshot`.

mod assets;
mod cors;
mod health;
mod refusals;
mod token;
mod ws;

use axum::Router;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::{self, Next};
use axum::response::{Html, Response};
use axum::routing::get;
use tracing::Instrument as _;
use wsauth_shared::trace_context;

use crate::error::HttpError;
use crate::state::AppState;

// The header checks, for the fuzz targets: what `/token/ws` and `/ws` answer
// from the headers alone.
pub use token::bearer;
pub use ws::accept_key;

/// The demo page: a browser client walking the whole flow.
const INDEX_HTML: &str = include_str!("../web/index.html");

/// Every route of the gateway. No request-tracing layer on purpose: the
/// `/ws` query string holds a credential, and URIs must never reach logs.
///
/// A middleware that would do nothing is left out rather than run as a
/// no-op: each one costs a state clone, a service clone and a boxed future
/// per request (callgrind, issue 8). So the per-IP limit is there only with
/// `PER_IP_RATE`, and the trace layer only when spans are exported, which
/// `telemetry::init_service` settles before the app is built.
pub fn app(state: AppState) -> Router {
    let mut token_ws = get(token::issue).options(cors::preflight);
    let mut ws = get(ws::upgrade);
    if state.limits.ip_rate.is_some() {
        token_ws = token_ws.layer(middleware::from_fn_with_state(state.clone(), limit_per_ip));
        ws = ws.layer(middleware::from_fn_with_state(state.clone(), limit_per_ip));
    }
    // Outside the per-IP limit, so a 429 carries the CORS headers a page needs to read it.
    token_ws = token_ws.layer(middleware::from_fn_with_state(
        state.clone(),
        cors::allow_origin,
    ));
    if trace_context::is_exporting() {
        token_ws = token_ws.layer(middleware::from_fn(|request, next| {
            continue_trace("/token/ws", request, next)
        }));
        ws = ws.layer(middleware::from_fn(|request, next| {
            continue_trace("/ws", request, next)
        }));
    }
    Router::new()
        .route("/", get(|| async { Html(INDEX_HTML) }))
        .route("/client.js", get(assets::client_js))
        .route("/react.js", get(assets::react_js))
        .route("/token/ws", token_ws)
        .route("/ws", ws)
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { HttpError::NotFound })
        .method_not_allowed_fallback(|| async { HttpError::MethodNotAllowed })
        .layer(refusals::CountRefusalsLayer::new(state.metrics.clone()))
        .with_state(state)
}

/// The handshake's requests continue the client's W3C `traceparent` (or
/// start a trace); the auth calls they make carry it on, and a session
/// spawned by `/ws` is a child of its upgrade. Named by the route, never the
/// URI: `/ws`'s query holds a credential. Installed only while exporting.
async fn continue_trace(route: &'static str, request: Request, next: Next) -> Response {
    let name = format!("{} {route}", request.method());
    let span = trace_context::server_span(&name, request.headers());
    next.run(request).instrument(span).await
}

/// `PER_IP_RATE` on the handshake routes, first of all their checks: a
/// client over its rate costs nothing further. The client is the socket's
/// peer, or the address a trusted proxy forwarded.
async fn limit_per_ip(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, HttpError> {
    if let Some(limiter) = &state.limits.ip_rate
        && let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>()
    {
        let client = state
            .limits
            .trusted_proxies
            .client_ip(peer.ip(), request.headers());
        limiter
            .check(client)
            .map_err(|retry_after_s| HttpError::RateLimited { retry_after_s })?;
    }
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::body::Body;
    use axum::http::{Request, StatusCode, header};
    use tower::ServiceExt as _;

    use super::*;
    use crate::auth_client::AuthClient;
    use crate::config::Config;
    use crate::metrics::Metrics;

    /// A gateway whose auth address has nothing listening: every auth call
    /// fails as unreachable, so a test can also tell whether auth was called.
    fn state_with_auth_down(config: impl FnOnce(&mut Config)) -> AppState {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let mut cfg = Config::with_auth_url(format!("http://127.0.0.1:{port}"));
        config(&mut cfg);
        let metrics = Metrics::default();
        let auth = AuthClient::new(
            &cfg.auth_url,
            None,
            Duration::from_millis(500),
            metrics.clone(),
        )
        .expect("valid url");
        AppState::new(&cfg, auth, metrics)
    }

    async fn get(state: AppState, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, String) {
        let mut request = Request::get(uri);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = app(state)
            .oneshot(request.body(Body::empty()).expect("valid request"))
            .await
            .expect("infallible");
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    const UPGRADE_HEADERS: [(&str, &str); 4] = [
        ("connection", "upgrade"),
        ("upgrade", "websocket"),
        ("sec-websocket-version", "13"),
        ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
    ];

    #[tokio::test]
    async fn healthz_is_ok_while_the_process_runs() {
        let (status, _) = get(state_with_auth_down(|_| {}), "/healthz", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn readyz_follows_the_subscription_and_shutdown() {
        let state = state_with_auth_down(|_| {});
        let (status, _) = get(state.clone(), "/readyz", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "unsubscribed");
        state.ready.set_subscribed(true);
        let (status, _) = get(state.clone(), "/readyz", &[]).await;
        assert_eq!(status, StatusCode::OK, "subscribed");
        state.shutdown.cancel();
        let (status, _) = get(state.clone(), "/readyz", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "shutting down");
        // Not shutting down, subscribed once, then the subscription is lost.
        let state = state_with_auth_down(|_| {});
        state.ready.set_subscribed(true);
        state.ready.set_subscribed(false);
        let (status, _) = get(state, "/readyz", &[]).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "subscription lost");
    }

    #[tokio::test]
    async fn ws_during_shutdown_is_refused_as_shutting_down_without_auth() {
        let state = state_with_auth_down(|_| {});
        state.shutdown.cancel();
        let metrics = state.metrics.clone();
        let (status, body) = get(state, "/ws?token=abc", &UPGRADE_HEADERS).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("shutting down"), "{body}");
        let text = metrics.render();
        assert!(
            text.contains("wsauth_gateway_handshakes_total{outcome=\"shutting_down\"} 1"),
            "{text}"
        );
        assert!(text.contains(
            "wsauth_gateway_auth_call_duration_seconds_count{method=\"ValidateToken\"} 0"
        ));
    }

    #[tokio::test]
    async fn metrics_are_prometheus_text() {
        let state = state_with_auth_down(|_| {});
        let response = app(state)
            .oneshot(
                Request::get("/metrics")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .expect("ascii");
        assert_eq!(content_type, health::METRICS_CONTENT_TYPE);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&body);
        for name in [
            "wsauth_gateway_connections_open 0",
            "wsauth_gateway_sockets_open 0",
            "wsauth_gateway_subscribed 0",
            "wsauth_gateway_events_total 0",
            "wsauth_gateway_handshakes_total{outcome=\"ok\"} 0",
            "wsauth_gateway_closes_total{code=\"1008\"} 0",
            "wsauth_gateway_auth_call_duration_seconds_count{method=\"ValidateToken\"} 0",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }

    #[tokio::test]
    async fn ws_with_a_foreign_origin_is_forbidden_before_auth_is_called() {
        let state =
            state_with_auth_down(|c| c.allowed_origins = vec!["http://good.example".into()]);
        let metrics = state.metrics.clone();
        let mut headers = UPGRADE_HEADERS.to_vec();
        headers.push(("origin", "http://evil.example"));
        let (status, body) = get(state, "/ws?token=abc", &headers).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert!(body.contains("\"error\""), "{body}");
        let text = metrics.render();
        assert!(
            text.contains(
                "wsauth_gateway_auth_call_duration_seconds_count{method=\"ValidateToken\"} 0"
            ),
            "auth must not be called:\n{text}"
        );
        assert!(text.contains("wsauth_gateway_handshakes_total{outcome=\"forbidden_origin\"} 1"));
    }

    #[tokio::test]
    async fn ws_without_origin_is_forbidden_when_origins_are_configured() {
        let state =
            state_with_auth_down(|c| c.allowed_origins = vec!["http://good.example".into()]);
        let (status, _) = get(state, "/ws?token=abc", &UPGRADE_HEADERS).await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }

    #[tokio::test]
    async fn ws_without_a_token_is_unauthorized() {
        let (status, body) = get(state_with_auth_down(|_| {}), "/ws", &UPGRADE_HEADERS).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("\"error\""), "{body}");
    }

    #[tokio::test]
    async fn token_without_bearer_is_unauthorized() {
        let (status, body) = get(state_with_auth_down(|_| {}), "/token/ws", &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert!(body.contains("\"error\""), "{body}");
        let (status, _) = get(
            state_with_auth_down(|_| {}),
            "/token/ws",
            &[("authorization", "Basic abc")],
        )
        .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }

    #[tokio::test]
    async fn token_with_auth_down_is_unavailable() {
        let (status, _) = get(
            state_with_auth_down(|_| {}),
            "/token/ws",
            &[("authorization", "Bearer a.b.c")],
        )
        .await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn every_refusal_is_counted_by_route_and_reason() {
        let state = state_with_auth_down(|_| {});
        let metrics = state.metrics.clone();
        let mut bad_version = UPGRADE_HEADERS.to_vec();
        bad_version[2] = ("sec-websocket-version", "8");
        let (status, _) = get(state.clone(), "/ws?token=abc", &bad_version).await;
        assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
        let (status, _) = get(state.clone(), "/ws?token=abc", &UPGRADE_HEADERS[1..]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        // A request that passes every header check but arrived without hyper's
        // upgrade machinery (oneshot) cannot be upgraded.
        let (status, _) = get(state.clone(), "/ws?token=abc", &UPGRADE_HEADERS).await;
        assert_eq!(status, StatusCode::UPGRADE_REQUIRED);
        let (status, _) = get(state.clone(), "/token/ws", &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, body) = get(state.clone(), "/nowhere", &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert!(body.contains("\"error\""), "{body}");
        let response = app(state)
            .oneshot(
                Request::post("/token/ws")
                    .body(Body::empty())
                    .expect("request"),
            )
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        let text = metrics.render();
        for line in [
            "wsauth_gateway_http_refusals_total{route=\"/ws\",reason=\"upgrade_required\"} 2\n",
            "wsauth_gateway_http_refusals_total{route=\"/ws\",reason=\"bad_request\"} 1\n",
            "wsauth_gateway_handshakes_total{outcome=\"upgrade_required\"} 2\n",
            "wsauth_gateway_handshakes_total{outcome=\"bad_request\"} 1\n",
            "wsauth_gateway_http_refusals_total{route=\"/token/ws\",reason=\"unauthorized\"} 1\n",
            "wsauth_gateway_http_refusals_total{route=\"other\",reason=\"not_found\"} 1\n",
            "wsauth_gateway_http_refusals_total{route=\"/token/ws\",reason=\"method_not_allowed\"} 1\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
    }

    #[tokio::test]
    async fn index_serves_the_demo_page() {
        let (status, body) = get(state_with_auth_down(|_| {}), "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, INDEX_HTML);
    }
}
