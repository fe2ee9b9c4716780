//! The wsauth end-to-end harness: real parts, private to each test.
//! - [`TestRedis`]: a `redis-server` child on a free port (never 6379).
//! - [`TestAuth`]: the `wsauth-auth` binary on `127.0.0.1:0`, with known keys
//!   ([`INTERNAL_KEY`], [`ADMIN_KEY`]) and [`JWT_SECRET`], and gRPC clients.
//! - [`TestGateway`]: the `wsauth-gateway` binary wired to one or more auths,
//!   with `/token/ws`, `/readyz` and `/metrics` helpers.
//! - [`WsClient`]: a tokio-tungstenite client speaking the gateway protocol;
//!   [`Jwt`] mints good and bad JWTs; [`wait_until`] waits for a condition.
//! - [`Cluster`]: Redis + N auths + M gateways, and [`warm_up`].
//!
//! The binaries come from the target dir of the running test (or
//! `WSAUTH_BIN_DIR`); their stderr is echoed only when `TEST_LOG` is set.
#![forbid(unsafe_code)]

mod auth;
mod bins;
mod cluster;
mod gateway;
pub mod http;
mod jwt;
pub mod metrics;
mod process;
mod redis;
mod wait;
mod ws;

pub use auth::{
    ADMIN_KEY, ApiKey, AuthClient, AuthOptions, Bearer, BroadcastClient, INTERNAL_KEY, TestAuth,
};
pub use bins::bin_path;
pub use cluster::{Cluster, WARMUP, collect_events, warm_up};
pub use gateway::{GatewayOptions, TestGateway};
pub use jwt::{JWT_SECRET, Jwt, JwtAlg, now_unix};
pub use redis::{TestRedis, free_port};
pub use wait::{wait_until, within};
pub use ws::{Frame, Refused, STEP, WsClient};
