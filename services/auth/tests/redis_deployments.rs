//! The contract's "Redis deployments" checks that need a Redis configured a
//! particular way, each a real redis-server: `maxmemory-policy` refused
//! at start (and `REDIS_ALLOW_EVICTION`), `REDIS_WAIT_REPLICAS` with a real
//! replica, and `rediss://` with certificates made in the test (tokens,
//! events and presence).

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use tonic::Code;
use wsauth_auth::ServeError;
use wsauth_shared::proto::admin_service_client::AdminServiceClient;
use wsauth_shared::proto::{
    ConnectionEntry, HistoryRequest, IssueWsTokenRequest, ListGatewaysRequest, PresenceRequest,
    PublishRequest, ReportGatewayRequest, ValidateTokenRequest,
};
use wsauth_tests::RedisNode;
use wsauth_tests::pki::{PkiDir, TestCa};

fn args(values: &[&str]) -> Vec<String> {
    values.iter().map(|value| value.to_string()).collect()
}

/// Issues a ws token for `user` and validates it: the store's write and its
/// single-use consumption, end to end.
async fn token_round_trip(auth: &TestAuth, user: &str) -> Result<(), tonic::Status> {
    let mut client = auth.auth_client().await;
    let issued = call(client.issue_ws_token(req(
        IssueWsTokenRequest {
            jwt: Jwt::for_user(user).sign(),
        },
        None,
    )))
    .await?;
    let valid = call(client.validate_token(req(
        ValidateTokenRequest {
            token: issued.token,
        },
        Some(INTERNAL_KEY),
    )))
    .await?;
    assert_eq!(valid.user_id, user);
    Ok(())
}

async fn publish(auth: &TestAuth, data: &str) -> Result<String, tonic::Status> {
    let mut client = auth.broadcast_client().await;
    call(client.publish(req(
        PublishRequest {
            data: data.into(),
            user_id: None,
        },
        Some(ADMIN_KEY),
    )))
    .await
    .map(|published| published.id)
}

#[tokio::test]
async fn an_evicting_redis_is_refused_at_start_unless_eviction_is_allowed() {
    let dir = PkiDir::new();
    // volatile-* included: revocations carry a TTL, so they are evictable too.
    for policy in ["allkeys-lru", "volatile-lru", "volatile-ttl"] {
        let redis = RedisNode::spawn(dir.path(), &args(&["--maxmemory-policy", policy]));
        let auth = TestAuth::spawn(config(Some(redis.url()))).await;
        let refused = auth.shutdown().await;
        let Err(ServeError::Store(error)) = refused else {
            panic!("{policy}: auth started anyway: {refused:?}");
        };
        let message = error.to_string();
        assert!(
            message.contains(&format!("maxmemory-policy is {policy}"))
                && message.contains("REDIS_ALLOW_EVICTION"),
            "{message}"
        );

        let mut allowed = config(Some(redis.url()));
        allowed.redis_allow_eviction = true;
        let auth = TestAuth::spawn(allowed).await;
        token_round_trip(&auth, "alice")
            .await
            .expect("REDIS_ALLOW_EVICTION=true starts and serves");
    }
    let noeviction = RedisNode::spawn(dir.path(), &args(&["--maxmemory-policy", "noeviction"]));
    let auth = TestAuth::spawn(config(Some(noeviction.url()))).await;
    token_round_trip(&auth, "alice")
        .await
        .expect("noeviction serves");
}

/// Waits until `replica` has its link to the master up.
async fn wait_for_link(replica: &RedisNode) {
    wait_until(
        Duration::from_secs(10),
        "the replica is in sync",
        || async {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
        },
    )
    .await;
}

#[tokio::test]
async fn wait_replicas_holds_writes_until_a_replica_has_them_and_fails_fast_without_one() {
    let dir = PkiDir::new();
    let master = RedisNode::spawn(dir.path(), &[]);
    let mut replica = RedisNode::spawn(
        dir.path(),
        &args(&["--replicaof", "127.0.0.1", &master.port().to_string()]),
    );
    wait_for_link(&replica).await;
    let mut settings = config(Some(master.url()));
    settings.redis_wait_replicas = 1;
    let auth = TestAuth::spawn(settings).await;

    token_round_trip(&auth, "alice")
        .await
        .expect("one replica acknowledges");
    let id = publish(&auth, "replicated")
        .await
        .expect("publish acknowledged");
    // What was acknowledged is on the replica already.
    let stream = replica.cli(&["XRANGE", "wsauth:{events}", "-", "+"]);
    assert!(
        stream.contains("replicated"),
        "replica has the event: {stream}"
    );

    replica.kill();
    let started = std::time::Instant::now();
    let consumed = token_round_trip(&auth, "bob").await;
    assert_code(consumed, Code::Unavailable);
    assert_code(publish(&auth, "unreplicated").await, Code::Unavailable);
    // WAIT gives up at half the Redis timeout (1 s): failing, not hanging.
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    // Reads need no replica.
    let mut client = auth.broadcast_client().await;
    let history = call(client.history(req(
        HistoryRequest {
            after_id: String::new(),
            user_id: None,
            limit: None,
            from_oldest: true,
            resumable: false,
        },
        Some(INTERNAL_KEY),
    )))
    .await
    .expect("history");
    assert!(history.events.iter().any(|event| event.id == id));
}

