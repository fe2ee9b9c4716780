//! Redis misbehaving under a running auth: not there at startup, frozen,
//! holding the wrong data, clocks that disagree, RevokeUser racing IssueWsToken.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use wsauth_auth::clock::now_ms;
use wsauth_auth::error::AuthError;
use wsauth_auth::event::{EventKind, NewEvent};
use wsauth_auth::events::Events;
use wsauth_auth::store::{RedisStore, StoreError};
use wsauth_shared::proto::{
    HistoryRequest, IssueWsTokenRequest, PublishRequest, RevokeUserRequest, SubscribeRequest,
    ValidateTokenRequest, VerifyJwtRequest,
};
use wsauth_tests::TestRedis;

fn broadcast(data: &str) -> NewEvent {
    NewEvent {
        kind: EventKind::Broadcast,
        user_id: None,
        data: data.into(),
    }
}

async fn redis_conn(redis: &TestRedis) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect to the test redis")
}

#[tokio::test]
async fn a_reader_starting_while_redis_is_down_takes_no_subscriber_until_it_can_deliver() {
    let mut redis = TestRedis::spawn();
    redis.kill();
    let stop = CancellationToken::new();
    let tasks = TaskTracker::new();
    let store = RedisStore::new(
        &redis.url(),
        Duration::from_millis(200),
        10_000,
        stop.clone(),
        &tasks,
    )
    .await
    .expect("auth starts while redis is down");
    let events = Events::new(Arc::new(store));
    assert!(matches!(
        events.subscribe(None).await.err(),
        Some(AuthError::Store(StoreError::Unavailable(_)))
    ));

    redis.restart();
    // Publish all the while: with a subscriber taken on before the reader
    // had a position, these (and the ones below) were lost.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut subscription = loop {
        let _ = events.publish(broadcast("meanwhile")).await;
        match events.subscribe(None).await {
            Ok(subscription) => break subscription,
            Err(AuthError::Store(StoreError::Unavailable(_))) => {}
            Err(other) => panic!("unexpected {other:?}"),
        }
        assert!(Instant::now() < deadline, "the reader never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(
            events
                .publish(broadcast(&format!("after-{i}")))
                .await
                .expect("publish")
                .id,
        );
    }
    let mut got = Vec::new();
    while got.len() < sent.len() {
        let event = timeout(Duration::from_secs(5), subscription.next())
            .await
            .expect("every event arrives")
            .expect("no error")
            .expect("open");
        if event.data.starts_with("after-") {
            got.push(event.id.clone());
        }
    }
    assert_eq!(got, sent);
    stop.cancel();
    tasks.close();
    timeout(Duration::from_secs(5), tasks.wait())
        .await
        .expect("the reader stops on shutdown");
}

async fn broadcast_health(auth: &TestAuth) -> ServingStatus {
    let mut health = HealthClient::new(auth.channel().await);
    let response = call(health.check(HealthCheckRequest {
        service: "wsauth.v1.BroadcastService".into(),
    }))
    .await
    .expect("health check");
    response.status()
}

#[tokio::test]
async fn broadcast_health_and_subscribe_follow_the_stream_reader() {
    let mut redis = TestRedis::spawn();
    let mut config = config(Some(redis.url()));
    config.redis_timeout_ms = 300;
    let auth = TestAuth::spawn(config).await;
    assert_eq!(broadcast_health(&auth).await, ServingStatus::Serving);

    redis.kill();
    wait_until(
        Duration::from_secs(10),
        "BroadcastService NOT_SERVING",
        || async { broadcast_health(&auth).await == ServingStatus::NotServing },
    )
    .await;
    let mut client = auth.broadcast_client().await;
    let subscribe = || SubscribeRequest {
        gateway_id: "gw".into(),
        after_id: None,
        from_oldest: false,
    };
    let mut request = req(subscribe(), Some(INTERNAL_KEY));
    request.metadata_mut().remove("grpc-timeout");
    assert_code(call(client.subscribe(request)).await, Code::Unavailable);

    redis.restart();
    wait_until(
        Duration::from_secs(10),
        "BroadcastService SERVING again",
        || async { broadcast_health(&auth).await == ServingStatus::Serving },
    )
    .await;
    let mut request = req(subscribe(), Some(INTERNAL_KEY));
    request.metadata_mut().remove("grpc-timeout");
    call(client.subscribe(request))
        .await
        .expect("subscribe once the reader is back");
}

