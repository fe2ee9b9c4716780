//! HTTPS and `wss://` on the gateway's own listener (GATEWAY_TLS_CERT_FILE
//! and GATEWAY_TLS_KEY_FILE).
//!
//! The certificate follows its files through the shared
//! [`ReloadingServerConfig`]: each handshake takes the config current at its
//! start, so a rotation reaches new connections and established ones (and the
//! WebSockets upgraded from them) keep theirs.

use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use wsauth_shared::tls::{ReloadingServerConfig, TlsError, TlsFiles};

/// WebSockets upgrade from HTTP/1.1 requests; nothing else is offered.
pub const ALPN: &[u8] = b"http/1.1";

/// How long a client may take to finish its TLS handshake: a client that
/// connects and then trickles (or never sends) its hello is dropped, like
/// one that trickles its headers.
pub const HANDSHAKE_TIMEOUT: Duration = wsauth_shared::tls::HANDSHAKE_TIMEOUT;

/// A connection the HTTP server reads and writes: plain TCP or TLS over it.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// What the HTTP server serves: plain TCP, or TLS over it.
///
/// An enum rather than a `Box<dyn Stream>`: hyper boxes the connection again
/// when it is upgraded to a WebSocket, and a box inside that box was one more
/// heap block for every idle WebSocket (issue 13). TLS stays boxed: its state
/// is large, and plain connections should not carry its room.
pub enum Conn {
    Plain(TcpStream),
    Tls(Box<dyn Stream>),
}

impl Conn {
    fn io(self: Pin<&mut Self>) -> Pin<&mut dyn Stream> {
        match self.get_mut() {
            Self::Plain(tcp) => Pin::new(tcp),
            Self::Tls(tls) => Pin::new(&mut **tls),
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.io().poll_read(cx, buf)
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(tcp) => tcp.is_write_vectored(),
            Self::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.io().poll_shutdown(cx)
    }
}

/// Builds the listener's config from `files` (ALPN `http/1.1`).
pub async fn load(files: TlsFiles) -> Result<ReloadingServerConfig, TlsError> {
    ReloadingServerConfig::load(files, vec![ALPN.to_vec()]).await
}

/// Runs the server side of a handshake on `tcp` within `deadline`. `None`
/// when it fails, times out, or `cancel` fires first: the connection is then
/// dropped without an answer (a plain-HTTP request here gets a TLS alert).
pub async fn handshake(
    tls: &ReloadingServerConfig,
    tcp: TcpStream,
    peer: SocketAddr,
    deadline: Duration,
    cancel: &CancellationToken,
) -> Option<Box<dyn Stream>> {
    let accept = tokio::time::timeout(deadline, tls.acceptor().accept(tcp));
    let handshaken = tokio::select! {
        () = cancel.cancelled() => return None,
        handshaken = accept => handshaken,
    };
    match handshaken {
        Ok(Ok(stream)) => Some(Box::new(stream)),
        Ok(Err(error)) => {
            tracing::debug!(%peer, %error, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}
