//! The gateway's settings: every one a flag and an environment variable.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use wsauth_shared::telemetry::LogFormat;
use wsauth_shared::tls::TlsFiles;

/// Only one of the listener's certificate and key is set.
#[derive(Debug, thiserror::Error)]
#[error("GATEWAY_TLS_CERT_FILE and GATEWAY_TLS_KEY_FILE must be set together")]
pub struct HalfTlsPair;

use crate::client_ip::Cidr;

/// The smallest MAX_MESSAGE_BYTES: below it a first frame with a typical JWT
/// could not arrive, so no socket could ever authenticate.
pub const MIN_MESSAGE_BYTES: u64 = 1024;
/// The largest MAX_MESSAGE_BYTES: a frame is buffered whole before it is
/// handled, so this bounds one socket's memory.
pub const MAX_MESSAGE_BYTES_LIMIT: u64 = 16 * 1024 * 1024;

/// Gateway configuration, read by clap from flags and the environment, or
/// built directly in tests.
#[derive(Clone, Debug, clap::Parser)]
#[command(name = "wsauth-gateway", version, about)]
pub struct Config {
    /// Address the HTTP/WebSocket server binds to (port 0 picks a free one).
    #[arg(long, env = "GATEWAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub gateway_listen: SocketAddr,

    /// The auth service's gRPC endpoints, comma-separated: `http://host:port`,
    /// `https://host:port`, or `dns:///host:port` for every address behind a
    /// name (re-resolved every AUTH_RESOLVE_INTERVAL_S). Calls are balanced
    /// across all of them, with failover.
    #[arg(
        long,
        env = "AUTH_URL",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ','
    )]
    pub auth_url: Vec<String>,

    /// Seconds between lookups of AUTH_URL's `dns:///` names: new addresses
    /// get calls, vanished ones stop getting new calls (1 to 3600).
    #[arg(long, env = "AUTH_RESOLVE_INTERVAL_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub auth_resolve_interval_s: u64,

    /// CA certificates (PEM) that verify auth's certificate; default the
    /// system's roots. Setting any AUTH_TLS_* makes every AUTH_URL endpoint
    /// (`dns:///` names too) speak TLS. Files are re-read when they change.
    #[arg(long, env = "AUTH_TLS_CA_FILE")]
    pub auth_tls_ca_file: Option<PathBuf>,

    /// The gateway's client certificate chain (PEM) for mTLS to auth; with AUTH_TLS_KEY_FILE.
    #[arg(long, env = "AUTH_TLS_CERT_FILE", requires = "auth_tls_key_file")]
    pub auth_tls_cert_file: Option<PathBuf>,

    /// The private key (PEM) of AUTH_TLS_CERT_FILE.
    #[arg(long, env = "AUTH_TLS_KEY_FILE", requires = "auth_tls_cert_file")]
    pub auth_tls_key_file: Option<PathBuf>,

    /// The name auth's certificate must carry, instead of the URL's host (or
    /// the `dns:///` name): needed when a certificate names a service, not its IPs.
    #[arg(long, env = "AUTH_TLS_SERVER_NAME")]
    pub auth_tls_server_name: Option<String>,

    /// Certificate chain (PEM, leaf first) for serving HTTPS and `wss://` on
    /// GATEWAY_LISTEN; with GATEWAY_TLS_KEY_FILE. Re-read when it changes.
    #[arg(long, env = "GATEWAY_TLS_CERT_FILE", requires = "gateway_tls_key_file")]
    pub gateway_tls_cert_file: Option<PathBuf>,

    /// The private key (PEM) of GATEWAY_TLS_CERT_FILE.
    #[arg(long, env = "GATEWAY_TLS_KEY_FILE", requires = "gateway_tls_cert_file")]
    pub gateway_tls_key_file: Option<PathBuf>,

    /// The key sent to auth as `authorization: Bearer <key>`.
    #[arg(long, env = "AUTH_API_KEY", value_parser = parse_secret)]
    pub auth_api_key: Option<SecretString>,

    /// Names this gateway in auth's logs; default `<hostname>-<pid>`.
    #[arg(long, env = "GATEWAY_ID")]
    pub gateway_id: Option<String>,

    /// Seconds a socket may wait for its first (jwt) frame before 4408 (1 to 3600).
    #[arg(long, env = "AUTH_TIMEOUT_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub auth_timeout_s: u64,

    /// Largest accepted client frame/message; anything larger closes with 1009
    /// (1024, room for a first frame, to 16777216).
    #[arg(long, env = "MAX_MESSAGE_BYTES", default_value_t = 65536,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
              .range(MIN_MESSAGE_BYTES..=MAX_MESSAGE_BYTES_LIMIT))]
    pub max_message_bytes: usize,

    /// Seconds between WebSocket pings; a peer silent for two intervals is dropped (1 to 3600).
    #[arg(long, env = "PING_INTERVAL_S", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub ping_interval_s: u64,

    /// Origins allowed to open a WebSocket; empty (unset) allows any.
    #[arg(long, env = "ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Deadline of each gRPC call to auth, in milliseconds (1 to 60000).
    #[arg(long, env = "AUTH_CALL_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..=60_000))]
    pub auth_call_timeout_ms: u64,

    /// Frames queued per connection before a slow client is closed with 1008 (1 to 65536).
    #[arg(long, env = "SEND_QUEUE_CAPACITY", default_value_t = 256,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65_536))]
    pub send_queue_capacity: usize,

    /// Client frames per second allowed (token bucket, same burst); more closes
    /// with 1008 (1 to 1000000).
    #[arg(long, env = "MAX_MESSAGES_PER_S", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_messages_per_s: u32,

    /// Open WebSockets this gateway holds; more get 503 `gateway full` before
    /// their token is looked at (1 to 10000000).
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 50_000,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub max_connections: usize,

    /// WebSockets between the 101 and `auth_ok`; more get 503 `gateway full`
    /// (1 to 1000000).
    #[arg(long, env = "MAX_PENDING_AUTH", default_value_t = 1024,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_pending_auth: usize,

    /// Requests per second per client IP to /token/ws and /ws together (burst
    /// twice that); more get 429 with Retry-After. 0 turns it off (0 to 1000000).
    #[arg(long, env = "PER_IP_RATE", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub per_ip_rate: u32,

    /// Proxies (CIDR blocks or addresses, comma-separated) whose
    /// X-Forwarded-For names the client for PER_IP_RATE; default none.
    #[arg(long, env = "TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<Cidr>,

    /// Seconds shutdown may take before remaining sockets are dropped (0 to 3600).
    #[arg(long, env = "SHUTDOWN_GRACE_S", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub shutdown_grace_s: u64,

    /// Log lines as `text` or `json` (one object per line, for log shippers).
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,
}