/// SIGCONTs the frozen redis-server even when an assertion fails.
struct Frozen(u32);

impl Frozen {
    fn new(pid: u32) -> Self {
        signal("-STOP", pid);
        Self(pid)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        signal("-CONT", self.0);
    }
}

fn signal(sig: &str, pid: u32) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill {sig} {pid}");
}

#[tokio::test]
async fn a_frozen_redis_gives_unavailable_within_the_deadline() {
    let redis = TestRedis::spawn();
    let mut config = config(Some(redis.url()));
    config.redis_timeout_ms = 300;
    let auth = TestAuth::spawn(config).await;
    let mut auth_client = auth.auth_client().await;
    let mut broadcast_client = auth.broadcast_client().await;
    let jwt = Jwt::for_user("frozen").sign();
    let token =
        call(auth_client.issue_ws_token(req(IssueWsTokenRequest { jwt: jwt.clone() }, None)))
            .await
            .expect("issue while redis runs")
            .token;
    let first = call(broadcast_client.publish(req(
        PublishRequest {
            data: "first".into(),
            user_id: None,
        },
        Some(ADMIN_KEY),
    )))
    .await
    .expect("publish while redis runs")
    .id;

    let frozen = Frozen::new(redis.pid().expect("running"));
    // The deadline is 300 ms per Redis call; allow for scheduling, not for a hang.
    let within = Duration::from_millis(1500);
    let started = Instant::now();
    assert_code(
        call(auth_client.issue_ws_token(req(IssueWsTokenRequest { jwt: jwt.clone() }, None))).await,
        Code::Unavailable,
    );
    assert!(
        started.elapsed() < within,
        "issue took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert_code(
        call(auth_client.validate_token(req(
            ValidateTokenRequest {
                token: token.clone(),
            },
            Some(INTERNAL_KEY),
        )))
        .await,
        Code::Unavailable,
    );
    assert!(
        started.elapsed() < within,
        "validate took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert_code(
        call(auth_client.verify_jwt(req(
            VerifyJwtRequest { jwt: jwt.clone() },
            Some(INTERNAL_KEY),
        )))
        .await,
        Code::Unavailable,
    );
    assert!(
        started.elapsed() < within,
        "verify took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert_code(
        call(broadcast_client.publish(req(
            PublishRequest {
                data: "frozen".into(),
                user_id: None,
            },
            Some(ADMIN_KEY),
        )))
        .await,
        Code::Unavailable,
    );
    assert!(
        started.elapsed() < within,
        "publish took {:?}",
        started.elapsed()
    );
    let started = Instant::now();
    assert_code(
        call(broadcast_client.history(req(
            HistoryRequest {
                after_id: first,
                user_id: None,
                limit: None,
                from_oldest: false,
                resumable: false,
            },
            Some(INTERNAL_KEY),
        )))
        .await,
        Code::Unavailable,
    );
    assert!(
        started.elapsed() < within,
        "history took {:?}",
        started.elapsed()
    );

    drop(frozen);
    // Thawed, the unused token still works: nothing was lost or consumed.
    wait_until(Duration::from_secs(10), "auth to reach redis again", || {
        let mut client = auth_client.clone();
        let token = token.clone();
        async move {
            call(client.validate_token(req(ValidateTokenRequest { token }, Some(INTERNAL_KEY))))
                .await
                .is_ok()
        }
    })
    .await;
}

