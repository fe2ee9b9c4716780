//! A private `redis-server` for one test run, on a port of its own, never 6379.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Ports tried for a new server: below Linux's default ephemeral range
/// (32768–60999), so the client sockets of a load run cannot hold them.
const PORTS: std::ops::Range<u16> = 20_000..32_000;

/// Ports tried before giving up (each taken one costs a failed start).
const ATTEMPTS: usize = 20;

/// How long a started server may take to answer.
const STARTUP: Duration = Duration::from_secs(10);

/// A `redis-server` child process owned by a test. Killed on drop.
///
/// Nothing is persisted (`--save "" --appendonly no`), so [`TestRedis::restart`]
/// comes back empty, like a managed Redis failing over without persistence.
pub struct TestRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl TestRedis {
    /// Starts `redis-server` on a loopback port and waits until it answers.
    ///
    /// redis-server cannot report the port of a port-0 bind, so a random port
    /// is tried and another one when that one is taken: a server counts as
    /// started only once it answers with its own process id.
    ///
    /// Panics with a clear message when `redis-server` is not on PATH: the
    /// README's `make test` installs it through `.ci/run`.
    pub fn spawn() -> Self {
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            let port = rand::random_range(PORTS);
            let dir =
                std::env::temp_dir().join(format!("wsauth-redis-{}-{port}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("the temp dir is writable");
            let mut redis = Self {
                port,
                dir,
                child: None,
            };
            match redis.start() {
                Ok(()) => return redis,
                Err(why) => failures.push(format!("port {port}: {why}")),
            }
        }
        panic!("redis-server did not start on any of {ATTEMPTS} ports: {failures:?}")
    }

    /// `redis://127.0.0.1:PORT`, for `REDIS_URL`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port this server listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id while it runs (e.g. to SIGSTOP it in a test).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port, empty.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(why) = self.start() {
            panic!("redis-server did not restart on port {}: {why}", self.port);
        }
    }

    /// Whether the server accepts connections right now.
    pub fn is_up(&self) -> bool {
        TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Starts the server on `self.port`; `Err` (its exit status and last log
    /// line) when it exits first, which mostly means the port was taken.
    fn start(&mut self) -> Result<(), String> {
        let log = self.dir.join("redis.log");
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .args(["--maxclients", "10000"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH (make test installs it through .ci/run)");
        let deadline = Instant::now() + STARTUP;
        loop {
            // Another process on this port would answer too: only our own
            // process id proves the server is ours.
            if server_pid(self.addr()) == Some(child.id()) {
                self.child = Some(child);
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let last = log.lines().last().unwrap_or_default().to_string();
                return Err(format!("{status}: {last}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "redis-server did not answer on port {} within {STARTUP:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The `process_id` that the Redis server at `addr` reports, if one answers.
fn server_pid(addr: SocketAddr) -> Option<u32> {
    let timeout = Duration::from_millis(200);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    // An inline command: no RESP encoding needed.
    stream.write_all(b"INFO server\r\n").ok()?;
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    while reply.len() < 64 * 1024 {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&chunk[..n]);
        if let Some(pid) = parse_process_id(&reply) {
            return Some(pid);
        }
    }
    None
}

/// `process_id:1234\r\n` out of an `INFO server` reply, once the line is complete.
fn parse_process_id(reply: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(reply).ok()?;
    let rest = &text[text.find("\nprocess_id:")? + "\nprocess_id:".len()..];
    let end = rest.find("\r\n")?;
    rest[..end].trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_process_id;

    #[test]
    fn the_process_id_is_read_once_its_line_is_complete() {
        let reply =
            b"$100\r\n# Server\r\nredis_version:7.0.15\r\nprocess_id:4242\r\ntcp_port:20001\r\n";
        assert_eq!(parse_process_id(reply), Some(4242));
        assert_eq!(parse_process_id(b"$100\r\n# Server\r\nprocess_id:42"), None);
        assert_eq!(parse_process_id(b"-LOADING Redis is loading\r\n"), None);
    }
}
