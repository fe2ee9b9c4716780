//! Each gRPC call runs in a span that continues the caller's W3C
//! `traceparent` (the gateway sends it), so a handshake is one trace across
//! the pair. Outermost, so refused and timed-out calls are traced too; a
//! no-op (no span, no header read) unless spans are exported over OTLP.

use std::task::{Context, Poll};

use tower::{Layer, Service};
use tracing::Instrument as _;
use tracing::instrument::Instrumented;
use wsauth_shared::trace_context;

/// Wraps the gRPC routes in a [`Traced`] service.
#[derive(Clone, Copy, Default)]
pub struct TraceLayer;

impl<S> Layer<S> for TraceLayer {
    type Service = Traced<S>;

    fn layer(&self, inner: S) -> Traced<S> {
        Traced { inner }
    }
}

/// The service [`TraceLayer`] makes.
#[derive(Clone)]
pub struct Traced<S> {
    inner: S,
}

impl<S, B> Service<http::Request<B>> for Traced<S>
where
    S: Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Instrumented<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        // `/wsauth.v1.AuthService/ValidateToken` → the RPC's full name.
        let path = request.uri().path();
        let span =
            trace_context::server_span(path.strip_prefix('/').unwrap_or(path), request.headers());
        let call = span.in_scope(|| self.inner.call(request));
        call.instrument(span)
    }
}
