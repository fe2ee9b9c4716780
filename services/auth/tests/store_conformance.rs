//! One conformance suite, run against both stores: the embedded `MemoryStore`
//! and `RedisStore` on a private redis-server.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wsauth_auth::clock::now_ms;
use wsauth_auth::event::{EventId, EventKind, NewEvent, StreamSeq};
use wsauth_auth::store::{IssueRequest, Live, MemoryStore, RedisStore, RevocationState, Store};
use wsauth_auth::ws_token::{TokenRecord, WsToken};
use wsauth_tests::TestRedis;

const RETENTION: u64 = 10_000;

/// A store under test and what keeps it alive.
struct Fixture {
    store: Arc<dyn Store>,
    _redis: Option<TestRedis>,
    stop: CancellationToken,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn memory() -> Fixture {
    Fixture {
        store: Arc::new(MemoryStore::new(RETENTION as usize)),
        _redis: None,
        stop: CancellationToken::new(),
    }
}

async fn redis() -> Fixture {
    let redis = TestRedis::spawn();
    let stop = CancellationToken::new();
    let store = RedisStore::new(
        &redis.url(),
        Duration::from_secs(2),
        RETENTION,
        stop.clone(),
        &TaskTracker::new(),
    )
    .await
    .expect("redis store");
    Fixture {
        store: Arc::new(store),
        _redis: Some(redis),
        stop,
    }
}

/// Issues a ws token for `user` from a JWT without jti or iat.
async fn issue(store: &dyn Store, user: &str, ttl: Duration) -> (WsToken, TokenRecord) {
    let token = WsToken::generate().expect("randomness");
    let record = store
        .issue_ws_token(request(&token, user, None, None, ttl))
        .await
        .expect("issue")
        .expect("not revoked");
    (token, record)
}

fn request<'a>(
    token: &'a WsToken,
    user: &'a str,
    jti: Option<&'a str>,
    iat: Option<u64>,
    ttl: Duration,
) -> IssueRequest<'a> {
    IssueRequest {
        hash: &token.hash,
        user_id: user,
        jti,
        iat,
        ttl,
        leeway_s: 30,
    }
}

const MAX_SEQ: StreamSeq = StreamSeq {
    ms: u64::MAX,
    seq: u64::MAX,
};

fn broadcast(data: &str) -> NewEvent {
    NewEvent {
        kind: EventKind::Broadcast,
        user_id: None,
        data: data.into(),
    }
}

mod suite {
    use super::*;

    pub async fn a_token_is_taken_once_when_consumed(store: &dyn Store) {
        let before = now_ms();
        let (token, rec) = issue(store, "alice", Duration::from_secs(60)).await;
        // Stamped by the store's clock (the same host here).
        assert!(rec.issued_ms + 1000 >= before && rec.issued_ms <= now_ms() + 1000);
        assert_eq!(rec.expires_ms, rec.issued_ms + 60_000);
        assert_eq!(rec.user_id, "alice");
        let taken = store.take_ws_token(&token.hash, true).await.expect("take");
        assert_eq!(taken.expect("present").record, rec);
        assert!(
            store
                .take_ws_token(&token.hash, true)
                .await
                .expect("take")
                .is_none()
        );
    }

    pub async fn a_token_stays_when_not_consumed(store: &dyn Store) {
        let (token, rec) = issue(store, "bob smith", Duration::from_secs(60)).await;
        for _ in 0..3 {
            let taken = store.take_ws_token(&token.hash, false).await.expect("take");
            assert_eq!(taken.expect("present").record, rec);
        }
    }

