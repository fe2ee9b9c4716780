//! What the measurer and its worker processes say to each other: one JSON
//! object per line, commands on the worker's stdin, answers on its stdout.
//! The JWT secret travels here rather than on the command line, where any
//! user could read it in `ps`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Measurer → worker.
#[derive(Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ToWorker {
    /// Connect and authenticate clients; answered by `Ready`.
    Start(WorkerPlan),
    /// How many clients are still connected; answered by `Status`.
    Status,
    /// Wait up to `wait_ms` for every client to receive its broadcasts;
    /// answered by `Fanout`.
    Collect { wait_ms: u64 },
    /// Drop every connection and exit.
    Close,
}

#[derive(Serialize, Deserialize)]
pub struct WorkerPlan {
    pub worker: usize,
    /// Client `i` connects to `gateways[i % len]`.
    pub gateways: Vec<SocketAddr>,
    /// Global index of the first client: names its user and source address.
    pub first_index: usize,
    pub count: usize,
    /// Handshakes in flight at once while connecting.
    pub concurrency: usize,
    pub jwt_secret: String,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Broadcast payloads of this run start with `<run_tag>:`.
    pub run_tag: String,
    /// Broadcasts each client must receive (0: idle clients).
    pub expect_broadcasts: usize,
    /// The worker exits by itself after this long, whatever happens.
    pub max_life_s: u64,
}

/// Worker → measurer.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromWorker {
    Ready(Ready),
    Status { open: usize },
    Fanout(FanoutResult),
    Error { message: String },
}

#[derive(Serialize, Deserialize, Default)]
pub struct Ready {
    pub ok: usize,
    pub failed: usize,
    /// The most frequent failures, with counts.
    pub errors: Vec<(String, usize)>,
    pub elapsed_ms: u64,
    /// Handshake latencies (µs) of the clients that connected.
    pub handshake_us: Vec<u64>,
}

#[derive(Serialize, Deserialize, Default)]
pub struct FanoutResult {
    /// Clients that reported (connected ones).
    pub clients: usize,
    /// Clients that got every broadcast exactly once, in order.
    pub complete: usize,
    /// Broadcasts a client never got, summed over clients.
    pub lost: u64,
    /// Extra copies of a broadcast a client already had, summed.
    pub duplicated: u64,
    /// Broadcasts received after a later one, summed.
    pub out_of_order: u64,
    /// Clients whose connection ended before the run did.
    pub closed: usize,
    /// Send-to-receive latency of every delivery, µs, by Publish sequence number.
    pub latencies_us: Vec<Vec<u64>>,
    /// Wall clock (µs since the UNIX epoch) of the last delivery.
    pub last_receive_unix_us: u64,
}
