//! One connection's mailbox from the hub: queued event frames, a close
//! request and a ping flag behind one std mutex, and its session's waker.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::lock;
use crate::close::CloseCode;
use crate::event::EventId;

/// A drained queue keeps at most this much capacity (in frames): a burst
/// must not leave every connection holding its high-water mark.
const RETAINED_QUEUE: usize = 8;

/// An event frame (or a gap notice), serialised once and shared by every
/// recipient's queue.
#[derive(Debug)]
pub struct Frame {
    /// Lets a recovering session skip what History already sent; `None` for
    /// a gap notice, which is never skipped.
    pub id: Option<EventId>,
    pub text: Utf8Bytes,
}

/// What the hub asks of a session, most urgent first.
#[derive(Debug)]
pub enum Signal {
    /// Close with this code (slow consumer, revoked user, shutdown).
    Close(CloseCode),
    /// Send this event.
    Frame(Arc<Frame>),
    /// Time for this connection's keepalive ping.
    Ping,
}

/// One connection's mailbox. A session waits on one future
/// ([`Slot::poll_signal`]) for everything the hub may want of it.
#[derive(Debug)]
pub struct Slot {
    state: Mutex<SlotState>,
    /// Set when the socket woke the session (through the slot's own
    /// [`Waker`]), so a wakeup for an event need not try a read.
    socket_ready: AtomicBool,
}

#[derive(Debug)]
struct SlotState {
    /// Allocated on first use and shrunk when drained.
    queue: VecDeque<Arc<Frame>>,
    capacity: u32,
    /// The first close requested wins.
    kick: Option<CloseCode>,
    /// A close that waits for the queued frames (shutdown): no frame is
    /// queued after it, and a kick still overrides it.
    close_after_queue: Option<CloseCode>,
    ping: bool,
    waker: Option<Waker>,
}

