//! The auth service's settings: every one a `--kebab-case` flag and an env var.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use secrecy::SecretString;
use wsauth_shared::telemetry::LogFormat;
use wsauth_shared::tls::TlsFiles;

/// The minimum number of events the stream keeps (the contract's delivery guarantee).
pub const MIN_EVENT_RETENTION: u64 = 10_000;
/// The largest MAX_EVENT_BYTES: an event must fit, with room to spare, in
/// one gRPC message (4 MiB by default), and a History reply in a few.
pub const MAX_EVENT_BYTES_LIMIT: u64 = 1024 * 1024;

/// `wsauth-auth`: ws tokens, JWT verification, revocation and the broadcast stream over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "wsauth-auth", version, about)]
pub struct Config {
    /// Address to listen on for gRPC (port 0 picks a free port).
    #[arg(long, env = "AUTH_LISTEN", default_value = "127.0.0.1:50051")]
    pub auth_listen: SocketAddr,

    /// Address serving Prometheus metrics over HTTP at `/metrics`; empty turns them off.
    #[arg(long, env = "AUTH_METRICS_LISTEN", default_value = "127.0.0.1:9464",
          value_parser = parse_metrics_listen)]
    pub auth_metrics_listen: MetricsListen,

    /// Redis URL (`redis://` or `rediss://` for TLS); absent, with no other
    /// Redis mode set: an embedded in-memory store that serves one auth replica only.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<SecretString>,

    /// Redis Cluster seed nodes (comma-separated `redis://` or `rediss://` URLs).
    #[arg(long, env = "REDIS_CLUSTER_URLS", value_delimiter = ',')]
    pub redis_cluster_urls: Vec<SecretString>,

    /// Redis Sentinel nodes (comma-separated URLs); needs REDIS_SENTINEL_MASTER.
    #[arg(long, env = "REDIS_SENTINEL_URLS", value_delimiter = ',')]
    pub redis_sentinel_urls: Vec<SecretString>,

    /// The master name the sentinels monitor.
    #[arg(long, env = "REDIS_SENTINEL_MASTER")]
    pub redis_sentinel_master: Option<String>,

    /// PEM bundle that verifies Redis's TLS certificate (default: the system roots).
    #[arg(long, env = "REDIS_CA_FILE")]
    pub redis_ca_file: Option<PathBuf>,

    /// PEM client certificate presented to Redis (with REDIS_CLIENT_KEY_FILE).
    #[arg(long, env = "REDIS_CLIENT_CERT_FILE")]
    pub redis_client_cert_file: Option<PathBuf>,

    /// PEM private key of REDIS_CLIENT_CERT_FILE.
    #[arg(long, env = "REDIS_CLIENT_KEY_FILE")]
    pub redis_client_key_file: Option<PathBuf>,

    /// Start even when Redis's `maxmemory-policy` may evict keys (a revocation could be lost).
    #[arg(long, env = "REDIS_ALLOW_EVICTION", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub redis_allow_eviction: bool,

    /// After consuming a ws token, revoking and publishing, wait until this
    /// many replicas acknowledged the write (Redis WAIT; 0: do not wait; at most 16).
    #[arg(long, env = "REDIS_WAIT_REPLICAS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=16))]
    pub redis_wait_replicas: u32,

    /// Shared secret for HS256 JWTs (also signs `mint-jwt` tokens).
    #[arg(long, env = "JWT_HS256_SECRET")]
    pub jwt_hs256_secret: Option<SecretString>,

    /// PEM public key for RS256, ES256 or EdDSA JWTs (the algorithm follows the key type).
    #[arg(long, env = "JWT_PUBLIC_KEY_FILE")]
    pub jwt_public_key_file: Option<PathBuf>,

    /// JWKS file whose keys are selected by the JWT header's `kid`.
    #[arg(long, env = "JWT_JWKS_FILE")]
    pub jwt_jwks_file: Option<PathBuf>,

    /// Required `iss` claim, when set.
    #[arg(long, env = "JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Required `aud` claim, when set.
    #[arg(long, env = "JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,

    /// Allowed clock skew for `exp`/`nbf`, in seconds (0 to 600).
    #[arg(long, env = "JWT_LEEWAY_S", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(0..=600))]
    pub jwt_leeway_s: u64,

    /// Lifetime of a ws token, in seconds (1 to 86400; enforced by Redis itself).
    #[arg(long, env = "WS_TOKEN_TTL_S", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub ws_token_ttl_s: u64,

    /// Let a ws token be validated again until it expires (default: single use).
    #[arg(long, env = "WS_TOKEN_REUSE", default_value_t = false, action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub ws_token_reuse: bool,

    /// Keys accepted for the gateway RPCs (comma-separated).
    #[arg(long, env = "INTERNAL_API_KEYS", value_delimiter = ',')]
    pub internal_api_keys: Vec<SecretString>,

    /// Keys accepted for every RPC, including Publish and Revoke* (comma-separated).
    #[arg(long, env = "ADMIN_API_KEYS", value_delimiter = ',')]
    pub admin_api_keys: Vec<SecretString>,

    /// Largest Publish `data`, in bytes (1 to 1048576).
    #[arg(long, env = "MAX_EVENT_BYTES", default_value_t = 65_536,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(1..=MAX_EVENT_BYTES_LIMIT))]
    pub max_event_bytes: usize,

    /// Events kept in the stream (approximately, never fewer; minimum 10000).
    #[arg(long, env = "EVENT_RETENTION", default_value_t = MIN_EVENT_RETENTION,
          value_parser = clap::value_parser!(u64).range(MIN_EVENT_RETENTION..))]
    pub event_retention: u64,

    /// Deadline of every Redis call, in milliseconds (1 to 60000).
    #[arg(long, env = "REDIS_TIMEOUT_MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub redis_timeout_ms: u64,

    /// How long in-flight calls may finish after a shutdown signal, in seconds (0 to 3600).
    #[arg(long, env = "SHUTDOWN_GRACE_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace_s: u64,

    /// Log line format: `text` or `json`.
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// Concurrent HTTP/2 streams per client connection (1 to 65535).
    #[arg(long, env = "MAX_CONCURRENT_STREAMS", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=65_535))]
    pub max_concurrent_streams: u32,

    /// Server-side deadline of every call, to its reply (a stream: to its
    /// first headers), in milliseconds (1 to 600000).
    #[arg(long, env = "RPC_TIMEOUT_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub rpc_timeout_ms: u64,

    /// PEM certificate chain: serve gRPC over TLS (with TLS_KEY_FILE).
    #[arg(long, env = "TLS_CERT_FILE", requires = "tls_key_file")]
    pub tls_cert_file: Option<PathBuf>,

    /// PEM private key of TLS_CERT_FILE.
    #[arg(long, env = "TLS_KEY_FILE", requires = "tls_cert_file")]
    pub tls_key_file: Option<PathBuf>,

    /// PEM CA bundle: require a client certificate signed by it (mTLS).
    #[arg(long, env = "TLS_CLIENT_CA_FILE", requires = "tls_cert_file")]
    pub tls_client_ca_file: Option<PathBuf>,

    /// A one-off command instead of serving.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Where metrics are served: `None` when `AUTH_METRICS_LISTEN` is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

