//! The embedded store: everything in this process, for a single auth replica.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::broadcast;

use super::{FANOUT_CAPACITY, RevocationState, Store, StoreError, TakenToken};
use crate::clock::now_ms;
use crate::events::{Event, EventChunk, EventId, NewEvent, StreamSeq, new_epoch};
use crate::ws_token::{TokenHash, TokenRecord};

/// Sweep expired entries after this many inserts, so memory stays bounded
/// even for tokens nobody ever presents.
const SWEEP_EVERY: u32 = 1024;

/// The in-process store. Cheap to clone; clones share state.
#[derive(Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
}

struct Inner {
    // std Mutex: no `.await` while it is held, and every section is short.
    state: Mutex<State>,
    fanout: broadcast::Sender<Arc<Event>>,
    retention: usize,
    /// Random per process: restarting auth loses the events, like Redis without persistence.
    epoch: String,
}

#[derive(Default)]
struct State {
    tokens: HashMap<TokenHash, (TokenRecord, Instant)>,
    revoked_jtis: HashMap<String, Option<Instant>>,
    cutoffs: HashMap<String, u64>,
    events: VecDeque<Event>,
    last: StreamSeq,
    trimmed: bool,
    inserts: u32,
}

impl MemoryStore {
    /// An empty store keeping at most `retention` events.
    pub fn new(retention: usize) -> Self {
        let (fanout, _) = broadcast::channel(FANOUT_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                fanout,
                retention: retention.max(1),
                epoch: new_epoch(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain maps behind, still usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl State {
    fn sweep(&mut self, now: Instant) {
        self.inserts += 1;
        if self.inserts.is_multiple_of(SWEEP_EVERY) {
            self.tokens.retain(|_, (_, deadline)| *deadline > now);
            self.revoked_jtis
                .retain(|_, deadline| deadline.is_none_or(|d| d > now));
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn put_ws_token(
        &self,
        hash: &TokenHash,
        record: &TokenRecord,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut state = self.state();
        state.sweep(now);
        state.tokens.insert(*hash, (record.clone(), now + ttl));
        Ok(())
    }

    async fn take_ws_token(
        &self,
        hash: &TokenHash,
        consume: bool,
    ) -> Result<Option<TakenToken>, StoreError> {
        let now = Instant::now();
        let mut state = self.state();
        let record = if consume {
            state.tokens.remove(hash)
        } else {
            state.tokens.get(hash).cloned()
        };
        let Some((record, _)) = record.filter(|(_, deadline)| *deadline > now) else {
            return Ok(None);
        };
        let user_cutoff_ms = state.cutoffs.get(&record.user_id).copied();
        Ok(Some(TakenToken {
            record,
            user_cutoff_ms,
        }))
    }

    async fn revoke_jti(&self, jti: &str, ttl: Option<Duration>) -> Result<(), StoreError> {
        let now = Instant::now();
        let mut state = self.state();
        state.sweep(now);
        state
            .revoked_jtis
            .insert(jti.to_owned(), ttl.map(|ttl| now + ttl));
        Ok(())
    }

    async fn set_user_cutoff(&self, user_id: &str, cutoff_ms: u64) -> Result<(), StoreError> {
        self.state().cutoffs.insert(user_id.to_owned(), cutoff_ms);
        Ok(())
    }

    async fn revocation(
        &self,
        jti: Option<&str>,
        user_id: &str,
    ) -> Result<RevocationState, StoreError> {
        let now = Instant::now();
        let state = self.state();
        let jti_revoked = jti
            .and_then(|jti| state.revoked_jtis.get(jti))
            .is_some_and(|deadline| deadline.is_none_or(|d| d > now));
        Ok(RevocationState {
            jti_revoked,
            user_cutoff_ms: state.cutoffs.get(user_id).copied(),
        })
    }

    async fn append(&self, event: NewEvent) -> Result<Event, StoreError> {
        let ms = now_ms();
        let mut state = self.state();
        let seq = if ms > state.last.ms {
            StreamSeq { ms, seq: 0 }
        } else {
            StreamSeq {
                ms: state.last.ms,
                seq: state.last.seq + 1,
            }
        };
        state.last = seq;
        let event = Event {
            id: EventId {
                epoch: self.inner.epoch.clone(),
                seq,
            },
            kind: event.kind,
            user_id: event.user_id,
            data: event.data,
        };
        state.events.push_back(event.clone());
        while state.events.len() > self.inner.retention {
            state.events.pop_front();
            state.trimmed = true;
        }
        // Sent under the lock so live order equals stream order. No receivers is fine.
        let _ = self.inner.fanout.send(Arc::new(event.clone()));
        Ok(event)
    }

    async fn read_after(&self, after: &EventId, count: usize) -> Result<EventChunk, StoreError> {
        let state = self.state();
        let start = state.events.partition_point(|e| e.id.seq <= after.seq);
        let events = if after.epoch == self.inner.epoch {
            state
                .events
                .iter()
                .skip(start)
                .take(count)
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        Ok(EventChunk {
            epoch: Some(self.inner.epoch.clone()),
            first_kept: state
                .trimmed
                .then(|| state.events.front().map_or(state.last, |e| e.id.seq)),
            events,
        })
    }

    fn live(&self) -> broadcast::Receiver<Arc<Event>> {
        self.inner.fanout.subscribe()
    }
}
