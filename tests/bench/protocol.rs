//! What the measurer and its child processes (workers, the floor) say to
//! each other: one JSON object per line, commands on the child's stdin,
//! answers on its stdout. The JWT secret travels here rather than on the
//! command line, where any user could read it in `ps`.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use wsauth_tests::Jwt;

/// What the clients need to mint JWTs that the server under test accepts.
#[derive(Clone, Serialize, Deserialize)]
pub struct JwtSettings {
    pub secret: String,
    pub issuer: Option<String>,
    pub audience: Option<String>,
}

impl JwtSettings {
    /// A JWT for `sub` valid for an hour: longer than any run, so no client
    /// is closed for an expired JWT mid-measurement.
    pub fn mint(&self, sub: &str) -> String {
        let mut jwt = Jwt::for_user(sub)
            .signed_with(self.secret.as_bytes())
            .expires_in(3600);
        if let Some(issuer) = &self.issuer {
            jwt = jwt.issuer(issuer);
        }
        if let Some(audience) = &self.audience {
            jwt = jwt.audience(audience);
        }
        jwt.sign()
    }
}

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
    /// Run `tasks` handshake loops against `gateway` for `duration_ms`;
    /// answered by `Handshakes`.
    Handshakes {
        gateway: SocketAddr,
        tasks: usize,
        duration_ms: u64,
    },
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
    pub jwt: JwtSettings,
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
    Handshakes(HandshakeResult),
    Error { message: String },
}

#[derive(Serialize, Deserialize, Default)]
pub struct HandshakeResult {
    /// Latency (µs) of every handshake that reached `auth_ok` in the window.
    pub latencies_us: Vec<u64>,
    /// Failures by kind, with counts.
    pub errors: Vec<(String, usize)>,
}

/// Measurer → floor.
#[derive(Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum ToFloor {
    /// Send `{"type":"broadcast","id":…,"data":data}` to every authenticated client.
    Publish { data: String },
    /// Answered by `Stats`.
    Stats,
}

/// Floor → measurer.
#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FromFloor {
    Listening { addr: SocketAddr },
    Stats(FloorStats),
}

#[derive(Serialize, Deserialize, Default, Clone, Copy)]
pub struct FloorStats {
    /// Authenticated connections now.
    pub connections: usize,
    /// Frames written whole by the one `send()` of the fan-out loop.
    pub direct: u64,
    /// Frames (or their rest) left for the connection's task, because the
    /// socket could not take them at once.
    pub queued: u64,
    /// Sends that failed (connection gone).
    pub failed: u64,
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

/// Tells the parent process `message`: one JSON line on stdout, flushed so the
/// parent sees it at once (workers and the floor both speak this way).
pub async fn report(message: &impl Serialize) -> anyhow::Result<()> {
    let mut line = serde_json::to_vec(message)?;
    line.push(b'\n');
    let mut stdout = tokio::io::stdout();
    stdout.write_all(&line).await?;
    stdout.flush().await?;
    Ok(())
}
