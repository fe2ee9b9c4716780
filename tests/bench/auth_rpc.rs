//! Auth alone: IssueWsToken, ValidateToken and VerifyJwt calls/s at a fixed
//! concurrency over a few gRPC channels, beside `redis-benchmark` running the
//! Redis commands each RPC issues, on the same Redis, at the same concurrency.
//!
//! Command mix per RPC (services/auth/src/store/redis.rs):
//! - IssueWsToken: `MGET` (user cutoff + jti revocation) then `SET key value PX ttl`;
//! - ValidateToken: one `EVALSHA` whose script runs `GETDEL` (the token) and
//!   `GET` (the user's cutoff); compared with `GETDEL` + `GET` as two commands;
//! - VerifyJwt: `MGET` (user cutoff + jti revocation).
//!
//! The raw rate of a mix is what Redis alone sustains doing one of each
//! command per call: 1 / Σ(1 / rate of each command).
//!
//! `--redis-mode cluster` (or `sentinel`) puts the private auth on that
//! deployment instead, to compare token RPCs/s with one server; the
//! redis-benchmark comparison is then skipped.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Map, json};
use tokio::process::Command;
use tonic::transport::Channel;
use wsauth_shared::proto::auth_service_client::AuthServiceClient;
use wsauth_shared::proto::{IssueWsTokenRequest, ValidateTokenRequest, VerifyJwtRequest};

use wsauth_tests::RedisMode;

use crate::cli::{BenchArgs, Only, Plan};
use crate::procfs::{CpuMeter, describe_cpu};
use crate::report::{Measurement, Report, thousands};
use crate::stack::Stack;
use crate::stats::{Samples, round3};

/// Deadline of each RPC.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);
/// The issue's target: each RPC at ≥ 50 % of its raw Redis mix.
const TARGET_SHARE: f64 = 50.0;

/// A request carrying `authorization: Bearer <key>` and a deadline.
pub fn with_key<T>(message: T, key: &str) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(RPC_TIMEOUT);
    let value = format!("Bearer {key}")
        .parse()
        .context("the key is not a valid header value")?;
    request.metadata_mut().insert("authorization", value);
    Ok(request)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Rpc {
    IssueWsToken,
    ValidateToken,
    VerifyJwt,
}

impl Rpc {
    fn name(self) -> &'static str {
        match self {
            Self::IssueWsToken => "IssueWsToken",
            Self::ValidateToken => "ValidateToken",
            Self::VerifyJwt => "VerifyJwt",
        }
    }

    /// The redis-benchmark tests this RPC's commands are compared with.
    fn mix(self) -> &'static [RedisTest] {
        match self {
            Self::IssueWsToken => &[RedisTest::Mget, RedisTest::Set],
            Self::ValidateToken => &[RedisTest::Getdel, RedisTest::Get],
            Self::VerifyJwt => &[RedisTest::Mget],
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum RedisTest {
    Set,
    Mget,
    Getdel,
    Get,
}

impl RedisTest {
    fn name(self) -> &'static str {
        match self {
            Self::Set => "SET PX",
            Self::Mget => "MGET ×2",
            Self::Getdel => "GETDEL",
            Self::Get => "GET",
        }
    }

    /// The command line, with keys and values shaped like the service's.
    fn command(self) -> Vec<&'static str> {
        match self {
            Self::Set => vec![
                "SET",
                "bench:wst:__rand_int__",
                "1700000000000 1700000060000 bench-rpc-12",
                "PX",
                "600000",
            ],
            Self::Mget => vec!["MGET", "bench:rusr:__rand_int__", "bench:rjti:__rand_int__"],
            Self::Getdel => vec!["GETDEL", "bench:wst:__rand_int__"],
            Self::Get => vec!["GET", "bench:rusr:__rand_int__"],
        }
    }
}

