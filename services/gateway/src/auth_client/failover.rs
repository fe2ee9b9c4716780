//! Which endpoint a call goes to, and moving on to the next one when an
//! endpoint fails, within the call's one deadline.
//!
//! Balanced here rather than with `Channel::balance_list`: tower's balancer
//! keeps picking an endpoint whose process died (its lazy reconnect reports
//! ready), so one dead replica of two failed every other call. Here a call
//! that fails at the transport moves on to the next endpoint within the same
//! deadline, and the failed one is tried last for a short cooldown.

use std::time::{Duration, Instant};

use tokio::time::error::Elapsed;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::{AuthCallError, AuthClient};
use crate::metrics::AuthMethod;

/// The least time one attempt gets, so a short remaining budget is not
/// split into attempts too short to ever succeed.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

/// The time one attempt may take: its fair share of what is left of the
/// call's deadline, so an endpoint that accepts and never answers leaves
/// time for the others.
pub(super) fn attempt_budget(remaining: Duration, endpoints_left: usize) -> Duration {
    let share = remaining / u32::try_from(endpoints_left.max(1)).unwrap_or(u32::MAX);
    share.max(MIN_ATTEMPT).min(remaining)
}

/// True when the call failed while connecting: the request never left, so
/// any call, even a non-idempotent one, may go to another endpoint.
fn is_connect_error(status: &Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(error) = source {
        if error.is::<tonic::ConnectError>() {
            return true;
        }
        source = error.source();
    }
    false
}

/// A failed attempt: try the next endpoint, or give the caller this answer.
enum Attempt<T> {
    Answer(Result<T, Status>),
    Next(Status),
}

/// Whether a call may be sent again to another endpoint once it may have
/// reached auth. ValidateToken consumes the token: a second try after a
/// first that may have consumed it would turn an outage (503) into a 401.
fn resend_safe(method: AuthMethod) -> bool {
    !matches!(method, AuthMethod::ValidateToken)
}

/// Decides what one attempt's outcome means for the call.
fn judge<T>(method: AuthMethod, outcome: Result<Result<T, Status>, Elapsed>) -> Attempt<T> {
    match outcome {
        Ok(Err(status)) if is_connect_error(&status) => Attempt::Next(status),
        Ok(Err(status)) if status.code() == Code::Unavailable && resend_safe(method) => {
            Attempt::Next(status)
        }
        Ok(result) => Attempt::Answer(result),
        Err(_) if resend_safe(method) => {
            Attempt::Next(Status::unavailable("auth endpoint did not answer in time"))
        }
        Err(_) => Attempt::Answer(Err(Status::unavailable(
            "auth endpoint did not answer in time",
        ))),
    }
}

