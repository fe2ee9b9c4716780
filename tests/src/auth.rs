//! `TestAuth`: the real `wsauth-auth` binary on a loopback port, with known
//! keys and gRPC clients for tests.

use std::net::SocketAddr;
use std::process::ExitStatus;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Status};
use wsauth_shared::proto::auth_service_client::AuthServiceClient;
use wsauth_shared::proto::broadcast_service_client::BroadcastServiceClient;
use wsauth_shared::proto::{PublishRequest, RevokeUserRequest};

use crate::bins::bin_in;
use crate::jwt::JWT_SECRET;
use crate::process::{Launch, Service};
use crate::redis::TestRedis;

/// The internal API key of every harness auth (`INTERNAL_API_KEYS`); gateways use it.
pub const INTERNAL_KEY: &str = "e2e-internal-key-7d1f0c";
/// The admin API key of every harness auth (`ADMIN_API_KEYS`).
pub const ADMIN_KEY: &str = "e2e-admin-key-4b9e2a";

/// The deadline of each gRPC call made through the harness clients.
const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// Which `authorization` metadata a harness client sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiKey {
    Internal,
    Admin,
    /// A well-formed but unknown key.
    Wrong,
    /// No `authorization` metadata at all.
    Missing,
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(key: ApiKey) -> Self {
        let key = match key {
            ApiKey::Internal => INTERNAL_KEY,
            ApiKey::Admin => ADMIN_KEY,
            ApiKey::Wrong => "e2e-wrong-key",
            ApiKey::Missing => return Self(None),
        };
        Self(Some(
            format!("Bearer {key}")
                .parse()
                .expect("harness keys are ASCII"),
        ))
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub type AuthClient = AuthServiceClient<InterceptedService<Channel, Bearer>>;
pub type BroadcastClient = BroadcastServiceClient<InterceptedService<Channel, Bearer>>;

/// Extra settings for a [`TestAuth`], as environment variables.
#[derive(Debug, Clone, Default)]
pub struct AuthOptions {
    env: Vec<(String, String)>,
    launch: Launch,
}

impl AuthOptions {
    /// Sets (or overrides) any environment variable of the auth process.
    pub fn env(mut self, name: &str, value: impl ToString) -> Self {
        self.env.push((name.to_string(), value.to_string()));
        self
    }

    pub fn leeway_s(self, seconds: u64) -> Self {
        self.env("JWT_LEEWAY_S", seconds)
    }

    pub fn ws_token_ttl_s(self, seconds: u64) -> Self {
        self.env("WS_TOKEN_TTL_S", seconds)
    }

    /// Where the binary is found and where its stderr goes.
    pub fn launch(mut self, launch: Launch) -> Self {
        self.launch = launch;
        self
    }
}

/// A running `wsauth-auth`. SIGKILLed on drop.
pub struct TestAuth {
    service: Service,
    env: Vec<(String, String)>,
    launch: Launch,
}

impl TestAuth {
    /// Starts auth on `127.0.0.1:0` with the harness JWT secret and keys,
    /// on `redis` (or the embedded store when `None`).
    pub async fn spawn(redis: Option<&TestRedis>, options: AuthOptions) -> Self {
        let mut env = vec![
            ("AUTH_LISTEN".to_string(), "127.0.0.1:0".to_string()),
            ("LOG_FORMAT".into(), "json".into()),
            ("RUST_LOG".into(), "info".into()),
            ("JWT_HS256_SECRET".into(), JWT_SECRET.into()),
            ("INTERNAL_API_KEYS".into(), INTERNAL_KEY.into()),
            ("ADMIN_API_KEYS".into(), ADMIN_KEY.into()),
            ("SHUTDOWN_GRACE_S".into(), "5".into()),
            // Replicas side by side: each on its own port (see `metrics_addr`).
            ("AUTH_METRICS_LISTEN".into(), "127.0.0.1:0".into()),
        ];
        if let Some(redis) = redis {
            env.push(("REDIS_URL".into(), redis.url()));
        }
        env.extend(options.env);
        let service = Service::spawn("auth", "wsauth-auth", &env, &options.launch).await;
        Self {
            service,
            env,
            launch: options.launch,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.service.addr()
    }

    /// The process id while it runs (for CPU accounting).
    pub fn pid(&self) -> Option<u32> {
        self.service.pid()
    }

    /// `http://127.0.0.1:PORT`, for `AUTH_URL` and gRPC clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// A channel that connects on first use, with a deadline on every call.
    pub fn channel(&self) -> Channel {
        Endpoint::from_shared(self.url())
            .expect("http://ip:port is a valid URI")
            .connect_timeout(Duration::from_secs(2))
            .timeout(CALL_DEADLINE)
            .connect_lazy()
    }

    pub fn auth_client(&self, key: ApiKey) -> AuthClient {
        AuthServiceClient::with_interceptor(self.channel(), Bearer::new(key))
    }

    pub fn broadcast_client(&self, key: ApiKey) -> BroadcastClient {
        BroadcastServiceClient::with_interceptor(self.channel(), Bearer::new(key))
    }

    /// Publish with the admin key: to everyone, or to `user`. The event id.
    pub async fn try_publish(&self, data: &str, user: Option<&str>) -> Result<String, Status> {
        let request = PublishRequest {
            data: data.to_string(),
            user_id: user.map(str::to_string),
        };
        Ok(self
            .broadcast_client(ApiKey::Admin)
            .publish(request)
            .await?
            .into_inner()
            .id)
    }

    /// [`Self::try_publish`], which must succeed.
    pub async fn publish(&self, data: &str, user: Option<&str>) -> String {
        self.try_publish(data, user)
            .await
            .unwrap_or_else(|s| panic!("Publish {data:?} failed: {s:?}"))
    }

    /// RevokeUser with the admin key, which must succeed.
    pub async fn revoke_user(&self, user: &str) {
        self.auth_client(ApiKey::Admin)
            .revoke_user(RevokeUserRequest {
                user_id: user.to_string(),
            })
            .await
            .unwrap_or_else(|s| panic!("RevokeUser {user} failed: {s:?}"));
    }

    /// RevokeJwt (no `expires_at`) with the admin key, which must succeed.
    pub async fn revoke_jwt(&self, jti: &str) {
        self.auth_client(ApiKey::Admin)
            .revoke_jwt(wsauth_shared::proto::RevokeJwtRequest {
                jti: jti.to_string(),
                expires_at: None,
            })
            .await
            .unwrap_or_else(|s| panic!("RevokeJwt {jti} failed: {s:?}"));
    }

    /// `wsauth-auth mint-jwt --sub USER` with this auth's settings: stdout.
    pub async fn mint_jwt_cli(&self, user: &str) -> std::process::Output {
        let bin = bin_in(self.launch.bin_dir.as_deref(), "wsauth-auth");
        let mut command = tokio::process::Command::new(bin);
        command
            .args(["mint-jwt", "--sub", user])
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let output = tokio::time::timeout(CALL_DEADLINE, command.output()).await;
        output
            .expect("mint-jwt finishes promptly")
            .expect("mint-jwt can be spawned")
    }

    /// SIGKILL, as a crash would.
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

    /// Kills this auth and starts it again on the same address and settings.
    pub async fn restart(&mut self) {
        self.service.kill().await;
        let mut env = self.env.clone();
        env.push(("AUTH_LISTEN".into(), self.addr().to_string()));
        self.service = Service::spawn("auth", "wsauth-auth", &env, &self.launch).await;
    }

    /// Everything auth has logged so far.
    pub fn logs(&self) -> String {
        self.service.logs()
    }

    /// Where auth serves `/metrics`: the `addr` of its `serving metrics`
    /// log line, which follows `listening` shortly.
    pub async fn metrics_addr(&self) -> SocketAddr {
        let find = || {
            self.logs().lines().find_map(|line| {
                let event: serde_json::Value = serde_json::from_str(line).ok()?;
                [&event, &event["fields"]].into_iter().find_map(|fields| {
                    (fields["message"] == "serving metrics")
                        .then(|| fields["addr"].as_str()?.parse().ok())?
                })
            })
        };
        crate::wait::wait_until(
            Duration::from_secs(10),
            "auth logs its metrics address",
            || std::future::ready(find().is_some()),
        )
        .await;
        find().expect("found above")
    }

    /// The text auth serves at `/metrics`.
    pub async fn metrics(&self) -> String {
        let response = crate::http::get(self.metrics_addr().await, "/metrics", &[]).await;
        assert_eq!(response.status, 200, "GET /metrics: {}", response.body);
        response.body
    }
}
