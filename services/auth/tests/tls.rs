//! auth over TLS with certificates made in the test: served over TLS and
//! not in the clear, mTLS refuses clients without a certificate of the
//! client CA, a client trusting another CA refuses auth, and a rotated
//! certificate reaches new connections while established ones carry on.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use tokio::time::{Instant, timeout};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use wsauth_shared::proto::IssueWsTokenRequest;
use wsauth_shared::proto::auth_service_client::AuthServiceClient;
use wsauth_tests::pki::{Leaf, PkiDir, TestCa};

/// A TLS channel to `auth` that trusts `ca` and presents `identity`, if any.
async fn tls_channel(
    auth: &TestAuth,
    ca: &TestCa,
    identity: Option<&Leaf>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some(leaf) = identity {
        tls = tls.identity(Identity::from_pem(&leaf.cert_pem, &leaf.key_pem));
    }
    Endpoint::from_shared(format!("https://{}", auth.addr))?
        .tls_config(tls)?
        .connect_timeout(Duration::from_secs(2))
        .timeout(CALL_DEADLINE)
        .connect()
        .await
}

/// One IssueWsToken round trip over `channel`: Ok when auth answered.
async fn issue(channel: Channel) -> Result<String, tonic::Status> {
    let mut client = AuthServiceClient::new(channel);
    let request = req(
        IssueWsTokenRequest {
            jwt: Jwt::for_user("alice").sign(),
        },
        None,
    );
    call(client.issue_ws_token(request)).await.map(|r| r.token)
}

/// Connects and calls: Ok only when both the handshake and the call succeed.
async fn reachable(auth: &TestAuth, ca: &TestCa, identity: Option<&Leaf>) -> bool {
    let result = timeout(CALL_DEADLINE, async {
        let channel = tls_channel(auth, ca, identity).await.ok()?;
        issue(channel).await.ok()
    })
    .await;
    matches!(result, Ok(Some(_)))
}

struct Setup {
    _dir: PkiDir,
    cert: PathBuf,
    key: PathBuf,
    client_ca: PathBuf,
}

fn setup(server_ca: &TestCa, client_ca: &TestCa) -> Setup {
    let dir = PkiDir::new();
    let (cert, key) = dir.write_leaf("server", &server_ca.leaf("auth"));
    let client_ca = dir.write("client-ca.pem", &client_ca.pem());
    Setup {
        _dir: dir,
        cert,
        key,
        client_ca,
    }
}

#[tokio::test]
async fn tls_is_served_and_plaintext_is_not() {
    let ca = TestCa::new("server CA");
    let files = setup(&ca, &ca);
    let mut cfg = config(None);
    cfg.tls_cert_file = Some(files.cert.clone());
    cfg.tls_key_file = Some(files.key.clone());
    let auth = TestAuth::spawn(cfg).await;

    assert!(reachable(&auth, &ca, None).await, "TLS without mTLS");
    let plain = timeout(CALL_DEADLINE, async {
        let channel = Endpoint::from_shared(format!("http://{}", auth.addr))
            .expect("uri")
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(2))
            .connect()
            .await
            .ok()?;
        issue(channel).await.ok()
    })
    .await;
    assert!(
        matches!(plain, Ok(None)),
        "plaintext must not be served: {plain:?}"
    );
    // A client that trusts another CA refuses auth's certificate.
    let stranger = TestCa::new("another CA");
    assert!(
        !reachable(&auth, &stranger, None).await,
        "wrong CA accepted"
    );
}

#[tokio::test]
async fn mtls_needs_a_client_certificate_of_the_client_ca() {
    let server_ca = TestCa::new("server CA");
    let client_ca = TestCa::new("client CA");
    let files = setup(&server_ca, &client_ca);
    let mut cfg = config(None);
    cfg.tls_cert_file = Some(files.cert.clone());
    cfg.tls_key_file = Some(files.key.clone());
    cfg.tls_client_ca_file = Some(files.client_ca.clone());
    let auth = TestAuth::spawn(cfg).await;

    let gateway = client_ca.leaf("gateway");
    assert!(reachable(&auth, &server_ca, Some(&gateway)).await);
    assert!(
        !reachable(&auth, &server_ca, None).await,
        "no client certificate"
    );
    let forged = TestCa::new("attacker CA").leaf("gateway");
    assert!(
        !reachable(&auth, &server_ca, Some(&forged)).await,
        "a client certificate of another CA"
    );
}

#[tokio::test]
async fn a_rotated_certificate_reaches_new_connections_and_spares_open_ones() {
    let old_ca = TestCa::new("old CA");
    let files = setup(&old_ca, &old_ca);
    let mut cfg = config(None);
    cfg.tls_cert_file = Some(files.cert.clone());
    cfg.tls_key_file = Some(files.key.clone());
    let auth = TestAuth::spawn(cfg).await;

    let open = tls_channel(&auth, &old_ca, None).await.expect("connect");
    issue(open.clone()).await.expect("served before rotation");

    // Rotate to a certificate of a new CA: key first, then cert (each an atomic rename).
    let new_ca = TestCa::new("new CA");
    let leaf = new_ca.leaf("auth");
    let dir = files.cert.parent().expect("dir").to_path_buf();
    std::fs::write(dir.join(".key.tmp"), &leaf.key_pem).expect("write");
    std::fs::rename(dir.join(".key.tmp"), &files.key).expect("rename");
    std::fs::write(dir.join(".cert.tmp"), &leaf.cert_pem).expect("write");
    std::fs::rename(dir.join(".cert.tmp"), &files.cert).expect("rename");

    let started = Instant::now();
    while !reachable(&auth, &new_ca, None).await {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the new certificate was not served within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        !reachable(&auth, &old_ca, None).await,
        "new connections still get the old certificate"
    );
    // The connection made before the rotation still works: had it been
    // dropped, the reconnect would fail on the new CA.
    for _ in 0..3 {
        issue(open.clone())
            .await
            .expect("the open connection survives");
    }
}

#[tokio::test]
async fn unreadable_certificate_files_stop_the_start() {
    let mut cfg = config(None);
    cfg.tls_cert_file = Some(PathBuf::from("/nonexistent/cert.pem"));
    cfg.tls_key_file = Some(PathBuf::from("/nonexistent/key.pem"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let result = timeout(
        CALL_DEADLINE,
        wsauth_auth::run(cfg, listener, std::future::pending()),
    )
    .await
    .expect("refused at once");
    let error = result.expect_err("missing files are an error");
    assert!(
        error.to_string().contains("/nonexistent/cert.pem"),
        "{error}"
    );
}