pub async fn measure(args: &BenchArgs, plan: &Plan, report: &mut Report) -> anyhow::Result<()> {
    // Auth alone: no gateway is started (a running stack's are left idle).
    let stack = Stack::start(args, 0).await?;
    let internal_key = stack
        .internal_key
        .clone()
        .context("--internal-key is needed for ValidateToken/VerifyJwt")?;
    let jwt = stack.jwt()?;
    let concurrency = args.auth_concurrency.clamp(1, 4096);
    let mut channels = Vec::new();
    for _ in 0..args.auth_channels.clamp(1, 64) {
        let channel = Channel::from_shared(stack.auth_url()?)?
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .context("connecting to auth")?;
        channels.push(AuthServiceClient::new(channel));
    }
    let jwts: Vec<String> = (0..concurrency)
        .map(|i| jwt.mint(&format!("bench-rpc-{i}")))
        .collect();
    let mut processes = stack.processes();
    processes.push(("bench".to_owned(), std::process::id()));

    // Warm-up, not recorded.
    let warm = plan.duration.min(Duration::from_secs(1)) / 2;
    let _ = calls(
        Rpc::VerifyJwt,
        &channels,
        &jwts,
        &internal_key,
        warm,
        &mut Vec::new(),
    )
    .await;

    let mut rates = Vec::new();
    let mut tokens = Vec::new();
    for rpc in [Rpc::IssueWsToken, Rpc::ValidateToken, Rpc::VerifyJwt] {
        let cpu = CpuMeter::start(&processes);
        let outcome = match rpc {
            Rpc::ValidateToken => {
                validations(
                    &channels,
                    std::mem::take(&mut tokens),
                    &internal_key,
                    plan.duration,
                )
                .await
            }
            _ => {
                calls(
                    rpc,
                    &channels,
                    &jwts,
                    &internal_key,
                    plan.duration,
                    &mut tokens,
                )
                .await
            }
        };
        rates.push((rpc, outcome, cpu.finish().percents()));
    }

    let redis = match stack.redis_port {
        Some(port) => Some(redis_benchmark(port, concurrency, plan.redis_requests).await?),
        None => None,
    };
    if let Some(redis) = &redis {
        let mut fields = Map::new();
        for (test, rate) in redis {
            fields.insert(test.name().into(), json!(rate.round()));
        }
        let summary = redis
            .iter()
            .map(|(t, r)| format!("{} {}/s", t.name(), thousands(*r)))
            .collect::<Vec<_>>();
        report.record(Measurement {
            kind: Only::Auth,
            setup: format!(
                "redis-benchmark -c {concurrency} -n {}",
                plan.redis_requests
            ),
            summary: summary.join(", "),
            target: None,
            fields,
        });
    }

    // Which Redis the figures are against, when not the usual one server.
    let redis_setup = match stack.redis_mode {
        Some(RedisMode::Standalone) | None => String::new(),
        Some(mode) => format!(", Redis {}", mode.name()),
    };
    for (rpc, mut outcome, cpu) in rates {
        let per_s = outcome.ok as f64 / outcome.elapsed.as_secs_f64().max(1e-3);
        let raw = redis.as_ref().map(|redis| {
            let seconds_per_call: f64 = rpc
                .mix()
                .iter()
                .map(|t| 1.0 / redis.get(t).copied().unwrap_or(f64::NAN))
                .sum();
            1.0 / seconds_per_call
        });
        let share = raw.map(|raw| per_s / raw * 100.0);
        let mix = rpc
            .mix()
            .iter()
            .map(|t| t.name())
            .collect::<Vec<_>>()
            .join(" + ");
        let (p50, p99) = (
            round3(outcome.latency.percentile_ms(50.0)),
            round3(outcome.latency.percentile_ms(99.0)),
        );
        let mut fields = Map::new();
        fields.insert("rpc".into(), json!(rpc.name()));
        fields.insert(
            "redis_mode".into(),
            json!(stack.redis_mode.map(RedisMode::name)),
        );
        fields.insert("concurrency".into(), json!(concurrency));
        fields.insert("channels".into(), json!(channels.len()));
        fields.insert("calls".into(), json!(outcome.ok));
        fields.insert(
            "seconds".into(),
            json!(round3(outcome.elapsed.as_secs_f64())),
        );
        fields.insert("calls_per_s".into(), json!(per_s.round()));
        fields.insert("p50_ms".into(), json!(p50));
        fields.insert("p99_ms".into(), json!(p99));
        fields.insert("errors".into(), json!(outcome.failed));
        fields.insert("error_kinds".into(), json!(outcome.errors));
        fields.insert("redis_mix".into(), json!(mix));
        fields.insert("redis_mix_per_s".into(), json!(raw.map(f64::round)));
        fields.insert(
            "percent_of_redis".into(),
            json!(share.map(|s| (s * 10.0).round() / 10.0)),
        );
        fields.insert(
            "cpu_percent".into(),
            json!(cpu.iter().cloned().collect::<HashMap<_, _>>()),
        );
        let versus = match (raw, share) {
            (Some(raw), Some(share)) => {
                format!(" = {share:.0}% of Redis {mix} ({}/s)", thousands(raw))
            }
            _ if redis_setup.is_empty() => " (no Redis port: not compared)".into(),
            // redis-benchmark's MGET of two keys would cross slots in a cluster.
            _ => " (redis-benchmark runs on a standalone server only: not compared)".into(),
        };
        let errors = if outcome.failed > 0 {
            format!(", **{} errors**", outcome.failed)
        } else {
            String::new()
        };
        report.record(Measurement {
            kind: Only::Auth,
            setup: format!(
                "{} c={concurrency}, {} channels{redis_setup}",
                rpc.name(),
                channels.len()
            ),
            summary: format!(
                "{}/s{versus}; p50 {p50} ms, p99 {p99} ms{errors}; CPU {}",
                thousands(per_s),
                describe_cpu(&cpu)
            ),
            target: share.map(|share| ("≥ 50% of Redis mix".to_owned(), share >= TARGET_SHARE)),
            fields,
        });
    }
    report.note(
        "auth: each RPC runs alone with the given concurrency spread over the channels; ValidateToken consumes \
         the tokens the IssueWsToken run produced (so it lasts until they are used up, at most the duration); \
         Redis mix rate = 1 / Σ(1 / redis-benchmark rate of each command) at the same -c, keys random over 1M \
         (-r 1000000); ValidateToken runs GETDEL and GET inside one EVALSHA (one round trip), compared with the \
         two plain commands; redis-benchmark itself pipelines nothing (-P 1)",
    );
    Ok(())
}

