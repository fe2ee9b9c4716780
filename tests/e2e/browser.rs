//! The browser client (`/client.js`, `/react.js`, the demo page `/`) in real
//! headless Chromium: `tests/browser/e2e.mjs` drives the browser with
//! playwright-core, this test runs Redis, auth and the gateway and does what
//! the script asks (publish, restart the gateway, revoke), over JSON lines on
//! the script's stdin and stdout. It passes when the script exits 0.
//!
//! Needs what `make setup` installs: Node.js, `tests/browser/node_modules`
//! and Debian's chromium. `SKIP_BROWSER_TESTS=1` skips it, saying so.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use wsauth_tests::{
    AuthOptions, GatewayOptions, JWT_SECRET, TestAuth, TestGateway, TestRedis, within,
};

/// The whole browser run; the script's own deadline (150 s) is shorter.
const RUN_DEADLINE: Duration = Duration::from_secs(200);
/// The script's longest wait between two requests.
const STEP_DEADLINE: Duration = Duration::from_secs(60);
/// Starting or stopping one service.
const SERVICE_DEADLINE: Duration = Duration::from_secs(20);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lives in the repository")
        .to_path_buf()
}

/// Node's path and Chromium's, or the one line that says how to get them.
fn prerequisites(root: &Path) -> Result<PathBuf, String> {
    let node_ok = std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok {
        return Err("node is missing: install Node.js 20+ (see README), then `make setup`".into());
    }
    let modules = root.join("tests/browser/node_modules/playwright-core");
    if !modules.is_dir() {
        return Err(format!(
            "{} is missing: run `make setup` (npm ci in tests/browser)",
            modules.display()
        ));
    }
    let chromium =
        PathBuf::from(std::env::var_os("CHROMIUM").unwrap_or_else(|| "/usr/bin/chromium".into()));
    if !chromium.is_file() {
        return Err(format!(
            "{} is missing: run `make setup` as root, or `apt-get install chromium`",
            chromium.display()
        ));
    }
    Ok(chromium)
}

/// A loopback port for the gateway, known before it starts: its own origin
/// goes into its ALLOWED_ORIGINS and its restarts must come back on it, so
/// it cannot listen on port 0. (The harness itself binds port 0 everywhere.)
fn port_for_the_gateway() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding 127.0.0.1:0 succeeds on any machine with loopback")
}

/// The stack the script asks for: a gateway on a fixed port, so a restart
/// comes back where the page expects it.
struct Stack {
    redis: TestRedis,
    auth: TestAuth,
    gateway: Option<TestGateway>,
    port: u16,
    options: GatewayOptions,
}

impl Stack {
    async fn start_gateway(&mut self) -> Result<(), String> {
        let gateway = within(
            SERVICE_DEADLINE,
            "the gateway starts",
            TestGateway::spawn(&[&self.auth], self.options.clone()),
        )
        .await;
        gateway.wait_ready(SERVICE_DEADLINE).await;
        self.gateway = Some(gateway);
        Ok(())
    }

    /// SIGTERM, as a rolling restart does: sockets close with 1001.
    async fn stop_gateway(&mut self) -> Result<(), String> {
        let mut gateway = self.gateway.take().ok_or("the gateway is not running")?;
        gateway.terminate().await;
        gateway
            .wait_exit(SERVICE_DEADLINE)
            .await
            .ok_or("the gateway did not exit after SIGTERM")?;
        Ok(())
    }

    /// Does one step the script asked for; its reply.
    async fn step(&mut self, request: &Value) -> Result<Value, String> {
        match request["step"].as_str() {
            Some("start") => {
                let page = request["allowed"].as_str().ok_or("start needs allowed")?;
                let own = format!("http://127.0.0.1:{}", self.port);
                self.options = GatewayOptions::default()
                    .env("GATEWAY_LISTEN", format!("127.0.0.1:{}", self.port))
                    .allowed_origins(&format!("{page},{own}"));
                self.start_gateway().await?;
                Ok(json!({ "ok": true, "gateway": own }))
            }
            Some("publish") => {
                let mut ids = Vec::new();
                for event in request["events"].as_array().ok_or("publish needs events")? {
                    let data = event["data"].as_str().ok_or("an event needs data")?;
                    let id = self
                        .auth
                        .try_publish(data, event["user"].as_str())
                        .await
                        .map_err(|s| format!("Publish {data}: {s:?}"))?;
                    ids.push(id);
                }
                Ok(json!({ "ok": true, "ids": ids }))
            }
            Some("stop-gateway") => {
                self.stop_gateway().await?;
                Ok(json!({ "ok": true }))
            }
            Some("start-gateway") => {
                self.start_gateway().await?;
                Ok(json!({ "ok": true }))
            }
            Some("revoke") => {
                let user = request["user"].as_str().ok_or("revoke needs user")?;
                self.auth.revoke_user(user).await;
                Ok(json!({ "ok": true }))
            }
            Some("done") => Ok(json!({ "ok": true })),
            other => Err(format!("unknown step {other:?}")),
        }
    }
}

