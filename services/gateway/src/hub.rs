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
mod one_or_more;
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
use self::one_or_more::OneOrMore;
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
    users: HashMap<Arc<str>, OneOrMore<Member>>,
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
    /// The user's first connection lends its `user_id` to the registry's key.
    pub fn register(
        &self,
        conn_id: ConnId,
        user_id: &Arc<str>,
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
                    let user = Arc::clone(user_id);
                    shard
                        .users
                        .insert(Arc::clone(&user), OneOrMore::One(member));
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
        if let Some(members) = shard.users.get_mut(user)
            && !members.retain(|m| m.id != conn_id)
        {
            shard.users.remove(user);
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
        self.wake_members(|m| m.slot.offer(frame));
    }

    /// Asks every registered connection (`ask` returns the waker of those
    /// that have something to do) and wakes them, shard by shard, after each
    /// shard's lock is released, so registrations never wait behind the
    /// scheduler.
    fn wake_members(&self, mut ask: impl FnMut(&Member) -> Option<Waker>) {
        let mut wakers = Vec::new();
        for shard in &self.inner.shards {
            let shard = lock(shard);
            wakers.extend(shard.users.values().flatten().filter_map(&mut ask));
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
pub(crate) mod tests;
