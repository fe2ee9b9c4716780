//! `run` over real sockets, with nothing listening where auth should be:
//! the gateway must start, answer health, refuse handshakes with 503, and
//! stop promptly.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use wsauth_gateway::auth_client::AuthClient;
use wsauth_gateway::metrics::Metrics;
use wsauth_gateway::state::AppState;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wsauth_gateway::{Config, RunError};

const DEADLINE: Duration = Duration::from_secs(10);

struct Gateway {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), RunError>>,
}

async fn spawn_gateway() -> Gateway {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead_port = dead.local_addr().expect("addr").port();
    drop(dead);
    let mut config = Config::with_auth_url(format!("http://127.0.0.1:{dead_port}"));
    config.auth_call_timeout_ms = 300;
    config.shutdown_grace_s = 5;
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(wsauth_gateway::run(config, listener, async move {
        let _ = stopped.await;
    }));
    Gateway { addr, stop, task }
}

/// A bare HTTP/1.1 GET; the status code.
async fn get_status(addr: SocketAddr, path: &str) -> u16 {
    let exchange = async {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.expect("read");
        let text = String::from_utf8_lossy(&response);
        text.split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("no status line in {text:?}"))
    };
    tokio::time::timeout(DEADLINE, exchange)
        .await
        .expect("answer within the deadline")
}

#[tokio::test]
async fn with_auth_down_the_gateway_serves_health_and_refuses_handshakes_with_503() {
    let gateway = spawn_gateway().await;
    assert_eq!(get_status(gateway.addr, "/healthz").await, 200);
    assert_eq!(get_status(gateway.addr, "/readyz").await, 503);
    assert_eq!(get_status(gateway.addr, "/metrics").await, 200);

    let url = format!("ws://{}/ws?token=some-token", gateway.addr);
    let refused = tokio::time::timeout(DEADLINE, tokio_tungstenite::connect_async(url))
        .await
        .expect("answer within the deadline");
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("expected an HTTP 503, got {other:?}"),
    }
}

#[tokio::test]
async fn run_returns_promptly_after_shutdown_and_stops_accepting() {
    let gateway = spawn_gateway().await;
    assert_eq!(get_status(gateway.addr, "/healthz").await, 200);
    gateway.stop.send(()).expect("gateway still running");
    let result = tokio::time::timeout(DEADLINE, gateway.task)
        .await
        .expect("run returns within the deadline")
        .expect("run did not panic");
    assert!(result.is_ok(), "{result:?}");
    assert!(
        TcpStream::connect(gateway.addr).await.is_err(),
        "listener closed"
    );
}

/// `serve` with auth down and a short header deadline, for the timeout tests.
async fn spawn_serve(header_read_timeout: Duration) -> (SocketAddr, CancellationToken) {
    let mut config = Config::with_auth_url("http://127.0.0.1:9");
    config.auth_call_timeout_ms = 300;
    let metrics = Metrics::default();
    let auth = AuthClient::new(
        &config.auth_url,
        None,
        config.auth_call_timeout(),
        metrics.clone(),
    )
    .expect("valid url");
    let state = AppState::new(&config, auth, metrics);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let cancel = CancellationToken::new();
    tokio::spawn(wsauth_gateway::serve(
        listener,
        wsauth_gateway::app(state),
        cancel.clone(),
        TaskTracker::new(),
        header_read_timeout,
        None,
    ));
    (addr, cancel)
}

/// Reads until the server closes the connection; what it sent, and when.
async fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return (received, Instant::now()),
            Ok(n) => received.extend_from_slice(&buf[..n]),
        }
    }
}

const SHORT_HEADER_TIMEOUT: Duration = Duration::from_millis(400);

#[tokio::test]
async fn a_client_that_sends_nothing_is_disconnected_after_the_header_timeout() {
    let (addr, _cancel) = spawn_serve(SHORT_HEADER_TIMEOUT).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let connected = Instant::now();
    let (_, closed) = tokio::time::timeout(DEADLINE, read_until_closed(&mut stream))
        .await
        .expect("the silent client is disconnected");
    let held = closed - connected;
    assert!(
        held >= SHORT_HEADER_TIMEOUT / 2,
        "closed too early: {held:?}"
    );
    assert!(held < SHORT_HEADER_TIMEOUT * 5, "closed too late: {held:?}");
}

#[tokio::test]
async fn a_client_trickling_its_headers_is_disconnected() {
    let (addr, _cancel) = spawn_serve(SHORT_HEADER_TIMEOUT).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let connected = Instant::now();
    let trickle = async {
        for line in [
            "GET /healthz HTTP/1.1\r\n",
            "Host: gw\r\n",
            "X-A: 1\r\n",
            "X-B: 2\r\n",
        ] {
            if stream.write_all(line.as_bytes()).await.is_err() {
                break;
            }
            tokio::time::sleep(SHORT_HEADER_TIMEOUT / 3).await;
        }
        read_until_closed(&mut stream).await
    };
    let (received, closed) = tokio::time::timeout(DEADLINE, trickle)
        .await
        .expect("the slow client is disconnected");
    let text = String::from_utf8_lossy(&received);
    assert!(!text.contains(" 200 "), "headers never completed: {text}");
    assert!(closed - connected < SHORT_HEADER_TIMEOUT * 5);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let (addr, _cancel) = spawn_serve(SHORT_HEADER_TIMEOUT).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .expect("write");
    let answered = Instant::now();
    let (received, closed) = tokio::time::timeout(DEADLINE, read_until_closed(&mut stream))
        .await
        .expect("the idle connection is closed");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(closed - answered < SHORT_HEADER_TIMEOUT * 5);
}

#[tokio::test]
async fn serve_stops_accepting_on_cancel_and_closes_idle_connections() {
    let (addr, cancel) = spawn_serve(Duration::from_secs(30)).await;
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .expect("write");
    let mut buf = [0u8; 256];
    let n = tokio::time::timeout(DEADLINE, idle.read(&mut buf))
        .await
        .expect("answer")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    cancel.cancel();
    tokio::time::timeout(DEADLINE, read_until_closed(&mut idle))
        .await
        .expect("the idle keep-alive connection is closed on shutdown");
    let refused = async {
        loop {
            if TcpStream::connect(addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(DEADLINE, refused)
        .await
        .expect("the listener closes");
}

#[test]
fn run_uses_a_ten_second_header_deadline() {
    assert_eq!(wsauth_gateway::HEADER_READ_TIMEOUT, Duration::from_secs(10));
}
