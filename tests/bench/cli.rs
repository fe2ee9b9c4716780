//! The command line: what to measure, how long and how big, and which stack.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// `wsauth-bench [FLAGS]` measures; `wsauth-bench worker` is the client
/// process the measurer re-executes itself as (driven over stdin/stdout).
#[derive(Parser)]
#[command(
    name = "wsauth-bench",
    about = "Load generator for wsauth: handshakes, memory per connection, fan-out, auth RPCs"
)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub bench: BenchArgs,
}

#[derive(Subcommand)]
pub enum Command {
    /// Internal: hold client connections for the measurer (JSON lines on stdin/stdout).
    Worker,
    /// Internal: the floor server the measurer compares wsauth with (JSON lines on stdin/stdout).
    Floor,
    /// A soak run (`make soak`): connections churn through every close path
    /// while events are published; RSS, open files and the registry sampled.
    Soak(SoakArgs),
}

/// `wsauth-bench soak`: how long, how often, how many.
#[derive(Args, Clone, Debug)]
pub struct SoakArgs {
    /// Length of the churn, in seconds.
    #[arg(long, env = "SOAK_SECONDS", default_value_t = 900)]
    pub seconds: u64,
    /// Seconds between two samples of RSS, open files and the registry.
    #[arg(long, env = "SOAK_SAMPLE_S", default_value_t = 30)]
    pub sample_s: u64,
    /// Clients churning at once (one more runs the slow-consumer cycle).
    #[arg(long, env = "SOAK_CHURNERS", default_value_t = 8)]
    pub churners: usize,
    /// Broadcasts published per second during the churn.
    #[arg(long, env = "SOAK_PUBLISH_PER_S", default_value_t = 10)]
    pub publish_per_s: u32,
    /// Open files a process may gain between the start and the end, once
    /// every client is gone, before the run fails.
    #[arg(long, env = "SOAK_FD_SLACK", default_value_t = 4)]
    pub fd_slack: usize,
    /// Where wsauth-auth and wsauth-gateway are; default: next to this executable.
    #[arg(long, env = "WSAUTH_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
}

/// One of the four measurements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Only {
    Handshakes,
    Memory,
    Fanout,
    Auth,
}

impl Only {
    pub fn name(self) -> &'static str {
        match self {
            Self::Handshakes => "handshakes",
            Self::Memory => "memory",
            Self::Fanout => "fanout",
            Self::Auth => "auth",
        }
    }
}

/// The Redis deployment of a private stack (`--redis-mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RedisModeArg {
    /// One redis-server (`REDIS_URL`).
    Standalone,
    /// 3 masters and 3 replicas (`REDIS_CLUSTER_URLS`).
    Cluster,
    /// A master, a replica and 3 sentinels (`REDIS_SENTINEL_URLS`).
    Sentinel,
}

impl From<RedisModeArg> for wsauth_tests::RedisMode {
    fn from(mode: RedisModeArg) -> Self {
        match mode {
            RedisModeArg::Standalone => Self::Standalone,
            RedisModeArg::Cluster => Self::Cluster,
            RedisModeArg::Sentinel => Self::Sentinel,
        }
    }
}

/// A secret given on the command line or in the environment; never printed.
#[derive(Clone)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[derive(Args)]
pub struct BenchArgs {
    /// Run only these measurements (repeatable); default: all four.
    #[arg(long, value_enum, env = "BENCH_ONLY", value_delimiter = ',')]
    pub only: Vec<Only>,
    /// Short runs with smaller sizes, for a smoke test of the whole tool.
    #[arg(long, env = "BENCH_QUICK")]
    pub quick: bool,
    /// Gateways in the spread fan-out run (the private stack starts this many).
    #[arg(long, env = "BENCH_GATEWAYS", default_value_t = 3)]
    pub gateways: usize,
    /// Length of each timed run (handshakes, auth RPCs); default 10 s, 2 s with --quick.
    #[arg(long, env = "BENCH_DURATION_S")]
    pub duration_s: Option<f64>,
    /// Concurrencies of the handshake runs.
    #[arg(long, env = "BENCH_HANDSHAKE_CONCURRENCY", value_delimiter = ',', default_values_t = [16, 64])]
    pub handshake_concurrency: Vec<usize>,
    /// Idle connection counts of the memory runs; default 1000,10000,19000 (quick: 1000,5000).
    #[arg(long, env = "BENCH_MEMORY_CONNECTIONS", value_delimiter = ',')]
    pub memory_connections: Vec<usize>,
    /// Client counts of the fan-out runs; default 1000,10000 (quick: 1000,3000).
    #[arg(long, env = "BENCH_FANOUT_CLIENTS", value_delimiter = ',')]
    pub fanout_clients: Vec<usize>,
    /// Publishes per fan-out run.
    #[arg(long, env = "BENCH_PUBLISHES", default_value_t = 20)]
    pub publishes: usize,
    /// Pause between two Publishes.
    #[arg(long, env = "BENCH_PUBLISH_INTERVAL_MS", default_value_t = 100)]
    pub publish_interval_ms: u64,
    /// Concurrent calls of the auth RPC runs (and redis-benchmark's -c).
    #[arg(long, env = "BENCH_AUTH_CONCURRENCY", default_value_t = 64)]
    pub auth_concurrency: usize,
    /// gRPC channels (HTTP/2 connections) the auth RPC calls are spread over.
    #[arg(long, env = "BENCH_AUTH_CHANNELS", default_value_t = 4)]
    pub auth_channels: usize,
    /// Requests per redis-benchmark test; default 200000 (quick: 50000).
    #[arg(long, env = "BENCH_REDIS_REQUESTS")]
    pub redis_requests: Option<usize>,
    /// Most client sockets one worker process holds.
    #[arg(long, env = "BENCH_SOCKETS_PER_WORKER", default_value_t = 8000)]
    pub sockets_per_worker: usize,
    /// Client worker processes at least, for handshakes and fan-out (one per
    /// core keeps the client side from being the bottleneck).
    #[arg(long, env = "BENCH_CLIENT_WORKERS", default_value_t = 2)]
    pub client_workers: usize,
    /// Handshakes a worker runs at once while connecting its clients.
    #[arg(long, env = "BENCH_CONNECT_CONCURRENCY", default_value_t = 32)]
    pub connect_concurrency: usize,

