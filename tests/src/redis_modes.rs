//! One test body, four Redis deployments: [`RedisMode`] names one,
//! [`RedisBackend`] runs it and says how auth reaches it, and [`ModeStack`]
//! puts auth replicas and gateways on it.

use std::time::Duration;

use futures::future::join_all;

use crate::auth::{AuthOptions, TestAuth};
use crate::gateway::{GatewayOptions, TestGateway};
use crate::redis::TestRedis;
use crate::redis_cluster::TestRedisCluster;
use crate::redis_sentinel::{SENTINEL_MASTER, TestRedisSentinel};
use crate::redis_tls::TestRedisTls;

/// The contract's three ways for auth to reach Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedisMode {
    /// `REDIS_URL`: one server.
    Standalone,
    /// `REDIS_CLUSTER_URLS`: 3 masters, 3 replicas.
    Cluster,
    /// `REDIS_SENTINEL_URLS` + `REDIS_SENTINEL_MASTER`: master, replica, 3 sentinels.
    Sentinel,
    /// `REDIS_URL=rediss://…` with `REDIS_CA_FILE` and a client certificate.
    Tls,
}

impl RedisMode {
    pub fn name(self) -> &'static str {
        match self {
            Self::Standalone => "standalone",
            Self::Cluster => "cluster",
            Self::Sentinel => "sentinel",
            Self::Tls => "tls",
        }
    }
}

/// A running Redis deployment of one [`RedisMode`]. Killed on drop.
pub enum RedisBackend {
    Standalone(TestRedis),
    Cluster(TestRedisCluster),
    Sentinel(TestRedisSentinel),
    Tls(TestRedisTls),
}

impl RedisBackend {
    /// Starts the topology and waits until it serves (and, for Cluster and
    /// Sentinel, until a failover could run).
    pub fn spawn(mode: RedisMode) -> Self {
        match mode {
            RedisMode::Standalone => Self::Standalone(TestRedis::spawn()),
            RedisMode::Cluster => Self::Cluster(TestRedisCluster::spawn()),
            RedisMode::Sentinel => Self::Sentinel(TestRedisSentinel::spawn()),
            RedisMode::Tls => Self::Tls(TestRedisTls::spawn()),
        }
    }

    pub fn mode(&self) -> RedisMode {
        match self {
            Self::Standalone(_) => RedisMode::Standalone,
            Self::Cluster(_) => RedisMode::Cluster,
            Self::Sentinel(_) => RedisMode::Sentinel,
            Self::Tls(_) => RedisMode::Tls,
        }
    }

    /// The settings that point auth at this deployment, as the contract names them.
    pub fn auth_env(&self) -> Vec<(&'static str, String)> {
        match self {
            Self::Standalone(redis) => vec![("REDIS_URL", redis.url())],
            Self::Cluster(cluster) => vec![("REDIS_CLUSTER_URLS", cluster.urls())],
            Self::Sentinel(sentinel) => vec![
                ("REDIS_SENTINEL_URLS", sentinel.urls()),
                ("REDIS_SENTINEL_MASTER", SENTINEL_MASTER.to_owned()),
            ],
            Self::Tls(redis) => redis.auth_env(),
        }
    }

    /// The process ids of every running `redis-server` (and sentinel).
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Self::Standalone(redis) => redis.pid().into_iter().collect(),
            Self::Cluster(cluster) => cluster.pids(),
            Self::Sentinel(sentinel) => sentinel.pids(),
            Self::Tls(redis) => redis.pid().into_iter().collect(),
        }
    }

    /// The port of the one server, for tools that speak plain Redis to it
    /// (redis-benchmark); `None` for Cluster and Sentinel.
    pub fn standalone_port(&self) -> Option<u16> {
        match self {
            Self::Standalone(redis) => Some(redis.port()),
            _ => None,
        }
    }

    /// `FLUSHALL` on every master (replicas follow).
    pub fn flushall(&self) {
        match self {
            Self::Standalone(redis) => {
                assert_eq!(crate::redis_cli(redis.port(), &["FLUSHALL"]), "OK");
            }
            Self::Cluster(cluster) => cluster.flushall(),
            Self::Sentinel(sentinel) => sentinel.flushall(),
            Self::Tls(redis) => redis.flushall(),
        }
    }

    /// The cluster, when this is one.
    pub fn cluster(&mut self) -> Option<&mut TestRedisCluster> {
        match self {
            Self::Cluster(cluster) => Some(cluster),
            _ => None,
        }
    }

    /// The sentinel deployment, when this is one.
    pub fn sentinel(&mut self) -> Option<&mut TestRedisSentinel> {
        match self {
            Self::Sentinel(sentinel) => Some(sentinel),
            _ => None,
        }
    }
}

impl AuthOptions {
    /// Points auth at `backend` (`REDIS_URL`, `REDIS_CLUSTER_URLS` or the
    /// sentinel settings). Spawn with `TestAuth::spawn(None, …)`.
    pub fn redis(self, backend: &RedisBackend) -> Self {
        backend
            .auth_env()
            .into_iter()
            .fold(self, |options, (name, value)| options.env(name, value))
    }
}

/// A Redis deployment of one mode, `auths` auth replicas on it and
/// `gateways` gateways each load-balancing over every auth replica.
pub struct ModeStack {
    pub auths: Vec<TestAuth>,
    pub gateways: Vec<TestGateway>,
    // Last, so the services stop before their Redis does.
    pub backend: RedisBackend,
}

impl ModeStack {
    pub async fn spawn(mode: RedisMode, auths: usize, gateways: usize) -> Self {
        Self::spawn_with(
            mode,
            auths,
            gateways,
            AuthOptions::default(),
            GatewayOptions::default(),
        )
        .await
    }

    pub async fn spawn_with(
        mode: RedisMode,
        auths: usize,
        gateways: usize,
        auth_options: AuthOptions,
        gateway_options: GatewayOptions,
    ) -> Self {
        // The topologies start with blocking waits (redis-cli polls).
        let backend = tokio::task::spawn_blocking(move || RedisBackend::spawn(mode))
            .await
            .expect("the topology starts");
        let options = auth_options.redis(&backend);
        let auths = join_all((0..auths).map(|_| TestAuth::spawn(None, options.clone()))).await;
        for auth in &auths {
            // Spawned without REDIS_URL: make sure the mode's settings took.
            assert!(
                !auth.logs().contains("no Redis configured"),
                "auth fell back to the embedded store in {mode:?} mode"
            );
        }
        let refs: Vec<&TestAuth> = auths.iter().collect();
        let gateways =
            join_all((0..gateways).map(|_| TestGateway::spawn(&refs, gateway_options.clone())))
                .await;
        let stack = Self {
            auths,
            gateways,
            backend,
        };
        join_all(
            stack
                .gateways
                .iter()
                .map(|g| g.wait_ready(Duration::from_secs(20))),
        )
        .await;
        stack
    }

    /// The first auth replica.
    pub fn auth(&self) -> &TestAuth {
        &self.auths[0]
    }

    /// The first gateway.
    pub fn gateway(&self) -> &TestGateway {
        &self.gateways[0]
    }
}
