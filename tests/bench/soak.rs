//! `wsauth-bench soak` (`make soak`): a private stack (the harness's
//! redis-server, auth and one gateway) under churn for SOAK_SECONDS. Churners
//! run one connection after another through every close path of the contract
//! ([`crate::soak_churn`]) while broadcasts are published; every SOAK_SAMPLE_S
//! the gateway's and auth's RSS and open files (`/proc`) and the gateway's
//! registry (`/metrics`) are sampled and printed. After the churn, with every
//! client gone, the registry must return to 0 and neither process may hold
//! more open files than before the churn; the RSS slope over the second half
//! is reported. A leak hunt, not a speed test: debug binaries will do.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use tokio::task::JoinSet;
use tokio::time::Instant;
use wsauth_tests::{
    AuthOptions, GatewayOptions, Launch, TestAuth, TestGateway, TestRedis, http, metrics,
};

use crate::cli::SoakArgs;
use crate::procfs;
use crate::soak_churn::{self, Path};
use crate::stack::{check_bins, log_dir};

/// The registry and the sockets around it, as the gateway's `/metrics` names them.
const REGISTRY: &str = "wsauth_gateway_connections_open";
const SOCKETS: &str = "wsauth_gateway_sockets_open";
const PENDING: &str = "wsauth_gateway_pending_auth";
/// How long the gateway may take to empty its registry once the churn ends.
const DRAIN_WITHIN: Duration = Duration::from_secs(60);

/// One sample of the series.
#[derive(Clone, Debug)]
struct Sample {
    t_s: f64,
    gateway_rss_kib: u64,
    gateway_fds: usize,
    auth_rss_kib: u64,
    auth_fds: usize,
    registry: f64,
    sockets: f64,
    pending: f64,
    lives: u64,
}

/// Lives per path: how many ended as the contract says, how many did not,
/// and the first few reasons why not.
#[derive(Default)]
struct Tally {
    ok: u64,
    failed: u64,
    reasons: Vec<String>,
}

type Tallies = Arc<Mutex<BTreeMap<Path, Tally>>>;

struct Stack {
    // Drop order: gateway, auth, then Redis (each is killed when dropped).
    gateway: Arc<TestGateway>,
    auth: Arc<TestAuth>,
    _redis: TestRedis,
    gateway_pid: u32,
    auth_pid: u32,
}

pub async fn run(args: SoakArgs) -> anyhow::Result<()> {
    check_bins(args.bin_dir.as_deref())?;
    let stack = start(&args).await?;
    // A harness step that fails panics; each such panic is a failed life,
    // tallied with its message, so the default hook's backtraces are noise.
    std::panic::set_hook(Box::new(|_| {}));
    let started = Instant::now();
    let baseline = sample(&stack, started, 0).await?;
    println!(
        "soak: {} s of churn by {} clients (+1 slow consumer), {} broadcasts/s; logs in {}",
        args.seconds,
        args.churners,
        args.publish_per_s,
        log_dir().display()
    );
    println!("{}", header());
    println!("{}", row(&baseline));

    let tallies: Tallies = Arc::default();
    let deadline = started + Duration::from_secs(args.seconds);
    let mut churn = JoinSet::new();
    for churner in 0..args.churners {
        // Each churner starts at another path, so every path is live at any time.
        let paths = Path::CHURN
            .iter()
            .copied()
            .cycle()
            .skip(churner)
            .take(Path::CHURN.len())
            .collect();
        churn.spawn(churn_loop(
            churner,
            paths,
            deadline,
            Arc::clone(&stack.gateway),
            Arc::clone(&stack.auth),
            Arc::clone(&tallies),
        ));
    }
    churn.spawn(churn_loop(
        args.churners,
        vec![Path::SlowConsumer],
        deadline,
        Arc::clone(&stack.gateway),
        Arc::clone(&stack.auth),
        Arc::clone(&tallies),
    ));
    let publisher = tokio::spawn(publish_loop(
        Arc::clone(&stack.auth),
        args.publish_per_s,
        deadline,
    ));

    let mut series = vec![baseline.clone()];
    let every = Duration::from_secs(args.sample_s.max(1));
    let mut next = started + every;
    while next <= deadline {
        tokio::time::sleep_until(next).await;
        let s = sample(&stack, started, lives(&tallies)).await?;
        println!("{}", row(&s));
        series.push(s);
        next += every;
    }
    // Each churner finishes the life it is in (bounded by run_one's deadline).
    while churn.join_next().await.is_some() {}
    let published = publisher.await.context("the publisher")??;

    let drained = wait_drained(&stack).await;
    let end = sample(&stack, started, lives(&tallies)).await?;
    println!("{}   (after the churn, every client gone)", row(&end));
    report(
        &args, &series, &baseline, &end, &tallies, published, drained,
    )
}

