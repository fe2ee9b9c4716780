//! Tracing set up the same way in both services: logs to stderr, and spans
//! to an OTLP collector when one is configured.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::{Level, Metadata};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    /// `text` or `json` (any case), for `--log-format` / `LOG_FORMAT`; anything
    /// else is an error rather than a silent fallback.
    fn from_str(value: &str) -> Result<Self, String> {
        if value.eq_ignore_ascii_case("json") {
            Ok(Self::Json)
        } else if value.eq_ignore_ascii_case("text") {
            Ok(Self::Text)
        } else {
            Err(format!("{value:?} is not text or json"))
        }
    }
}

/// Dependencies whose trace-level logs print whole frames or headers, that is
/// JWTs, ws tokens and API keys (tungstenite logs every message, h2 and hyper
/// headers, tower_http the URI with its query).
const SECRET_BEARING_TARGETS: &[&str] = &[
    "tungstenite",
    "tokio_tungstenite",
    "h2",
    "hyper",
    "hyper_util",
    "tonic",
    "tower_http",
];

/// Whether an event or span may be written: anything `RUST_LOG` enables,
/// except the secret-bearing dependencies' trace level.
fn may_carry_no_secret(metadata: &Metadata<'_>) -> bool {
    *metadata.level() != Level::TRACE
        || !SECRET_BEARING_TARGETS.iter().any(|target| {
            metadata
                .target()
                .strip_prefix(target)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

/// What [`init`] set up that must be flushed before the process exits.
#[must_use = "call shutdown() before exiting, or buffered spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports the spans still buffered (bounded by the exporter's timeout)
    /// and stops the exporter. Nothing to do when OTLP export is off.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        // The SDK's shutdown blocks until its export thread is done, and that
        // export needs the runtime's I/O: keep it off the runtime's threads.
        let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(error)) = stopped {
            tracing::warn!(%error, "OTLP exporter did not shut down cleanly");
        }
    }
}

/// Why [`init`] could not set up OTLP export.
#[derive(Debug, thiserror::Error)]
#[error("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}: {source}")]
pub struct TelemetryError {
    endpoint: String,
    source: opentelemetry_otlp::ExporterBuildError,
}

/// Installs the global subscriber: filter from `RUST_LOG` (default `info`),
/// written to stderr in `format`; and, when the standard
/// `OTEL_EXPORTER_OTLP_ENDPOINT` is set, every span also exported over OTLP
/// (gRPC) as `service_name` (`OTEL_SERVICE_NAME` wins when set). Without that
/// variable nothing else changes: no exporter, no extra work per span.
/// Calling it twice is harmless (the second call only installs nothing), so
/// tests may call it freely. Must run inside the Tokio runtime: the exporter's
/// channel lives on it.
///
/// Whatever `RUST_LOG` asks, the secret-bearing dependencies never log at
/// trace level. (This is a filter on top of `RUST_LOG`, not extra directives:
/// a directive such as `h2=debug` would turn h2's debug logs *on* under
/// `RUST_LOG=warn`.)
pub fn init_service(
    format: LogFormat,
    service_name: &'static str,
) -> Result<Telemetry, TelemetryError> {
    let provider = match otlp_endpoint() {
        Some(endpoint) => Some(tracer_provider(endpoint, service_name)?),
        None => None,
    };
    install(format, provider.as_ref());
    Ok(Telemetry { provider })
}

/// Logs only, as [`init_service`] sets them up, for tools and tests that
/// export nothing.
pub fn init(format: LogFormat) {
    install(format, None);
}

fn install(format: LogFormat, provider: Option<&SdkTracerProvider>) {
    let otel = provider
        .map(|provider| tracing_opentelemetry::layer().with_tracer(provider.tracer("wsauth")));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(filter_fn(may_carry_no_secret))
        .with(otel);
    let result = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr))
            .try_init(),
    };
    // Already installed (a second init in one process): keep the first, and
    // do not claim an export the installed subscriber does not do.
    if result.is_ok() && provider.is_some() {
        crate::trace_context::enable();
    }
}

/// The collector's address, when export is wanted. An empty value (a
/// template's `OTEL_EXPORTER_OTLP_ENDPOINT=`) means off, as unset.
fn otlp_endpoint() -> Option<String> {
    std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT")
        .ok()
        .filter(|endpoint| !endpoint.trim().is_empty())
}

/// A batching provider (its own thread; the OTLP client on the runtime)
/// exporting to `endpoint`. The exporter's timeout comes from
/// `OTEL_EXPORTER_OTLP_TIMEOUT` (default 10 s), so a collector that hangs
/// never holds a span buffer, or shutdown, for longer.
fn tracer_provider(
    endpoint: String,
    service_name: &'static str,
) -> Result<SdkTracerProvider, TelemetryError> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint.clone())
        .build()
        .map_err(|source| TelemetryError { endpoint, source })?;
    let resource = if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        Resource::builder().build()
    } else {
        Resource::builder().with_service_name(service_name).build()
    };
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

#[cfg(test)]
mod tests {
    use tracing::{Level, Metadata, callsite::Identifier, field::FieldSet, metadata::Kind};

    use super::may_carry_no_secret;

    struct NoCallsite;
    impl tracing::Callsite for NoCallsite {
        fn set_interest(&self, _: tracing::subscriber::Interest) {}
        fn metadata(&self) -> &Metadata<'_> {
            unreachable!("only the metadata's level and target are read")
        }
    }
    static CALLSITE: NoCallsite = NoCallsite;

    fn metadata(target: &'static str, level: Level) -> Metadata<'static> {
        Metadata::new(
            "event",
            target,
            level,
            None,
            None,
            None,
            FieldSet::new(&[], Identifier(&CALLSITE)),
            Kind::EVENT,
        )
    }

    #[test]
    fn secret_bearing_dependencies_never_log_at_trace() {
        for target in [
            "tungstenite::protocol",
            "h2",
            "hyper::proto::h1",
            "tower_http::trace",
        ] {
            assert!(
                !may_carry_no_secret(&metadata(target, Level::TRACE)),
                "{target}"
            );
            assert!(
                may_carry_no_secret(&metadata(target, Level::DEBUG)),
                "{target}"
            );
        }
    }

    #[test]
    fn everything_else_follows_rust_log() {
        for target in ["wsauth_gateway::session", "h2o", "hyperloglog", "redis"] {
            assert!(
                may_carry_no_secret(&metadata(target, Level::TRACE)),
                "{target}"
            );
        }
    }
}
