//! The stack under measurement: a private one (redis-server through
//! `TestRedis`, one `wsauth-auth`, N `wsauth-gateway`s, all on loopback with
//! settings for load) or a running one named on the command line.

use std::fs::File;
use std::net::{SocketAddr, TcpStream as StdTcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tokio::time::timeout;
use wsauth_tests::{TestRedis, free_port};

use crate::cli::BenchArgs;
use crate::client::source_ip;
use crate::http::HttpConn;
use crate::jwt::JwtMinter;

/// How long a service may take to answer after it was started.
const START_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Gateway {
    pub addr: SocketAddr,
    /// Known for private gateways (and when given with --gateway-pid).
    pub pid: Option<u32>,
}

pub struct Stack {
    pub gateways: Vec<Gateway>,
    pub auth: SocketAddr,
    pub redis_port: Option<u16>,
    pub admin_key: Option<String>,
    pub internal_key: Option<String>,
    jwt_secret: Option<String>,
    issuer: Option<String>,
    audience: Option<String>,
    pub private: bool,
    /// Where the private services' stderr goes.
    logs: PathBuf,
    children: Vec<(String, Child)>,
    _redis: Option<TestRedis>,
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
            auth,
            redis_port: args.redis_port,
            admin_key: args.admin_key.clone().map(|k| k.0),
            internal_key: args.internal_key.clone().map(|k| k.0),
            jwt_secret: args.jwt_secret.clone().map(|k| k.0),
            issuer: args.jwt_issuer.clone(),
            audience: args.jwt_audience.clone(),
            private: false,
            logs: PathBuf::new(),
            children: Vec::new(),
            _redis: None,
        })
    }

    async fn private(args: &BenchArgs, gateways: usize) -> anyhow::Result<Self> {
        let bin_dir = bin_dir(args)?;
        let logs = std::env::temp_dir().join(format!("wsauth-bench-{}", std::process::id()));
        std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
        let redis = tokio::task::spawn_blocking(TestRedis::spawn)
            .await
            .context("starting redis-server")?;
        let secret = random_hex();
        let admin_key = random_hex();
        let internal_key = random_hex();
        let mut stack = Self {
            gateways: Vec::new(),
            auth: SocketAddr::from(([127, 0, 0, 1], free_port())),
            redis_port: Some(redis.port()),
            admin_key: Some(admin_key.clone()),
            internal_key: Some(internal_key.clone()),
            jwt_secret: Some(secret.clone()),
            issuer: None,
            audience: None,
            private: true,
            logs: logs.clone(),
            children: Vec::new(),
            _redis: None,
        };
        let auth_addr = stack.auth.to_string();
        let auth_env = [
            ("AUTH_LISTEN", auth_addr.as_str()),
            ("REDIS_URL", &redis.url()),
            ("JWT_HS256_SECRET", &secret),
            ("INTERNAL_API_KEYS", &internal_key),
            ("ADMIN_API_KEYS", &admin_key),
            // Long enough that tokens issued in the IssueWsToken run are
            // still valid for the ValidateToken run that consumes them.
            ("WS_TOKEN_TTL_S", "600"),
        ];
        stack.spawn("auth", &bin_dir.join("wsauth-auth"), &auth_env, &logs)?;
        stack._redis = Some(redis);
        let auth = stack.auth;
        stack
            .wait_for("auth", || async move { tcp_up(auth) })
            .await?;

        let auth_url = format!("http://{auth}");
        for i in 0..gateways {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let (listen, id) = (addr.to_string(), format!("bench-gw-{i}"));
            let gateway_env = [
                ("GATEWAY_LISTEN", listen.as_str()),
                ("AUTH_URL", &auth_url),
                ("AUTH_API_KEY", &internal_key),
                ("GATEWAY_ID", &id),
                // Idle clients in the memory run send nothing; the echo
                // limit only matters for clients that talk.
                ("MAX_MESSAGES_PER_S", "100000"),
            ];
            let name = format!("gateway-{i}");
            let pid = stack.spawn(&name, &bin_dir.join("wsauth-gateway"), &gateway_env, &logs)?;
            stack
                .wait_for(&name, || async move { ready(addr).await })
                .await?;
            stack.gateways.push(Gateway {
                addr,
                pid: Some(pid),
            });
        }
        tracing::info!(gateways, logs = %logs.display(), "private stack up");
        Ok(stack)
    }

    fn spawn(
        &mut self,
        name: &str,
        bin: &Path,
        env: &[(&str, &str)],
        logs: &Path,
    ) -> anyhow::Result<u32> {
        let log_path = logs.join(format!("{name}.log"));
        let log =
            File::create(&log_path).with_context(|| format!("creating {}", log_path.display()))?;
        let mut command = Command::new(bin);
        // A clean environment: settings from the caller's shell (a stray
        // GATEWAY_LISTEN, a RUST_LOG=debug) would change what is measured.
        command
            .env_clear()
            .env("RUST_LOG", "warn")
            .env("LOG_FORMAT", "text");
        if let Some(path) = std::env::var_os("PATH") {
            command.env("PATH", path);
        }
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        self.children.push((name.to_owned(), child));
        Ok(pid)
    }

    async fn wait_for<F, Fut>(&mut self, name: &str, mut up: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if up().await {
                return Ok(());
            }
            let exited = match self.children.iter_mut().find(|(n, _)| n == name) {
                Some((_, child)) => child.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                bail!(
                    "{name} exited with {status}; its log: {}",
                    self.logs.join(format!("{name}.log")).display()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{name} not ready within {START_TIMEOUT:?}; its log: {}",
                    self.logs.join(format!("{name}.log")).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn minter(&self) -> anyhow::Result<JwtMinter> {
        let secret = self
            .jwt_secret
            .as_deref()
            .context("--jwt-secret is needed to mint the clients' JWTs")?;
        JwtMinter::new(secret, self.issuer.clone(), self.audience.clone())
    }

    pub fn jwt_secret(&self) -> anyhow::Result<&str> {
        self.jwt_secret
            .as_deref()
            .context("--jwt-secret is needed to mint the clients' JWTs")
    }

    pub fn issuer(&self) -> Option<String> {
        self.issuer.clone()
    }

    pub fn audience(&self) -> Option<String> {
        self.audience.clone()
    }

    pub fn auth_url(&self) -> String {
        format!("http://{}", self.auth)
    }

    /// The processes whose CPU use is worth reporting, by name.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut processes: Vec<(String, u32)> = self
            .children
            .iter()
            .map(|(name, child)| (name.clone(), child.id()))
            .collect();
        if !self.private {
            processes.extend(
                self.gateways
                    .iter()
                    .enumerate()
                    .filter_map(|(i, g)| Some((format!("gateway-{i}"), g.pid?))),
            );
        }
        if let Some(pid) = self.redis_port.and_then(crate::procfs::redis_pid) {
            processes.push(("redis".into(), pid));
        }
        processes.push(("bench".into(), std::process::id()));
        processes
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Gateways first, then auth (reverse start order); TestRedis kills itself.
        for (_, child) in self.children.iter_mut().rev() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
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

fn bin_dir(args: &BenchArgs) -> anyhow::Result<PathBuf> {
    let dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => {
            let exe = std::env::current_exe().context("locating this executable")?;
            let mut dir = exe
                .parent()
                .context("the executable has a directory")?
                .to_path_buf();
            // Under `cargo test`/`cargo run` the binary may sit in deps/.
            if dir.ends_with("deps") {
                dir.pop();
            }
            dir
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
    Ok(dir)
}

fn tcp_up(addr: SocketAddr) -> bool {
    StdTcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok()
}

/// `GET /readyz` answers 200: auth reachable and the event stream subscribed,
/// so a Publish from now on reaches this gateway.
async fn ready(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut http = HttpConn::connect(addr, source_ip(0)).await?;
        http.get("/readyz", "").await
    };
    matches!(timeout(Duration::from_secs(2), attempt).await, Ok(Ok(response)) if response.status == 200)
}

fn random_hex() -> String {
    format!("{:032x}", rand::random::<u128>())
}
