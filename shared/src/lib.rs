//! What both wsauth services share, and nothing more:
//! - [`event_id`]: the one event id parser, with auth's rules;
//! - [`proto`]: the generated `wsauth.v1` messages, clients and servers, and
//!   the descriptor set that auth serves through reflection;
//! - [`telemetry`]: tracing set up from `RUST_LOG` and `LOG_FORMAT`, and spans
//!   exported over OTLP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set;
//! - [`trace_context`]: W3C `traceparent` in from HTTP headers, out into gRPC metadata;
//! - [`shutdown`]: one future for SIGTERM or Ctrl-C;
//! - [`tls`]: rustls server configs from PEM files, reloaded when they change.
//! - [`limits`]: the contract's credential and id sizes;
//! - [`bearer`]: the `Authorization: Bearer` parser;
//! - [`backoff`]: the retry delays of every reconnecting loop;
//! - `oracles` (tests and the fuzz crate only, feature `oracles`): the
//!   contract's rules restated, to judge the parsers by.
#![forbid(unsafe_code)]

pub mod backoff;
pub mod bearer;
pub mod event_id;
pub mod limits;
#[cfg(any(test, feature = "oracles"))]
pub mod oracles;
pub mod proto;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod trace_context;
