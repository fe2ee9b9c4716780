//! `wsauth-bench worker`: holds up to a few thousand authenticated clients
//! for the measurer and checks, per client, the broadcasts they receive.
//!
//! Driven by [`ToWorker`] lines on stdin; answers [`FromWorker`] lines on
//! stdout. Exits on `close`, when stdin ends (the measurer is gone), or
//! after `max_life_s`, so it never outlives a run.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use futures::StreamExt;
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;

use wsauth_tests::net::source_ip;

use crate::client::{Connector, Ws};
use crate::protocol::{FanoutResult, FromWorker, Ready, ToWorker, WorkerPlan, report};

pub async fn run() -> anyhow::Result<()> {
    let result = work().await;
    if let Err(error) = &result {
        // The measurer reads stdout; stderr is for people.
        let _ = report(&FromWorker::Error {
            message: format!("{error:#}"),
        })
        .await;
    }
    result
}

async fn work() -> anyhow::Result<()> {
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let first = timeout(Duration::from_secs(60), stdin.next_line())
        .await
        .context("no start command within 60 s")??
        .context("stdin ended before the start command")?;
    let ToWorker::Start(plan) = serde_json::from_str(&first).context("bad start command")? else {
        bail!("the first command must be start");
    };
    let max_life = Duration::from_secs(plan.max_life_s);
    match timeout(max_life, serve(plan, &mut stdin)).await {
        Ok(result) => result,
        Err(_) => bail!("worker reached its maximum life of {max_life:?}"),
    }
}

async fn serve(plan: WorkerPlan, stdin: &mut Lines<BufReader<Stdin>>) -> anyhow::Result<()> {
    let expect = plan.expect_broadcasts;
    let open = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (report_tx, mut report_rx) = mpsc::unbounded_channel();
    let ready = connect_all(&plan, &open, &stop_rx, &report_tx).await?;
    let connected = ready.ok;
    report(&FromWorker::Ready(ready)).await?;

    while let Some(line) = stdin.next_line().await? {
        match serde_json::from_str::<ToWorker>(&line).context("bad command")? {
            ToWorker::Status => {
                report(&FromWorker::Status {
                    open: open.load(Ordering::Relaxed),
                })
                .await?
            }
            ToWorker::Collect { wait_ms } => {
                let mut result = FanoutResult::default();
                let mut reports = Vec::with_capacity(connected);
                let deadline = Instant::now() + Duration::from_millis(wait_ms);
                // Clients report once they have every broadcast; the rest
                // are told to report what they have at the deadline.
                while reports.len() < connected {
                    match tokio::time::timeout_at(deadline.into(), report_rx.recv()).await {
                        Ok(Some(report)) => reports.push(report),
                        Ok(None) | Err(_) => break,
                    }
                }
                let _ = stop_tx.send(true);
                let straggler_deadline = Instant::now() + Duration::from_secs(5);
                while reports.len() < connected {
                    match tokio::time::timeout_at(straggler_deadline.into(), report_rx.recv()).await
                    {
                        Ok(Some(report)) => reports.push(report),
                        Ok(None) | Err(_) => break,
                    }
                }
                for report in reports {
                    report.add_to(&mut result, expect);
                }
                report(&FromWorker::Fanout(result)).await?;
            }
            ToWorker::Handshakes {
                gateway,
                tasks,
                duration_ms,
            } => {
                let duration = Duration::from_millis(duration_ms);
                let result =
                    crate::handshake_loop::run(gateway, &plan.jwt, plan.worker, tasks, duration)
                        .await;
                report(&FromWorker::Handshakes(result)).await?;
            }
            ToWorker::Close => break,
            ToWorker::Start(_) => bail!("start sent twice"),
        }
    }
    Ok(())
}

