//! `make cluster` for real: deploy/cluster.sh on ports of its own, with its
//! own secrets, and WebSockets that authenticate through its HAProxy.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use wsauth_tests::metrics::sample_sum;
use wsauth_tests::{Jwt, STEP, WsClient, bin_path, http, wait_until};

use super::deploy_dir;

/// deploy/cluster.sh running in the background; stopped (SIGTERM, which its
/// trap passes on to every process it started) when dropped.
struct ClusterScript {
    child: Child,
    dir: PathBuf,
}

impl ClusterScript {
    /// Starts the script with its ports from `base` and its files in a
    /// fresh directory holding the secrets it will use.
    fn start(base: u16, secret: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("wsauth-cluster-{}-{base}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the temp dir is writable");
        std::fs::write(
            dir.join("env"),
            format!(
                "export JWT_HS256_SECRET={secret}\nexport WSAUTH_INTERNAL_KEY=internal-{base}\nexport WSAUTH_ADMIN_KEY=admin-{base}\n"
            ),
        )
        .expect("the env file is writable");
        let output = std::fs::File::create(dir.join("script.out")).expect("a log file");
        let bin_dir = bin_path("wsauth-auth")
            .parent()
            .expect("a binary lives in a directory")
            .to_path_buf();
        let child = Command::new("bash")
            .arg(deploy_dir().join("cluster.sh"))
            .env("WSAUTH_BIN_DIR", bin_dir)
            .env("WSAUTH_RUN_DIR", &dir)
            .env("WSAUTH_NO_APT", "1")
            .env("CLUSTER_PORT", base.to_string())
            .env("CLUSTER_REDIS_PORT", (base + 8).to_string())
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("a second handle"))
            .stderr(output)
            .spawn()
            .expect("bash runs deploy/cluster.sh");
        Self { child, dir }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(self.dir.join("script.out")).unwrap_or_default()
    }

    /// Waits until the script says the cluster runs; `Err(output)` if it
    /// stopped instead.
    async fn wait_running(&mut self) -> Result<(), String> {
        let this = &mut *self;
        wait_until(Duration::from_secs(60), "make cluster says it runs", || {
            let done = this.child.try_wait().ok().flatten().is_some()
                || this.output().contains("wsauth cluster is running");
            async move { done }
        })
        .await;
        match self.child.try_wait() {
            Ok(None) => Ok(()),
            exited => Err(format!(
                "cluster.sh stopped ({exited:?}):\n{}",
                self.output()
            )),
        }
    }

    /// A running cluster on ports from a random base (below the ephemeral
    /// range, like the harness's redis-servers). A port another test holds
    /// stops the script with a message; then another base is tried.
    async fn running(secret: &str) -> (Self, u16) {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let base = rand::random_range(20_000u16..31_000);
            let mut script = Self::start(base, secret);
            match script.wait_running().await {
                Ok(()) => return (script, base),
                Err(output) => failures.push(output),
            }
        }
        panic!(
            "make cluster did not start in 3 tries:\n{}",
            failures.join("\n---\n")
        )
    }
}

impl Drop for ClusterScript {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        // The script waits for its children (each bounded by its own grace).
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Open connections a gateway's /metrics reports.
async fn connections_open(gateway: SocketAddr) -> f64 {
    let text = http::get(gateway, "/metrics", &[]).await.body;
    sample_sum(&text, "wsauth_gateway_connections_open").unwrap_or(0.0)
}

#[tokio::test]
async fn make_cluster_authenticates_websockets_through_haproxy_on_all_three_gateways() {
    assert!(
        which("haproxy").is_some() || Path::new("/usr/sbin/haproxy").is_file(),
        "haproxy is missing: run `make setup` (installs it as root; `make test` does)"
    );
    let secret = format!("cluster-test-secret-{}", rand::random::<u64>());
    let (script, base) = ClusterScript::running(&secret).await;

    let lb = SocketAddr::from(([127, 0, 0, 1], base));
    let mut clients = Vec::new();
    for i in 0..6 {
        let user = format!("user-{i}");
        let jwt = Jwt::for_user(&user).signed_with(secret.as_bytes()).sign();
        let bearer = format!("Bearer {jwt}");
        let response = http::get(lb, "/token/ws", &[("authorization", &bearer)]).await;
        assert_eq!(response.status, 200, "GET /token/ws through HAProxy");
        let token = response.json()["token"]
            .as_str()
            .expect("a token")
            .to_owned();
        let mut client = WsClient::connect(lb, &token, None)
            .await
            .unwrap_or_else(|status| panic!("upgrade through HAProxy refused with {status}"));
        client.send_jwt(&jwt).await;
        assert_eq!(
            client.recv_json(STEP).await,
            json!({"type": "auth_ok", "user_id": user})
        );
        client.echo("through haproxy").await;
        clients.push(client);
    }

    // HAProxy balances by least connections: two sockets on each gateway.
    for port in base + 1..=base + 3 {
        let gateway = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(
            connections_open(gateway).await,
            2.0,
            "gateway on {port}\n{}",
            script.output()
        );
    }
}

/// The path of `program` on PATH, if any.
fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(program))
            .find(|candidate| candidate.is_file())
    })
}
