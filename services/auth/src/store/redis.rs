//! The Redis store, shared by every auth replica.
//!
//! Commands go through one multiplexed, self-reconnecting `ConnectionManager`,
//! each under `REDIS_TIMEOUT_MS`. The event stream is read by one task per
//! process on its own connection (a blocking XREAD on the shared one would
//! stall every other command) and fanned out in-process.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::{AsyncConnectionConfig, Client, IntoConnectionInfo, RedisError, Script, Value};
use tokio::sync::{broadcast, oneshot};
use tokio_util::sync::CancellationToken;

use super::{FANOUT_CAPACITY, RevocationState, Store, StoreError, TakenToken};
use crate::events::{Event, EventChunk, EventId, EventKind, NewEvent, StreamSeq, new_epoch};
use crate::ws_token::{TokenHash, TokenRecord};

const STREAM_KEY: &str = "wsauth:events";
const EPOCH_KEY: &str = "wsauth:epoch";
const JTI_PREFIX: &str = "wsauth:rjti:";
const CUTOFF_PREFIX: &str = "wsauth:rusr:";
/// How long one XREAD blocks; also how often the reader rechecks the epoch when idle.
const READ_BLOCK: Duration = Duration::from_secs(2);
const READ_COUNT: usize = 512;

/// GET or GETDEL (ARGV[1] == "1") of a ws token, and its user's cutoff, in one
/// atomic step. The value is "<issued_ms> <expires_ms> <user_id>".
const TAKE_TOKEN: &str = r"
local v
if ARGV[1] == '1' then v = redis.call('GETDEL', KEYS[1]) else v = redis.call('GET', KEYS[1]) end
if not v then return false end
local a = string.find(v, ' ', 1, true)
local b = a and string.find(v, ' ', a + 1, true)
if not b then return {v, ''} end
local cutoff = redis.call('GET', ARGV[2] .. string.sub(v, b + 1))
return {v, cutoff or ''}
";

/// Gets or creates the epoch, then appends the event carrying it.
const APPEND: &str = r"
local epoch = redis.call('GET', KEYS[2])
if not epoch then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*',
  'e', epoch, 'k', ARGV[3], 'u', ARGV[4], 'd', ARGV[5])
return {epoch, id}
";

/// One consistent view for a resuming reader: the epoch; the first retained
/// id when trimming removed anything (ids before it are gone; the last
/// generated id when nothing is left); the entries after ARGV[1].
/// (Redis >= 7: `entries-added`. Trimming does not move `max-deleted-entry-id`.)
const READ_AFTER: &str = r"
local epoch = redis.call('GET', KEYS[2])
if not epoch then return {'', '', {}} end
local first_kept = ''
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  local f = {}
  for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
  if tonumber(f['entries-added']) > tonumber(f['length']) then
    if f['length'] > 0 and f['first-entry'] then
      first_kept = f['first-entry'][1]
    else
      first_kept = f['last-generated-id']
    end
  end
end
local entries = redis.call('XRANGE', KEYS[1], '(' .. ARGV[1], '+', 'COUNT', ARGV[2])
return {epoch, first_kept, entries}
";

/// Where the live reader starts: the epoch and the last id ever generated.
const POSITION: &str = r"
local epoch = redis.call('GET', KEYS[2])
local last = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end
return {epoch or '', last}
";

/// The Redis store. Cheap to clone; the reader task stops when `shutdown` is cancelled.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: ConnectionManager,
    timeout: Duration,
    retention: u64,
    fanout: broadcast::Sender<Arc<Event>>,
    take_token: Script,
    append: Script,
    read_after: Script,
}

impl RedisStore {
    /// Connects lazily (auth starts even while Redis is down) and starts the
    /// stream reader, which runs until `shutdown` is cancelled. Waits (up to
    /// the timeout) for the reader to find its starting point, so that a
    /// subscriber served right after startup misses no event.
    pub async fn new(
        url: &str,
        timeout: Duration,
        retention: u64,
        shutdown: CancellationToken,
    ) -> Result<Self, StoreError> {
        let invalid_url =
            |e: RedisError| StoreError::Unavailable(format!("invalid REDIS_URL: {:?}", e.kind()));
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
            ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(unavailable)?;
        let (fanout, _) = broadcast::channel(FANOUT_CAPACITY);
        let store = Self {
            inner: Arc::new(Inner {
                conn,
                timeout,
                retention,
                fanout: fanout.clone(),
                take_token: Script::new(TAKE_TOKEN),
                append: Script::new(APPEND),
                read_after: Script::new(READ_AFTER),
            }),
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        let reader = Reader {
            client,
            timeout,
            fanout,
            position: None,
            ready: Some(ready_tx),
        };
        tokio::spawn(reader.run(shutdown));
        if tokio::time::timeout(timeout * 2, ready_rx).await.is_err() {
            tracing::warn!(
                "redis is not reachable yet; serving anyway and retrying in the background"
            );
        }
        Ok(store)
    }

    /// Runs one Redis call under the deadline, mapping every failure to Unavailable.
    async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        match tokio::time::timeout(self.inner.timeout, f).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(StoreError::Unavailable("redis call timed out".into())),
        }
    }

    fn conn(&self) -> ConnectionManager {
        self.inner.conn.clone()
    }
}

