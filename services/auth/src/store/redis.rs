//! The Redis store, shared by every auth replica.
//!
//! Commands go through one multiplexed, self-reconnecting `ConnectionManager`,
//! each under `REDIS_TIMEOUT_MS`; the scripts live beside what they keep
//! ([`token`], [`stream`]). The event stream is read by one [`reader`] task
//! per process on its own connection and fanned out in-process.

mod reader;
mod stream;
mod token;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ErrorKind, IntoConnectionInfo, RedisError, Script, ServerErrorKind, Value};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use self::reader::Reader;
use self::stream::{APPEND, READ_AFTER, parse_entries, text};
use self::token::{ISSUE_TOKEN, TAKE_TOKEN, decode_record, parse_cutoff};
use super::{FANOUT_CAPACITY, IssueRequest, Live, RevocationState, Store, StoreError, TakenToken};
use crate::event::{Event, EventChunk, EventId, NewEvent, new_epoch};
use crate::ws_token::{TokenHash, TokenRecord};

const STREAM_KEY: &str = "wsauth:events";
const EPOCH_KEY: &str = "wsauth:epoch";
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
    conn: ConnectionManager,
    timeout: Duration,
    retention: u64,
    fanout: broadcast::Sender<Live>,
    /// True while the reader has a position and a working connection.
    ready: watch::Receiver<bool>,
    take_token: Script,
    issue_token: Script,
    revoke_user: Script,
    append: Script,
    read_after: Script,
}

