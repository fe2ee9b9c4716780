//! Live connections by the `jti` of the JWT they authenticated with (or last
//! refreshed to), so that a RevokeJwt closes them with 4401.
//!
//! A connection keeps only a 64-bit keyed hash of its jti, not the jti (up to
//! 256 bytes): the key is random per process, so nobody can aim a jti at
//! another's hash, and an accidental collision (about 2^-64 per pair) would
//! only close one more connection. A JWT without a jti cannot be revoked by
//! jti: such a connection is never bound.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use super::one_or_more::OneOrMore;
use super::{ConnId, Slot, lock};
use crate::close::CloseCode;

/// Shards of the jti index: fan-out of a revocation and (un)binding rarely contend.
const SHARDS: usize = 16;
/// How long a revoked jti is remembered, so a session whose JWT was being
/// verified while it was revoked is refused when it binds. Longer than any
/// verification can take (one call deadline, `AUTH_CALL_TIMEOUT_MS` ≤ 60 s,
/// failover included), so a burst of revocations cannot push a raced one out
/// early (a count-bounded memory could be).
const REVOKED_MEMORY: Duration = Duration::from_secs(120);
/// Revoked jtis kept per shard within [`REVOKED_MEMORY`] at most (16 bytes
/// each, ~16 MiB over all shards), so a revocation flood cannot grow memory
/// without bound; beyond it the oldest is forgotten first.
const REVOKED_CAPACITY: usize = 65_536;

/// A jti as the hub keys it; never 0, which a connection's binding uses
/// for "none".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct JtiKey(u64);

impl JtiKey {
    pub(super) fn to_bits(self) -> u64 {
        self.0
    }

    pub(super) fn from_bits(bits: u64) -> Option<Self> {
        (bits != 0).then_some(Self(bits))
    }
}

#[derive(Default)]
struct Shard {
    conns: HashMap<JtiKey, OneOrMore<(ConnId, Arc<Slot>)>>,
    /// Revoked lately, by when each is forgotten; `expiries` orders them.
    recent: HashMap<JtiKey, Instant>,
    expiries: VecDeque<(Instant, JtiKey)>,
}

impl Shard {
    /// Forgets revocations past their time (and the oldest beyond capacity).
    fn forget_old(&mut self, now: Instant) {
        while let Some(&(until, key)) = self.expiries.front() {
            if until > now && self.expiries.len() <= REVOKED_CAPACITY {
                break;
            }
            self.expiries.pop_front();
            // A key revoked again later has a later time: keep that one.
            if self.recent.get(&key) == Some(&until) {
                self.recent.remove(&key);
            }
        }
    }
}

/// The jti index.
pub(super) struct JtiIndex {
    shards: Vec<Mutex<Shard>>,
    hasher: RandomState,
}

impl JtiIndex {
    pub(super) fn new() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    pub(super) fn key(&self, jti: &str) -> JtiKey {
        JtiKey(self.hasher.hash_one(jti).max(1))
    }

    fn shard(&self, key: JtiKey) -> &Mutex<Shard> {
        &self.shards[(key.0 % SHARDS as u64) as usize]
    }

    /// Binds a connection to `key`; refused (4401) when that jti was revoked
    /// lately, which covers a revocation racing the JWT's verification.
    pub(super) fn bind(
        &self,
        key: JtiKey,
        conn: ConnId,
        slot: &Arc<Slot>,
    ) -> Result<(), CloseCode> {
        let mut shard = lock(self.shard(key));
        shard.forget_old(Instant::now());
        if shard.recent.contains_key(&key) {
            return Err(CloseCode::Unauthorized);
        }
        let bound = (conn, Arc::clone(slot));
        match shard.conns.entry(key) {
            Entry::Occupied(mut conns) => conns.get_mut().push(bound),
            Entry::Vacant(place) => {
                place.insert(OneOrMore::One(bound));
            }
        }
        Ok(())
    }

    pub(super) fn unbind(&self, key: JtiKey, conn: ConnId) {
        let mut shard = lock(self.shard(key));
        if let Some(conns) = shard.conns.get_mut(&key)
            && !conns.retain(|(id, _)| *id != conn)
        {
            shard.conns.remove(&key);
        }
    }

