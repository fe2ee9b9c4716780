//! TLS for both services' listeners: PEM files → a rustls `ServerConfig`
//! (ring, optionally requiring client certificates), re-read when the files
//! change on disk, and an accept loop that hands out handshaken streams.
//!
//! Reloading swaps the whole config (certificate *and* client CA) through an
//! `ArcSwap`: each handshake takes the config current at its start, so
//! established connections keep theirs and nothing is dropped.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::RootCertStore;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// How often the files are re-read: well within the 60 s the contract allows.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(5);
/// A client must finish its handshake within this, or is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; past it, accepting waits (the kernel's
/// backlog holds the rest), so a handshake flood cannot grow memory.
const MAX_PENDING_HANDSHAKES: usize = 1024;

/// The PEM files a TLS listener is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by one of these CAs.
    pub client_ca: Option<PathBuf>,
}

/// Why a TLS config could not be built. Names the file, never its contents.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: no PEM certificate in it")]
    NoCertificate { path: PathBuf },
    #[error("{path}: not a PEM certificate file: {reason}")]
    BadCertificate { path: PathBuf, reason: String },
    #[error("{path}: no usable PEM private key in it: {reason}")]
    BadKey { path: PathBuf, reason: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("client CA: {0}")]
    ClientCa(#[from] rustls::server::VerifierBuilderError),
}

/// The ring provider: the one TLS backend of this project.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Makes ring the process-wide provider, for the libraries that pick one
/// themselves (they panic when more than one is compiled in and none is
/// installed). Call first thing in `main`; a second call changes nothing.
pub fn install_default_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The files' bytes at one moment: what a config is built from, and what a
/// reload compares against.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl Snapshot {
    /// Reads every file (following symlinks, so a swapped symlinked
    /// directory is seen as a change).
    async fn read(files: &TlsFiles) -> Result<Self, TlsError> {
        let client_ca = match &files.client_ca {
            Some(path) => Some(read(path).await?),
            None => None,
        };
        Ok(Self {
            cert: read(&files.cert).await?,
            key: read(&files.key).await?,
            client_ca,
        })
    }

    fn build(&self, files: &TlsFiles, alpn: &[Vec<u8>]) -> Result<ServerConfig, TlsError> {
        let chain = certificates(&self.cert, &files.cert)?;
        let key = PrivateKeyDer::from_pem_slice(&self.key).map_err(|e| TlsError::BadKey {
            path: files.key.clone(),
            reason: e.to_string(),
        })?;
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?;
        let builder = match (&self.client_ca, &files.client_ca) {
            (Some(pem), Some(path)) => {
                let mut roots = RootCertStore::empty();
                for ca in certificates(pem, path)? {
                    roots.add(ca)?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .build()?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key)?;
        config.alpn_protocols = alpn.to_vec();
        Ok(config)
    }
}

async fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    tokio::fs::read(path)
        .await
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
}

/// The certificates of a PEM file's contents, in order; an error naming
/// `path` when it holds none or is not PEM.
pub fn certificates(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::BadCertificate {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(chain)
}

/// A server config that follows its files. Cheap to clone.
#[derive(Clone)]
pub struct ReloadingServerConfig {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    alpn: Vec<Vec<u8>>,
    current: ArcSwap<ServerConfig>,
    /// The bytes last looked at, whether they built or not (std Mutex: never
    /// held across an await).
    seen: Mutex<Snapshot>,
}

impl ReloadingServerConfig {
    /// Builds the config from `files`, offering `alpn` (`h2` for gRPC,
    /// `http/1.1` for the gateway). Fails when the files do not make one.
    pub async fn load(files: TlsFiles, alpn: Vec<Vec<u8>>) -> Result<Self, TlsError> {
        let snapshot = Snapshot::read(&files).await?;
        let config = snapshot.build(&files, &alpn)?;
        Ok(Self {
            inner: Arc::new(Inner {
                files,
                alpn,
                current: ArcSwap::from_pointee(config),
                seen: Mutex::new(snapshot),
            }),
        })
    }

    /// The config new handshakes use now.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.inner.current.load_full()
    }

    /// An acceptor for one handshake, with the current config.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current())
    }

    /// Re-reads the files; when they changed and build, new handshakes use
    /// them. `Ok(true)`: swapped. A change that does not build (say a
    /// certificate written before its key) keeps the old config and is
    /// reported once; the next change is tried again.
    pub async fn refresh(&self) -> Result<bool, TlsError> {
        let snapshot = Snapshot::read(&self.inner.files).await?;
        {
            let mut seen = self.inner.seen.lock().unwrap_or_else(|e| e.into_inner());
            if *seen == snapshot {
                return Ok(false);
            }
            *seen = Snapshot {
                cert: snapshot.cert.clone(),
                key: snapshot.key.clone(),
                client_ca: snapshot.client_ca.clone(),
            };
        }
        let config = snapshot.build(&self.inner.files, &self.inner.alpn)?;
        self.inner.current.store(Arc::new(config));
        Ok(true)
    }

    /// Refreshes every `interval` until `stop` resolves.
    pub async fn watch(self, interval: Duration, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                () = &mut stop => break,
                _ = tick.tick() => {}
            }
            match self.refresh().await {
                Ok(true) => {
                    tracing::info!(cert = %self.inner.files.cert.display(), "TLS certificate files reloaded")
                }
                Ok(false) => {}
                Err(error) => {
                    tracing::warn!(%error, "TLS files changed but do not make a valid config; keeping the previous one")
                }
            }
        }
    }
}

/// Accepts TCP connections on `listener` and yields them once their TLS
/// handshake (with `tls`'s current config, within [`HANDSHAKE_TIMEOUT`]) is
/// done; failed handshakes are dropped. Accepting stops when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    tls: ReloadingServerConfig,
) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
    let (tx, rx) = mpsc::channel(64);
    tokio::spawn(accept_loop(listener, tls, tx));
    ReceiverStream::new(rx)
}

async fn accept_loop(
    listener: TcpListener,
    tls: ReloadingServerConfig,
    tx: mpsc::Sender<io::Result<TlsStream<TcpStream>>>,
) {
    let pending = Arc::new(Semaphore::new(MAX_PENDING_HANDSHAKES));
    loop {
        let permit = tokio::select! {
            () = tx.closed() => return,
            permit = pending.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
        };
        let accepted = tokio::select! {
            () = tx.closed() => return,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Small request/response exchanges: no Nagle delay.
        let _ = tcp.set_nodelay(true);
        let acceptor = tls.acceptor();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => {
                    let _ = tx.send(Ok(stream)).await;
                }
                Ok(Err(error)) => tracing::debug!(%peer, %error, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tests;
