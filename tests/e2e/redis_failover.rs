//! A Redis master killed under a running stack (Cluster: the master of the
//! event stream's slot; Sentinel: the master), during a stream of
//! handshakes and publishes. Handshakes fail fast with 503 and Publish with
//! UNAVAILABLE while no master serves, then both succeed again with no
//! wsauth process restarted; a connected client gets every acknowledged
//! event once and in order, or a gap where one was lost.

use std::time::Duration;

use serde_json::Value;
use tokio::time::Instant;
use tonic::Code;
use wsauth_tests::{Frame, Jwt, ModeStack, RedisBackend, RedisMode, STEP, WsClient, warm_up};

/// The slot of the event stream (`wsauth:{events}` in auth's store).
const STREAM_KEY: &str = "wsauth:{events}";
/// A failing call may take auth's REDIS_TIMEOUT_MS (1 s) or the gateway's
/// AUTH_CALL_TIMEOUT_MS (2 s), plus scheduling slack on a busy machine.
const FAIL_FAST: Duration = Duration::from_millis(3500);
/// From the kill until publishes and handshakes succeed again.
const RECOVERY: Duration = Duration::from_secs(40);
/// Events published once Redis serves again.
const AFTER: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster() {
    a_killed_master_fails_fast_then_serves_with_no_duplicate_and_no_silent_loss(RedisMode::Cluster)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel() {
    a_killed_master_fails_fast_then_serves_with_no_duplicate_and_no_silent_loss(
        RedisMode::Sentinel,
    )
    .await;
}

/// A user whose handshake needs the master about to be killed: in Cluster
/// mode ws-token issue checks the user's revocation cutoff
/// (`wsauth:rusr:<user>`), so pick one in the victim's slots.
fn user_on(backend: &mut RedisBackend, victim: u16) -> String {
    match backend.cluster() {
        Some(cluster) => (0..1000)
            .map(|i| format!("hs-{i}"))
            .find(|user| cluster.master_of(&format!("wsauth:rusr:{user}")) == victim)
            .expect("some user's cutoff key lives on every master"),
        None => "hs-0".into(),
    }
}

/// Kills the master the stream lives on; its port.
fn kill_stream_master(backend: &mut RedisBackend) -> u16 {
    if let Some(cluster) = backend.cluster() {
        let victim = cluster.master_of(STREAM_KEY);
        cluster.kill(victim);
        victim
    } else {
        backend
            .sentinel()
            .expect("Cluster or Sentinel")
            .kill_master()
    }
}

/// The stream's master before the kill.
fn stream_master(backend: &mut RedisBackend) -> u16 {
    if let Some(cluster) = backend.cluster() {
        cluster.master_of(STREAM_KEY)
    } else {
        backend
            .sentinel()
            .expect("Cluster or Sentinel")
            .master_port()
    }
}

/// Waits (blocking) until the topology has a new master, not `victim`.
fn wait_failed_over(backend: &mut RedisBackend, victim: u16) {
    if let Some(cluster) = backend.cluster() {
        cluster.wait_healthy(Duration::from_secs(30));
        assert!(
            !cluster.master_ports().contains(&victim),
            "a replica took over"
        );
    } else {
        backend
            .sentinel()
            .expect("Cluster or Sentinel")
            .wait_promoted(victim);
    }
}

async fn a_killed_master_fails_fast_then_serves_with_no_duplicate_and_no_silent_loss(
    mode: RedisMode,
) {
    let mut stack = ModeStack::spawn(mode, 1, 1).await;
    let mut alice = WsClient::authenticated(stack.gateway(), "alice").await;
    warm_up(stack.auth(), &mut [&mut alice]).await;
    let victim = stream_master(&mut stack.backend);
    let hs_user = user_on(&mut stack.backend, victim);
    // alice reads throughout (so the gateway never sees a stalled client)
    // until the last event published after the failover.
    let last = format!("after-{}", AFTER - 1);
    let reader = tokio::spawn(async move {
        let mut frames: Vec<Value> = Vec::new();
        loop {
            match alice.next_frame(Duration::from_secs(90)).await {
                Some(Frame::Json(frame)) => {
                    let done = frame["data"] == last.as_str();
                    frames.push(frame);
                    if done {
                        return (alice, frames);
                    }
                }
                other => panic!("alice got {other:?} after {frames:?}"),
            }
        }
    });

    // Events right before the kill: acknowledged, maybe not yet replicated.
    let mut acked: Vec<(String, String)> = Vec::new();
    for i in 0..5 {
        let data = format!("pre-{i}");
        acked.push((stack.auth().publish(&data, None).await, data));
    }
    tokio::task::block_in_place(|| kill_stream_master(&mut stack.backend));
    let killed = Instant::now();

    // Publishes and handshakes, one after the other, until both have
    // succeeded 5 times in a row after at least one failed publish.
    let (mut publish_failures, mut handshake_503s, mut streak) = (0, 0, 0);
    let jwt = Jwt::for_user(&hs_user).sign();
    for n in 0.. {
        assert!(
            killed.elapsed() < RECOVERY,
            "{mode:?}: not serving again {RECOVERY:?} after the kill \
             ({publish_failures} failed publishes, {handshake_503s} handshake 503s)"
        );
        let data = format!("fo-{n:04}");
        let started = Instant::now();
        let published = match stack.auth().try_publish(&data, None).await {
            Ok(id) => {
                acked.push((id, data));
                true
            }
            Err(status) => {
                assert_eq!(status.code(), Code::Unavailable, "{mode:?}: {status:?}");
                assert!(
                    started.elapsed() < FAIL_FAST,
                    "{mode:?}: a failing Publish took {:?}",
                    started.elapsed()
                );
                publish_failures += 1;
                false
            }
        };
        let started = Instant::now();
        let response = stack.gateway().token_ws(Some(&jwt)).await;
        let handshake = match response.status {
            200 => true,
            503 => {
                assert!(
                    started.elapsed() < FAIL_FAST,
                    "{mode:?}: a 503 took {:?}",
                    started.elapsed()
                );
                handshake_503s += 1;
                false
            }
            other => panic!("{mode:?}: /token/ws answered {other}: {}", response.body),
        };
        streak = if published && handshake {
            streak + 1
        } else {
            0
        };
        if publish_failures > 0 && streak >= 5 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        handshake_503s > 0,
        "{mode:?}: a handshake needing the killed master answered 503 meanwhile"
    );
    let recovered = killed.elapsed();
    tokio::task::block_in_place(|| wait_failed_over(&mut stack.backend, victim));

    // The same processes serve whole handshakes and events again.
    let mut late = WsClient::authenticated(stack.gateway(), &hs_user).await;
    for i in 0..AFTER {
        let data = format!("after-{i}");
        acked.push((stack.auth().publish(&data, None).await, data));
    }
    let (_alice, frames) = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .expect("alice receives the events published after the failover")
        .expect("alice's reader");
    // The gateway may still be delivering events of the failover when `late`
    // joins; from the first event published after it joined, it gets all.
    let after = loop {
        let event = late.recv_type("broadcast", STEP).await;
        if event["data"]
            .as_str()
            .is_some_and(|d| d.starts_with("after-"))
        {
            break event;
        }
    };
    assert_eq!(
        after["data"], "after-0",
        "{mode:?}: a socket opened after the failover"
    );

    check_no_duplicate_and_no_silent_loss(mode, &acked, &frames);
    eprintln!(
        "{mode:?}: serving again {recovered:?} after the kill; {publish_failures} failed \
         publishes, {handshake_503s} handshake 503s, {} acknowledged, {} received, {} gaps",
        acked.len(),
        frames.iter().filter(|f| f["type"] == "broadcast").count(),
        frames.iter().filter(|f| f["type"] == "gap").count(),
    );
}

/// Every frame alice got is a broadcast or a gap; no event twice; the
/// acknowledged events arrive in publish order; an acknowledged event
/// missing is preceded (somewhere before the next one that arrived) by a gap.
fn check_no_duplicate_and_no_silent_loss(
    mode: RedisMode,
    acked: &[(String, String)],
    frames: &[Value],
) {
    let mut seen_data = std::collections::HashSet::new();
    let mut next = 0; // index in `acked` of the next expected event
    let mut gap_pending = false;
    for frame in frames {
        match frame["type"].as_str() {
            Some("gap") => gap_pending = true,
            Some("broadcast") => {
                let data = frame["data"].as_str().unwrap_or_default();
                assert!(
                    seen_data.insert(data.to_owned()),
                    "{mode:?}: {data} twice in {frames:?}"
                );
                if data.starts_with("warmup-") {
                    continue;
                }
                // An unacknowledged publish may still have been applied.
                let Some(at) = acked[next..].iter().position(|(_, d)| d == data) else {
                    assert!(
                        !acked.iter().any(|(_, d)| d == data),
                        "{mode:?}: {data} out of order in {frames:?}"
                    );
                    continue;
                };
                let (id, _) = &acked[next + at];
                assert_eq!(
                    frame["id"],
                    id.as_str(),
                    "{mode:?}: the id Publish returned"
                );
                assert!(
                    at == 0 || gap_pending,
                    "{mode:?}: {:?} acknowledged but lost without a gap before {data}: {frames:?}",
                    &acked[next..next + at]
                );
                next += at + 1;
                gap_pending = false;
            }
            _ => panic!("{mode:?}: unexpected frame {frame} in {frames:?}"),
        }
    }
    assert_eq!(next, acked.len(), "{mode:?}: the last event arrived");
}