impl Slot {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            state: Mutex::new(SlotState {
                queue: VecDeque::new(),
                capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
                kick: None,
                close_after_queue: None,
                ping: false,
                waker: None,
            }),
            socket_ready: AtomicBool::new(true),
        }
    }

    /// Queues without waiting; a full queue kicks the slow client (1008). The
    /// waker to wake is returned so the caller can wake it outside its own lock.
    #[must_use]
    pub(super) fn offer(&self, frame: &Arc<Frame>) -> Option<Waker> {
        let mut state = lock(&self.state);
        if state.kick.is_some() || state.close_after_queue.is_some() {
            return None;
        }
        if state.queue.len() >= state.capacity as usize {
            state.kick = Some(CloseCode::Policy);
            // Its events are never sent now: free them at once.
            state.queue = VecDeque::new();
        } else {
            state.queue.push_back(Arc::clone(frame));
        }
        state.waker.take()
    }

    /// Asks for a close with `code`; the first request wins.
    pub fn kick(&self, code: CloseCode) {
        let waker = {
            let mut state = lock(&self.state);
            if state.kick.is_some() {
                return;
            }
            state.kick = Some(code);
            state.queue = VecDeque::new();
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Asks for a close with `code` once the frames queued so far are sent
    /// (a shutdown's drain); the waker to wake is returned, as for `offer`.
    #[must_use]
    pub(super) fn close_after_queue(&self, code: CloseCode) -> Option<Waker> {
        let mut state = lock(&self.state);
        if state.kick.is_some() || state.close_after_queue.is_some() {
            return None;
        }
        state.close_after_queue = Some(code);
        state.waker.take()
    }

    #[must_use]
    pub(super) fn ping(&self) -> Option<Waker> {
        let mut state = lock(&self.state);
        state.ping = true;
        state.waker.take()
    }

    /// The next thing the hub wants: a close before anything else, then
    /// queued frames in order, then a close after the queue, then a ping.
    pub fn poll_signal(&self, cx: &mut Context<'_>) -> Poll<Signal> {
        let mut state = lock(&self.state);
        if let Some(code) = state.kick {
            return Poll::Ready(Signal::Close(code));
        }
        if let Some(frame) = state.queue.pop_front() {
            if state.queue.is_empty() && state.queue.capacity() > RETAINED_QUEUE {
                state.queue = VecDeque::new();
            }
            return Poll::Ready(Signal::Frame(frame));
        }
        if let Some(code) = state.close_after_queue {
            return Poll::Ready(Signal::Close(code));
        }
        if std::mem::take(&mut state.ping) {
            return Poll::Ready(Signal::Ping);
        }
        register(&mut state.waker, cx);
        // The socket may have woken us between the session's read attempt
        // and this registration, finding no waker to call: poll again.
        if self.socket_ready.load(Ordering::Acquire) {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }

    /// Resolves only with a close request (while a write is in progress).
    pub fn poll_kick(&self, cx: &mut Context<'_>) -> Poll<CloseCode> {
        let mut state = lock(&self.state);
        if let Some(code) = state.kick {
            return Poll::Ready(code);
        }
        register(&mut state.waker, cx);
        Poll::Pending
    }

    /// Whether the socket may have something to read; clears the mark. A
    /// read that returns `Pending` leaves the slot's waker (see
    /// [`Registration::socket_waker`]) with the socket, which marks it again
    /// when there is.
    ///
    /// [`Registration::socket_waker`]: super::Registration::socket_waker
    pub fn take_socket_ready(&self) -> bool {
        self.socket_ready.swap(false, Ordering::AcqRel)
    }

    /// After a read that returned something: there may be more.
    pub fn set_socket_ready(&self) {
        self.socket_ready.store(true, Ordering::Release);
    }
}

/// The socket's waker: marks the socket ready, then wakes the session.
impl Wake for Slot {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.set_socket_ready();
        let waker = lock(&self.state).waker.take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

fn register(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use futures::FutureExt as _;

    use super::*;

    fn frame(id: &str) -> Arc<Frame> {
        Arc::new(Frame {
            id: Some(id.parse().expect("valid id")),
            text: Utf8Bytes::from_static("{}"),
        })
    }

    /// The signal waiting in `slot` right now, if any.
    fn now(slot: &Slot) -> Option<Signal> {
        poll_fn(|cx| slot.poll_signal(cx)).now_or_never()
    }

    fn offer(slot: &Slot, id: &str) {
        if let Some(waker) = slot.offer(&frame(id)) {
            waker.wake();
        }
    }

    #[test]
    fn a_full_queue_kicks_with_1008_and_frees_its_frames() {
        let slot = Slot::new(2);
        for i in 0..3 {
            offer(&slot, &format!("e:{i}-0"));
        }
        assert!(matches!(now(&slot), Some(Signal::Close(CloseCode::Policy))));
        assert_eq!(lock(&slot.state).queue.capacity(), 0);
    }

    #[test]
    fn frames_come_out_in_order_and_a_drained_queue_shrinks() {
        let slot = Slot::new(256);
        for i in 0..100 {
            offer(&slot, &format!("e:{i}-0"));
        }
        for i in 0..100 {
            match now(&slot) {
                Some(Signal::Frame(got)) => {
                    assert_eq!(got.id, Some(format!("e:{i}-0").parse().expect("valid id")));
                }
                other => panic!("expected frame {i}, got {other:?}"),
            }
        }
        assert!(now(&slot).is_none());
        assert!(lock(&slot.state).queue.capacity() <= RETAINED_QUEUE);
    }

    #[test]
    fn the_first_kick_wins_and_comes_before_queued_frames() {
        let slot = Slot::new(4);
        offer(&slot, "e:1-0");
        slot.kick(CloseCode::Policy);
        slot.kick(CloseCode::Unauthorized);
        assert!(matches!(now(&slot), Some(Signal::Close(CloseCode::Policy))));
        assert_eq!(
            poll_fn(|cx| slot.poll_kick(cx)).now_or_never(),
            Some(CloseCode::Policy)
        );
    }

    #[tokio::test]
    async fn an_offer_wakes_the_waiting_session() {
        let slot = Arc::new(Slot::new(4));
        slot.take_socket_ready();
        let waiting = {
            let slot = Arc::clone(&slot);
            tokio::spawn(async move { poll_fn(|cx| slot.poll_signal(cx)).await })
        };
        // Delivered whether the task is already waiting or not yet polled.
        tokio::task::yield_now().await;
        offer(&slot, "e:1-0");
        let got = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken within the deadline")
            .expect("no panic");
        assert!(matches!(got, Signal::Frame(_)), "{got:?}");
    }

    #[tokio::test]
    async fn the_socket_waker_marks_the_socket_and_wakes_the_session() {
        let slot = Arc::new(Slot::new(4));
        assert!(slot.take_socket_ready(), "a new socket is read at once");
        assert!(!slot.take_socket_ready());
        let socket_waker = Waker::from(Arc::clone(&slot));
        let waiting = {
            let slot = Arc::clone(&slot);
            tokio::spawn(async move {
                poll_fn(|cx| match slot.poll_signal(cx) {
                    Poll::Pending if slot.take_socket_ready() => Poll::Ready(()),
                    Poll::Pending => Poll::Pending,
                    Poll::Ready(signal) => panic!("no signal was sent: {signal:?}"),
                })
                .await
            })
        };
        tokio::task::yield_now().await;
        socket_waker.wake_by_ref();
        tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("woken by the socket within the deadline")
            .expect("no panic");
    }

    #[test]
    fn a_socket_wake_with_no_session_waker_yet_is_not_lost() {
        struct Counting(AtomicUsize);
        impl Wake for Counting {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let slot = Arc::new(Slot::new(4));
        assert!(slot.take_socket_ready(), "a new socket is read at once");
        // The socket becomes readable after the session's read attempt and
        // before it registers with the slot: nobody is there to wake.
        Waker::from(Arc::clone(&slot)).wake_by_ref();
        let counting = Arc::new(Counting(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&counting));
        let polled = slot.poll_signal(&mut Context::from_waker(&waker));
        assert!(polled.is_pending(), "nothing queued for the session");
        assert_eq!(
            counting.0.load(Ordering::SeqCst),
            1,
            "the session is woken at once to read the socket"
        );
    }
}
