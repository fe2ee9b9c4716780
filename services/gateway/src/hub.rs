//! The registry of authenticated connections, by connection and by user,
//! and the fan-out of events to them.
//!
//! Fan-out never waits on a client: each connection has a bounded queue and
//! a full queue kicks that connection (1008) instead of slowing the others.
//! Locks are std mutexes over small shards, never held across an `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use axum::extract::ws::Utf8Bytes;
use tokio::sync::{Notify, mpsc};

use crate::auth_client::{Event, EventAction};
use crate::close::CloseCode;
use crate::message::{self, EventId};
use crate::metrics::Metrics;

/// Shards per map: enough that fan-out and (un)registration rarely contend.
const SHARDS: usize = 32;

/// Identifies one socket for the life of the process.
pub type ConnId = u64;

/// An event frame, serialised once and shared by every recipient's queue.
#[derive(Debug)]
pub struct Frame {
    /// Lets a recovering session skip what History already sent.
    pub id: EventId,
    pub text: Utf8Bytes,
}

/// Tells a session, out of band, that the hub wants it closed: the queue may
/// be full, so the request cannot travel through it.
#[derive(Debug, Default)]
pub struct Kick {
    code: AtomicU16,
    notify: Notify,
}

impl Kick {
    /// Asks for a close with `code`; the first request wins.
    pub fn kick(&self, code: CloseCode) {
        if self
            .code
            .compare_exchange(0, code.code(), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            // notify_one keeps a permit when the session is not waiting yet.
            self.notify.notify_one();
        }
    }

    /// Resolves once kicked, with the requested code.
    pub async fn kicked(&self) -> CloseCode {
        loop {
            if let Some(code) = CloseCode::from_code(self.code.load(Ordering::Acquire)) {
                return code;
            }
            self.notify.notified().await;
        }
    }
}

struct Entry {
    tx: mpsc::Sender<Arc<Frame>>,
    kick: Arc<Kick>,
}

