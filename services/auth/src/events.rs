//! The resumable read path of the event stream (History and Subscribe)
//! and Publish, on top of a [`Store`].

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::broadcast;

use crate::error::{AuthError, StoreError};
use crate::event::{Event, EventId, NewEvent, StreamSeq, event_bytes};
use crate::store::{Live, Store};

/// How many events one store read returns, for History and Subscribe catch-up.
const READ_CHUNK: usize = 500;
/// How much data one store read returns at most (beyond its first event):
/// keeps a read from building a huge reply inside Redis.
const READ_CHUNK_BYTES: usize = 1024 * 1024;
/// History's default and maximum `limit`.
pub const HISTORY_MAX: usize = 1000;
/// How many retained events a resumable History call examines at most:
/// a few store reads, however few of them are for the caller's user.
pub const HISTORY_SCAN_MAX: usize = 2000;
/// The most data one History reply carries (beyond its first event), well
/// under the gRPC 4 MiB message limit: a caller pages on from the last id.
pub const HISTORY_MAX_BYTES: usize = 3 * 1024 * 1024;

/// Where a read of the stream starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    /// Strictly after this id, which must still be retained in the current epoch.
    After(EventId),
    /// At the oldest retained event of the current epoch, whatever came
    /// before: for a reader whose position is gone (a gap it was told of).
    Oldest,
}

/// One History reply.
#[derive(Debug, Default)]
pub struct HistoryPage {
    /// Oldest first.
    pub events: Vec<Event>,
    /// Where the next page starts when this one stopped before the end of
    /// the stream: the last event examined, returned or not.
    pub next_after: Option<EventId>,
}

/// The first chunk of a read from the oldest retained event.
struct Oldest {
    /// Where the next read continues: the chunk's last event, or the
    /// epoch's last id when nothing is retained.
    cursor: EventId,
    events: Vec<Event>,
    complete: bool,
}

/// The read side of the stream: History and resumable subscriptions.
#[derive(Clone)]
pub struct Events {
    store: Arc<dyn Store>,
}

impl Events {
    /// Reads through `store`.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    /// Appends an event.
    pub async fn publish(&self, event: NewEvent) -> Result<Event, AuthError> {
        Ok(self.store.append(event).await?)
    }

    /// The retained events from `start` meant for everyone or for `user_id`,
    /// oldest first: at most `limit`, and, with `scan_max`, after examining
    /// at most that many events (matching or not).
    pub async fn history(
        &self,
        start: &Start,
        user_id: Option<&str>,
        limit: usize,
        scan_max: Option<usize>,
    ) -> Result<HistoryPage, AuthError> {
        let limit = limit.clamp(1, HISTORY_MAX);
        let scan_max = scan_max.unwrap_or(usize::MAX).max(1);
        let (mut cursor, mut first) = match start {
            Start::After(after) => (after.clone(), None),
            Start::Oldest => match self.read_oldest().await? {
                None => return Ok(HistoryPage::default()),
                Some(oldest) => (oldest.cursor, Some((oldest.events, oldest.complete))),
            },
        };
        let mut page = HistoryPage::default();
        let mut bytes = 0;
        let mut scanned = 0;
        loop {
            let (chunk, complete) = match first.take() {
                Some(first) => first,
                None => {
                    let count = READ_CHUNK.min(scan_max.saturating_sub(scanned)).max(1);
                    self.read_checked(&cursor, count, READ_CHUNK_BYTES).await?
                }
            };
            scanned += chunk.len();
            for event in chunk {
                // Another user's event is dropped here: its id moves into
                // the cursor, so a long scan copies no id it skips.
                if !event.is_for(user_id) {
                    cursor = event.id;
                    continue;
                }
                // The byte budget keeps the reply under the transport's
                // limit; a reply that stops early is a page, not the end.
                bytes += event_bytes(&event);
                if !page.events.is_empty() && bytes > HISTORY_MAX_BYTES {
                    page.next_after = Some(cursor);
                    return Ok(page);
                }
                cursor = event.id.clone();
                page.events.push(event);
                if page.events.len() == limit {
                    page.next_after = Some(cursor);
                    return Ok(page);
                }
            }
            if complete {
                return Ok(page);
            }
            if scanned >= scan_max {
                page.next_after = Some(cursor);
                return Ok(page);
            }
        }
    }

