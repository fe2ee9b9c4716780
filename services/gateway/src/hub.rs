//! The registry of authenticated connections, by user, and the fan-out of
//! events, kicks, pings and the shutdown close to them.
//!
//! Each connection owns one small [`Slot`]: a bounded queue of shared event
//! frames, a kick code and a ping flag behind one std mutex, and the waker of
//! its session. A session so waits on one future for everything the hub may
//! want of it. Fan-out never waits on a client: a full queue kicks that
//! connection (1008) instead of slowing the others. Locks are std mutexes over
//! small shards, never held across an `.await`.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::sync::{Semaphore, SemaphorePermit, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth_client::{Event, EventAction};
use crate::close::CloseCode;
use crate::message::{self, EventId};
use crate::metrics::Metrics;

/// User shards: enough that fan-out and (un)registration rarely contend.
const SHARDS: usize = 32;
/// Each ping interval is cut in this many slices; a connection is pinged in
/// slice `conn_id % PING_SLICES`, so keepalive traffic is spread, not a burst.
pub const PING_SLICES: u64 = 8;
/// Disconnects remembered per shard for sessions still in phase 2.
const RECENT_DISCONNECTS: usize = 64;
/// A drained queue keeps at most this much capacity (in frames): a burst
/// must not leave every connection holding its high-water mark.
const RETAINED_QUEUE: usize = 8;
/// History replays running at once, across all sessions.
const CONCURRENT_REPLAYS: usize = 32;

/// Identifies one socket for the life of the process.
pub type ConnId = u64;

/// An event frame, serialised once and shared by every recipient's queue.
#[derive(Debug)]
pub struct Frame {
    /// Lets a recovering session skip what History already sent.
    pub id: EventId,
    pub text: Utf8Bytes,
}

/// What the hub asks of a session, most urgent first.
#[derive(Debug)]
pub enum Signal {
    /// Close with this code (slow consumer, revoked user, shutdown).
    Close(CloseCode),
    /// Send this event.
    Frame(Arc<Frame>),
    /// Time for this connection's keepalive ping.
    Ping,
}

// === impl Slot ===

/// One connection's mailbox from the hub.
#[derive(Debug)]
pub struct Slot {
    state: Mutex<SlotState>,
    /// Set when the socket woke the session (through the slot's own
    /// [`Waker`]), so a wakeup for an event need not try a read.
    socket_ready: AtomicBool,
}

#[derive(Debug)]
struct SlotState {
    /// Allocated on first use and shrunk when drained.
    queue: VecDeque<Arc<Frame>>,
    capacity: u32,
    /// The first close requested wins.
    kick: Option<CloseCode>,
    ping: bool,
    waker: Option<Waker>,
}

