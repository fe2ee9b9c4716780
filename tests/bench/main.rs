//! `wsauth-bench`: the load generator behind `make bench`.
//!
//! One run walks four measurements, each printed as one JSON line on stdout
//! as soon as it is known, then all of them as a markdown table:
//! - [`handshakes`]: the full client flow (`GET /token/ws` → `/ws?token=` →
//!   jwt frame → `auth_ok` → close) at fixed concurrencies;
//! - [`memory`]: gateway RSS per idle authenticated connection;
//! - [`fanout`]: broadcasts stamped with their send time, checked per client
//!   for loss, duplicates and order;
//! - [`auth_rpc`]: the auth RPCs alone beside `redis-benchmark` of the same
//!   Redis commands on the same Redis.
//!
//! Handshakes and fan-out also run against the [`floor`] (a bare server
//! speaking the same client protocol, no auth, no Redis) with the same
//! clients in the same run, and wsauth's figures are printed as ratios to it.
//! The clients live in [`pool`] worker processes (this binary re-executed as
//! `wsauth-bench worker`, see [`worker`]), so that no process nears the
//! 20,000-open-files cap and the client side is not the bottleneck.
//! [`stack`] starts the private stack through the test harness (`wsauth_tests`)
//! or names a running one; [`client`] is the client side of the flow;
//! [`report`] prints the results.
//!
//! `wsauth-bench soak` ([`soak`], [`soak_churn`]) is no measurement of speed:
//! it churns connections through every close path for a set time and
//! watches the services for leaks (RSS slope, open files, the registry).
#![forbid(unsafe_code)]

mod auth_rpc;
mod cli;
mod client;
mod fanout;
mod floor;
mod handshake_loop;
mod handshakes;
mod memory;
mod pool;
mod procfs;
mod protocol;
mod report;
mod soak;
mod soak_churn;
mod stack;
mod stats;
mod worker;
mod wsframe;

use anyhow::Context;
use clap::Parser;

use crate::cli::{Cli, Command, Only};
use crate::report::Report;

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Worker) => {
            // A worker holds thousands of idle sockets and shares two cores
            // with the services it measures: one thread is enough and keeps
            // it out of their way.
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("building the worker runtime")?;
            runtime.block_on(worker::run())
        }
        Some(Command::Floor) => {
            // Two threads, as the gateway has on this machine; the fan-out
            // itself is one loop on one of them.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("building the floor runtime")?;
            runtime.block_on(floor::run())
        }
        Some(Command::Soak(args)) => measurer_runtime()?.block_on(soak::run(args)),
        None => measurer_runtime()?.block_on(run(cli.bench)),
    }
}

/// The measurer's runtime (the bench itself, or the soak), with its logs on.
fn measurer_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    wsauth_shared::telemetry::init(wsauth_shared::telemetry::LogFormat::Text);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the runtime")
}

async fn run(args: cli::BenchArgs) -> anyhow::Result<()> {
    let plan = args.plan();
    let mut report = Report::new(&args);
    for only in plan.measurements() {
        let outcome = match only {
            Only::Handshakes => handshakes::measure(&args, &plan, &mut report).await,
            Only::Memory => memory::measure(&args, &plan, &mut report).await,
            Only::Fanout => fanout::measure(&args, &plan, &mut report).await,
            Only::Auth => auth_rpc::measure(&args, &plan, &mut report).await,
        };
        if let Err(error) = outcome {
            // One broken measurement should not hide the others: it is
            // recorded as a failed row and the run goes on.
            tracing::error!(measurement = ?only, "measurement failed: {error:#}");
            report.failed(only, &error);
        }
    }
    report.finish();
    if report.any_failed() {
        anyhow::bail!("some measurements failed (see the table)");
    }
    Ok(())
}
