//! BroadcastService over real gRPC: Publish, History and resumable Subscribe.

mod common;

use std::time::Duration;

use common::*;
use tokio::time::timeout;
use tonic::{Code, Streaming};
use wsauth_shared::event_id::LIVE_FROM_METADATA;
use wsauth_shared::proto::broadcast_service_client::BroadcastServiceClient;
use wsauth_shared::proto::{
    Event, EventKind, HistoryRequest, PublishRequest, RevokeUserRequest, SubscribeRequest,
};
use wsauth_tests::TestRedis;

type Client = BroadcastServiceClient<tonic::transport::Channel>;

async fn publish(client: &mut Client, data: &str, user_id: Option<&str>) -> String {
    let request = PublishRequest {
        data: data.into(),
        user_id: user_id.map(str::to_owned),
    };
    call(client.publish(req(request, Some(ADMIN_KEY))))
        .await
        .expect("publish")
        .id
}

fn history(after_id: &str, user_id: Option<&str>, limit: Option<u32>) -> HistoryRequest {
    HistoryRequest {
        after_id: after_id.into(),
        user_id: user_id.map(str::to_owned),
        limit,
        from_oldest: false,
        resumable: false,
    }
}

/// History from the oldest retained event of the current epoch.
fn history_oldest(user_id: Option<&str>, limit: Option<u32>) -> HistoryRequest {
    HistoryRequest {
        from_oldest: true,
        ..history("", user_id, limit)
    }
}

/// Subscribe after `after_id`, or live when `None`.
fn subscribe_from(after_id: Option<&str>) -> SubscribeRequest {
    SubscribeRequest {
        gateway_id: "gw-test".into(),
        after_id: after_id.map(str::to_owned),
        from_oldest: false,
    }
}

async fn subscribe(
    client: &mut Client,
    after_id: Option<&str>,
) -> Result<Streaming<Event>, tonic::Status> {
    open(client, subscribe_from(after_id)).await
}

/// Subscribe from the oldest retained event of the current epoch.
async fn subscribe_oldest(client: &mut Client) -> Result<Streaming<Event>, tonic::Status> {
    let request = SubscribeRequest {
        from_oldest: true,
        ..subscribe_from(None)
    };
    open(client, request).await
}

/// `request` with the internal key and no overall deadline: a stream, not a unary call.
fn stream_request(request: SubscribeRequest) -> tonic::Request<SubscribeRequest> {
    let mut request = req(request, Some(INTERNAL_KEY));
    request.metadata_mut().remove("grpc-timeout");
    request
}

async fn open(
    client: &mut Client,
    request: SubscribeRequest,
) -> Result<Streaming<Event>, tonic::Status> {
    call(client.subscribe(stream_request(request))).await
}

/// A Subscribe's whole response, its metadata included.
async fn subscribe_response(
    client: &mut Client,
    after_id: Option<&str>,
) -> tonic::Response<Streaming<Event>> {
    timeout(
        CALL_DEADLINE,
        client.subscribe(stream_request(subscribe_from(after_id))),
    )
    .await
    .expect("subscribe answers in time")
    .expect("subscribe")
}

async fn next(stream: &mut Streaming<Event>) -> Result<Event, tonic::Status> {
    timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("an event within 5 s")
        .map(|event| event.expect("stream still open"))
}

fn data(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.data.as_str()).collect()
}

