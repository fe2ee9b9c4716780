//! One service binary running as a child process: spawned with a clean
//! environment, its bound address read from its `listening` log line, its
//! stderr kept in memory (echoed when `TEST_LOG` is set) or written to a file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::bins::bin_in;

/// How long a binary may take from spawn to its `listening` line.
const STARTUP: Duration = Duration::from_secs(20);

/// Log lines kept per process, so a runaway logger cannot eat the test's memory.
const MAX_LOG_LINES: usize = 200_000;

/// How often a log file is re-read for the `listening` line.
const LOG_FILE_POLL: Duration = Duration::from_millis(20);

/// Every setting of both services (and the tracing exporter's): removed from
/// the inherited environment so the developer's shell cannot change what a
/// test runs. A test below keeps it complete.
const SERVICE_ENV: &[&str] = &[
    "ADMIN_API_KEYS",
    "ALLOWED_ORIGINS",
    "AUTH_API_KEY",
    "AUTH_CALL_TIMEOUT_MS",
    "AUTH_LISTEN",
    "AUTH_METRICS_LISTEN",
    "AUTH_RESOLVE_INTERVAL_S",
    "AUTH_TIMEOUT_S",
    "AUTH_TLS_CA_FILE",
    "AUTH_TLS_CERT_FILE",
    "AUTH_TLS_KEY_FILE",
    "AUTH_TLS_SERVER_NAME",
    "AUTH_URL",
    "EVENT_RETENTION",
    "GATEWAY_ID",
    "GATEWAY_LISTEN",
    "GATEWAY_TLS_CERT_FILE",
    "GATEWAY_TLS_KEY_FILE",
    "INTERNAL_API_KEYS",
    "JWT_AUDIENCE",
    "JWT_HS256_SECRET",
    "JWT_ISSUER",
    "JWT_JWKS_FILE",
    "JWT_LEEWAY_S",
    "JWT_PUBLIC_KEY_FILE",
    "LOG_FORMAT",
    "MAX_CONCURRENT_STREAMS",
    "MAX_CONNECTIONS",
    "MAX_EVENT_BYTES",
    "MAX_MESSAGES_PER_S",
    "MAX_MESSAGE_BYTES",
    "MAX_PENDING_AUTH",
    "PER_IP_RATE",
    "PING_INTERVAL_S",
    "REDIS_ALLOW_EVICTION",
    "REDIS_CA_FILE",
    "REDIS_CLIENT_CERT_FILE",
    "REDIS_CLIENT_KEY_FILE",
    "REDIS_CLUSTER_URLS",
    "REDIS_SENTINEL_MASTER",
    "REDIS_SENTINEL_URLS",
    "REDIS_TIMEOUT_MS",
    "REDIS_URL",
    "REDIS_WAIT_REPLICAS",
    "RPC_TIMEOUT_MS",
    "SEND_QUEUE_CAPACITY",
    "SHUTDOWN_GRACE_S",
    "TLS_CERT_FILE",
    "TLS_CLIENT_CA_FILE",
    "TLS_KEY_FILE",
    "TRUSTED_PROXIES",
    "WS_TOKEN_REUSE",
    "WS_TOKEN_TTL_S",
    "RUST_LOG",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_SERVICE_NAME",
];

/// Where a service binary is found and where its stderr goes.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// The directory holding the binaries; default: see [`crate::bin_path`].
    pub bin_dir: Option<PathBuf>,
    /// Stderr straight into this file instead of through the harness: a
    /// load run logs far more than a pipe read by the harness should carry.
    pub log_file: Option<PathBuf>,
}

/// Where the stderr of a [`Service`] went.
enum Logs {
    Memory(Arc<Mutex<Vec<String>>>),
    File(PathBuf),
}

/// A running service binary. SIGKILLed on drop.
pub(crate) struct Service {
    name: String,
    child: Child,
    addr: SocketAddr,
    logs: Logs,
}

impl Service {
    /// Spawns the binary `bin` with exactly `env` (over the inherited
    /// environment minus every service setting) and waits for its
    /// `listening` line.
    pub(crate) async fn spawn(
        name: &str,
        bin: &str,
        env: &[(String, String)],
        launch: &Launch,
    ) -> Self {
        let bin = bin_in(launch.bin_dir.as_deref(), bin);
        let mut command = Command::new(&bin);
        for key in SERVICE_ENV {
            command.env_remove(key);
        }
        command
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true);
        match &launch.log_file {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .unwrap_or_else(|e| panic!("cannot create {}: {e}", path.display()));
                command.stderr(file);
            }
            None => {
                command.stderr(Stdio::piped());
            }
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        // Err(true): the process exited first; Err(false): it took too long.
        let (logs, addr) = match &launch.log_file {
            Some(path) => {
                let addr = addr_from_file(path, &mut child).await;
                (Logs::File(path.clone()), addr)
            }
            None => {
                let stderr = child.stderr.take().expect("stderr was piped above");
                let lines = Arc::new(Mutex::new(Vec::new()));
                let (addr_tx, addr_rx) = oneshot::channel();
                tokio::spawn(read_stderr(
                    name.to_string(),
                    stderr,
                    lines.clone(),
                    addr_tx,
                ));
                let addr = match tokio::time::timeout(STARTUP, addr_rx).await {
                    Ok(Ok(addr)) => Ok(addr),
                    // The reader ends, dropping the sender, when stderr closes.
                    Ok(Err(_)) => Err(true),
                    Err(_) => Err(false),
                };
                (Logs::Memory(lines), addr)
            }
        };
        let addr = match addr {
            Ok(addr) => addr,
            Err(exited) => {
                let tail = tail(&logs.text(), 40);
                if exited {
                    let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                    panic!(
                        "{name} exited before logging `listening` (status {status:?}); its stderr:\n{tail}"
                    )
                }
                panic!("{name} did not log `listening` within {STARTUP:?}; its stderr:\n{tail}")
            }
        };
        Self {
            name: name.to_string(),
            child,
            addr,
            logs,
        }
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL, and reap.
    pub(crate) async fn kill(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await;
    }

