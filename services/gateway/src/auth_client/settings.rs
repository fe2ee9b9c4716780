//! What an [`super::AuthClient`] is built from, and why it may not build.

use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::{Ascii, MetadataValue};

use super::discovery::{Resolve, SystemResolver};
use super::target::Security;
use super::tls::{ClientTlsError, ClientTlsFiles, Snapshot};
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
    /// TLS to auth (`AUTH_TLS_*`): when any is set, every endpoint speaks
    /// TLS; an `https://` URL does in any case.
    pub tls: ClientTlsFiles,
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
            tls: ClientTlsFiles::default(),
        }
    }

    /// The gateway's settings for its client.
    pub fn from_config(config: &Config) -> Self {
        Self {
            api_key: config.auth_api_key.clone(),
            resolve_interval: config.auth_resolve_interval(),
            tls: ClientTlsFiles {
                ca_file: config.auth_tls_ca_file.clone(),
                cert_file: config.auth_tls_cert_file.clone(),
                key_file: config.auth_tls_key_file.clone(),
                server_name: config.auth_tls_server_name.clone(),
            },
            ..Self::new(config.auth_url.clone(), config.auth_call_timeout())
        }
    }
}

impl ClientSettings {
    /// How the endpoints are secured: TLS when any `AUTH_TLS_*` is set or
    /// any URL is `https://`, built from the files now (a bad file stops the
    /// gateway at start, naming it). With files to follow, what they held.
    pub(super) fn security(&self) -> Result<(Security, Option<Snapshot>), ClientConfigError> {
        let files = &self.tls;
        let any_https = self.urls.iter().any(|url| {
            url.trim()
                .get(..8)
                .is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
        });
        if !any_https && !files.is_set() {
            let plain = Security {
                tls: None,
                dns_tls: false,
            };
            return Ok((plain, None));
        }
        let snapshot = Snapshot::read(files)?;
        let security = Security {
            tls: Some(snapshot.build(files)?),
            dns_tls: files.is_set(),
        };
        // Only files can change; the system's roots are read once.
        let followed = files.ca_file.is_some() || files.cert_file.is_some();
        Ok((security, followed.then_some(snapshot)))
    }

    /// `Bearer <key>`, marked sensitive so its Debug is redacted.
    pub(super) fn authorization(&self) -> Result<Option<MetadataValue<Ascii>>, ClientConfigError> {
        let Some(key) = &self.api_key else {
            return Ok(None);
        };
        let mut value: MetadataValue<Ascii> = format!("Bearer {}", key.expose_secret())
            .parse()
            .map_err(|_| ClientConfigError::BadKey)?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// Invalid `AUTH_URL`, `AUTH_API_KEY` or `AUTH_TLS_*`.
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
    #[error("AUTH_URL entry {url:?} is plaintext while AUTH_TLS_* asks for TLS; use https://")]
    PlaintextWithTls { url: String },
    #[error(transparent)]
    Tls(#[from] ClientTlsError),
}

#[cfg(test)]
mod tests {
    use super::super::AuthClient;
    use super::*;
    use crate::metrics::Metrics;

    #[tokio::test]
    async fn bad_urls_are_refused_and_good_ones_connect_lazily() {
        let metrics = Metrics::default();
        let timeout = Duration::from_millis(100);
        assert!(matches!(
            AuthClient::new(&[], None, timeout, metrics.clone()),
            Err(ClientConfigError::NoUrl)
        ));
        assert!(matches!(
            AuthClient::new(&[" ".into()], None, timeout, metrics.clone()),
            Err(ClientConfigError::NoUrl)
        ));
        let bad = vec!["http://127.0.0.1:1".to_owned(), "not a url".to_owned()];
        match AuthClient::new(&bad, None, timeout, metrics.clone()) {
            Err(ClientConfigError::BadUrl { url, .. }) => assert_eq!(url, "not a url"),
            _ => panic!("a bad url must be refused"),
        }
        // Nothing listens there: building must still succeed.
        let urls = vec![
            "http://127.0.0.1:9".to_owned(),
            "http://127.0.0.1:10".to_owned(),
        ];
        assert!(AuthClient::new(&urls, None, timeout, metrics).is_ok());
    }

    #[tokio::test]
    async fn an_unusable_key_is_refused() {
        let mut settings =
            ClientSettings::new(vec!["http://127.0.0.1:1".into()], Duration::from_secs(1));
        settings.api_key = Some("line\nbreak".into());
        assert!(matches!(
            AuthClient::from_settings(settings, Metrics::default()),
            Err(ClientConfigError::BadKey)
        ));
    }
}