/// A resumable History examines at most 2,000 events per call and says where
/// to go on; paging from there finds every event of a user with few among
/// many others'. Without `resumable`, one call scans everything, as before.
async fn resumable_history_bounds_each_scan(redis_url: Option<String>) {
    let auth = TestAuth::spawn(config(redis_url)).await;
    let mut client = auth.broadcast_client().await;
    let start = publish(&mut client, "start", None).await;
    // ids[n] is the id of the (n+1)th event after `start`.
    let mut ids = vec![publish(&mut client, "ann-first", Some("ann")).await];
    for _ in 0..4100 {
        ids.push(publish(&mut client, "for-ben", Some("ben")).await);
    }
    ids.push(publish(&mut client, "ann-last", Some("ann")).await);

    let whole = call(client.history(req(history(&start, Some("ann"), None), Some(INTERNAL_KEY))))
        .await
        .expect("history");
    assert_eq!(data(&whole.events), ["ann-first", "ann-last"]);
    assert_eq!(whole.next_after_id, "", "no position unless asked for");

    let resumable = |after_id: &str, limit: Option<u32>| HistoryRequest {
        resumable: true,
        ..history(after_id, Some("ann"), limit)
    };
    let mut pages = Vec::new();
    let mut after = start.clone();
    while pages.len() < 10 {
        let page = call(client.history(req(resumable(&after, None), Some(INTERNAL_KEY))))
            .await
            .expect("history");
        let next = page.next_after_id.clone();
        pages.push((data(&page.events).join(","), next.clone()));
        if next.is_empty() {
            break;
        }
        after = next;
    }
    assert_eq!(
        pages,
        [
            ("ann-first".to_owned(), ids[1999].clone()),
            (String::new(), ids[3999].clone()),
            ("ann-last".to_owned(), String::new()),
        ]
    );

    let one = call(client.history(req(resumable(&start, Some(1)), Some(INTERNAL_KEY))))
        .await
        .expect("history");
    assert_eq!(data(&one.events), ["ann-first"]);
    assert_eq!(
        one.next_after_id, ids[0],
        "a full page goes on after its last event"
    );
}

#[tokio::test]
async fn resumable_history_bounds_each_scan_in_redis() {
    let redis = TestRedis::spawn();
    resumable_history_bounds_each_scan(Some(redis.url())).await;
}

#[tokio::test]
async fn resumable_history_bounds_each_scan_in_memory() {
    resumable_history_bounds_each_scan(None).await;
}

#[tokio::test]
async fn published_events_come_back_in_order_in_history() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(config(Some(redis.url()))).await;
    let mut client = auth.broadcast_client().await;
    let first = publish(&mut client, "b0", None).await;
    publish(&mut client, "d-ann", Some("ann")).await;
    publish(&mut client, "b1", None).await;
    publish(&mut client, "d-ben", Some("ben")).await;
    let mut auth_client = auth.auth_client().await;
    call(auth_client.revoke_user(req(
        RevokeUserRequest {
            user_id: "ann".into(),
        },
        Some(ADMIN_KEY),
    )))
    .await
    .expect("revoke");
    let last = publish(&mut client, "b2", None).await;

    let (epoch, _) = first.split_once(':').expect("epoch:seq");
    assert!(last.starts_with(&format!("{epoch}:")));

    let all = call(client.history(req(history(&first, None, None), Some(INTERNAL_KEY))))
        .await
        .expect("history");
    assert_eq!(data(&all.events), ["b1", "b2"]);
    let ann = call(client.history(req(history(&first, Some("ann"), None), Some(ADMIN_KEY))))
        .await
        .expect("history");
    assert_eq!(data(&ann.events), ["d-ann", "b1", "", "b2"]);
    assert_eq!(ann.events[0].kind(), EventKind::Direct);
    assert_eq!(ann.events[0].user_id, "ann");
    assert_eq!(ann.events[2].kind(), EventKind::Disconnect);
    assert_eq!(ann.events[1].kind(), EventKind::Broadcast);
    assert!(ann.events[1].published_at.is_some());
    let limited = call(client.history(req(
        history(&first, Some("ann"), Some(2)),
        Some(INTERNAL_KEY),
    )))
    .await
    .expect("history");
    assert_eq!(data(&limited.events), ["d-ann", "b1"]);
    let after_last = call(client.history(req(history(&last, None, None), Some(INTERNAL_KEY))))
        .await
        .expect("history");
    assert!(after_last.events.is_empty());
}

