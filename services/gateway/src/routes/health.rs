//! `/healthz`, `/readyz` and `/metrics`.

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use crate::state::AppState;

/// Alive while the process serves requests.
pub async fn healthz() -> StatusCode {
    StatusCode::OK
}

/// Ready while the Subscribe stream to auth is open: an open stream means
/// auth is reachable and this gateway receives events.
pub async fn readyz(State(state): State<AppState>) -> StatusCode {
    if state.ready.is_subscribed() && !state.shutdown.is_cancelled() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// The Prometheus text format's media type (what scrapers ask for first).
pub use prometheus_client::encoding::prometheus_text::CONTENT_TYPE as METRICS_CONTENT_TYPE;

/// Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)],
        state.metrics.render(),
    )
}