fn parse_metrics_listen(value: &str) -> Result<MetricsListen, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(MetricsListen(None));
    }
    value
        .parse()
        .map(|addr| MetricsListen(Some(addr)))
        .map_err(|_| format!("`{value}` is not an address like 127.0.0.1:9464 (or empty: off)"))
}

/// Subcommands of `wsauth-auth`.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Prints a JWT signed with JWT_HS256_SECRET (for development and tests).
    MintJwt {
        /// The `sub` (user id) of the JWT.
        #[arg(long)]
        sub: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl_s: u64,
    },
}

impl Config {
    /// A config with the defaults, listening on 127.0.0.1:0 with the in-memory
    /// store and the given HS256 secret: the starting point for tests and tools.
    pub fn with_hs256_secret(secret: &str) -> Self {
        Self {
            auth_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            // Off: tests run many replicas, which would share the default port.
            auth_metrics_listen: MetricsListen(None),
            redis_url: None,
            redis_cluster_urls: Vec::new(),
            redis_sentinel_urls: Vec::new(),
            redis_sentinel_master: None,
            redis_ca_file: None,
            redis_client_cert_file: None,
            redis_client_key_file: None,
            redis_allow_eviction: false,
            redis_wait_replicas: 0,
            jwt_hs256_secret: Some(SecretString::from(secret)),
            jwt_public_key_file: None,
            jwt_jwks_file: None,
            jwt_issuer: None,
            jwt_audience: None,
            jwt_leeway_s: 30,
            ws_token_ttl_s: 60,
            ws_token_reuse: false,
            internal_api_keys: Vec::new(),
            admin_api_keys: Vec::new(),
            max_event_bytes: 65_536,
            event_retention: MIN_EVENT_RETENTION,
            redis_timeout_ms: 1000,
            shutdown_grace_s: 10,
            log_format: LogFormat::Text,
            max_concurrent_streams: 256,
            rpc_timeout_ms: 10_000,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
            command: None,
        }
    }

