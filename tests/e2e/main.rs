//! End-to-end tests: the real `wsauth-auth` and `wsauth-gateway` binaries, a
//! private `redis-server` per test, real gRPC and WebSocket clients.
//! Run `cargo build --bins` first (`make test` does); `TEST_LOG=1` shows the
//! services' logs.
//!
//! - `handshake`: `/token/ws` and the `/ws` upgrade (phase 1), every HTTP status;
//! - `session`: the jwt frame (phase 2), its close codes, echo, refresh, expiry;
//! - `session_edges`: blocked writes, ping floods, close replies, refresh while auth is down;
//! - `admission`: MAX_CONNECTIONS, MAX_PENDING_AUTH under a flood, PER_IP_RATE and TRUSTED_PROXIES;
//! - `limits`: binary and oversized frames, rate limit, registry leak check;
//! - `memory`: a large broadcast does not leave every connection bigger;
//! - `metrics`: both services' `/metrics`, scraped from the running processes;
//! - `backpressure`: a slow consumer beside a fast one;
//! - `delivery`: broadcasts and direct messages across replicas, `since`, grpcurl;
//! - `revocation`: RevokeUser and RevokeJwt;
//! - `presence`: AdminService's ListGateways and Presence across replicas, a killed gateway;
//! - `failover`: an auth replica that accepts and never answers;
//! - `discovery`: `AUTH_URL=dns:///localhost:PORT` through the system resolver;
//! - `otel`: one handshake is one OTLP trace across the gateway and auth;
//! - `gateway_tls`: the gateway as a TLS client of auth: mTLS, refusals, rotation;
//! - `listener_tls`: HTTPS and `wss://` on the gateway's own listener, rotation, plain HTTP refused;
//! - `faults`: auth or Redis going away;
//! - `redis_failover`: a Cluster or Sentinel master killed under the stack: 503s, then service, no silent loss;
//! - `redis_modes`: the core flows once per Redis deployment (standalone, Cluster, Sentinel);
//! - `gap`: Redis losing the stream (FLUSHALL, restart): gaps told, RevokeUser still applied;
//! - `shutdown`: SIGTERM;
//! - `browser`: the browser client in headless Chromium (tests/browser);
//! - `deploy`: deploy/'s compose file and Kubernetes manifests against the binaries' settings.
#![forbid(unsafe_code)]

mod admission;
mod backpressure;
mod browser;
mod delivery;
mod deploy;
mod discovery;
mod failover;
mod faults;
mod gap;
mod gateway_tls;
mod handshake;
mod limits;
mod listener_tls;
mod memory;
mod metrics;
mod otel;
mod presence;
mod redis_failover;
mod redis_modes;
mod revocation;
mod session;
mod session_edges;
mod shutdown;
mod tls;