impl Entry {
    /// Queues without waiting; a full queue kicks the slow client.
    fn offer(&self, frame: &Arc<Frame>) {
        match self.tx.try_send(Arc::clone(frame)) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => self.kick.kick(CloseCode::Policy),
            // The session is ending; its Registration removes the entry.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

struct Inner {
    conns: Vec<Mutex<HashMap<ConnId, Entry>>>,
    users: Vec<Mutex<HashMap<Arc<str>, Vec<ConnId>>>>,
    next_id: AtomicU64,
    hasher: BuildHasherDefault<DefaultHasher>,
    metrics: Metrics,
}

/// The connection registry: a cheap-clone handle.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a shard leaves plain maps behind, still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Hub {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                conns: (0..SHARDS).map(|_| Mutex::default()).collect(),
                users: (0..SHARDS).map(|_| Mutex::default()).collect(),
                next_id: AtomicU64::new(1),
                hasher: BuildHasherDefault::default(),
                metrics,
            }),
        }
    }

    /// A fresh connection id (for spans, before the connection registers).
    pub fn next_conn_id(&self) -> ConnId {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn conn_shard(&self, id: ConnId) -> &Mutex<HashMap<ConnId, Entry>> {
        &self.inner.conns[(id % SHARDS as u64) as usize]
    }

    fn user_shard(&self, user: &str) -> &Mutex<HashMap<Arc<str>, Vec<ConnId>>> {
        let hash = self.inner.hasher.hash_one(user);
        &self.inner.users[(hash % SHARDS as u64) as usize]
    }

    /// Registers an authenticated connection for events. It stays registered
    /// until the returned guard drops, however the session ends.
    pub fn register(
        &self,
        conn_id: ConnId,
        user_id: &str,
        capacity: usize,
        kick: Arc<Kick>,
    ) -> (Registration, mpsc::Receiver<Arc<Frame>>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let user: Arc<str> = Arc::from(user_id);
        lock(self.conn_shard(conn_id)).insert(conn_id, Entry { tx, kick });
        lock(self.user_shard(user_id))
            .entry(Arc::clone(&user))
            .or_default()
            .push(conn_id);
        self.inner.metrics.connection_opened();
        let registration = Registration {
            hub: self.clone(),
            conn_id,
            user,
        };
        (registration, rx)
    }

    fn unregister(&self, conn_id: ConnId, user: &Arc<str>) {
        lock(self.conn_shard(conn_id)).remove(&conn_id);
        let mut users = lock(self.user_shard(user));
        if let Some(ids) = users.get_mut(user) {
            ids.retain(|id| *id != conn_id);
            if ids.is_empty() {
                users.remove(user);
            }
        }
        drop(users);
        self.inner.metrics.connection_closed();
    }

    /// The connection ids of one user, copied out so no lock outlives the call.
    fn user_conns(&self, user_id: &str) -> Vec<ConnId> {
        lock(self.user_shard(user_id))
            .get(user_id)
            .cloned()
            .unwrap_or_default()
    }

    /// Delivers an event: broadcasts to everyone registered, direct messages
    /// to the user's connections, disconnects kick the user's connections (4401).
    pub fn deliver(&self, event: &Event) {
        match &event.action {
            EventAction::Broadcast { data } => {
                let frame = Arc::new(Frame {
                    id: event.id.clone(),
                    text: message::broadcast(&event.id_text, data).into(),
                });
                for shard in &self.inner.conns {
                    for entry in lock(shard).values() {
                        entry.offer(&frame);
                    }
                }
            }
            EventAction::Direct { user_id, data } => {
                let ids = self.user_conns(user_id);
                if ids.is_empty() {
                    return;
                }
                let frame = Arc::new(Frame {
                    id: event.id.clone(),
                    text: message::direct(&event.id_text, data).into(),
                });
                for id in ids {
                    if let Some(entry) = lock(self.conn_shard(id)).get(&id) {
                        entry.offer(&frame);
                    }
                }
            }
            EventAction::Disconnect { user_id } => {
                for id in self.user_conns(user_id) {
                    if let Some(entry) = lock(self.conn_shard(id)).get(&id) {
                        entry.kick.kick(CloseCode::Unauthorized);
                    }
                }
            }
        }
    }

    /// Registered connections, counted from the maps themselves.
    pub fn len(&self) -> usize {
        self.inner.conns.iter().map(|shard| lock(shard).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Users with at least one registered connection.
    pub fn user_count(&self) -> usize {
        self.inner.users.iter().map(|shard| lock(shard).len()).sum()
    }
}

/// Keeps a connection registered; dropping it unregisters, on every path.
pub struct Registration {
    hub: Hub,
    conn_id: ConnId,
    user: Arc<str>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.conn_id, &self.user);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str, action: EventAction) -> Event {
        Event {
            id: id.parse().expect("valid id"),
            id_text: id.to_owned(),
            action,
        }
    }

    fn broadcast(id: &str) -> Event {
        event(id, EventAction::Broadcast { data: "d".into() })
    }

    #[test]
    fn registration_is_undone_when_the_guard_drops() {
        let metrics = Metrics::default();
        let hub = Hub::new(metrics.clone());
        let mut guards = Vec::new();
        for i in 0..1000 {
            let id = hub.next_conn_id();
            let (guard, _rx) = hub.register(id, &format!("u{}", i % 10), 4, Arc::default());
            guards.push(guard);
        }
        assert_eq!(hub.len(), 1000);
        assert_eq!(hub.user_count(), 10);
        assert_eq!(metrics.connections_open(), 1000);
        guards.clear();
        assert!(hub.is_empty());
        assert_eq!(hub.user_count(), 0);
        assert_eq!(metrics.connections_open(), 0);
    }

    #[tokio::test]
    async fn broadcast_reaches_every_connection_with_the_same_bytes() {
        let hub = Hub::new(Metrics::default());
        let (_a, mut rx_a) = hub.register(hub.next_conn_id(), "alice", 4, Arc::default());
        let (_b, mut rx_b) = hub.register(hub.next_conn_id(), "bob", 4, Arc::default());
        hub.deliver(&broadcast("e:1-0"));
        let a = rx_a.try_recv().expect("alice got it");
        let b = rx_b.try_recv().expect("bob got it");
        assert!(Arc::ptr_eq(&a, &b), "serialised once, shared");
        assert_eq!(
            a.text.as_str(),
            r#"{"type":"broadcast","id":"e:1-0","data":"d"}"#
        );
    }

    #[tokio::test]
    async fn direct_reaches_only_that_users_connections() {
        let hub = Hub::new(Metrics::default());
        let (_a1, mut rx_a1) = hub.register(hub.next_conn_id(), "alice", 4, Arc::default());
        let (_a2, mut rx_a2) = hub.register(hub.next_conn_id(), "alice", 4, Arc::default());
        let (_b, mut rx_b) = hub.register(hub.next_conn_id(), "bob", 4, Arc::default());
        hub.deliver(&event(
            "e:1-0",
            EventAction::Direct {
                user_id: "alice".into(),
                data: "hi".into(),
            },
        ));
        for rx in [&mut rx_a1, &mut rx_a2] {
            let frame = rx.try_recv().expect("alice got it");
            assert_eq!(
                frame.text.as_str(),
                r#"{"type":"message","id":"e:1-0","data":"hi"}"#
            );
        }
        assert!(rx_b.try_recv().is_err());
    }

    #[tokio::test]
    async fn disconnect_kicks_that_user_with_4401() {
        let hub = Hub::new(Metrics::default());
        let alice_kick = Arc::new(Kick::default());
        let bob_kick = Arc::new(Kick::default());
        let (_a, _rx_a) = hub.register(hub.next_conn_id(), "alice", 4, Arc::clone(&alice_kick));
        let (_b, _rx_b) = hub.register(hub.next_conn_id(), "bob", 4, Arc::clone(&bob_kick));
        hub.deliver(&event(
            "e:1-0",
            EventAction::Disconnect {
                user_id: "alice".into(),
            },
        ));
        assert_eq!(alice_kick.kicked().await, CloseCode::Unauthorized);
        assert_eq!(bob_kick.code.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn a_full_queue_kicks_only_the_slow_connection() {
        let hub = Hub::new(Metrics::default());
        let slow_kick = Arc::new(Kick::default());
        let fast_kick = Arc::new(Kick::default());
        let (_s, _rx_slow) = hub.register(hub.next_conn_id(), "slow", 2, Arc::clone(&slow_kick));
        let (_f, mut rx_fast) = hub.register(hub.next_conn_id(), "fast", 2, Arc::clone(&fast_kick));
        for i in 0..5 {
            hub.deliver(&broadcast(&format!("e:{i}-0")));
            let frame = rx_fast.try_recv().expect("fast keeps receiving");
            assert_eq!(frame.id, format!("e:{i}-0").parse().expect("valid id"));
        }
        assert_eq!(slow_kick.kicked().await, CloseCode::Policy);
        assert_eq!(fast_kick.code.load(Ordering::Acquire), 0);
    }

    #[tokio::test]
    async fn the_first_kick_wins() {
        let kick = Kick::default();
        kick.kick(CloseCode::Policy);
        kick.kick(CloseCode::Unauthorized);
        assert_eq!(kick.kicked().await, CloseCode::Policy);
    }
}
