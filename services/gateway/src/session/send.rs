//! Writing to the client under deadlines: each frame, and the closing
//! handshake, so a client that stops reading cannot hold a session.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures::{SinkExt as _, StreamExt as _};
use tokio::time::{Sleep, sleep};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message, Utf8Bytes};

use super::End;
use super::conn_log::{conn_debug, conn_info};
use crate::close::CloseCode;
use crate::hub::Slot;
use crate::metrics::{Closed, Metrics};
use crate::socket::{self, Socket};

/// One frame that cannot be written for this long means the client stopped
/// reading: closed with 1008.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the closing handshake may take before the socket is dropped.
/// Generous because a slow consumer's close frame (1008) queues behind the
/// frames already in its TCP buffers: it sees the code only once it reads
/// them. The session's queue is gone by then, so waiting holds no events.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long the reply to a client's close may take to be written.
const CLOSE_REPLY_GRACE: Duration = Duration::from_secs(2);
/// After a 1009 the rest of the oversized frame is still unread; closing at
/// once would answer it with a reset that can overtake the close frame.
const TOO_BIG_LINGER: Duration = Duration::from_millis(500);

fn write_error(error: tungstenite::Error) -> End {
    conn_debug!(%error, "websocket write failed");
    End::Gone(Closed::Error)
}

/// Sends one frame. A write that does not finish at once waits at most
/// [`SEND_TIMEOUT`] (then 1008), and gives up when the hub asks for a close
/// or the JWT expires: a client that stops reading must not hold the session.
///
/// Not an `async fn`, which stores its arguments twice: this future sits in
/// every session.
#[allow(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
pub(super) fn send<'a>(
    socket: &'a mut Socket,
    message: Message,
    slot: &'a Slot,
    expiry: Pin<&'a mut Sleep>,
) -> impl Future<Output = Result<(), End>> + 'a {
    // Made here, not in the body, which would keep `message` beside it.
    let mut sending = socket::send(socket, message);
    async move {
        // Most writes complete at once; only a blocked one pays for a timer.
        if let Poll::Ready(sent) = futures::poll!(&mut sending) {
            return sent.map_err(write_error);
        }
        let deadline = Box::pin(sleep(SEND_TIMEOUT));
        tokio::select! {
            biased;
            code = poll_fn(|cx| slot.poll_kick(cx)) => Err(End::Close(code)),
            () = expiry => {
                conn_info!("jwt expired while a write was blocked");
                Err(End::Close(CloseCode::Unauthorized))
            }
            () = deadline => {
                conn_info!("client stopped reading");
                Err(End::Close(CloseCode::Policy))
            }
            sent = &mut sending => sent.map_err(write_error),
        }
    }
}

/// Ends the socket: for a gateway close, send the code and wait (bounded)
/// for the peer's close so the frame is not lost to a reset.
pub(super) async fn finish(mut socket: Socket, metrics: &Metrics, end: End) {
    match end {
        End::Gone(Closed::Client) => {
            metrics.closed(Closed::Client);
            // tungstenite queued the reply to the client's close, but writes
            // it only on the next read or flush.
            let _ = tokio::time::timeout(CLOSE_REPLY_GRACE, socket.flush()).await;
        }
        End::Gone(closed) => metrics.closed(closed),
        End::Close(code) => {
            metrics.closed(Closed::Code(code));
            conn_debug!(code = code.code(), "closing");
            let frame = Message::Close(Some(CloseFrame {
                code: code.code().into(),
                reason: Utf8Bytes::from_static(code.reason()),
            }));
            let _ = tokio::time::timeout(CLOSE_GRACE, async {
                if socket::send(&mut socket, frame).await.is_err() {
                    return;
                }
                while let Some(Ok(message)) = socket.next().await {
                    if matches!(message, Message::Close(_)) {
                        return;
                    }
                }
                if code == CloseCode::TooBig {
                    // The reader stopped mid-frame and cannot drain it.
                    sleep(TOO_BIG_LINGER).await;
                }
            })
            .await;
        }
    }
}
