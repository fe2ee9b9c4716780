//! Presence in Redis, shared by every auth replica:
//! - `wsauth:presence:gws`: a sorted set of gateway ids by last report (Unix ms);
//! - `wsauth:presence:gw:<id>`: the gateway's last report, expiring after 30 s;
//! - `wsauth:presence:gwconns:<id>`: its connections (conn_id → user_id),
//!   expiring with it, so a full report can forget the old ones;
//! - `wsauth:presence:user:<user_id>`: the user's connections
//!   (`<conn_id>\n<gateway_id>` → connected_at ms). Entries of gateways that
//!   are gone are skipped, and removed, when the user is looked up.
//!
//! Each command names one key (no multi-key command), and a batch of them is
//! split by slot in Cluster mode ([`Batch`]): nothing here needs two keys at once.

use std::collections::{HashMap, HashSet};

use async_trait::async_trait;
use redis::{FromRedisValue, Value};

use super::{GATEWAY_TTL_MS, GatewayRecord, GatewayReport, PresenceEntry, PresenceStore};
use crate::store::StoreError;
use crate::store::redis::{Batch, RedisStore};

const GATEWAYS: &str = "wsauth:presence:gws";

fn gateway_key(id: &str) -> String {
    format!("wsauth:presence:gw:{id}")
}

fn conns_key(id: &str) -> String {
    format!("wsauth:presence:gwconns:{id}")
}

fn user_key(user_id: &str) -> String {
    format!("wsauth:presence:user:{user_id}")
}

/// A user-hash field; conn ids never hold a newline (checked at the gRPC edge).
fn user_field(conn_id: &str, gateway_id: &str) -> String {
    format!("{conn_id}\n{gateway_id}")
}

/// Presence kept in Redis, on the store's connection: the same deployment
/// (one server, Cluster or Sentinel, over TLS or not) and the same deadline
/// (`REDIS_TIMEOUT_MS`) as tokens and events.
pub struct RedisPresence {
    redis: RedisStore,
}

impl RedisPresence {
    pub fn new(redis: RedisStore) -> Self {
        Self { redis }
    }

    /// Runs `batch`, every reply read as a `T`.
    async fn run<T: FromRedisValue>(&self, batch: Batch) -> Result<Vec<T>, StoreError> {
        self.redis
            .run_batch(batch)
            .await?
            .into_iter()
            .map(parse)
            .collect()
    }

    /// Runs one command (the only one in `batch`).
    async fn one<T: FromRedisValue>(&self, batch: Batch) -> Result<T, StoreError> {
        self.run(batch)
            .await?
            .pop()
            .ok_or_else(|| StoreError::Corrupt("no reply".into()))
    }
}

fn parse<T: FromRedisValue>(value: Value) -> Result<T, StoreError> {
    redis::from_redis_value(value).map_err(|e| StoreError::Corrupt(format!("presence: {e}")))
}

