//! The operators' view across 2 auth replicas and 3 gateways: ListGateways
//! and Presence through either replica, a clean disconnect, a gateway killed
//! with SIGKILL, and grpcurl through reflection; and the same view shared by
//! the replicas in Cluster and Sentinel modes.

use std::time::Duration;

use futures::future::join_all;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use wsauth_shared::proto::admin_service_client::AdminServiceClient;
use wsauth_shared::proto::{GatewayInfo, ListGatewaysRequest, PresenceRequest};
use wsauth_tests::{
    ADMIN_KEY, ApiKey, AuthOptions, Bearer, Cluster, GatewayOptions, RedisBackend, RedisMode,
    TestAuth, TestGateway, WsClient, wait_until,
};

use crate::delivery::grpcurl;

/// Reports every 5 s and the 30 s expiry, with room for a loaded machine.
const CHANGE_SEEN: Duration = Duration::from_secs(20);
const KILL_SEEN: Duration = Duration::from_secs(45);

fn admin(auth: &TestAuth) -> AdminServiceClient<InterceptedService<Channel, Bearer>> {
    AdminServiceClient::with_interceptor(auth.channel(), Bearer::new(ApiKey::Admin))
}

async fn gateways(auth: &TestAuth) -> Vec<GatewayInfo> {
    admin(auth)
        .list_gateways(ListGatewaysRequest {})
        .await
        .expect("ListGateways with the admin key")
        .into_inner()
        .gateways
}

/// The user's connections as `(gateway pid, conn_id)`.
async fn presence(auth: &TestAuth, user: &str) -> Vec<(u32, String)> {
    let mut found: Vec<(u32, String)> = admin(auth)
        .presence(PresenceRequest {
            user_id: user.into(),
        })
        .await
        .expect("Presence with the admin key")
        .into_inner()
        .connections
        .into_iter()
        .map(|c| (pid_of(&c.gateway_id), c.conn_id))
        .collect();
    found.sort();
    found
}

/// A default gateway id is `<hostname>-<pid>`.
fn pid_of(gateway_id: &str) -> u32 {
    gateway_id
        .rsplit('-')
        .next()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("gateway id {gateway_id} ends with its pid"))
}

fn pids(gateways: &[GatewayInfo]) -> Vec<u32> {
    let mut pids: Vec<u32> = gateways.iter().map(|g| pid_of(&g.gateway_id)).collect();
    pids.sort_unstable();
    pids
}

