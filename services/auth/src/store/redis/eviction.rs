//! The start-up check of Redis's `maxmemory-policy`: an evicted revocation
//! brings a revoked JWT back, so any policy but `noeviction` is refused.

use std::time::Duration;

use redis::Value;

use super::conn::Redis;
use super::store_error_is_transient;
use super::stream::flatten;
use crate::error::StoreError;

/// Refuses to start on a Redis that may evict keys: an evicted revocation
/// brings a revoked JWT back. A Redis that forbids CONFIG GET, or is down,
/// cannot be checked: a warning says so.
pub(super) async fn check_eviction(
    redis: &Redis,
    timeout: Duration,
    allow_eviction: bool,
) -> Result<(), StoreError> {
    let query = async {
        let mut conn = redis.conn().await?;
        let mut cmd = redis::cmd("CONFIG");
        cmd.arg("GET").arg("maxmemory-policy");
        cmd.query_async::<Value>(&mut conn).await
    };
    let reply = match tokio::time::timeout(timeout, query).await {
        Ok(Ok(reply)) => reply,
        Ok(Err(error)) if store_error_is_transient(&error) => {
            tracing::warn!(%error, "could not check redis's maxmemory-policy: redis is unreachable");
            return Ok(());
        }
        Ok(Err(error)) => {
            tracing::warn!(%error, "could not check redis's maxmemory-policy (CONFIG GET is not allowed): make sure it is noeviction");
            return Ok(());
        }
        Err(_) => {
            tracing::warn!(
                "could not check redis's maxmemory-policy: redis did not answer in time"
            );
            return Ok(());
        }
    };
    let mut values = Vec::new();
    flatten(&reply, &mut values);
    let evicting: Vec<&String> = values
        .iter()
        .filter(|v| v.as_str() != "maxmemory-policy" && v.as_str() != "noeviction")
        .collect();
    match evicting.first() {
        None if values.iter().any(|v| v == "noeviction") => Ok(()),
        None => {
            tracing::warn!(
                "could not check redis's maxmemory-policy (empty reply): make sure it is noeviction"
            );
            Ok(())
        }
        Some(policy) if allow_eviction => {
            tracing::warn!(%policy, "redis may evict keys (REDIS_ALLOW_EVICTION=true): an evicted revocation brings a revoked JWT back");
            Ok(())
        }
        Some(policy) => Err(StoreError::Config(format!(
            "redis maxmemory-policy is {policy}: it may evict revocations and bring revoked JWTs \
             back. Set maxmemory-policy noeviction, or REDIS_ALLOW_EVICTION=true to start anyway"
        ))),
    }
}
