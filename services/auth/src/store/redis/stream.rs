//! The event stream in Redis: the scripts that append and read it, the store's
//! calls that run them, and the parsing of the entries they return.

use redis::Value;

use super::{EPOCH_KEY, RedisStore, STREAM_KEY, corrupt};
use crate::error::StoreError;
use crate::event::{Event, EventChunk, EventId, EventKind, NewEvent, StreamSeq, new_epoch};
#[cfg(doc)]
use crate::store::Store;

/// Gets or creates the epoch, then appends the event carrying it.
pub(super) const APPEND: &str = r"
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
pub(super) const READ_AFTER: &str = r"
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

/// Where the stream ends now: the epoch ('' when there is none), the last id
/// ever generated (`0-0` before the first event), and 1 when the epoch was
/// created here. Given a new epoch in ARGV[1] (a live subscriber's start), it
/// creates the epoch when there is none, as APPEND would, so that a
/// subscriber resuming from there is refused (OUT_OF_RANGE) if the epoch
/// changes or trimming passes it, and no loss goes untold. Without ARGV[1]
/// (the stream reader) it only reads.
pub(super) const POSITION: &str = r"
local epoch = redis.call('GET', KEYS[2])
local created = 0
if not epoch and ARGV[1] then
  epoch = ARGV[1]
  redis.call('SET', KEYS[2], epoch)
  created = 1
end
local last = '0-0'
if redis.call('EXISTS', KEYS[1]) == 1 then
  local info = redis.call('XINFO', 'STREAM', KEYS[1])
  for i = 1, #info, 2 do
    if info[i] == 'last-generated-id' then last = info[i + 1] end
  end
end
return {epoch or '', last, created}
";

impl RedisStore {
    /// Publish's store step: appends `event`, replicated as configured.
    pub(super) async fn append_event(&self, event: NewEvent) -> Result<Event, StoreError> {
        let mut invocation = self.inner.scripts.append.key(STREAM_KEY);
        invocation
            .key(EPOCH_KEY)
            .arg(new_epoch())
            .arg(self.inner.retention)
            .arg(event.kind.tag())
            .arg(event.user_id.as_deref().unwrap_or(""))
            .arg(&event.data);
        let (epoch, id): (String, String) = self
            .call(|mut conn| async move {
                let appended = invocation.invoke_async(&mut conn).await?;
                self.replicate(&mut conn, STREAM_KEY).await?;
                Ok(appended)
            })
            .await?;
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

    /// See [`Store::stream_end`].
    pub(super) async fn stream_position(&self) -> Result<EventId, StoreError> {
        let mut invocation = self.inner.scripts.position.key(STREAM_KEY);
        invocation.key(EPOCH_KEY).arg(new_epoch());
        let (epoch, last): (String, String) = self
            .call(|mut conn| async move {
                let (epoch, last, created): (String, String, bool) =
                    invocation.invoke_async(&mut conn).await?;
                // An epoch lost in a failover would start another with the
                // next Publish: every subscriber told of a gap that lost nothing.
                if created {
                    self.replicate(&mut conn, EPOCH_KEY).await?;
                }
                Ok((epoch, last))
            })
            .await?;
        Ok(EventId {
            epoch: epoch.into(),
            seq: last.parse().map_err(|_| corrupt("last generated id"))?,
        })
    }

    /// See [`Store::read_after`].
    pub(super) async fn read_events_after(
        &self,
        after: &EventId,
        count: usize,
        max_bytes: usize,
    ) -> Result<EventChunk, StoreError> {
        let mut invocation = self.inner.scripts.read_after.key(STREAM_KEY);
        invocation
            .key(EPOCH_KEY)
            .arg(after.seq.to_string())
            .arg(count.max(1))
            .arg(max_bytes);
        let reply: Value = self
            .call(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await?;
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
}

pub(super) fn text(value: &Value) -> Option<&str> {
    match value {
        Value::BulkString(bytes) => std::str::from_utf8(bytes).ok(),
        Value::SimpleString(s) => Some(s),
        _ => None,
    }
}

/// Parses XRANGE / one XREAD stream's entries: `[[id, [field, value, ...]], ...]`.
pub(super) fn parse_entries(value: Value) -> Result<Vec<Event>, StoreError> {
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
        id: EventId {
            epoch: epoch.into(),
            seq,
        },
        kind,
        user_id: (!user_id.is_empty()).then_some(user_id),
        data,
    })
}

/// Entries of the single stream in an XREAD reply (RESP2 array or RESP3 map).
pub(super) fn xread_entries(reply: Value) -> Result<Vec<Event>, StoreError> {
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
/// Every string inside a reply (a Cluster answers per node).
pub(super) fn flatten(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Array(items) | Value::Set(items) => items.iter().for_each(|v| flatten(v, out)),
        Value::Map(pairs) => pairs.iter().for_each(|(k, v)| {
            flatten(k, out);
            flatten(v, out);
        }),
        other => out.extend(text(other).map(str::to_owned)),
    }
}
