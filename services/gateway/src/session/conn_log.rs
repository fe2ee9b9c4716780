//! Which connection a session's log lines are about, without a span per
//! connection.
//!
//! A `tracing` span held for a connection's whole life cost about 0.4 KiB
//! per idle connection at `RUST_LOG=info` (the subscriber's slot for it, its
//! extensions map and the fields formatted for the log writer): a tenth of
//! what the connection cost in all. Instead the session task is wrapped in
//! [`Logged`], which puts the connection's id and user in a thread-local for
//! the length of each poll (moved in and out, no allocation, no counter),
//! and the session's events are written through [`conn_info!`] and its
//! siblings, which add them as `conn_id` and `user_id` fields. A span is
//! still made when it is worth it (spans exported over OTLP, where it carries
//! the trace on; `RUST_LOG` at debug, for the dependencies' lines), and
//! [`Logged`] enters it.
//!
//! [`conn_info!`]: crate::session::conn_log::conn_info

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tracing::Span;

use crate::hub::ConnId;

/// What names a connection in its log lines.
#[derive(Debug)]
pub struct ConnLog {
    id: ConnId,
    user: Arc<str>,
}

impl ConnLog {
    pub fn new(id: ConnId, user: Arc<str>) -> Self {
        Self { id, user }
    }
}

thread_local! {
    /// The connection whose session this thread is polling, if any.
    static CURRENT: RefCell<Option<ConnLog>> = const { RefCell::new(None) };
}

/// Calls `f` with the id and user of the connection being polled on this
/// thread (`None` outside a [`Logged`] future, and then the macros write no
/// such field).
pub fn with_current<R>(f: impl FnOnce(Option<ConnId>, Option<&str>) -> R) -> R {
    CURRENT.with_borrow(|current| match current {
        Some(conn) => f(Some(conn.id), Some(&conn.user)),
        None => f(None, None),
    })
}

pin_project_lite::pin_project! {
    /// `inner`, with `conn` current on this thread while it is polled, and
    /// inside `span` when there is one.
    pub struct Logged<F> {
        conn: Option<ConnLog>,
        // Boxed: a `Span` is 40 bytes, and most sessions have none.
        span: Option<Box<Span>>,
        #[pin]
        inner: F,
    }
}

impl<F> Logged<F> {
    /// `span` is entered on each poll unless it is disabled.
    pub fn new(conn: ConnLog, span: Span, inner: F) -> Self {
        Self {
            conn: Some(conn),
            span: (!span.is_disabled()).then(|| Box::new(span)),
            inner,
        }
    }
}

impl<F: Future> Future for Logged<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _span = this.span.as_deref().map(Span::enter);
        let entered = Entered::new(this.conn);
        let polled = this.inner.poll(cx);
        drop(entered);
        polled
    }
}

/// Puts a connection into [`CURRENT`] and gives it back on drop, a panic
/// in the poll included, with whatever was current before restored.
struct Entered<'a> {
    home: &'a mut Option<ConnLog>,
    before: Option<ConnLog>,
}

impl<'a> Entered<'a> {
    fn new(home: &'a mut Option<ConnLog>) -> Self {
        let before = CURRENT.replace(home.take());
        Self { home, before }
    }
}

impl Drop for Entered<'_> {
    fn drop(&mut self) {
        *self.home = CURRENT.replace(self.before.take());
    }
}

/// `tracing::event!` at `$level` with the current connection's `conn_id`
/// and `user_id`; the level macros below are this at one level.
macro_rules! conn_event {
    ($level:expr, $($rest:tt)+) => {
        $crate::session::conn_log::with_current(|conn_id, user_id| {
            ::tracing::event!($level, conn_id, user_id, $($rest)+)
        })
    };
}

/// `tracing::info!` with the current connection's `conn_id` and `user_id`.
macro_rules! conn_info {
    ($($rest:tt)+) => { $crate::session::conn_log::conn_event!(::tracing::Level::INFO, $($rest)+) };
}

/// `tracing::warn!` with the current connection's `conn_id` and `user_id`.
macro_rules! conn_warn {
    ($($rest:tt)+) => { $crate::session::conn_log::conn_event!(::tracing::Level::WARN, $($rest)+) };
}

/// `tracing::error!` with the current connection's `conn_id` and `user_id`.
macro_rules! conn_error {
    ($($rest:tt)+) => { $crate::session::conn_log::conn_event!(::tracing::Level::ERROR, $($rest)+) };
}

/// `tracing::debug!` with the current connection's `conn_id` and `user_id`.
macro_rules! conn_debug {
    ($($rest:tt)+) => { $crate::session::conn_log::conn_event!(::tracing::Level::DEBUG, $($rest)+) };
}

pub(crate) use {conn_debug, conn_error, conn_event, conn_info, conn_warn};

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use super::*;

    fn current() -> Option<(ConnId, String)> {
        with_current(|id, user| id.zip(user.map(str::to_owned)))
    }

    #[tokio::test]
    async fn the_connection_is_current_only_while_its_future_is_polled() {
        assert_eq!(current(), None);
        let mut polls = 0;
        let logged = Logged::new(
            ConnLog::new(7, Arc::from("alice")),
            Span::none(),
            poll_fn(|cx| {
                assert_eq!(current(), Some((7, "alice".to_owned())));
                polls += 1;
                if polls < 3 {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            }),
        );
        logged.await;
        assert_eq!(polls, 3);
        assert_eq!(current(), None, "given back after each poll");
    }

    #[test]
    fn a_panicking_poll_gives_the_connection_back() {
        let mut logged = Box::pin(Logged::new(
            ConnLog::new(8, Arc::from("bob")),
            Span::none(),
            poll_fn(|_| -> Poll<()> { panic!("in the session") }),
        ));
        let waker = futures::task::noop_waker();
        let polled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = logged.as_mut().poll(&mut Context::from_waker(&waker));
        }));
        assert!(polled.is_err());
        assert_eq!(current(), None);
        assert!(logged.conn.is_some(), "kept for the next poll");
    }
}