impl Slot {
    fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(SlotState {
                queue: VecDeque::new(),
                capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
                kick: None,
                ping: false,
                waker: None,
            }),
            socket_ready: AtomicBool::new(true),
        }
    }

    /// Queues without waiting; a full queue kicks the slow client. The waker
    /// to wake is returned so the caller can wake it outside its own lock.
    #[must_use]
    fn offer(&self, frame: &Arc<Frame>) -> Option<Waker> {
        let mut state = lock(&self.state);
        if state.kick.is_some() {
            return None;
        }
        if state.queue.len() >= state.capacity as usize {
            state.kick = Some(CloseCode::Policy);
            // Its events are never sent now: free them at once.
            state.queue = VecDeque::new();
        } else {
            state.queue.push_back(Arc::clone(frame));
        }
        state.waker.take()
    }

    /// Asks for a close with `code`; the first request wins.
    pub fn kick(&self, code: CloseCode) {
        let waker = {
            let mut state = lock(&self.state);
            if state.kick.is_some() {
                return;
            }
            state.kick = Some(code);
            state.queue = VecDeque::new();
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    #[must_use]
    fn ping(&self) -> Option<Waker> {
        let mut state = lock(&self.state);
        state.ping = true;
        state.waker.take()
    }

    /// The next thing the hub wants: a close before anything else, then
    /// queued frames in order, then a ping.
    pub fn poll_signal(&self, cx: &mut Context<'_>) -> Poll<Signal> {
        let mut state = lock(&self.state);
        if let Some(code) = state.kick {
            return Poll::Ready(Signal::Close(code));
        }
        if let Some(frame) = state.queue.pop_front() {
            if state.queue.is_empty() && state.queue.capacity() > RETAINED_QUEUE {
                state.queue = VecDeque::new();
            }
            return Poll::Ready(Signal::Frame(frame));
        }
        if std::mem::take(&mut state.ping) {
            return Poll::Ready(Signal::Ping);
        }
        register(&mut state.waker, cx);
        // The socket may have woken us between the session's read attempt
        // and this registration, finding no waker to call: poll again.
        if self.socket_ready.load(Ordering::Acquire) {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Resolves only with a close request (while a write is in progress).
    pub fn poll_kick(&self, cx: &mut Context<'_>) -> Poll<CloseCode> {
        let mut state = lock(&self.state);
        if let Some(code) = state.kick {
            return Poll::Ready(code);
        }
        register(&mut state.waker, cx);
        Poll::Pending
    }

    /// The close requested so far, if any.
    pub fn kicked(&self) -> Option<CloseCode> {
        lock(&self.state).kick
    }

    /// Whether the socket may have something to read; clears the mark. A
    /// read that returns `Pending` leaves [`Registration::socket_waker`] with
    /// the socket, which marks it again when there is.
    pub fn take_socket_ready(&self) -> bool {
        self.socket_ready.swap(false, Ordering::AcqRel)
    }

    /// After a read that returned something: there may be more.
    pub fn set_socket_ready(&self) {
        self.socket_ready.store(true, Ordering::Release);
    }
}

/// The socket's waker: marks the socket ready, then wakes the session.
impl Wake for Slot {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.set_socket_ready();
        let waker = lock(&self.state).waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a lock leaves plain data behind, still usable.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn wake_all(wakers: &mut Vec<Waker>) {
    for waker in wakers.drain(..) {
        waker.wake();
    }
}

// === impl Hub ===

struct Member {
    id: ConnId,
    slot: Arc<Slot>,
}

#[derive(Default)]
struct Shard {
    users: HashMap<Arc<str>, Vec<Member>>,
    /// Disconnects delivered to users of this shard, counted.
    disconnects: u64,
    /// The users of the last few disconnects and their numbers, so a session
    /// that was verifying its JWT meanwhile learns it was revoked.
    recent: VecDeque<(u64, Arc<str>)>,
}

impl Shard {
    /// Whether `user` was disconnected after `mark` was taken (or too many
    /// disconnects happened since to tell: refuse then, the client retries).
    fn disconnected_since(&self, user: &str, mark: DisconnectMark) -> bool {
        if self.disconnects == mark.0 {
            return false;
        }
        let oldest_known = self.recent.front().map_or(u64::MAX, |(n, _)| *n);
        if oldest_known > mark.0 + 1 {
            return true;
        }
        self.recent
            .iter()
            .any(|(n, who)| *n > mark.0 && &**who == user)
    }
}

struct Inner {
    shards: Vec<Mutex<Shard>>,
    next_id: AtomicU64,
    hasher: BuildHasherDefault<DefaultHasher>,
    metrics: Metrics,
    /// Set once on shutdown: nobody registers after it.
    closing: AtomicBool,
    /// Whether the driver task (pings, shutdown) runs.
    driven: AtomicBool,
    replays: Semaphore,
}

/// The connection registry: a cheap-clone handle.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

/// A shard's disconnect count, read before a session verifies its JWT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DisconnectMark(u64);

impl Hub {
    pub fn new(metrics: Metrics) -> Self {
        Self {
            inner: Arc::new(Inner {
                shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
                next_id: AtomicU64::new(1),
                hasher: BuildHasherDefault::default(),
                metrics,
                closing: AtomicBool::new(false),
                driven: AtomicBool::new(false),
                replays: Semaphore::new(CONCURRENT_REPLAYS),
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
        DisconnectMark(lock(self.shard(user)).disconnects)
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
            if shard.disconnected_since(user_id, mark) {
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

    /// Delivers an event: broadcasts to everyone registered, direct messages
    /// to the user's connections, disconnects kick the user's connections (4401).
    pub fn deliver(&self, event: &Event) {
        match &event.action {
            EventAction::Broadcast { data } => {
                let frame = Arc::new(Frame {
                    id: event.id.clone(),
                    text: message::broadcast(&event.id_text, data).into(),
                });
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
                            .filter_map(|m| m.slot.offer(&frame)),
                    );
                    drop(shard);
                    wake_all(&mut wakers);
                }
            }
            EventAction::Direct { user_id, data } => {
                let shard = lock(self.shard(user_id));
                let Some(members) = shard.users.get(user_id.as_str()) else {
                    return;
                };
                let frame = Arc::new(Frame {
                    id: event.id.clone(),
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
                shard.disconnects += 1;
                let number = shard.disconnects;
                if shard.recent.len() == RECENT_DISCONNECTS {
                    shard.recent.pop_front();
                }
                shard
                    .recent
                    .push_back((number, Arc::from(user_id.as_str())));
                if let Some(members) = shard.users.get(user_id.as_str()) {
                    for member in members {
                        member.slot.kick(CloseCode::Unauthorized);
                    }
                }
            }
        }
    }

    /// Closes every registered connection with `code` and refuses new ones.
    pub fn close_all(&self, code: CloseCode) {
        self.inner.closing.store(true, Ordering::Release);
        for shard in &self.inner.shards {
            for member in lock(shard).users.values().flatten() {
                member.slot.kick(code);
            }
        }
    }

    /// Asks the connections of one ping slice to ping their peer.
    pub fn ping_slice(&self, slice: u64) {
        let mut wakers = Vec::new();
        for shard in &self.inner.shards {
            let shard = lock(shard);
            wakers.extend(
                shard
                    .users
                    .values()
                    .flatten()
                    .filter(|m| m.id % PING_SLICES == slice)
                    .filter_map(|m| m.slot.ping()),
            );
            drop(shard);
            wake_all(&mut wakers);
        }
    }

    /// Starts [`Hub::drive`] once, for the gateway's shutdown token and
    /// shared ping tick; later calls do nothing.
    pub fn start_driver(
        &self,
        shutdown: &CancellationToken,
        tick: &watch::Receiver<u64>,
        tracker: &TaskTracker,
    ) {
        if !self.inner.driven.swap(true, Ordering::AcqRel) {
            tracker.spawn(self.clone().drive(shutdown.clone(), tick.clone()));
        }
    }

    /// Turns each shared ping tick into [`PING_SLICES`] spread over the
    /// interval, and the shutdown into a 1001 for everyone.
    pub async fn drive(self, shutdown: CancellationToken, mut tick: watch::Receiver<u64>) {
        tick.mark_unchanged();
        let mut last = Instant::now();
        'ticks: loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                changed = tick.changed() => if changed.is_err() { break },
            }
            // The interval is measured, not configured here: the first one
            // is at most the real interval, so pings never fall behind.
            let now = Instant::now();
            let step = now.duration_since(last) / PING_SLICES as u32;
            last = now;
            for slice in 0..PING_SLICES {
                if slice > 0 {
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break 'ticks,
                        () = tokio::time::sleep(step.min(Duration::from_secs(3600))) => {}
                    }
                }
                self.ping_slice(slice);
            }
        }
        self.close_all(CloseCode::GoingAway);
    }

    /// A place among the History replays allowed at once; waits for one.
    pub async fn replay_permit(&self) -> SemaphorePermit<'_> {
        self.inner
            .replays
            .acquire()
            .await
            .expect("the replay semaphore is never closed")
    }

    /// Registered connections, counted from the maps themselves.
    pub fn len(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| lock(shard).users.values().map(Vec::len).sum::<usize>())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Users with at least one registered connection.
    pub fn user_count(&self) -> usize {
        self.inner
            .shards
            .iter()
            .map(|shard| lock(shard).users.len())
            .sum()
    }
}

/// Keeps a connection registered; dropping it unregisters, on every path.
pub struct Registration {
    hub: Hub,
    conn_id: ConnId,
    user: Arc<str>,
    slot: Arc<Slot>,
}

impl Registration {
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
        self.hub.unregister(self.conn_id, &self.user);
    }
}

#[cfg(test)]
mod tests {
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

    fn broadcast(id: &str) -> Event {
        event(id, EventAction::Broadcast { data: "d".into() })
    }

    fn disconnect(user: &str) -> Event {
        event(
            "e:9-0",
            EventAction::Disconnect {
                user_id: user.into(),
            },
        )
    }

    fn register(hub: &Hub, user: &str, capacity: usize) -> Registration {
        let mark = hub.disconnect_mark(user);
        hub.register(hub.next_conn_id(), user, capacity, mark)
            .expect("registration is open")
    }

    /// The signal waiting in `slot` right now, if any.
    fn now(slot: &Slot) -> Option<Signal> {
        poll_fn(|cx| slot.poll_signal(cx)).now_or_never()
    }

    fn frame(slot: &Slot) -> Arc<Frame> {
        match now(slot) {
            Some(Signal::Frame(frame)) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    fn close(slot: &Slot) -> Option<CloseCode> {
        match now(slot) {
            Some(Signal::Close(code)) => Some(code),
            _ => None,
        }
    }

    #[test]
    fn registration_is_undone_when_the_guard_drops() {
        let metrics = Metrics::default();
        let hub = Hub::new(metrics.clone());
        let mut guards = Vec::new();
        for i in 0..1000 {
            guards.push(register(&hub, &format!("u{}", i % 10), 4));
        }
        assert_eq!(hub.len(), 1000);
        assert_eq!(hub.user_count(), 10);
        assert_eq!(metrics.connections_open(), 1000);
        guards.clear();
        assert!(hub.is_empty());
        assert_eq!(hub.user_count(), 0);
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
        assert_eq!(b.slot().kicked(), None);
    }

    #[test]
    fn a_disconnect_between_mark_and_register_refuses_the_registration() {
        let hub = Hub::new(Metrics::default());
        let mark = hub.disconnect_mark("alice");
        let bob_mark = hub.disconnect_mark("bob");
        // RevokeUser lands while alice's VerifyJwt is in flight.
        hub.deliver(&disconnect("alice"));
        assert_eq!(
            hub.register(hub.next_conn_id(), "alice", 4, mark).err(),
            Some(CloseCode::Unauthorized)
        );
        // Another user is not affected, even in the same shard.
        assert!(hub.register(hub.next_conn_id(), "bob", 4, bob_mark).is_ok());
        // A mark taken after the disconnect registers fine.
        let fresh = hub.disconnect_mark("alice");
        assert!(hub.register(hub.next_conn_id(), "alice", 4, fresh).is_ok());
    }

    #[test]
    fn too_many_disconnects_since_the_mark_refuse_conservatively() {
        let hub = Hub::new(Metrics::default());
        let mark = hub.disconnect_mark("alice");
        // Enough other users of every shard revoked that the record is gone.
        for i in 0..(SHARDS * RECENT_DISCONNECTS * 4) {
            hub.deliver(&disconnect(&format!("other-{i}")));
        }
        assert_eq!(
            hub.register(hub.next_conn_id(), "alice", 4, mark).err(),
            Some(CloseCode::Unauthorized)
        );
    }

    #[test]
    fn a_full_queue_kicks_only_the_slow_connection_and_frees_its_frames() {
        let hub = Hub::new(Metrics::default());
        let slow = register(&hub, "slow", 2);
        let fast = register(&hub, "fast", 2);
        for i in 0..5 {
            hub.deliver(&broadcast(&format!("e:{i}-0")));
            let got = frame(fast.slot());
            assert_eq!(got.id, format!("e:{i}-0").parse().expect("valid id"));
        }
        assert_eq!(close(slow.slot()), Some(CloseCode::Policy));
        assert_eq!(lock(&slow.slot().state).queue.capacity(), 0);
        assert_eq!(fast.slot().kicked(), None);
    }

    #[test]
    fn frames_come_out_in_order_and_a_drained_queue_shrinks() {
        let hub = Hub::new(Metrics::default());
        let conn = register(&hub, "alice", 256);
        for i in 0..100 {
            hub.deliver(&broadcast(&format!("e:{i}-0")));
        }
        for i in 0..100 {
            let got = frame(conn.slot());
            assert_eq!(got.id, format!("e:{i}-0").parse().expect("valid id"));
        }
        assert!(now(conn.slot()).is_none());
        assert!(lock(&conn.slot().state).queue.capacity() <= RETAINED_QUEUE);
    }

    #[test]
    fn the_first_kick_wins_and_comes_before_queued_frames() {
        let hub = Hub::new(Metrics::default());
        let conn = register(&hub, "alice", 4);
        hub.deliver(&broadcast("e:1-0"));
        conn.slot().kick(CloseCode::Policy);
        conn.slot().kick(CloseCode::Unauthorized);
        assert_eq!(close(conn.slot()), Some(CloseCode::Policy));
        assert_eq!(
            poll_fn(|cx| conn.slot().poll_kick(cx)).now_or_never(),
            Some(CloseCode::Policy)
        );
    }

    #[test]
    fn close_all_kicks_everyone_and_refuses_later_registrations() {
        let hub = Hub::new(Metrics::default());
        let a = register(&hub, "alice", 4);
        hub.close_all(CloseCode::GoingAway);
        assert_eq!(close(a.slot()), Some(CloseCode::GoingAway));
        let mark = hub.disconnect_mark("bob");
        assert_eq!(
            hub.register(hub.next_conn_id(), "bob", 4, mark).err(),
            Some(CloseCode::GoingAway)
        );
    }

    #[test]
    fn a_ping_slice_pings_only_its_connections_once() {
        let hub = Hub::new(Metrics::default());
        let conns: Vec<Registration> = (0..32)
            .map(|i| register(&hub, &format!("u{i}"), 4))
            .collect();
        hub.ping_slice(3);
        for conn in &conns {
            let pinged = matches!(now(conn.slot()), Some(Signal::Ping));
            assert_eq!(
                pinged,
                conn.conn_id % PING_SLICES == 3,
                "conn {}",
                conn.conn_id
            );
            assert!(now(conn.slot()).is_none(), "one ping per slice");
        }
    }

    #[tokio::test]
    async fn an_offer_wakes_the_waiting_session() {
        let hub = Hub::new(Metrics::default());
        let conn = register(&hub, "alice", 4);
        let waiting = {
            let hub = hub.clone();
            tokio::spawn(async move {
                let _keep = &hub;
                poll_fn(|cx| conn.slot().poll_signal(cx)).await
            })
        };
        // Delivered whether the task is already waiting or not yet polled.
        tokio::task::yield_now().await;
        hub.deliver(&broadcast("e:1-0"));
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken within the deadline")
            .expect("no panic");
        assert!(matches!(got, Signal::Frame(_)), "{got:?}");
    }

    #[tokio::test]
    async fn the_socket_waker_marks_the_socket_and_wakes_the_session() {
        let hub = Hub::new(Metrics::default());
        let conn = Arc::new(register(&hub, "alice", 4));
        assert!(
            conn.slot().take_socket_ready(),
            "a new socket is read at once"
        );
        assert!(!conn.slot().take_socket_ready());
        let socket_waker = conn.socket_waker();
        let waiting = {
            let conn = Arc::clone(&conn);
            tokio::spawn(async move {
                poll_fn(|cx| match conn.slot().poll_signal(cx) {
                    Poll::Pending if conn.slot().take_socket_ready() => Poll::Ready(()),
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(signal) => panic!("no signal was sent: {signal:?}"),
                })
                .await
            })
        };
        tokio::task::yield_now().await;
        socket_waker.wake_by_ref();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the socket within the deadline")
            .expect("no panic");
    }

    #[test]
    fn a_socket_wake_with_no_session_waker_yet_is_not_lost() {
        struct Counting(std::sync::atomic::AtomicUsize);
        impl std::task::Wake for Counting {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let hub = Hub::new(Metrics::default());
        let conn = register(&hub, "alice", 4);
        assert!(
            conn.slot().take_socket_ready(),
            "a new socket is read at once"
        );
        // The socket becomes readable after the session's read attempt and
        // before it registers with the slot: nobody is there to wake.
        conn.socket_waker().wake_by_ref();
        let counting = Arc::new(Counting(std::sync::atomic::AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counting));
        let polled = conn.slot().poll_signal(&mut Context::from_waker(&waker));
        assert!(polled.is_pending(), "nothing queued for the session");
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            1,
            "the session is woken at once to read the socket"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_driver_spreads_pings_over_the_interval_and_closes_on_shutdown() {
        let hub = Hub::new(Metrics::default());
        let conns: Vec<Registration> = (0..16)
            .map(|i| register(&hub, &format!("u{i}"), 4))
            .collect();
        let (tick_tx, tick_rx) = watch::channel(0u64);
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        hub.start_driver(&shutdown, &tick_rx, &tracker);
        hub.start_driver(&shutdown, &tick_rx, &tracker);
        assert_eq!(
            tracker.len(),
            1,
            "one driver however many sessions start it"
        );

        tokio::time::sleep(Duration::from_secs(8)).await;
        tick_tx.send_modify(|n| *n += 1);
        // Just after the tick, only slice 0 has been pinged.
        tokio::time::sleep(Duration::from_millis(10)).await;
        let pinged: Vec<bool> = conns
            .iter()
            .map(|c| matches!(now(c.slot()), Some(Signal::Ping)))
            .collect();
        for (conn, pinged) in conns.iter().zip(&pinged) {
            assert_eq!(*pinged, conn.conn_id % PING_SLICES == 0);
        }
        // Within the interval every other slice follows.
        tokio::time::sleep(Duration::from_secs(8)).await;
        for (conn, pinged) in conns.iter().zip(&pinged) {
            if !pinged {
                assert!(
                    matches!(now(conn.slot()), Some(Signal::Ping)),
                    "conn {}",
                    conn.conn_id
                );
            }
        }

        shutdown.cancel();
        tracker.close();
        tokio::time::timeout(Duration::from_secs(5), tracker.wait())
            .await
            .expect("the driver ends on shutdown");
        for conn in &conns {
            assert_eq!(close(conn.slot()), Some(CloseCode::GoingAway));
        }
    }
}