#[tokio::test]
async fn operators_see_gateways_and_presence_through_any_replica_and_a_killed_gateway_goes() {
    let mut stack = Cluster::spawn(2, 3, GatewayOptions::default()).await;
    stack.wait_ready().await;
    let pid = |i: usize| stack.gateways[i].pid().expect("running");
    let (p0, p1, p2) = (pid(0), pid(1), pid(2));
    let mut all = vec![p0, p1, p2];
    all.sort_unstable();

    let _alice_0 = WsClient::authenticated(&stack.gateways[0], "alice").await;
    let _alice_2 = WsClient::authenticated(&stack.gateways[2], "alice").await;
    let bob = WsClient::authenticated(&stack.gateways[1], "bob").await;

    wait_until(
        CHANGE_SEEN,
        "both replicas list 3 gateways with their connections",
        || async {
            let mut ok = true;
            for auth in &stack.auths {
                let listed = gateways(auth).await;
                ok &= pids(&listed) == all
                    && listed
                        .iter()
                        .all(|g| g.authenticated == 1 && g.connections == 1);
            }
            ok
        },
    )
    .await;
    let listed = gateways(&stack.auths[1]).await;
    assert!(
        listed
            .iter()
            .all(|g| g.started_at.is_some() && g.last_seen.is_some())
    );

    wait_until(
        CHANGE_SEEN,
        "alice is present on gateways 0 and 2",
        || async {
            let found = presence(&stack.auths[0], "alice").await;
            let mut gateways: Vec<u32> = found.iter().map(|(p, _)| *p).collect();
            gateways.sort_unstable();
            let mut want = vec![p0, p2];
            want.sort_unstable();
            gateways == want
        },
    )
    .await;
    assert!(presence(&stack.auths[1], "nobody").await.is_empty());

    // A clean disconnect leaves presence within a report.
    bob.close().await;
    wait_until(
        CHANGE_SEEN,
        "bob is gone and gateway 1 counts 0",
        || async {
            let listed = gateways(&stack.auths[0]).await;
            presence(&stack.auths[1], "bob").await.is_empty()
                && listed
                    .iter()
                    .any(|g| pid_of(&g.gateway_id) == p1 && g.authenticated == 0)
        },
    )
    .await;

    // SIGKILL: no goodbye; the gateway and its connections expire.
    stack.gateways[2].kill().await;
    wait_until(
        KILL_SEEN,
        "the killed gateway and its connection are gone",
        || async {
            let mut rest = vec![p0, p1];
            rest.sort_unstable();
            pids(&gateways(&stack.auths[1]).await) == rest
                && presence(&stack.auths[0], "alice")
                    .await
                    .iter()
                    .all(|(p, _)| *p == p0)
                && presence(&stack.auths[0], "alice").await.len() == 1
        },
    )
    .await;

    // Operators' calls need the admin key; the internal key is refused.
    let refused = AdminServiceClient::with_interceptor(
        stack.auths[0].channel(),
        Bearer::new(ApiKey::Internal),
    )
    .list_gateways(ListGatewaysRequest {})
    .await
    .expect_err("ListGateways needs the admin key");
    assert_eq!(refused.code(), tonic::Code::Unauthenticated);

    let addr = stack.auths[0].addr().to_string();
    let stdout = grpcurl(
        "grpcurl ListGateways",
        &[
            "-plaintext",
            "-H",
            &format!("authorization: Bearer {ADMIN_KEY}"),
            &addr,
            "wsauth.v1.AdminService/ListGateways",
        ],
    )
    .await;
    let reply: serde_json::Value = serde_json::from_slice(&stdout).expect("grpcurl prints JSON");
    assert_eq!(
        reply["gateways"].as_array().map(Vec::len),
        Some(2),
        "{reply}"
    );
}

/// Each gateway reports to one auth replica only (gateway i to auth i); in
/// every Redis mode both replicas list both gateways and find alice on both,
/// as presence lives in Redis beside the store.
async fn every_replica_sees_every_gateway(mode: RedisMode) {
    let backend = tokio::task::spawn_blocking(move || RedisBackend::spawn(mode))
        .await
        .expect("the topology starts");
    let options = AuthOptions::default().redis(&backend);
    let auths = join_all((0..2).map(|_| TestAuth::spawn(None, options.clone()))).await;
    for auth in &auths {
        assert!(
            !auth.logs().contains("no Redis configured"),
            "{mode:?}: auth fell back to the embedded store"
        );
    }
    let mut gws = Vec::new();
    for auth in &auths {
        gws.push(TestGateway::spawn(&[auth], GatewayOptions::default()).await);
    }
    join_all(gws.iter().map(|g| g.wait_ready(Duration::from_secs(20)))).await;
    let mut all: Vec<u32> = gws.iter().map(|g| g.pid().expect("running")).collect();
    all.sort_unstable();
    let _alices = join_all(
        gws.iter()
            .map(|gateway| WsClient::authenticated(gateway, "alice")),
    )
    .await;

    wait_until(
        CHANGE_SEEN,
        "each replica lists both gateways and finds alice on both",
        || async {
            let mut ok = true;
            for auth in &auths {
                let found: Vec<u32> = presence(auth, "alice")
                    .await
                    .iter()
                    .map(|(p, _)| *p)
                    .collect();
                ok &= pids(&gateways(auth).await) == all && found == all;
            }
            ok
        },
    )
    .await;
    // The services stop before their Redis does.
    drop(gws);
    drop(auths);
    drop(backend);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_replica_sees_every_gateway_in_cluster_mode() {
    every_replica_sees_every_gateway(RedisMode::Cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_auth_replica_sees_every_gateway_in_sentinel_mode() {
    every_replica_sees_every_gateway(RedisMode::Sentinel).await;
}
