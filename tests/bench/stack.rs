//! The server under measurement: a private wsauth stack started through the
//! test harness (`TestRedis`, `TestAuth`, `TestGateway`s, logging to files),
//! a running one named on the command line, or the floor (see
//! [`crate::floor`]), a bare server speaking the same client protocol.

use std::net::{SocketAddr, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use futures::FutureExt;
use tonic::transport::Channel;
use wsauth_shared::proto::PublishRequest;
use wsauth_shared::proto::broadcast_service_client::BroadcastServiceClient;
use wsauth_tests::{
    ADMIN_KEY, AuthOptions, GatewayOptions, INTERNAL_KEY, JWT_SECRET, Launch, RedisBackend,
    RedisMode, TestAuth, TestGateway,
};

use crate::auth_rpc::with_key;
use crate::cli::BenchArgs;
use crate::floor::FloorProcess;
use crate::protocol::{FloorStats, JwtSettings};

/// How long a private gateway may take to report ready.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Gateway {
    pub addr: SocketAddr,
    /// Known for private gateways (and when given with --gateway-pid).
    pub pid: Option<u32>,
}

/// The harness's processes of a private stack, in drop order: gateways
/// first, then auth, then Redis. Each is killed when dropped.
struct Private {
    gateways: Vec<TestGateway>,
    auth: TestAuth,
    redis: RedisBackend,
}

pub struct Stack {
    pub gateways: Vec<Gateway>,
    /// wsauth's auth service; `None` for the floor.
    pub auth: Option<SocketAddr>,
    /// The Redis port for redis-benchmark (a standalone server only).
    pub redis_port: Option<u16>,
    /// The private stack's Redis deployment (`None`: the floor or a running stack).
    pub redis_mode: Option<RedisMode>,
    pub admin_key: Option<String>,
    pub internal_key: Option<String>,
    jwt: Option<JwtSettings>,
    pub private: bool,
    private_parts: Option<Private>,
    floor: Option<FloorProcess>,
}

impl Stack {
    /// The private stack with `gateways` gateways, or the running one.
    pub async fn start(args: &BenchArgs, gateways: usize) -> anyhow::Result<Self> {
        if args.remote() {
            Self::remote(args)
        } else {
            Self::private(args, gateways).await
        }
    }

    /// The floor: one bare server in a child process, no auth, no Redis.
    pub async fn floor() -> anyhow::Result<Self> {
        let floor = FloorProcess::spawn().await?;
        Ok(Self {
            gateways: vec![Gateway {
                addr: floor.addr(),
                pid: floor.pid(),
            }],
            auth: None,
            redis_port: None,
            redis_mode: None,
            admin_key: None,
            internal_key: None,
            // The floor does not check JWTs; the clients send one anyway.
            jwt: Some(JwtSettings {
                secret: JWT_SECRET.to_owned(),
                issuer: None,
                audience: None,
            }),
            private: true,
            private_parts: None,
            floor: Some(floor),
        })
    }