    /// The deadline of each Redis call (bounded by the flag's range when parsed).
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }

    /// The server-side deadline of every call.
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc_timeout_ms)
    }

    /// The certificate files to serve TLS with, when TLS is configured.
    pub fn tls_files(&self) -> Option<TlsFiles> {
        Some(TlsFiles {
            cert: self.tls_cert_file.clone()?,
            key: self.tls_key_file.clone()?,
            client_ca: self.tls_client_ca_file.clone(),
        })
    }

    /// The bound on graceful shutdown.
    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_s)
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn flags_parse_lists_bools_and_subcommands() {
        let config = Config::try_parse_from([
            "wsauth-auth",
            "--auth-listen",
            "0.0.0.0:0",
            "--internal-api-keys",
            "a,b",
            "--ws-token-reuse",
            "yes",
            "--event-retention",
            "20000",
            "mint-jwt",
            "--sub",
            "alice",
        ])
        .expect("valid flags");
        assert_eq!(config.auth_listen.port(), 0);
        let keys: Vec<_> = config
            .internal_api_keys
            .iter()
            .map(|k| k.expose_secret())
            .collect();
        assert_eq!(keys, ["a", "b"]);
        assert!(config.ws_token_reuse);
        assert_eq!(config.event_retention, 20_000);
        assert!(matches!(
            config.command,
            Some(Command::MintJwt { ttl_s: 3600, .. })
        ));
    }

    #[test]
    fn retention_below_the_minimum_is_refused() {
        assert!(Config::try_parse_from(["wsauth-auth", "--event-retention", "9999"]).is_err());
        assert!(Config::try_parse_from(["wsauth-auth", "--ws-token-ttl-s", "0"]).is_err());
    }

    #[test]
    fn numeric_settings_are_bounded() {
        for (flag, bad, good) in [
            ("--ws-token-ttl-s", "86401", "86400"),
            ("--jwt-leeway-s", "601", "600"),
            ("--max-event-bytes", "1048577", "1048576"),
            ("--max-event-bytes", "0", "1"),
            ("--redis-timeout-ms", "60001", "60000"),
            ("--shutdown-grace-s", "18446744073709551615", "3600"),
            ("--max-concurrent-streams", "0", "1"),
            ("--rpc-timeout-ms", "0", "600000"),
        ] {
            assert!(
                Config::try_parse_from(["wsauth-auth", flag, bad]).is_err(),
                "{flag} {bad}"
            );
            assert!(
                Config::try_parse_from(["wsauth-auth", flag, good]).is_ok(),
                "{flag} {good}"
            );
        }
    }

    #[test]
    fn tls_files_come_as_a_pair() {
        assert!(Config::try_parse_from(["wsauth-auth", "--tls-cert-file", "c.pem"]).is_err());
        assert!(Config::try_parse_from(["wsauth-auth", "--tls-key-file", "k.pem"]).is_err());
        assert!(Config::try_parse_from(["wsauth-auth", "--tls-client-ca-file", "ca.pem"]).is_err());
        let config = Config::try_parse_from([
            "wsauth-auth",
            "--tls-cert-file",
            "c.pem",
            "--tls-key-file",
            "k.pem",
        ])
        .expect("a pair");
        let files = config.tls_files().expect("tls configured");
        assert_eq!(files.cert, PathBuf::from("c.pem"));
        assert_eq!(files.client_ca, None);
        assert!(Config::with_hs256_secret("s").tls_files().is_none());
    }

    #[test]
    fn metrics_listen_defaults_to_9464_and_empty_turns_it_off() {
        let config = Config::try_parse_from(["wsauth-auth"]).expect("default");
        assert_eq!(
            config.auth_metrics_listen,
            MetricsListen(Some(SocketAddr::from(([127, 0, 0, 1], 9464))))
        );
        let config = Config::try_parse_from(["wsauth-auth", "--auth-metrics-listen", ""])
            .expect("empty is off");
        assert_eq!(config.auth_metrics_listen, MetricsListen(None));
        let error = Config::try_parse_from(["wsauth-auth", "--auth-metrics-listen", "nope"])
            .expect_err("not an address");
        assert!(error.to_string().contains("AUTH_METRICS_LISTEN"), "{error}");
    }

    #[test]
    fn log_format_is_text_or_json() {
        let config = Config::try_parse_from(["wsauth-auth", "--log-format", "json"]).expect("json");
        assert_eq!(config.log_format, LogFormat::Json);
        let config = Config::try_parse_from(["wsauth-auth"]).expect("default");
        assert_eq!(config.log_format, LogFormat::Text);
        assert!(Config::try_parse_from(["wsauth-auth", "--log-format", "xml"]).is_err());
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let config = Config::with_hs256_secret("very-secret-value");
        assert!(!format!("{config:?}").contains("very-secret-value"));
    }
}