fn parse_secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

impl Config {
    /// Defaults for everything, as the binary would have with no flags or env:
    /// a starting point for tests.
    pub fn with_auth_url(auth_url: impl Into<String>) -> Self {
        Self {
            gateway_listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            auth_url: vec![auth_url.into()],
            auth_resolve_interval_s: 10,
            auth_tls_ca_file: None,
            auth_tls_cert_file: None,
            auth_tls_key_file: None,
            auth_tls_server_name: None,
            gateway_tls_cert_file: None,
            gateway_tls_key_file: None,
            auth_api_key: None,
            gateway_id: None,
            auth_timeout_s: 10,
            max_message_bytes: 65536,
            ping_interval_s: 30,
            allowed_origins: Vec::new(),
            max_connections: 50_000,
            max_pending_auth: 1024,
            per_ip_rate: 0,
            trusted_proxies: Vec::new(),
            auth_call_timeout_ms: 2000,
            send_queue_capacity: 256,
            max_messages_per_s: 100,
            shutdown_grace_s: 10,
            log_format: LogFormat::Text,
        }
    }

    pub fn auth_timeout(&self) -> Duration {
        Duration::from_secs(self.auth_timeout_s)
    }

    pub fn auth_resolve_interval(&self) -> Duration {
        Duration::from_secs(self.auth_resolve_interval_s)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_s)
    }

    pub fn auth_call_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_call_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_secs(self.shutdown_grace_s)
    }

    /// The files of the gateway's own TLS listener: `None` serves plain
    /// HTTP; half a pair (possible when built without clap) is refused.
    pub fn listener_tls_files(&self) -> Result<Option<TlsFiles>, HalfTlsPair> {
        match (&self.gateway_tls_cert_file, &self.gateway_tls_key_file) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: None,
            })),
            _ => Err(HalfTlsPair),
        }
    }

    /// The configured id, else `<hostname>-<pid>`, else a random one.
    pub fn resolved_gateway_id(&self) -> String {
        if let Some(id) = self.gateway_id.as_ref().filter(|id| !id.is_empty()) {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty());
        match host {
            Some(host) => format!("{host}-{}", std::process::id()),
            None => format!("gateway-{:016x}", rand::random::<u64>()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn lists_are_comma_separated_and_defaults_match_the_conventions() {
        let config = Config::try_parse_from([
            "wsauth-gateway",
            "--auth-url",
            "http://a:1,dns:///b:2",
            "--allowed-origins",
            "http://x,http://y",
        ])
        .expect("valid flags");
        assert_eq!(config.auth_url, ["http://a:1", "dns:///b:2"]);
        assert_eq!(config.auth_resolve_interval_s, 10);
        assert_eq!(config.allowed_origins, ["http://x", "http://y"]);
        assert_eq!(config.max_message_bytes, 65536);
        assert_eq!(config.send_queue_capacity, 256);
        assert_eq!(config.max_messages_per_s, 100);
    }

    #[test]
    fn numeric_settings_out_of_range_are_refused_naming_the_setting() {
        for (flag, env, bad, good) in [
            (
                "--ping-interval-s",
                "PING_INTERVAL_S",
                "18446744073709551615",
                "3600",
            ),
            ("--ping-interval-s", "PING_INTERVAL_S", "0", "1"),
            (
                "--auth-resolve-interval-s",
                "AUTH_RESOLVE_INTERVAL_S",
                "0",
                "1",
            ),
            (
                "--auth-resolve-interval-s",
                "AUTH_RESOLVE_INTERVAL_S",
                "3601",
                "3600",
            ),
            ("--auth-timeout-s", "AUTH_TIMEOUT_S", "0", "1"),
            ("--auth-timeout-s", "AUTH_TIMEOUT_S", "3601", "3600"),
            ("--send-queue-capacity", "SEND_QUEUE_CAPACITY", "0", "1"),
            (
                "--send-queue-capacity",
                "SEND_QUEUE_CAPACITY",
                "65537",
                "65536",
            ),
            ("--max-message-bytes", "MAX_MESSAGE_BYTES", "1023", "1024"),
            (
                "--max-message-bytes",
                "MAX_MESSAGE_BYTES",
                "16777217",
                "16777216",
            ),
            ("--max-messages-per-s", "MAX_MESSAGES_PER_S", "0", "1"),
            (
                "--max-messages-per-s",
                "MAX_MESSAGES_PER_S",
                "4294967296",
                "1000000",
            ),
            ("--auth-call-timeout-ms", "AUTH_CALL_TIMEOUT_MS", "0", "1"),
            (
                "--auth-call-timeout-ms",
                "AUTH_CALL_TIMEOUT_MS",
                "60001",
                "60000",
            ),
            ("--max-connections", "MAX_CONNECTIONS", "0", "1"),
            (
                "--max-connections",
                "MAX_CONNECTIONS",
                "10000001",
                "10000000",
            ),
            ("--max-pending-auth", "MAX_PENDING_AUTH", "0", "1"),
            (
                "--max-pending-auth",
                "MAX_PENDING_AUTH",
                "1000001",
                "1000000",
            ),
            ("--per-ip-rate", "PER_IP_RATE", "-1", "0"),
            ("--per-ip-rate", "PER_IP_RATE", "1000001", "1000000"),
            (
                "--trusted-proxies",
                "TRUSTED_PROXIES",
                "10.0.0.0/33",
                "10.0.0.0/8,::1",
            ),
            ("--shutdown-grace-s", "SHUTDOWN_GRACE_S", "-1", "0"),
            ("--shutdown-grace-s", "SHUTDOWN_GRACE_S", "3601", "3600"),
        ] {
            // `--flag=value`, so that "-1" is a value and not a flag.
            let error = Config::try_parse_from(["wsauth-gateway", &format!("{flag}={bad}")])
                .expect_err(&format!("{flag} {bad} is refused"))
                .to_string();
            assert!(error.contains(flag) && error.contains(env), "{error}");
            assert!(
                Config::try_parse_from(["wsauth-gateway", &format!("{flag}={good}")]).is_ok(),
                "{flag} {good}"
            );
        }
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_the_other_way_round() {
        for flag in ["--auth-tls-cert-file=/c.pem", "--auth-tls-key-file=/k.pem"] {
            let error = Config::try_parse_from(["wsauth-gateway", flag])
                .expect_err("half an identity")
                .to_string();
            assert!(error.contains("--auth-tls-"), "{error}");
        }
        let config = Config::try_parse_from([
            "wsauth-gateway",
            "--auth-tls-cert-file=/c.pem",
            "--auth-tls-key-file=/k.pem",
            "--auth-tls-server-name=auth.internal",
        ])
        .expect("both halves");
        assert_eq!(
            config.auth_tls_server_name.as_deref(),
            Some("auth.internal")
        );
    }

    #[test]
    fn the_listener_certificate_needs_its_key_and_the_other_way_round() {
        for flag in [
            "--gateway-tls-cert-file=/c.pem",
            "--gateway-tls-key-file=/k.pem",
        ] {
            let error = Config::try_parse_from(["wsauth-gateway", flag])
                .expect_err("half a pair")
                .to_string();
            assert!(
                error.contains("--gateway-tls-cert-file")
                    && error.contains("--gateway-tls-key-file"),
                "{error}"
            );
        }
        let config = Config::try_parse_from([
            "wsauth-gateway",
            "--gateway-tls-cert-file=/c.pem",
            "--gateway-tls-key-file=/k.pem",
        ])
        .expect("both halves");
        let files = config
            .listener_tls_files()
            .expect("a pair")
            .expect("TLS on");
        assert_eq!(files.cert, PathBuf::from("/c.pem"));
        assert_eq!(files.client_ca, None);

        let mut half = Config::with_auth_url("http://a:1");
        half.gateway_tls_key_file = Some("/k.pem".into());
        let error = half
            .listener_tls_files()
            .expect_err("half a pair")
            .to_string();
        assert!(error.contains("GATEWAY_TLS_CERT_FILE") && error.contains("GATEWAY_TLS_KEY_FILE"));
        assert!(
            Config::with_auth_url("http://a:1")
                .listener_tls_files()
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn api_key_is_not_printed_by_debug() {
        let config = Config::try_parse_from(["wsauth-gateway", "--auth-api-key", "hunter2"])
            .expect("valid flags");
        assert!(!format!("{config:?}").contains("hunter2"));
    }
}
