//! The upgraded socket. tungstenite reads frames and writes the control
//! frames (ping, pong, close); every text frame is written by [`FrameIo`]
//! straight from its payload's bytes, which for events are the one
//! serialised copy every recipient shares.
//!
//! Why: tungstenite copies each outgoing frame into a `Vec` that is drained
//! but never shrunk, so one 60 KB broadcast left every connection holding
//! 60 KB for the rest of its life (measured +57.6 KiB per connection). Here
//! a text frame costs its 2–10 header bytes and a reference to the payload,
//! released once written, and tungstenite's buffer only ever sees control
//! frames of at most 131 bytes.
//!
//! Reading is tungstenite's: after a client sends a large frame its read
//! buffer keeps that capacity (at most `MAX_MESSAGE_BYTES`) for that one
//! connection; tungstenite gives no way to shrink it.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, Bytes};
use futures::Sink;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::tls::Conn;

/// A WebSocket over an upgraded HTTP connection.
pub type Socket = WebSocketStream<FrameIo>;

/// FIN + text opcode: a whole text message in one frame.
const FIN_TEXT: u8 = 0x81;

/// The upgraded connection, plus at most one text frame being written.
///
/// Any write through it (tungstenite's pongs and closes included) first
/// finishes that frame, so frames never interleave, even when a session
/// gave up waiting on a blocked write and now sends its close.
pub struct FrameIo {
    io: Conn,
    head: [u8; 10],
    head_start: u8,
    head_end: u8,
    /// What is left of the frame's payload; empty (and no longer sharing
    /// the event's bytes) once written.
    body: Bytes,
}

impl FrameIo {
    pub fn new(io: Conn) -> Self {
        Self {
            io,
            head: [0; 10],
            head_start: 0,
            head_end: 0,
            body: Bytes::new(),
        }
    }

    /// Queues `payload` as one unmasked text frame (server to client).
    /// Call only once the previous frame is written.
    fn start_text(&mut self, payload: Bytes) {
        debug_assert!(self.is_drained(), "one frame at a time");
        self.head_end = text_frame_header(payload.len(), &mut self.head);
        self.head_start = 0;
        self.body = payload;
    }

    fn is_drained(&self) -> bool {
        self.head_start == self.head_end && self.body.is_empty()
    }

    /// Writes what is left of the pending text frame.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.is_drained() {
            let head = &self.head[usize::from(self.head_start)..usize::from(self.head_end)];
            let slices = [IoSlice::new(head), IoSlice::new(&self.body)];
            let written = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            let from_head = written.min(head.len());
            // At most 10: the header's length.
            self.head_start += from_head as u8;
            self.body.advance(written - from_head);
        }
        // An advanced-to-the-end `Bytes` still holds the shared payload.
        self.body = Bytes::new();
        Poll::Ready(Ok(()))
    }
}

/// Writes the header of an unmasked, final text frame carrying `len` payload
/// bytes (RFC 6455 §5.2) into `head`; returns how many bytes it took.
fn text_frame_header(len: usize, head: &mut [u8; 10]) -> u8 {
    head[0] = FIN_TEXT;
    if len < 126 {
        // Fits in the 7-bit length.
        head[1] = len as u8;
        2
    } else if let Ok(len) = u16::try_from(len) {
        head[1] = 126;
        head[2..4].copy_from_slice(&len.to_be_bytes());
        4
    } else {
        head[1] = 127;
        head[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    }
}

impl AsyncRead for FrameIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for FrameIo {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_drain(cx))?;
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Sends one message: text from its own bytes, anything else through
/// tungstenite. Done once the frame is handed to the kernel.
///
/// Cancel-safe in the sense that matters here: a text frame cut short stays
/// in [`FrameIo`] and is finished before anything else is written.
pub fn send(socket: &mut Socket, message: Message) -> Send<'_> {
    Send {
        socket,
        message: Some(message),
        control: false,
    }
}

/// The future of [`send`]; hand-written because it sits in every session's
/// future, and an `async fn` with its two branches' futures is much larger.
pub struct Send<'a> {
    socket: &'a mut Socket,
    /// Not yet handed over.
    message: Option<Message>,
    /// Handed to tungstenite (not a text frame of ours): flush it.
    control: bool,
}

impl Future for Send<'_> {
    type Output = Result<(), Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let socket = &mut *this.socket;
        match this.message.take() {
            Some(Message::Text(text)) => {
                // What tungstenite has queued (a pong, say) goes first.
                if Pin::new(&mut *socket).poll_flush(cx)?.is_pending() {
                    this.message = Some(Message::Text(text));
                    return Poll::Pending;
                }
                socket.get_mut().start_text(Bytes::from(text));
            }
            Some(other) => {
                if Pin::new(&mut *socket).poll_ready(cx)?.is_pending() {
                    this.message = Some(other);
                    return Poll::Pending;
                }
                Pin::new(&mut *socket).start_send(other)?;
                this.control = true;
            }
            None => {}
        }
        if this.control {
            Pin::new(socket).poll_flush(cx)
        } else {
            socket.get_mut().poll_drain(cx).map_err(Error::Io)
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};

    use super::text_frame_header;

    #[test]
    fn text_frame_headers_match_tungstenites_encoding_at_every_length_class() {
        for len in [0, 1, 125, 126, 127, 65_535, 65_536, 1 << 20] {
            let payload = vec![b'x'; len];
            let frame = Frame::message(payload, OpCode::Data(Data::Text), true);
            let mut expected = Vec::new();
            frame.format(&mut expected).expect("formatting into a Vec");
            let mut head = [0; 10];
            let head_len = usize::from(text_frame_header(len, &mut head));
            assert_eq!(expected.len(), head_len + len, "length {len}");
            assert_eq!(&head[..head_len], &expected[..head_len], "length {len}");
        }
    }
}
