//! Connections to Redis in each of the three modes, behind one type that the
//! scripts and commands run on.
//!
//! One server: a self-reconnecting `ConnectionManager`. Cluster: the redis
//! crate's `ClusterConnection` (it follows MOVED and slot changes), renewed
//! after a connection-level error: measured, a connection whose master was
//! killed kept failing after its replica took over.
//! Sentinel: the crate's `ConnectionManager` stays bound to the address it
//! first resolved, so it would never follow a failover; [`SentinelMaster`]
//! instead re-asks the sentinels after any connection-level error or a
//! READONLY reply (a demoted master) and swaps the connection.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::{
    ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection,
};
use redis::cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{
    AsyncConnectionConfig, Client, Cmd, ErrorKind, IntoConnectionInfo, Pipeline, RedisError,
    RedisFuture, RedisResult, ServerErrorKind, Value,
};
use secrecy::{ExposeSecret as _, SecretString};

mod sentinel;

use self::sentinel::SentinelMaster;
use super::settings::{RedisSettings, Topology};
use crate::error::StoreError;

/// Where commands go, per mode. Cheap to share; [`Redis::conn`] hands out connections.
// One per process, behind an Arc: its size does not matter.
#[allow(clippy::large_enum_variant)]
pub(super) enum Redis {
    /// One server.
    Single {
        client: Client,
        manager: ConnectionManager,
    },
    /// A Redis Cluster.
    Cluster {
        client: ClusterClient,
        conn: Arc<ClusterConns>,
    },
    /// The master named by the sentinels.
    Sentinel(Arc<SentinelMaster>),
}

/// One connection, of whichever mode, for one command or script.
#[derive(Clone)]
pub(super) enum Conn {
    /// A standalone server's manager (it reconnects by itself).
    Single(ConnectionManager),
    /// A cluster connection (it routes by key), renewed through `conns`
    /// (when shared) after a connection-level error.
    Cluster {
        conn: ClusterConnection,
        conns: Option<(Arc<ClusterConns>, u64)>,
    },
    /// A plain connection to one server (the reader's, or the sentinels'
    /// current master), reporting connection errors to `master` if any.
    Node {
        conn: MultiplexedConnection,
        master: Option<(Arc<SentinelMaster>, u64)>,
    },
}

impl Redis {
    /// Builds the clients; connects lazily, so auth starts while Redis is down.
    pub(super) fn open(settings: &RedisSettings) -> Result<Self, StoreError> {
        let certs = settings.tls.load()?;
        let timeout = settings.timeout;
        match &settings.topology {
            Topology::Single(url) => {
                let info = connection_info(url, "REDIS_URL")?;
                let client = match certs {
                    Some(certs) => Client::build_with_tls(info, certs),
                    None => Client::open(info),
                }
                .map_err(|e| invalid("REDIS_URL", &e))?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_number_of_retries(2)
                    .set_max_delay(Duration::from_millis(500));
                let manager = ConnectionManager::new_lazy_with_config(client.clone(), config)
                    .map_err(|e| invalid("REDIS_URL", &e))?;
                Ok(Self::Single { client, manager })
            }
            Topology::Cluster(urls) => {
                let nodes = urls
                    .iter()
                    .map(|url| connection_info(url, "REDIS_CLUSTER_URLS"))
                    .collect::<Result<Vec<_>, _>>()?;
                let mut builder = ClusterClientBuilder::new(nodes)
                    .connection_timeout(timeout)
                    .response_timeout(timeout)
                    // Fail fast during a failover (the caller answers
                    // UNAVAILABLE and retries) rather than the crate's
                    // default of 16 retries over many seconds.
                    .retries(3)
                    .min_retry_wait(50)
                    .max_retry_wait(500);
                if let Some(certs) = certs {
                    builder = builder.certs(certs);
                }
                let client = builder
                    .build()
                    .map_err(|e| invalid("REDIS_CLUSTER_URLS", &e))?;
                let conn = Arc::new(ClusterConns::new(client.clone(), timeout));
                Ok(Self::Cluster { client, conn })
            }
            Topology::Sentinel { sentinels, master } => Ok(Self::Sentinel(Arc::new(
                SentinelMaster::open(sentinels, master, certs, timeout)?,
            ))),
        }
    }

    /// A connection for one call (resolving the master first in Sentinel mode).
    pub(super) async fn conn(&self) -> RedisResult<Conn> {
        Ok(match self {
            Self::Single { manager, .. } => Conn::Single(manager.clone()),
            Self::Cluster { conn, .. } => {
                let (current, generation) = conn.current();
                Conn::Cluster {
                    conn: current,
                    conns: Some((conn.clone(), generation)),
                }
            }
            Self::Sentinel(master) => {
                let (conn, generation) = master.current().await?;
                Conn::Node {
                    conn,
                    master: Some((master.clone(), generation)),
                }
            }
        })
    }