impl AuthClient {
    /// Runs one call under the deadline, each endpoint in turn getting its
    /// share of what is left; an endpoint that fails at the transport or does
    /// not answer in its share is marked down and the next one is tried
    /// (unless the call may not be sent twice). Records the latency.
    pub(super) async fn call<T, F, Fut>(
        &self,
        method: AuthMethod,
        mut attempt: F,
    ) -> Result<T, AuthCallError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let endpoints = &self.endpoints;
        // Before a name first resolves there is nothing to try: wait for it,
        // within the deadline.
        let set = endpoints.snapshot(self.timeout).await;
        let order = endpoints.order(&set);
        let mut last = None;
        let mut result = None;
        for (tried, replica) in order.iter().enumerate() {
            let remaining = self.timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            // A call that may not be re-sent gets everything left: its timeout
            // is its answer, so a slow but working auth must not be cut short.
            let budget = if resend_safe(method) {
                attempt_budget(remaining, order.len() - tried)
            } else {
                remaining
            };
            let outcome = tokio::time::timeout(budget, attempt(replica.channel.clone())).await;
            match judge(method, outcome) {
                Attempt::Answer(answer) => {
                    if answer
                        .as_ref()
                        .is_err_and(|s| s.code() == Code::Unavailable)
                    {
                        endpoints.mark_down(replica);
                    }
                    result = Some(answer);
                    break;
                }
                Attempt::Next(status) => {
                    tracing::debug!(
                        endpoint = %replica.label,
                        message = status.message(),
                        "auth endpoint failed; trying the next"
                    );
                    endpoints.mark_down(replica);
                    last = Some(status);
                }
            }
        }
        self.metrics.auth_call(method, started.elapsed());
        match result {
            Some(Ok(response)) => Ok(response.into_inner()),
            Some(Err(status)) => Err(status.into()),
            None if order.is_empty() => Err(AuthCallError::Unavailable(
                "no auth endpoint: AUTH_URL's names have not resolved".into(),
            )),
            None => Err(last
                .map(AuthCallError::from)
                .unwrap_or_else(|| AuthCallError::Unavailable("deadline exceeded".into()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn attempts_share_the_remaining_budget() {
        let ms = Duration::from_millis;
        assert_eq!(attempt_budget(ms(2000), 1), ms(2000));
        assert_eq!(attempt_budget(ms(2000), 2), ms(1000));
        assert_eq!(attempt_budget(ms(2000), 4), ms(500));
        assert_eq!(attempt_budget(ms(150), 4), ms(100), "never below the floor");
        assert_eq!(
            attempt_budget(ms(50), 4),
            ms(50),
            "never above what is left"
        );
    }

    fn client(urls: &[String], timeout_ms: u64) -> AuthClient {
        AuthClient::new(
            urls,
            None,
            Duration::from_millis(timeout_ms),
            Metrics::default(),
        )
        .expect("valid urls")
    }

    /// Real peers that accept TCP connections and never answer: what a hung
    /// auth replica looks like. Counts the connections each one accepted.
    async fn silent_peers(n: usize) -> (Vec<String>, Vec<Arc<AtomicUsize>>) {
        let mut urls = Vec::new();
        let mut accepted = Vec::new();
        for _ in 0..n {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            urls.push(format!("http://{}", listener.local_addr().expect("addr")));
            let count = Arc::new(AtomicUsize::new(0));
            accepted.push(Arc::clone(&count));
            tokio::spawn(async move {
                let mut held = Vec::new();
                while let Ok((socket, _)) = listener.accept().await {
                    count.fetch_add(1, Ordering::SeqCst);
                    held.push(socket);
                }
            });
        }
        (urls, accepted)
    }

    /// Addresses where nothing listens: every connect is refused.
    fn refusing_urls(n: usize) -> Vec<String> {
        (0..n)
            .map(|_| {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                format!("http://{}", listener.local_addr().expect("addr"))
            })
            .collect()
    }

    #[tokio::test]
    async fn a_replica_that_never_answers_is_left_for_the_next_within_the_deadline() {
        let (urls, accepted) = silent_peers(2).await;
        let client = client(&urls, 600);
        let started = Instant::now();
        let error = client
            .verify_jwt("a.b.c")
            .await
            .expect_err("nobody answers");
        assert!(matches!(error, AuthCallError::Unavailable(_)), "{error:?}");
        assert!(
            started.elapsed() < Duration::from_millis(900),
            "{:?}",
            started.elapsed()
        );
        for count in &accepted {
            assert_eq!(count.load(Ordering::SeqCst), 1, "every replica was tried");
        }
        for replica in client.endpoints.current().iter() {
            assert!(client.endpoints.is_cooling(replica), "both marked down");
        }
    }

    #[tokio::test]
    async fn validate_token_is_not_sent_twice_once_it_may_have_reached_auth() {
        let (urls, accepted) = silent_peers(2).await;
        let client = client(&urls, 600);
        let error = client.validate_token("token").await.expect_err("no answer");
        assert!(matches!(error, AuthCallError::Unavailable(_)), "{error:?}");
        let tried: usize = accepted.iter().map(|c| c.load(Ordering::SeqCst)).sum();
        assert_eq!(tried, 1, "the token may be consumed: no second replica");
        // The silent one is tried last from now on.
        let silent = accepted
            .iter()
            .position(|c| c.load(Ordering::SeqCst) == 1)
            .expect("one tried");
        let endpoints = &client.endpoints;
        let order = endpoints.order(&endpoints.current());
        assert_eq!(
            order.last().map(|r| r.label.trim_end_matches('/')),
            Some(urls[silent].as_str())
        );
    }

    #[tokio::test]
    async fn validate_token_moves_on_when_the_connection_is_refused() {
        let (mut urls, accepted) = silent_peers(1).await;
        urls.insert(0, refusing_urls(1).remove(0));
        let client = client(&urls, 600);
        let _ = client.validate_token("token").await;
        assert_eq!(
            accepted[0].load(Ordering::SeqCst),
            1,
            "a refused connect never sent the request: the next replica is tried"
        );
    }

    #[tokio::test]
    async fn with_every_endpoint_down_a_call_is_unavailable_within_the_deadline() {
        for urls in [refusing_urls(1), refusing_urls(2)] {
            let client = client(&urls, 500);
            let started = Instant::now();
            let error = client.verify_jwt("x").await.expect_err("all down");
            assert!(matches!(error, AuthCallError::Unavailable(_)), "{error:?}");
            let error = client.validate_token("t").await.expect_err("all down");
            assert!(matches!(error, AuthCallError::Unavailable(_)), "{error:?}");
            assert!(started.elapsed() < Duration::from_secs(3));
        }
    }

    #[tokio::test]
    async fn a_name_that_never_resolves_is_unavailable_within_the_deadline() {
        let client = client(&["dns:///wsauth-no-such-name.invalid:1".to_owned()], 300);
        let started = Instant::now();
        let error = client.verify_jwt("x").await.expect_err("no endpoint");
        assert!(
            matches!(&error, AuthCallError::Unavailable(m) if m.contains("resolved")),
            "{error:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
    }
}