async fn connect_all(
    plan: &WorkerPlan,
    open: &Arc<AtomicUsize>,
    stop: &watch::Receiver<bool>,
    reports: &mpsc::UnboundedSender<ClientReport>,
) -> anyhow::Result<Ready> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut slots = tokio::task::JoinSet::new();
    for slot in 0..plan.concurrency.clamp(1, 1024) {
        let (jwt_settings, next, open, stop, reports) = (
            plan.jwt.clone(),
            next.clone(),
            open.clone(),
            stop.clone(),
            reports.clone(),
        );
        let gateways = plan.gateways.clone();
        let (first, count, expect) = (plan.first_index, plan.count, plan.expect_broadcasts);
        let run_tag = Arc::<str>::from(plan.run_tag.as_str());
        let http_source = source_ip(plan.worker * 1024 + slot);
        slots.spawn(async move {
            let mut connectors: Vec<Connector> = gateways
                .iter()
                .map(|g| Connector::new(*g, http_source))
                .collect();
            let mut outcome = SlotOutcome::default();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let index = first + i;
                let user = format!("bench-{index}");
                let began = Instant::now();
                let attempt = async {
                    let jwt = jwt_settings.mint(&user);
                    let n = connectors.len();
                    connectors[index % n]
                        .authenticate(&jwt, &user, source_ip(index))
                        .await
                };
                match attempt.await {
                    Ok(ws) => {
                        outcome
                            .handshake_us
                            .push(began.elapsed().as_micros() as u64);
                        open.fetch_add(1, Ordering::Relaxed);
                        let client = Client {
                            expect,
                            run_tag: run_tag.clone(),
                            stats: ClientReport::new(expect),
                        };
                        tokio::spawn(client.run(ws, open.clone(), stop.clone(), reports.clone()));
                    }
                    Err(error) => *outcome.errors.entry(format!("{error:#}")).or_default() += 1,
                }
            }
            outcome
        });
    }
    let mut ready = Ready::default();
    let mut errors: HashMap<String, usize> = HashMap::new();
    while let Some(outcome) = slots.join_next().await {
        let outcome = outcome.context("a connect task panicked")?;
        ready.ok += outcome.handshake_us.len();
        ready.handshake_us.extend(outcome.handshake_us);
        for (error, n) in outcome.errors {
            ready.failed += n;
            *errors.entry(error).or_default() += n;
        }
    }
    let mut errors: Vec<_> = errors.into_iter().collect();
    errors.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    errors.truncate(5);
    ready.errors = errors;
    ready.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(ready)
}

#[derive(Default)]
struct SlotOutcome {
    handshake_us: Vec<u64>,
    errors: HashMap<String, usize>,
}

/// One idle client: reads until the run ends, checking broadcasts.
struct Client {
    expect: usize,
    run_tag: Arc<str>,
    stats: ClientReport,
}

