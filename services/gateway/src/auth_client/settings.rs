//! What an [`super::AuthClient`] is built from, and why it may not build.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;

use super::discovery::{Resolve, SystemResolver};
use crate::config::Config;

/// The default of `AUTH_RESOLVE_INTERVAL_S`.
pub const DEFAULT_RESOLVE_INTERVAL: Duration = Duration::from_secs(10);

/// How to reach auth.
#[derive(Clone)]
pub struct ClientSettings {
    /// `AUTH_URL`'s entries: `http(s)://host:port` or `dns:///host:port`.
    pub urls: Vec<String>,
    /// Sent as `authorization: Bearer <key>`.
    pub api_key: Option<SecretString>,
    /// The deadline of each call, failover included.
    pub call_timeout: Duration,
    /// How often `dns:` names are looked up again.
    pub resolve_interval: Duration,
    /// Who looks them up (tests move a name between processes with their own).
    pub resolver: Arc<dyn Resolve>,
}

impl ClientSettings {
    /// `urls` with the defaults for everything else.
    pub fn new(urls: Vec<String>, call_timeout: Duration) -> Self {
        Self {
            urls,
            api_key: None,
            call_timeout,
            resolve_interval: DEFAULT_RESOLVE_INTERVAL,
            resolver: Arc::new(SystemResolver),
        }
    }

    /// The gateway's settings for its client.
    pub fn from_config(config: &Config) -> Self {
        Self {
            api_key: config.auth_api_key.clone(),
            resolve_interval: config.auth_resolve_interval(),
            ..Self::new(config.auth_url.clone(), config.auth_call_timeout())
        }
    }
}

/// Invalid `AUTH_URL` or `AUTH_API_KEY`.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("AUTH_URL is empty")]
    NoUrl,
    #[error("invalid AUTH_URL entry {url:?}: {source}")]
    BadUrl {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("invalid AUTH_URL entry {url:?}: {reason}")]
    BadDnsName { url: String, reason: &'static str },
    #[error("AUTH_API_KEY is not valid header text")]
    BadKey,
}
