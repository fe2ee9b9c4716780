//! Feeds the [`Hub`] from auth's Subscribe stream: one stream per process,
//! reopened after any break from the last delivered id.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wsauth_shared::backoff::Backoff;

use crate::auth_client::{AuthCallError, AuthClient, ErrorKind, Incoming, LiveFrom};
use crate::event::{EventId, Start};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::state::Readiness;

/// Whether an event should reach the hub: ids at or before the last delivered
/// one (same epoch) are replays of what was already delivered.
pub fn is_new(id: &EventId, last: Option<&EventId>) -> bool {
    last.is_none_or(|last| !id.is_at_or_before(last))
}

/// Where the next Subscribe starts.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Resume {
    /// Live events only: nothing was delivered yet, so nothing can be missed
    /// by starting now.
    Live,
    /// From the oldest event auth retains, with nothing missed: auth's stream
    /// was empty when the live stream opened, so every event that comes
    /// (of whichever epoch) is new.
    Fresh,
    /// After the last event delivered (or skipped as unreadable).
    After(EventId),
    /// From the oldest event auth still retains: the resume point (kept
    /// here, when there was one) was lost and the connections were told of
    /// the gap. Events of its epoch at or before it were delivered already
    /// (a stream rolled back by a failover to a lagging replica, same epoch)
    /// and are skipped; a new epoch's all pass.
    Oldest(Option<EventId>),
}

impl std::fmt::Display for Resume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Live => f.write_str("live"),
            Self::Fresh => f.write_str("the oldest retained event (the stream was empty)"),
            Self::After(last) => write!(f, "after {last}"),
            Self::Oldest(_) => f.write_str("the oldest retained event"),
        }
    }
}

impl Resume {
    fn start(&self) -> Option<Start<'_>> {
        match self {
            Self::Live => None,
            Self::After(last) => Some(Start::After(last)),
            Self::Fresh | Self::Oldest(_) => Some(Start::Oldest),
        }
    }

    fn last(&self) -> Option<&EventId> {
        match self {
            Self::After(last) | Self::Oldest(Some(last)) => Some(last),
            Self::Live | Self::Fresh | Self::Oldest(None) => None,
        }
    }

    /// A live stream opened: where auth said it began (an auth that predates
    /// saying so leaves it live) becomes the resume point, so a break before
    /// its first event resumes from there and misses nothing.
    fn opened_live(&mut self, from: Option<LiveFrom>) {
        if *self != Self::Live {
            return;
        }
        match from {
            Some(LiveFrom::After(last)) => *self = Self::After(last),
            Some(LiveFrom::Oldest) => *self = Self::Fresh,
            None => {}
        }
    }

    /// Auth refused the resume point or ended the stream with OUT_OF_RANGE
    /// (a new epoch, or the point is no longer retained): events may have
    /// been missed. The connections are told (`{"type":"gap"}`) and the next
    /// Subscribe starts at the oldest retained event, so nothing auth still
    /// has is lost, and nothing delivered before is delivered twice.
    /// Returns whether to resubscribe at once: not when the gap came from a
    /// stream that already started at the oldest event (a second loss in a
    /// row), which is told again but retried after the backoff.
    fn lost(&mut self) -> bool {
        let at_once = !matches!(self, Self::Oldest(_));
        let last = self.last().cloned();
        *self = Self::Oldest(last);
        at_once
    }
}

/// The task that keeps the Subscribe stream open.
pub struct Subscriber {
    pub client: AuthClient,
    pub hub: Hub,
    pub metrics: Metrics,
    pub ready: Readiness,
    pub gateway_id: String,
    pub shutdown: CancellationToken,
}

