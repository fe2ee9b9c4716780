//! `run` over real sockets, with nothing listening where auth should be:
//! the gateway must start, answer health, refuse handshakes with 503, and
//! stop promptly.

use std::net::SocketAddr;
use std::time::Duration;

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
