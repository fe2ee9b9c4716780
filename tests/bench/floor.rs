//! The floor: the least a server can do for the bench's clients, to measure
//! wsauth against. `wsauth-bench floor` speaks the same client protocol
//! (`GET /token/ws` → `200 {"token":…}`, upgrade `/ws?token=…`, jwt frame →
//! `auth_ok`) with no auth and no Redis: the token is random and unchecked,
//! the JWT's `sub` is read without verifying it. Each published frame is
//! serialised once and written to every authenticated socket with one
//! non-blocking `send()` from one loop; a socket that cannot take it whole
//! gets the rest queued for its own task (counted, so a run shows whether
//! that happened).
//!
//! Driven like a worker: [`ToFloor`] lines on stdin, [`FromFloor`] on stdout;
//! it exits when stdin ends.

use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::Notify;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::protocol::{FloorStats, FromFloor, ToFloor, report};
use crate::wsframe::{self, CLOSE, PING, PONG, TEXT};

/// Deadline of a client's handshake, first byte to `auth_ok`, and of the
/// measurer's exchanges with the floor process.
const STEP: Duration = Duration::from_secs(10);

/// `wsauth-bench floor`: serve until stdin ends.
pub async fn run() -> anyhow::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let hub = Arc::new(Hub::default());
    report(&FromFloor::Listening {
        addr: listener.local_addr()?,
    })
    .await?;
    let accepting = hub.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(accepting.clone(), stream));
        }
    });
    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    let mut seq = 0u64;
    while let Some(line) = stdin.next_line().await? {
        match serde_json::from_str(&line).context("bad command")? {
            ToFloor::Publish { data } => {
                seq += 1;
                let event =
                    serde_json::json!({"type": "broadcast", "id": seq.to_string(), "data": data});
                hub.fan_out(&wsframe::encode(TEXT, event.to_string().as_bytes()));
            }
            ToFloor::Stats => report(&FromFloor::Stats(hub.stats())).await?,
        }
    }
    Ok(())
}

#[derive(Default)]
struct Hub {
    // std Mutex: held only by synchronous code, never across an await.
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    direct: AtomicU64,
    queued: AtomicU64,
    failed: AtomicU64,
}

impl Hub {
    /// The fan-out loop: one `send()` per socket.
    fn fan_out(&self, frame: &[u8]) {
        let conns = self.conns.lock().expect("never poisoned");
        let (mut direct, mut queued, mut failed) = (0, 0, 0);
        for conn in conns.values() {
            match conn.send(frame) {
                Sent::Direct => direct += 1,
                Sent::Queued => queued += 1,
                Sent::Failed => failed += 1,
            }
        }
        self.direct.fetch_add(direct, Ordering::Relaxed);
        self.queued.fetch_add(queued, Ordering::Relaxed);
        self.failed.fetch_add(failed, Ordering::Relaxed);
    }

    fn register(&self, conn: Arc<Conn>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.conns.lock().expect("never poisoned").insert(id, conn);
        id
    }

    fn remove(&self, id: u64) {
        self.conns.lock().expect("never poisoned").remove(&id);
    }

    fn stats(&self) -> FloorStats {
        FloorStats {
            connections: self.conns.lock().expect("never poisoned").len(),
            direct: self.direct.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
        }
    }
}

enum Sent {
    Direct,
    Queued,
    Failed,
}

/// One client socket, written by the fan-out loop and by its own task.
struct Conn {
    stream: TcpStream,
    /// Bytes the socket could not take yet; written by the connection's task.
    backlog: Mutex<Vec<u8>>,
    wake: Notify,
}

impl Conn {
    /// One non-blocking `send()`; what does not fit waits in the backlog.
    fn send(&self, frame: &[u8]) -> Sent {
        let mut backlog = self.backlog.lock().expect("never poisoned");
        if !backlog.is_empty() {
            // Behind earlier bytes: order first.
            backlog.extend_from_slice(frame);
            return Sent::Queued;
        }
        let written = match self.stream.try_write(frame) {
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => 0,
            Err(_) => return Sent::Failed,
        };
        if written == frame.len() {
            return Sent::Direct;
        }
        backlog.extend_from_slice(&frame[written..]);
        self.wake.notify_one();
        Sent::Queued
    }

