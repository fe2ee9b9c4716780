//! A private `redis-server` for one test run, on a free port, never 6379.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
    /// Starts `redis-server` on a free loopback port and waits until it answers.
    ///
    /// Panics with a clear message when `redis-server` is not on PATH: the
    /// README's `make test` installs it through `.ci/run`.
    pub fn spawn() -> Self {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("wsauth-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the temp dir is writable");
        let mut redis = Self {
            port,
            dir,
            child: None,
        };
        redis.start();
        redis
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
        self.start();
    }

    /// Whether the server accepts connections right now.
    pub fn is_up(&self) -> bool {
        TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok()
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn start(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--protected-mode", "no"])
            .args(["--maxclients", "10000"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be on PATH (make test installs it through .ci/run)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.is_up() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on port {}",
                self.port
            );
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

/// A loopback port that was free a moment ago. Another process could take it
/// before the caller binds it; the harness accepts that small race for child
/// processes that must be told a port up front.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("binding 127.0.0.1:0 succeeds on any machine with loopback")
}
