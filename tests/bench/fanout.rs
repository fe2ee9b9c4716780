//! Fan-out: N authenticated clients (in worker processes), then broadcasts
//! 100 ms apart whose payload is `<run tag>:<seq>:<send time in ns since the
//! epoch>`; each client checks it got every one exactly once and in order,
//! and records send → receive latency. wsauth (gRPC Publish) and the floor
//! (a line to its stdin) are measured with the same clients in the same run.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, json};
use tokio::time::MissedTickBehavior;

use crate::cli::{BenchArgs, Only, Plan};
use crate::pool::{Pool, PoolConfig};
use crate::procfs::{CpuMeter, CpuUse, describe_cpu};
use crate::protocol::FloorStats;
use crate::report::{Measurement, Report, thousands};
use crate::stack::Stack;
use crate::stats::{Samples, round3};

/// Issue 13's targets: p99 within this multiple of the floor's, by clients.
fn target_ratio(clients: usize) -> f64 {
    if clients >= 10_000 { 1.3 } else { 1.1 }
}

pub async fn measure(args: &BenchArgs, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let publishes = args.publishes.clamp(1, 10_000);
    let mut layouts = vec![1];
    if args.gateways > 1 {
        layouts.push(args.gateways);
    }
    let mut floor = Stack::floor().await?;
    let mut floors: HashMap<usize, Outcome> = HashMap::new();
    for gateways in layouts {
        let mut stack = Stack::start(args, gateways).await?;
        for &clients in &plan.fanout_clients {
            let ours = run(args, &mut stack, clients, publishes).await?;
            let base = match floors.entry(clients) {
                Entry::Occupied(known) => known.into_mut(),
                Entry::Vacant(slot) => {
                    let base = run(args, &mut floor, clients, publishes).await?;
                    record(report, &base, None);
                    slot.insert(base)
                }
            };
            record(report, &ours, Some(base));
        }
    }
    report.note(format!(
        "fanout: clients connected and authenticated first (worker processes, as for memory; client i on \
         gateway i mod G), then {publishes} broadcasts {} ms apart: for wsauth a Publish without user_id, for \
         the floor a line to its stdin; latency = client receive time − send time carried in the payload (same \
         machine clock, taken just before the Publish call), so for wsauth it includes the Publish RPC, Redis, \
         Subscribe, the gateway and the client's own scheduling; deliveries/s = deliveries / (last delivery − \
         first send); lost/duplicated/out of order are counted per client over the clients that connected; the \
         floor runs with the same clients, once per client count, right after wsauth's run; server CPU per \
         delivery = CPU time of gateways + auth + redis (floor: the floor process) during the broadcasts / \
         deliveries",
        args.publish_interval_ms
    ));
    Ok(())
}

/// What one fan-out run measured.
struct Outcome {
    floor: bool,
    gateways: usize,
    wanted: usize,
    clients: usize,
    connect_failures: usize,
    connect_errors: Vec<(String, usize)>,
    publishes: usize,
    publish_errors: HashMap<String, usize>,
    publish_latency: Samples,
    latency: Samples,
    by_seq: Vec<Samples>,
    per_s: f64,
    lost: u64,
    duplicated: u64,
    out_of_order: u64,
    complete: usize,
    closed: usize,
    cpu: CpuUse,
    floor_stats: Option<FloorStats>,
}

impl Outcome {
    fn server_us_per_delivery(&self) -> f64 {
        let server = self
            .cpu
            .seconds_of(|name| name != "workers" && name != "bench");
        server * 1e6 / (self.latency.len().max(1) as f64)
    }
}

