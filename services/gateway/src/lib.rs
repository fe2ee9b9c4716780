//! The wsauth gateway: WebSockets authenticated in two phases against auth.
//!
//! One request, end to end:
//! 1. [`routes`] `GET /token/ws` trades a JWT for a ws token (auth's IssueWsToken);
//! 2. `GET /ws?token=` checks Origin, then ValidateToken, and only then answers 101;
//! 3. [`session`] waits for the `{"type":"jwt"}` frame, VerifyJwt, same user → `auth_ok`;
//! 4. the session registers with the [`hub::Hub`], which the [`subscriber::Subscriber`]
//!    feeds from auth's Subscribe stream; the session echoes, refreshes, pings, and
//!    closes with the contract's [`close::CloseCode`].
//!
//! [`run`] owns the server; `main.rs` only parses config and binds.
#![forbid(unsafe_code)]

pub mod auth_client;
pub mod close;
pub mod config;
pub mod error;
pub mod hub;
pub mod message;
pub mod metrics;
pub mod rate;
pub mod routes;
pub mod session;
pub mod state;
pub mod subscriber;

use std::future::Future;

use axum::serve::ListenerExt as _;
use tokio::net::TcpListener;

use crate::auth_client::{AuthClient, ClientConfigError};
pub use crate::config::Config;
use crate::metrics::Metrics;
pub use crate::routes::app;
use crate::state::AppState;
use crate::subscriber::Subscriber;

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    AuthClient(#[from] ClientConfigError),
    #[error("server failed: {0}")]
    Serve(#[from] std::io::Error),
}

/// Serves the gateway on `listener` until `shutdown` resolves, then closes
/// every socket with 1001 and returns within `SHUTDOWN_GRACE_S`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let metrics = Metrics::default();
    let auth = AuthClient::new(
        &config.auth_url,
        config.auth_api_key.as_ref(),
        config.auth_call_timeout(),
        metrics.clone(),
    )?;
    let (state, tick_tx) = AppState::new(&config, auth.clone(), metrics.clone());
    let cancel = state.shutdown.clone();
    let tracker = state.tracker.clone();

    let gateway_id = config.resolved_gateway_id();
    tracing::info!(%gateway_id, auth_url = ?config.auth_url, "gateway starting");
    tracker.spawn(
        Subscriber {
            client: auth,
            hub: state.hub.clone(),
            metrics,
            gateway_id,
            shutdown: cancel.clone(),
        }
        .run(),
    );

    // One timer for every session's keepalive instead of one per socket.
    let ping_interval = config.ping_interval();
    let ticker_cancel = cancel.clone();
    tracker.spawn(async move {
        let mut interval =
            tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = ticker_cancel.cancelled() => break,
                _ = interval.tick() => tick_tx.send_modify(|n| *n = n.wrapping_add(1)),
            }
        }
    });

    let listener = listener.tap_io(|tcp| {
        // Small frames must not wait for Nagle.
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::debug!(%error, "cannot set TCP_NODELAY");
        }
    });
    let server_cancel = cancel.clone();
    let server = axum::serve(listener, app(state))
        .with_graceful_shutdown(async move { server_cancel.cancelled().await });
    let mut server = tokio::spawn(server.into_future());

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
        Ok(Ok(result)) => result?,
        Ok(Err(join)) => tracing::error!(error = %join, "server task failed"),
        Err(_) => tracing::warn!(
            grace_s = grace.as_secs(),
            "shutdown grace elapsed; dropping remaining connections"
        ),
    }
    tracing::info!("gateway stopped");
    Ok(())
}
