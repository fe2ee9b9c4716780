//! Keepalive pings for every registered connection from one task, spread
//! over the interval, and the 1001 for everyone on shutdown.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::Hub;
use crate::close::CloseCode;

/// Each ping interval is cut in this many slices; a connection is pinged in
/// slice `conn_id % PING_SLICES`, so keepalive traffic is spread, not a burst.
const PING_SLICES: u64 = 8;

impl Hub {
    /// Asks the connections of one ping slice to ping their peer.
    fn ping_slice(&self, slice: u64) {
        self.wake_members(|m| {
            if m.id % PING_SLICES == slice {
                m.slot.ping()
            } else {
                None
            }
        });
    }

    /// Closes every registered connection with `code` once the frames
    /// already queued for it are sent, and refuses new ones. A client that
    /// does not read cannot hold this beyond the shutdown grace: `run` stops
    /// waiting for its session then.
    fn close_all(&self, code: CloseCode) {
        self.inner.closing.store(true, Ordering::Release);
        self.wake_members(|m| m.slot.close_after_queue(code));
    }

    /// The hub's driver, spawned once by [`crate::run`]: every `interval`,
    /// pings each connection once, slice by slice; on `shutdown`, closes
    /// every connection with 1001 and refuses new ones.
    pub async fn drive(self, interval: Duration, shutdown: CancellationToken) {
        let interval = interval.max(Duration::from_millis(1));
        let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The slices take 7/8 of the interval: pings never fall behind.
        let step = interval / PING_SLICES as u32;
        'ticks: loop {
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                _ = ticks.tick() => {}
            }
            for slice in 0..PING_SLICES {
                if slice > 0 {
                    tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break 'ticks,
                        () = tokio::time::sleep(step) => {}
                    }
                }
                self.ping_slice(slice);
            }
        }
        self.close_all(CloseCode::GoingAway);
    }
}

#[cfg(test)]
mod tests {
    use tokio_util::task::TaskTracker;

    use super::*;
    use crate::hub::tests::{close, now, register};
    use crate::hub::{Registration, Signal};
    use crate::metrics::Metrics;

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

    #[tokio::test(start_paused = true)]
    async fn the_driver_spreads_pings_over_the_interval_and_closes_on_shutdown() {
        let hub = Hub::new(Metrics::default());
        let conns: Vec<Registration> = (0..16)
            .map(|i| register(&hub, &format!("u{i}"), 4))
            .collect();
        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        tracker.spawn(hub.clone().drive(Duration::from_secs(8), shutdown.clone()));

        // Just after the first tick, only slice 0 has been pinged.
        tokio::time::sleep(Duration::from_millis(8010)).await;
        let pinged: Vec<bool> = conns
            .iter()
            .map(|c| matches!(now(c.slot()), Some(Signal::Ping)))
            .collect();
        for (conn, pinged) in conns.iter().zip(&pinged) {
            assert_eq!(*pinged, conn.conn_id % PING_SLICES == 0);
        }
        // Within the interval every other slice follows.
        tokio::time::sleep(Duration::from_secs(7)).await;
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
        let mark = hub.disconnect_mark("late");
        assert_eq!(
            hub.register(hub.next_conn_id(), &"late".into(), 4, mark)
                .err(),
            Some(CloseCode::GoingAway),
            "nobody registers after shutdown"
        );
    }

    #[test]
    fn shutdown_closes_after_the_queued_frames_and_queues_nothing_more() {
        let hub = Hub::new(Metrics::default());
        let busy = register(&hub, "busy", 8);
        let idle = register(&hub, "idle", 8);
        for i in 0..3 {
            hub.deliver(&crate::hub::tests::broadcast(&format!("e:{i}-0")));
        }
        // The idle one has read its frames already.
        for _ in 0..3 {
            assert!(matches!(now(idle.slot()), Some(Signal::Frame(_))));
        }
        hub.close_all(CloseCode::GoingAway);
        hub.deliver(&crate::hub::tests::broadcast("e:9-0"));
        for i in 0..3 {
            match now(busy.slot()) {
                Some(Signal::Frame(frame)) => {
                    assert_eq!(
                        frame.id,
                        Some(format!("e:{i}-0").parse().expect("valid id"))
                    );
                }
                other => panic!("expected queued frame {i}, got {other:?}"),
            }
        }
        assert_eq!(close(busy.slot()), Some(CloseCode::GoingAway));
        assert_eq!(close(idle.slot()), Some(CloseCode::GoingAway));
    }
}
