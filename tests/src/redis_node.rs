//! One `redis-server` process with arbitrary settings, and `redis-cli`:
//! the building block of the cluster and sentinel topologies.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports tried for a node (and a cluster bus): below Linux's ephemeral
/// range, as for `TestRedis`; a taken one makes redis-server exit, and the
/// next is tried.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// A random port from [`PORTS`].
pub fn pick_port() -> u16 {
    rand::random_range(PORTS)
}

/// A `redis-server` (or sentinel) child on a loopback port. Killed on drop.
pub struct RedisNode {
    port: u16,
    dir: PathBuf,
    args: Vec<String>,
    child: Option<Child>,
}

impl RedisNode {
    /// Starts `redis-server` on a free loopback port (never 6379) with the
    /// harness defaults (no persistence) followed by `extra` arguments, in
    /// its own directory under `root`; waits until it accepts connections.
    pub fn spawn(root: &Path, extra: &[String]) -> Self {
        Self::spawn_with(root, || extra.to_vec())
    }

    /// As [`RedisNode::spawn`], with `extra` made anew for each attempt:
    /// arguments that name ports of their own (a cluster bus port) must
    /// change with the attempt, or a port held by another test's node would
    /// fail every attempt alike.
    pub fn spawn_with(root: &Path, extra: impl Fn() -> Vec<String>) -> Self {
        for _ in 0..20 {
            if let Some(node) = Self::try_spawn(root, &extra()) {
                return node;
            }
        }
        panic!("redis-server did not start on any of 20 ports")
    }

    /// One attempt of [`RedisNode::spawn`] on one random port: `None` when
    /// that port, or one named in `extra`, was taken.
    pub fn try_spawn(root: &Path, extra: &[String]) -> Option<Self> {
        let port = pick_port();
        let dir = root.join(port.to_string());
        std::fs::create_dir_all(&dir).expect("the temp dir is writable");
        let mut args: Vec<String> = Vec::new();
        // A sentinel reads (and rewrites) its config file, which must come
        // first, with `--sentinel`: then the extra arguments go first.
        let config_first = extra.first().is_some_and(|a| a.ends_with(".conf"));
        if config_first {
            args.extend(extra.iter().cloned());
        }
        for (flag, value) in [
            ("--port", port.to_string()),
            ("--bind", "127.0.0.1".into()),
            ("--protected-mode", "no".into()),
            ("--dir", dir.display().to_string()),
        ] {
            args.push(flag.into());
            args.push(value);
        }
        if !config_first {
            args.extend(extra.iter().cloned());
        }
        let mut node = Self {
            port,
            dir,
            args,
            child: None,
        };
        node.start().then_some(node)
    }

    /// The port this node listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// This node's directory (config files, certificates).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The process id while it runs (for CPU accounting).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the node with SIGKILL and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// `redis-cli -p PORT args…`: its stdout, trimmed ("" when it fails).
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, args)
    }

    /// Starts the process; false when it exits (port taken) or never answers.
    fn start(&mut self) -> bool {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH (make test installs it through .ci/run)");
        self.child = Some(child);
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let exited = self
                .child
                .as_mut()
                .is_none_or(|child| !matches!(child.try_wait(), Ok(None)));
            if exited || Instant::now() > deadline {
                self.kill();
                return false;
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `redis-cli -h 127.0.0.1 -p PORT args…` with a 5 s deadline: its stdout,
/// trimmed ("" when it fails or times out).
pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let mut child = match Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(child) => child,
        Err(_) => return String::new(),
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return String::new();
            }
        }
    }
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        use std::io::Read as _;
        let _ = stdout.read_to_string(&mut out);
    }
    out.trim().to_owned()
}

/// The value of `name:` in an `INFO` or `CLUSTER INFO` reply.
pub(crate) fn info_field<'a>(info: &'a str, name: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.trim()
            .strip_prefix(name)
            .and_then(|rest| rest.strip_prefix(':'))
    })
}

/// Polls `condition` every 50 ms until it holds; panics naming `what` after `within`.
pub fn wait_for(within: Duration, what: &str, condition: impl FnMut() -> bool) {
    assert!(
        wait_until(within, condition),
        "timed out after {within:?} waiting until {what}"
    );
}

/// Polls `condition` every 50 ms; whether it held within `within`.
pub fn wait_until(within: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    while !condition() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// A fresh directory for one topology's files, removed by the caller.
pub fn topology_dir(kind: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "wsauth-{kind}-{}-{}",
        std::process::id(),
        pick_port()
    ));
    std::fs::create_dir_all(&dir).expect("the temp dir is writable");
    dir
}