fn unavailable(error: RedisError) -> StoreError {
    StoreError::Unavailable(error.to_string())
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("unexpected reply: {what}"))
}

#[async_trait]
impl Store for RedisStore {
    async fn put_ws_token(
        &self,
        hash: &TokenHash,
        record: &TokenRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut cmd = redis::cmd("SET");
        cmd.arg(hash.key())
            .arg(record.encode())
            .arg("PX")
            .arg(ttl_ms);
        self.call(cmd.query_async::<()>(&mut conn)).await
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
        let record = TokenRecord::decode(&value)?;
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
            cmd.arg("PX")
                .arg(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1));
        }
        self.call(cmd.query_async::<()>(&mut conn)).await
    }

    async fn set_user_cutoff(&self, user_id: &str, cutoff_ms: u64) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let mut cmd = redis::cmd("SET");
        cmd.arg(format!("{CUTOFF_PREFIX}{user_id}")).arg(cutoff_ms);
        self.call(cmd.query_async::<()>(&mut conn)).await
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
        let seq = id.parse().map_err(|()| corrupt("XADD id"))?;
        Ok(Event {
            id: EventId { epoch, seq },
            kind: event.kind,
            user_id: event.user_id,
            data: event.data,
        })
    }

    async fn read_after(&self, after: &EventId, count: usize) -> Result<EventChunk, StoreError> {
        let mut conn = self.conn();
        let mut invocation = self.inner.read_after.key(STREAM_KEY);
        invocation
            .key(EPOCH_KEY)
            .arg(after.seq.to_string())
            .arg(count);
        let reply: Value = self.call(invocation.invoke_async(&mut conn)).await?;
        let Value::Array(mut parts) = reply else {
            return Err(corrupt("read script"));
        };
        if parts.len() != 3 {
            return Err(corrupt("read script"));
        }
        let entries = parts.pop().unwrap_or(Value::Nil);
        let first_kept = text(&parts[1]).filter(|s| !s.is_empty());
        let epoch = text(&parts[0]).filter(|s| !s.is_empty());
        let Some(epoch) = epoch else {
            return Ok(EventChunk::default());
        };
        let first_kept = match first_kept {
            Some(id) => Some(id.parse().map_err(|()| corrupt("first retained id"))?),
            None => None,
        };
        let events = parse_entries(entries)?;
        Ok(EventChunk {
            epoch: Some(epoch.to_owned()),
            first_kept,
            events,
        })
    }

    fn live(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.fanout.subscribe()
    }
}

fn parse_cutoff(bytes: &[u8]) -> Result<Option<u64>, StoreError> {
    if bytes.is_empty() {
        return Ok(None);
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Some)
        .ok_or_else(|| corrupt("user cutoff"))
}

fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// Parses XRANGE / one XREAD stream's entries: `[[id, [field, value, ...]], ...]`.
fn parse_entries(value: Value) -> Result<Vec<Event>, StoreError> {
    let Value::Array(entries) = value else {
        return Err(corrupt("stream entries"));
    };
    entries.into_iter().map(parse_entry).collect()
}

fn parse_entry(entry: Value) -> Result<Event, StoreError> {
    let Value::Array(mut parts) = entry else {
        return Err(corrupt("stream entry"));
    };
    let fields = parts.pop();
    let (Some(id), Some(Value::Array(fields))) = (parts.pop(), fields) else {
        return Err(corrupt("stream entry"));
    };
    let seq: StreamSeq = text(&id)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| corrupt("entry id"))?;
    let mut epoch = None;
    let mut kind = None;
    let mut user_id = None;
    let mut data = None;
    let mut fields = fields.into_iter();
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let Value::BulkString(value) = value else {
            return Err(corrupt("entry field"));
        };
        match text(&name) {
            Some("e") => epoch = String::from_utf8(value).ok(),
            Some("k") => kind = EventKind::from_tag(&value),
            Some("u") => user_id = String::from_utf8(value).ok(),
            Some("d") => data = String::from_utf8(value).ok(),
            _ => {}
        }
    }
    let (Some(epoch), Some(kind), Some(user_id), Some(data)) = (epoch, kind, user_id, data) else {
        return Err(corrupt("entry fields"));
    };
    Ok(Event {
        id: EventId { epoch, seq },
        kind,
        user_id: (!user_id.is_empty()).then_some(user_id),
        data,
    })
}