struct Outcome {
    ok: usize,
    failed: usize,
    elapsed: Duration,
    latency: Samples,
    errors: HashMap<String, usize>,
}

impl Outcome {
    fn merge(&mut self, other: TaskOutcome) {
        self.ok += other.latency.len();
        self.latency.extend(other.latency.into_micros());
        for (error, n) in other.errors {
            self.failed += n;
            *self.errors.entry(error).or_default() += n;
        }
    }
}

#[derive(Default)]
struct TaskOutcome {
    latency: Samples,
    errors: HashMap<String, usize>,
    tokens: Vec<String>,
}

impl TaskOutcome {
    fn fail(&mut self, status: &tonic::Status) {
        *self
            .errors
            .entry(format!("{:?}: {}", status.code(), status.message()))
            .or_default() += 1;
    }
}

/// `rpc` (IssueWsToken or VerifyJwt) back to back from one task per JWT for
/// `duration`; the issued ws tokens go to `tokens`.
async fn calls(
    rpc: Rpc,
    channels: &[AuthServiceClient<Channel>],
    jwts: &[String],
    key: &str,
    duration: Duration,
    tokens: &mut Vec<String>,
) -> Outcome {
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, jwt) in jwts.iter().enumerate() {
        let (mut client, jwt, key) = (
            channels[i % channels.len()].clone(),
            jwt.clone(),
            key.to_owned(),
        );
        tasks.spawn(async move {
            let mut outcome = TaskOutcome::default();
            while Instant::now() < deadline {
                let began = Instant::now();
                let result = match rpc {
                    Rpc::IssueWsToken => {
                        let mut request =
                            tonic::Request::new(IssueWsTokenRequest { jwt: jwt.clone() });
                        request.set_timeout(RPC_TIMEOUT);
                        client
                            .issue_ws_token(request)
                            .await
                            .map(|r| Some(r.into_inner().token))
                    }
                    _ => match with_key(VerifyJwtRequest { jwt: jwt.clone() }, &key) {
                        Ok(request) => client.verify_jwt(request).await.map(|_| None),
                        Err(_) => Err(tonic::Status::internal("bad key")),
                    },
                };
                match result {
                    Ok(token) => {
                        outcome.latency.push(began.elapsed());
                        outcome.tokens.extend(token);
                    }
                    Err(status) => outcome.fail(&status),
                }
            }
            outcome
        });
    }
    join(tasks, started, tokens).await
}