    /// SIGTERM through `kill(1)`, so the harness needs no unsafe FFI.
    pub(crate) async fn terminate(&mut self) {
        let Some(pid) = self.pid() else { return };
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill(1) is available");
        assert!(
            status.success(),
            "kill -TERM {pid} failed for {}",
            self.name
        );
    }

    /// The exit status, or `None` if the process still runs after `within`.
    pub(crate) async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        tokio::time::timeout(within, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Everything the process has written to stderr so far.
    pub(crate) fn logs(&self) -> String {
        self.logs.text()
    }
}

impl Logs {
    fn text(&self) -> String {
        match self {
            Self::Memory(lines) => lines.lock().expect("log lock is never poisoned").join("\n"),
            Self::File(path) => std::fs::read_to_string(path).unwrap_or_default(),
        }
    }
}

fn tail(logs: &str, n: usize) -> String {
    let lines: Vec<&str> = logs.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The address of the `listening` line once it is in the log file; `Err(true)`
/// when the process exits first, `Err(false)` after [`STARTUP`].
async fn addr_from_file(path: &Path, child: &mut Child) -> Result<SocketAddr, bool> {
    let deadline = Instant::now() + STARTUP;
    loop {
        let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
        if let Some(addr) = text.lines().find_map(listening_addr) {
            return Ok(addr);
        }
        if child.try_wait().ok().flatten().is_some() {
            return Err(true);
        }
        if Instant::now() >= deadline {
            return Err(false);
        }
        tokio::time::sleep(LOG_FILE_POLL).await;
    }
}

async fn read_stderr(
    name: String,
    stderr: tokio::process::ChildStderr,
    logs: Arc<Mutex<Vec<String>>>,
    addr_tx: oneshot::Sender<SocketAddr>,
) {
    let echo = std::env::var_os("TEST_LOG").is_some();
    let mut addr_tx = Some(addr_tx);
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if echo {
            eprintln!("[{name}] {line}");
        }
        if addr_tx.is_some()
            && let Some(addr) = listening_addr(&line)
            && let Some(tx) = addr_tx.take()
        {
            let _ = tx.send(addr);
        }
        let mut logs = logs.lock().expect("log lock is never poisoned");
        if logs.len() < MAX_LOG_LINES {
            logs.push(line);
        }
    }
}

/// The `addr` of a JSON `listening` event, whether tracing wrote the fields
/// flattened or under `"fields"`.
fn listening_addr(line: &str) -> Option<SocketAddr> {
    if !line.contains("listening") {
        return None;
    }
    let event: serde_json::Value = serde_json::from_str(line).ok()?;
    [&event, &event["fields"]].into_iter().find_map(|fields| {
        (fields["message"] == "listening").then(|| fields["addr"].as_str()?.parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::{SERVICE_ENV, listening_addr};

    /// A setting added to either service must be listed, or a developer's
    /// shell (say, `REDIS_CLUSTER_URLS` beside the test's `REDIS_URL`) would
    /// change what the tests run.
    #[test]
    fn every_setting_of_both_services_is_cleared() {
        let configs = [
            include_str!("../../services/auth/src/config.rs"),
            include_str!("../../services/gateway/src/config.rs"),
        ];
        let mut missing = Vec::new();
        for config in configs {
            for (at, _) in config.match_indices("env = \"") {
                let name: String = config[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                if !SERVICE_ENV.contains(&name.as_str()) {
                    missing.push(name);
                }
            }
        }
        assert!(missing.is_empty(), "not cleared for tests: {missing:?}");
    }

    #[test]
    fn listening_addr_is_read_from_nested_and_flat_json() {
        let nested = r#"{"timestamp":"t","level":"INFO","fields":{"message":"listening","addr":"127.0.0.1:4000"},"target":"x"}"#;
        let flat = r#"{"level":"INFO","message":"listening","addr":"127.0.0.1:4001"}"#;
        assert_eq!(
            listening_addr(nested),
            Some("127.0.0.1:4000".parse().unwrap())
        );
        assert_eq!(
            listening_addr(flat),
            Some("127.0.0.1:4001".parse().unwrap())
        );
        assert_eq!(
            listening_addr(r#"{"fields":{"message":"not listening"}}"#),
            None
        );
    }
}