async fn start(args: &SoakArgs) -> anyhow::Result<Stack> {
    let logs = log_dir();
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    let launch = |name: &str| Launch {
        bin_dir: args.bin_dir.clone(),
        log_file: Some(logs.join(format!("{name}.log"))),
    };
    let redis = tokio::task::spawn_blocking(TestRedis::spawn)
        .await
        .map_err(|_| anyhow!("starting redis-server failed (is it on PATH?)"))?;
    let auth = TestAuth::spawn(Some(&redis), AuthOptions::default().launch(launch("auth"))).await;
    let gateway = TestGateway::spawn(
        &[&auth],
        GatewayOptions::default()
            .auth_timeout_s(soak_churn::AUTH_TIMEOUT_S)
            .max_message_bytes(soak_churn::MAX_MESSAGE_BYTES)
            .max_messages_per_s(soak_churn::MAX_MESSAGES_PER_S)
            .send_queue_capacity(soak_churn::SEND_QUEUE_CAPACITY)
            .launch(launch("gateway")),
    )
    .await;
    gateway.wait_ready(Duration::from_secs(30)).await;
    let gateway_pid = gateway.pid().context("the gateway runs")?;
    let auth_pid = auth.pid().context("auth runs")?;
    Ok(Stack {
        gateway: Arc::new(gateway),
        auth: Arc::new(auth),
        _redis: redis,
        gateway_pid,
        auth_pid,
    })
}

/// One churner: lives along `paths` in turn until `deadline`.
async fn churn_loop(
    churner: usize,
    paths: Vec<Path>,
    deadline: Instant,
    gateway: Arc<TestGateway>,
    auth: Arc<TestAuth>,
    tallies: Tallies,
) {
    for (n, path) in paths.into_iter().cycle().enumerate() {
        if Instant::now() >= deadline {
            break;
        }
        // A user per life: a revocation must not reach another life's connection.
        let user = format!("soak-{churner}-{n}");
        let outcome =
            soak_churn::run_one(path, user, Arc::clone(&gateway), Arc::clone(&auth)).await;
        let mut tallies = tallies.lock().expect("no panic while holding the tallies");
        let tally = tallies.entry(path).or_default();
        match outcome {
            Ok(()) => tally.ok += 1,
            Err(error) => {
                tally.failed += 1;
                if tally.reasons.len() < 3 {
                    tally.reasons.push(format!("{error:#}"));
                }
            }
        }
    }
}

/// Broadcasts to everyone, `per_s` a second until `deadline`: how many.
async fn publish_loop(auth: Arc<TestAuth>, per_s: u32, deadline: Instant) -> anyhow::Result<u64> {
    if per_s == 0 {
        return Ok(0);
    }
    let mut tick = tokio::time::interval(Duration::from_secs(1) / per_s);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut published = 0u64;
    while Instant::now() < deadline {
        tick.tick().await;
        match auth.try_publish(&format!("soak {published}"), None).await {
            Ok(_) => published += 1,
            Err(status) => tracing::warn!(?status, "publish failed"),
        }
    }
    Ok(published)
}

fn lives(tallies: &Tallies) -> u64 {
    let tallies = tallies.lock().expect("no panic while holding the tallies");
    tallies.values().map(|t| t.ok + t.failed).sum()
}

async fn sample(stack: &Stack, started: Instant, lives: u64) -> anyhow::Result<Sample> {
    let response = tokio::time::timeout(
        Duration::from_secs(10),
        http::try_get(stack.gateway.addr(), "/metrics", &[]),
    )
    .await
    .map_err(|_| anyhow!("GET /metrics: no answer within 10 s"))?
    .map_err(|e| anyhow!("GET /metrics: {e:?}"))?;
    let gauge = |name: &str| {
        metrics::sample_sum(&response.body, name).ok_or_else(|| anyhow!("no {name} in /metrics"))
    };
    Ok(Sample {
        t_s: started.elapsed().as_secs_f64(),
        gateway_rss_kib: procfs::rss_kib(stack.gateway_pid)?,
        gateway_fds: procfs::open_files(stack.gateway_pid)?,
        auth_rss_kib: procfs::rss_kib(stack.auth_pid)?,
        auth_fds: procfs::open_files(stack.auth_pid)?,
        registry: gauge(REGISTRY)?,
        sockets: gauge(SOCKETS)?,
        pending: gauge(PENDING)?,
        lives,
    })
}