    /// Writes the backlog out, waiting for the socket as needed.
    async fn flush(&self) -> std::io::Result<()> {
        loop {
            {
                let mut backlog = self.backlog.lock().expect("never poisoned");
                if backlog.is_empty() {
                    return Ok(());
                }
                match self.stream.try_write(&backlog) {
                    Ok(n) => {
                        backlog.drain(..n);
                        continue;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            self.stream.writable().await?;
        }
    }

    async fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        if let Sent::Failed = self.send(bytes) {
            return Err(ErrorKind::BrokenPipe.into());
        }
        self.flush().await
    }

    /// Reads more bytes into `buf`; `false` at end of stream.
    async fn fill(&self, buf: &mut Vec<u8>) -> std::io::Result<bool> {
        loop {
            self.stream.readable().await?;
            buf.reserve(2048);
            match self.stream.try_read_buf(buf) {
                Ok(n) => return Ok(n > 0),
                Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    async fn frame(&self, buf: &mut Vec<u8>) -> anyhow::Result<wsframe::Frame> {
        loop {
            match wsframe::decode(buf) {
                Ok(Some((frame, used))) => {
                    buf.drain(..used);
                    return Ok(frame);
                }
                Ok(None) => {}
                Err(refused) => bail!("client frame refused: {refused:?}"),
            }
            if !self.fill(buf).await? {
                bail!("connection ended");
            }
        }
    }
}

async fn connection(hub: Arc<Hub>, stream: TcpStream) {
    let conn = Arc::new(Conn {
        stream,
        backlog: Mutex::new(Vec::new()),
        wake: Notify::new(),
    });
    let mut buf = Vec::new();
    // The user is only echoed in auth_ok: nothing is per user on the floor.
    if !matches!(
        timeout(STEP, handshake(&conn, &mut buf)).await,
        Ok(Ok(Some(_)))
    ) {
        return;
    }
    let id = hub.register(conn.clone());
    let _ = serve(&conn, &mut buf).await;
    hub.remove(id);
}

/// HTTP requests until the upgrade, then the jwt frame; the user, or `None`
/// when the client left without upgrading.
async fn handshake(conn: &Conn, buf: &mut Vec<u8>) -> anyhow::Result<Option<String>> {
    loop {
        let head = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                buf.drain(..end + 4);
                break head;
            }
            if buf.len() > 16 * 1024 || !conn.fill(buf).await? {
                return Ok(None);
            }
        };
        let path = head.split_whitespace().nth(1).unwrap_or_default();
        let header = |name: &str| {
            head.lines().skip(1).find_map(|line| {
                let (k, v) = line.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
            })
        };
        if path.starts_with("/ws") {
            let key = header("sec-websocket-key").context("no Sec-WebSocket-Key")?;
            let response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                 Sec-WebSocket-Accept: {}\r\n\r\n",
                derive_accept_key(key.as_bytes())
            );
            conn.write(response.as_bytes()).await?;
            break;
        }
        let (status, body) = match path {
            p if p.starts_with("/token/ws") => (
                "200 OK",
                format!(
                    r#"{{"token":"{:032x}","expires_in":60}}"#,
                    rand::random::<u128>()
                ),
            ),
            "/healthz" | "/readyz" => ("200 OK", "{}".to_owned()),
            _ => ("404 Not Found", "{}".to_owned()),
        };
        let response = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        conn.write(response.as_bytes()).await?;
    }
    let first = conn.frame(buf).await?;
    let user = jwt_sub(&first.payload).context("first frame is not a jwt frame with a sub")?;
    let auth_ok = serde_json::json!({"type": "auth_ok", "user_id": user}).to_string();
    conn.write(&wsframe::encode(TEXT, auth_ok.as_bytes()))
        .await?;
    Ok(Some(user))
}

/// After `auth_ok`: echo, pong, answer a close; write the backlog when told.
async fn serve(conn: &Conn, buf: &mut Vec<u8>) -> anyhow::Result<()> {
    loop {
        tokio::select! {
            frame = conn.frame(buf) => {
                let frame = frame?;
                match frame.opcode {
                    CLOSE => {
                        let code = frame.payload.get(..2).unwrap_or(&[0x03, 0xE8]);
                        conn.write(&wsframe::encode(CLOSE, code)).await?;
                        return Ok(());
                    }
                    PING => conn.write(&wsframe::encode(PONG, &frame.payload)).await?,
                    TEXT => {
                        let text = String::from_utf8_lossy(&frame.payload);
                        let echo = serde_json::json!({"type": "echo", "data": text}).to_string();
                        conn.write(&wsframe::encode(TEXT, echo.as_bytes())).await?;
                    }
                    _ => {}
                }
            }
            () = conn.wake.notified() => conn.flush().await?,
        }
    }
}

/// The `sub` of the JWT in a `{"type":"jwt","token":…}` frame, unverified.
fn jwt_sub(payload: &[u8]) -> Option<String> {
    let frame: serde_json::Value = serde_json::from_slice(payload).ok()?;
    if frame["type"] != "jwt" {
        return None;
    }
    let claims = frame["token"].as_str()?.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).ok()?).ok()?;
    Some(claims["sub"].as_str()?.to_owned())
}

/// The measurer's handle on a floor child process. Killed on drop.
pub struct FloorProcess {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    addr: SocketAddr,
}

impl FloorProcess {
    /// Starts `wsauth-bench floor` and reads back the address it bound.
    pub async fn spawn() -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating this executable")?;
        let mut child = Command::new(exe)
            .arg("floor")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("starting the floor")?;
        let stdin = child.stdin.take().context("floor stdin is piped")?;
        let stdout = BufReader::new(child.stdout.take().context("floor stdout is piped")?).lines();
        let mut floor = Self {
            child,
            stdin,
            stdout,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        match floor.receive().await? {
            FromFloor::Listening { addr } => floor.addr = addr,
            FromFloor::Stats(_) => bail!("the floor did not start with its address"),
        }
        Ok(floor)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    pub async fn publish(&mut self, data: String) -> anyhow::Result<()> {
        self.command(&ToFloor::Publish { data }).await
    }

    pub async fn stats(&mut self) -> anyhow::Result<FloorStats> {
        self.command(&ToFloor::Stats).await?;
        match self.receive().await? {
            FromFloor::Stats(stats) => Ok(stats),
            FromFloor::Listening { .. } => bail!("the floor answered stats with its address"),
        }
    }

    async fn command(&mut self, command: &ToFloor) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(command)?;
        line.push(b'\n');
        timeout(STEP, async {
            self.stdin.write_all(&line).await?;
            self.stdin.flush().await
        })
        .await
        .context("the floor did not take a command in time")?
        .context("writing to the floor")
    }

    async fn receive(&mut self) -> anyhow::Result<FromFloor> {
        let line = timeout(STEP, self.stdout.next_line())
            .await
            .context("the floor did not answer in time")?
            .context("reading from the floor")?
            .context("the floor exited (see its stderr above)")?;
        serde_json::from_str(&line).context("the floor sent a bad line")
    }
}
