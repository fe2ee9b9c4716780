//! The connection's JWT after `auth_ok`: a later jwt frame refreshes it, and
//! its `exp` closes the connection unless a refresh was verified in time.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use secrecy::SecretString;
use tokio::time::Instant;

use super::conn_log::{conn_debug, conn_info, conn_warn};
use crate::auth_client::{AuthCallError, AuthClient, ErrorKind, Verified};
use crate::close::CloseCode;

/// When the JWT expired while a refresh could not be checked, how long the
/// retried check may take before the connection closes anyway.
pub(super) const EXPIRY_RECHECK_GRACE: Duration = Duration::from_secs(30);

/// A refresh JWT being verified; yields the token back for a retry.
type Check = Pin<Box<dyn Future<Output = (SecretString, Result<Verified, AuthCallError>)> + Send>>;

/// Where the connection stands on replacing its JWT.
pub(super) enum Refresh {
    /// Nothing pending: the current JWT holds until its exp.
    Idle,
    /// A refresh JWT auth could not check (unavailable): retried at exp.
    Unchecked(SecretString),
    /// A refresh JWT being verified. `past_exp`: the current JWT expired
    /// meanwhile, and the verdict decides whether the connection lives.
    Verifying { check: Check, past_exp: bool },
}

fn verify(auth: &AuthClient, token: SecretString) -> Check {
    let auth = auth.clone();
    Box::pin(async move {
        let verified = auth.verify_jwt(token.clone()).await;
        (token, verified)
    })
}

impl Refresh {
    /// A jwt frame arrived: verify it. A newer refresh replaces one in flight.
    pub(super) fn start(&mut self, auth: &AuthClient, token: SecretString) {
        let past_exp = matches!(self, Self::Verifying { past_exp: true, .. });
        *self = Self::Verifying {
            check: verify(auth, token),
            past_exp,
        };
    }

    /// The current JWT's exp passed. `Ok`: a verdict is awaited, for at most
    /// [`EXPIRY_RECHECK_GRACE`] (when this is called again).
    pub(super) fn expired(&mut self, auth: &AuthClient) -> Result<(), CloseCode> {
        match std::mem::replace(self, Self::Idle) {
            Self::Idle => {
                conn_info!("jwt expired without a refresh");
                Err(CloseCode::Unauthorized)
            }
            Self::Verifying { past_exp: true, .. } => {
                conn_warn!("jwt expired and its refresh was not verified in time");
                Err(CloseCode::AuthUnavailable)
            }
            Self::Verifying { check, .. } => {
                *self = Self::Verifying {
                    check,
                    past_exp: true,
                };
                Ok(())
            }
            Self::Unchecked(token) => {
                *self = Self::Verifying {
                    check: verify(auth, token),
                    past_exp: true,
                };
                Ok(())
            }
        }
    }

    /// The verdict on the refresh in flight (pending while there is none):
    /// the JWT verified for `user` (its exp and jti now hold), `None` when it could not be
    /// checked before the current one expires (retried at exp), or the code
    /// to close with.
    pub(super) fn poll_verdict(
        &mut self,
        cx: &mut Context<'_>,
        user: &str,
    ) -> Poll<Result<Option<Verified>, CloseCode>> {
        let Self::Verifying { check, past_exp } = self else {
            return Poll::Pending;
        };
        let past_exp = *past_exp;
        let (token, verified) = std::task::ready!(check.as_mut().poll(cx));
        *self = Self::Idle;
        Poll::Ready(match verified {
            Ok(fresh) if fresh.user_id == user => {
                conn_debug!("jwt refreshed");
                Ok(Some(fresh))
            }
            Ok(_) => {
                conn_info!("refresh jwt is for another user");
                Err(CloseCode::Forbidden)
            }
            // The current JWT still holds until its exp; retried then.
            Err(error) if error.kind() != ErrorKind::Rejected && !past_exp => {
                conn_warn!(%error, "cannot verify refresh jwt yet");
                *self = Self::Unchecked(token);
                Ok(None)
            }
            Err(error) => {
                let code = error.close_code();
                if code == CloseCode::Unauthorized {
                    conn_info!(%error, "refresh jwt refused");
                } else {
                    conn_warn!(%error, "jwt expired and its refresh cannot be verified");
                }
                Err(code)
            }
        })
    }
}

/// Farther than any connection lives; keeps a JWT whose `exp` is centuries
/// away from overflowing the clock.
const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// When a JWT expiring at `expires_at` stops being good, on tokio's clock.
pub(super) fn expiry_instant(expires_at: SystemTime) -> Instant {
    let left = expires_at
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO);
    Instant::now() + left.min(FAR_FUTURE)
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;

    use futures::FutureExt as _;

    use super::*;
    use crate::metrics::Metrics;
    use wsauth_shared::limits::MAX_CREDENTIAL_BYTES;

    /// A client of an auth that refuses every connection: every check is
    /// "unavailable", quickly.
    fn auth_down() -> AuthClient {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        AuthClient::new(&[url], None, Duration::from_secs(2), Metrics::default())
            .expect("valid url")
    }

    async fn verdict(refresh: &mut Refresh) -> Result<Option<SystemTime>, CloseCode> {
        poll_fn(|cx| refresh.poll_verdict(cx, "alice"))
            .await
            .map(|fresh| fresh.map(|fresh| fresh.expires_at))
    }

    #[tokio::test]
    async fn without_a_refresh_there_is_no_verdict_and_expiry_closes_4401() {
        let mut refresh = Refresh::Idle;
        assert!(
            poll_fn(|cx| refresh.poll_verdict(cx, "alice"))
                .now_or_never()
                .is_none()
        );
        assert_eq!(refresh.expired(&auth_down()), Err(CloseCode::Unauthorized));
    }

    #[tokio::test]
    async fn a_refused_refresh_closes_4401() {
        let mut refresh = Refresh::Idle;
        let oversized = "a".repeat(MAX_CREDENTIAL_BYTES + 1);
        refresh.start(&auth_down(), SecretString::from(oversized));
        assert_eq!(verdict(&mut refresh).await, Err(CloseCode::Unauthorized));
    }

    #[tokio::test]
    async fn an_unverifiable_refresh_is_retried_at_exp_then_closes_1011() {
        let auth = auth_down();
        let mut refresh = Refresh::Idle;
        refresh.start(&auth, SecretString::from("a.b.c"));
        assert_eq!(verdict(&mut refresh).await, Ok(None), "kept for exp");
        assert!(matches!(refresh, Refresh::Unchecked(_)));
        assert_eq!(refresh.expired(&auth), Ok(()), "retried at exp");
        assert_eq!(verdict(&mut refresh).await, Err(CloseCode::AuthUnavailable));
    }

    #[tokio::test]
    async fn a_verdict_still_missing_when_the_grace_ends_closes_1011() {
        let auth = auth_down();
        let mut refresh = Refresh::Idle;
        refresh.start(&auth, SecretString::from("a.b.c"));
        assert_eq!(refresh.expired(&auth), Ok(()), "exp: wait for the verdict");
        // A newer refresh keeps the connection past its exp.
        refresh.start(&auth, SecretString::from("d.e.f"));
        assert!(matches!(refresh, Refresh::Verifying { past_exp: true, .. }));
        assert_eq!(refresh.expired(&auth), Err(CloseCode::AuthUnavailable));
    }
}