    /// A connection of its own (for the blocking stream reader), whose
    /// replies may take up to `response_timeout`.
    pub(super) async fn dedicated(&self, response_timeout: Duration) -> RedisResult<Conn> {
        match self {
            Self::Single { client, .. } => {
                let config = AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(response_timeout))
                    .set_response_timeout(Some(response_timeout));
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                Ok(Conn::Node { conn, master: None })
            }
            Self::Cluster { client, .. } => {
                let config = ClusterConfig::new()
                    .set_connection_timeout(response_timeout)
                    .set_response_timeout(response_timeout);
                Ok(Conn::Cluster {
                    conn: client.get_async_connection_with_config(config).await?,
                    conns: None,
                })
            }
            Self::Sentinel(master) => Ok(Conn::Node {
                conn: master.connect(response_timeout).await?,
                master: None,
            }),
        }
    }

    /// Whether keys must be spread with hash tags and scripts kept to one slot.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster { .. })
    }
}

impl Conn {
    /// Reports that a call on this connection timed out: like a connection
    /// error, the shared connection is renewed (Cluster) or the master asked
    /// for again (Sentinel), since a killed node often shows only as silence.
    pub(super) fn timed_out(&self) {
        match self {
            Self::Cluster {
                conns: Some((conns, generation)),
                ..
            } => conns.renew(*generation),
            Self::Node {
                master: Some((master, generation)),
                ..
            } => master.forget(*generation),
            _ => {}
        }
    }

    /// Runs `cmd` on the master that owns `key` (Cluster) or on this
    /// connection; for commands such as WAIT that name no key themselves.
    pub(super) async fn query_at(&mut self, key: &str, cmd: &Cmd) -> RedisResult<Value> {
        match self {
            Self::Cluster { conn, conns } => {
                let route = redis::cluster_routing::Route::with_key(key, SlotAddr::Master);
                let reply = conn
                    .route_command(
                        cmd.clone(),
                        RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route)),
                    )
                    .await;
                renew(conns.as_ref(), &reply);
                reply
            }
            other => other.req_packed_command(cmd).await,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(conn) => conn.req_packed_command(cmd),
            Self::Cluster { conn, conns } => Box::pin(async move {
                let reply = conn.req_packed_command(cmd).await;
                renew(conns.as_ref(), &reply);
                reply
            }),
            Self::Node { conn, master } => Box::pin(async move {
                let reply = conn.req_packed_command(cmd).await;
                report(master.as_ref(), &reply);
                reply
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
            Self::Cluster { conn, conns } => Box::pin(async move {
                let reply = conn.req_packed_commands(pipeline, offset, count).await;
                renew(conns.as_ref(), &reply);
                reply
            }),
            Self::Node { conn, master } => Box::pin(async move {
                let reply = conn.req_packed_commands(pipeline, offset, count).await;
                report(master.as_ref(), &reply);
                reply
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(conn) => conn.get_db(),
            Self::Cluster { conn, .. } => conn.get_db(),
            Self::Node { conn, .. } => conn.get_db(),
        }
    }
}

/// Tells the sentinel master a connection failed in a way a failover explains.
fn report<T>(master: Option<&(Arc<SentinelMaster>, u64)>, reply: &RedisResult<T>) {
    if let (Some((master, generation)), Err(error)) = (master, reply)
        && is_master_lost(error)
    {
        master.forget(*generation);
    }
}

/// Tells the shared cluster connection it failed in a way a failover explains.
fn renew<T>(conns: Option<&(Arc<ClusterConns>, u64)>, reply: &RedisResult<T>) {
    if let (Some((conns, generation)), Err(error)) = (conns, reply)
        && is_master_lost(error)
    {
        conns.renew(*generation);
    }
}

// === impl ClusterConns ===

/// The shared cluster connection, replaced by a fresh one (which reads the
/// slot map anew from the seed nodes) after a connection-level error.
pub(super) struct ClusterConns {
    client: ClusterClient,
    timeout: Duration,
    /// std Mutex: never held across an await.
    current: Mutex<(ClusterConnection, u64)>,
}

impl ClusterConns {
    fn new(client: ClusterClient, timeout: Duration) -> Self {
        let conn = Self::connect(&client, timeout);
        Self {
            client,
            timeout,
            current: Mutex::new((conn, 0)),
        }
    }

    /// Lazy: connects on first use, so auth starts while the cluster is down.
    fn connect(client: &ClusterClient, timeout: Duration) -> ClusterConnection {
        client.get_pending_async_connection_with_config(
            ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout),
        )
    }

    fn current(&self) -> (ClusterConnection, u64) {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces connection `generation` (if still current) with a fresh one.
    fn renew(&self, generation: u64) {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.1 == generation {
            *current = (Self::connect(&self.client, self.timeout), generation + 1);
            tracing::debug!("renewed the cluster connection after a connection error");
        }
    }
}

/// Errors after which the master may have moved: the connection broke or
/// timed out, or the server answered as a replica (READONLY) or not a master.
fn is_master_lost(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

/// Parses a URL with TCP_NODELAY set: every command is a small request
/// awaiting its reply, and Nagle would hold some back until a delayed ACK.
pub(super) fn connection_info(
    url: &SecretString,
    setting: &str,
) -> Result<redis::ConnectionInfo, StoreError> {
    let info = url
        .expose_secret()
        .trim()
        .into_connection_info()
        .map_err(|e| invalid(setting, &e))?;
    let tcp = info.tcp_settings().clone().set_nodelay(true);
    Ok(info.set_tcp_settings(tcp))
}

/// A setting the redis crate refused. Only the error's kind: its text could
/// quote the URL, and with it a password.
pub(super) fn invalid(setting: &str, error: &RedisError) -> StoreError {
    StoreError::Config(format!("invalid {setting}: {:?}", error.kind()))
}
