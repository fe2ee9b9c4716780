//! Startup rules, health, reflection, and the binary itself.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tokio_stream::StreamExt as _;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use wsauth_auth::ServeError;
use wsauth_shared::proto::{IssueWsTokenRequest, ValidateTokenRequest};

#[tokio::test]
async fn without_keys_auth_refuses_a_non_loopback_address() {
    let mut config = config(None);
    config.internal_api_keys.clear();
    config.admin_api_keys.clear();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0")
        .await
        .expect("bind");
    let result = wsauth_auth::run(config, listener, std::future::pending()).await;
    let error = result.expect_err("must refuse to start");
    assert!(matches!(error, ServeError::OpenOnNonLoopback(_)), "{error}");
    assert!(error.to_string().contains("ADMIN_API_KEYS"), "{error}");
}

#[tokio::test]
async fn without_keys_on_loopback_every_caller_is_accepted() {
    let mut config = config(None);
    config.internal_api_keys.clear();
    config.admin_api_keys.clear();
    let auth = TestAuth::spawn(config).await;
    let mut client = auth.auth_client().await;
    let token = call(client.issue_ws_token(req(
        IssueWsTokenRequest {
            jwt: Jwt::for_user("x").sign(),
        },
        None,
    )))
    .await
    .expect("issue")
    .token;
    call(client.validate_token(req(ValidateTokenRequest { token }, None)))
        .await
        .expect("no key needed");
}

#[tokio::test]
async fn without_a_jwt_key_auth_refuses_to_start() {
    let mut config = config(None);
    config.jwt_hs256_secret = None;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let error = wsauth_auth::run(config, listener, std::future::pending())
        .await
        .expect_err("refuses");
    assert!(
        error.to_string().contains("no JWT key configured"),
        "{error}"
    );
}

#[tokio::test]
async fn health_reports_both_services_serving_without_a_key() {
    let auth = TestAuth::spawn(config(None)).await;
    let mut health = HealthClient::new(auth.channel().await);
    for service in ["wsauth.v1.AuthService", "wsauth.v1.BroadcastService", ""] {
        let response = call(health.check(HealthCheckRequest {
            service: service.into(),
        }))
        .await
        .expect("check");
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
}

#[tokio::test]
async fn reflection_lists_the_services_in_v1_and_v1alpha() {
    use tonic_reflection::pb::{v1, v1alpha};
    let auth = TestAuth::spawn(config(None)).await;

    let mut client =
        v1::server_reflection_client::ServerReflectionClient::new(auth.channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = call(client.server_reflection_info(tokio_stream::once(request)))
        .await
        .expect("v1");
    let response = stream.next().await.expect("a response").expect("ok");
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected v1 response");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"wsauth.v1.AuthService") && names.contains(&"wsauth.v1.BroadcastService"),
        "{names:?}"
    );

    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(auth.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut stream = call(client.server_reflection_info(tokio_stream::once(request)))
        .await
        .expect("v1alpha");
    let response = stream.next().await.expect("a response").expect("ok");
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        response.message_response
    else {
        panic!("unexpected v1alpha response");
    };
    assert!(
        list.service
            .iter()
            .any(|s| s.name == "wsauth.v1.AuthService")
    );
}

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_wsauth-auth"));
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        // Tests run side by side: none may take the default metrics port.
        .env("AUTH_METRICS_LISTEN", "");
    command
}

#[tokio::test]
async fn mint_jwt_prints_only_a_jwt_that_auth_accepts() {
    let output = binary()
        .args(["mint-jwt", "--sub", "mina", "--ttl-s", "120"])
        .env("JWT_HS256_SECRET", JWT_SECRET)
        .output()
        .expect("run wsauth-auth");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("utf-8");
    assert!(
        stdout.ends_with('\n') && stdout.matches('\n').count() == 1,
        "{stdout:?}"
    );
    let jwt = stdout.trim_end();
    assert_eq!(jwt.split('.').count(), 3);

    let auth = TestAuth::spawn(config(None)).await;
    let mut client = auth.auth_client().await;
    let issued = call(client.issue_ws_token(req(IssueWsTokenRequest { jwt: jwt.into() }, None)))
        .await
        .expect("issue");
    assert_eq!(issued.user_id, "mina");

    let failed = binary()
        .args(["mint-jwt", "--sub", "x"])
        .output()
        .expect("run");
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("JWT_HS256_SECRET"));
}

#[test]
fn the_binary_logs_listening_with_its_address_and_stops_on_sigterm() {
    let mut child = binary()
        .env("AUTH_LISTEN", "127.0.0.1:0")
        .env("JWT_HS256_SECRET", JWT_SECRET)
        .env("INTERNAL_API_KEYS", "a,b")
        .env("ADMIN_API_KEYS", "c")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .env("SHUTDOWN_GRACE_S", "2")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsauth-auth");
    let rx = stderr_lines(&mut child);
    let mut addr = None;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while addr.is_none() {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx
            .recv_timeout(remaining)
            .expect("a `listening` line within 10 s");
        let value: serde_json::Value = serde_json::from_str(&line).expect("json log line");
        if value["message"] == "listening" {
            addr = value["addr"].as_str().map(str::to_owned);
        }
    }
    let addr: std::net::SocketAddr = addr.expect("addr").parse().expect("socket address");
    assert_ne!(addr.port(), 0);
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .expect("accepting connections");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn an_empty_redis_url_means_the_embedded_store_like_an_unset_one() {
    let mut child = binary()
        .env("AUTH_LISTEN", "127.0.0.1:0")
        .env("JWT_HS256_SECRET", JWT_SECRET)
        .env("REDIS_URL", "")
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn wsauth-auth");
    let rx = stderr_lines(&mut child);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut embedded = false;
    while !embedded {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        let Ok(line) = rx.recv_timeout(remaining) else {
            break;
        };
        embedded = line.contains("embedded in-memory store");
    }
    let still_running = child.try_wait().expect("wait").is_none();
    let _ = child.kill();
    let _ = child.wait();
    assert!(embedded, "auth announced the embedded store");
    assert!(still_running, "auth kept serving");
}

/// The child's stderr, line by line, from a reader thread (so waits can
/// have deadlines).
fn stderr_lines(child: &mut std::process::Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
