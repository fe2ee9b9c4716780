//! TLS from the gateway to auth: which CA verifies auth (`AUTH_TLS_CA_FILE`,
//! else the system's roots), the client certificate it presents
//! (`AUTH_TLS_CERT_FILE` + `AUTH_TLS_KEY_FILE`), and the name it verifies
//! (`AUTH_TLS_SERVER_NAME`). rustls with ring, as the rest of the project.
//!
//! The files are read again every few seconds; when they changed and still
//! make a valid config, every TLS channel is rebuilt with it, so new
//! connections use the new files while established ones (a Subscribe
//! stream) carry on with the old.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::PrivateKeyDer;
use rustls::pki_types::pem::PemObject;
use tonic::transport::{ClientTlsConfig, Endpoint, Identity};
use wsauth_shared::tls::{TlsError, certificates};

use super::endpoints::Endpoints;

/// How often the files are looked at: well within the 60 s the contract allows.
pub(super) const RELOAD_INTERVAL: Duration = wsauth_shared::tls::RELOAD_INTERVAL;
/// A TLS handshake with auth must finish within this (each call's own
/// deadline is usually shorter and applies too).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The `AUTH_TLS_*` settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// CA certificates (PEM) that verify auth; unset: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The gateway's client certificate chain (PEM), for mTLS.
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// The name auth's certificate must carry; default the URL's or DNS name's host.
    pub server_name: Option<String>,
}

impl ClientTlsFiles {
    /// Whether any `AUTH_TLS_*` is set: then every endpoint speaks TLS.
    pub fn is_set(&self) -> bool {
        self.ca_file.is_some()
            || self.cert_file.is_some()
            || self.key_file.is_some()
            || self.server_name.is_some()
    }
}

/// Why the TLS settings do not make a client config. Names files, never
/// their contents.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    #[error("AUTH_TLS_CERT_FILE and AUTH_TLS_KEY_FILE go together")]
    HalfIdentity,
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// A certificate file that holds no PEM certificate (the same check as
    /// every other certificate file of the project).
    #[error(transparent)]
    Certificates(#[from] TlsError),
    #[error("{path}: not a PEM certificate file: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path}: no usable PEM private key in it: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("no system root certificates found; set AUTH_TLS_CA_FILE")]
    NoSystemRoots,
    #[error("AUTH_TLS_SERVER_NAME {0:?} is not a DNS name or IP address")]
    BadServerName(String),
    #[error("verifying auth with these CAs: {0}")]
    Verifier(#[from] rustls::client::VerifierBuilderError),
    #[error("TLS configuration (does the key belong to the certificate?): {0}")]
    Config(String),
}

/// What the channels are built with: the verifier of auth's certificate
/// and a config with the client certificate, if any. Cheap to clone.
#[derive(Clone)]
pub(super) struct ClientTls {
    config: ClientTlsConfig,
    verifier: Arc<dyn ServerCertVerifier>,
    server_name: Option<String>,
}

/// Says which name it verifies; the key stays out of logs.
impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl ClientTls {
    /// `endpoint` speaking TLS, verifying `server_name` if given, else
    /// `default_name` if given, else the endpoint's host.
    pub(super) fn apply(
        &self,
        endpoint: Endpoint,
        default_name: Option<&str>,
    ) -> Result<Endpoint, tonic::transport::Error> {
        let mut config = self.config.clone();
        if let Some(name) = self.server_name.as_deref().or(default_name) {
            config = config.domain_name(name);
        }
        endpoint.tls_config_with_verifier(config, Arc::clone(&self.verifier))
    }
}

/// The files' bytes at one moment: what a config is built from, and what a
/// reload compares against (contents, not times: a swapped symlinked
/// directory shows as a change).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Snapshot {
    ca: Option<Vec<u8>>,
    cert: Option<Vec<u8>>,
    key: Option<Vec<u8>>,
}

