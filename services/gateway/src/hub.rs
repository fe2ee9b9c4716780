//! The registry of authenticated connections, by user, and the fan-out of
//! events and revocations to them.
//!
//! - [`slot`]: each connection's mailbox (queued frames, a close, a ping);
//! - [`ping`]: the one task that pings every connection and closes them on shutdown;
//! - [`revoked`]: recent disconnects, for registrations that raced them;
//! - [`jti`]: connections by their JWT's `jti`, for RevokeJwt.
//!
//! Fan-out never waits on a client: a full queue kicks that connection
//! (1008) instead of slowing the others. Locks are std mutexes over small
//! shards, never held across an `.await`.

mod jti;
mod ping;
mod revoked;
mod slot;

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::Waker;

use tokio::sync::{Semaphore, SemaphorePermit};

use self::jti::{JtiIndex, JtiKey};
pub use self::revoked::DisconnectMark;
use self::revoked::Revocations;
pub use self::slot::{Frame, Signal, Slot};
use crate::close::CloseCode;
use crate::event::{Event, EventAction};
use crate::message;
use crate::metrics::Metrics;

/// User shards: enough that fan-out and (un)registration rarely contend.
const SHARDS: usize = 32;
/// History replays running at once, across all sessions.
const CONCURRENT_REPLAYS: usize = 32;

/// Identifies one socket for the life of the process.
pub type ConnId = u64;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind, still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wake_all(wakers: &mut Vec<Waker>) {
    for waker in wakers.drain(..) {
        waker.wake();
    }
}

struct Member {
    id: ConnId,
    slot: Arc<Slot>,
}

#[derive(Default)]
struct Shard {
    users: HashMap<Arc<str>, Vec<Member>>,
    revoked: Revocations,
}

struct Inner {
    shards: Vec<Mutex<Shard>>,
    next_id: AtomicU64,
    hasher: BuildHasherDefault<DefaultHasher>,
    metrics: Metrics,
    /// Set once on shutdown: nobody registers after it.
    closing: AtomicBool,
    replays: Semaphore,
    jtis: JtiIndex,
}

/// The connection registry: a cheap-clone handle.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl Hub {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                next_id: AtomicU64::new(1),
                hasher: BuildHasherDefault::default(),
                metrics,
                closing: AtomicBool::new(false),
                replays: Semaphore::new(CONCURRENT_REPLAYS),
                jtis: JtiIndex::new(),
            }),
        }
    }

    /// A fresh connection id (for spans, before the connection registers).
    pub fn next_conn_id(&self) -> ConnId {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn shard(&self, user: &str) -> &Mutex<Shard> {
        let hash = self.inner.hasher.hash_one(user);
        &self.inner.shards[(hash % SHARDS as u64) as usize]
    }

    /// Taken before VerifyJwt: a disconnect of the user delivered after this
    /// makes [`Hub::register`] refuse, however the two calls race.
    pub fn disconnect_mark(&self, user: &str) -> DisconnectMark {
        lock(self.shard(user)).revoked.mark()
    }

    /// Registers an authenticated connection for events. It stays registered
    /// until the returned guard drops, however the session ends. Refused with
    /// 4401 if the user was disconnected since `mark`, 1001 when shutting down.
    pub fn register(
        &self,
        conn_id: ConnId,
        user_id: &str,
        capacity: usize,
        mark: DisconnectMark,
    ) -> Result<Registration, CloseCode> {
        let slot = Arc::new(Slot::new(capacity));
        let user = {
            let mut shard = lock(self.shard(user_id));
            // Under the shard lock: `close_all` sets the flag before it takes
            // each shard, so either it sees this member or this sees the flag.
            if self.inner.closing.load(Ordering::Acquire) {
                return Err(CloseCode::GoingAway);
            }
            if shard.revoked.since(user_id, mark) {
                return Err(CloseCode::Unauthorized);
            }
            let member = Member {
                id: conn_id,
                slot: Arc::clone(&slot),
            };
            match shard.users.get_key_value(user_id) {
                Some((user, _)) => {
                    let user = Arc::clone(user);
                    shard
                        .users
                        .get_mut(user_id)
                        .expect("the key was just found under the same lock")
                        .push(member);
                    user
                }
                None => {
                    let user: Arc<str> = Arc::from(user_id);
                    // Exactly one element's room: most users hold one socket.
                    shard.users.insert(Arc::clone(&user), vec![member]);
                    user
                }
            }
        };
        self.inner.metrics.connection_opened();
        Ok(Registration {
            hub: self.clone(),
            conn_id,
            user,
            slot,
            jti: AtomicU64::new(0),
        })
    }

    fn unregister(&self, conn_id: ConnId, user: &Arc<str>) {
        let mut shard = lock(self.shard(user));
        if let Some(members) = shard.users.get_mut(user) {
            members.retain(|m| m.id != conn_id);
            if members.is_empty() {
                shard.users.remove(user);
            }
        }
        drop(shard);
        self.inner.metrics.connection_closed();
    }

    /// Every registered connection and its user, for presence reports.
    pub fn connections(&self) -> Vec<(ConnId, Arc<str>)> {
        let mut all = Vec::new();
        for shard in &self.inner.shards {
            let shard = lock(shard);
            for (user, members) in &shard.users {
                all.extend(members.iter().map(|m| (m.id, Arc::clone(user))));
            }
        }
        all
    }

    /// Delivers an event: broadcasts to everyone registered, direct messages
    /// to the user's connections, disconnects kick the user's connections (4401).
    pub fn deliver(&self, event: &Event) {
        match &event.action {
            EventAction::Broadcast { data } => self.offer_all(&Arc::new(Frame {
                id: Some(event.id.clone()),
                text: message::broadcast(&event.id_text, data).into(),
            })),
            EventAction::Direct { user_id, data } => {
                let shard = lock(self.shard(user_id));
                let Some(members) = shard.users.get(user_id.as_str()) else {
                    return;
                };
                let frame = Arc::new(Frame {
                    id: Some(event.id.clone()),
                    text: message::direct(&event.id_text, data).into(),
                });
                let mut wakers: Vec<Waker> = members
                    .iter()
                    .filter_map(|m| m.slot.offer(&frame))
                    .collect();
                drop(shard);
                wake_all(&mut wakers);
            }
            EventAction::Disconnect { user_id } => {
                let mut shard = lock(self.shard(user_id));
                shard.revoked.record(user_id);
                if let Some(members) = shard.users.get(user_id.as_str()) {
                    for member in members {
                        member.slot.kick(CloseCode::Unauthorized);
                    }
                }
            }
            EventAction::RevokeJwt { jti } => self.inner.jtis.revoke(jti),
        }
    }

    /// Tells every registered connection that events may have been missed
    /// (`{"type":"gap"}`), queued in order with the events around it.
    pub fn gap(&self) {
        self.offer_all(&Arc::new(Frame {
            id: None,
            text: message::gap().into(),
        }));
    }

    /// Queues `frame` for every registered connection.
    fn offer_all(&self, frame: &Arc<Frame>) {
        // Sessions are woken after each shard's lock is released, so
        // registrations never wait behind the scheduler.
        let mut wakers = Vec::new();
        for shard in &self.inner.shards {
            let shard = lock(shard);
            wakers.extend(
                shard
                    .users
                    .values()
                    .flatten()
                    .filter_map(|m| m.slot.offer(frame)),
            );
            drop(shard);
            wake_all(&mut wakers);
        }
    }

    /// A place among the History replays allowed at once; waits for one.
    pub async fn replay_permit(&self) -> SemaphorePermit<'_> {
        self.inner
            .replays
            .acquire()
            .await
            .expect("the replay semaphore is never closed")
    }
}

