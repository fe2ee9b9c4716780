//! Micro-benchmarks of the per-frame work: parsing a client's jwt frame,
//! serialising an event once, and fanning it out to a hub of connections.

use std::future::poll_fn;
use std::hint::black_box;
use std::sync::Arc;

use futures::FutureExt as _;

use criterion::{Criterion, criterion_group, criterion_main};
use wsauth_gateway::event::{Event, EventAction};
use wsauth_gateway::hub::Hub;
use wsauth_gateway::message::{self, ClientFrame};
use wsauth_gateway::metrics::Metrics;

fn parsing(c: &mut Criterion) {
    let jwt = format!("eyJhbGciOiJIUzI1NiJ9.{}.sig", "a".repeat(300));
    let first = format!(r#"{{"type":"jwt","token":"{jwt}","since":"3fa2:1712345678901-4"}}"#);
    c.bench_function("parse_first_frame", |b| {
        b.iter(|| ClientFrame::parse_first(black_box(&first)))
    });
    c.bench_function("classify_echo_frame", |b| {
        b.iter(|| ClientFrame::parse_later(black_box("hello, this is an ordinary chat line")))
    });
}

fn serialising(c: &mut Criterion) {
    let data = "x".repeat(256);
    c.bench_function("serialise_broadcast_256b", |b| {
        b.iter(|| message::broadcast(black_box("3fa2:1712345678901-4"), black_box(&data)))
    });
}

fn fan_out(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime builds");
    let _guard = rt.enter();
    let hub = Hub::new(Metrics::default());
    let mut keep = Vec::new();
    for i in 0..10_000 {
        let user = format!("user{i}");
        let mark = hub.disconnect_mark(&user);
        let registration = hub
            .register(hub.next_conn_id(), &Arc::from(user.as_str()), 1024, mark)
            .expect("the hub is open");
        keep.push(registration);
    }
    let event = Event {
        id: "3fa2:1-0".parse().expect("valid id"),
        id_text: "3fa2:1-0".into(),
        action: EventAction::Broadcast {
            data: "x".repeat(128),
        },
    };
    c.bench_function("deliver_broadcast_to_10k", |b| {
        b.iter(|| {
            hub.deliver(black_box(&event));
            // Drain so queues never fill (a full queue would kick, not deliver).
            for registration in &keep {
                let slot = registration.slot();
                while poll_fn(|cx| slot.poll_signal(cx)).now_or_never().is_some() {}
            }
        })
    });
}

criterion_group!(benches, parsing, serialising, fan_out);
criterion_main!(benches);