/// ValidateToken over `tokens`, split among as many tasks as there were
/// JWTs, until they are used up or `duration` has passed.
async fn validations(
    channels: &[AuthServiceClient<Channel>],
    tokens: Vec<String>,
    key: &str,
    duration: Duration,
) -> Outcome {
    let started = Instant::now();
    let deadline = started + duration;
    let tasks_n = 64.min(tokens.len()).max(1);
    let mut shares: Vec<Vec<String>> = vec![Vec::new(); tasks_n];
    for (i, token) in tokens.into_iter().enumerate() {
        shares[i % tasks_n].push(token);
    }
    let mut tasks = tokio::task::JoinSet::new();
    for (i, share) in shares.into_iter().enumerate() {
        let (mut client, key) = (channels[i % channels.len()].clone(), key.to_owned());
        tasks.spawn(async move {
            let mut outcome = TaskOutcome::default();
            for token in share {
                if Instant::now() >= deadline {
                    break;
                }
                let began = Instant::now();
                let result = match with_key(ValidateTokenRequest { token }, &key) {
                    Ok(request) => client.validate_token(request).await.map(|_| ()),
                    Err(_) => Err(tonic::Status::internal("bad key")),
                };
                match result {
                    Ok(()) => outcome.latency.push(began.elapsed()),
                    Err(status) => outcome.fail(&status),
                }
            }
            outcome
        });
    }
    join(tasks, started, &mut Vec::new()).await
}

async fn join(
    mut tasks: tokio::task::JoinSet<TaskOutcome>,
    started: Instant,
    tokens: &mut Vec<String>,
) -> Outcome {
    let mut outcome = Outcome {
        ok: 0,
        failed: 0,
        elapsed: Duration::ZERO,
        latency: Samples::default(),
        errors: HashMap::new(),
    };
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(mut task) => {
                tokens.append(&mut task.tokens);
                outcome.merge(task);
            }
            Err(_) => outcome.failed += 1,
        }
    }
    outcome.elapsed = started.elapsed();
    outcome
}

/// requests/s of each command by `redis-benchmark` against the stack's Redis.
async fn redis_benchmark(
    port: u16,
    clients: usize,
    requests: usize,
) -> anyhow::Result<HashMap<RedisTest, f64>> {
    let mut rates = HashMap::new();
    // SET first, so GETDEL finds keys to delete as the service's does.
    for test in [
        RedisTest::Set,
        RedisTest::Mget,
        RedisTest::Getdel,
        RedisTest::Get,
    ] {
        let run = Command::new("redis-benchmark")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-c",
                &clients.to_string(),
            ])
            .args(["-n", &requests.to_string(), "-r", "1000000", "--csv"])
            .args(test.command())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(Duration::from_secs(180), run)
            .await
            .context("redis-benchmark did not finish within 180 s")?
            .context("running redis-benchmark (is it on PATH?)")?;
        if !output.status.success() {
            bail!(
                "redis-benchmark {} exited with {}",
                test.name(),
                output.status
            );
        }
        let stdout = String::from_utf8_lossy(&output.stdout);
        let rate = parse_csv_rate(&stdout)
            .with_context(|| format!("no rate in redis-benchmark output {stdout:?}"))?;
        rates.insert(test, rate);
    }
    Ok(rates)
}

/// The requests/s of redis-benchmark's `--csv` output: `"<test>","<rps>",...`.
fn parse_csv_rate(output: &str) -> Option<f64> {
    output.lines().find_map(|line| {
        line.split(',')
            .nth(1)?
            .trim_matches('"')
            .parse::<f64>()
            .ok()
    })
}

#[cfg(test)]
mod tests {
    use super::parse_csv_rate;

    #[test]
    fn redis_benchmark_csv_rates_are_read() {
        let output = "\"test\",\"rps\",\"avg_latency_ms\"\n\"MGET a b\",\"81234.57\",\"0.700\"\n";
        assert_eq!(parse_csv_rate(output), Some(81234.57));
        assert_eq!(parse_csv_rate("\"test\",\"rps\"\n"), None);
    }
}
