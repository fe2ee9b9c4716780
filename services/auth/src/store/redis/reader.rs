//! The one stream reader of a process: XREAD BLOCK on a dedicated
//! connection (a blocking read on the shared one would stall every other
//! command), each entry sent to the in-process fan-out.

use std::sync::Arc;
use std::time::Duration;

use redis::Value;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;
use wsauth_shared::backoff::Backoff;

use super::conn::{Conn, Redis};
use super::script::LuaScript;
use super::stream::{POSITION, xread_entries};
use super::{EPOCH_KEY, STREAM_KEY, corrupt, flatten, store_error};
use crate::error::StoreError;
use crate::event::StreamSeq;
use crate::store::Live;

/// How long one XREAD blocks; also how often the reader rechecks the epoch when idle.
const READ_BLOCK: Duration = Duration::from_secs(2);
const READ_COUNT: usize = 512;

/// The one stream reader of this process: XREAD BLOCK on a dedicated
/// connection, each entry sent to the in-process fan-out.
pub(super) struct Reader {
    redis: Arc<Redis>,
    timeout: Duration,
    fanout: broadcast::Sender<Live>,
    /// The epoch and last id read; None before the first successful read.
    position: Option<(String, StreamSeq)>,
    /// True while this reader has a position and a working connection.
    ready: watch::Sender<bool>,
    position_script: LuaScript,
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
    /// A reader of `redis`'s stream that reports readiness on `ready`.
    pub(super) fn new(
        redis: Arc<Redis>,
        timeout: Duration,
        fanout: broadcast::Sender<Live>,
        ready: watch::Sender<bool>,
    ) -> Self {
        Self {
            redis,
            timeout,
            fanout,
            position: None,
            ready,
            position_script: LuaScript::new(POSITION),
        }
    }

    /// Reads until `shutdown`, reconnecting with backoff after every failure.
    pub(super) async fn run(mut self, shutdown: CancellationToken) {
        let mut backoff = Backoff::new(INITIAL_BACKOFF, MAX_BACKOFF);
        // Log state changes, not every retry of an outage.
        let mut reported_down = false;
        loop {
            let failure = tokio::select! {
                () = shutdown.cancelled() => break,
                failure = self.connect_and_read(&mut reported_down) => failure,
            };
            self.ready.send_replace(false);
            if failure.was_serving {
                backoff.reset();
            }
            let delay = backoff.next_delay();
            if !reported_down {
                reported_down = true;
                tracing::warn!(error = %failure.error, "event stream reader lost redis; retrying in the background");
            } else {
                tracing::debug!(error = %failure.error, retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX), "event stream reader still without redis");
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
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
        // A connection of its own: a blocking XREAD on the shared one would
        // stall every command behind it (in Cluster mode, on that node).
        let mut conn = tokio::time::timeout(
            self.timeout.saturating_mul(2),
            self.redis.dedicated(READ_BLOCK + self.timeout),
        )
        .await
        .map_err(|_| StoreError::Unavailable("redis connect timed out".into()))?
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
                if !from.0.is_empty() && *event.id.epoch != *from.0 {
                    // Redis lost the stream and it was recreated between two reads.
                    self.reset(&from.0, &event.id.epoch);
                }
                from = (event.id.epoch.to_string(), event.id.seq);
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
    async fn check_version(&self, conn: &mut Conn) -> Result<(), StoreError> {
        let info: Value = tokio::time::timeout(
            self.timeout,
            redis::cmd("INFO").arg("server").query_async(conn),
        )
        .await
        .map_err(|_| StoreError::Unavailable("redis call timed out".into()))?
        .map_err(store_error)?;
        // A Cluster answers once per node: any node's version will do.
        let mut texts = Vec::new();
        flatten(&info, &mut texts);
        let version = texts
            .iter()
            .flat_map(|text| text.lines())
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
    async fn start_position(&self, conn: &mut Conn) -> Result<(String, StreamSeq), StoreError> {
        let mut invocation = self.position_script.key(STREAM_KEY);
        invocation.key(EPOCH_KEY);
        let (epoch, last, _created): (String, String, bool) =
            tokio::time::timeout(self.timeout, invocation.invoke_async(conn))
                .await
                .map_err(|_| StoreError::Unavailable("redis call timed out".into()))?
                .map_err(store_error)?;
        let last: StreamSeq = last.parse().map_err(|_| corrupt("last-generated-id"))?;
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
