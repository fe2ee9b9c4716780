//! The wsauth end-to-end harness: real parts, private to each test.
//! - [`TestRedis`]: a `redis-server` child on a port of its own (never 6379).
//! - [`TestAuth`]: the `wsauth-auth` binary on `127.0.0.1:0`, with known keys
//!   ([`INTERNAL_KEY`], [`ADMIN_KEY`]) and [`JWT_SECRET`], and gRPC clients.
//! - [`TestGateway`]: the `wsauth-gateway` binary wired to one or more auths,
//!   with `/token/ws`, `/readyz` and `/metrics` helpers.
//! - [`WsClient`]: a tokio-tungstenite client speaking the gateway protocol;
//!   [`Jwt`] mints good and bad JWTs; [`wait_until`] waits for a condition.
//! - [`Cluster`]: Redis + N auths + M gateways, and [`warm_up`].
//! - [`http`]: one small HTTP/1.1 client; [`net`]: loopback client sockets
//!   spread over source addresses (for load).
//! - [`TestRedisCluster`] (3 masters, 3 replicas) and [`TestRedisSentinel`]
//!   (master, replica, 3 sentinels): Redis topologies for auth's modes;
//!   [`RedisMode`] / [`RedisBackend`] / [`ModeStack`] run one test body in each mode.
//! - [`pki`]: a test CA and the certificates it signs, as PEM files.
//!
//! Services listen on port 0 and the harness reads the bound address from
//! their `listening` log line. The binaries come from the target dir of the
//! running executable (or `WSAUTH_BIN_DIR`, or [`Launch::bin_dir`]); their
//! stderr is kept in memory and echoed only when `TEST_LOG` is set, or
//! written to [`Launch::log_file`]. The load generator (`tests/bench`)
//! starts its stacks through this same harness.
#![forbid(unsafe_code)]

mod auth;
mod bins;
mod cluster;
mod gateway;
pub mod http;
mod jwt;
pub mod metrics;
pub mod net;
pub mod pki;
mod process;
mod redis;
mod redis_cluster;
mod redis_modes;
mod redis_node;
mod redis_sentinel;
mod redis_tls;
pub mod tls_client;
mod wait;
mod ws;

pub use auth::{
    ADMIN_KEY, ApiKey, AuthClient, AuthOptions, Bearer, BroadcastClient, INTERNAL_KEY, TestAuth,
};
pub use bins::bin_path;
pub use cluster::{Cluster, WARMUP, collect_events, warm_up};
pub use gateway::{GatewayOptions, TestGateway};
pub use jwt::{JWT_SECRET, Jwt, JwtAlg, now_unix};
pub use process::Launch;
pub use redis::TestRedis;
pub use redis_cluster::TestRedisCluster;
pub use redis_modes::{ModeStack, RedisBackend, RedisMode};
pub use redis_node::{RedisNode, redis_cli};
pub use redis_sentinel::{SENTINEL_MASTER, TestRedisSentinel};
pub use wait::{wait_until, within};
pub use ws::{Frame, Refused, STEP, WsClient};
