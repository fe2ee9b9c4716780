//! `wsauth-gateway`: parse config, set up tracing, bind, and hand over to `run`.

use anyhow::Context as _;
use clap::Parser as _;
use futures::FutureExt as _;
use wsauth_gateway::Config;
use wsauth_shared::telemetry;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let telemetry = telemetry::init_service(config.log_format, "wsauth-gateway")?;
    // Handlers installed before "listening" is logged: a SIGTERM sent as soon
    // as the harness sees that line must shut down gracefully, not kill.
    let mut shutdown = Box::pin(wsauth_shared::shutdown::signal());
    if shutdown.as_mut().now_or_never().is_some() {
        return Ok(());
    }
    let listener = tokio::net::TcpListener::bind(config.gateway_listen)
        .await
        .with_context(|| format!("cannot bind {}", config.gateway_listen))?;
    let local_addr = listener.local_addr().context("no local address")?;
    tracing::info!(addr = %local_addr, "listening");
    let served = wsauth_gateway::run(config, listener, shutdown).await;
    telemetry.shutdown().await;
    Ok(served?)
}