/// Whether the registry, the open sockets and the pending ones all reach 0.
async fn wait_drained(stack: &Stack) -> bool {
    let until = Instant::now() + DRAIN_WITHIN;
    while Instant::now() < until {
        if let Ok(s) = sample(stack, Instant::now(), 0).await
            && s.registry == 0.0
            && s.sockets == 0.0
            && s.pending == 0.0
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    false
}

fn header() -> String {
    "| t (s) | gateway RSS (KiB) | gateway fds | auth RSS (KiB) | auth fds | registry | sockets | pending | lives |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|".to_owned()
}

fn row(s: &Sample) -> String {
    format!(
        "| {:.0} | {} | {} | {} | {} | {} | {} | {} | {} |",
        s.t_s,
        s.gateway_rss_kib,
        s.gateway_fds,
        s.auth_rss_kib,
        s.auth_fds,
        s.registry,
        s.sockets,
        s.pending,
        s.lives
    )
}

/// Least-squares slope of `y` over `t`, per minute.
fn slope_per_min(points: &[(f64, f64)]) -> f64 {
    let n = points.len() as f64;
    if points.len() < 2 {
        return 0.0;
    }
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / n;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / n;
    let cov: f64 = points
        .iter()
        .map(|(t, y)| (t - mean_t) * (y - mean_y))
        .sum();
    let var: f64 = points.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
    if var == 0.0 { 0.0 } else { cov / var * 60.0 }
}

fn report(
    args: &SoakArgs,
    series: &[Sample],
    baseline: &Sample,
    end: &Sample,
    tallies: &Tallies,
    published: u64,
    drained: bool,
) -> anyhow::Result<()> {
    let half = args.seconds as f64 / 2.0;
    let second_half: Vec<&Sample> = series.iter().filter(|s| s.t_s >= half).collect();
    let slope = |rss: fn(&Sample) -> u64| {
        let points: Vec<(f64, f64)> = second_half.iter().map(|s| (s.t_s, rss(s) as f64)).collect();
        slope_per_min(&points)
    };
    let gateway_slope = slope(|s| s.gateway_rss_kib);
    let auth_slope = slope(|s| s.auth_rss_kib);
    println!("\nlives per close path (ended as the contract says / otherwise):");
    let tallies = tallies.lock().expect("no panic while holding the tallies");
    let mut never = Vec::new();
    for path in Path::CHURN.iter().chain([&Path::SlowConsumer]) {
        let tally = tallies.get(path);
        let (ok, failed) = tally.map_or((0, 0), |t| (t.ok, t.failed));
        println!("  {:<32} {ok:>7} / {failed}", path.name());
        for reason in tally.map(|t| t.reasons.as_slice()).unwrap_or_default() {
            println!("      e.g. {reason}");
        }
        if ok == 0 {
            never.push(path.name());
        }
    }
    println!("broadcasts published: {published}");
    println!(
        "RSS slope over the second half ({} samples): gateway {gateway_slope:+.1} KiB/min, auth {auth_slope:+.1} KiB/min",
        second_half.len()
    );
    println!(
        "open files before → after: gateway {} → {}, auth {} → {} (slack {})",
        baseline.gateway_fds, end.gateway_fds, baseline.auth_fds, end.auth_fds, args.fd_slack
    );
    let mut failures = Vec::new();
    if !drained {
        failures.push(format!(
            "the registry did not return to 0 within {DRAIN_WITHIN:?}: registry {}, sockets {}, pending {}",
            end.registry, end.sockets, end.pending
        ));
    }
    if end.gateway_fds > baseline.gateway_fds + args.fd_slack {
        failures.push(format!(
            "gateway open files grew: {} → {}",
            baseline.gateway_fds, end.gateway_fds
        ));
    }
    if end.auth_fds > baseline.auth_fds + args.fd_slack {
        failures.push(format!(
            "auth open files grew: {} → {}",
            baseline.auth_fds, end.auth_fds
        ));
    }
    if !never.is_empty() {
        failures.push(format!(
            "close paths never completed as the contract says: {never:?}"
        ));
    }
    if failures.is_empty() {
        println!("soak: PASS");
        Ok(())
    } else {
        bail!("soak: FAIL: {}", failures.join("; "))
    }
}