#[tokio::test]
async fn broadcast_rpcs_check_keys_and_arguments() {
    let auth = TestAuth::spawn(config(None)).await;
    let mut client = auth.broadcast_client().await;
    let id = publish(&mut client, "x", None).await;
    let publish_req = |data: &str, user: Option<&str>| PublishRequest {
        data: data.into(),
        user_id: user.map(str::to_owned),
    };
    assert_code(
        call(client.publish(req(publish_req("x", None), Some(INTERNAL_KEY)))).await,
        Code::Unauthenticated,
    );
    assert_code(
        call(client.publish(req(publish_req("x", None), None))).await,
        Code::Unauthenticated,
    );
    assert_code(
        call(client.history(req(history(&id, None, None), None))).await,
        Code::Unauthenticated,
    );
    assert_code(
        call(client.history(req(history(&id, None, None), Some("bad")))).await,
        Code::Unauthenticated,
    );
    let sub = SubscribeRequest {
        gateway_id: "g".into(),
        after_id: None,
        from_oldest: false,
    };
    assert_code(
        call(client.subscribe(req(sub, Some("bad"))))
            .await
            .map(|_| ()),
        Code::Unauthenticated,
    );

    let k = Some(ADMIN_KEY);
    assert_code(
        call(client.publish(req(publish_req("", None), k))).await,
        Code::InvalidArgument,
    );
    assert_code(
        call(client.publish(req(publish_req(&"x".repeat(65_537), None), k))).await,
        Code::InvalidArgument,
    );
    call(client.publish(req(publish_req(&"x".repeat(65_536), None), k)))
        .await
        .expect("at the limit");
    assert_code(
        call(client.publish(req(publish_req("x", Some("")), k))).await,
        Code::InvalidArgument,
    );
    assert_code(
        call(client.publish(req(publish_req("x", Some(&"u".repeat(257))), k))).await,
        Code::InvalidArgument,
    );
    assert_code(
        call(client.history(req(history("", None, None), k))).await,
        Code::InvalidArgument,
    );
    assert_code(
        call(client.history(req(history("garbage", None, None), k))).await,
        Code::InvalidArgument,
    );
    assert_code(
        call(client.history(req(history(&"a".repeat(257), None, None), k))).await,
        Code::InvalidArgument,
    );
    // after_id and from_oldest are two ways to say where to start: not both.
    let both = HistoryRequest {
        from_oldest: true,
        ..history(&id, None, None)
    };
    assert_code(
        call(client.history(req(both, k))).await,
        Code::InvalidArgument,
    );
    let cases = [
        ("", None, false),
        (&*"g".repeat(257), None, false),
        ("g", Some("bad-id"), false),
        ("g", Some(id.as_str()), true),
    ];
    for (gateway, after, from_oldest) in cases {
        let sub = SubscribeRequest {
            gateway_id: gateway.into(),
            after_id: after.map(str::to_owned),
            from_oldest,
        };
        assert_code(
            call(client.subscribe(req(sub, k))).await.map(|_| ()),
            Code::InvalidArgument,
        );
    }
}

/// From the oldest: History and Subscribe start at the stream's first
/// retained event (whatever id came before it), then page and go live.
async fn from_oldest_reads_the_whole_retained_stream(redis_url: Option<String>) {
    let auth = TestAuth::spawn(config(redis_url)).await;
    let mut client = auth.broadcast_client().await;
    let empty = call(client.history(req(history_oldest(None, None), Some(INTERNAL_KEY))))
        .await
        .expect("history of a stream not created yet");
    assert!(empty.events.is_empty());
    let mut ids = Vec::new();
    for i in 0..5 {
        let user = (i == 1).then_some("ann");
        ids.push(publish(&mut client, &format!("old{i}"), user).await);
    }
    let all = call(client.history(req(history_oldest(Some("ann"), None), Some(INTERNAL_KEY))))
        .await
        .expect("history from the oldest");
    assert_eq!(data(&all.events), ["old0", "old1", "old2", "old3", "old4"]);
    let page = call(client.history(req(history_oldest(None, Some(2)), Some(INTERNAL_KEY))))
        .await
        .expect("history from the oldest");
    assert_eq!(
        data(&page.events),
        ["old0", "old2"],
        "a page, without ann's"
    );
    let mut stream = subscribe_oldest(&mut client).await.expect("subscribe");
    for id in &ids {
        assert_eq!(&next(&mut stream).await.expect("event").id, id);
    }
    let live = publish(&mut client, "live", None).await;
    assert_eq!(next(&mut stream).await.expect("event").id, live);
}

