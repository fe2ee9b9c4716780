//! The gateway as a TLS client of auth (`AUTH_TLS_*`), with the real
//! binaries and certificates made in the test: mTLS end to end through an
//! `https://` URL and a `dns:///` name; no client certificate or a wrong CA
//! is a prompt 503, not a hang; and rotated files reach new connections
//! while the established Subscribe stream carries on.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};
use wsauth_shared::proto::PublishRequest;
use wsauth_shared::proto::broadcast_service_client::BroadcastServiceClient;
use wsauth_tests::pki::{Leaf, PkiDir, TestCa};
use wsauth_tests::{
    ApiKey, AuthOptions, Bearer, BroadcastClient, Frame, GatewayOptions, Jwt, TestAuth,
    TestGateway, TestRedis, WsClient, wait_until,
};

const CALL_TIMEOUT_MS: u64 = 1000;
/// Files are re-read every 5 s: a change shows well within this.
const RELOAD_WITHIN: Duration = Duration::from_secs(20);

/// A CA, its directory, and auth serving mTLS with a certificate it signed.
struct Stack {
    ca: TestCa,
    dir: PkiDir,
    ca_file: PathBuf,
    auth: TestAuth,
    _redis: TestRedis,
}

impl Stack {
    async fn spawn() -> Self {
        let ca = TestCa::new("wsauth e2e CA");
        let dir = PkiDir::new();
        let (cert, key) = dir.write_leaf("auth", &ca.leaf("auth"));
        let ca_file = dir.write("ca.pem", &ca.pem());
        let redis = TestRedis::spawn();
        let auth = TestAuth::spawn(
            Some(&redis),
            AuthOptions::default()
                .env("TLS_CERT_FILE", cert.display())
                .env("TLS_KEY_FILE", key.display())
                .env("TLS_CLIENT_CA_FILE", ca_file.display()),
        )
        .await;
        Self {
            ca,
            dir,
            ca_file,
            auth,
            _redis: redis,
        }
    }

    /// `https://localhost:PORT`: auth's certificate names localhost.
    fn https_url(&self) -> String {
        format!("https://localhost:{}", self.auth.addr().port())
    }

    /// Gateway settings trusting `ca_file`, presenting the files `gateway.pem`/`.key`.
    fn gateway_options(&self, ca_file: &Path, leaf: Option<&Leaf>) -> GatewayOptions {
        let options = GatewayOptions::default()
            .auth_call_timeout_ms(CALL_TIMEOUT_MS)
            .env("AUTH_TLS_CA_FILE", ca_file.display());
        match leaf {
            Some(leaf) => {
                let (cert, key) = self.dir.write_leaf("gateway", leaf);
                options
                    .env("AUTH_TLS_CERT_FILE", cert.display())
                    .env("AUTH_TLS_KEY_FILE", key.display())
            }
            None => options,
        }
    }

    /// An admin client of auth over mTLS, to publish with.
    fn publisher(&self) -> BroadcastClient {
        let admin = self.ca.leaf("admin");
        let tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(self.ca.pem()))
            .identity(Identity::from_pem(&admin.cert_pem, &admin.key_pem))
            .domain_name("localhost");
        let channel = Endpoint::from_shared(format!("https://{}", self.auth.addr()))
            .expect("a valid URI")
            .tls_config(tls)
            .expect("a valid TLS config")
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .connect_lazy();
        BroadcastServiceClient::with_interceptor(channel, Bearer::new(ApiKey::Admin))
    }
}

/// `/token/ws` with a valid JWT: its status, and how long it took.
async fn token_status(gateway: &TestGateway) -> (u16, Duration) {
    let started = Instant::now();
    let status = gateway
        .token_ws(Some(&Jwt::for_user("tls-user").sign()))
        .await
        .status;
    (status, started.elapsed())
}

/// Publishes `data` until `client` receives it as a broadcast.
async fn receives(publisher: &mut BroadcastClient, client: &mut WsClient, data: &str) {
    for _ in 0..40 {
        let request = PublishRequest {
            data: data.to_owned(),
            user_id: None,
        };
        publisher.publish(request).await.expect("Publish over mTLS");
        while let Some(Frame::Json(frame)) = client.next_frame(Duration::from_millis(500)).await {
            if frame["type"] == "broadcast" && frame["data"] == data {
                return;
            }
        }
    }
    panic!("{data:?} never reached the socket");
}