/// Keeps a connection registered; dropping it unregisters, on every path.
pub struct Registration {
    hub: Hub,
    conn_id: ConnId,
    user: Arc<str>,
    slot: Arc<Slot>,
    /// The jti this connection is bound to, for RevokeJwt ([`JtiKey`] bits,
    /// 0: none). Atomic so a shared borrow can rebind it mid-session.
    jti: AtomicU64,
}

impl Registration {
    /// Binds the connection to the jti of the JWT it now holds (None: a JWT
    /// without jti), in place of the previous one: after a refresh only the
    /// new JWT's revocation closes it. Refused (4401) when that jti was
    /// revoked while the JWT was being verified.
    pub fn bind_jti(&self, jti: Option<&str>) -> Result<(), CloseCode> {
        let jtis = &self.hub.inner.jtis;
        if let Some(old) = JtiKey::from_bits(self.jti.swap(0, Ordering::Relaxed)) {
            jtis.unbind(old, self.conn_id);
        }
        if let Some(jti) = jti {
            let key = jtis.key(jti);
            jtis.bind(key, self.conn_id, &self.slot)?;
            self.jti.store(key.to_bits(), Ordering::Relaxed);
        }
        Ok(())
    }

    /// This connection's mailbox.
    pub fn slot(&self) -> &Slot {
        &self.slot
    }