impl RedisStore {
    /// Connects lazily (auth starts even while Redis is down) and starts the
    /// stream reader on `tasks`, which runs until `shutdown` is cancelled.
    /// Waits (up to twice the timeout) for the reader to find its starting
    /// point; until it has, [`Store::live`] answers Unavailable, so that no
    /// subscriber is taken on at a position the reader may never deliver from.
    pub async fn new(
        url: &str,
        timeout: Duration,
        retention: u64,
        shutdown: CancellationToken,
        tasks: &TaskTracker,
    ) -> Result<Self, StoreError> {
        let invalid_url =
            |e: RedisError| StoreError::Failed(format!("invalid REDIS_URL: {:?}", e.kind()));
        let info = url.into_connection_info().map_err(invalid_url)?;
        // Every command is a small request awaiting its reply: Nagle would
        // hold some of them back until the server's delayed ACK.
        let tcp = info.tcp_settings().clone().set_nodelay(true);
        let client = Client::open(info.set_tcp_settings(tcp)).map_err(invalid_url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let conn =
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(store_error)?;
        let (fanout, _) = broadcast::channel(FANOUT_CAPACITY);
        let (ready_tx, ready) = watch::channel(false);
        let store = Self {
            inner: Arc::new(Inner {
                conn,
                timeout,
                retention,
                fanout: fanout.clone(),
                ready: ready.clone(),
                take_token: Script::new(TAKE_TOKEN),
                issue_token: Script::new(ISSUE_TOKEN),
                revoke_user: Script::new(REVOKE_USER),
                append: Script::new(APPEND),
                read_after: Script::new(READ_AFTER),
            }),
        };
        let reader = Reader::new(client, timeout, fanout, ready_tx);
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

    /// Runs one Redis call under the deadline.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        match tokio::time::timeout(self.inner.timeout, f).await {
            Ok(result) => result.map_err(store_error),
            Err(_) => Err(StoreError::Unavailable("redis call timed out".into())),
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }
}

/// Unreachable, timed out, failing over or loading: Unavailable (retry later).
/// Anything else (WRONGTYPE, script errors, NOAUTH, NOPERM...) is a
/// misconfiguration that retrying will not fix: Failed.
fn store_error(error: RedisError) -> StoreError {
    let transient = error.is_io_error()
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
            ) | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::NoValidReplicasFoundBySentinel
                | ErrorKind::EmptySentinelList
        );
    if transient {
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

#[async_trait]
impl Store for RedisStore {
    async fn issue_ws_token(
        &self,
        request: IssueRequest<'_>,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let mut conn = self.conn();
        let ttl_ms = ttl_ms(request.ttl);
        let mut invocation = self.inner.issue_token.key(request.hash.key());
        invocation.key(format!("{CUTOFF_PREFIX}{}", request.user_id));
        if let Some(jti) = request.jti {
            invocation.key(format!("{JTI_PREFIX}{jti}"));
        }
        invocation
            .arg(request.user_id)
            .arg(request.iat.map(|iat| iat.to_string()).unwrap_or_default())
            .arg(ttl_ms)
            .arg(request.leeway_s);
        let issued: Option<u64> = self.call(invocation.invoke_async(&mut conn)).await?;
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
        let mut conn = self.conn();
        let mut invocation = self.inner.take_token.key(hash.key());
        invocation
            .arg(if consume { "1" } else { "0" })
            .arg(CUTOFF_PREFIX);
        let reply: Option<(Vec<u8>, Vec<u8>)> =
            self.call(invocation.invoke_async(&mut conn)).await?;
        let Some((value, cutoff)) = reply else {
            return Ok(None);
        };
        let record = decode_record(&value)?;
        let user_cutoff_ms = parse_cutoff(&cutoff)?;
        Ok(Some(TakenToken {
            record,
            user_cutoff_ms,
        }))
    }

    async fn revoke_jti(&self, jti: &str, ttl: Option<Duration>) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{JTI_PREFIX}{jti}")).arg("1");
        if let Some(ttl) = ttl {
            cmd.arg("PX").arg(ttl_ms(ttl));
        }
        self.call(cmd.query_async::<()>(&mut conn)).await
    }

    async fn revoke_user(&self, user_id: &str) -> Result<u64, StoreError> {
        let mut conn = self.conn();
        let invocation = self
            .inner
            .revoke_user
            .key(format!("{CUTOFF_PREFIX}{user_id}"));
        self.call(invocation.invoke_async(&mut conn)).await
    }

    async fn revocation(
        &self,
        jti: Option<&str>,
        user_id: &str,
    ) -> Result<RevocationState, StoreError> {
        let mut conn = self.conn();
        let mut cmd = redis::cmd("MGET");
        cmd.arg(format!("{CUTOFF_PREFIX}{user_id}"));
        if let Some(jti) = jti {
            cmd.arg(format!("{JTI_PREFIX}{jti}"));
        }
        let values: Vec<Option<Vec<u8>>> = self.call(cmd.query_async(&mut conn)).await?;
        let mut values = values.into_iter();
        let user_cutoff_ms = match values.next().flatten() {
            Some(cutoff) => parse_cutoff(&cutoff)?,
            None => None,
        };
        let jti_revoked = values.next().flatten().is_some();
        Ok(RevocationState {
            jti_revoked,
            user_cutoff_ms,
        })
    }

    async fn append(&self, event: NewEvent) -> Result<Event, StoreError> {
        let mut conn = self.conn();
        let mut invocation = self.inner.append.key(STREAM_KEY);
        invocation
            .key(EPOCH_KEY)
            .arg(new_epoch())
            .arg(self.inner.retention)
            .arg(event.kind.tag())
            .arg(event.user_id.as_deref().unwrap_or(""))
            .arg(&event.data);
        let (epoch, id): (String, String) = self.call(invocation.invoke_async(&mut conn)).await?;
        let seq = id.parse().map_err(|_| corrupt("XADD id"))?;
        Ok(Event {
            id: EventId {
                epoch: epoch.into(),
                seq,
            },
            kind: event.kind,
            user_id: event.user_id,
            data: event.data,
        })
    }

    async fn read_after(
        &self,
        after: &EventId,
        count: usize,
        max_bytes: usize,
    ) -> Result<EventChunk, StoreError> {
        let mut conn = self.conn();
        let mut invocation = self.inner.read_after.key(STREAM_KEY);
        invocation
            .key(EPOCH_KEY)
            .arg(after.seq.to_string())
            .arg(count.max(1))
            .arg(max_bytes);
        let reply: Value = self.call(invocation.invoke_async(&mut conn)).await?;
        let Value::Array(parts) = reply else {
            return Err(corrupt("read script"));
        };
        let Ok([epoch, first_kept, last, entries, complete]) = <[Value; 5]>::try_from(parts) else {
            return Err(corrupt("read script"));
        };
        let Some(epoch) = text(&epoch).filter(|s| !s.is_empty()) else {
            return Ok(EventChunk {
                complete: true,
                ..EventChunk::default()
            });
        };
        let first_kept = match text(&first_kept).filter(|s| !s.is_empty()) {
            Some(id) => Some(id.parse().map_err(|_| corrupt("first retained id"))?),
            None => None,
        };
        let last = text(&last)
            .and_then(|id| id.parse().ok())
            .ok_or_else(|| corrupt("last generated id"))?;
        let events = parse_entries(entries)?;
        Ok(EventChunk {
            epoch: Some(epoch.to_owned()),
            first_kept,
            last,
            events,
            complete: matches!(complete, Value::Int(1)),
        })
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
