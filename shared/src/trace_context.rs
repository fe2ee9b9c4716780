//! W3C trace context across the pair: a request's `traceparent` continues
//! into the span that serves it, and the current span's context goes out
//! with every gRPC call, so one trace follows a handshake from the gateway
//! into auth.
//!
//! All of it is off (no span made, no header read or written) unless
//! [`telemetry::init_service`](crate::telemetry::init_service) set up an OTLP exporter: a
//! trace nobody collects is not worth a span per request.

use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{AsciiMetadataKey, AsciiMetadataValue, KeyRef, MetadataMap};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Turned on once, by `telemetry::init_service`, when spans are exported.
pub(crate) fn enable() {
    EXPORTING.store(true, Ordering::Relaxed);
}

/// Whether spans are exported (and so worth making and propagating).
pub fn is_exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// The span that serves one incoming request (`name` such as
/// `GET /token/ws` or `wsauth.v1.AuthService/ValidateToken`), child of the
/// caller's `traceparent` when it sent a valid one, else a new trace's root.
/// A disabled span when nothing is exported.
pub fn server_span(name: &str, headers: &http::HeaderMap) -> Span {
    if !is_exporting() {
        return Span::none();
    }
    let span = tracing::info_span!("request", otel.name = %name, otel.kind = "server");
    let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
    // An Err only means the span is disabled (filtered out by RUST_LOG).
    let _ = span.set_parent(parent);
    span
}

/// Puts `span`, made with `parent: None`, into the current span's trace.
/// For a task that outlives the request that spawned it (a WebSocket
/// session): a tracing parent would stay open, and unexported, until the
/// child ends; an OpenTelemetry parent only links them.
pub fn continue_current_trace(span: &Span) {
    if !is_exporting() {
        return;
    }
    // An Err only means `span` is disabled (filtered out by RUST_LOG).
    let _ = span.set_parent(Span::current().context());
}

/// Puts the current span's context into an outgoing call's metadata as
/// `traceparent` (and `tracestate`); nothing when nothing is exported or no
/// span is current.
pub fn inject(metadata: &mut MetadataMap) {
    if !is_exporting() {
        return;
    }
    let context = Span::current().context();
    TraceContextPropagator::new().inject_context(&context, &mut MetadataInjector(metadata));
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        // The propagator only writes ASCII header names and values; anything
        // else would be a bug upstream, and is dropped rather than sent broken.
        if let (Ok(key), Ok(value)) = (
            AsciiMetadataKey::from_bytes(key.as_bytes()),
            AsciiMetadataValue::try_from(value),
        ) {
            self.0.insert(key, value);
        }
    }
}

/// Reads a `traceparent` from incoming gRPC metadata (for tests of the
/// carriers, and any server that sees metadata rather than headers).
pub struct MetadataExtractor<'a>(pub &'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .map(|key| match key {
                KeyRef::Ascii(key) => key.as_str(),
                KeyRef::Binary(key) => key.as_str(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanContext, TraceContextExt as _, TraceFlags, TraceState};
    use opentelemetry::{Context, SpanId, TraceId};

    use super::*;

    const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_traceparent_header_is_read_and_written_back_as_metadata() {
        let mut headers = http::HeaderMap::new();
        headers.insert("traceparent", TRACEPARENT.parse().expect("ascii"));
        let propagator = TraceContextPropagator::new();
        let context = propagator.extract(&HeaderExtractor(&headers));
        let span = context.span().span_context().clone();
        assert_eq!(
            span.trace_id(),
            TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").expect("hex")
        );
        assert!(span.is_remote() && span.is_sampled());

        let mut metadata = MetadataMap::new();
        propagator.inject_context(&context, &mut MetadataInjector(&mut metadata));
        assert_eq!(
            metadata.get("traceparent").and_then(|v| v.to_str().ok()),
            Some(TRACEPARENT)
        );
        let back = propagator.extract(&MetadataExtractor(&metadata));
        assert_eq!(back.span().span_context(), &span);
    }

    #[test]
    fn a_malformed_traceparent_starts_no_false_parent() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            "traceparent",
            "00-zz-00f067aa0ba902b7-01".parse().expect("ascii"),
        );
        let context = TraceContextPropagator::new().extract(&HeaderExtractor(&headers));
        assert!(!context.span().span_context().is_valid());
    }

    #[test]
    fn nothing_is_injected_without_a_valid_span() {
        let invalid = Context::new().with_remote_span_context(SpanContext::new(
            TraceId::INVALID,
            SpanId::INVALID,
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        ));
        let mut metadata = MetadataMap::new();
        TraceContextPropagator::new()
            .inject_context(&invalid, &mut MetadataInjector(&mut metadata));
        assert!(metadata.is_empty());
    }
}
