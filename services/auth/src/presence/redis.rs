//! Presence in Redis, shared by every auth replica:
//! - `wsauth:presence:gws`: a sorted set of gateway ids by last report (Unix ms);
//! - `wsauth:presence:gw:<id>`: the gateway's last report, expiring after 30 s;
//! - `wsauth:presence:gwconns:<id>`: its connections (conn_id → user_id),
//!   expiring with it, so a full report can forget the old ones;
//! - `wsauth:presence:user:<user_id>`: the user's connections
//!   (`<conn_id>\n<gateway_id>` → connected_at ms). Entries of gateways that
//!   are gone are skipped, and removed, when the user is looked up.
//!
//! Each key is written on its own (no multi-key command), as Redis Cluster requires.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, RedisError};

use super::{GATEWAY_TTL_MS, GatewayRecord, GatewayReport, PresenceEntry, PresenceStore};
use crate::store::StoreError;

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

/// Presence kept in Redis.
pub struct RedisPresence {
    conn: ConnectionManager,
    timeout: Duration,
}

impl RedisPresence {
    /// Connects lazily: auth starts while Redis is down, and calls fail
    /// with Unavailable until it is back.
    pub fn new(url: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = Client::open(url)
            .map_err(|e| StoreError::Failed(format!("invalid REDIS_URL: {:?}", e.kind())))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(store_error)?;
        Ok(Self { conn, timeout })
    }

    /// One Redis round trip under the deadline.
    async fn call<T>(
        &self,
        f: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, f).await {
            Ok(result) => result.map_err(store_error),
            Err(_) => Err(StoreError::Unavailable("redis call timed out".into())),
        }
    }
}

fn store_error(error: RedisError) -> StoreError {
    if error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
    {
        StoreError::Unavailable(error.to_string())
    } else {
        StoreError::Failed(error.to_string())
    }
}

fn field(hash: &HashMap<String, String>, name: &str) -> u64 {
    hash.get(name).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn report(&self, report: &GatewayReport, now_ms: u64) -> Result<bool, StoreError> {
        let id = &report.gateway_id;
        let mut conn = self.conn.clone();
        let resync = if report.full {
            // Forget what this gateway held before (it restarted or resyncs).
            let old: HashMap<String, String> = self
                .call(
                    redis::cmd("HGETALL")
                        .arg(conns_key(id))
                        .query_async(&mut conn),
                )
                .await?;
            let mut pipe = redis::pipe();
            for (conn_id, user_id) in &old {
                pipe.hdel(user_key(user_id), user_field(conn_id, id))
                    .ignore();
            }
            pipe.del(conns_key(id)).ignore();
            self.call(pipe.query_async::<()>(&mut conn)).await?;
            false
        } else {
            let known: bool = self
                .call(
                    redis::cmd("EXISTS")
                        .arg(gateway_key(id))
                        .query_async(&mut conn),
                )
                .await?;
            !known
        };
        let mut pipe = redis::pipe();
        for entry in &report.added {
            pipe.hset(
                user_key(&entry.user_id),
                user_field(&entry.conn_id, id),
                entry.connected_at_ms,
            )
            .ignore()
            .hset(conns_key(id), &entry.conn_id, &entry.user_id)
            .ignore();
        }
        for entry in &report.removed {
            pipe.hdel(user_key(&entry.user_id), user_field(&entry.conn_id, id))
                .ignore()
                .hdel(conns_key(id), &entry.conn_id)
                .ignore();
        }
        let ttl = i64::try_from(GATEWAY_TTL_MS).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(GATEWAY_TTL_MS + 1);
        pipe.hset_multiple(
            gateway_key(id),
            &[
                ("connections", report.connections),
                ("authenticated", report.authenticated),
                ("started_at", report.started_at_ms),
                ("last_seen", now_ms),
            ],
        )
        .ignore()
        .pexpire(gateway_key(id), ttl)
        .ignore()
        .pexpire(conns_key(id), ttl)
        .ignore()
        .zadd(GATEWAYS, id, now_ms)
        .ignore()
        .zrembyscore(GATEWAYS, "-inf", cutoff)
        .ignore();
        self.call(pipe.query_async::<()>(&mut conn)).await?;
        Ok(resync)
    }

    async fn gateways(&self, now_ms: u64) -> Result<Vec<GatewayRecord>, StoreError> {
        let mut conn = self.conn.clone();
        let since = now_ms.saturating_sub(GATEWAY_TTL_MS);
        let ids: Vec<String> = self
            .call(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(GATEWAYS)
                    .arg(since)
                    .arg("+inf")
                    .query_async(&mut conn),
            )
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.hgetall(gateway_key(id));
        }
        let hashes: Vec<HashMap<String, String>> = self.call(pipe.query_async(&mut conn)).await?;
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
        let mut conn = self.conn.clone();
        let fields: HashMap<String, u64> = self
            .call(
                redis::cmd("HGETALL")
                    .arg(user_key(user_id))
                    .query_async(&mut conn),
            )
            .await?;
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
        let mut pipe = redis::pipe();
        for gateway_id in &gateways {
            pipe.zscore(GATEWAYS, *gateway_id);
        }
        let scores: Vec<Option<u64>> = if gateways.is_empty() {
            Vec::new()
        } else {
            self.call(pipe.query_async(&mut conn)).await?
        };
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
            let stale: Vec<&str> = gone.iter().map(|(field, _)| field.as_str()).collect();
            // Best effort: a failure leaves entries that are skipped next time too.
            let cleaned = self
                .call(
                    redis::cmd("HDEL")
                        .arg(user_key(user_id))
                        .arg(&stale)
                        .query_async::<()>(&mut conn),
                )
                .await;
            if let Err(error) = cleaned {
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
    use super::*;

    #[tokio::test]
    async fn passes_the_presence_conformance_suite() {
        let redis = wsauth_tests::TestRedis::spawn();
        let store = RedisPresence::new(&redis.url(), Duration::from_secs(2)).expect("valid url");
        crate::presence::conformance::run(&store).await;
    }
}