#[tokio::test]
async fn from_oldest_reads_the_whole_retained_stream_with_redis() {
    let redis = TestRedis::spawn();
    from_oldest_reads_the_whole_retained_stream(Some(redis.url())).await;
}

#[tokio::test]
async fn from_oldest_reads_the_whole_retained_stream_in_memory() {
    from_oldest_reads_the_whole_retained_stream(None).await;
}

async fn subscription_sees_live_events_in_order(redis_url: Option<String>) {
    let auth = TestAuth::spawn(config(redis_url)).await;
    let mut client = auth.broadcast_client().await;
    let mut stream = subscribe(&mut client, None).await.expect("subscribe");
    let mut ids = Vec::new();
    for i in 0..30 {
        let user = (i % 3 == 0).then_some("zed");
        ids.push(publish(&mut client, &format!("live{i}"), user).await);
    }
    for (i, id) in ids.iter().enumerate() {
        let event = next(&mut stream).await.expect("event");
        assert_eq!(&event.id, id);
        assert_eq!(event.data, format!("live{i}"));
    }
}

#[tokio::test]
async fn a_subscriber_gets_live_events_in_publish_order_with_redis() {
    let redis = TestRedis::spawn();
    subscription_sees_live_events_in_order(Some(redis.url())).await;
}

#[tokio::test]
async fn a_subscriber_gets_live_events_in_publish_order_in_memory() {
    subscription_sees_live_events_in_order(None).await;
}

async fn resume_has_no_gap_and_no_duplicate(redis_url: Option<String>) {
    let auth = TestAuth::spawn(config(redis_url)).await;
    let mut client = auth.broadcast_client().await;
    let mut ids = Vec::new();
    for i in 0..1200 {
        ids.push(publish(&mut client, &format!("e{i}"), None).await);
    }
    // Keep publishing while the subscriber catches up, so the seam is exercised.
    let mut publisher = auth.broadcast_client().await;
    let more = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 1200..1500 {
            ids.push(publish(&mut publisher, &format!("e{i}"), None).await);
        }
        ids
    });
    let mut stream = subscribe(&mut client, Some(&ids[99]))
        .await
        .expect("subscribe");
    ids.extend(more.await.expect("publisher"));
    for expected in &ids[100..] {
        let event = next(&mut stream).await.expect("event");
        assert_eq!(&event.id, expected);
    }
    // Nothing extra, nothing repeated: the next event is a new one.
    let last = publish(&mut client, "after", None).await;
    assert_eq!(next(&mut stream).await.expect("event").id, last);
}

#[tokio::test]
async fn subscribe_with_after_id_resumes_without_gap_or_duplicate_with_redis() {
    let redis = TestRedis::spawn();
    resume_has_no_gap_and_no_duplicate(Some(redis.url())).await;
}

