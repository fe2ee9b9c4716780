//! The wsauth auth service: ws tokens, JWT verification, revocation and the
//! broadcast event stream, over gRPC.
//!
//! One request, end to end: [`grpc::gate`] (a tower layer before tonic)
//! records the caller's role → a handler in [`grpc`] checks role and input
//! limits → [`authority::Authority`] verifies the JWT ([`jwt`]), checks
//! [`revocation`] and issues or consumes a [`ws_token`] → through the
//! [`store::Store`] (Redis, or in-memory) → errors become gRPC codes once, in
//! [`error`]. Broadcast: [`events::Events`] appends to the store's stream;
//! one reader per process fans out to every Subscribe stream.
//! Gateways report what they hold into [`presence`], which AdminService reads.
//! [`metrics`] counts every call on its way through and serves `/metrics`.
//! [`server::run`] wires it all; `main.rs` is a thin shell. `oracles` (tests
//! and the fuzz crate only, feature `oracles`) restates the contract's rules.
#![forbid(unsafe_code)]

pub mod authority;
pub mod caller;
pub mod clock;
pub mod config;
pub mod error;
pub mod event;
pub mod events;
pub mod grpc;
pub mod jwt;
pub mod metrics;
pub mod mint;
#[cfg(any(test, feature = "oracles"))]
pub mod oracles;
pub mod presence;
pub mod revocation;
pub mod server;
pub mod store;
pub mod ws_token;

pub use config::Config;
pub use server::{ServeError, run};