    /// `RUST_LOG` of the private stack's gateways: `info` is what users run
    /// (and the log level changes the memory per connection).
    #[arg(long, env = "BENCH_GATEWAY_LOG", default_value = "info")]
    pub gateway_log: String,

    /// The Redis deployment of the private stack's auth (a running stack's is its own).
    #[arg(
        long,
        value_enum,
        env = "BENCH_REDIS_MODE",
        default_value = "standalone"
    )]
    pub redis_mode: RedisModeArg,

    /// A running gateway to measure instead of a private stack (repeatable, http://127.0.0.1:PORT).
    #[arg(long = "gateway", env = "BENCH_GATEWAY_URLS", value_delimiter = ',')]
    pub gateway_urls: Vec<String>,
    /// The pids of those gateways, for the memory measurement (same order).
    #[arg(
        long = "gateway-pid",
        env = "BENCH_GATEWAY_PIDS",
        value_delimiter = ','
    )]
    pub gateway_pids: Vec<u32>,
    /// The running auth service (http://127.0.0.1:PORT).
    #[arg(long = "auth", env = "BENCH_AUTH_URL")]
    pub auth_url: Option<String>,
    /// The port of the Redis the running auth uses, for redis-benchmark.
    #[arg(long, env = "BENCH_REDIS_PORT")]
    pub redis_port: Option<u16>,
    /// An admin key of the running auth (Publish).
    #[arg(long, env = "BENCH_ADMIN_KEY")]
    pub admin_key: Option<Secret>,
    /// An internal key of the running auth (ValidateToken, VerifyJwt).
    #[arg(long, env = "BENCH_INTERNAL_KEY")]
    pub internal_key: Option<Secret>,
    /// The HS256 secret of the running auth, to mint the clients' JWTs.
    #[arg(long, env = "BENCH_JWT_SECRET")]
    pub jwt_secret: Option<Secret>,
    /// `iss` for the minted JWTs, when the running auth checks it.
    #[arg(long, env = "BENCH_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// `aud` for the minted JWTs, when the running auth checks it.
    #[arg(long, env = "BENCH_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Where wsauth-auth and wsauth-gateway are; default: next to this executable.
    #[arg(long, env = "WSAUTH_BIN_DIR")]
    pub bin_dir: Option<PathBuf>,
}

/// The sizes and durations of one run, with the --quick defaults applied.
#[derive(Clone, Debug)]
pub struct Plan {
    pub only: Vec<Only>,
    pub duration: Duration,
    pub handshake_concurrency: Vec<usize>,
    pub memory_connections: Vec<usize>,
    pub fanout_clients: Vec<usize>,
    pub redis_requests: usize,
}

impl Plan {
    pub fn measurements(&self) -> Vec<Only> {
        self.only.clone()
    }
}

impl BenchArgs {
    pub fn plan(&self) -> Plan {
        let quick = self.quick;
        let pick = |given: &Vec<usize>, full: &[usize], short: &[usize]| {
            if !given.is_empty() {
                given.clone()
            } else if quick {
                short.to_vec()
            } else {
                full.to_vec()
            }
        };
        let all = [Only::Handshakes, Only::Memory, Only::Fanout, Only::Auth];
        let only = all
            .into_iter()
            .filter(|m| self.only.is_empty() || self.only.contains(m))
            .collect();
        let duration_s = self
            .duration_s
            .unwrap_or(if quick { 2.0 } else { 10.0 })
            .clamp(0.1, 600.0);
        Plan {
            only,
            duration: Duration::from_secs_f64(duration_s),
            handshake_concurrency: self
                .handshake_concurrency
                .iter()
                .map(|c| (*c).clamp(1, 4096))
                .collect(),
            memory_connections: pick(
                &self.memory_connections,
                &[1000, 10_000, 19_000],
                &[1000, 5000],
            ),
            fanout_clients: pick(&self.fanout_clients, &[1000, 10_000], &[1000, 3000]),
            redis_requests: self
                .redis_requests
                .unwrap_or(if quick { 50_000 } else { 200_000 }),
        }
    }

    /// Whether a running stack was named instead of starting a private one.
    pub fn remote(&self) -> bool {
        !self.gateway_urls.is_empty() || self.auth_url.is_some()
    }

    /// The command line as run, for the report (secrets left out).
    pub fn command_line() -> String {
        let mut words = Vec::new();
        let mut hide_next = false;
        for arg in std::env::args() {
            if hide_next {
                words.push("***".to_owned());
                hide_next = false;
                continue;
            }
            let secret_flag = ["--admin-key", "--internal-key", "--jwt-secret"];
            if secret_flag.contains(&arg.as_str()) {
                hide_next = true;
                words.push(arg);
            } else if let Some((flag, _)) =
                arg.split_once('=').filter(|(f, _)| secret_flag.contains(f))
            {
                words.push(format!("{flag}=***"));
            } else {
                words.push(arg);
            }
        }
        words.join(" ")
    }
}
