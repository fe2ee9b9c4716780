//! The measurer's side of the worker processes: spawns `wsauth-bench worker`
//! children, each holding at most `sockets_per_worker` clients (the
//! 20,000-open-files cap is per process), and talks to them over pipes.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::time::timeout;

use crate::protocol::{
    FanoutResult, FromWorker, HandshakeResult, JwtSettings, Ready, ToWorker, WorkerPlan,
};
use crate::stack::Stack;

/// A worker never lives longer than this, even if the measurer hangs.
const WORKER_MAX_LIFE: Duration = Duration::from_secs(30 * 60);

pub struct PoolConfig {
    pub gateways: Vec<SocketAddr>,
    pub sockets_per_worker: usize,
    pub connect_concurrency: usize,
    pub run_tag: String,
    pub expect_broadcasts: usize,
}

pub struct Pool {
    config: PoolConfig,
    jwt: JwtSettings,
    workers: Vec<WorkerProc>,
    next_index: usize,
}

struct WorkerProc {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Pool {
    pub fn new(stack: &Stack, config: PoolConfig) -> anyhow::Result<Self> {
        if config.gateways.is_empty() {
            bail!("no gateway to connect to");
        }
        Ok(Self {
            jwt: stack.jwt()?.clone(),
            config,
            workers: Vec::new(),
            next_index: 0,
        })
    }

    /// The worker processes, for CPU accounting.
    pub fn processes(&self) -> Vec<(String, u32)> {
        self.workers
            .iter()
            .filter_map(|w| Some(("workers".to_owned(), w.child.id()?)))
            .collect()
    }

    pub fn workers(&self) -> usize {
        self.workers.len()
    }

    /// Connects `count` more clients over new workers (at least
    /// `min_workers`), splitting them evenly; returns the merged readiness of
    /// those workers.
    pub async fn add(&mut self, count: usize, min_workers: usize) -> anyhow::Result<Ready> {
        let per_worker = self.config.sockets_per_worker.max(1);
        let new_workers = count.div_ceil(per_worker).max(min_workers).max(1);
        let exe = std::env::current_exe().context("locating this executable")?;
        let first_new = self.workers.len();
        for w in 0..new_workers {
            let share = count / new_workers + usize::from(w < count % new_workers);
            let mut child = Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .context("starting a worker process")?;
            let stdin = child.stdin.take().context("worker stdin is piped")?;
            let stdout =
                BufReader::new(child.stdout.take().context("worker stdout is piped")?).lines();
            let mut worker = WorkerProc {
                child,
                stdin,
                stdout,
            };
            let plan = WorkerPlan {
                worker: first_new + w,
                gateways: self.config.gateways.clone(),
                first_index: self.next_index,
                count: share,
                concurrency: self.config.connect_concurrency,
                jwt: self.jwt.clone(),
                run_tag: self.config.run_tag.clone(),
                expect_broadcasts: self.config.expect_broadcasts,
                max_life_s: WORKER_MAX_LIFE.as_secs(),
            };
            self.next_index += share;
            worker.send(&ToWorker::Start(plan)).await?;
            self.workers.push(worker);
        }
        // Workers connect in parallel; even a slow stack manages 20/s.
        let wait = Duration::from_secs(30) + Duration::from_millis(50 * count as u64);
        let mut merged = Ready::default();
        for worker in &mut self.workers[first_new..] {
            match worker.receive(wait).await? {
                FromWorker::Ready(ready) => {
                    merged.ok += ready.ok;
                    merged.failed += ready.failed;
                    merged.elapsed_ms = merged.elapsed_ms.max(ready.elapsed_ms);
                    merged.handshake_us.extend(ready.handshake_us);
                    for (error, n) in ready.errors {
                        match merged.errors.iter_mut().find(|(e, _)| *e == error) {
                            Some(entry) => entry.1 += n,
                            None => merged.errors.push((error, n)),
                        }
                    }
                }
                other => bail!("worker answered {} instead of ready", kind(&other)),
            }
        }
        Ok(merged)
    }