async fn run(
    args: &BenchArgs,
    stack: &mut Stack,
    clients: usize,
    publishes: usize,
) -> anyhow::Result<Outcome> {
    let gateways: Vec<_> = stack.gateways.iter().map(|g| g.addr).collect();
    let run_tag = format!("{:016x}", rand::random::<u64>());
    let mut pool = Pool::new(
        stack,
        PoolConfig {
            gateways: gateways.clone(),
            sockets_per_worker: args.sockets_per_worker,
            connect_concurrency: args.connect_concurrency,
            run_tag: run_tag.clone(),
            expect_broadcasts: publishes,
        },
    )?;
    let result = async {
        let ready = pool.add(clients, args.client_workers).await?;
        if ready.ok == 0 {
            anyhow::bail!("no client connected: {:?}", ready.errors);
        }
        let mut processes = stack.processes();
        processes.extend(pool.processes());
        processes.push(("bench".to_owned(), std::process::id()));
        let floor = stack.is_floor();
        let mut publisher = stack.publisher().await?;
        let cpu = CpuMeter::start(&processes);
        let mut ticker = tokio::time::interval(Duration::from_millis(args.publish_interval_ms));
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut publish_latency = Samples::default();
        let mut publish_errors: HashMap<String, usize> = HashMap::new();
        let mut first_sent_us = None;
        for seq in 0..publishes {
            ticker.tick().await;
            let sent = SystemTime::now().duration_since(UNIX_EPOCH)?;
            first_sent_us.get_or_insert(sent.as_micros() as u64);
            let data = format!("{run_tag}:{seq}:{}", sent.as_nanos());
            let began = std::time::Instant::now();
            match publisher.publish(data).await {
                Ok(()) => publish_latency.push(began.elapsed()),
                Err(error) => *publish_errors.entry(format!("{error:#}")).or_default() += 1,
            }
        }
        drop(publisher);
        let results = pool.collect(Duration::from_secs(10)).await?;
        let cpu = cpu.finish();
        let floor_stats = stack.floor_stats().await?;

        let mut latency = Samples::default();
        let mut by_seq = vec![Samples::default(); publishes];
        let mut outcome = Outcome {
            floor,
            gateways: gateways.len(),
            wanted: clients,
            clients: ready.ok,
            connect_failures: ready.failed,
            connect_errors: ready.errors,
            publishes,
            publish_errors,
            publish_latency,
            latency: Samples::default(),
            by_seq: Vec::new(),
            per_s: 0.0,
            lost: 0,
            duplicated: 0,
            out_of_order: 0,
            complete: 0,
            closed: 0,
            cpu,
            floor_stats,
        };
        let mut last_us = 0;
        for result in results {
            outcome.lost += result.lost;
            outcome.duplicated += result.duplicated;
            outcome.out_of_order += result.out_of_order;
            outcome.complete += result.complete;
            outcome.closed += result.closed;
            last_us = last_us.max(result.last_receive_unix_us);
            for (seq, latencies) in result.latencies_us.into_iter().enumerate() {
                latency.extend(latencies.iter().copied());
                if let Some(samples) = by_seq.get_mut(seq) {
                    samples.extend(latencies);
                }
            }
        }
        let window_s = last_us.saturating_sub(first_sent_us.unwrap_or(last_us)) as f64 / 1e6;
        if window_s > 0.0 {
            outcome.per_s = latency.len() as f64 / window_s;
        }
        outcome.latency = latency;
        outcome.by_seq = by_seq;
        anyhow::Ok(outcome)
    }
    .await;
    pool.close().await;
    result
}

