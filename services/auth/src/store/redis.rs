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
use redis::{
    AsyncConnectionConfig, Client, ErrorKind, IntoConnectionInfo, RedisError, Script,
    ServerErrorKind, Value,
};
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{FANOUT_CAPACITY, IssueRequest, Live, RevocationState, Store, StoreError, TakenToken};
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

/// IssueWsToken in one atomic step, on Redis's clock: refuse a revoked JWT
/// (KEYS[3], the jti key, when given; the user's cutoff KEYS[2] against the
/// iat ARGV[2]), else store the token KEYS[1] for ARGV[1] (user id) with
/// PX ARGV[3]; returns the issue time (ms) or false when revoked.
/// Mirrors `revocation::jwt_is_revoked` (leeway ARGV[4]).
const ISSUE_TOKEN: &str = r"
if KEYS[3] and redis.call('EXISTS', KEYS[3]) == 1 then return false end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = tonumber(redis.call('GET', KEYS[2]) or '')
if cutoff then
  if ARGV[2] == '' then return false end
  local iat = tonumber(ARGV[2])
  if iat <= math.floor(cutoff / 1000) or iat > math.floor(now / 1000) + tonumber(ARGV[4]) then
    return false
  end
end
local ttl = tonumber(ARGV[3])
redis.call('SET', KEYS[1], string.format('%d %d ', now, now + ttl) .. ARGV[1], 'PX', ARGV[3])
return now
";

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
/// generated id when nothing is left); the last generated id; up to ARGV[2]
/// entries after ARGV[1] (a canonical `ms-seq`), stopping once they hold
/// ARGV[3] bytes of values (read in small batches so that a chunk of large
/// events never becomes one huge Lua table); 1 when the end was reached.
/// An id after the last generated one reads nothing (the caller refuses it).
/// (Redis >= 7: `entries-added`. Trimming does not move `max-deleted-entry-id`.)
const READ_AFTER: &str = r"
local epoch = redis.call('GET', KEYS[2])
if not epoch then return {'', '', '0-0', {}, 1} end
local first_kept = ''
local last = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  local f = {}
  for i = 1, #info, 2 do f[info[i]] = info[i + 1] end
  last = f['last-generated-id']
  if tonumber(f['entries-added']) > tonumber(f['length']) then
    if f['length'] > 0 and f['first-entry'] then
      first_kept = f['first-entry'][1]
    else
      first_kept = last
    end
  end
