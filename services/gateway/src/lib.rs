//! The wsauth gateway: WebSockets authenticated in two phases against auth.
//!
//! One request, end to end, and the modules it passes through:
//! 1. [`routes`] `GET /token/ws` trades a JWT for a ws token through the
//!    [`auth_client`] (IssueWsToken, with endpoint failover and deadlines);
//! 2. `GET /ws?token=` checks Origin, then ValidateToken, and only then answers
//!    101 over a [`socket`], whose writer sends each text frame from its shared bytes;
//! 3. a [`session`] waits for the `{"type":"jwt"}` frame, VerifyJwt, same user →
//!    `auth_ok`, replays `since`, then echoes, refreshes and closes with a [`close`] code;
//! 4. the session registers with the [`hub`], which the [`subscriber`] feeds with
//!    [`event`]s from auth's Subscribe stream, and whose driver pings every socket.
//!
//! [`presence::Reporter`] tells auth what this gateway holds, for operators.
//! With GATEWAY_TLS_* the listener speaks HTTPS and `wss://` ([`tls`]).
//!
//! `oracles` (tests and the fuzz crate only, feature `oracles`) restates the
//! contract's rules that those tests judge the gateway by.
//!
//! [`run`] owns the server; `main.rs` only parses config and binds.
#![forbid(unsafe_code)]

pub mod admission;
pub mod auth_client;
pub mod client_ip;
pub mod close;
pub mod config;
pub mod error;
pub mod event;
pub mod hub;
pub mod ip_rate;
pub mod message;
pub mod metrics;
#[cfg(any(test, feature = "oracles"))]
pub mod oracles;
pub mod presence;
pub mod rate;
pub mod routes;
pub mod session;
pub mod socket;
pub mod state;
pub mod subscriber;
pub mod tls;

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;

use wsauth_shared::tls::{RELOAD_INTERVAL, ReloadingServerConfig, TlsError};

use crate::auth_client::{AuthClient, ClientConfigError, ClientSettings};
pub use crate::config::Config;
use crate::config::HalfTlsPair;
use crate::metrics::Metrics;
pub use crate::routes::app;
use crate::state::AppState;
use crate::subscriber::Subscriber;

/// How long a client may take to send a request's headers, and how long an
/// idle keep-alive connection is kept (hyper restarts this timer while it
/// waits for the next request): a silent or trickling client is dropped.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    AuthClient(#[from] ClientConfigError),
    #[error(transparent)]
    HalfTlsPair(#[from] HalfTlsPair),
    #[error("gateway listener TLS: {0}")]
    ListenerTls(#[from] TlsError),
}

/// Serves the gateway on `listener` until `shutdown` resolves, then closes
/// every socket with 1001 and returns within `SHUTDOWN_GRACE_S`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    // Bad certificate files stop the start, before anything else runs.
    let tls = match config.listener_tls_files()? {
        Some(files) => Some(tls::load(files).await?),
        None => None,
    };
    let metrics = Metrics::default();
    let auth = AuthClient::from_settings(ClientSettings::from_config(&config), metrics.clone())?;
    let state = AppState::new(&config, auth.clone(), metrics.clone());
    let cancel = state.shutdown.clone();
    let tracker = state.tracker.clone();

    let gateway_id = config.resolved_gateway_id();
    tracing::info!(%gateway_id, auth_url = ?config.auth_url, "gateway starting");
    tracker.spawn(
        Subscriber {
            client: auth,
            hub: state.hub.clone(),
            metrics: metrics.clone(),
            ready: state.ready.clone(),
            gateway_id: gateway_id.clone(),
            shutdown: cancel.clone(),
        }
        .run(),
    );
    tracker.spawn(
        presence::Reporter {
            client: state.auth.clone(),
            hub: state.hub.clone(),
            metrics,
            gateway_id,
            shutdown: cancel.clone(),
        }
        .run(),
    );
    // One task pings every socket (no timer per socket) and closes them on shutdown.
    tracker.spawn(
        state
            .hub
            .clone()
            .drive(config.ping_interval(), cancel.clone()),
    );

    if let Some(tls) = &tls {
        tracing::info!("serving HTTPS and wss://");
        tracker.spawn(
            tls.clone()
                .watch(RELOAD_INTERVAL, cancel.clone().cancelled_owned()),
        );
    }

    let server = serve(
        listener,
        app(state),
        cancel.clone(),
        tracker.clone(),
        HEADER_READ_TIMEOUT,
        tls,
    );
    let mut server = tokio::spawn(server);

    let served = tokio::select! {
        () = shutdown => None,
        result = &mut server => Some(result),
    };
    cancel.cancel();
    tracker.close();
    let grace = config.shutdown_grace();
    let drained = tokio::time::timeout(grace, async {
        let result = match served {
            Some(result) => result,
            None => server.await,
        };
        tracker.wait().await;
        result
    })
    .await;
    match drained {
        Ok(Ok(())) => {}
        Ok(Err(join)) => tracing::error!(error = %join, "server task failed"),
        Err(_) => tracing::warn!(
            grace_s = grace.as_secs(),
            "shutdown grace elapsed; dropping remaining connections"
        ),
    }
    tracing::info!("gateway stopped");
    Ok(())
}

/// Accepts HTTP/1.1 connections (with upgrades, for WebSockets) until
/// `cancel`, serving `app` on each. A connection must deliver each request's
/// headers within `header_read_timeout`, which also bounds how long an idle
/// keep-alive connection lives. On `cancel` the listener closes and each
/// connection finishes its current request; upgraded sockets are no longer
/// hyper's and are closed by their sessions. Connection tasks run on
/// `tracker`, so shutdown can wait for them.
///
/// With `tls`, each connection first completes a TLS handshake within
/// [`tls::HANDSHAKE_TIMEOUT`] (in its own task, so a slow one holds up no
/// other), then is served the same way over the encrypted stream.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    cancel: CancellationToken,
    tracker: TaskTracker,
    header_read_timeout: Duration,
    tls: Option<ReloadingServerConfig>,
) {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: wait, don't spin.
                tracing::warn!(%error, "accept failed");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                }
            }
        };
        // Small frames must not wait for Nagle.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
        // The peer, for PER_IP_RATE (and X-Forwarded-For behind TRUSTED_PROXIES).
        let service = TowerToHyperService::new(app.clone().map_request(
            move |mut request: axum::extract::Request<hyper::body::Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let http = http.clone();
        let tls = tls.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let stream = match &tls {
                None => tls::Conn::Plain(tcp),
                Some(tls) => {
                    match tls::handshake(tls, tcp, peer, tls::HANDSHAKE_TIMEOUT, &cancel).await {
                        Some(stream) => tls::Conn::Tls(stream),
                        None => return,
                    }
                }
            };
            let connection = http
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            let mut connection = pin!(connection);
            let served = tokio::select! {
                served = connection.as_mut() => served,
                () = cancel.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, "http connection ended with an error");
            }
        });
    }
    // Dropping the listener here refuses new connections at once.
}
