//! `TestGateway`: the real `wsauth-gateway` binary on a loopback port, wired
//! to one or more [`TestAuth`]s, with HTTP helpers.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

use crate::auth::{INTERNAL_KEY, TestAuth};
use crate::http::{self, HttpResponse};
use crate::metrics;
use crate::process::{Launch, Service};

/// Extra settings for a [`TestGateway`], as environment variables.
#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    env: Vec<(String, String)>,
    launch: Launch,
}

impl GatewayOptions {
    /// Sets (or overrides) any environment variable of the gateway process.
    pub fn env(mut self, name: &str, value: impl ToString) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn auth_timeout_s(self, seconds: u64) -> Self {
        self.env("AUTH_TIMEOUT_S", seconds)
    }

    pub fn max_message_bytes(self, bytes: usize) -> Self {
        self.env("MAX_MESSAGE_BYTES", bytes)
    }

    pub fn send_queue_capacity(self, frames: usize) -> Self {
        self.env("SEND_QUEUE_CAPACITY", frames)
    }

    pub fn max_messages_per_s(self, rate: u32) -> Self {
        self.env("MAX_MESSAGES_PER_S", rate)
    }

    pub fn allowed_origins(self, origins: &str) -> Self {
        self.env("ALLOWED_ORIGINS", origins)
    }

    pub fn auth_call_timeout_ms(self, ms: u64) -> Self {
        self.env("AUTH_CALL_TIMEOUT_MS", ms)
    }

    pub fn shutdown_grace_s(self, seconds: u64) -> Self {
        self.env("SHUTDOWN_GRACE_S", seconds)
    }

    /// Where the binary is found and where its stderr goes.
    pub fn launch(mut self, launch: Launch) -> Self {
        self.launch = launch;
        self
    }
}

/// How often [`TestGateway::wait_ready`] asks `/readyz`.
const READY_POLL: Duration = Duration::from_millis(25);

/// A running `wsauth-gateway`. SIGKILLed on drop.
pub struct TestGateway {
    service: Service,
}

impl TestGateway {
    /// Starts a gateway on `127.0.0.1:0` whose `AUTH_URL` lists `auths`.
    pub async fn spawn(auths: &[&TestAuth], options: GatewayOptions) -> Self {
        let urls: Vec<String> = auths.iter().map(|auth| auth.url()).collect();
        Self::spawn_with_auth_url(&urls.join(","), options).await
    }

    /// Starts a gateway with a literal `AUTH_URL` (e.g. nothing listening).
    pub async fn spawn_with_auth_url(auth_url: &str, options: GatewayOptions) -> Self {
        let mut env = vec![
            ("GATEWAY_LISTEN".to_string(), "127.0.0.1:0".to_string()),
            ("AUTH_URL".into(), auth_url.into()),
            ("AUTH_API_KEY".into(), INTERNAL_KEY.into()),
            ("LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "info".into()),
            ("AUTH_CALL_TIMEOUT_MS".into(), "1000".into()),
            ("SHUTDOWN_GRACE_S".into(), "5".into()),
        ];
        env.extend(options.env);
        let service = Service::spawn("gateway", "wsauth-gateway", &env, &options.launch).await;
        Self { service }
    }

    pub fn addr(&self) -> SocketAddr {
        self.service.addr()
    }

    /// The gateway's process id, while it runs (e.g. to read `/proc/<pid>/status`).
    pub fn pid(&self) -> Option<u32> {
        self.service.pid()
    }

    /// `GET path` on this gateway.
    pub async fn get(&self, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
        http::get(self.addr(), path, headers).await
    }

    /// `GET /token/ws`, with `Authorization: Bearer <jwt>` when given.
    pub async fn token_ws(&self, jwt: Option<&str>) -> HttpResponse {
        match jwt {
            Some(jwt) => {
                self.get("/token/ws", &[("authorization", &format!("Bearer {jwt}"))])
                    .await
            }
            None => self.get("/token/ws", &[]).await,
        }
    }

    /// A fresh ws token for `jwt`; panics unless `/token/ws` answers 200.
    pub async fn ws_token(&self, jwt: &str) -> String {
        let response = self.token_ws(Some(jwt)).await;
        assert_eq!(
            response.status, 200,
            "GET /token/ws with a valid JWT: {}",
            response.body
        );
        let body = response.json();
        body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {body}"))
            .to_string()
    }

    /// The `/readyz` status.
    pub async fn readyz(&self) -> u16 {
        self.get("/readyz", &[]).await.status
    }

    /// Waits until `/readyz` answers 200; a gateway that never gets there
    /// fails the test with the end of its log, which says why.
    pub async fn wait_ready(&self, within: Duration) {
        let ready = tokio::time::timeout(within, async {
            while self.readyz().await != 200 {
                tokio::time::sleep(READY_POLL).await;
            }
        })
        .await;
        if ready.is_err() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            panic!(
                "timed out after {within:?} waiting until gateway {} is ready; the end of its log:\n{}",
                self.addr(),
                lines[lines.len().saturating_sub(30)..].join("\n")
            );
        }
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        let response = self.get("/metrics", &[]).await;
        assert_eq!(response.status, 200, "GET /metrics");
        response.body
    }

    /// The sum of every sample of metric `name`; panics if it is missing.
    pub async fn gauge(&self, name: &str) -> f64 {
        let text = self.metrics().await;
        metrics::sample_sum(&text, name).unwrap_or_else(|| {
            panic!(
                "no metric {name} in /metrics; it has {:?}",
                metrics::sample_names(&text)
            )
        })
    }

    /// SIGKILL.
    pub async fn kill(&mut self) {
        self.service.kill().await;
    }

    /// SIGTERM: a graceful shutdown request.
    pub async fn terminate(&mut self) {
        self.service.terminate().await;
    }

    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        self.service.wait_exit(within).await
    }

    /// Everything the gateway has logged so far.
    pub fn logs(&self) -> String {
        self.service.logs()
    }
}
