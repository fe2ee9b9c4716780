//! One service binary running as a child process: spawned with a clean
//! environment, its bound address read from its `listening` log line, its
//! stderr kept (and echoed when `TEST_LOG` is set).

use std::net::SocketAddr;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;

/// How long a binary may take from spawn to its `listening` line.
const STARTUP: Duration = Duration::from_secs(20);

/// Log lines kept per process, so a runaway logger cannot eat the test's memory.
const MAX_LOG_LINES: usize = 200_000;

/// Every setting of both services: removed from the inherited environment so
/// the developer's shell cannot change what a test runs.
const SERVICE_ENV: &[&str] = &[
    "AUTH_LISTEN",
    "REDIS_URL",
    "JWT_HS256_SECRET",
    "JWT_PUBLIC_KEY_FILE",
    "JWT_JWKS_FILE",
    "JWT_ISSUER",
    "JWT_AUDIENCE",
    "JWT_LEEWAY_S",
    "WS_TOKEN_TTL_S",
    "WS_TOKEN_REUSE",
    "INTERNAL_API_KEYS",
    "ADMIN_API_KEYS",
    "MAX_EVENT_BYTES",
    "EVENT_RETENTION",
    "REDIS_TIMEOUT_MS",
    "SHUTDOWN_GRACE_S",
    "GATEWAY_LISTEN",
    "AUTH_URL",
    "AUTH_API_KEY",
    "GATEWAY_ID",
    "AUTH_TIMEOUT_S",
    "MAX_MESSAGE_BYTES",
    "PING_INTERVAL_S",
    "ALLOWED_ORIGINS",
    "AUTH_CALL_TIMEOUT_MS",
    "SEND_QUEUE_CAPACITY",
    "MAX_MESSAGES_PER_S",
    "LOG_FORMAT",
    "RUST_LOG",
];

/// A running service binary. SIGKILLed on drop.
pub(crate) struct Service {
    name: String,
    child: Child,
    addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Service {
    /// Spawns `bin` with exactly `env` (over the inherited environment minus
    /// every service setting) and waits for its `listening` line.
    pub(crate) async fn spawn(name: &str, bin: &Path, env: &[(String, String)]) -> Self {
        let mut command = Command::new(bin);
        for key in SERVICE_ENV {
            command.env_remove(key);
        }
        command
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        let stderr = child.stderr.take().expect("stderr was piped above");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = oneshot::channel();
        tokio::spawn(read_stderr(name.to_string(), stderr, logs.clone(), addr_tx));

        let addr = match tokio::time::timeout(STARTUP, addr_rx).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(_)) => {
                let status = tokio::time::timeout(Duration::from_secs(5), child.wait()).await;
                panic!(
                    "{name} exited before logging `listening` (status {status:?}); its stderr:\n{}",
                    tail(&logs, 40)
                )
            }
            Err(_) => panic!(
                "{name} did not log `listening` within {STARTUP:?}; its stderr:\n{}",
                tail(&logs, 40)
            ),
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
        self.logs
            .lock()
            .expect("log lock is never poisoned")
            .join("\n")
    }
}

fn tail(logs: &Mutex<Vec<String>>, n: usize) -> String {
    let logs = logs.lock().expect("log lock is never poisoned");
    logs[logs.len().saturating_sub(n)..].join("\n")
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
    use super::listening_addr;

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
