//! Sentinel mode: the current master according to the sentinels, asked
//! again after a connection-level error or a READONLY reply (a demoted
//! master), because the crate's `ConnectionManager` would stay bound to the
//! address it first resolved and never follow a failover.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, RedisResult, TlsMode};
use secrecy::SecretString;

use super::{connection_info, invalid};
use crate::error::StoreError;

/// The current master according to the sentinels, re-resolved after it fails.
pub(in crate::store::redis) struct SentinelMaster {
    /// `&mut self` methods: one resolution at a time.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The connection to the current master and its generation. std Mutex:
    /// never held across an await.
    current: Mutex<Option<(MultiplexedConnection, u64)>>,
    generation: AtomicU64,
    timeout: Duration,
}

impl SentinelMaster {
    pub(super) fn open(
        sentinels: &[SecretString],
        master: &str,
        certs: Option<redis::TlsCertificates>,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let infos = sentinels
            .iter()
            .map(|url| connection_info(url, "REDIS_SENTINEL_URLS"))
            .collect::<Result<Vec<_>, _>>()?;
        let tls = infos
            .iter()
            .any(|info| matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. }));
        let first = infos.first().cloned();
        let addrs = infos.into_iter().map(|info| info.addr().clone());
        let mut builder = SentinelClientBuilder::new(addrs, master, SentinelServerType::Master)
            .map_err(|e| invalid("REDIS_SENTINEL_URLS", &e))?;
        // The sentinel URLs' user, password and db apply to the master too:
        // one set of credentials for the whole deployment.
        if let Some(info) = first {
            let redis = info.redis_settings();
            if let Some(username) = redis.username() {
                builder = builder
                    .set_client_to_sentinel_username(username)
                    .set_client_to_redis_username(username);
            }
            if let Some(password) = redis.password() {
                builder = builder
                    .set_client_to_sentinel_password(password)
                    .set_client_to_redis_password(password);
            }
            builder = builder.set_client_to_redis_db(redis.db());
        }
        if tls {
            builder = builder
                .set_client_to_sentinel_tls_mode(TlsMode::Secure)
                .set_client_to_redis_tls_mode(TlsMode::Secure);
        }
        if let Some(certs) = certs {
            builder = builder
                .set_client_to_sentinel_certificates(certs.clone())
                .set_client_to_redis_certificates(certs);
        }
        let client = builder
            .build()
            .map_err(|e| invalid("REDIS_SENTINEL_URLS", &e))?;
        Ok(Self {
            client: tokio::sync::Mutex::new(client),
            current: Mutex::new(None),
            generation: AtomicU64::new(0),
            timeout,
        })
    }

    /// The connection to the current master, asking the sentinels when there is none.
    pub(super) async fn current(&self) -> RedisResult<(MultiplexedConnection, u64)> {
        if let Some(current) = self.lock().clone() {
            return Ok(current);
        }
        let mut client = self.client.lock().await;
        // Another call may have resolved it while this one waited.
        if let Some(current) = self.lock().clone() {
            return Ok(current);
        }
        // Replies time out inside the call's deadline, so that a master that
        // stopped answering (not only one that closed) is forgotten too.
        let conn = client
            .get_async_connection_with_config(&self.config(self.timeout * 3 / 4))
            .await?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *self.lock() = Some((conn.clone(), generation));
        tracing::info!("connected to the master named by the sentinels");
        Ok((conn, generation))
    }

    /// A new connection to the current master, not shared.
    pub(super) async fn connect(
        &self,
        response_timeout: Duration,
    ) -> RedisResult<MultiplexedConnection> {
        let mut client = self.client.lock().await;
        client
            .get_async_connection_with_config(&self.config(response_timeout))
            .await
    }

    /// Drops connection `generation` (if still current): the next call asks the sentinels.
    pub(super) fn forget(&self, generation: u64) {
        let mut current = self.lock();
        if current.as_ref().is_some_and(|(_, g)| *g == generation) {
            *current = None;
            tracing::warn!("lost the Redis master; asking the sentinels again");
        }
    }

    pub(super) fn config(&self, response_timeout: Duration) -> AsyncConnectionConfig {
        AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(response_timeout))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(MultiplexedConnection, u64)>> {
        self.current.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