struct TlsFiles {
    ca: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
}

fn tls_files(dir: &PkiDir, ca: &TestCa) -> TlsFiles {
    TlsFiles {
        ca: dir.write("ca.pem", &ca.pem()),
        server: dir.write_leaf("redis", &ca.leaf("redis")),
        client: dir.write_leaf("auth", &ca.leaf("auth")),
    }
}

/// A redis-server whose TLS port requires a client certificate of `files.ca`.
fn tls_redis(dir: &PkiDir, files: &TlsFiles) -> (RedisNode, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let path = |p: &PathBuf| p.display().to_string();
    let node = RedisNode::spawn(
        dir.path(),
        &[
            "--tls-port".into(),
            port.to_string(),
            "--tls-cert-file".into(),
            path(&files.server.0),
            "--tls-key-file".into(),
            path(&files.server.1),
            "--tls-ca-cert-file".into(),
            path(&files.ca),
            "--tls-auth-clients".into(),
            "yes".into(),
        ],
    );
    (node, port)
}

#[tokio::test]
async fn rediss_with_a_client_certificate_serves_and_without_one_is_unavailable() {
    let dir = PkiDir::new();
    let ca = TestCa::new("redis test CA");
    let files = tls_files(&dir, &ca);
    let (_redis, port) = tls_redis(&dir, &files);
    let url = format!("rediss://localhost:{port}");

    let mut settings = config(Some(url.clone()));
    settings.redis_ca_file = Some(files.ca.clone());
    settings.redis_client_cert_file = Some(files.client.0.clone());
    settings.redis_client_key_file = Some(files.client.1.clone());
    let auth = TestAuth::spawn(settings).await;
    token_round_trip(&auth, "alice")
        .await
        .expect("tokens over TLS");
    publish(&auth, "over tls").await.expect("publish over TLS");

    // No client certificate: redis's handshake refuses it.
    let mut no_cert = config(Some(url.clone()));
    no_cert.redis_ca_file = Some(files.ca.clone());
    let auth = TestAuth::spawn(no_cert).await;
    assert_code(token_round_trip(&auth, "alice").await, Code::Unavailable);

    // A CA that did not sign the server's certificate: auth refuses redis.
    let other = TestCa::new("another CA");
    let mut wrong_ca = config(Some(url));
    wrong_ca.redis_ca_file = Some(dir.write("other-ca.pem", &other.pem()));
    wrong_ca.redis_client_cert_file = Some(files.client.0.clone());
    wrong_ca.redis_client_key_file = Some(files.client.1.clone());
    let auth = TestAuth::spawn(wrong_ca).await;
    assert_code(token_round_trip(&auth, "alice").await, Code::Unavailable);
}

/// Presence is on the store's connection: over `rediss://` with a private CA
/// and a client certificate, a gateway's report is listed and its user found.
#[tokio::test]
async fn presence_works_over_rediss_with_a_private_ca_and_a_client_certificate() {
    let dir = PkiDir::new();
    let ca = TestCa::new("redis presence CA");
    let files = tls_files(&dir, &ca);
    let (_redis, port) = tls_redis(&dir, &files);
    let mut settings = config(Some(format!("rediss://localhost:{port}")));
    settings.redis_ca_file = Some(files.ca.clone());
    settings.redis_client_cert_file = Some(files.client.0.clone());
    settings.redis_client_key_file = Some(files.client.1.clone());
    let auth = TestAuth::spawn(settings).await;
    let mut admin = AdminServiceClient::new(auth.channel().await);

    let connected_at = prost_types::Timestamp {
        seconds: i64::try_from(now_s()).expect("now fits i64"),
        nanos: 0,
    };
    let reported = call(admin.report_gateway(req(
        ReportGatewayRequest {
            gateway_id: "gw-tls".into(),
            connections: 1,
            authenticated: 1,
            started_at: Some(connected_at),
            full: true,
            added: vec![ConnectionEntry {
                conn_id: "c1".into(),
                user_id: "alice".into(),
                connected_at: Some(connected_at),
            }],
            removed: Vec::new(),
        },
        Some(INTERNAL_KEY),
    )))
    .await
    .expect("ReportGateway over TLS");
    assert!(!reported.resync);

    let listed = call(admin.list_gateways(req(ListGatewaysRequest {}, Some(ADMIN_KEY))))
        .await
        .expect("ListGateways over TLS")
        .gateways;
    let ids: Vec<&str> = listed.iter().map(|g| g.gateway_id.as_str()).collect();
    assert_eq!(ids, ["gw-tls"]);
    assert_eq!(listed[0].authenticated, 1);
    let found = call(admin.presence(req(
        PresenceRequest {
            user_id: "alice".into(),
        },
        Some(ADMIN_KEY),
    )))
    .await
    .expect("Presence over TLS")
    .connections;
    let found: Vec<(&str, &str)> = found
        .iter()
        .map(|c| (c.gateway_id.as_str(), c.conn_id.as_str()))
        .collect();
    assert_eq!(found, [("gw-tls", "c1")]);
}
