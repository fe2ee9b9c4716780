//! `wsauth-auth`: parse the config, set up logging, bind, and serve (or mint a JWT).
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser as _;
use futures::FutureExt as _;
use secrecy::ExposeSecret as _;
use wsauth_auth::config::{Command, Config};
use wsauth_shared::telemetry;

/// mimalloc instead of glibc malloc: measured faster on the RPC path (see
/// the README's Performance section).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // redis's rustls (rediss://) needs a process-wide provider: ring, never aws-lc-rs.
    // An Err only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = Config::parse();
    if let Some(Command::MintJwt { sub, ttl_s }) = &config.command {
        let jwt = wsauth_auth::mint::mint_jwt(&config, sub, *ttl_s)?;
        println!("{jwt}");
        return Ok(());
    }
    let telemetry = telemetry::init_service(config.log_format, "wsauth-auth")?;
    if let Some(secret) = &config.jwt_hs256_secret
        && secret.expose_secret().len() < 32
    {
        tracing::warn!("JWT_HS256_SECRET is shorter than 32 bytes: use at least 32 random bytes");
    }
    // Poll the signal future once so the SIGTERM/Ctrl-C handlers are installed
    // before `listening` is announced: a harness may signal right after it.
    let mut shutdown = Box::pin(wsauth_shared::shutdown::signal());
    if (&mut shutdown).now_or_never().is_some() {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(config.auth_listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.auth_listen))?;
    let addr = listener.local_addr().context("listener address")?;
    tracing::info!(addr = %addr, "listening");
    let served = wsauth_auth::run(config, listener, shutdown).await;
    telemetry.shutdown().await;
    Ok(served?)
}
