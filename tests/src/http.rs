//! A minimal HTTP/1.1 client for the gateway's plain routes (`/token/ws`,
//! `/healthz`, `/readyz`, `/metrics`): one-off GETs for tests, and a
//! kept-alive connection for the load generator, as a browser would hold one.
//! Every exchange has a deadline.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::net::connect_from;

/// The deadline of one request, connect to last byte.
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);

/// Responses this client accepts; anything larger is a broken server.
const MAX_BODY: usize = 4 * 1024 * 1024;

/// A parsed HTTP response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpResponse {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| {
            panic!(
                "body of HTTP {} is not JSON ({e}): {:?}",
                self.status, self.body
            )
        })
    }
}

/// The failure of one request (connection refused, reset, timeout, garbage).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("malformed response: {0}")]
    Malformed(String),
}

fn malformed(what: impl Into<String>) -> HttpError {
    HttpError::Malformed(what.into())
}

/// One HTTP/1.1 connection, reused for as long as the server keeps it open.
pub struct HttpConn {
    stream: BufReader<TcpStream>,
    host: String,
    reusable: bool,
}

impl HttpConn {
    /// Connects to `server`, from `source` when given (see [`connect_from`]).
    pub async fn connect(server: SocketAddr, source: Option<Ipv4Addr>) -> Result<Self, HttpError> {
        let stream = tokio::time::timeout(REQUEST_DEADLINE, connect_from(source, server))
            .await
            .map_err(|_| HttpError::Timeout(REQUEST_DEADLINE))??;
        Ok(Self {
            stream: BufReader::with_capacity(2048, stream),
            host: server.to_string(),
            reusable: true,
        })
    }

    /// Whether the server left the connection open for another request.
    pub fn reusable(&self) -> bool {
        self.reusable
    }

    /// `GET path` with extra `headers`, within the request deadline.
    pub async fn get(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse, HttpError> {
        tokio::time::timeout(REQUEST_DEADLINE, self.exchange(path, headers))
            .await
            .map_err(|_| {
                self.reusable = false;
                HttpError::Timeout(REQUEST_DEADLINE)
            })?
    }

    async fn exchange(
        &mut self,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<HttpResponse, HttpError> {
        // Unusable whatever happens below, until a whole response was read.
        self.reusable = false;
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", self.host);
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        request.push_str("\r\n");
        self.stream.get_mut().write_all(request.as_bytes()).await?;

        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            return Err(malformed("connection closed before a response"));
        }
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| malformed(format!("status line {line:?}")))?;
        let mut close = line.starts_with("HTTP/1.0");
        let mut headers = Vec::new();
        loop {
            line.clear();
            if self.stream.read_line(&mut line).await? == 0 {
                return Err(malformed("connection closed inside the headers"));
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header
                .split_once(':')
                .ok_or_else(|| malformed(format!("header line {header:?}")))?;
            headers.push((name.trim().to_string(), value.trim().to_string()));
        }
        let find = |wanted: &str| {
            headers
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(wanted))
                .map(|(_, value)| value.as_str())
        };
        close |= find("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let body = if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            self.read_chunked().await?
        } else if let Some(length) = find("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| malformed(format!("content-length {length:?}")))?;
            if length > MAX_BODY {
                return Err(malformed(format!("a body of {length} bytes")));
            }
            let mut body = vec![0; length];
            self.stream.read_exact(&mut body).await?;
            body
        } else {
            // No length: the body runs to the end of the connection.
            close = true;
            let mut body = Vec::new();
            (&mut self.stream)
                .take(MAX_BODY as u64)
                .read_to_end(&mut body)
                .await?;
            body
        };
        let body = String::from_utf8(body).map_err(|_| malformed("body is not UTF-8"))?;
        self.reusable = !close;
        Ok(HttpResponse {
            status,
            headers,
            body,
        })
    }

    async fn read_chunked(&mut self) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await?;
            let size = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size, 16)
                .map_err(|_| malformed(format!("chunk size {line:?}")))?;
            if body.len() + size > MAX_BODY {
                return Err(malformed("a chunked body over the limit"));
            }
            let start = body.len();
            body.resize(start + size + 2, 0);
            self.stream.read_exact(&mut body[start..]).await?;
            if &body[start + size..] != b"\r\n" {
                return Err(malformed("a chunk without its CRLF"));
            }
            body.truncate(start + size);
            if size == 0 {
                return Ok(body);
            }
        }
    }
}

/// `GET path` with extra `headers` on a new connection, `Connection: close`.
pub async fn try_get(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<HttpResponse, HttpError> {
    let mut with_close = headers.to_vec();
    with_close.push(("Connection", "close"));
    HttpConn::connect(addr, None)
        .await?
        .get(path, &with_close)
        .await
}

/// [`try_get`], panicking on transport failures: for tests where the server
/// must answer.
pub async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> HttpResponse {
    try_get(addr, path, headers)
        .await
        .unwrap_or_else(|e| panic!("GET http://{addr}{path} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A server that reads one request and answers `response` (then closes).
    async fn answer(response: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await.unwrap();
            socket.write_all(response).await.unwrap();
        });
        addr
    }

    #[tokio::test]
    async fn reads_a_content_length_response() {
        let addr = answer(b"HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}").await;
        let r = try_get(addr, "/", &[]).await.unwrap();
        assert_eq!(r.status, 401);
        assert_eq!(r.header("Content-Type"), Some("application/json"));
        assert_eq!(r.body, "{}");
    }

    #[tokio::test]
    async fn reads_a_chunked_response_and_keeps_the_connection() {
        let addr = answer(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .await;
        let mut conn = HttpConn::connect(addr, None).await.unwrap();
        let r = conn.get("/", &[]).await.unwrap();
        assert_eq!(r.body, "abcde");
        assert!(conn.reusable());
    }

    #[tokio::test]
    async fn a_response_without_length_runs_to_the_close() {
        let addr = answer(b"HTTP/1.1 200 OK\r\n\r\nall of it").await;
        let mut conn = HttpConn::connect(addr, None).await.unwrap();
        assert_eq!(conn.get("/", &[]).await.unwrap().body, "all of it");
        assert!(!conn.reusable());
    }

    #[tokio::test]
    async fn garbage_is_an_error_not_a_panic() {
        let addr = answer(b"SSH-2.0-OpenSSH\r\n\r\n").await;
        assert!(matches!(
            try_get(addr, "/", &[]).await,
            Err(HttpError::Malformed(_))
        ));
    }
}