#[tokio::test]
async fn a_gateway_with_a_client_certificate_serves_sockets_over_mtls() {
    let stack = Stack::spawn().await;
    let leaf = stack.ca.leaf("gateway");
    let by_url = TestGateway::spawn_with_auth_url(
        &stack.https_url(),
        stack.gateway_options(&stack.ca_file, Some(&leaf)),
    )
    .await;
    // A name's addresses are IPs: the name verified is AUTH_TLS_SERVER_NAME
    // ("auth", which auth's certificate carries), not the address.
    let by_name = TestGateway::spawn_with_auth_url(
        &format!("dns:///localhost:{}", stack.auth.addr().port()),
        stack
            .gateway_options(&stack.ca_file, Some(&leaf))
            .env("AUTH_TLS_SERVER_NAME", "auth"),
    )
    .await;
    for gateway in [&by_url, &by_name] {
        gateway.wait_ready(Duration::from_secs(20)).await;
        let mut client = WsClient::authenticated(gateway, "tls-user").await;
        client.echo("over mTLS").await;
    }
    let mut publisher = stack.publisher();
    let mut client = WsClient::authenticated(&by_name, "listener").await;
    receives(
        &mut publisher,
        &mut client,
        "through the TLS Subscribe stream",
    )
    .await;
}

#[tokio::test]
async fn a_gateway_without_a_client_certificate_is_refused_by_auth_promptly() {
    let stack = Stack::spawn().await;
    let gateway = TestGateway::spawn_with_auth_url(
        &stack.https_url(),
        stack.gateway_options(&stack.ca_file, None),
    )
    .await;
    let (status, took) = token_status(&gateway).await;
    assert_eq!(
        status, 503,
        "auth must refuse a gateway without a certificate"
    );
    assert!(
        took < Duration::from_millis(CALL_TIMEOUT_MS + 1500),
        "{took:?}"
    );
    assert_eq!(gateway.readyz().await, 503, "no Subscribe stream either");
}

#[tokio::test]
async fn a_wrong_ca_is_refused_and_the_right_one_is_picked_up_from_the_file() {
    let stack = Stack::spawn().await;
    let other = TestCa::new("not auth's CA");
    let gateway_ca = stack.dir.write("gateway-ca.pem", &other.pem());
    let gateway = TestGateway::spawn_with_auth_url(
        &stack.https_url(),
        stack.gateway_options(&gateway_ca, Some(&stack.ca.leaf("gateway"))),
    )
    .await;
    let (status, took) = token_status(&gateway).await;
    assert_eq!(
        status, 503,
        "auth's certificate is not signed by the trusted CA"
    );
    assert!(
        took < Duration::from_millis(CALL_TIMEOUT_MS + 1500),
        "{took:?}"
    );

    // The CA file is rotated to the right CA: new connections use it.
    stack.dir.write("gateway-ca.pem", &stack.ca.pem());
    wait_until(RELOAD_WITHIN, "the rotated CA file is used", || async {
        token_status(&gateway).await.0 == 200
    })
    .await;
    gateway.wait_ready(Duration::from_secs(20)).await;
    WsClient::authenticated(&gateway, "tls-user").await;
}

#[tokio::test]
async fn a_rotated_client_certificate_reaches_new_connections_while_established_ones_carry_on() {
    let stack = Stack::spawn().await;
    let gateway = TestGateway::spawn_with_auth_url(
        &stack.https_url(),
        stack.gateway_options(&stack.ca_file, Some(&stack.ca.leaf("gateway"))),
    )
    .await;
    gateway.wait_ready(Duration::from_secs(20)).await;
    let mut publisher = stack.publisher();
    let mut listener = WsClient::authenticated(&gateway, "listener").await;
    receives(&mut publisher, &mut listener, "before rotation").await;

    // Rotated to a certificate auth does not trust: new connections fail...
    let untrusted = TestCa::new("not auth's client CA").leaf("gateway");
    stack.dir.write_leaf("gateway", &untrusted);
    wait_until(RELOAD_WITHIN, "the rotated certificate is used", || async {
        token_status(&gateway).await.0 == 503
    })
    .await;
    // ...while the established connection (the Subscribe stream) carries on.
    receives(&mut publisher, &mut listener, "after rotation").await;
    assert_eq!(gateway.readyz().await, 200, "still subscribed");

    // Rotated again, to a good certificate: new connections work again.
    stack.dir.write_leaf("gateway", &stack.ca.leaf("gateway-2"));
    wait_until(RELOAD_WITHIN, "the good certificate is used", || async {
        token_status(&gateway).await.0 == 200
    })
    .await;
    let mut late = WsClient::authenticated(&gateway, "late").await;
    late.echo("after the second rotation").await;
    receives(&mut publisher, &mut listener, "still the same stream").await;
}