    /// A subscription to every event: first the retained ones from `start`
    /// (when given), then live ones, with no gap and no duplicate between them.
    pub async fn subscribe(&self, start: Option<Start>) -> Result<Subscription, AuthError> {
        // Subscribe to the live fan-out *before* reading history: whatever is
        // appended after the read shows up here, and duplicates are skipped by id.
        let live = self.store.live()?;
        let mut subscription = Subscription {
            events: self.clone(),
            live,
            pending: VecDeque::new(),
            catching_up: false,
            cursor: None,
            live_from: None,
        };
        match start {
            // The stream's position, read after joining the fan-out: what is
            // appended after the read arrives live, what came before is
            // skipped by id. A new epoch under it is then a loss told with
            // OUT_OF_RANGE, as for any subscriber with a position.
            //
            // The position is a help, not a condition: a live subscription
            // needs no store read, so one that fails (Redis just came back and
            // the first command on the old connection fails) opens the
            // subscription without it, as an auth that predates it would.
            None => match self.store.stream_end().await {
                Ok(last) => {
                    subscription.cursor = Some(last.clone());
                    subscription.live_from = Some(last);
                }
                Err(error) => {
                    tracing::warn!(%error, "live subscription opened without its position: the stream's end could not be read");
                }
            },
            Some(Start::After(after)) => {
                subscription.cursor = Some(after);
                subscription.catching_up = true;
                // Judge `after` now, so a stale id fails the call rather than the stream.
                subscription.fill().await?;
            }
            // An empty stream leaves no cursor: the next epoch's events are
            // all new to this subscriber, so crossing into it loses nothing.
            Some(Start::Oldest) => {
                if let Some(oldest) = self.read_oldest().await? {
                    subscription.cursor = Some(oldest.cursor);
                    subscription.catching_up = !oldest.complete;
                    subscription.pending = oldest.events.into_iter().map(Arc::new).collect();
                }
            }
        }
        Ok(subscription)
    }

    /// The first chunk of the current epoch from its oldest retained event;
    /// `None` when there is no stream. The store reads by position within an
    /// epoch, so the epoch is learnt first with a one-event read, and the
    /// read is retried should the epoch change in between.
    async fn read_oldest(&self) -> Result<Option<Oldest>, AuthError> {
        let mut epoch: Option<Box<str>> = None;
        for _ in 0..3 {
            let at = EventId {
                epoch: epoch.clone().unwrap_or_default(),
                seq: StreamSeq::default(),
            };
            let (count, max_bytes) = match epoch {
                None => (1, 1),
                Some(_) => (READ_CHUNK, READ_CHUNK_BYTES),
            };
            let chunk = self.store.read_after(&at, count, max_bytes).await?;
            let Some(current) = chunk.epoch else {
                return Ok(None);
            };
            if epoch.as_deref() != Some(current.as_str()) {
                epoch = Some(current.into());
                continue;
            }
            let cursor = chunk.events.last().map_or_else(
                || EventId {
                    epoch: at.epoch.clone(),
                    seq: chunk.last,
                },
                |last| last.id.clone(),
            );
            return Ok(Some(Oldest {
                cursor,
                events: chunk.events,
                complete: chunk.complete,
            }));
        }
        Err(StoreError::Unavailable("the stream epoch kept changing during a read".into()).into())
    }