#[tokio::test]
async fn subscribe_with_after_id_resumes_without_gap_or_duplicate_in_memory() {
    resume_has_no_gap_and_no_duplicate(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_older_than_retention_are_out_of_range() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(config(Some(redis.url()))).await;
    let mut client = auth.broadcast_client().await;
    // A live stream opened before anything was published says where it
    // began; a subscriber that lost it before its first event resumes from
    // there, and must be told when trimming passed that point.
    let (empty_from, _live) = subscribe_live(&mut client).await;
    let empty_from = empty_from.expect("a live Subscribe says where it began");
    let first = publish(&mut client, "first", None).await;
    // Retention is 10000 (`MAXLEN ~` trims whole nodes): publish well past it.
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let mut client = auth.broadcast_client().await;
        tasks.push(tokio::spawn(async move {
            for _ in 0..1300 {
                publish(&mut client, "fill", None).await;
            }
        }));
    }
    for task in tasks {
        task.await.expect("publisher");
    }
    let status = assert_code(
        call(client.history(req(history(&first, None, Some(1)), Some(INTERNAL_KEY)))).await,
        Code::OutOfRange,
    );
    assert!(
        status.message().contains("older than the retained"),
        "{status:?}"
    );
    assert_code(
        subscribe(&mut client, Some(&first)).await.map(|_| ()),
        Code::OutOfRange,
    );
    assert_code(
        subscribe(&mut client, Some(&empty_from)).await.map(|_| ()),
        Code::OutOfRange,
    );
    // What a caller refused so can still get: from the oldest retained one.
    let oldest = call(client.history(req(history_oldest(None, Some(1)), Some(INTERNAL_KEY))))
        .await
        .expect("history from the oldest");
    let [oldest] = &oldest.events[..] else {
        panic!("one event: {:?}", oldest.events);
    };
    assert_ne!(oldest.id, first, "the first event was trimmed");
    let mut stream = subscribe_oldest(&mut client).await.expect("subscribe");
    assert_eq!(next(&mut stream).await.expect("event").id, oldest.id);
}

