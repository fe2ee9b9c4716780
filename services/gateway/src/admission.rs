//! How many WebSockets the gateway takes: `MAX_CONNECTIONS` open sockets and
//! `MAX_PENDING_AUTH` of them between the 101 and `auth_ok`. Checked before
//! the ws token is looked at, so a full gateway never spends a token the
//! client could use on another replica.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::metrics::Metrics;

/// Which limit refused a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    /// `MAX_CONNECTIONS` sockets are open.
    Connections,
    /// `MAX_PENDING_AUTH` sockets are waiting for their first frame.
    PendingAuth,
}

/// The two counters, shared by every handler and session.
pub struct Admission {
    open: AtomicUsize,
    pending: AtomicUsize,
    max_open: usize,
    max_pending: usize,
    metrics: Metrics,
}

impl Admission {
    pub fn new(max_open: usize, max_pending: usize, metrics: Metrics) -> Arc<Self> {
        Arc::new(Self {
            open: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            max_open,
            max_pending,
            metrics,
        })
    }

    /// A place for one more socket, counted as open and pending until the
    /// permits are dropped; `Err` names the limit that is reached.
    pub fn try_admit(self: &Arc<Self>) -> Result<Admitted, Full> {
        // Take, then give back when over: no lock, and a race can only refuse
        // (two takers over the limit both give back), never overshoot.
        if self.open.fetch_add(1, Ordering::AcqRel) >= self.max_open {
            self.open.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::Connections);
        }
        let open = OpenPermit(Arc::clone(self));
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.max_pending {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            return Err(Full::PendingAuth);
        }
        self.metrics.pending_auth_changed(1);
        Ok(Admitted {
            open,
            pending: PendingPermit(Arc::clone(self)),
        })
    }

    /// Sockets open now (for tests and the operators' numbers).
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }

    /// Sockets between the 101 and `auth_ok` now.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }
}

/// One admitted socket: both permits. Split with [`Admitted::into_parts`]
/// so the pending one ends at `auth_ok` and the open one with the socket.
pub struct Admitted {
    open: OpenPermit,
    pending: PendingPermit,
}

impl Admitted {
    pub fn into_parts(self) -> (OpenPermit, PendingPermit) {
        (self.open, self.pending)
    }
}

/// Counts one open socket until dropped.
pub struct OpenPermit(Arc<Admission>);

impl Drop for OpenPermit {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Counts one socket waiting for its first frame until dropped.
pub struct PendingPermit(Arc<Admission>);

impl Drop for PendingPermit {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
        self.0.metrics.pending_auth_changed(-1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_and_given_back() {
        let admission = Admission::new(2, 10, Metrics::new());
        let first = admission.try_admit().expect("room");
        let _second = admission.try_admit().expect("room");
        assert_eq!(
            admission.try_admit().err(),
            Some(Full::Connections),
            "a third is refused"
        );
        assert_eq!(admission.open(), 2, "a refusal takes nothing");
        drop(first);
        assert!(
            admission.try_admit().is_ok(),
            "a closed socket frees its place"
        );
    }

    #[test]
    fn pending_sockets_are_capped_until_they_authenticate() {
        let admission = Admission::new(10, 1, Metrics::new());
        let (open, pending) = admission.try_admit().expect("room").into_parts();
        assert_eq!(admission.try_admit().err(), Some(Full::PendingAuth));
        assert_eq!(
            admission.open(),
            1,
            "the refused socket's open place is given back"
        );
        drop(pending);
        let _next = admission
            .try_admit()
            .expect("auth_ok frees the pending place");
        assert_eq!((admission.open(), admission.pending()), (2, 1));
        drop(open);
        assert_eq!(admission.open(), 1);
    }

    #[test]
    fn racing_admissions_never_overshoot() {
        let admission = Admission::new(50, 1_000, Metrics::new());
        let admitted: Vec<Admitted> = std::thread::scope(|scope| {
            let takers: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        (0..20)
                            .filter_map(|_| admission.try_admit().ok())
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            takers
                .into_iter()
                .flat_map(|taker| taker.join().expect("no panic"))
                .collect()
        });
        assert_eq!(admitted.len(), 50);
        assert_eq!(admission.open(), 50);
        drop(admitted);
        assert_eq!((admission.open(), admission.pending()), (0, 0));
    }
}
