//! What every handler and session shares: a cheap-clone bundle of handles.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admission::Admission;
use crate::auth_client::AuthClient;
use crate::client_ip::TrustedProxies;
use crate::config::Config;
use crate::hub::Hub;
use crate::ip_rate::IpRateLimiter;
use crate::metrics::Metrics;

/// The limits handshakes and sessions enforce, from [`Config`].
pub struct Limits {
    pub auth_timeout: Duration,
    pub max_message_bytes: usize,
    pub send_queue_capacity: usize,
    pub max_messages_per_s: u32,
    /// `PER_IP_RATE`; `None` when it is 0 (off).
    pub ip_rate: Option<IpRateLimiter>,
    /// Whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
}

/// Whether the Subscribe stream to auth is open: what `/readyz` answers
/// from. Set by the subscriber; the `subscribed` gauge follows it.
#[derive(Clone)]
pub struct Readiness {
    subscribed: Arc<AtomicBool>,
    metrics: Metrics,
}

impl Readiness {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            subscribed: Arc::new(AtomicBool::new(false)),
            metrics,
        }
    }

    pub fn set_subscribed(&self, subscribed: bool) {
        self.subscribed.store(subscribed, Ordering::Relaxed);
        self.metrics.set_subscribed(subscribed);
    }

    pub fn is_subscribed(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed)
    }
}

/// Shared state of the gateway: one allocation behind an `Arc`, so the
/// clones every request makes (axum's `State`, each middleware, each
/// session) are one counter increment, not one per handle below.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct Shared {
    pub auth: AuthClient,
    pub hub: Hub,
    pub metrics: Metrics,
    pub ready: Readiness,
    pub limits: Arc<Limits>,
    /// Empty: any origin.
    pub allowed_origins: Arc<[String]>,
    /// `MAX_CONNECTIONS` and `MAX_PENDING_AUTH`.
    pub admission: Arc<Admission>,
    /// Cancelled on shutdown: sessions close with 1001.
    pub shutdown: CancellationToken,
    /// Tracks sessions so shutdown can wait for them.
    pub tracker: TaskTracker,
}

impl AppState {
    pub fn new(config: &Config, auth: AuthClient, metrics: Metrics) -> Self {
        Self(Arc::new(Shared {
            auth,
            hub: Hub::new(metrics.clone()),
            ready: Readiness::new(metrics.clone()),
            admission: Admission::new(
                config.max_connections,
                config.max_pending_auth,
                metrics.clone(),
            ),
            metrics,
            limits: Arc::new(Limits {
                auth_timeout: config.auth_timeout(),
                max_message_bytes: config.max_message_bytes,
                send_queue_capacity: config.send_queue_capacity,
                max_messages_per_s: config.max_messages_per_s,
                ip_rate: (config.per_ip_rate > 0).then(|| IpRateLimiter::new(config.per_ip_rate)),
                trusted_proxies: TrustedProxies::new(config.trusted_proxies.clone()),
            }),
            allowed_origins: config
                .allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_owned())
                .filter(|o| !o.is_empty())
                .collect(),
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }))
    }
}

impl Shared {
    /// Whether a browser at `origin` may open a socket.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        if self.allowed_origins.is_empty() {
            return true;
        }
        // A configured list is a promise that only those origins connect, so a
        // request without an Origin header is refused too.
        origin.is_some_and(|origin| {
            let origin = origin.trim_end_matches('/');
            self.allowed_origins
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(origin))
        })
    }
}