    fn remote(args: &BenchArgs) -> anyhow::Result<Self> {
        let auth = loopback(
            args.auth_url
                .as_deref()
                .context("--auth is needed with --gateway")?,
        )?;
        let gateways = args
            .gateway_urls
            .iter()
            .enumerate()
            .map(|(i, url)| {
                Ok(Gateway {
                    addr: loopback(url)?,
                    pid: args.gateway_pids.get(i).copied(),
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            gateways,
            auth: Some(auth),
            redis_port: args.redis_port,
            redis_mode: None,
            admin_key: args.admin_key.clone().map(|k| k.0),
            internal_key: args.internal_key.clone().map(|k| k.0),
            jwt: args.jwt_secret.clone().map(|secret| JwtSettings {
                secret: secret.0,
                issuer: args.jwt_issuer.clone(),
                audience: args.jwt_audience.clone(),
            }),
            private: false,
            private_parts: None,
            floor: None,
        })
    }

    async fn private(args: &BenchArgs, gateways: usize) -> anyhow::Result<Self> {
        check_bins(args.bin_dir.as_deref())?;
        let logs = log_dir();
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let launch = |name: &str| Launch {
            bin_dir: args.bin_dir.clone(),
            log_file: Some(logs.join(format!("{name}.log"))),
        };
        let mode = RedisMode::from(args.redis_mode);
        let redis = tokio::task::spawn_blocking(move || RedisBackend::spawn(mode))
            .await
            .map_err(|e| anyhow!("starting redis ({mode:?}): {}", panic_text(e.into_panic())))?;
        // Long enough that tokens issued in the IssueWsToken run are still
        // valid for the ValidateToken run that consumes them.
        let auth_options = AuthOptions::default()
            .ws_token_ttl_s(600)
            .redis(&redis)
            .launch(launch("auth"));
        let auth = harness("auth", TestAuth::spawn(None, auth_options)).await?;
        let mut parts = Private {
            gateways: Vec::new(),
            auth,
            redis,
        };
        for i in 0..gateways {
            let name = format!("gateway-{i}");
            // Idle clients in the memory run send nothing; the echo limit
            // only matters for clients that talk.
            let options = GatewayOptions::default()
                .env("GATEWAY_ID", format!("bench-gw-{i}"))
                .env("RUST_LOG", args.gateway_log.clone())
                .max_messages_per_s(100_000)
                .launch(launch(&name));
            let gateway = harness(&name, TestGateway::spawn(&[&parts.auth], options)).await?;
            harness(&name, gateway.wait_ready(READY_TIMEOUT)).await?;
            parts.gateways.push(gateway);
        }
        tracing::info!(gateways, redis = mode.name(), logs = %logs.display(), "private stack up");
        Ok(Self {
            gateways: parts
                .gateways
                .iter()
                .map(|g| Gateway {
                    addr: g.addr(),
                    pid: g.pid(),
                })
                .collect(),
            auth: Some(parts.auth.addr()),
            redis_port: parts.redis.standalone_port(),
            redis_mode: Some(mode),
            admin_key: Some(ADMIN_KEY.to_owned()),
            internal_key: Some(INTERNAL_KEY.to_owned()),
            jwt: Some(JwtSettings {
                secret: JWT_SECRET.to_owned(),
                issuer: None,
                audience: None,
            }),
            private: true,
            private_parts: Some(parts),
            floor: None,
        })
    }

    /// What the clients mint their JWTs with.
    pub fn jwt(&self) -> anyhow::Result<&JwtSettings> {
        self.jwt
            .as_ref()
            .context("--jwt-secret is needed to mint the clients' JWTs")
    }

    pub fn auth_url(&self) -> anyhow::Result<String> {
        let auth = self.auth.context("the floor has no auth service")?;
        Ok(format!("http://{auth}"))
    }

    /// Whether this is the floor rather than wsauth.
    pub fn is_floor(&self) -> bool {
        self.floor.is_some()
    }

    /// Something that publishes one broadcast to every client.
    pub async fn publisher(&mut self) -> anyhow::Result<Publisher<'_>> {
        if self.floor.is_some() {
            let floor = self.floor.as_mut().context("checked just above")?;
            return Ok(Publisher::Floor(floor));
        }
        let admin_key = self
            .admin_key
            .clone()
            .context("--admin-key is needed to Publish")?;
        let channel = Channel::from_shared(self.auth_url()?)?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(5))
            .connect()
            .await
            .context("connecting to auth")?;
        Ok(Publisher::Grpc {
            client: BroadcastServiceClient::new(channel),
            admin_key,
        })
    }

    /// The floor's send counters; `None` for wsauth.
    pub async fn floor_stats(&mut self) -> anyhow::Result<Option<FloorStats>> {
        match &mut self.floor {
            Some(floor) => Ok(Some(floor.stats().await?)),
            None => Ok(None),
        }
    }