async fn reply(stdin: &mut ChildStdin, value: &Value) {
    let line = format!("{value}\n");
    within(
        STEP_DEADLINE,
        "the script reads a reply",
        stdin.write_all(line.as_bytes()),
    )
    .await
    .expect("the browser script reads its stdin");
}

/// The script, with its stderr collected for the failure message.
fn spawn_script(root: &Path, chromium: &Path) -> (Child, Arc<Mutex<String>>) {
    let mut child = Command::new("node")
        .arg(root.join("tests/browser/e2e.mjs"))
        .env("WSAUTH_JWT_SECRET", JWT_SECRET)
        .env("WSAUTH_WEB_DIR", root.join("services/gateway/web"))
        .env("WSAUTH_ARTIFACTS", root.join("target/browser"))
        .env("CHROMIUM", chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node can be spawned");
    let log = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().expect("stderr was piped");
    let sink = log.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            let text = String::from_utf8_lossy(&buf[..n]);
            if std::env::var_os("TEST_LOG").is_some() {
                eprint!("{text}");
            }
            sink.lock().expect("never poisoned").push_str(&text);
        }
    });
    (child, log)
}

#[tokio::test]
async fn the_browser_client_reconnects_refreshes_and_stops_on_revocation_in_chromium() {
    if std::env::var_os("SKIP_BROWSER_TESTS").is_some_and(|v| v == "1") {
        eprintln!("SKIPPED: the browser test (SKIP_BROWSER_TESTS=1)");
        return;
    }
    let root = repo_root();
    let chromium = prerequisites(&root).unwrap_or_else(|why| panic!("{why}"));

    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(Some(&redis), AuthOptions::default()).await;
    let mut stack = Stack {
        redis,
        auth,
        gateway: None,
        port: port_for_the_gateway(),
        options: GatewayOptions::default(),
    };
    let (mut child, log) = spawn_script(&root, &chromium);
    let mut stdin = child.stdin.take().expect("stdin was piped");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout was piped")).lines();

    let run = async {
        while let Some(line) = within(
            STEP_DEADLINE,
            "the script's next request",
            lines.next_line(),
        )
        .await
        .expect("the script's stdout is readable")
        {
            let request: Value = serde_json::from_str(&line)
                .unwrap_or_else(|e| panic!("the script wrote {line:?}, not JSON: {e}"));
            let answer = match stack.step(&request).await {
                Ok(answer) => answer,
                Err(error) => json!({ "error": error }),
            };
            reply(&mut stdin, &answer).await;
        }
        within(SERVICE_DEADLINE, "the script exits", child.wait())
            .await
            .expect("the script can be waited for")
    };
    let status = tokio::time::timeout(RUN_DEADLINE, run).await;
    let log = log.lock().expect("never poisoned").clone();
    let gateway_logs = stack
        .gateway
        .as_ref()
        .map(TestGateway::logs)
        .unwrap_or_default();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => {
            panic!("the browser script failed ({status}):\n{log}\n--- gateway:\n{gateway_logs}")
        }
        Err(_) => panic!("the browser run took over {RUN_DEADLINE:?}:\n{log}"),
    }
    assert!(stack.redis.is_up(), "redis ran throughout");
    let screenshot = root.join("target/browser/demo.png");
    assert!(
        std::fs::metadata(&screenshot).is_ok_and(|m| m.len() > 1000),
        "{} was saved",
        screenshot.display()
    );
}

#[tokio::test]
async fn the_gateway_serves_the_client_modules_with_an_etag() {
    let redis = TestRedis::spawn();
    let auth = TestAuth::spawn(Some(&redis), AuthOptions::default()).await;
    let gateway = TestGateway::spawn(&[&auth], GatewayOptions::default()).await;
    let web = repo_root().join("services/gateway/web");
    for name in ["client.js", "react.js"] {
        let response = gateway.get(&format!("/{name}"), &[]).await;
        assert_eq!(response.status, 200, "/{name}");
        assert_eq!(
            response.header("content-type"),
            Some("text/javascript; charset=utf-8")
        );
        let on_disk = std::fs::read_to_string(web.join(name)).expect("the module is on disk");
        assert_eq!(response.body, on_disk, "/{name} is web/{name}, compiled in");
        let etag = response.header("etag").expect("an ETag").to_string();
        let again = gateway
            .get(&format!("/{name}"), &[("if-none-match", &etag)])
            .await;
        assert_eq!(again.status, 304, "/{name} revalidated");
        assert!(again.body.is_empty());
    }
}