impl Subscriber {
    /// Runs until shutdown.
    pub async fn run(self) {
        let mut resume = Resume::Live;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let opened = tokio::select! {
                () = self.shutdown.cancelled() => break,
                opened = self.client.subscribe(&self.gateway_id, resume.start()) => opened,
            };
            let error = match opened {
                Ok(mut stream) => {
                    let opened_at = tokio::time::Instant::now();
                    self.ready.set_subscribed(true);
                    let live_from = stream.live_from.take();
                    tracing::info!(from = %resume, ?live_from, "subscribed to events");
                    resume.opened_live(live_from);
                    let ended = loop {
                        let next = tokio::select! {
                            () = self.shutdown.cancelled() => None,
                            next = stream.next() => Some(next),
                        };
                        match next {
                            None => break None,
                            Some(None) => {
                                break Some(AuthCallError::Unavailable("stream ended".into()));
                            }
                            Some(Some(Err(error))) => break Some(error),
                            Some(Some(Ok(incoming))) => {
                                self.metrics.event_received();
                                self.receive(incoming, &mut resume);
                            }
                        }
                    };
                    self.ready.set_subscribed(false);
                    // Broken before its first event, from an auth that did not
                    // say where the live stream began: no position to resume
                    // from, so what is published until the next one opens
                    // cannot be fetched. Say so.
                    if ended.is_some() && resume == Resume::Live {
                        tracing::warn!(
                            "event stream broke before its first event: events published until it reopens are not delivered; telling the connections"
                        );
                        self.hub.gap();
                        self.metrics.stream_gap();
                    }
                    // A stream that held for a while was a success: retry quickly.
                    if opened_at.elapsed() >= Duration::from_secs(5) {
                        backoff.reset();
                    }
                    match ended {
                        None => break,
                        Some(error) => error,
                    }
                }
                Err(error) => error,
            };
            match error.kind() {
                ErrorKind::OutOfRange => {
                    tracing::warn!(from = %resume, %error, "resume point gone (the stream got a new epoch or no longer retains it): events may have been missed; telling the connections and resuming from the oldest retained event");
                    // Before the new stream's first event: connections see
                    // the gap between the events around it.
                    self.hub.gap();
                    self.metrics.stream_gap();
                    if resume.lost() {
                        continue;
                    }
                }
                ErrorKind::Rejected => {
                    tracing::error!(%error, "auth refused the subscription (check AUTH_API_KEY)");
                }
                ErrorKind::Unavailable => {
                    tracing::warn!(%error, "event stream broke or cannot open; resubscribing");
                }
            }
            let delay = backoff.next_delay();
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = tokio::time::sleep(delay) => {}
            }
        }
        self.ready.set_subscribed(false);
    }

    /// Hands one stream item to the hub, moving the resume point past it. An
    /// unreadable event is skipped: breaking the stream would only bring the
    /// same event back from the same resume point, forever.
    fn receive(&self, incoming: Incoming, resume: &mut Resume) {
        match incoming {
            Incoming::Event(event) => {
                if is_new(&event.id, resume.last()) {
                    self.hub.deliver(&event);
                    *resume = Resume::After(event.id);
                }
            }
            Incoming::Unreadable(bad) => {
                tracing::error!(what = bad.what, id = ?bad.id.as_ref().map(ToString::to_string), "skipping unreadable event from auth");
                if let Some(id) = bad.id.filter(|id| is_new(id, resume.last())) {
                    *resume = Resume::After(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth_client::Unreadable;
    use crate::event::{Event, EventAction};
    use crate::hub::Signal;
    use crate::hub::tests::{now, register};

    fn id(s: &str) -> EventId {
        s.parse().expect("valid id")
    }

    fn subscriber() -> Subscriber {
        let metrics = Metrics::default();
        let client = AuthClient::new(
            &["http://127.0.0.1:9".to_owned()],
            None,
            Duration::from_millis(100),
            metrics.clone(),
        )
        .expect("valid url");
        Subscriber {
            client,
            hub: Hub::new(metrics.clone()),
            ready: Readiness::new(metrics.clone()),
            metrics,
            gateway_id: "gw".into(),
            shutdown: CancellationToken::new(),
        }
    }

    fn event(s: &str) -> Incoming {
        Incoming::Event(Event {
            id: id(s),
            id_text: s.into(),
            action: EventAction::Broadcast { data: "d".into() },
        })
    }

    /// The texts queued for a connection, in order.
    fn drain(slot: &crate::hub::Slot) -> Vec<String> {
        let mut texts = Vec::new();
        while let Some(signal) = now(slot) {
            match signal {
                Signal::Frame(frame) => texts.push(frame.text.to_string()),
                other => panic!("expected frames only, got {other:?}"),
            }
        }
        texts
    }

    #[tokio::test]
    async fn unreadable_events_are_skipped_and_move_the_resume_point() {
        let subscriber = subscriber();
        let mut resume = Resume::Live;
        subscriber.receive(event("ab:1-0"), &mut resume);
        assert_eq!(resume, Resume::After(id("ab:1-0")));
        let bad = |s: Option<&str>| {
            Incoming::Unreadable(Unreadable {
                id: s.map(id),
                what: "event kind",
            })
        };
        subscriber.receive(bad(Some("ab:2-0")), &mut resume);
        assert_eq!(
            resume,
            Resume::After(id("ab:2-0")),
            "resume after the unreadable event"
        );
        subscriber.receive(bad(None), &mut resume);
        assert_eq!(
            resume,
            Resume::After(id("ab:2-0")),
            "no id: the resume point stays"
        );
        subscriber.receive(bad(Some("ab:1-5")), &mut resume);
        assert_eq!(resume, Resume::After(id("ab:2-0")), "never moves backwards");
        subscriber.receive(event("ab:3-0"), &mut resume);
        assert_eq!(
            resume,
            Resume::After(id("ab:3-0")),
            "later events still delivered"
        );
    }

    #[test]
    fn replayed_ids_are_skipped_and_new_epochs_pass() {
        let last = id("ab:10-1");
        assert!(is_new(&id("ab:1-0"), None));
        assert!(!is_new(&id("ab:10-1"), Some(&last)));
        assert!(!is_new(&id("ab:9-5"), Some(&last)));
        assert!(is_new(&id("ab:10-2"), Some(&last)));
        assert!(is_new(&id("ab:11-0"), Some(&last)));
        assert!(is_new(&id("cd:1-0"), Some(&last)));
    }

    #[test]
    fn a_lost_resume_point_resumes_from_the_oldest_at_once_and_a_second_loss_backs_off() {
        let mut resume = Resume::After(id("ab:5-0"));
        assert_eq!(resume.start(), Some(Start::After(&id("ab:5-0"))));
        assert!(resume.lost(), "first loss: resubscribe at once");
        assert_eq!(resume, Resume::Oldest(Some(id("ab:5-0"))));
        assert_eq!(resume.start(), Some(Start::Oldest));
        assert!(!resume.lost(), "lost again before any event: back off");
        assert_eq!(
            resume,
            Resume::Oldest(Some(id("ab:5-0"))),
            "the position is kept"
        );
        let mut live = Resume::Live;
        assert_eq!(live.start(), None, "a fresh gateway starts live");
        assert!(live.lost());
        assert_eq!(live, Resume::Oldest(None));
    }

    #[test]
    fn a_live_stream_resumes_from_where_auth_said_it_began() {
        let mut resume = Resume::Live;
        resume.opened_live(Some(LiveFrom::After(id("ab:5-0"))));
        assert_eq!(resume, Resume::After(id("ab:5-0")));
        assert_eq!(resume.start(), Some(Start::After(&id("ab:5-0"))));

        let mut resume = Resume::Live;
        resume.opened_live(Some(LiveFrom::Oldest));
        assert_eq!(resume, Resume::Fresh, "an empty stream: everything is new");
        assert_eq!(resume.start(), Some(Start::Oldest));
        assert_eq!(resume.last(), None, "no event is skipped as a replay");

        let mut resume = Resume::Live;
        resume.opened_live(None);
        assert_eq!(
            resume,
            Resume::Live,
            "an auth that does not say: still live"
        );

        let mut resume = Resume::After(id("ab:9-0"));
        resume.opened_live(Some(LiveFrom::After(id("ab:5-0"))));
        assert_eq!(
            resume,
            Resume::After(id("ab:9-0")),
            "only a live stream takes it"
        );
    }

    /// After a gap the stream restarts at its oldest event: a rolled-back
    /// stream's events at or before the last delivered (same epoch) are not
    /// delivered twice; later ones and a new epoch's all are, once, in order.
    #[tokio::test]
    async fn after_a_gap_nothing_is_delivered_twice_and_the_rest_once_in_order() {
        let subscriber = subscriber();
        let alice = register(&subscriber.hub, "alice", 16);
        let mut resume = Resume::Live;
        subscriber.receive(event("ab:9-0"), &mut resume);
        // OUT_OF_RANGE: what `run` does.
        subscriber.hub.gap();
        assert!(resume.lost());
        for s in [
            "ab:3-0", "ab:9-0", "ab:10-0", "ab:10-0", "cd:1-0", "cd:1-0", "cd:2-0",
        ] {
            subscriber.receive(event(s), &mut resume);
        }
        assert_eq!(resume, Resume::After(id("cd:2-0")));
        let b = |id: &str| format!(r#"{{"type":"broadcast","id":"{id}","data":"d"}}"#);
        assert_eq!(
            drain(alice.slot()),
            [
                b("ab:9-0"),
                r#"{"type":"gap"}"#.to_owned(),
                b("ab:10-0"),
                b("cd:1-0"),
                b("cd:2-0"),
            ]
        );
    }
}
