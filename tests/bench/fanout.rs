//! Fan-out: N authenticated clients (in worker processes), then Publishes
//! 100 ms apart whose payload is `<run tag>:<seq>:<send time in ns since the
//! epoch>`; each client checks it got every one exactly once and in order,
//! and records send → receive latency.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use serde_json::{Map, json};
use tokio::time::MissedTickBehavior;
use tonic::transport::Channel;
use wsauth_shared::proto::PublishRequest;
use wsauth_shared::proto::broadcast_service_client::BroadcastServiceClient;

use crate::auth_rpc::with_key;
use crate::cli::{BenchArgs, Only, Plan};
use crate::pool::{Pool, PoolConfig};
use crate::procfs::{CpuMeter, describe_cpu};
use crate::report::{Measurement, Report, thousands};
use crate::stack::Stack;
use crate::stats::{Samples, round3};

/// The target for 10k clients.
const TARGET_P99_MS: f64 = 25.0;

pub async fn measure(args: &BenchArgs, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let publishes = args.publishes.clamp(1, 10_000);
    let mut layouts = vec![1];
    if args.gateways > 1 {
        layouts.push(args.gateways);
    }
    for gateways in layouts {
        let stack = Stack::start(args, gateways).await?;
        let addrs: Vec<_> = stack
            .gateways
            .iter()
            .take(gateways)
            .map(|g| g.addr)
            .collect();
        for &clients in &plan.fanout_clients {
            run(args, &stack, &addrs, clients, publishes, report).await?;
        }
    }
    report.note(format!(
        "fanout: clients connected and authenticated first (worker processes, as for memory; client i on \
         gateway i mod G), then {publishes} Publishes without user_id {} ms apart; latency = client receive \
         time − send time carried in the payload (same machine clock, taken just before the Publish call), so it \
         includes the Publish RPC, Redis, Subscribe, the gateway and the client's own scheduling; deliveries/s = \
         deliveries / (last delivery − first send); lost/duplicated/out of order are counted per client over \
         the clients that connected",
        args.publish_interval_ms
    ));
    Ok(())
}