impl Client {
    async fn run(
        mut self,
        mut ws: Ws,
        open: Arc<AtomicUsize>,
        mut stop: watch::Receiver<bool>,
        reports: mpsc::UnboundedSender<ClientReport>,
    ) {
        let mut reported = self.expect == 0;
        loop {
            tokio::select! {
                frame = ws.next() => match frame {
                    Some(Ok(Message::Text(text))) => {
                        self.receive(text.as_str());
                        if !reported && self.stats.distinct == self.expect {
                            reported = true;
                            let _ = reports.send(std::mem::take(&mut self.stats));
                        }
                    }
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => {
                        open.fetch_sub(1, Ordering::Relaxed);
                        if !reported {
                            self.stats.closed = true;
                            let _ = reports.send(std::mem::take(&mut self.stats));
                        }
                        return;
                    }
                    Some(Ok(_)) => {}
                },
                changed = stop.changed(), if !reported => {
                    reported = true;
                    let _ = reports.send(std::mem::take(&mut self.stats));
                    if changed.is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn receive(&mut self, text: &str) {
        let received_us = unix_us();
        #[derive(serde::Deserialize)]
        struct Frame<'a> {
            #[serde(rename = "type")]
            kind: &'a str,
            #[serde(default, borrow)]
            data: Option<std::borrow::Cow<'a, str>>,
        }
        let Ok(frame) = serde_json::from_str::<Frame>(text) else {
            return;
        };
        if frame.kind != "broadcast" {
            return;
        }
        let Some((seq, sent_ns)) = frame
            .data
            .as_deref()
            .and_then(|data| parse_payload(data, &self.run_tag))
        else {
            return;
        };
        self.stats
            .record(seq, received_us.saturating_sub(sent_ns / 1000), received_us);
    }
}

/// `<tag>:<seq>:<send time, ns since the epoch>` → (seq, send time).
pub fn parse_payload(data: &str, run_tag: &str) -> Option<(usize, u64)> {
    let rest = data.strip_prefix(run_tag)?.strip_prefix(':')?;
    let (seq, sent) = rest.split_once(':')?;
    Some((seq.parse().ok()?, sent.parse().ok()?))
}

pub fn unix_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What one client saw of the run's broadcasts.
#[derive(Default)]
struct ClientReport {
    /// Copies received of each broadcast, by sequence number.
    copies: Vec<u32>,
    distinct: usize,
    last_seq: Option<usize>,
    out_of_order: u64,
    closed: bool,
    /// (seq, latency) of every delivery, duplicates included.
    latencies_us: Vec<(usize, u64)>,
    last_receive_us: u64,
}

impl ClientReport {
    fn new(expect: usize) -> Self {
        Self {
            copies: vec![0; expect],
            latencies_us: Vec::with_capacity(expect),
            ..Self::default()
        }
    }

    fn record(&mut self, seq: usize, latency_us: u64, now_us: u64) {
        let Some(copies) = self.copies.get_mut(seq) else {
            return;
        };
        *copies += 1;
        if *copies == 1 {
            self.distinct += 1;
        }
        if self.last_seq.is_some_and(|last| seq < last) {
            self.out_of_order += 1;
        }
        self.last_seq = Some(seq);
        self.latencies_us.push((seq, latency_us));
        self.last_receive_us = now_us;
    }

    fn add_to(self, result: &mut FanoutResult, expect: usize) {
        result.clients += 1;
        let mut copies = self.copies;
        copies.resize(expect, 0);
        let lost = copies.iter().filter(|c| **c == 0).count() as u64;
        let duplicated: u64 = copies.iter().map(|c| u64::from(c.saturating_sub(1))).sum();
        if lost == 0 && duplicated == 0 && self.out_of_order == 0 {
            result.complete += 1;
        }
        result.lost += lost;
        result.duplicated += duplicated;
        result.out_of_order += self.out_of_order;
        result.closed += usize::from(self.closed);
        if result.latencies_us.len() < expect {
            result.latencies_us.resize_with(expect, Vec::new);
        }
        for (seq, latency) in self.latencies_us {
            result.latencies_us[seq].push(latency);
        }
        result.last_receive_unix_us = result.last_receive_unix_us.max(self.last_receive_us);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_of_other_runs_are_ignored() {
        assert_eq!(
            parse_payload("abc:3:1700000000000000000", "abc"),
            Some((3, 1_700_000_000_000_000_000))
        );
        assert_eq!(parse_payload("abd:3:1", "abc"), None);
        assert_eq!(parse_payload("abcd:3:1", "abc"), None);
        assert_eq!(parse_payload("abc:x:1", "abc"), None);
    }

    #[test]
    fn a_client_counts_lost_duplicated_and_reordered_broadcasts() {
        let mut report = ClientReport::new(4);
        for seq in [0, 2, 1, 2] {
            report.record(seq, 10, 100);
        }
        let mut result = FanoutResult::default();
        report.add_to(&mut result, 4);
        assert_eq!(
            (result.lost, result.duplicated, result.out_of_order),
            (1, 1, 1)
        );
        assert_eq!(result.complete, 0);
        assert_eq!(result.latencies_us.iter().map(Vec::len).sum::<usize>(), 4);
        assert_eq!(result.latencies_us[2].len(), 2);
    }

    #[test]
    fn a_client_with_everything_once_in_order_is_complete() {
        let mut report = ClientReport::new(3);
        for seq in 0..3 {
            report.record(seq, 10, 100);
        }
        let mut result = FanoutResult::default();
        report.add_to(&mut result, 3);
        assert_eq!(
            (
                result.lost,
                result.duplicated,
                result.out_of_order,
                result.complete
            ),
            (0, 0, 0, 1)
        );
    }
}
