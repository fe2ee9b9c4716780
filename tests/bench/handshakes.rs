//! Handshakes: the full client flow, back to back, at a fixed concurrency
//! for a fixed time, from this process (a few dozen sockets at a time).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Map, json};

use crate::cli::{BenchArgs, Only, Plan};
use crate::client::{self, Connector, source_ip};
use crate::jwt::JwtMinter;
use crate::procfs::{CpuMeter, describe_cpu};
use crate::report::{Measurement, Report, thousands};
use crate::stack::Stack;
use crate::stats::{Samples, round3};

/// The target at concurrency 64.
const TARGET_PER_S: f64 = 5000.0;

pub async fn measure(args: &BenchArgs, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    let stack = Stack::start(args, 1).await?;
    let gateway = stack
        .gateways
        .first()
        .ok_or_else(|| anyhow::anyhow!("no gateway"))?
        .addr;
    let minter = stack.minter()?;
    // Warm-up, not recorded: first gRPC connections, allocator growth.
    let warm = plan.duration.min(Duration::from_secs(1)) / 2;
    run(gateway, &minter, 16, warm).await;
    for &concurrency in &plan.handshake_concurrency {
        let cpu = CpuMeter::start(&stack.processes());
        let mut outcome = run(gateway, &minter, concurrency, plan.duration).await;
        let cpu = cpu.finish();
        let per_s = outcome.ok as f64 / plan.duration.as_secs_f64();
        let (p50, p90, p99) = (
            round3(outcome.latency.percentile_ms(50.0)),
            round3(outcome.latency.percentile_ms(90.0)),
            round3(outcome.latency.percentile_ms(99.0)),
        );
        let mut fields = Map::new();
        fields.insert("concurrency".into(), json!(concurrency));
        fields.insert("duration_s".into(), json!(plan.duration.as_secs_f64()));
        fields.insert("handshakes".into(), json!(outcome.ok));
        fields.insert("handshakes_per_s".into(), json!(per_s.round()));
        fields.insert("p50_ms".into(), json!(p50));
        fields.insert("p90_ms".into(), json!(p90));
        fields.insert("p99_ms".into(), json!(p99));
        fields.insert("max_ms".into(), json!(round3(outcome.latency.max_ms())));
        fields.insert("errors".into(), json!(outcome.failed));
        fields.insert("error_kinds".into(), json!(outcome.errors));
        fields.insert(
            "cpu_percent".into(),
            json!(cpu.iter().cloned().collect::<HashMap<_, _>>()),
        );
        let errors = if outcome.failed > 0 {
            format!(", **{} errors**", outcome.failed)
        } else {
            String::new()
        };
        report.record(Measurement {
            kind: Only::Handshakes,
            setup: format!(
                "c={concurrency}, {:.0} s, 1 gateway",
                plan.duration.as_secs_f64()
            ),
            summary: format!(
                "{}/s; p50 {p50} ms, p90 {p90} ms, p99 {p99} ms{errors}; CPU {}",
                thousands(per_s),
                describe_cpu(&cpu)
            ),
            target: (concurrency == 64).then(|| ("≥ 5,000/s".to_owned(), per_s >= TARGET_PER_S)),
            fields,
        });
    }
    report.note(
        "handshakes: each is GET /token/ws (on a kept-alive HTTP/1.1 connection per client task, as a browser \
         would) → new TCP connection + WebSocket upgrade /ws?token= → jwt frame → auth_ok → close handshake; \
         latency is GET → auth_ok; the rate counts handshakes that reached auth_ok within the window; \
         every network step has a 10 s deadline; a failed handshake counts as an error, not a sample",
    );
    Ok(())
}

struct Outcome {
    ok: usize,
    failed: usize,
    latency: Samples,
    errors: HashMap<String, usize>,
}

/// `concurrency` tasks doing handshakes back to back until `duration` is up.
async fn run(
    gateway: SocketAddr,
    minter: &JwtMinter,
    concurrency: usize,
    duration: Duration,
) -> Outcome {
    let deadline = Instant::now() + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..concurrency {
        let minter = minter.clone();
        tasks.spawn(async move {
            let user = format!("bench-hs-{task}");
            let mut connector = Connector::new(gateway, source_ip(task));
            let mut latency = Samples::default();
            let mut errors: HashMap<String, usize> = HashMap::new();
            let mut round = 0usize;
            let jwt = match minter.mint(&user) {
                Ok(jwt) => jwt,
                Err(error) => {
                    errors.insert(format!("minting: {error:#}"), 1);
                    return (latency, errors);
                }
            };
            while Instant::now() < deadline {
                round += 1;
                let began = Instant::now();
                // Spread the WebSocket sockets over source addresses: a 10 s
                // run leaves tens of thousands in TIME_WAIT.
                let source = source_ip(task + round * concurrency);
                match connector.authenticate(&jwt, &user, source).await {
                    Ok(ws) => {
                        if Instant::now() <= deadline {
                            latency.push(began.elapsed());
                        }
                        if let Err(error) = client::close(ws).await {
                            *errors.entry(format!("{error:#}")).or_default() += 1;
                        }
                    }
                    Err(error) => *errors.entry(format!("{error:#}")).or_default() += 1,
                }
            }
            (latency, errors)
        });
    }
    let mut outcome = Outcome {
        ok: 0,
        failed: 0,
        latency: Samples::default(),
        errors: HashMap::new(),
    };
    while let Some(joined) = tasks.join_next().await {
        let Ok((latency, errors)) = joined else {
            outcome.failed += 1;
            continue;
        };
        outcome.ok += latency.len();
        outcome.latency.extend(latency.into_micros());
        for (error, n) in errors {
            outcome.failed += n;
            *outcome.errors.entry(error).or_default() += n;
        }
    }
    outcome
}