    pub async fn racing_consumers_get_one_token_once(store: Arc<dyn Store>) {
        let (token, _) = issue(&*store, "alice", Duration::from_secs(60)).await;
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let store = store.clone();
                let hash = token.hash;
                tokio::spawn(async move { store.take_ws_token(&hash, true).await })
            })
            .collect();
        let mut wins = 0;
        for task in tasks {
            if task.await.expect("task").expect("take").is_some() {
                wins += 1;
            }
        }
        assert_eq!(wins, 1);
    }

    pub async fn tokens_expire_in_the_store(store: &dyn Store) {
        let (token, _) = issue(store, "alice", Duration::from_millis(200)).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        while store
            .take_ws_token(&token.hash, false)
            .await
            .expect("take")
            .is_some()
        {
            assert!(
                Instant::now() < deadline,
                "token still present after its TTL"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn revocations_are_read_together(store: &dyn Store) {
        assert_eq!(
            store.revocation(Some("j1"), "alice").await.expect("read"),
            RevocationState::default()
        );
        store.revoke_jti("j1", None).await.expect("revoke");
        let cutoff = store.revoke_user("alice").await.expect("cutoff");
        assert!(cutoff.abs_diff(now_ms()) < 5_000, "store time {cutoff}");
        let state = store.revocation(Some("j1"), "alice").await.expect("read");
        assert_eq!(
            state,
            RevocationState {
                jti_revoked: true,
                user_cutoff_ms: Some(cutoff)
            }
        );
        let state = store.revocation(None, "alice").await.expect("read");
        assert_eq!(
            state,
            RevocationState {
                jti_revoked: false,
                user_cutoff_ms: Some(cutoff)
            }
        );
        // A later revocation never lowers the cutoff.
        let again = store.revoke_user("alice").await.expect("cutoff");
        assert!(again >= cutoff);
        let state = store.revocation(Some("j2"), "bob").await.expect("read");
        assert_eq!(state, RevocationState::default());
    }

    pub async fn jti_revocations_expire(store: &dyn Store) {
        store
            .revoke_jti("short", Some(Duration::from_millis(200)))
            .await
            .expect("revoke");
        assert!(
            store
                .revocation(Some("short"), "u")
                .await
                .expect("read")
                .jti_revoked
        );
        let deadline = Instant::now() + Duration::from_secs(5);
        while store
            .revocation(Some("short"), "u")
            .await
            .expect("read")
            .jti_revoked
        {
            assert!(Instant::now() < deadline, "jti revocation outlived its TTL");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn a_taken_token_carries_its_users_cutoff(store: &dyn Store) {
        let (token, rec) = issue(store, "carol", Duration::from_secs(60)).await;
        let cutoff = store.revoke_user("carol").await.expect("cutoff");
        // Revoked after issue: the same clock stamped both, so the token is at or before.
        assert!(rec.issued_ms <= cutoff);
        let taken = store
            .take_ws_token(&token.hash, true)
            .await
            .expect("take")
            .expect("present");
        assert_eq!(taken.user_cutoff_ms, Some(cutoff));
    }

    pub async fn issue_refuses_revoked_jwts_in_the_same_step(store: &dyn Store) {
        let ttl = Duration::from_secs(60);
        let token = WsToken::generate().expect("randomness");
        store.revoke_jti("gone", None).await.expect("revoke");
        let jti_revoked = store
            .issue_ws_token(request(&token, "dave", Some("gone"), None, ttl))
            .await
            .expect("issue");
        assert!(jti_revoked.is_none(), "a revoked jti gets no token");
        assert!(
            store
                .take_ws_token(&token.hash, false)
                .await
                .expect("take")
                .is_none(),
            "nothing was stored"
        );

        let cutoff = store.revoke_user("dave").await.expect("cutoff");
        let cutoff_s = cutoff / 1000;
        for (iat, revoked) in [
            (None, true),
            (Some(cutoff_s - 10), true),
            (Some(cutoff_s), true),
            (Some(cutoff_s + 1), false),
            // Beyond the 30 s leeway into the future: not believed.
            (Some(cutoff_s + 3600), true),
        ] {
            let token = WsToken::generate().expect("randomness");
            let issued = store
                .issue_ws_token(request(&token, "dave", Some("other"), iat, ttl))
                .await
                .expect("issue");
            assert_eq!(issued.is_none(), revoked, "iat {iat:?}, cutoff {cutoff}");
            if let Some(record) = issued {
                assert!(record.issued_ms >= cutoff);
            }
        }
    }

    pub async fn reads_stop_at_the_byte_budget(store: &dyn Store) {
        let big = "x".repeat(1000);
        let mut ids = Vec::new();
        for _ in 0..5 {
            ids.push(store.append(broadcast(&big)).await.expect("append").id);
        }
        let zero = EventId {
            epoch: ids[0].epoch.clone(),
            seq: StreamSeq::default(),
        };
        let chunk = store.read_after(&zero, 100, 1500).await.expect("read");
        assert_eq!(chunk.events.len(), 2, "stops once 1500 bytes are reached");
        assert!(!chunk.complete);
        // At least one event, however small the budget.
        let chunk = store.read_after(&zero, 100, 1).await.expect("read");
        assert_eq!(chunk.events.len(), 1);
        let chunk = store.read_after(&zero, 100, 1 << 20).await.expect("read");
        assert_eq!(chunk.events.len(), 5);
        assert!(chunk.complete);
        assert_eq!(chunk.last, ids[4].seq);
        let chunk = store.read_after(&ids[4], 100, 1 << 20).await.expect("read");
        assert!(chunk.events.is_empty() && chunk.complete);
    }

    pub async fn an_id_ahead_of_the_stream_reads_nothing(store: &dyn Store) {
        let last = store.append(broadcast("only")).await.expect("append").id;
        let ahead = EventId {
            epoch: last.epoch.clone(),
            seq: MAX_SEQ,
        };
        let chunk = store.read_after(&ahead, 100, 1 << 20).await.expect("read");
        assert!(chunk.events.is_empty());
        assert_eq!(chunk.last, last.seq);
        assert!(chunk.last < ahead.seq);
    }

    pub async fn events_read_back_in_order(store: &dyn Store) {
        let mut ids = Vec::new();
        for i in 0..5 {
            ids.push(
                store
                    .append(broadcast(&format!("e{i}")))
                    .await
                    .expect("append")
                    .id,
            );
        }
        let direct = NewEvent {
            kind: EventKind::Direct,
            user_id: Some("u 1".into()),
            data: "d".into(),
        };
        let appended = store.append(direct.clone()).await.expect("append");
        assert_eq!(appended.user_id.as_deref(), Some("u 1"));
        assert!(
            ids.windows(2)
                .all(|w| w[0].seq < w[1].seq && w[0].epoch == w[1].epoch)
        );
        let chunk = store.read_after(&ids[1], 100, 1 << 20).await.expect("read");
        assert_eq!(chunk.epoch.as_deref(), Some(&*ids[0].epoch));
        let data: Vec<_> = chunk.events.iter().map(|e| e.data.as_str()).collect();
        assert_eq!(data, ["e2", "e3", "e4", "d"]);
        assert_eq!(chunk.events[3].kind, EventKind::Direct);
        assert_eq!(chunk.events[3].user_id.as_deref(), Some("u 1"));
        let chunk = store.read_after(&ids[1], 2, 1 << 20).await.expect("read");
        assert_eq!(chunk.events.len(), 2);
        let first = EventId {
            epoch: ids[0].epoch.clone(),
            seq: StreamSeq::default(),
        };
        assert_eq!(
            store
                .read_after(&first, 100, 1 << 20)
                .await
                .expect("read")
                .events
                .len(),
            6
        );
        assert!(chunk.first_kept.is_none());
    }

    pub async fn live_events_arrive_in_order(store: &dyn Store) {
        let mut live = store.live().expect("the fan-out is ready");
        assert!(*store.live_ready().borrow());
        let mut sent = Vec::new();
        for i in 0..20 {
            sent.push(
                store
                    .append(broadcast(&format!("l{i}")))
                    .await
                    .expect("append")
                    .id,
            );
        }
        for id in sent {
            let event = timeout(Duration::from_secs(5), live.recv())
                .await
                .expect("live event within 5 s")
                .expect("fan-out open");
            let Live::Event(event) = event else {
                panic!("no reset expected: {event:?}");
            };
            assert_eq!(event.id, id);
        }
    }

    pub async fn old_events_are_trimmed_and_reported(store: Arc<dyn Store>) {
        let first = store.append(broadcast("first")).await.expect("append").id;
        // Redis trims `MAXLEN ~` by whole nodes (100 entries): go well past retention.
        let total = RETENTION as usize + 400;
        let mut appended = 1;
        while appended < total {
            let batch: Vec<_> = (0..200)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move { store.append(broadcast("x")).await })
                })
                .collect();
            for task in batch {
                task.await.expect("task").expect("append");
            }
            appended += 200;
        }
        let chunk = store.read_after(&first, 10, 1 << 20).await.expect("read");
        let first_kept = chunk.first_kept.expect("something was trimmed");
        assert!(first.seq < first_kept);
        let retained = {
            let zero = EventId {
                epoch: first.epoch.clone(),
                seq: StreamSeq::default(),
            };
            let mut count = 0;
            let mut cursor = zero;
            loop {
                let chunk = store
                    .read_after(&cursor, 1000, 16 << 20)
                    .await
                    .expect("read");
                let Some(last) = chunk.events.last() else {
                    break;
                };
                cursor = last.id.clone();
                count += chunk.events.len();
            }
            count
        };
        assert!(retained >= RETENTION as usize, "only {retained} retained");
    }
}

macro_rules! conformance {
    ($module:ident, $make:path) => {
        mod $module {
            use super::*;

            #[tokio::test]
            async fn a_token_is_taken_once_when_consumed() {
                suite::a_token_is_taken_once_when_consumed(&*$make().await.store).await;
            }
            #[tokio::test]
            async fn a_token_stays_when_not_consumed() {
                suite::a_token_stays_when_not_consumed(&*$make().await.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn racing_consumers_get_one_token_once() {
                let fx = $make().await;
                suite::racing_consumers_get_one_token_once(fx.store.clone()).await;
            }
            #[tokio::test]
            async fn tokens_expire_in_the_store() {
                suite::tokens_expire_in_the_store(&*$make().await.store).await;
            }
            #[tokio::test]
            async fn revocations_are_read_together() {
                suite::revocations_are_read_together(&*$make().await.store).await;
            }
            #[tokio::test]
            async fn jti_revocations_expire() {
                suite::jti_revocations_expire(&*$make().await.store).await;
            }
            #[tokio::test]
            async fn a_taken_token_carries_its_users_cutoff() {
                suite::a_taken_token_carries_its_users_cutoff(&*$make().await.store).await;
            }
            #[tokio::test]
            async fn issue_refuses_revoked_jwts_in_the_same_step() {
                suite::issue_refuses_revoked_jwts_in_the_same_step(&*$make().await.store).await;
            }
            #[tokio::test]
            async fn reads_stop_at_the_byte_budget() {
                suite::reads_stop_at_the_byte_budget(&*$make().await.store).await;
            }
            #[tokio::test]
            async fn an_id_ahead_of_the_stream_reads_nothing() {
                suite::an_id_ahead_of_the_stream_reads_nothing(&*$make().await.store).await;
            }
            #[tokio::test]
            async fn events_read_back_in_order() {
                suite::events_read_back_in_order(&*$make().await.store).await;
            }
            #[tokio::test]
            async fn live_events_arrive_in_order() {
                suite::live_events_arrive_in_order(&*$make().await.store).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn old_events_are_trimmed_and_reported() {
                let fx = $make().await;
                suite::old_events_are_trimmed_and_reported(fx.store.clone()).await;
            }
        }
    };
}

conformance!(memory_store, memory);
conformance!(redis_store, redis);

/// The whole suite, test after test, on one Redis Cluster or Sentinel
/// deployment (one per test would start dozens of servers at once), with
/// FLUSHALL and a fresh store before each test.
mod topologies {
    use wsauth_auth::store::redis::{RedisSettings, Topology};
    use wsauth_tests::{SENTINEL_MASTER, TestRedisCluster, TestRedisSentinel};

    use super::*;

    async fn whole_suite(topology: Topology, flush: impl Fn()) {
        let settings = RedisSettings {
            topology,
            ..RedisSettings::single("redis://unused", Duration::from_secs(2), RETENTION)
        };
        let stop = CancellationToken::new();
        let _stop_on_drop = stop.clone().drop_guard();
        let fresh = || async {
            flush();
            let store = RedisStore::connect(&settings, stop.clone(), &TaskTracker::new())
                .await
                .expect("redis store");
            Arc::new(store) as Arc<dyn Store>
        };
        suite::a_token_is_taken_once_when_consumed(&*fresh().await).await;
        suite::a_token_stays_when_not_consumed(&*fresh().await).await;
        suite::racing_consumers_get_one_token_once(fresh().await).await;
        suite::tokens_expire_in_the_store(&*fresh().await).await;
        suite::revocations_are_read_together(&*fresh().await).await;
        suite::jti_revocations_expire(&*fresh().await).await;
        suite::a_taken_token_carries_its_users_cutoff(&*fresh().await).await;
        suite::issue_refuses_revoked_jwts_in_the_same_step(&*fresh().await).await;
        suite::reads_stop_at_the_byte_budget(&*fresh().await).await;
        suite::an_id_ahead_of_the_stream_reads_nothing(&*fresh().await).await;
        suite::events_read_back_in_order(&*fresh().await).await;
        suite::live_events_arrive_in_order(&*fresh().await).await;
        suite::old_events_are_trimmed_and_reported(fresh().await).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_redis_cluster_store_passes_the_whole_suite() {
        let cluster = TestRedisCluster::spawn();
        let urls = cluster.urls().split(',').map(Into::into).collect();
        whole_suite(Topology::Cluster(urls), || cluster.flushall()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sentinel_store_passes_the_whole_suite() {
        let sentinel = TestRedisSentinel::spawn();
        let sentinels = sentinel.urls().split(',').map(Into::into).collect();
        let topology = Topology::Sentinel {
            sentinels,
            master: SENTINEL_MASTER.into(),
        };
        whole_suite(topology, || sentinel.flushall()).await;
    }
}
