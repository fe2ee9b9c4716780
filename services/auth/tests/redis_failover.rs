//! Redis failovers under the store: a killed Cluster master and a killed
//! Sentinel master. Calls fail fast with Unavailable while no master serves,
//! then succeed again on the promoted replica, with no new store (no restart).

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wsauth_auth::store::redis::{RedisSettings, Topology};
use wsauth_auth::store::{IssueRequest, RedisStore, Store, StoreError};
use wsauth_auth::ws_token::WsToken;
use wsauth_tests::{SENTINEL_MASTER, TestRedisCluster, TestRedisSentinel};

const TIMEOUT: Duration = Duration::from_millis(500);

async fn store(topology: Topology, stop: &CancellationToken) -> Arc<dyn Store> {
    let settings = RedisSettings {
        topology,
        ..RedisSettings::single("redis://unused", TIMEOUT, 10_000)
    };
    Arc::new(
        RedisStore::connect(&settings, stop.clone(), &TaskTracker::new())
            .await
            .expect("redis store"),
    )
}

/// Issues and consumes a ws token for `user`.
async fn round_trip(store: &dyn Store, user: &str) -> Result<(), StoreError> {
    let token = WsToken::generate().expect("randomness");
    let issued = store
        .issue_ws_token(IssueRequest {
            hash: &token.hash,
            user_id: user,
            jti: None,
            iat: None,
            ttl: Duration::from_secs(60),
            leeway_s: 30,
        })
        .await?;
    assert!(issued.is_some(), "not revoked");
    let taken = store.take_ws_token(&token.hash, true).await?;
    assert!(taken.is_some(), "the token just issued is there");
    Ok(())
}

/// Runs round trips until one succeeds after `kill` ran (it only kills:
/// the calls go on during the failover): every failure must
/// be Unavailable and come back within the call deadline (plus scheduling
/// slack), and success must return within 30 s, all on the same store.
async fn survives(store: Arc<dyn Store>, user: &str, kill: impl FnOnce()) {
    round_trip(&*store, user).await.expect("works before");
    kill();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failures = 0;
    loop {
        let started = Instant::now();
        match round_trip(&*store, user).await {
            Ok(()) => break,
            Err(StoreError::Unavailable(_)) => failures += 1,
            Err(other) => panic!("a failover is Unavailable, not {other:?}"),
        }
        // Two calls per round trip, each under the deadline.
        assert!(
            started.elapsed() < TIMEOUT * 2 + Duration::from_secs(1),
            "a failing call took {:?}",
            started.elapsed()
        );
        assert!(
            Instant::now() < deadline,
            "no success within 30 s after the failover ({failures} failures)"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..20 {
        round_trip(&*store, user).await.expect("keeps working");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_cluster_master_fails_fast_then_its_replica_serves() {
    let mut cluster = TestRedisCluster::spawn();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let urls = cluster.urls().split(',').map(Into::into).collect();
    let store = store(Topology::Cluster(urls), &stop).await;
    // The issue step runs on the master of the user's cutoff key.
    let victim = cluster.master_of("wsauth:rusr:alice");
    survives(store, "alice", || cluster.kill(victim)).await;
    // The harness agrees that the replica took over.
    cluster.wait_healthy(Duration::from_secs(30));
    assert!(!cluster.master_ports().contains(&victim));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_sentinel_master_fails_fast_then_the_promoted_replica_serves() {
    let mut sentinel = TestRedisSentinel::spawn();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let topology = Topology::Sentinel {
        sentinels: sentinel.urls().split(',').map(Into::into).collect(),
        master: SENTINEL_MASTER.into(),
    };
    let store = store(topology, &stop).await;
    let mut old = 0;
    survives(store, "alice", || old = sentinel.kill_master()).await;
    sentinel.wait_promoted(old);
    assert_ne!(
        sentinel.master_port(),
        old,
        "the sentinels promoted the replica"
    );
}