fn field(hash: &HashMap<String, String>, name: &str) -> u64 {
    hash.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn report(&self, report: &GatewayReport, now_ms: u64) -> Result<bool, StoreError> {
        let id = &report.gateway_id;
        let resync = if report.full {
            // Forget what this gateway held before (it restarted or resyncs).
            let mut read = Batch::default();
            read.cmd("HGETALL", conns_key(id));
            let old: HashMap<String, String> = self.one(read).await?;
            let mut forget = Batch::default();
            for (conn_id, user_id) in &old {
                forget
                    .cmd("HDEL", user_key(user_id))
                    .arg(user_field(conn_id, id));
            }
            forget.cmd("DEL", conns_key(id));
            self.run::<Value>(forget).await?;
            false
        } else {
            let mut exists = Batch::default();
            exists.cmd("EXISTS", gateway_key(id));
            let known: bool = self.one(exists).await?;
            !known
        };
        // Per key, in this order: a key's expiry is set after it is written.
        let mut write = Batch::default();
        for entry in &report.added {
            write
                .cmd("HSET", user_key(&entry.user_id))
                .arg(user_field(&entry.conn_id, id))
                .arg(entry.connected_at_ms);
            write
                .cmd("HSET", conns_key(id))
                .arg(&entry.conn_id)
                .arg(&entry.user_id);
        }
        for entry in &report.removed {
            write
                .cmd("HDEL", user_key(&entry.user_id))
                .arg(user_field(&entry.conn_id, id));
            write.cmd("HDEL", conns_key(id)).arg(&entry.conn_id);
        }
        let ttl = i64::try_from(GATEWAY_TTL_MS).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(GATEWAY_TTL_MS + 1);
        write
            .cmd("HSET", gateway_key(id))
            .arg("connections")
            .arg(report.connections)
            .arg("authenticated")
            .arg(report.authenticated)
            .arg("started_at")
            .arg(report.started_at_ms)
            .arg("last_seen")
            .arg(now_ms);
        write.cmd("PEXPIRE", gateway_key(id)).arg(ttl);
        write.cmd("PEXPIRE", conns_key(id)).arg(ttl);
        write.cmd("ZADD", GATEWAYS).arg(now_ms).arg(id);
        write
            .cmd("ZREMRANGEBYSCORE", GATEWAYS)
            .arg("-inf")
            .arg(cutoff);
        self.run::<Value>(write).await?;
        Ok(resync)
    }

    async fn gateways(&self, now_ms: u64) -> Result<Vec<GatewayRecord>, StoreError> {
        let since = now_ms.saturating_sub(GATEWAY_TTL_MS);
        let mut range = Batch::default();
        range.cmd("ZRANGEBYSCORE", GATEWAYS).arg(since).arg("+inf");
        let ids: Vec<String> = self.one(range).await?;
        let mut read = Batch::default();
        for id in &ids {
            read.cmd("HGETALL", gateway_key(id));
        }
        let hashes: Vec<HashMap<String, String>> = self.run(read).await?;
        let mut records: Vec<GatewayRecord> = ids
            .into_iter()
            .zip(hashes)
            // An empty hash: its key expired since the sorted set was read.
            .filter(|(_, hash)| !hash.is_empty())
            .map(|(gateway_id, hash)| GatewayRecord {
                connections: field(&hash, "connections"),
                authenticated: field(&hash, "authenticated"),
                started_at_ms: field(&hash, "started_at"),
                last_seen_ms: field(&hash, "last_seen"),
                gateway_id,
            })
            .collect();
        records.sort_by(|a, b| a.gateway_id.cmp(&b.gateway_id));
        Ok(records)
    }

    async fn presence(&self, user_id: &str, now_ms: u64) -> Result<Vec<PresenceEntry>, StoreError> {
        let mut read = Batch::default();
        read.cmd("HGETALL", user_key(user_id));
        let fields: HashMap<String, u64> = self.one(read).await?;
        let entries: Vec<(String, PresenceEntry)> = fields
            .into_iter()
            .filter_map(|(field, connected_at_ms)| {
                let (conn_id, gateway_id) = field.split_once('\n')?;
                let entry = PresenceEntry {
                    gateway_id: gateway_id.to_owned(),
                    conn_id: conn_id.to_owned(),
                    connected_at_ms,
                };
                Some((field, entry))
            })
            .collect();
        let gateways: Vec<&str> = entries
            .iter()
            .map(|(_, e)| e.gateway_id.as_str())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let mut scores = Batch::default();
        for gateway_id in &gateways {
            scores.cmd("ZSCORE", GATEWAYS).arg(*gateway_id);
        }
        let scores: Vec<Option<u64>> = self.run(scores).await?;
        let since = now_ms.saturating_sub(GATEWAY_TTL_MS);
        let live: HashSet<&str> = gateways
            .iter()
            .zip(scores)
            .filter(|(_, score)| score.is_some_and(|s| s >= since))
            .map(|(id, _)| *id)
            .collect();
        let (mut present, gone): (Vec<_>, Vec<_>) = entries
            .iter()
            .partition(|(_, e)| live.contains(e.gateway_id.as_str()));
        if !gone.is_empty() {
            let mut clean = Batch::default();
            let stale: Vec<&str> = gone.iter().map(|(field, _)| field.as_str()).collect();
            clean.cmd("HDEL", user_key(user_id)).arg(&stale);
            // Best effort: a failure leaves entries that are skipped next time too.
            if let Err(error) = self.run::<Value>(clean).await {
                tracing::debug!(%error, "could not remove stale presence entries");
            }
        }
        present.sort_by(|(_, a), (_, b)| {
            (a.connected_at_ms, &a.gateway_id, &a.conn_id).cmp(&(
                b.connected_at_ms,
                &b.gateway_id,
                &b.conn_id,
            ))
        });
        Ok(present.into_iter().map(|(_, e)| e.clone()).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use secrecy::SecretString;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::presence::ConnEntry;
    use crate::store::redis::{RedisSettings, Topology};

    async fn store(topology: Topology, timeout: Duration) -> (RedisStore, CancellationToken) {
        let settings = RedisSettings {
            topology,
            tls: Default::default(),
            timeout,
            retention: 100,
            wait_replicas: 0,
            allow_eviction: false,
        };
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        let store = RedisStore::connect(&settings, shutdown.clone(), &tasks)
            .await
            .expect("the store connects");
        (store, shutdown)
    }

    async fn conformance(topology: Topology) {
        let (store, shutdown) = store(topology, Duration::from_secs(2)).await;
        crate::presence::conformance::run(&RedisPresence::new(store)).await;
        shutdown.cancel();
    }

    /// Full reports of 12,000 connections, each replacing the last: written
    /// and forgotten in 12 chunks of commands (each under its own deadline),
    /// in Cluster mode across thousands of slots. On loopback the round trips
    /// are too short for one deadline over everything to fail; what the
    /// chunks buy is stated in `Batch`'s docs, what this shows is that a
    /// batch split into chunks still lands whole and in order.
    async fn large_full_reports(topology: Topology) {
        let (store, shutdown) = store(topology, Duration::from_secs(1)).await;
        let presence = RedisPresence::new(store);
        let report = |round: u64| GatewayReport {
            gateway_id: "gw-big".into(),
            connections: 12_000,
            authenticated: 12_000,
            started_at_ms: 1,
            full: true,
            added: (0..12_000)
                .map(|n| ConnEntry {
                    conn_id: format!("{round}-{n}"),
                    user_id: format!("user-{n}"),
                    connected_at_ms: 1_000 + round,
                })
                .collect(),
            removed: Vec::new(),
        };
        let now = 10_000;
        for round in 0..2 {
            presence
                .report(&report(round), now + round)
                .await
                .unwrap_or_else(|e| panic!("full report {round}: {e}"));
        }
        let last = presence
            .presence("user-11999", now + 2)
            .await
            .expect("presence");
        assert_eq!(
            last,
            [PresenceEntry {
                gateway_id: "gw-big".into(),
                conn_id: "1-11999".into(),
                connected_at_ms: 1_001,
            }],
            "the second full report replaced the first"
        );
        shutdown.cancel();
    }

    #[tokio::test]
    async fn large_full_reports_replace_each_other_in_chunks() {
        let redis = wsauth_tests::TestRedis::spawn();
        large_full_reports(Topology::Single(redis.url().into())).await;
    }

    #[tokio::test]
    async fn large_full_reports_replace_each_other_in_chunks_on_a_cluster() {
        let cluster = tokio::task::spawn_blocking(wsauth_tests::TestRedisCluster::spawn)
            .await
            .expect("the cluster starts");
        large_full_reports(Topology::Cluster(urls(&cluster.urls()))).await;
    }

    fn urls(list: &str) -> Vec<SecretString> {
        list.split(',').map(SecretString::from).collect()
    }

    #[tokio::test]
    async fn passes_the_presence_conformance_suite() {
        let redis = wsauth_tests::TestRedis::spawn();
        conformance(Topology::Single(redis.url().into())).await;
    }

    /// Batches that touch many keys: refused as cross-slot if sent as one pipeline.
    #[tokio::test]
    async fn passes_the_presence_conformance_suite_on_a_cluster() {
        let cluster = tokio::task::spawn_blocking(wsauth_tests::TestRedisCluster::spawn)
            .await
            .expect("the cluster starts");
        conformance(Topology::Cluster(urls(&cluster.urls()))).await;
    }

    #[tokio::test]
    async fn passes_the_presence_conformance_suite_on_a_sentinel_master() {
        let sentinel = tokio::task::spawn_blocking(wsauth_tests::TestRedisSentinel::spawn)
            .await
            .expect("the deployment starts");
        conformance(Topology::Sentinel {
            sentinels: urls(&sentinel.urls()),
            master: wsauth_tests::SENTINEL_MASTER.to_owned(),
        })
        .await;
    }
}
