//! Feeds the [`Hub`] from auth's Subscribe stream: one stream per process,
//! reopened after any break from the last delivered id.

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wsauth_shared::backoff::Backoff;

use crate::auth_client::{AuthCallError, AuthClient, ErrorKind, Incoming};
use crate::event::EventId;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::state::Readiness;

/// Whether an event should reach the hub: ids at or before the last delivered
/// one (same epoch) are replays of what was already delivered.
pub fn is_new(id: &EventId, last: Option<&EventId>) -> bool {
    last.is_none_or(|last| !id.is_at_or_before(last))
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
        let mut last: Option<EventId> = None;
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        loop {
            let opened = tokio::select! {
                () = self.shutdown.cancelled() => break,
                opened = self.client.subscribe(&self.gateway_id, last.as_ref()) => opened,
            };
            let error = match opened {
                Ok(mut stream) => {
                    let opened_at = tokio::time::Instant::now();
                    self.ready.set_subscribed(true);
                    tracing::info!(after_id = ?last.as_ref().map(ToString::to_string), "subscribed to events");
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
                                self.receive(incoming, &mut last);
                            }
                        }
                    };
                    self.ready.set_subscribed(false);
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
                    tracing::warn!(after_id = ?last.as_ref().map(ToString::to_string), "resume point no longer retained (or stream epoch changed): events may have been missed; resubscribing live");
                    last = None;
                    continue;
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

    /// Hands one stream item to the hub, moving `last` past it. An
    /// unreadable event is skipped: breaking the stream would only bring the
    /// same event back from the same resume point, forever.
    fn receive(&self, incoming: Incoming, last: &mut Option<EventId>) {
        match incoming {
            Incoming::Event(event) => {
                if is_new(&event.id, last.as_ref()) {
                    self.hub.deliver(&event);
                    *last = Some(event.id);
                }
            }
            Incoming::Unreadable(bad) => {
                tracing::error!(what = bad.what, id = ?bad.id.as_ref().map(ToString::to_string), "skipping unreadable event from auth");
                if let Some(id) = bad.id.filter(|id| is_new(id, last.as_ref())) {
                    *last = Some(id);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn unreadable_events_are_skipped_and_move_the_resume_point() {
        use crate::auth_client::Unreadable;
        use crate::event::{Event, EventAction};
        let metrics = Metrics::default();
        let client = AuthClient::new(
            &["http://127.0.0.1:9".to_owned()],
            None,
            Duration::from_millis(100),
            metrics.clone(),
        )
        .expect("valid url");
        let subscriber = Subscriber {
            client,
            hub: Hub::new(metrics.clone()),
            ready: Readiness::new(metrics.clone()),
            metrics,
            gateway_id: "gw".into(),
            shutdown: CancellationToken::new(),
        };
        let id = |s: &str| s.parse::<EventId>().expect("valid id");
        let mut last = None;
        let event = |s: &str| {
            Incoming::Event(Event {
                id: id(s),
                id_text: s.into(),
                action: EventAction::Broadcast { data: "d".into() },
            })
        };
        subscriber.receive(event("ab:1-0"), &mut last);
        assert_eq!(last, Some(id("ab:1-0")));
        let bad = |s: Option<&str>| {
            Incoming::Unreadable(Unreadable {
                id: s.map(id),
                what: "event kind",
            })
        };
        subscriber.receive(bad(Some("ab:2-0")), &mut last);
        assert_eq!(
            last,
            Some(id("ab:2-0")),
            "resume after the unreadable event"
        );
        subscriber.receive(bad(None), &mut last);
        assert_eq!(last, Some(id("ab:2-0")), "no id: the resume point stays");
        subscriber.receive(bad(Some("ab:1-5")), &mut last);
        assert_eq!(last, Some(id("ab:2-0")), "never moves backwards");
        subscriber.receive(event("ab:3-0"), &mut last);
        assert_eq!(last, Some(id("ab:3-0")), "later events still delivered");
    }

    #[test]
    fn replayed_ids_are_skipped_and_new_epochs_pass() {
        let id = |s: &str| s.parse::<EventId>().expect("valid id");
        let last = id("ab:10-1");
        assert!(is_new(&id("ab:1-0"), None));
        assert!(!is_new(&id("ab:10-1"), Some(&last)));
        assert!(!is_new(&id("ab:9-5"), Some(&last)));
        assert!(is_new(&id("ab:10-2"), Some(&last)));
        assert!(is_new(&id("ab:11-0"), Some(&last)));
        assert!(is_new(&id("cd:1-0"), Some(&last)));
    }
}
