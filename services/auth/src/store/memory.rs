//! The embedded store: everything in this process, for a single auth replica.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{broadcast, watch};

use super::{FANOUT_CAPACITY, IssueRequest, Live, RevocationState, Store, StoreError, TakenToken};
use crate::clock::now_ms;
use crate::event::{Event, EventChunk, EventId, NewEvent, StreamSeq, event_bytes, new_epoch};
use crate::revocation;
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
    fanout: broadcast::Sender<Live>,
    /// Always true: the fan-out is fed under the same lock as appends.
    ready: watch::Sender<bool>,
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
                ready: watch::Sender::new(true),
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
    fn revocation(&self, jti: Option<&str>, user_id: &str, now: Instant) -> RevocationState {
        let jti_revoked = jti
            .and_then(|jti| self.revoked_jtis.get(jti))
            .is_some_and(|deadline| deadline.is_none_or(|d| d > now));
        RevocationState {
            jti_revoked,
            user_cutoff_ms: self.cutoffs.get(user_id).copied(),
        }
    }

    fn sweep(&mut self, now: Instant) {
        self.inserts = self.inserts.wrapping_add(1);
        if self.inserts.is_multiple_of(SWEEP_EVERY) {
            self.tokens.retain(|_, (_, deadline)| *deadline > now);
            self.revoked_jtis
                .retain(|_, deadline| deadline.is_none_or(|d| d > now));
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    async fn issue_ws_token(
        &self,
        request: IssueRequest<'_>,
    ) -> Result<Option<TokenRecord>, StoreError> {
        let now = Instant::now();
        // Under the lock, like the Redis script: a RevokeUser runs wholly
        // before (the JWT is refused) or after (the token is revoked).
        let mut state = self.state();
        let issued_ms = now_ms();
        let revocation_state = state.revocation(request.jti, request.user_id, now);
        if revocation::jwt_is_revoked(request.iat, &revocation_state, issued_ms, request.leeway_s) {
            return Ok(None);
        }
        let ttl_ms = u64::try_from(request.ttl.as_millis()).unwrap_or(u64::MAX);
        let record = TokenRecord {
            issued_ms,
            expires_ms: issued_ms.saturating_add(ttl_ms),
            user_id: request.user_id.to_owned(),
        };
        let deadline = now
            .checked_add(request.ttl)
            .unwrap_or_else(|| now + Duration::from_secs(86_400 * 365));
        state.sweep(now);
        state
            .tokens
            .insert(*request.hash, (record.clone(), deadline));
        Ok(Some(record))
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
            .insert(jti.to_owned(), ttl.and_then(|ttl| now.checked_add(ttl)));
        Ok(())
    }

    async fn revoke_user(&self, user_id: &str) -> Result<u64, StoreError> {
        let mut state = self.state();
        let cutoff = state.cutoffs.entry(user_id.to_owned()).or_insert(0);
        // Never lower a cutoff, even if the wall clock stepped back.
        *cutoff = (*cutoff).max(now_ms());
        Ok(*cutoff)
    }

    async fn revocation(
        &self,
        jti: Option<&str>,
        user_id: &str,
    ) -> Result<RevocationState, StoreError> {
        Ok(self.state().revocation(jti, user_id, Instant::now()))
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
                epoch: self.inner.epoch.as_str().into(),
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
        let _ = self.inner.fanout.send(Live::Event(Arc::new(event.clone())));
        Ok(event)
    }

    async fn stream_end(&self) -> Result<EventId, StoreError> {
        Ok(EventId {
            epoch: self.inner.epoch.as_str().into(),
            seq: self.state().last,
        })
    }

    async fn read_after(
        &self,
        after: &EventId,
        count: usize,
        max_bytes: usize,
    ) -> Result<EventChunk, StoreError> {
        let state = self.state();
        let start = state.events.partition_point(|e| e.id.seq <= after.seq);
        let mut events = Vec::new();
        let mut complete = true;
        if *after.epoch == *self.inner.epoch {
            let mut bytes = 0;
            for event in state.events.iter().skip(start) {
                if events.len() == count || (!events.is_empty() && bytes >= max_bytes) {
                    complete = false;
                    break;
                }
                bytes += event_bytes(event);
                events.push(event.clone());
            }
        }
        Ok(EventChunk {
            epoch: Some(self.inner.epoch.clone()),
            first_kept: state
                .trimmed
                .then(|| state.events.front().map_or(state.last, |e| e.id.seq)),
            last: state.last,
            events,
            complete,
        })
    }

    fn live(&self) -> Result<broadcast::Receiver<Live>, StoreError> {
        Ok(self.inner.fanout.subscribe())
    }

    fn live_ready(&self) -> watch::Receiver<bool> {
        self.inner.ready.subscribe()
    }
}
