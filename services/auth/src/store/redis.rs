//! The Redis store, shared by every auth replica, on one server, a Cluster
//! or a Sentinel-managed master ([`conn`]), each optionally over TLS.
//!
//! Every call runs under `REDIS_TIMEOUT_MS`; the scripts live beside what
//! they keep ([`token`], [`stream`]). In Cluster mode every script touches
//! the keys of one slot and declares them: ws-token and revocation keys
//! spread over the slots, the event stream and its epoch share one hash tag.
//! The stream is read by one [`reader`] task per process on its own
//! connection and fanned out in-process. Presence runs its commands on the
//! same connection ([`batch`]).

mod batch;
mod conn;
mod eviction;
mod reader;
mod script;
mod settings;
mod stream;
mod token;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{ErrorKind, RedisError, RedisResult, ServerErrorKind};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::batch::Batch;
use self::conn::{Conn, Redis};
use self::eviction::check_eviction;
use self::reader::Reader;
use self::script::LuaScript;
pub use self::settings::{RedisSettings, TlsFiles, Topology};
use self::stream::{APPEND, POSITION, READ_AFTER, flatten};
use self::token::{ISSUE_TOKEN, STAMP_TOKEN, STORE_TOKEN, TAKE_TOKEN, parse_cutoff};
use super::{FANOUT_CAPACITY, IssueRequest, Live, RevocationState, Store, StoreError, TakenToken};
use crate::event::{Event, EventChunk, EventId, NewEvent};
use crate::ws_token::{TokenHash, TokenRecord};

/// The stream and its epoch share the hash tag `{events}`: one slot, so the
/// scripts that read or append both run in Cluster mode.
const STREAM_KEY: &str = "wsauth:{events}";
const EPOCH_KEY: &str = "wsauth:{events}:epoch";
const JTI_PREFIX: &str = "wsauth:rjti:";
const CUTOFF_PREFIX: &str = "wsauth:rusr:";

/// RevokeUser's cutoff on Redis's clock, never lowered (another replica may
/// have set a later one); returns it.
const REVOKE_USER: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local old = tonumber(redis.call('GET', KEYS[1]) or '')
if old and old > now then now = old end
redis.call('SET', KEYS[1], string.format('%d', now))
return now
";

/// Keys live at most this long in Redis (100 years): a longer PX is refused by Redis.
const MAX_TTL_MS: u64 = 100 * 365 * 86_400 * 1000;

/// The Redis store. Cheap to clone; the reader task stops when `shutdown` is cancelled.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    redis: Arc<Redis>,
    timeout: Duration,
    retention: u64,
    wait_replicas: u32,
    fanout: broadcast::Sender<Live>,
    /// True while the reader has a position and a working connection.
    ready: watch::Receiver<bool>,
    scripts: Scripts,
}

struct Scripts {
    take_token: LuaScript,
    issue_token: LuaScript,
    stamp_token: LuaScript,
    store_token: LuaScript,
    revoke_user: LuaScript,
    append: LuaScript,
    read_after: LuaScript,
    position: LuaScript,
}

