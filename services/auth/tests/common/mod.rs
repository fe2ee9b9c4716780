//! The harness for auth's gRPC tests: the real server via `run` on
//! 127.0.0.1:0, a private redis-server, tonic clients.
#![allow(dead_code)] // each test file uses a different part

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use wsauth_auth::clock::now_ms;
use wsauth_auth::{Config, ServeError};
use wsauth_shared::proto::auth_service_client::AuthServiceClient;
use wsauth_shared::proto::broadcast_service_client::BroadcastServiceClient;
/// One JWT minter and one wait helper for every test in the workspace.
#[allow(unused_imports)] // each test file uses a different part
pub use wsauth_tests::{JWT_SECRET, Jwt, JwtAlg, wait_until};

pub const INTERNAL_KEY: &str = "internal-key-1";
pub const ADMIN_KEY: &str = "admin-key-1";
/// Every call in these tests must finish well within this.
pub const CALL_DEADLINE: Duration = Duration::from_secs(5);

/// Tests are quiet unless TEST_LOG is set.
pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        wsauth_shared::telemetry::init(wsauth_shared::telemetry::LogFormat::Text);
    }
}

/// The config the tests start from: HS256, both key kinds, the given Redis.
pub fn config(redis_url: Option<String>) -> Config {
    let mut config = Config::with_hs256_secret(JWT_SECRET);
    config.redis_url = redis_url.map(SecretString::from);
    config.internal_api_keys = vec![SecretString::from(INTERNAL_KEY)];
    config.admin_api_keys = vec![SecretString::from(ADMIN_KEY)];
    config
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A running auth server.
pub struct TestAuth {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), ServeError>>>,
}

impl TestAuth {
    /// Runs `config` on 127.0.0.1:0 (the config's own listen address is ignored).
    pub async fn spawn(config: Config) -> Self {
        init_logs();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(wsauth_auth::run(config, listener, async move {
            let _ = stopped.await;
        }));
        // The listener is bound before `run` starts: connections made from
        // now on wait in its backlog, so there is nothing to wait for.
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(format!("http://{}", self.addr))
            .expect("endpoint")
            .connect_timeout(Duration::from_secs(2))
            .connect()
            .await
            .expect("connect to auth")
    }

    pub async fn auth_client(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel().await)
    }

    pub async fn broadcast_client(&self) -> BroadcastServiceClient<Channel> {
        BroadcastServiceClient::new(self.channel().await)
    }

    /// Signals shutdown and returns what `run` returned.
    pub async fn shutdown(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("not yet shut down");
        timeout(Duration::from_secs(15), task)
            .await
            .expect("run returns within the grace period")
            .expect("run task")
    }
}

impl Drop for TestAuth {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A request carrying `authorization: Bearer <key>` (None: no header).
pub fn req<T>(message: T, key: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(key) = key {
        request.metadata_mut().insert(
            "authorization",
            format!("Bearer {key}").parse().expect("ascii"),
        );
    }
    request.set_timeout(CALL_DEADLINE);
    request
}

/// Runs a call under the test deadline: a hang fails the test instead of stalling it.
pub async fn call<T>(
    f: impl Future<Output = Result<tonic::Response<T>, Status>>,
) -> Result<T, Status> {
    timeout(CALL_DEADLINE + Duration::from_secs(1), f)
        .await
        .expect("the call finished within its deadline")
        .map(tonic::Response::into_inner)
}

pub fn assert_code<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> Status {
    match result {
        Ok(value) => panic!("expected {code:?}, got Ok({value:?})"),
        Err(status) => {
            assert_eq!(status.code(), code, "status: {status:?}");
            status
        }
    }
}

pub fn now_s() -> u64 {
    now_ms() / 1000
}
