//! Waiting for a condition with a deadline, instead of sleeping and hoping.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`wait_until`] re-checks its condition.
const POLL: Duration = Duration::from_millis(25);

/// Re-checks `condition` until it holds; panics naming `what` if it still
/// does not hold after `within`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        // A condition that hangs counts against the same deadline.
        match tokio::time::timeout_at(deadline, condition()).await {
            Ok(true) => return,
            Ok(false) => {}
            Err(_) => panic!("timed out after {within:?} waiting until {what}"),
        }
        if Instant::now() + POLL > deadline {
            panic!("timed out after {within:?} waiting until {what}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Awaits `future`, panicking with `what` if it takes longer than `within`.
pub async fn within<T>(within: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(within, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {within:?}: {what}"),
    }
}