#[tokio::test]
async fn a_redis_command_error_is_internal_not_unavailable() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(config(Some(redis.url()))).await;
    let mut conn = redis_conn(&redis).await;
    // Someone else's data under our key: WRONGTYPE, which retrying will not fix.
    redis::cmd("LPUSH")
        .arg("wsauth:rusr:mallory")
        .arg("x")
        .query_async::<()>(&mut conn)
        .await
        .expect("lpush");
    let mut client = auth.auth_client().await;
    let status = assert_code(
        call(client.revoke_user(req(
            RevokeUserRequest {
                user_id: "mallory".into(),
            },
            Some(ADMIN_KEY),
        )))
        .await,
        Code::Internal,
    );
    assert!(
        !status.message().contains("WRONGTYPE"),
        "internals stay in the log"
    );
}

#[tokio::test]
async fn revoke_user_never_lowers_a_cutoff_set_by_a_faster_clock() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(config(Some(redis.url()))).await;
    let mut conn = redis_conn(&redis).await;
    // A cutoff set one hour ahead (as by a replica whose clock runs fast).
    let ahead = now_ms() + 3_600_000;
    redis::cmd("SET")
        .arg("wsauth:rusr:zoe")
        .arg(ahead)
        .query_async::<()>(&mut conn)
        .await
        .expect("set");
    let mut client = auth.auth_client().await;
    call(client.revoke_user(req(
        RevokeUserRequest {
            user_id: "zoe".into(),
        },
        Some(ADMIN_KEY),
    )))
    .await
    .expect("revoke");
    let cutoff: u64 = redis::cmd("GET")
        .arg("wsauth:rusr:zoe")
        .query_async(&mut conn)
        .await
        .expect("get");
    assert_eq!(cutoff, ahead);
}

#[tokio::test]
async fn a_jwt_with_iat_in_the_future_does_not_survive_revoke_user() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(config(Some(redis.url()))).await;
    let mut client = auth.auth_client().await;
    let future = Jwt::for_user("yan")
        .issued_in(3600)
        .expires_in(7200)
        .jti("future-iat")
        .sign();
    call(client.verify_jwt(req(
        VerifyJwtRequest {
            jwt: future.clone(),
        },
        Some(INTERNAL_KEY),
    )))
    .await
    .expect("accepted while the user is not revoked");
    call(client.revoke_user(req(
        RevokeUserRequest {
            user_id: "yan".into(),
        },
        Some(ADMIN_KEY),
    )))
    .await
    .expect("revoke");
    assert_code(
        call(client.verify_jwt(req(
            VerifyJwtRequest {
                jwt: future.clone(),
            },
            Some(INTERNAL_KEY),
        )))
        .await,
        Code::Unauthenticated,
    );
    assert_code(
        call(client.issue_ws_token(req(IssueWsTokenRequest { jwt: future }, None))).await,
        Code::Unauthenticated,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ws_token_issued_around_a_revoke_user_survives_it() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(config(Some(redis.url()))).await;
    let client = auth.auth_client().await;
    // iat is in the cutoff's second (or before): every token from this JWT must die.
    let jwt = Jwt::for_user("racer").sign();
    let issuers: Vec<_> = (0..4)
        .map(|_| {
            let mut client = client.clone();
            let jwt = jwt.clone();
            tokio::spawn(async move {
                let mut tokens = Vec::new();
                for _ in 0..50 {
                    let request = req(IssueWsTokenRequest { jwt: jwt.clone() }, None);
                    match call(client.issue_ws_token(request)).await {
                        Ok(issued) => tokens.push(issued.token),
                        Err(status) => assert_eq!(status.code(), Code::Unauthenticated),
                    }
                }
                tokens
            })
        })
        .collect();
    let mut revoker = client.clone();
    call(revoker.revoke_user(req(
        RevokeUserRequest {
            user_id: "racer".into(),
        },
        Some(ADMIN_KEY),
    )))
    .await
    .expect("revoke");
    let mut validator = client.clone();
    for issuer in issuers {
        for token in issuer.await.expect("issuer") {
            assert_code(
                call(
                    validator
                        .validate_token(req(ValidateTokenRequest { token }, Some(INTERNAL_KEY))),
                )
                .await,
                Code::Unauthenticated,
            );
        }
    }
}