// === impl Reader ===

/// The one stream reader of this process: XREAD BLOCK on a dedicated
/// connection, each entry sent to the in-process fan-out.
struct Reader {
    client: Client,
    timeout: Duration,
    fanout: broadcast::Sender<Arc<Event>>,
    /// The epoch and last id read; None before the first successful read.
    position: Option<(String, StreamSeq)>,
    /// Fired once the first starting point is known.
    ready: Option<oneshot::Sender<()>>,
}

impl Reader {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = tokio::select! {
                () = shutdown.cancelled() => return,
                result = self.connect_and_read() => result,
            };
            match result {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(error) => {
                    tracing::warn!(%error, retry_in_ms = backoff.as_millis() as u64, "event stream reader lost redis");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Reads until an error. Only returns with an error (the loop never ends on its own).
    async fn connect_and_read(&mut self) -> Result<(), StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(READ_BLOCK + self.timeout));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(unavailable)?;
        let mut from = self.start_position(&mut conn).await?;
        // Pin the start now: a reconnect must not skip what came in meanwhile.
        self.position = Some(from.clone());
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(());
        }
        tracing::debug!(epoch = %from.0, from = %from.1, "event stream reader connected");
        loop {
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(u64::try_from(READ_BLOCK.as_millis()).unwrap_or(2000))
                .arg("STREAMS")
                .arg(STREAM_KEY)
                .arg(from.1.to_string());
            let reply: Value = cmd.query_async(&mut conn).await.map_err(unavailable)?;
            let entries = match reply {
                Value::Nil => {
                    // Idle: the stream may have been deleted and recreated
                    // (a flush) without this connection breaking.
                    let now = self.start_position(&mut conn).await?;
                    if now.0 != from.0 {
                        from = now;
                        self.position = Some(from.clone());
                    }
                    continue;
                }
                other => xread_entries(other)?,
            };
            for event in entries {
                if !from.0.is_empty() && event.id.epoch != from.0 {
                    // Redis lost the stream (restart without persistence, flush):
                    // what was appended but not yet read here is gone.
                    tracing::warn!(
                        old_epoch = %from.0,
                        new_epoch = %event.id.epoch,
                        "event stream reset by redis: events may have been lost; \
                         resuming from an old-epoch id now gives OUT_OF_RANGE"
                    );
                }
                from = (event.id.epoch.clone(), event.id.seq);
                self.position = Some(from.clone());
                // No subscribers is fine: the event is in the stream for later readers.
                let _ = self.fanout.send(Arc::new(event));
            }
        }
    }

    /// Continue after the last id read when the epoch is unchanged; read the
    /// whole new stream when it changed; start at the end on first connect.
    async fn start_position(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(String, StreamSeq), StoreError> {
        let script = Script::new(POSITION);
        let mut invocation = script.key(STREAM_KEY);
        invocation.key(EPOCH_KEY);
        let (epoch, last): (String, String) =
            tokio::time::timeout(self.timeout, invocation.invoke_async(conn))
                .await
                .map_err(|_| StoreError::Unavailable("redis call timed out".into()))?
                .map_err(unavailable)?;
        let last: StreamSeq = last.parse().map_err(|()| corrupt("last-generated-id"))?;
        Ok(match &self.position {
            None => (epoch, last),
            Some((known, seq)) if *known == epoch => (epoch, *seq),
            Some((known, _)) => {
                if !known.is_empty() {
                    tracing::warn!(
                        old_epoch = %known,
                        new_epoch = %epoch,
                        "event stream reset by redis: events may have been lost; \
                         resuming from an old-epoch id now gives OUT_OF_RANGE"
                    );
                }
                (epoch, StreamSeq::default())
            }
        })
    }
}

/// Entries of the single stream in an XREAD reply (RESP2 array or RESP3 map).
fn xread_entries(reply: Value) -> Result<Vec<Event>, StoreError> {
    let stream = match reply {
        Value::Array(mut streams) => match streams.pop() {
            Some(Value::Array(mut pair)) if pair.len() == 2 => pair.pop(),
            _ => None,
        },
        Value::Map(mut streams) => streams.pop().map(|(_, entries)| entries),
        _ => None,
    };
    parse_entries(stream.ok_or_else(|| corrupt("XREAD reply"))?)
}
