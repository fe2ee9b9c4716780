//! Memory: the gateway's resident memory per idle authenticated connection,
//! (RSS with N clients − RSS before the first) / N, at growing N on one
//! gateway. The clients live in worker processes (see [`crate::pool`]).

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Map, json};

use crate::cli::{BenchArgs, Only, Plan};
use crate::pool::{Pool, PoolConfig};
use crate::procfs::{open_files, open_files_limit, rss_kib};
use crate::report::{Measurement, Report, thousands};
use crate::stack::Stack;
use crate::stats::{Samples, round3};

/// Issue 13's target at 19k connections, with the services at `RUST_LOG=info`.
const TARGET_BYTES: f64 = 3072.0;

pub async fn measure(args: &BenchArgs, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let stack = Stack::start(args, 1).await?;
    let gateway = stack.gateways.first().context("no gateway")?;
    let pid = gateway
        .pid
        .context("the memory measurement needs the gateway's pid (--gateway-pid)")?;
    let mut sizes = plan.memory_connections.clone();
    sizes.sort_unstable();
    sizes.dedup();
    let largest = sizes.last().copied().unwrap_or(0);
    if let Some(limit) = open_files_limit() {
        // The gateway inherits this limit in a private stack.
        if stack.private && (largest as u64) + 200 > limit {
            bail!(
                "{largest} connections need an open-files limit above {}; this process has {limit} (ulimit -n)",
                largest + 200
            );
        }
    }

    let baseline = stable_rss(pid).await?;
    let mut pool = Pool::new(
        &stack,
        PoolConfig {
            gateways: vec![gateway.addr],
            sockets_per_worker: args.sockets_per_worker,
            connect_concurrency: args.connect_concurrency,
            run_tag: String::new(),
            expect_broadcasts: 0,
        },
    )?;
    let mut wanted = 0;
    let result = async {
        for &size in &sizes {
            let ready = pool.add(size - wanted, 1).await?;
            wanted = size;
            let open = pool.open().await?;
            if open == 0 {
                bail!("no client connected: {:?}", ready.errors);
            }
            let rss = stable_rss(pid).await?;
            let files = open_files(pid).unwrap_or(0);
            let per_conn = (rss.saturating_sub(baseline) * 1024) as f64 / open as f64;
            let mut connect = Samples::default();
            connect.extend(ready.handshake_us.iter().copied());
            let connect_rate = ready.ok as f64 / (ready.elapsed_ms.max(1) as f64 / 1000.0);
            let mut fields = Map::new();
            fields.insert("connections".into(), json!(open));
            fields.insert("wanted".into(), json!(size));
            fields.insert("connect_failures".into(), json!(ready.failed));
            fields.insert("connect_errors".into(), json!(ready.errors));
            fields.insert("rss_baseline_kib".into(), json!(baseline));
            fields.insert("rss_kib".into(), json!(rss));
            fields.insert("bytes_per_connection".into(), json!(per_conn.round()));
            fields.insert("gateway_open_files".into(), json!(files));
            fields.insert("worker_processes".into(), json!(pool.workers()));
            if stack.private {
                fields.insert("gateway_rust_log".into(), json!(args.gateway_log));
            }
            fields.insert("connect_rate_per_s".into(), json!(connect_rate.round()));
            fields.insert(
                "connect_p99_ms".into(),
                json!(round3(connect.percentile_ms(99.0))),
            );
            let failures = if ready.failed > 0 {
                format!(", **{} failed to connect**", ready.failed)
            } else {
                String::new()
            };
            report.record(Measurement {
                kind: Only::Memory,
                setup: if stack.private {
                    format!(
                        "{} idle connections, 1 gateway at RUST_LOG={}",
                        thousands(size as f64),
                        args.gateway_log
                    )
                } else {
                    format!("{} idle connections, 1 gateway", thousands(size as f64))
                },
                summary: format!(
                    "{:.2} KiB/conn (RSS {} → {} KiB, {} open files){failures}",
                    per_conn / 1024.0,
                    thousands(baseline as f64),
                    thousands(rss as f64),
                    thousands(files as f64),
                ),
                target: (size >= 19_000)
                    .then(|| ("≤ 3 KiB/conn at 19k".to_owned(), per_conn <= TARGET_BYTES)),
                fields,
            });
        }
        anyhow::Ok(())
    }
    .await;
    pool.close().await;
    report.note(format!(
        "memory: one process may hold at most 20,000 open files here, so the clients are spread over worker \
         processes (`wsauth-bench worker`, ≤ {} sockets each) and bound to source addresses 127.0.0.2–127.0.0.251 \
         (against ephemeral-port exhaustion); the gateway holds every connection (N + a few files); RSS is VmRSS \
         of the gateway from /proc, read once it is stable (two reads 250 ms apart within 0.5 %), after every \
         client got auth_ok and before any message; per connection = (RSS − RSS before the first client) / N, \
         clients added in steps on the same gateway",
        args.sockets_per_worker
    ));
    result
}

/// VmRSS once two reads 250 ms apart agree within 0.5 % (or after 5 s).
async fn stable_rss(pid: u32) -> anyhow::Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = rss_kib(pid)?;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_kib(pid)?;
        if now.abs_diff(last) * 200 <= now || Instant::now() > deadline {
            return Ok(now);
        }
        last = now;
    }
}