impl RedisStore {
    /// One server at `url` with the default settings (tests and tools).
    pub async fn new(
        url: &str,
        timeout: Duration,
        retention: u64,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Self, StoreError> {
        Self::connect(
            &RedisSettings::single(url, timeout, retention),
            shutdown,
            tasks,
        )
        .await
    }

    /// Connects lazily (auth starts even while Redis is down), checks
    /// `maxmemory-policy` when Redis answers, and starts the stream reader
    /// on `tasks`, which runs until `shutdown` is cancelled. Waits (up to
    /// twice the timeout) for the reader to find its starting point; until
    /// it has, [`Store::live`] answers Unavailable, so that no subscriber is
    /// taken on at a position the reader may never deliver from.
    pub async fn connect(
        settings: &RedisSettings,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Self, StoreError> {
        let redis = Arc::new(Redis::open(settings)?);
        let timeout = settings.timeout;
        check_eviction(&redis, timeout, settings.allow_eviction).await?;
        let (fanout, _) = broadcast::channel(FANOUT_CAPACITY);
        let (ready_tx, ready) = watch::channel(false);
        let store = Self {
            inner: Arc::new(Inner {
                redis: redis.clone(),
                timeout,
                retention: settings.retention,
                wait_replicas: settings.wait_replicas,
                fanout: fanout.clone(),
                ready: ready.clone(),
                scripts: Scripts {
                    take_token: LuaScript::new(TAKE_TOKEN),
                    issue_token: LuaScript::new(ISSUE_TOKEN),
                    stamp_token: LuaScript::new(STAMP_TOKEN),
                    store_token: LuaScript::new(STORE_TOKEN),
                    revoke_user: LuaScript::new(REVOKE_USER),
                    append: LuaScript::new(APPEND),
                    read_after: LuaScript::new(READ_AFTER),
                    position: LuaScript::new(POSITION),
                },
            }),
        };
        let reader = Reader::new(redis, timeout, fanout, ready_tx);
        tasks.spawn(reader.run(shutdown));
        let mut ready = ready;
        let wait = timeout.saturating_mul(2);
        if tokio::time::timeout(wait, ready.wait_for(|ready| *ready))
            .await
            .is_err()
        {
            tracing::warn!(
                "redis is not reachable yet; serving anyway (Subscribe answers UNAVAILABLE until \
                 the event stream reader connects) and retrying in the background"
            );
        }
        Ok(store)
    }

    /// Runs `work` on a connection, all under the deadline (in Sentinel mode
    /// the deadline also covers asking the sentinels for the master).
    async fn call<T, F, Fut>(&self, work: F) -> Result<T, StoreError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let timed_out = || StoreError::Unavailable("redis call timed out".into());
        let deadline = tokio::time::Instant::now() + self.inner.timeout;
        let conn = match tokio::time::timeout_at(deadline, self.inner.redis.conn()).await {
            Ok(conn) => conn.map_err(store_error)?,
            Err(_) => return Err(timed_out()),
        };
        let marker = conn.clone();
        match tokio::time::timeout_at(deadline, work(conn)).await {
            Ok(result) => result.map_err(store_error),
            Err(_) => {
                marker.timed_out();
                Err(timed_out())
            }
        }
    }

    /// With `REDIS_WAIT_REPLICAS`, waits (WAIT) until that many replicas of
    /// the master holding `key` have every write made so far on `conn`:
    /// a failover then cannot lose it. Unavailable when too few answered in time.
    async fn replicate(&self, conn: &mut Conn, key: &str) -> RedisResult<()> {
        let wanted = self.inner.wait_replicas;
        if wanted == 0 {
            return Ok(());
        }
        // Half the call deadline, so the reply still arrives within it.
        let wait_ms = u64::try_from(self.inner.timeout.as_millis() / 2)
            .unwrap_or(u64::MAX)
            .max(1);
        let mut cmd = redis::cmd("WAIT");
        cmd.arg(wanted).arg(wait_ms);
        let acked: i64 = redis::from_redis_value(conn.query_at(key, &cmd).await?)?;
        if acked < i64::from(wanted) {
            return Err(RedisError::from((
                ErrorKind::Io,
                "too few replicas acknowledged the write",
                format!("{acked} of {wanted} within {wait_ms} ms"),
            )));
        }
        Ok(())
    }
}

fn store_error_is_transient(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || matches!(
            error.kind(),
            ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ReadOnly
                    | ServerErrorKind::Moved
                    | ServerErrorKind::Ask
            ) | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::NoValidReplicasFoundBySentinel
                | ErrorKind::EmptySentinelList
                | ErrorKind::ClusterConnectionNotFound
        )
}

/// Unreachable, timed out, failing over or loading: Unavailable (retry later).
/// Anything else (WRONGTYPE, script errors, NOAUTH, NOPERM...) is a
/// misconfiguration that retrying will not fix: Failed.
fn store_error(error: RedisError) -> StoreError {
    if store_error_is_transient(&error) {
        StoreError::Unavailable(error.to_string())
    } else {
        StoreError::Failed(error.to_string())
    }
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unexpected reply: {what}"))
}

fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(u64::MAX)
        .clamp(1, MAX_TTL_MS)
}

fn cutoff_key(user_id: &str) -> String {
    format!("{CUTOFF_PREFIX}{user_id}")
}

fn jti_key(jti: &str) -> String {
    format!("{JTI_PREFIX}{jti}")
}

#[async_trait]
impl Store for RedisStore {
    async fn issue_ws_token(
        &self,
        request: IssueRequest<'_>,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let issued = self.issue(request).await?;
        let ttl_ms = ttl_ms(request.ttl);
        Ok(issued.map(|issued_ms| TokenRecord {
            issued_ms,
            expires_ms: issued_ms.saturating_add(ttl_ms),
            user_id: request.user_id.to_owned(),
        }))
    }

