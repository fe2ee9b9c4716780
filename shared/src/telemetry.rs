//! Tracing set up the same way in both services.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

impl LogFormat {}

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
/// JWTs, ws tokens and API keys: capped at debug whatever `RUST_LOG` asks.
const SECRET_BEARING_TARGETS: &[&str] = &[
    "tungstenite=debug",
    "tokio_tungstenite=debug",
    "h2=debug",
    "hyper=debug",
    "hyper_util=debug",
    "tonic=debug",
    "tower_http=info",
];

/// Installs the global subscriber: filter from `RUST_LOG` (default `info`),
/// written to stderr in `format`. Calling it twice is harmless (the second
/// call does nothing), so tests may call it freely.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let filter = SECRET_BEARING_TARGETS
        .iter()
        .filter_map(|directive| directive.parse().ok())
        .fold(filter, EnvFilter::add_directive);
    let registry = tracing_subscriber::registry().with(filter);
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
    // Already installed (a second init in one process): keep the first.
    let _ = result;
}