async fn run(
    args: &BenchArgs,
    stack: &Stack,
    gateways: &[std::net::SocketAddr],
    clients: usize,
    publishes: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let admin_key = stack
        .admin_key
        .clone()
        .context("--admin-key is needed to Publish")?;
    let channel = Channel::from_shared(stack.auth_url())?
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .context("connecting to auth")?;
    let mut publisher = BroadcastServiceClient::new(channel);
    let run_tag = format!("{:016x}", rand::random::<u64>());
    let mut pool = Pool::new(
        stack,
        PoolConfig {
            gateways: gateways.to_vec(),
            sockets_per_worker: args.sockets_per_worker,
            connect_concurrency: args.connect_concurrency,
            run_tag: run_tag.clone(),
            expect_broadcasts: publishes,
        },
    )?;
    let result = async {
        let ready = pool.add(clients).await?;
        if ready.ok == 0 {
            anyhow::bail!("no client connected: {:?}", ready.errors);
        }
        let mut processes = stack.processes();
        processes.extend(pool.processes());
        let cpu = CpuMeter::start(&processes);
        let mut ticker = tokio::time::interval(Duration::from_millis(args.publish_interval_ms));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut publish_latency = Samples::default();
        let mut publish_ms = Vec::with_capacity(publishes);
        let mut publish_errors: HashMap<String, usize> = HashMap::new();
        let mut first_sent_us = None;
        for seq in 0..publishes {
            ticker.tick().await;
            let sent = SystemTime::now().duration_since(UNIX_EPOCH)?;
            first_sent_us.get_or_insert(sent.as_micros() as u64);
            let data = format!("{run_tag}:{seq}:{}", sent.as_nanos());
            let began = std::time::Instant::now();
            match publisher.publish(with_key(PublishRequest { data, user_id: None }, &admin_key)?).await {
                Ok(_) => {
                    publish_latency.push(began.elapsed());
                    publish_ms.push(round3(began.elapsed().as_secs_f64() * 1000.0));
                }
                Err(status) => *publish_errors.entry(format!("{:?}: {}", status.code(), status.message())).or_default() += 1,
            }
        }
        let results = pool.collect(Duration::from_secs(10)).await?;
        let cpu = cpu.finish();

        let mut latency = Samples::default();
        let mut by_seq = vec![Samples::default(); publishes];
        let (mut lost, mut duplicated, mut out_of_order, mut complete, mut closed, mut last_us) = (0, 0, 0, 0, 0, 0);
        for result in results {
            lost += result.lost;
            duplicated += result.duplicated;
            out_of_order += result.out_of_order;
            complete += result.complete;
            closed += result.closed;
            last_us = last_us.max(result.last_receive_unix_us);
            for (seq, latencies) in result.latencies_us.into_iter().enumerate() {
                latency.extend(latencies.iter().copied());
                if let Some(samples) = by_seq.get_mut(seq) {
                    samples.extend(latencies);
                }
            }
        }
        let deliveries = latency.len();
        let window_s = last_us.saturating_sub(first_sent_us.unwrap_or(last_us)) as f64 / 1e6;
        let per_s = if window_s > 0.0 { deliveries as f64 / window_s } else { 0.0 };
        let (p50, p99, max) =
            (round3(latency.percentile_ms(50.0)), round3(latency.percentile_ms(99.0)), round3(latency.max_ms()));
        let failed_publishes: usize = publish_errors.values().sum();

        let mut fields = Map::new();
        fields.insert("clients".into(), json!(ready.ok));
        fields.insert("wanted_clients".into(), json!(clients));
        fields.insert("connect_failures".into(), json!(ready.failed));
        fields.insert("connect_errors".into(), json!(ready.errors));
        fields.insert("gateways".into(), json!(gateways.len()));
        fields.insert("publishes".into(), json!(publishes));
        fields.insert("publish_errors".into(), json!(publish_errors));
        fields.insert("publish_rpc_p50_ms".into(), json!(round3(publish_latency.percentile_ms(50.0))));
        fields.insert("publish_rpc_ms".into(), json!(publish_ms));
        // Which Publish was slow, if any: p50 and max delivery latency of each.
        let per_publish: Vec<_> = by_seq
            .iter_mut()
            .map(|s| json!([round3(s.percentile_ms(50.0)), round3(s.max_ms())]))
            .collect();
        fields.insert("per_publish_p50_max_ms".into(), json!(per_publish));
        fields.insert("deliveries".into(), json!(deliveries));
        fields.insert("expected_deliveries".into(), json!(ready.ok * publishes));
        fields.insert("deliveries_per_s".into(), json!(per_s.round()));
        fields.insert("p50_ms".into(), json!(p50));
        fields.insert("p99_ms".into(), json!(p99));
        fields.insert("max_ms".into(), json!(max));
        fields.insert("lost".into(), json!(lost));
        fields.insert("duplicated".into(), json!(duplicated));
        fields.insert("out_of_order".into(), json!(out_of_order));
        fields.insert("clients_complete".into(), json!(complete));
        fields.insert("clients_closed".into(), json!(closed));
        fields.insert("cpu_percent".into(), json!(cpu.iter().cloned().collect::<HashMap<_, _>>()));
        let mut problems = String::new();
        if ready.failed > 0 {
            problems.push_str(&format!(", **{} failed to connect**", ready.failed));
        }
        if failed_publishes > 0 {
            problems.push_str(&format!(", **{failed_publishes} Publishes failed**"));
        }
        if closed > 0 {
            problems.push_str(&format!(", **{closed} clients closed**"));
        }
        let clean = lost == 0 && duplicated == 0 && out_of_order == 0;
        report.record(Measurement {
            kind: Only::Fanout,
            setup: format!(
                "{} clients, {} gateway{}, {publishes} × Publish",
                thousands(ready.ok as f64),
                gateways.len(),
                if gateways.len() == 1 { "" } else { "s" }
            ),
            summary: format!(
                "p50 {p50} ms, p99 {p99} ms, max {max} ms; {}/s; lost {lost}, duplicated {duplicated}, \
                 out of order {out_of_order}{problems}; CPU {}",
                thousands(per_s),
                describe_cpu(&cpu)
            ),
            target: (clients >= 10_000)
                .then(|| ("p99 ≤ 25 ms, 0 lost/dup".to_owned(), p99 <= TARGET_P99_MS && clean && failed_publishes == 0)),
            fields,
        });
        anyhow::Ok(())
    }
    .await;
    pool.close().await;
    result
}