    /// Clients still connected, over every worker.
    pub async fn open(&mut self) -> anyhow::Result<usize> {
        let mut open = 0;
        for worker in &mut self.workers {
            worker.send(&ToWorker::Status).await?;
            match worker.receive(Duration::from_secs(10)).await? {
                FromWorker::Status { open: n } => open += n,
                other => bail!("worker answered {} instead of status", kind(&other)),
            }
        }
        Ok(open)
    }

    /// Every worker's broadcast accounting, waiting up to `wait` for deliveries.
    pub async fn collect(&mut self, wait: Duration) -> anyhow::Result<Vec<FanoutResult>> {
        for worker in &mut self.workers {
            worker
                .send(&ToWorker::Collect {
                    wait_ms: wait.as_millis() as u64,
                })
                .await?;
        }
        let mut results = Vec::new();
        for worker in &mut self.workers {
            match worker.receive(wait + Duration::from_secs(30)).await? {
                FromWorker::Fanout(result) => results.push(result),
                other => bail!("worker answered {} instead of fanout", kind(&other)),
            }
        }
        Ok(results)
    }

    /// Runs `tasks` handshake loops spread over the workers against
    /// `gateway` for `duration`; every worker's result.
    pub async fn handshakes(
        &mut self,
        gateway: SocketAddr,
        tasks: usize,
        duration: Duration,
    ) -> anyhow::Result<Vec<HandshakeResult>> {
        let workers = self.workers.len().max(1);
        for (w, worker) in self.workers.iter_mut().enumerate() {
            let share = tasks / workers + usize::from(w < tasks % workers);
            worker
                .send(&ToWorker::Handshakes {
                    gateway,
                    tasks: share,
                    duration_ms: duration.as_millis() as u64,
                })
                .await?;
        }
        let mut results = Vec::new();
        // A handshake step may run 10 s past the window before it times out.
        let wait = duration + Duration::from_secs(40);
        for worker in &mut self.workers {
            match worker.receive(wait).await? {
                FromWorker::Handshakes(result) => results.push(result),
                other => bail!("worker answered {} instead of handshakes", kind(&other)),
            }
        }
        Ok(results)
    }

    /// Tells every worker to exit, and waits for it (killing after a deadline).
    pub async fn close(mut self) {
        for mut worker in self.workers.drain(..) {
            let _ = worker.send(&ToWorker::Close).await;
            drop(worker.stdin);
            if timeout(Duration::from_secs(10), worker.child.wait())
                .await
                .is_err()
            {
                let _ = worker.child.kill().await;
            }
        }
    }
}

impl WorkerProc {
    async fn send(&mut self, command: &ToWorker) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(command)?;
        line.push(b'\n');
        self.stdin
            .write_all(&line)
            .await
            .context("writing to a worker")?;
        self.stdin.flush().await.context("writing to a worker")?;
        Ok(())
    }

    async fn receive(&mut self, wait: Duration) -> anyhow::Result<FromWorker> {
        let line = timeout(wait, self.stdout.next_line())
            .await
            .with_context(|| format!("a worker did not answer within {wait:?}"))?
            .context("reading from a worker")?
            .context("a worker exited (see its stderr above)")?;
        let message: FromWorker =
            serde_json::from_str(&line).context("a worker sent a bad line")?;
        if let FromWorker::Error { message } = &message {
            bail!("worker: {message}");
        }
        Ok(message)
    }
}

fn kind(message: &FromWorker) -> &'static str {
    match message {
        FromWorker::Ready(_) => "ready",
        FromWorker::Status { .. } => "status",
        FromWorker::Fanout(_) => "fanout",
        FromWorker::Handshakes(_) => "handshakes",
        FromWorker::Error { .. } => "error",
    }
}