    /// Closes every connection bound to `jti` with 4401, and remembers it.
    pub(super) fn revoke(&self, jti: &str) {
        let key = self.key(jti);
        let mut shard = lock(self.shard(key));
        let now = Instant::now();
        let until = now + REVOKED_MEMORY;
        shard.recent.insert(key, until);
        shard.expiries.push_back((until, key));
        shard.forget_old(now);
        if let Some(conns) = shard.conns.get(&key) {
            for (_, slot) in conns {
                slot.kick(CloseCode::Unauthorized);
            }
        }
    }

    #[cfg(test)]
    pub(super) fn bound(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| {
                lock(shard)
                    .conns
                    .values()
                    .map(|conns| conns.iter().len())
                    .sum::<usize>()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use crate::close::CloseCode;
    use crate::event::{Event, EventAction};
    use crate::hub::Hub;
    use crate::hub::tests::{close, now, register};
    use crate::metrics::Metrics;

    fn revoke(jti: &str) -> Event {
        Event {
            id: "e:9-0".parse().expect("valid id"),
            id_text: "e:9-0".into(),
            action: EventAction::RevokeJwt { jti: jti.into() },
        }
    }

    #[test]
    fn revoke_jwt_kicks_only_the_connections_bound_to_that_jti() {
        let hub = Hub::new(Metrics::default());
        let a = register(&hub, "alice", 4);
        let b = register(&hub, "alice", 4);
        let c = register(&hub, "bob", 4);
        let unbound = register(&hub, "alice", 4);
        a.bind_jti(Some("jti-a")).expect("binds");
        b.bind_jti(Some("jti-b")).expect("binds");
        c.bind_jti(Some("jti-a"))
            .expect("a jti shared by two connections");
        hub.deliver(&revoke("jti-a"));
        assert_eq!(close(a.slot()), Some(CloseCode::Unauthorized));
        assert_eq!(close(c.slot()), Some(CloseCode::Unauthorized));
        assert!(now(b.slot()).is_none());
        assert!(now(unbound.slot()).is_none());
    }

    #[test]
    fn a_refresh_moves_the_binding_to_the_new_jti() {
        let hub = Hub::new(Metrics::default());
        let a = register(&hub, "alice", 4);
        a.bind_jti(Some("old")).expect("binds");
        a.bind_jti(Some("new")).expect("rebinds");
        assert_eq!(hub.inner.jtis.bound(), 1, "the old binding is gone");
        hub.deliver(&revoke("old"));
        assert!(now(a.slot()).is_none(), "the old jti no longer binds it");
        hub.deliver(&revoke("new"));
        assert_eq!(close(a.slot()), Some(CloseCode::Unauthorized));
        // A refresh to a JWT without jti leaves the connection unbound.
        let b = register(&hub, "bob", 4);
        b.bind_jti(Some("b1")).expect("binds");
        b.bind_jti(None).expect("unbinds");
        hub.deliver(&revoke("b1"));
        assert!(now(b.slot()).is_none());
    }

    #[test]
    fn a_jti_revoked_before_binding_is_refused() {
        let hub = Hub::new(Metrics::default());
        hub.deliver(&revoke("late"));
        let a = register(&hub, "alice", 4);
        assert_eq!(a.bind_jti(Some("late")), Err(CloseCode::Unauthorized));
        assert!(a.bind_jti(Some("other")).is_ok());
    }

    /// More revocations than any count-bounded memory held (64 per shard
    /// before), landing while a JWT is verified, do not let it bind; after
    /// the memory's time, the jti may bind again.
    #[tokio::test(start_paused = true)]
    async fn a_burst_of_revocations_cannot_push_a_raced_one_out() {
        let hub = Hub::new(Metrics::default());
        hub.deliver(&revoke("raced"));
        for i in 0..5_000 {
            hub.deliver(&revoke(&format!("burst-{i}")));
        }
        let a = register(&hub, "alice", 4);
        assert_eq!(a.bind_jti(Some("raced")), Err(CloseCode::Unauthorized));
        tokio::time::advance(super::REVOKED_MEMORY + std::time::Duration::from_secs(1)).await;
        assert!(
            a.bind_jti(Some("raced")).is_ok(),
            "forgotten after its time"
        );
    }

    #[test]
    fn bindings_go_with_the_registration() {
        let hub = Hub::new(Metrics::default());
        for i in 0..100 {
            let a = register(&hub, "alice", 4);
            a.bind_jti(Some(&format!("j{}", i % 7))).expect("binds");
        }
        assert_eq!(hub.inner.jtis.bound(), 0);
    }
}