    async fn take_ws_token(
        &self,
        hash: &TokenHash,
        consume: bool,
    ) -> Result<Option<TakenToken>, StoreError> {
        self.take(hash, consume).await
    }

    async fn revoke_jti(&self, jti: &str, ttl: Option<Duration>) -> Result<(), StoreError> {
        let key = jti_key(jti);
        let mut cmd = redis::cmd("SET");
        cmd.arg(&key).arg("1");
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl_ms(ttl));
        }
        self.call(|mut conn| async move {
            cmd.query_async::<()>(&mut conn).await?;
            self.replicate(&mut conn, &key).await
        })
        .await
    }

    async fn revoke_user(&self, user_id: &str) -> Result<u64, StoreError> {
        let key = cutoff_key(user_id);
        self.call(|mut conn| async move {
            let cutoff = self
                .inner
                .scripts
                .revoke_user
                .key(&key)
                .invoke_async(&mut conn)
                .await?;
            self.replicate(&mut conn, &key).await?;
            Ok(cutoff)
        })
        .await
    }

    async fn revocation(
        &self,
        jti: Option<&str>,
        user_id: &str,
    ) -> Result<RevocationState, StoreError> {
        let (cutoff, jti_flag): (Option<Vec<u8>>, bool) = if self.inner.redis.is_cluster() {
            // Two commands, not one MGET: in Cluster mode the keys are in
            // different slots. Sent together, they share one round trip.
            self.call(|conn| async move {
                let mut cutoff_conn = conn;
                let mut jti_conn = cutoff_conn.clone();
                let mut get = redis::cmd("GET");
                get.arg(cutoff_key(user_id));
                let cutoff = get.query_async(&mut cutoff_conn);
                let flag = async {
                    match jti {
                        Some(jti) => {
                            redis::cmd("EXISTS")
                                .arg(jti_key(jti))
                                .query_async::<bool>(&mut jti_conn)
                                .await
                        }
                        None => Ok(false),
                    }
                };
                let (cutoff, flag) = futures::future::join(cutoff, flag).await;
                Ok((cutoff?, flag?))
            })
            .await?
        } else {
            // One server: one MGET, one command for Redis to run. A revoked
            // jti's key holds "1", so MGET sees it as EXISTS would. (A key of
            // another type, which only a foreign writer could make, reads as
            // nil here, where EXISTS would have said yes.)
            self.call(|mut conn| async move {
                let mut mget = redis::cmd("MGET");
                mget.arg(cutoff_key(user_id));
                if let Some(jti) = jti {
                    mget.arg(jti_key(jti));
                }
                let mut values: Vec<Option<Vec<u8>>> = mget.query_async(&mut conn).await?;
                let jti_flag = jti.is_some() && values.pop().flatten().is_some();
                Ok((values.into_iter().next().flatten(), jti_flag))
            })
            .await?
        };
        Ok(RevocationState {
            jti_revoked: jti_flag,
            user_cutoff_ms: parse_cutoff(cutoff.as_deref().unwrap_or_default())?,
        })
    }

    async fn append(&self, event: NewEvent) -> Result<Event, StoreError> {
        self.append_event(event).await
    }

    async fn stream_end(&self) -> Result<EventId, StoreError> {
        self.stream_position().await
    }

    async fn read_after(
        &self,
        after: &EventId,
        count: usize,
        max_bytes: usize,
    ) -> Result<EventChunk, StoreError> {
        self.read_events_after(after, count, max_bytes).await
    }

    fn live(&self) -> Result<broadcast::Receiver<Live>, StoreError> {
        // Subscribe before checking: had the reader been ready only before
        // the subscription, an event could fall between the two.
        let live = self.inner.fanout.subscribe();
        if *self.inner.ready.borrow() {
            Ok(live)
        } else {
            Err(StoreError::Unavailable(
                "the event stream reader is not connected to redis".into(),
            ))
        }
    }

    fn live_ready(&self) -> watch::Receiver<bool> {
        self.inner.ready.clone()
    }
}

/// A plain connection to a test's own redis-server, for tests that run the
/// scripts directly.
#[cfg(test)]
async fn test_connection(redis: &wsauth_tests::TestRedis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("a valid url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis-server answers")
}