fn record(report: &mut Report, o: &Outcome, floor: Option<&Outcome>) {
    let mut latency = o.latency.clone();
    let (p50, p99, max) = (
        round3(latency.percentile_ms(50.0)),
        round3(latency.percentile_ms(99.0)),
        round3(latency.max_ms()),
    );
    let failed_publishes: usize = o.publish_errors.values().sum();
    let server_us = o.server_us_per_delivery();
    let percents = o.cpu.percents();
    let clients_cpu = o.cpu.percent_of(|name| name == "workers");
    let mut fields = Map::new();
    fields.insert(
        "server".into(),
        json!(if o.floor { "floor" } else { "wsauth" }),
    );
    fields.insert("clients".into(), json!(o.clients));
    fields.insert("wanted_clients".into(), json!(o.wanted));
    fields.insert("connect_failures".into(), json!(o.connect_failures));
    fields.insert("connect_errors".into(), json!(o.connect_errors));
    fields.insert("gateways".into(), json!(o.gateways));
    fields.insert("publishes".into(), json!(o.publishes));
    fields.insert("publish_errors".into(), json!(o.publish_errors));
    let mut publish_latency = o.publish_latency.clone();
    fields.insert(
        "publish_p50_ms".into(),
        json!(round3(publish_latency.percentile_ms(50.0))),
    );
    // Which broadcast was slow, if any: p50 and max delivery latency of each.
    let per_publish: Vec<_> = o
        .by_seq
        .iter()
        .map(|s| json!([round3(s.clone().percentile_ms(50.0)), round3(s.max_ms())]))
        .collect();
    fields.insert("per_publish_p50_max_ms".into(), json!(per_publish));
    fields.insert("deliveries".into(), json!(o.latency.len()));
    fields.insert("expected_deliveries".into(), json!(o.clients * o.publishes));
    fields.insert("deliveries_per_s".into(), json!(o.per_s.round()));
    fields.insert("p50_ms".into(), json!(p50));
    fields.insert("p99_ms".into(), json!(p99));
    fields.insert("max_ms".into(), json!(max));
    fields.insert("lost".into(), json!(o.lost));
    fields.insert("duplicated".into(), json!(o.duplicated));
    fields.insert("out_of_order".into(), json!(o.out_of_order));
    fields.insert("clients_complete".into(), json!(o.complete));
    fields.insert("clients_closed".into(), json!(o.closed));
    fields.insert(
        "server_cpu_us_per_delivery".into(),
        json!(round3(server_us)),
    );
    fields.insert("client_cpu_percent".into(), json!(clients_cpu));
    fields.insert(
        "cpu_percent".into(),
        json!(percents.iter().cloned().collect::<HashMap<_, _>>()),
    );
    let mut problems = String::new();
    if o.connect_failures > 0 {
        problems.push_str(&format!(", **{} failed to connect**", o.connect_failures));
    }
    if failed_publishes > 0 {
        problems.push_str(&format!(", **{failed_publishes} broadcasts failed**"));
    }
    if o.closed > 0 {
        problems.push_str(&format!(", **{} clients closed**", o.closed));
    }
    if let Some(stats) = o.floor_stats {
        fields.insert("floor_direct_sends".into(), json!(stats.direct));
        fields.insert("floor_queued_sends".into(), json!(stats.queued));
        fields.insert("floor_failed_sends".into(), json!(stats.failed));
        problems.push_str(&format!(
            "; {} sends whole, {} queued",
            thousands(stats.direct as f64),
            thousands(stats.queued as f64)
        ));
    }
    let clean = o.lost == 0 && o.duplicated == 0 && o.out_of_order == 0 && failed_publishes == 0;
    let mut summary = format!(
        "p50 {p50} ms, p99 {p99} ms, max {max} ms; {}/s; lost {}, duplicated {}, out of order {}{problems}; \
         server CPU {server_us:.1} µs/delivery; CPU {}",
        thousands(o.per_s),
        o.lost,
        o.duplicated,
        o.out_of_order,
        describe_cpu(&percents)
    );
    let mut target = None;
    if let Some(floor) = floor {
        let floor_p99 = floor.latency.clone().percentile_ms(99.0);
        let ratio = p99 / floor_p99.max(1e-9);
        let cpu_ratio = server_us / floor.server_us_per_delivery().max(1e-9);
        fields.insert("floor_p99_ms".into(), json!(round3(floor_p99)));
        fields.insert("p99_ratio_to_floor".into(), json!(round3(ratio)));
        fields.insert("server_cpu_ratio_to_floor".into(), json!(round3(cpu_ratio)));
        summary = format!(
            "**p99 {ratio:.2}× floor** ({} ms); server CPU/delivery {cpu_ratio:.1}× floor's; {summary}",
            round3(floor_p99)
        );
        let wanted = target_ratio(o.wanted);
        target = Some((
            format!("p99 ≤ {wanted}× floor, 0 lost/dup/reordered"),
            ratio <= wanted && clean,
        ));
    }
    let server = if o.floor {
        "floor".to_owned()
    } else {
        format!(
            "wsauth, {} gateway{}",
            o.gateways,
            if o.gateways == 1 { "" } else { "s" }
        )
    };
    report.record(Measurement {
        kind: Only::Fanout,
        setup: format!(
            "{} clients, {server}, {} × broadcast",
            thousands(o.clients as f64),
            o.publishes
        ),
        summary,
        target,
        fields,
    });
}
