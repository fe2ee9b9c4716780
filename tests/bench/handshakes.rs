//! Handshakes: the full client flow, back to back, at a fixed concurrency for
//! a fixed time, against wsauth and then against the floor in the same run;
//! the clients run in worker processes (see [`crate::handshake_loop`]).

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Map, json};

use crate::cli::{BenchArgs, Only, Plan};
use crate::pool::{Pool, PoolConfig};
use crate::procfs::{CpuMeter, CpuUse, describe_cpu};
use crate::report::{Measurement, Report, thousands};
use crate::stack::Stack;
use crate::stats::{Samples, round3};

/// Issue 13's target: wsauth's handshakes/s at least this share of the floor's.
const TARGET_RATIO: f64 = 0.6;

pub async fn measure(args: &BenchArgs, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let wsauth = Stack::start(args, 1).await?;
    let floor = Stack::floor().await?;
    for &concurrency in &plan.handshake_concurrency {
        let ours = run(args, &wsauth, concurrency, plan.duration).await?;
        let base = run(args, &floor, concurrency, plan.duration).await?;
        let ratio = ours.per_s / base.per_s.max(1e-9);
        for (outcome, stack) in [(&base, &floor), (&ours, &wsauth)] {
            record(
                report,
                plan,
                concurrency,
                outcome,
                stack,
                (!stack.is_floor()).then_some((ratio, &base)),
            );
        }
    }
    report.note(
        "handshakes: each is GET /token/ws (on a kept-alive HTTP/1.1 connection per client task, as a browser \
         would) → new TCP connection + WebSocket upgrade /ws?token= → jwt frame → auth_ok → close handshake; \
         latency is GET → auth_ok; the rate counts handshakes that reached auth_ok within the window; \
         every network step has a 10 s deadline; a failed handshake counts as an error, not a sample; the client \
         tasks run in worker processes (`wsauth-bench worker`), the same clients for wsauth and the floor, \
         wsauth first, then the floor, at each concurrency; server CPU per handshake = CPU time of auth + gateway + \
         redis (floor: the floor process) / handshakes",
    );
    Ok(())
}

struct Outcome {
    per_s: f64,
    ok: usize,
    failed: usize,
    latency: Samples,
    errors: HashMap<String, usize>,
    cpu: CpuUse,
}

impl Outcome {
    /// Server CPU time per handshake, µs.
    fn server_us(&self) -> f64 {
        let server = self
            .cpu
            .seconds_of(|name| name != "workers" && name != "bench");
        server * 1e6 / (self.ok.max(1) as f64)
    }
}

async fn run(
    args: &BenchArgs,
    stack: &Stack,
    concurrency: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let gateway = stack
        .gateways
        .first()
        .ok_or_else(|| anyhow::anyhow!("no gateway"))?
        .addr;
    let mut pool = Pool::new(
        stack,
        PoolConfig {
            gateways: vec![gateway],
            sockets_per_worker: args.sockets_per_worker,
            connect_concurrency: args.connect_concurrency,
            run_tag: String::new(),
            expect_broadcasts: 0,
        },
    )?;
    let outcome = async {
        pool.add(0, args.client_workers).await?;
        // Warm-up, not recorded: first gRPC connections, allocator growth.
        let warm = duration.min(Duration::from_secs(1)) / 2;
        pool.handshakes(gateway, concurrency.min(16), warm).await?;
        let mut processes = stack.processes();
        processes.extend(pool.processes());
        processes.push(("bench".to_owned(), std::process::id()));
        let cpu = CpuMeter::start(&processes);
        let results = pool.handshakes(gateway, concurrency, duration).await?;
        let cpu = cpu.finish();
        let mut latency = Samples::default();
        let mut errors: HashMap<String, usize> = HashMap::new();
        for result in results {
            latency.extend(result.latencies_us);
            for (error, n) in result.errors {
                *errors.entry(error).or_default() += n;
            }
        }
        let ok = latency.len();
        anyhow::Ok(Outcome {
            per_s: ok as f64 / duration.as_secs_f64(),
            ok,
            failed: errors.values().sum(),
            latency,
            errors,
            cpu,
        })
    }
    .await;
    pool.close().await;
    outcome
}

fn record(
    report: &mut Report,
    plan: &Plan,
    concurrency: usize,
    outcome: &Outcome,
    stack: &Stack,
    against_floor: Option<(f64, &Outcome)>,
) {
    let mut latency = outcome.latency.clone();
    let (p50, p90, p99) = (
        round3(latency.percentile_ms(50.0)),
        round3(latency.percentile_ms(90.0)),
        round3(latency.percentile_ms(99.0)),
    );
    let server_us = outcome.server_us();
    let clients = outcome.cpu.percent_of(|name| name == "workers");
    let mut fields = Map::new();
    fields.insert(
        "server".into(),
        json!(if stack.is_floor() { "floor" } else { "wsauth" }),
    );
    fields.insert("concurrency".into(), json!(concurrency));
    fields.insert("duration_s".into(), json!(plan.duration.as_secs_f64()));
    fields.insert("handshakes".into(), json!(outcome.ok));
    fields.insert("handshakes_per_s".into(), json!(outcome.per_s.round()));
    fields.insert("p50_ms".into(), json!(p50));
    fields.insert("p90_ms".into(), json!(p90));
    fields.insert("p99_ms".into(), json!(p99));
    fields.insert("max_ms".into(), json!(round3(latency.max_ms())));
    fields.insert("errors".into(), json!(outcome.failed));
    fields.insert("error_kinds".into(), json!(outcome.errors));
    fields.insert(
        "server_cpu_us_per_handshake".into(),
        json!(server_us.round()),
    );
    fields.insert("client_cpu_percent".into(), json!(clients));
    let percents = outcome.cpu.percents();
    fields.insert(
        "cpu_percent".into(),
        json!(percents.iter().cloned().collect::<HashMap<_, _>>()),
    );
    let errors = if outcome.failed > 0 {
        format!(", **{} errors**", outcome.failed)
    } else {
        String::new()
    };
    let mut summary = format!(
        "{}/s; p50 {p50} ms, p90 {p90} ms, p99 {p99} ms{errors}; server CPU {} µs/handshake; CPU {}",
        thousands(outcome.per_s),
        server_us.round(),
        describe_cpu(&percents)
    );
    let mut target = None;
    if let Some((ratio, floor)) = against_floor {
        let cpu_ratio = server_us / floor.server_us().max(1e-9);
        fields.insert("floor_handshakes_per_s".into(), json!(floor.per_s.round()));
        fields.insert("ratio_to_floor".into(), json!(round3(ratio)));
        fields.insert("server_cpu_ratio_to_floor".into(), json!(round3(cpu_ratio)));
        summary = format!(
            "**{:.2}× floor** ({}/s); server CPU {:.1}× floor's; {summary}",
            ratio,
            thousands(floor.per_s),
            cpu_ratio
        );
        target = Some((format!("≥ {TARGET_RATIO}× floor"), ratio >= TARGET_RATIO));
    }
    let server = if stack.is_floor() {
        "floor"
    } else {
        "wsauth, 1 gateway"
    };
    report.record(Measurement {
        kind: Only::Handshakes,
        setup: format!(
            "c={concurrency}, {:.0} s, {server}",
            plan.duration.as_secs_f64()
        ),
        summary,
        target,
        fields,
    });
}