fn read_optional(path: Option<&Path>) -> Result<Option<Vec<u8>>, ClientTlsError> {
    path.map(|path| {
        std::fs::read(path).map_err(|source| ClientTlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    })
    .transpose()
}

impl Snapshot {
    /// Reads the files (blocking: small files, at start and on the reload
    /// task's own schedule).
    pub(super) fn read(files: &ClientTlsFiles) -> Result<Self, ClientTlsError> {
        if files.cert_file.is_some() != files.key_file.is_some() {
            return Err(ClientTlsError::HalfIdentity);
        }
        Ok(Self {
            ca: read_optional(files.ca_file.as_deref())?,
            cert: read_optional(files.cert_file.as_deref())?,
            key: read_optional(files.key_file.as_deref())?,
        })
    }

    /// The TLS setup these bytes make, checked as far as can be without
    /// connecting (a key that does not match its certificate is refused).
    pub(super) fn build(&self, files: &ClientTlsFiles) -> Result<ClientTls, ClientTlsError> {
        let mut roots = RootCertStore::empty();
        match (&self.ca, &files.ca_file) {
            (Some(pem), Some(path)) => {
                for ca in certificates(pem, path)? {
                    roots.add(ca).map_err(|e| ClientTlsError::BadCertificate {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                }
            }
            _ => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(ClientTlsError::NoSystemRoots);
                }
            }
        }
        let provider = wsauth_shared::tls::provider();
        let verifier =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
        let mut config = ClientTlsConfig::new().timeout(HANDSHAKE_TIMEOUT);
        if let (Some(cert), Some(key), Some(cert_path), Some(key_path)) =
            (&self.cert, &self.key, &files.cert_file, &files.key_file)
        {
            certificates(cert, cert_path)?;
            PrivateKeyDer::from_pem_slice(key).map_err(|e| ClientTlsError::BadKey {
                path: key_path.clone(),
                reason: e.to_string(),
            })?;
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &files.server_name
            && rustls::pki_types::ServerName::try_from(name.as_str()).is_err()
        {
            return Err(ClientTlsError::BadServerName(name.clone()));
        }
        let tls = ClientTls {
            config,
            verifier,
            server_name: files.server_name.clone(),
        };
        // tonic builds the rustls config here: a key that does not match
        // its certificate fails now, not on every connect.
        tls.apply(Endpoint::from_static("https://auth.invalid"), None)
            .map_err(|e| ClientTlsError::Config(error_chain(&e)))?;
        Ok(tls)
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Re-reads `files` every [`RELOAD_INTERVAL`] until the client is dropped;
/// when they changed and build, rebuilds the TLS channels of `endpoints`.
/// A change that does not build (a certificate written before its key)
/// keeps the old setup, with a warning, and is tried again on the next change.
pub(super) async fn follow(endpoints: Weak<Endpoints>, files: ClientTlsFiles, mut seen: Snapshot) {
    let mut last_error = None;
    loop {
        tokio::time::sleep(RELOAD_INTERVAL).await;
        let read = {
            let files = files.clone();
            tokio::task::spawn_blocking(move || Snapshot::read(&files)).await
        };
        let Some(live) = endpoints.upgrade() else {
            return;
        };
        let outcome = match read {
            Ok(Ok(snapshot)) if snapshot == seen => Ok(false),
            Ok(Ok(snapshot)) => {
                let built = snapshot.build(&files);
                seen = snapshot;
                built.map(|tls| live.set_tls(tls)).map(|()| true)
            }
            Ok(Err(error)) => Err(error),
            Err(join) => Err(ClientTlsError::Config(join.to_string())),
        };
        match outcome {
            Ok(true) => {
                tracing::info!("AUTH_TLS_* files changed: new connections to auth use them");
                last_error = None;
            }
            Ok(false) => {}
            Err(error) => {
                let text = error.to_string();
                if last_error.as_ref() != Some(&text) {
                    tracing::warn!(error = %text, "AUTH_TLS_* files do not make a valid TLS setup; keeping the previous one");
                }
                last_error = Some(text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use wsauth_tests::pki::{PkiDir, TestCa};

    use super::super::target::Security;
    use super::*;

    fn files(dir: &PkiDir, ca: &TestCa) -> ClientTlsFiles {
        let (cert, key) = dir.write_leaf("gateway", &ca.leaf("gateway"));
        ClientTlsFiles {
            ca_file: Some(dir.write("ca.pem", &ca.pem())),
            cert_file: Some(cert),
            key_file: Some(key),
            server_name: None,
        }
    }

    fn build(files: &ClientTlsFiles) -> Result<ClientTls, String> {
        Snapshot::read(files)
            .and_then(|s| s.build(files))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn good_files_build_and_bad_ones_are_named() {
        let ca = TestCa::new("gateway tls unit CA");
        let dir = PkiDir::new();
        let good = files(&dir, &ca);
        assert!(build(&good).is_ok());

        let half = ClientTlsFiles {
            key_file: None,
            ..good.clone()
        };
        assert!(build(&half).is_err_and(|e| e.contains("go together")));

        let empty = dir.write("empty.pem", "not pem at all\n");
        let no_ca = ClientTlsFiles {
            ca_file: Some(empty.clone()),
            ..good.clone()
        };
        let error = build(&no_ca).expect_err("no CA in it");
        assert!(
            error.contains("empty.pem") && error.contains("no PEM certificate"),
            "{error}"
        );

        let missing = ClientTlsFiles {
            cert_file: Some(dir.path().join("absent.pem")),
            ..good.clone()
        };
        assert!(build(&missing).is_err_and(|e| e.contains("absent.pem")));

        let no_key = ClientTlsFiles {
            key_file: Some(empty),
            ..good.clone()
        };
        assert!(build(&no_key).is_err_and(|e| e.contains("private key")));

        // Another leaf's key does not belong to the certificate.
        let (_, other_key) = dir.write_leaf("other", &ca.leaf("other"));
        let mismatched = ClientTlsFiles {
            key_file: Some(other_key),
            ..good.clone()
        };
        assert!(build(&mismatched).is_err(), "a key of another certificate");

        let bad_name = ClientTlsFiles {
            server_name: Some("not a name!".into()),
            ..good
        };
        assert!(build(&bad_name).is_err_and(|e| e.contains("AUTH_TLS_SERVER_NAME")));
    }

    #[test]
    fn a_reload_sees_changed_contents_only() {
        let ca = TestCa::new("gateway tls unit CA");
        let dir = PkiDir::new();
        let files = files(&dir, &ca);
        let first = Snapshot::read(&files).expect("readable");
        assert_eq!(Snapshot::read(&files).expect("readable"), first);
        dir.write_leaf("gateway", &ca.leaf("gateway"));
        assert_ne!(Snapshot::read(&files).expect("readable"), first);
    }

    #[tokio::test]
    async fn new_tls_rebuilds_the_tls_channels_and_leaves_snapshots_alone() {
        let ca = TestCa::new("gateway tls unit CA");
        let dir = PkiDir::new();
        let files = files(&dir, &ca);
        let tls = build(&files).expect("good files");
        let urls = vec![
            "https://127.0.0.1:1".to_owned(),
            "dns:///auth.test:2".to_owned(),
        ];
        let security = Security {
            tls: Some(tls.clone()),
            dns_tls: true,
        };
        let (endpoints, _) =
            Endpoints::new(&urls, Duration::from_millis(100), security).expect("valid");
        endpoints.set_addresses(1, &[std::net::SocketAddr::from(([127, 0, 0, 2], 2))].into());
        let before = endpoints.current();
        endpoints.set_tls(tls);
        let after = endpoints.current();
        assert_eq!(after.len(), 2);
        for (old, new) in before.iter().zip(after.iter()) {
            assert_eq!(old.label, new.label);
            assert!(!Arc::ptr_eq(old, new), "{} has a new channel", new.label);
        }

        let plain = vec!["http://127.0.0.1:1".to_owned()];
        let security = Security {
            tls: Some(build(&files).expect("good files")),
            dns_tls: true,
        };
        assert!(
            Endpoints::new(&plain, Duration::from_millis(100), security)
                .is_err_and(|e| e.to_string().contains("plaintext")),
            "http:// beside AUTH_TLS_* is refused"
        );
    }
}