#[tokio::test]
async fn a_new_epoch_after_redis_loses_the_stream_is_out_of_range_for_old_ids() {
    let mut redis = TestRedis::spawn();
    let mut config = config(Some(redis.url()));
    config.redis_timeout_ms = 300;
    let auth = TestAuth::spawn(config).await;
    let mut client = auth.broadcast_client().await;
    let old = publish(&mut client, "before", None).await;
    let mut live = subscribe(&mut client, None).await.expect("subscribe");
    let seen = publish(&mut client, "seen", None).await;
    assert_eq!(next(&mut live).await.expect("event").id, seen);

    redis.restart();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let new = loop {
        let request = PublishRequest {
            data: "after".into(),
            user_id: None,
        };
        match call(client.publish(req(request, Some(ADMIN_KEY)))).await {
            Ok(response) => break response.id,
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "publish did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_ne!(
        new.split_once(':').expect("id").0,
        old.split_once(':').expect("id").0,
        "a new epoch"
    );

    let status = assert_code(
        call(client.history(req(history(&old, None, None), Some(INTERNAL_KEY)))).await,
        Code::OutOfRange,
    );
    assert!(status.message().contains("epoch"), "{status:?}");
    // Subscribe answers UNAVAILABLE until this replica's stream reader is back.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        let status = subscribe(&mut client, Some(&old))
            .await
            .expect_err("an old-epoch id is refused");
        if status.code() != Code::Unavailable {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reader did not recover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // The live subscriber is told, not carried across silently (it may have missed events).
    let status = next(&mut live)
        .await
        .expect_err("the live subscriber is ended when the epoch changes");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("epoch"), "{status:?}");
    // Ids of the new epoch work.
    let newer = publish(&mut client, "newer", None).await;
    let events = call(client.history(req(history(&new, None, None), Some(INTERNAL_KEY))))
        .await
        .expect("history");
    assert_eq!(
        events
            .events
            .iter()
            .map(|e| e.id.as_str())
            .collect::<Vec<_>>(),
        [newer.as_str()]
    );
    // The new epoch from its start, for a subscriber that lost its position.
    let ids = |events: &[Event]| events.iter().map(|e| e.id.clone()).collect::<Vec<_>>();
    let oldest = call(client.history(req(history_oldest(None, None), Some(INTERNAL_KEY))))
        .await
        .expect("history from the oldest");
    assert_eq!(ids(&oldest.events), [new.clone(), newer.clone()]);
    let mut stream = subscribe_oldest(&mut client).await.expect("subscribe");
    assert_eq!(next(&mut stream).await.expect("event").id, new);
    assert_eq!(next(&mut stream).await.expect("event").id, newer);
    let live = publish(&mut client, "live", None).await;
    assert_eq!(next(&mut stream).await.expect("event").id, live);
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_is_ended_with_resource_exhausted() {
    let auth = TestAuth::spawn(config(None)).await;
    let mut client = auth.broadcast_client().await;
    let mut stream = subscribe(&mut client, None).await.expect("subscribe");
    // Far more than the fan-out buffer plus the per-subscriber queue and HTTP/2 windows.
    let payload = "p".repeat(1000);
    let mut publishers = Vec::new();
    for _ in 0..4 {
        let mut client = auth.broadcast_client().await;
        let payload = payload.clone();
        publishers.push(tokio::spawn(async move {
            for _ in 0..2500 {
                publish(&mut client, &payload, None).await;
            }
        }));
    }
    for publisher in publishers {
        publisher.await.expect("publisher");
    }
    let mut received = 0;
    let status = loop {
        match next(&mut stream).await {
            Ok(_) => received += 1,
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(received < 10_000, "received {received}");
}

#[tokio::test]
async fn shutdown_ends_subscriptions_and_run_returns() {
    let auth = TestAuth::spawn(config(None)).await;
    let mut client = auth.broadcast_client().await;
    let mut stream = subscribe(&mut client, None).await.expect("subscribe");
    auth.shutdown().await.expect("clean shutdown");
    let end = timeout(Duration::from_secs(5), stream.message())
        .await
        .expect("stream ends promptly");
    assert!(!matches!(end, Ok(Some(_))), "{end:?}");
}

async fn revoke_user_reaches_a_live_subscriber(redis_url: Option<String>) {
    let auth = TestAuth::spawn(config(redis_url)).await;
    let mut client = auth.broadcast_client().await;
    let mut live = subscribe(&mut client, None).await.expect("subscribe");
    let mut auth_client = auth.auth_client().await;
    call(auth_client.revoke_user(req(
        RevokeUserRequest {
            user_id: "mallory".into(),
        },
        Some(ADMIN_KEY),
    )))
    .await
    .expect("revoke user");
    let event = next(&mut live).await.expect("the disconnect event");
    assert_eq!(event.kind(), EventKind::Disconnect);
    assert_eq!(event.user_id, "mallory");
}

#[tokio::test]
async fn revoke_user_sends_a_disconnect_to_live_subscribers_with_redis() {
    let redis = TestRedis::spawn();
    revoke_user_reaches_a_live_subscriber(Some(redis.url())).await;
}

#[tokio::test]
async fn revoke_user_sends_a_disconnect_to_live_subscribers_in_memory() {
    revoke_user_reaches_a_live_subscriber(None).await;
}

async fn history_pages_by_bytes(redis_url: Option<String>) {
    let auth = TestAuth::spawn(config(redis_url)).await;
    let mut client = auth.broadcast_client().await;
    let start = publish(&mut client, "start", None).await;
    // 80 × 64 KiB = 5 MiB: more than one gRPC message (4 MiB) may carry.
    let big = "x".repeat(65_536);
    let mut ids = Vec::new();
    for _ in 0..80 {
        ids.push(publish(&mut client, &big, None).await);
    }
    let mut cursor = start;
    let mut seen = Vec::new();
    let mut pages = 0;
    while seen.len() < ids.len() {
        let page = call(client.history(req(history(&cursor, None, None), Some(INTERNAL_KEY))))
            .await
            .expect("a history page fits in a gRPC message");
        assert!(!page.events.is_empty(), "a page holds at least one event");
        let bytes: usize = page.events.iter().map(|e| e.data.len()).sum();
        assert!(bytes <= 3 * 1024 * 1024 + 65_536, "page of {bytes} bytes");
        cursor = page.events.last().expect("non-empty").id.clone();
        seen.extend(page.events.into_iter().map(|e| e.id));
        pages += 1;
    }
    assert!(pages >= 2, "5 MiB came in {pages} page(s)");
    assert_eq!(seen, ids, "paging by the last id loses and repeats nothing");
    let rest = call(client.history(req(history(&cursor, None, None), Some(INTERNAL_KEY))))
        .await
        .expect("history");
    assert!(rest.events.is_empty());
}

#[tokio::test]
async fn history_replies_stay_under_the_message_limit_and_page_with_redis() {
    let redis = TestRedis::spawn();
    history_pages_by_bytes(Some(redis.url())).await;
}

#[tokio::test]
async fn history_replies_stay_under_the_message_limit_and_page_in_memory() {
    history_pages_by_bytes(None).await;
}

async fn ids_ahead_of_the_stream(redis_url: Option<String>) {
    let auth = TestAuth::spawn(config(redis_url)).await;
    let mut client = auth.broadcast_client().await;
    let id = publish(&mut client, "only", None).await;
    let epoch = id.split_once(':').expect("epoch").0;
    let ahead = format!("{epoch}:18446744073709551615-18446744073709551615");
    let status = assert_code(
        call(client.history(req(history(&ahead, None, None), Some(INTERNAL_KEY)))).await,
        Code::OutOfRange,
    );
    assert!(status.message().contains("ahead"), "{status:?}");
    let status = subscribe(&mut client, Some(&ahead))
        .await
        .expect_err("an id from the future is refused");
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // The last real id is fine.
    let events = call(client.history(req(history(&id, None, None), Some(INTERNAL_KEY))))
        .await
        .expect("history after the last id");
    assert!(events.events.is_empty());
}

#[tokio::test]
async fn an_id_ahead_of_the_stream_is_out_of_range_with_redis() {
    let redis = TestRedis::spawn();
    ids_ahead_of_the_stream(Some(redis.url())).await;
}

#[tokio::test]
async fn an_id_ahead_of_the_stream_is_out_of_range_in_memory() {
    ids_ahead_of_the_stream(None).await;
}

/// A live Subscribe and the `wsauth-live-from` metadata it answers with.
async fn subscribe_live(client: &mut Client) -> (Option<String>, Streaming<Event>) {
    let response = subscribe_response(client, None).await;
    let live_from = response
        .metadata()
        .get(LIVE_FROM_METADATA)
        .map(|value| value.to_str().expect("ascii").to_owned());
    (live_from, response.into_inner())
}

async fn live_subscribe_says_where_it_began(redis_url: Option<String>) {
    let with_redis = redis_url.is_some();
    let auth = TestAuth::spawn(config(redis_url)).await;
    let mut client = auth.broadcast_client().await;
    let (from, _empty) = subscribe_live(&mut client).await;
    let from = from.expect("a live Subscribe says where it began");
    // Before the first event: the epoch (in Redis created now, as the first
    // Publish would) and no event yet, so a resume from it is checked like
    // any other position.
    let (empty_epoch, seq) = from.split_once(':').expect("an event id");
    assert_eq!(seq, "0-0", "{from}");

    let first = publish(&mut client, "first", None).await;
    assert_eq!(
        first.split_once(':').expect("an event id").0,
        empty_epoch,
        "the first event is of the epoch the live stream was told of (redis: {with_redis})"
    );
    // A subscriber whose stream broke before its first event: nothing lost.
    let mut resumed = subscribe(&mut client, Some(&from))
        .await
        .expect("resume from before the first event");
    assert_eq!(next(&mut resumed).await.expect("event").id, first);
    let (from, mut live) = subscribe_live(&mut client).await;
    assert_eq!(
        from.as_deref(),
        Some(first.as_str()),
        "the stream's last id"
    );
    let second = publish(&mut client, "second", None).await;
    assert_eq!(
        next(&mut live).await.expect("event").id,
        second,
        "live only"
    );
    // What a subscriber whose live stream broke resumes with: nothing lost.
    let mut resumed = subscribe(&mut client, Some(&first))
        .await
        .expect("resume from it");
    assert_eq!(next(&mut resumed).await.expect("event").id, second);

    // Only a live Subscribe says it.
    let response = subscribe_response(&mut client, Some(&first)).await;
    assert!(response.metadata().get(LIVE_FROM_METADATA).is_none());
}

#[tokio::test]
async fn a_live_subscribe_says_where_it_began_with_redis() {
    let redis = TestRedis::spawn();
    live_subscribe_says_where_it_began(Some(redis.url())).await;
}

#[tokio::test]
async fn a_live_subscribe_says_where_it_began_in_memory() {
    live_subscribe_says_where_it_began(None).await;
}