    /// Reads after `after`, refusing ids of another epoch, older than
    /// retention or ahead of the stream. Also says whether the read reached the end.
    async fn read_checked(
        &self,
        after: &EventId,
        count: usize,
        max_bytes: usize,
    ) -> Result<(Vec<Event>, bool), AuthError> {
        let chunk = self.store.read_after(after, count, max_bytes).await?;
        match chunk.epoch.as_deref() {
            Some(epoch) if epoch == &*after.epoch => {}
            Some(epoch) => {
                return Err(AuthError::OutOfRange(format!(
                    "event id {after} is from another stream epoch (current epoch {epoch}): \
                     events may have been lost; resubscribe without after_id"
                )));
            }
            None => {
                return Err(AuthError::OutOfRange(format!(
                    "event id {after} is from an earlier stream epoch (the stream is empty now): \
                     events may have been lost; resubscribe without after_id"
                )));
            }
        }
        if let Some(first_kept) = chunk.first_kept
            && after.seq < first_kept
        {
            return Err(AuthError::OutOfRange(format!(
                "event id {after} is older than the retained events; resubscribe without after_id"
            )));
        }
        if after.seq > chunk.last {
            return Err(AuthError::OutOfRange(format!(
                "event id {after} is ahead of the stream (the stream was rolled back or the id \
                 is from the future): events may have been lost; resubscribe without after_id"
            )));
        }
        Ok((chunk.events, chunk.complete))
    }
}

/// A live, resumable view of the stream. Pull with [`Subscription::next`].
pub struct Subscription {
    events: Events,
    live: broadcast::Receiver<Live>,
    pending: VecDeque<Arc<Event>>,
    catching_up: bool,
    /// The last event handed out (or the `after` id, or the live start):
    /// live events at or before it are skipped.
    cursor: Option<EventId>,
    /// Where a live subscription began: the stream's end when it opened,
    /// for its subscriber to resume from should the stream break before
    /// its first event.
    live_from: Option<EventId>,
}

impl Subscription {
    /// Where this subscription began, when it was opened live (no start).
    pub fn live_from(&self) -> Option<&EventId> {
        self.live_from.as_ref()
    }

    /// The next event. `Ok(None)` when the store's fan-out ended (shutdown);
    /// `OutOfRange` when catching up from an id that is no longer retained,
    /// or when the store lost the stream under it (a new epoch);
    /// `Lagged` when it fell behind the live fan-out.
    pub async fn next(&mut self) -> Result<Option<Arc<Event>>, AuthError> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.cursor = Some(event.id.clone());
                return Ok(Some(event));
            }
            if self.catching_up {
                self.fill().await?;
                continue;
            }
            let event = match self.live.recv().await {
                Ok(Live::Event(event)) => event,
                Ok(Live::Reset { epoch }) => {
                    self.check_epoch(&epoch)?;
                    continue;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => return Err(AuthError::Lagged),
                Err(broadcast::error::RecvError::Closed) => return Ok(None),
            };
            // Another epoch means the store lost the stream and started a new
            // one: the subscriber is told (it may have missed events) instead
            // of being carried across silently.
            self.check_epoch(&event.id.epoch)?;
            if let Some(cursor) = &self.cursor
                && event.id.seq <= cursor.seq
            {
                continue;
            }
            self.cursor = Some(event.id.clone());
            return Ok(Some(event));
        }
    }

    /// OUT_OF_RANGE when the subscriber's position belongs to an epoch other than `epoch`.
    fn check_epoch(&self, epoch: &str) -> Result<(), AuthError> {
        match &self.cursor {
            Some(cursor) if &*cursor.epoch != epoch => Err(AuthError::OutOfRange(format!(
                "the event stream was reset by redis after {cursor} (new epoch {epoch:?}): \
                 events may have been lost; resubscribe without after_id"
            ))),
            _ => Ok(()),
        }
    }

    /// Reads the next history chunk into `pending`; reaching the end ends catch-up.
    async fn fill(&mut self) -> Result<(), AuthError> {
        let Some(cursor) = &self.cursor else {
            self.catching_up = false;
            return Ok(());
        };
        let (chunk, complete) = self
            .events
            .read_checked(cursor, READ_CHUNK, READ_CHUNK_BYTES)
            .await?;
        if complete {
            self.catching_up = false;
        }
        if let Some(last) = chunk.last() {
            // Advance now so the next fill continues after this chunk even
            // before the caller has drained `pending`.
            self.cursor = Some(last.id.clone());
        }
        self.pending.extend(chunk.into_iter().map(Arc::new));
        Ok(())
    }
}
