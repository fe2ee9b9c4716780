//! The gateway's own listener over TLS (GATEWAY_TLS_CERT_FILE/KEY_FILE), with
//! the real binaries and certificates made in the test: `/token/ws` over
//! HTTPS and a `wss://` session that authenticates and echoes; a rotated
//! certificate reaches new connections while an established `wss://` one
//! carries on; plain HTTP, or a client that never says hello, on the TLS port
//! is dropped promptly and harms no one else.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wsauth_tests::pki::{Leaf, PkiDir, TestCa};
use wsauth_tests::tls_client::{self, https_get};
use wsauth_tests::{
    AuthOptions, GatewayOptions, Jwt, STEP, TestAuth, TestGateway, TestRedis, WsClient, http,
    wait_until,
};

/// Files are re-read every 5 s: a change shows well within this.
const RELOAD_WITHIN: Duration = Duration::from_secs(20);

/// Redis, auth, and a gateway serving TLS with `leaf` (files in `dir`).
struct Stack {
    dir: PkiDir,
    gateway: TestGateway,
    _auth: TestAuth,
    _redis: TestRedis,
}

impl Stack {
    async fn spawn(ca: &TestCa, leaf: &Leaf) -> Self {
        let dir = PkiDir::new();
        let (cert, key) = dir.write_leaf("gateway", leaf);
        let redis = TestRedis::spawn();
        let auth = TestAuth::spawn(Some(&redis), AuthOptions::default()).await;
        let gateway = TestGateway::spawn(
            &[&auth],
            GatewayOptions::default()
                .env("GATEWAY_TLS_CERT_FILE", cert.display())
                .env("GATEWAY_TLS_KEY_FILE", key.display()),
        )
        .await;
        let addr = gateway.addr();
        let ca_pem = ca.pem();
        wait_until(STEP, "the gateway is ready over HTTPS", || async {
            matches!(https_get(addr, &ca_pem, "/readyz", &[]).await, Ok(r) if r.status == 200)
        })
        .await;
        Self {
            dir,
            gateway,
            _auth: auth,
            _redis: redis,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.gateway.addr()
    }

    /// `/token/ws` over HTTPS, `wss://` upgrade, jwt frame, `auth_ok`.
    async fn authenticated(&self, ca_pem: &str, user: &str) -> WsClient {
        let jwt = Jwt::for_user(user).sign();
        let response = https_get(
            self.addr(),
            ca_pem,
            "/token/ws",
            &[("authorization", &format!("Bearer {jwt}"))],
        )
        .await
        .expect("GET /token/ws over HTTPS");
        assert_eq!(response.status, 200, "{}", response.body);
        let token = response.json()["token"]
            .as_str()
            .expect("a token")
            .to_string();
        let mut client = WsClient::connect_tls(self.addr(), ca_pem, &format!("/ws?token={token}"))
            .await
            .unwrap_or_else(|status| panic!("wss upgrade refused with {status}"));
        client.send_jwt(&jwt).await;
        assert_eq!(
            client.recv_json(STEP).await,
            json!({"type": "auth_ok", "user_id": user})
        );
        client.set_user(user);
        client
    }
}

#[tokio::test]
async fn https_and_wss_authenticate_and_echo_with_alpn_http1() {
    let ca = TestCa::new("wsauth gateway CA");
    let stack = Stack::spawn(&ca, &ca.leaf("gateway")).await;

    let stream = tls_client::connect(stack.addr(), &ca.pem())
        .await
        .expect("handshake with a client trusting the CA");
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    drop(stream);

    let refused = https_get(stack.addr(), &ca.pem(), "/token/ws", &[])
        .await
        .expect("an HTTPS answer");
    assert_eq!(refused.status, 401, "no bearer over HTTPS is still 401");

    let mut client = stack.authenticated(&ca.pem(), "alice").await;
    client.echo("over wss").await;

    let stranger = TestCa::new("another CA");
    assert!(
        tls_client::connect(stack.addr(), &stranger.pem())
            .await
            .is_err(),
        "a client trusting another CA refuses the gateway's certificate"
    );
}

#[tokio::test]
async fn a_rotated_certificate_reaches_new_connections_and_established_wss_carries_on() {
    let old_ca = TestCa::new("old CA");
    let old_leaf = old_ca.leaf("gateway");
    let stack = Stack::spawn(&old_ca, &old_leaf).await;
    let mut established = stack.authenticated(&old_ca.pem(), "alice").await;

    let new_ca = TestCa::new("new CA");
    let new_leaf = new_ca.leaf("gateway");
    // Key first, then certificate: in between the pair does not match, and
    // the gateway must keep serving the old one rather than fail.
    stack.dir.write("gateway.key", &new_leaf.key_pem);
    stack.dir.write("gateway.pem", &new_leaf.cert_pem);

    let addr = stack.addr();
    let new_pem = new_ca.pem();
    let started = Instant::now();
    wait_until(
        RELOAD_WITHIN,
        "new connections get the new certificate",
        || async {
            matches!(tls_client::connect(addr, &new_pem).await,
            Ok(stream) if tls_client::peer_leaf(&stream) == tls_client::der(&new_leaf.cert_pem))
        },
    )
    .await;
    eprintln!("rotation seen after {:?}", started.elapsed());

    assert!(
        tls_client::connect(addr, &old_ca.pem()).await.is_err(),
        "the old certificate is no longer presented"
    );
    established.echo("still here after the rotation").await;
    let mut fresh = stack.authenticated(&new_pem, "bob").await;
    fresh.echo("new certificate").await;
    established.echo("and still here").await;
}

#[tokio::test]
async fn plain_http_and_a_silent_client_on_the_tls_port_are_dropped_promptly() {
    let ca = TestCa::new("wsauth gateway CA");
    let stack = Stack::spawn(&ca, &ca.leaf("gateway")).await;

    // A client that connects and never sends its hello holds a task only
    // until the handshake deadline (10 s).
    let mut silent = TcpStream::connect(stack.addr()).await.expect("connect");
    let silent_since = Instant::now();

    let started = Instant::now();
    let plain = http::try_get(stack.addr(), "/healthz", &[]).await;
    assert!(plain.is_err(), "plain HTTP on the TLS port: {plain:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "plain HTTP was dropped after {:?}, not at once",
        started.elapsed()
    );
    // Raw bytes too: whatever comes back is not an HTTP response, and the
    // connection ends.
    let mut raw = TcpStream::connect(stack.addr()).await.expect("connect");
    raw.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(STEP, raw.read_to_end(&mut answer))
        .await
        .expect("the connection ends")
        .ok();
    assert!(!answer.starts_with(b"HTTP/"), "{answer:?}");

    let ok = https_get(stack.addr(), &ca.pem(), "/healthz", &[])
        .await
        .expect("HTTPS still served");
    assert_eq!(ok.status, 200);

    let mut buf = [0u8; 64];
    let ended = tokio::time::timeout(Duration::from_secs(20), silent.read(&mut buf))
        .await
        .expect("the silent client is dropped within the handshake deadline");
    assert!(matches!(ended, Ok(0) | Err(_)), "{ended:?}");
    let held = silent_since.elapsed();
    assert!(
        held >= Duration::from_secs(8) && held < Duration::from_secs(16),
        "a silent client was held {held:?}"
    );
}

/// Runs the gateway with `env` until it exits (it must, within [`STEP`];
/// killed otherwise): its stderr.
async fn refused_start(env: &[(&str, &str)]) -> String {
    let mut command = tokio::process::Command::new(wsauth_tests::bin_path("wsauth-gateway"));
    command
        .env("GATEWAY_LISTEN", "127.0.0.1:0")
        .env("AUTH_URL", "http://127.0.0.1:9")
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let output = tokio::time::timeout(STEP, command.output())
        .await
        .unwrap_or_else(|_| panic!("the gateway with {env:?} still runs after {STEP:?}"))
        .expect("run the gateway");
    assert!(!output.status.success(), "{env:?} started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn half_a_certificate_pair_or_unreadable_files_stop_the_start() {
    for half in [
        ("GATEWAY_TLS_CERT_FILE", "/nonexistent/cert.pem"),
        ("GATEWAY_TLS_KEY_FILE", "/nonexistent/key.pem"),
    ] {
        let stderr = refused_start(&[half]).await;
        assert!(
            stderr.contains("--gateway-tls-cert-file") && stderr.contains("--gateway-tls-key-file"),
            "{stderr}"
        );
    }
    let stderr = refused_start(&[
        ("GATEWAY_TLS_CERT_FILE", "/nonexistent/cert.pem"),
        ("GATEWAY_TLS_KEY_FILE", "/nonexistent/key.pem"),
    ])
    .await;
    assert!(stderr.contains("/nonexistent/cert.pem"), "{stderr}");
}
