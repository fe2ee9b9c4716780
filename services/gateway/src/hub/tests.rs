//! The hub's unit tests, and the helpers other modules' tests share.

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
    hub.register(hub.next_conn_id(), &Arc::from(user), capacity, mark)
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
            let here: usize = shard
                .users
                .values()
                .map(|members| members.iter().len())
                .sum();
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