end
local function lt(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local am, as = string.match(ARGV[1], '^(%d+)-(%d+)$')
local lm, ls = string.match(last, '^(%d+)-(%d+)$')
if lt(lm, am) or (lm == am and lt(ls, as)) then return {epoch, first_kept, last, {}, 1} end
local out = {}
local bytes = 0
local count = tonumber(ARGV[2])
local budget = tonumber(ARGV[3])
local from = '(' .. ARGV[1]
while true do
  local want = math.min(count - #out, 8)
  if want <= 0 or (#out > 0 and bytes >= budget) then return {epoch, first_kept, last, out, 0} end
  local batch = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', want)
  for _, e in ipairs(batch) do
    if #out > 0 and bytes >= budget then return {epoch, first_kept, last, out, 0} end
    out[#out + 1] = e
    local fields = e[2]
    for i = 2, #fields, 2 do bytes = bytes + #fields[i] end
    from = '(' .. e[1]
  end
  if #batch < want then return {epoch, first_kept, last, out, 1} end
end
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
        let reader = Reader {
            client,
            timeout,
            fanout,
            position: None,
            ready: ready_tx,
            position_script: Script::new(POSITION),
        };
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
        let seq = id.parse().map_err(|()| corrupt("XADD id"))?;
        Ok(Event {
            id: EventId { epoch, seq },
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
            Some(id) => Some(id.parse().map_err(|()| corrupt("first retained id"))?),
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
    fanout: broadcast::Sender<Live>,
    /// The epoch and last id read; None before the first successful read.
    position: Option<(String, StreamSeq)>,
    /// True while this reader has a position and a working connection.
    ready: watch::Sender<bool>,
    position_script: Script,
}

/// How a connection attempt of the reader ended.
struct ReadFailure {
    /// It had reached a position (so it was serving) before failing.
    was_serving: bool,
    error: StoreError,
}

const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Reader {
    async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = INITIAL_BACKOFF;
        // Log state changes, not every retry of an outage.
        let mut reported_down = false;
        loop {
            let failure = tokio::select! {
                () = shutdown.cancelled() => break,
                failure = self.connect_and_read(&mut reported_down) => failure,
            };
            self.ready.send_replace(false);
            if failure.was_serving {
                backoff = INITIAL_BACKOFF;
            }
            if !reported_down {
                reported_down = true;
                tracing::warn!(error = %failure.error, "event stream reader lost redis; retrying in the background");
            } else {
                tracing::debug!(error = %failure.error, retry_in_ms = u64::try_from(backoff.as_millis()).unwrap_or(u64::MAX), "event stream reader still without redis");
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
        self.ready.send_replace(false);
    }

    /// Reads until an error (the loop never ends on its own).
    async fn connect_and_read(&mut self, reported_down: &mut bool) -> ReadFailure {
        let mut was_serving = false;
        let error = match self.read(&mut was_serving, reported_down).await {
            Ok(never) => match never {},
            Err(error) => error,
        };
        ReadFailure { was_serving, error }
    }

    async fn read(
        &mut self,
        was_serving: &mut bool,
        reported_down: &mut bool,
    ) -> Result<std::convert::Infallible, StoreError> {
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(READ_BLOCK + self.timeout));
        let mut conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(store_error)?;
        self.check_version(&mut conn).await?;
        let mut from = self.start_position(&mut conn).await?;
        // Pin the start now: a reconnect must not skip what came in meanwhile.
        self.position = Some(from.clone());
        self.ready.send_replace(true);
        *was_serving = true;
        if std::mem::take(reported_down) {
            tracing::info!(epoch = %from.0, from = %from.1, "event stream reader connected to redis again");
        } else {
            tracing::debug!(epoch = %from.0, from = %from.1, "event stream reader connected");
        }
        loop {
            let mut cmd = redis::cmd("XREAD");
            cmd.arg("COUNT")
                .arg(READ_COUNT)
                .arg("BLOCK")
                .arg(u64::try_from(READ_BLOCK.as_millis()).unwrap_or(2000))
                .arg("STREAMS")
                .arg(STREAM_KEY)
                .arg(from.1.to_string());
            let reply: Value = cmd.query_async(&mut conn).await.map_err(store_error)?;
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
                    // Redis lost the stream and it was recreated between two reads.
                    self.reset(&from.0, &event.id.epoch);
                }
                from = (event.id.epoch.clone(), event.id.seq);
                self.position = Some(from.clone());
                // No subscribers is fine: the event is in the stream for later readers.
                let _ = self.fanout.send(Live::Event(Arc::new(event)));
            }
        }
    }

    /// Redis lost the stream (restart without persistence, flush): what was
    /// appended but not yet read here is gone. Subscribers are told.
    fn reset(&self, old_epoch: &str, new_epoch: &str) {
        tracing::warn!(
            %old_epoch,
            %new_epoch,
            "event stream reset by redis: events may have been lost; subscribers are ended \
             with OUT_OF_RANGE and resuming from an old-epoch id gives OUT_OF_RANGE"
        );
        let _ = self.fanout.send(Live::Reset {
            epoch: new_epoch.to_owned(),
        });
    }

    /// History relies on XINFO's `entries-added` (Redis 7): say so clearly
    /// instead of failing every History call with a script error.
    async fn check_version(&self, conn: &mut MultiplexedConnection) -> Result<(), StoreError> {
        let info: String = tokio::time::timeout(
            self.timeout,
            redis::cmd("INFO").arg("server").query_async(conn),
        )
        .await
        .map_err(|_| StoreError::Unavailable("redis call timed out".into()))?
        .map_err(store_error)?;
        let version = info
            .lines()
            .find_map(|line| line.strip_prefix("redis_version:"))
            .map(str::trim);
        let major = version
            .and_then(|v| v.split('.').next())
            .and_then(|major| major.parse::<u32>().ok());
        if major.is_none_or(|major| major < 7) {
            tracing::error!(
                version = version.unwrap_or("unknown"),
                "wsauth needs Redis 7 or later: History and Subscribe with after_id will fail"
            );
        }
        Ok(())
    }

    /// Continue after the last id read when the epoch is unchanged; read the
    /// whole new stream when it changed; start at the end on first connect.
    async fn start_position(
        &self,
        conn: &mut MultiplexedConnection,
    ) -> Result<(String, StreamSeq), StoreError> {
        let mut invocation = self.position_script.key(STREAM_KEY);
        invocation.key(EPOCH_KEY);
        let (epoch, last): (String, String) =
            tokio::time::timeout(self.timeout, invocation.invoke_async(conn))
                .await
                .map_err(|_| StoreError::Unavailable("redis call timed out".into()))?
                .map_err(store_error)?;
        let last: StreamSeq = last.parse().map_err(|()| corrupt("last-generated-id"))?;
        Ok(match &self.position {
            None => (epoch, last),
            Some((known, seq)) if *known == epoch => (epoch, *seq),
            Some((known, _)) => {
                if !known.is_empty() {
                    self.reset(known, &epoch);
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
