//! The handshake loop a worker process runs: `tasks` clients doing the full
//! flow back to back until the window closes, each on its own kept-alive
//! HTTP connection, each WebSocket from a new source address.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use wsauth_tests::net::source_ip;

use crate::client::{self, Connector};
use crate::protocol::{HandshakeResult, JwtSettings};

/// Runs the loop; `worker` keeps users and source addresses apart between
/// workers.
pub async fn run(
    gateway: SocketAddr,
    jwt: &JwtSettings,
    worker: usize,
    tasks: usize,
    duration: Duration,
) -> HandshakeResult {
    let deadline = Instant::now() + duration;
    let mut set = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let user = format!("bench-hs-{worker}-{task}");
        let jwt = jwt.mint(&user);
        // Distinct source addresses per worker: 250 addresses, ≤ 64 tasks each.
        let slot = worker * 64 + task;
        set.spawn(async move {
            let mut connector = Connector::new(gateway, source_ip(slot));
            let mut latencies = Vec::new();
            let mut errors: HashMap<String, usize> = HashMap::new();
            let mut round = 0usize;
            while Instant::now() < deadline {
                round += 1;
                let began = Instant::now();
                // Spread the WebSocket sockets over source addresses: a 10 s
                // run leaves tens of thousands in TIME_WAIT.
                let source = source_ip(slot + round);
                match connector.authenticate(&jwt, &user, source).await {
                    Ok(ws) => {
                        if Instant::now() <= deadline {
                            latencies.push(began.elapsed().as_micros() as u64);
                        }
                        if let Err(error) = client::close(ws).await {
                            *errors.entry(format!("{error:#}")).or_default() += 1;
                        }
                    }
                    Err(error) => *errors.entry(format!("{error:#}")).or_default() += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut result = HandshakeResult::default();
    let mut errors: HashMap<String, usize> = HashMap::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok((latencies, task_errors)) => {
                result.latencies_us.extend(latencies);
                for (error, n) in task_errors {
                    *errors.entry(error).or_default() += n;
                }
            }
            Err(error) => *errors.entry(format!("task: {error}")).or_default() += 1,
        }
    }
    result.errors = errors.into_iter().collect();
    result.errors.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    result
}