    /// The server processes whose CPU use is worth reporting, by name.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut processes = Vec::new();
        if self.floor.is_some() {
            processes.extend(self.gateways[0].pid.map(|pid| ("floor".to_owned(), pid)));
            return processes;
        }
        if let Some(pid) = self.private_parts.as_ref().and_then(|p| p.auth.pid()) {
            processes.push(("auth".to_owned(), pid));
        }
        processes.extend(
            self.gateways
                .iter()
                .enumerate()
                .filter_map(|(i, g)| Some((format!("gateway-{i}"), g.pid?))),
        );
        match &self.private_parts {
            Some(parts) => {
                let pids = parts.redis.pids();
                let one = pids.len() == 1;
                processes.extend(pids.into_iter().enumerate().map(|(i, pid)| {
                    let name = if one {
                        "redis".into()
                    } else {
                        format!("redis-{i}")
                    };
                    (name, pid)
                }));
            }
            None => processes.extend(
                self.redis_port
                    .and_then(crate::procfs::redis_pid)
                    .map(|pid| ("redis".to_owned(), pid)),
            ),
        }
        processes
    }
}

/// Publishes one broadcast: a gRPC Publish to auth, or a line to the floor.
pub enum Publisher<'a> {
    Grpc {
        client: BroadcastServiceClient<Channel>,
        admin_key: String,
    },
    Floor(&'a mut FloorProcess),
}

impl Publisher<'_> {
    pub async fn publish(&mut self, data: String) -> anyhow::Result<()> {
        match self {
            Self::Grpc { client, admin_key } => {
                let request = with_key(
                    PublishRequest {
                        data,
                        user_id: None,
                    },
                    admin_key,
                )?;
                client
                    .publish(request)
                    .await
                    .map_err(|s| anyhow!("{:?}: {}", s.code(), s.message()))?;
                Ok(())
            }
            Self::Floor(floor) => floor.publish(data).await,
        }
    }
}

/// Runs a harness step, whose failures are panics, as a fallible one: one
/// broken measurement becomes a failed row instead of ending the run.
async fn harness<T>(what: &str, step: impl Future<Output = T>) -> anyhow::Result<T> {
    AssertUnwindSafe(step)
        .catch_unwind()
        .await
        .map_err(|panic| anyhow!("starting {what}: {}", panic_text(panic)))
}

fn panic_text(panic: Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "panicked".to_owned())
}

/// `http://127.0.0.1:8080/` → the socket address, refusing anything not on loopback.
fn loopback(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host_port = rest.split('/').next().unwrap_or(rest);
    let addr = host_port
        .to_socket_addrs()
        .with_context(|| format!("resolving {url}"))?
        .next()
        .ok_or_else(|| anyhow!("{url} resolves to nothing"))?;
    if !addr.ip().is_loopback() {
        bail!("{url}: wsauth-bench only targets loopback addresses");
    }
    Ok(addr)
}

/// A clear error before the harness would panic on a missing binary.
pub fn check_bins(bin_dir: Option<&Path>) -> anyhow::Result<()> {
    let dir = match bin_dir {
        Some(dir) => dir.to_path_buf(),
        None => {
            let exe = std::env::current_exe().context("locating this executable")?;
            exe.parent()
                .context("the executable has a directory")?
                .to_path_buf()
        }
    };
    for bin in ["wsauth-auth", "wsauth-gateway"] {
        if !dir.join(bin).is_file() {
            bail!(
                "{bin} not found in {}: build with `cargo build --release --workspace --bins` or set WSAUTH_BIN_DIR",
                dir.display()
            );
        }
    }
    Ok(())
}

/// The directory the services' logs go to, for messages.
pub fn log_dir() -> PathBuf {
    std::env::temp_dir().join(format!("wsauth-bench-{}", std::process::id()))
}
