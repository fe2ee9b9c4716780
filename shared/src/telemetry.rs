//! Tracing set up the same way in both services.

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

/// Installs the global subscriber: filter from `RUST_LOG` (default `info`),
/// written to stderr in `format`. Calling it twice is harmless (the second
/// call does nothing), so tests may call it freely.
///
/// Whatever `RUST_LOG` asks, the secret-bearing dependencies never log at
/// trace level. (This is a filter on top of `RUST_LOG`, not extra directives:
/// a directive such as `h2=debug` would turn h2's debug logs *on* under
/// `RUST_LOG=warn`.)
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(filter_fn(may_carry_no_secret));
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
