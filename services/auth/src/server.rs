//! Wiring and serving: the store, the gRPC services (with health and
//! reflection), caller keys, and graceful shutdown.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use wsauth_shared::proto::FILE_DESCRIPTOR_SET;
use wsauth_shared::proto::admin_service_server::AdminServiceServer;
use wsauth_shared::proto::auth_service_server::AuthServiceServer;
use wsauth_shared::proto::broadcast_service_server::BroadcastServiceServer;
use wsauth_shared::tls::{self, ReloadingServerConfig, TlsError};

use crate::authority::Authority;
use crate::caller::CallerKeys;
use crate::config::Config;
use crate::events::Events;
use crate::grpc::{AdminGrpc, AuthGrpc, BroadcastGrpc, GateLayer, TraceLayer};
use crate::jwt::{JwtConfigError, JwtVerifier};
use crate::metrics::{self, AuthMetrics, GrpcMetricsLayer, MeteredStore};
use crate::presence::{MemoryPresence, PresenceStore, RedisPresence};
use crate::store::redis::RedisSettings;
use crate::store::{MemoryStore, RedisStore, Store, StoreError};

/// Largest decoded AuthService request: a JWT or ws token (8 KiB at most)
/// with room for its framing.
const AUTH_MAX_REQUEST_BYTES: usize = 16 * 1024;
/// What a BroadcastService request may carry beside Publish's `data`.
const BROADCAST_REQUEST_OVERHEAD: usize = 1024;
/// Largest decoded health or reflection request: a service or symbol name.
const OPEN_MAX_REQUEST_BYTES: usize = 16 * 1024;
/// Streams a client may open and reset before its connection is refused
/// (HTTP/2 rapid reset, CVE-2023-44487).
const MAX_PENDING_RESETS: usize = 32;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The JWT settings are missing or unreadable.
    #[error(transparent)]
    Jwt(#[from] JwtConfigError),
    /// No caller keys and a non-loopback address.
    #[error(
        "refusing to listen on {0} without caller keys: set INTERNAL_API_KEYS and ADMIN_API_KEYS, \
         or listen on a loopback address"
    )]
    OpenOnNonLoopback(std::net::SocketAddr),
    /// The store could not be set up.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `AUTH_METRICS_LISTEN` cannot be bound.
    #[error("cannot serve metrics on AUTH_METRICS_LISTEN={addr}: {error}")]
    MetricsListen {
        addr: std::net::SocketAddr,
        error: std::io::Error,
    },
    /// The listener has no address.
    #[error("listener: {0}")]
    Listener(#[from] std::io::Error),
    /// The gRPC transport failed.
    #[error("grpc transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// TLS_CERT_FILE, TLS_KEY_FILE or TLS_CLIENT_CA_FILE do not make a TLS config.
    #[error("TLS: {0}")]
    Tls(#[from] TlsError),
}

/// Serves auth on `listener` until `shutdown` resolves, then drains in-flight
/// calls for at most `SHUTDOWN_GRACE_S`. Subscriptions end themselves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let addr = listener.local_addr()?;
    let keys = CallerKeys::new(&config.internal_api_keys, &config.admin_api_keys);
    if keys.is_open() && !addr.ip().is_loopback() {
        return Err(ServeError::OpenOnNonLoopback(addr));
    }
    if keys.is_open() {
        tracing::warn!("no INTERNAL_API_KEYS or ADMIN_API_KEYS: every local caller is admin");
    }
    let verifier = JwtVerifier::from_config(&config)?;
    let metrics = AuthMetrics::new();
    let metrics_listener = match config.auth_metrics_listen.0 {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|error| ServeError::MetricsListen { addr, error })?,
        ),
        None => None,
    };
    // Before the store connects: bad certificate files fail the start at once.
    let tls = match config.tls_files() {
        Some(files) => Some(ReloadingServerConfig::load(files, vec![b"h2".to_vec()]).await?),
        None => None,
    };

    let stop = CancellationToken::new();
    // The stream reader and every Subscribe forwarder: `run` returns after they stop.
    let tasks = TaskTracker::new();
    let retention = config.event_retention;
    // Presence lives beside the store, on its connection (every mode, TLS).
    let (store, presence): (Arc<dyn Store>, Arc<dyn PresenceStore>) =
        match RedisSettings::from_config(&config)? {
            Some(settings) => {
                let redis = RedisStore::connect(&settings, stop.clone(), &tasks).await?;
                (Arc::new(redis.clone()), Arc::new(RedisPresence::new(redis)))
            }
            None => {
                tracing::warn!(
                    "no Redis configured (REDIS_URL, REDIS_CLUSTER_URLS or REDIS_SENTINEL_URLS): \
                     using the embedded in-memory store, which serves ONE auth replica only \
                     (state is lost on restart and not shared)"
                );
                (
                    Arc::new(MemoryStore::new(
                        usize::try_from(retention).unwrap_or(usize::MAX),
                    )),
                    Arc::new(MemoryPresence::new()),
                )
            }
        };
    let store = MeteredStore::wrap(store, metrics.clone());
    tasks.spawn(metrics::store::watch_reader_lag(
        store.clone(),
        metrics.clone(),
        stop.clone(),
    ));
    if let Some(listener) = metrics_listener {
        tracing::info!(addr = %listener.local_addr()?, "serving metrics");
        tasks.spawn(metrics::serve(listener, metrics.clone(), stop.clone()));
    }
    let live_ready = store.live_ready();
    let events = Events::new(store.clone());
    let authority = Authority::new(
        verifier,
        store,
        events.clone(),
        Duration::from_secs(config.ws_token_ttl_s),
        config.ws_token_reuse,
        config.jwt_leeway_s,
    );

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AuthServiceServer<AuthGrpc>>().await;
    tasks.spawn(report_broadcast_health(
        health.clone(),
        live_ready,
        stop.clone(),
    ));
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(reflection_error)?
        .max_decoding_message_size(OPEN_MAX_REQUEST_BYTES);
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(reflection_error)?
        .max_decoding_message_size(OPEN_MAX_REQUEST_BYTES);
    let health_service = health_service.max_decoding_message_size(OPEN_MAX_REQUEST_BYTES);

    let auth = AuthServiceServer::new(AuthGrpc::new(authority))
        .max_decoding_message_size(AUTH_MAX_REQUEST_BYTES);
    let broadcast = BroadcastServiceServer::new(BroadcastGrpc::new(
        events,
        config.max_event_bytes,
        stop.clone(),
        tasks.clone(),
    ))
    .max_decoding_message_size(config.max_event_bytes + BROADCAST_REQUEST_OVERHEAD);
    let admin = AdminServiceServer::new(AdminGrpc::new(presence))
        .max_decoding_message_size(AUTH_MAX_REQUEST_BYTES);
    health.set_serving::<AdminServiceServer<AdminGrpc>>().await;

    let router = Server::builder()
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_max_pending_accept_reset_streams(Some(MAX_PENDING_RESETS))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)))
        // Outermost: the caller's trace covers everything below.
        .layer(TraceLayer)
        // Outside the gate, so refused calls are counted too.
        .layer(GrpcMetricsLayer::new(metrics))
        // The key check and the deadline run before any routing or decoding.
        .layer(GateLayer::new(keys, config.rpc_timeout()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(auth)
        .add_service(broadcast)
        .add_service(admin);

    let drained = stop.clone();
    let until_stopped = async move { drained.cancelled().await };
    let serve: Pin<Box<dyn Future<Output = Result<(), tonic::transport::Error>> + Send>> = match tls
    {
        Some(tls) => {
            tasks.spawn(
                tls.clone()
                    .watch(tls::RELOAD_INTERVAL, stop.clone().cancelled_owned()),
            );
            tracing::info!(
                client_certificates = config.tls_client_ca_file.is_some(),
                "serving gRPC over TLS"
            );
            Box::pin(
                router.serve_with_incoming_shutdown(tls::incoming(listener, tls), until_stopped),
            )
        }
        None => {
            // Small request/response exchanges: without TCP_NODELAY, Nagle and the
            // peer's delayed ACK add ~40 ms to a share of the calls.
            let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
            Box::pin(router.serve_with_incoming_shutdown(incoming, until_stopped))
        }
    };
    tokio::pin!(serve);
    let grace = config.shutdown_grace();
    tasks.close();
    let served = tokio::select! {
        result = &mut serve => {
            stop.cancel();
            result
        }
        () = shutdown => {
            tracing::info!(grace_s = grace.as_secs(), "shutting down");
            // Tell load balancers first, while calls drain.
            health.set_not_serving::<AuthServiceServer<AuthGrpc>>().await;
            health.set_not_serving::<BroadcastServiceServer<BroadcastGrpc>>().await;
            health.set_not_serving::<AdminServiceServer<AdminGrpc>>().await;
            stop.cancel();
            match tokio::time::timeout(grace, serve).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!("shutdown grace elapsed with calls still in flight");
                    Ok(())
                }
            }
        }
    };
    // The reader and the forwarders watch `stop`; bounded all the same.
    if tokio::time::timeout(grace, tasks.wait()).await.is_err() {
        tracing::warn!("background tasks still running after the shutdown grace");
    }
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// BroadcastService is SERVING only while the event stream reader works
/// (Subscribe answers UNAVAILABLE otherwise); NOT_SERVING from shutdown on.
async fn report_broadcast_health(
    health: tonic_health::server::HealthReporter,
    mut ready: watch::Receiver<bool>,
    stop: CancellationToken,
) {
    loop {
        let serving = *ready.borrow_and_update();
        if serving {
            health
                .set_serving::<BroadcastServiceServer<BroadcastGrpc>>()
                .await;
        } else {
            health
                .set_not_serving::<BroadcastServiceServer<BroadcastGrpc>>()
                .await;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            changed = ready.changed() => if changed.is_err() { break },
        }
    }
    health
        .set_not_serving::<BroadcastServiceServer<BroadcastGrpc>>()
        .await;
}

fn reflection_error(error: tonic_reflection::server::Error) -> ServeError {
    ServeError::Listener(std::io::Error::other(format!("reflection: {error}")))
}
