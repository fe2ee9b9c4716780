//! The disconnects a shard has delivered, so a session whose JWT was being
//! verified while its user was revoked is refused when it registers.

use std::collections::VecDeque;
use std::sync::Arc;

/// Disconnects remembered per shard for sessions still in phase 2.
pub(super) const RECENT_DISCONNECTS: usize = 64;

/// A shard's disconnect count, read before a session verifies its JWT.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DisconnectMark(u64);

/// One shard's delivered disconnects: counted, and the last few by user.
#[derive(Debug, Default)]
pub(super) struct Revocations {
    count: u64,
    recent: VecDeque<(u64, Arc<str>)>,
}

impl Revocations {
    pub(super) fn mark(&self) -> DisconnectMark {
        DisconnectMark(self.count)
    }

    pub(super) fn record(&mut self, user: &str) {
        self.count += 1;
        if self.recent.len() == RECENT_DISCONNECTS {
            self.recent.pop_front();
        }
        self.recent.push_back((self.count, Arc::from(user)));
    }

    /// Whether `user` was disconnected after `mark` was taken (or too many
    /// disconnects happened since to tell: refuse then, the client retries).
    pub(super) fn since(&self, user: &str, mark: DisconnectMark) -> bool {
        if self.count == mark.0 {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::CloseCode;
    use crate::hub::Hub;
    use crate::hub::tests::disconnect;
    use crate::metrics::Metrics;

    #[test]
    fn only_the_revoked_user_is_refused_and_only_after_the_mark() {
        let mut revocations = Revocations::default();
        revocations.record("carol");
        let mark = revocations.mark();
        assert!(!revocations.since("alice", mark));
        revocations.record("alice");
        assert!(revocations.since("alice", mark));
        assert!(!revocations.since("bob", mark));
        assert!(!revocations.since("alice", revocations.mark()));
    }

    #[test]
    fn a_disconnect_between_mark_and_register_refuses_the_registration() {
        let hub = Hub::new(Metrics::default());
        let mark = hub.disconnect_mark("alice");
        let bob_mark = hub.disconnect_mark("bob");
        // RevokeUser lands while alice's VerifyJwt is in flight.
        hub.deliver(&disconnect("alice"));
        assert_eq!(
            hub.register(hub.next_conn_id(), &"alice".into(), 4, mark)
                .err(),
            Some(CloseCode::Unauthorized)
        );
        // Another user is not affected, even in the same shard.
        assert!(
            hub.register(hub.next_conn_id(), &"bob".into(), 4, bob_mark)
                .is_ok()
        );
        // A mark taken after the disconnect registers fine.
        let fresh = hub.disconnect_mark("alice");
        assert!(
            hub.register(hub.next_conn_id(), &"alice".into(), 4, fresh)
                .is_ok()
        );
    }

    #[test]
    fn too_many_disconnects_since_the_mark_refuse_conservatively() {
        let hub = Hub::new(Metrics::default());
        let mark = hub.disconnect_mark("alice");
        // Enough other users of every shard revoked that the record is gone.
        for i in 0..(crate::hub::SHARDS * RECENT_DISCONNECTS * 4) {
            hub.deliver(&disconnect(&format!("other-{i}")));
        }
        assert_eq!(
            hub.register(hub.next_conn_id(), &"alice".into(), 4, mark)
                .err(),
            Some(CloseCode::Unauthorized)
        );
    }
}
