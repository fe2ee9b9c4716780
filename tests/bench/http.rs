//! A minimal HTTP/1.1 client for `GET /token/ws` that keeps its connection
//! alive between requests, as a browser would, so a handshake costs the
//! gateway one new TCP connection (the WebSocket), not two.

use std::net::{Ipv4Addr, SocketAddr};

use anyhow::{Context, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::client::connect_from;

/// Responses this small client accepts; anything larger is a broken server.
const MAX_BODY: usize = 64 * 1024;

pub struct HttpConn {
    stream: BufReader<TcpStream>,
    host: String,
    reusable: bool,
}

pub struct HttpResponse {
    pub status: u16,
    pub body: Vec<u8>,
}

impl HttpConn {
    pub async fn connect(server: SocketAddr, source: Ipv4Addr) -> anyhow::Result<Self> {
        let stream = connect_from(source, server).await?;
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

    /// `GET path` with `Authorization: Bearer <bearer>` (none when empty). The caller bounds it
    /// with a deadline.
    pub async fn get(&mut self, path: &str, bearer: &str) -> anyhow::Result<HttpResponse> {
        let authorization = if bearer.is_empty() {
            String::new()
        } else {
            format!("Authorization: Bearer {bearer}\r\n")
        };
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\n{authorization}Accept: application/json\r\n\r\n",
            self.host
        );
        self.stream
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .context("writing the request")?;

        let mut line = String::new();
        if self
            .stream
            .read_line(&mut line)
            .await
            .context("reading the status line")?
            == 0
        {
            self.reusable = false;
            bail!("connection closed before a response");
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .with_context(|| format!("bad status line {line:?}"))?;
        let mut content_length = None;
        let mut close = line.starts_with("HTTP/1.0");
        loop {
            line.clear();
            if self
                .stream
                .read_line(&mut line)
                .await
                .context("reading headers")?
                == 0
            {
                bail!("connection closed inside the headers");
            }
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let Some((name, value)) = header.split_once(':') else {
                bail!("bad header line {header:?}")
            };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                content_length = Some(value.parse::<usize>().context("bad content-length")?);
            } else if name.eq_ignore_ascii_case("connection") && value.eq_ignore_ascii_case("close")
            {
                close = true;
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && !value.eq_ignore_ascii_case("identity")
            {
                bail!("transfer-encoding {value} is not supported by the bench client");
            }
        }
        let body = match content_length {
            Some(length) if length > MAX_BODY => bail!("response body of {length} bytes"),
            Some(length) => {
                let mut body = vec![0; length];
                self.stream
                    .read_exact(&mut body)
                    .await
                    .context("reading the body")?;
                body
            }
            None => {
                close = true;
                let mut body = Vec::new();
                (&mut self.stream)
                    .take(MAX_BODY as u64)
                    .read_to_end(&mut body)
                    .await
                    .context("reading the body")?;
                body
            }
        };
        self.reusable = !close;
        Ok(HttpResponse { status, body })
    }
}