    /// The authenticated user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The waker to read the socket with: see [`Slot::take_socket_ready`].
    pub fn socket_waker(&self) -> Waker {
        Waker::from(Arc::clone(&self.slot))
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(jti) = JtiKey::from_bits(*self.jti.get_mut()) {
            self.hub.inner.jtis.unbind(jti, self.conn_id);
        }
        self.hub.unregister(self.conn_id, &self.user);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::future::poll_fn;

    use futures::FutureExt as _;

    use super::*;

    fn event(id: &str, action: EventAction) -> Event {
        Event {
            id: id.parse().expect("valid id"),
            id_text: id.to_owned(),
            action,
        }
    }

    pub(crate) fn broadcast(id: &str) -> Event {
        event(id, EventAction::Broadcast { data: "d".into() })
    }

    pub(crate) fn disconnect(user: &str) -> Event {
        event(
            "e:9-0",
            EventAction::Disconnect {
                user_id: user.into(),
            },
        )
    }

    pub(crate) fn register(hub: &Hub, user: &str, capacity: usize) -> Registration {
        let mark = hub.disconnect_mark(user);
        hub.register(hub.next_conn_id(), user, capacity, mark)
            .expect("registration is open")
    }

    /// The signal waiting in `slot` right now, if any.
    pub(crate) fn now(slot: &Slot) -> Option<Signal> {
        poll_fn(|cx| slot.poll_signal(cx)).now_or_never()
    }

    fn frame(slot: &Slot) -> Arc<Frame> {
        match now(slot) {
            Some(Signal::Frame(frame)) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    pub(crate) fn close(slot: &Slot) -> Option<CloseCode> {
        match now(slot) {
            Some(Signal::Close(code)) => Some(code),
            _ => None,
        }
    }

    /// Registered connections and users, counted from the maps themselves.
    fn counts(hub: &Hub) -> (usize, usize) {
        hub.inner
            .shards
            .iter()
            .fold((0, 0), |(conns, users), shard| {
                let shard = lock(shard);
                let here: usize = shard.users.values().map(Vec::len).sum();
                (conns + here, users + shard.users.len())
            })
    }

    #[test]
    fn registration_is_undone_when_the_guard_drops() {
        let metrics = Metrics::default();
        let hub = Hub::new(metrics.clone());
        let mut guards = Vec::new();
        for i in 0..1000 {
            guards.push(register(&hub, &format!("u{}", i % 10), 4));
        }
        assert_eq!(counts(&hub), (1000, 10));
        assert_eq!(metrics.connections_open(), 1000);
        guards.clear();
        assert_eq!(counts(&hub), (0, 0));
        assert_eq!(metrics.connections_open(), 0);
    }

    #[test]
    fn broadcast_reaches_every_connection_with_the_same_bytes() {
        let hub = Hub::new(Metrics::default());
        let a = register(&hub, "alice", 4);
        let b = register(&hub, "bob", 4);
        hub.deliver(&broadcast("e:1-0"));
        let (a, b) = (frame(a.slot()), frame(b.slot()));
        assert!(Arc::ptr_eq(&a, &b), "serialised once, shared");
        assert_eq!(
            a.text.as_str(),
            r#"{"type":"broadcast","id":"e:1-0","data":"d"}"#
        );
    }

    #[test]
    fn a_gap_reaches_every_connection_between_the_events_around_it() {
        let hub = Hub::new(Metrics::default());
        let a = register(&hub, "alice", 4);
        let b = register(&hub, "bob", 4);
        hub.deliver(&broadcast("e:1-0"));
        hub.gap();
        hub.deliver(&broadcast("f:1-0"));
        for slot in [a.slot(), b.slot()] {
            assert_eq!(frame(slot).id, Some("e:1-0".parse().expect("valid id")));
            let gap = frame(slot);
            assert_eq!(
                (gap.id.as_ref(), gap.text.as_str()),
                (None, r#"{"type":"gap"}"#)
            );
            assert_eq!(frame(slot).id, Some("f:1-0".parse().expect("valid id")));
        }
    }

    #[test]
    fn direct_reaches_only_that_users_connections() {
        let hub = Hub::new(Metrics::default());
        let a1 = register(&hub, "alice", 4);
        let a2 = register(&hub, "alice", 4);
        let b = register(&hub, "bob", 4);
        hub.deliver(&event(
            "e:1-0",
            EventAction::Direct {
                user_id: "alice".into(),
                data: "hi".into(),
            },
        ));
        for a in [&a1, &a2] {
            assert_eq!(
                frame(a.slot()).text.as_str(),
                r#"{"type":"message","id":"e:1-0","data":"hi"}"#
            );
        }
        assert!(now(b.slot()).is_none());
    }

    #[test]
    fn disconnect_kicks_that_user_with_4401() {
        let hub = Hub::new(Metrics::default());
        let a = register(&hub, "alice", 4);
        let b = register(&hub, "bob", 4);
        hub.deliver(&disconnect("alice"));
        assert_eq!(close(a.slot()), Some(CloseCode::Unauthorized));
        assert!(now(b.slot()).is_none());
    }

    #[test]
    fn a_full_queue_kicks_only_the_slow_connection() {
        let hub = Hub::new(Metrics::default());
        let slow = register(&hub, "slow", 2);
        let fast = register(&hub, "fast", 2);
        for i in 0..5 {
            hub.deliver(&broadcast(&format!("e:{i}-0")));
            let got = frame(fast.slot());
            assert_eq!(got.id, Some(format!("e:{i}-0").parse().expect("valid id")));
        }
        assert_eq!(close(slow.slot()), Some(CloseCode::Policy));
        assert!(now(fast.slot()).is_none());
    }
}
