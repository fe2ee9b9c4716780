//! The gateway's only door to auth: one shared HTTP/2 channel per endpoint,
//! a deadline on every call, the api key in metadata. Proto types stop here.
//!
//! - [`settings`]: what the client is built from (`AUTH_URL` and the rest);
//! - [`target`]: one `AUTH_URL` entry and how its endpoints are made;
//! - [`endpoints`]: the set of endpoints calls choose from, and its changes;
//! - [`discovery`]: `dns:` names resolved to every replica, and followed;
//! - [`failover`]: which endpoint a call goes to, and moving on;
//! - [`tls`]: TLS to auth, its files followed as they rotate;
//! - [`error`]: what a failed call means, and its close code;
//! - [`decode`]: auth's answers as the gateway's own types.

mod decode;
mod discovery;
mod endpoints;
mod error;
mod failover;
mod settings;
mod target;
mod tls;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::{Code, Request};
use wsauth_shared::limits::MAX_CREDENTIAL_BYTES;
use wsauth_shared::proto::{
    self, admin_service_client::AdminServiceClient, auth_service_client::AuthServiceClient,
    broadcast_service_client::BroadcastServiceClient,
};
use wsauth_shared::trace_context;

pub use self::decode::HistoryPage;
use self::decode::timestamp;
pub use self::decode::{EventStream, Incoming, LiveFrom, Unreadable};
pub use self::discovery::{Resolve, SystemResolver};
use self::endpoints::Endpoints;
pub use self::error::{AuthCallError, ErrorKind};
pub use self::settings::{ClientConfigError, ClientSettings};
pub use self::tls::{ClientTlsError, ClientTlsFiles};
use crate::event::Start;
use crate::metrics::{AuthMethod, Metrics};

/// Events asked for per History call: small answers, well under the
/// decoding limit even with events at auth's default `MAX_EVENT_BYTES`.
const HISTORY_PAGE_LIMIT: u32 = 64;
/// Largest answer the gateway decodes (tonic's default is 4 MiB, less than
/// 64 events of 64 KiB plus framing). A page still too large is halved.
const MAX_DECODING_BYTES: usize = 16 * 1024 * 1024;

/// A ws token issued for a JWT. The token is a credential: Debug redacts it.
#[derive(Debug)]
pub struct Grant {
    pub token: SecretString,
    pub user_id: String,
    pub expires_at: SystemTime,
}

/// The identity behind a verified JWT.
#[derive(Debug)]
pub struct Verified {
    pub user_id: String,
    pub expires_at: SystemTime,
    /// The JWT's `jti`; None when it has none (it cannot be revoked by jti).
    pub jti: Option<String>,
}

/// A cheap-clone handle to auth.
#[derive(Clone)]
pub struct AuthClient {
    endpoints: Arc<Endpoints>,
    /// `Bearer <key>`, marked sensitive so its Debug is redacted.
    authorization: Option<MetadataValue<Ascii>>,
    timeout: Duration,
    metrics: Metrics,
}

impl AuthClient {
    /// Builds the channels for `urls` without connecting, with the default
    /// settings otherwise. Must run inside a tokio runtime.
    pub fn new(
        urls: &[String],
        api_key: Option<&SecretString>,
        timeout: Duration,
        metrics: Metrics,
    ) -> Result<Self, ClientConfigError> {
        let mut settings = ClientSettings::new(urls.to_vec(), timeout);
        settings.api_key = api_key.cloned();
        Self::from_settings(settings, metrics)
    }

    /// Builds the channels without connecting, and starts following the
    /// `dns:` names (until the last clone is dropped). Must run inside a
    /// tokio runtime.
    pub fn from_settings(
        settings: ClientSettings,
        metrics: Metrics,
    ) -> Result<Self, ClientConfigError> {
        let (security, seen) = settings.security()?;
        let authorization = settings.authorization()?;
        let (endpoints, names) = Endpoints::new(&settings.urls, settings.call_timeout, security)?;
        let endpoints = Arc::new(endpoints);
        for (target, name) in names {
            tokio::spawn(discovery::follow(
                Arc::downgrade(&endpoints),
                target,
                name,
                Arc::clone(&settings.resolver),
                settings.resolve_interval,
            ));
        }
        if let Some(seen) = seen {
            tokio::spawn(tls::follow(
                Arc::downgrade(&endpoints),
                settings.tls.clone(),
                seen,
            ));
        }
        Ok(Self {
            endpoints,
            authorization,
            timeout: settings.call_timeout,
            metrics,
        })
    }

    fn request<T>(&self, message: T, with_deadline: bool) -> Request<T> {
        let mut request = Request::new(message);
        if with_deadline {
            request.set_timeout(self.timeout);
        }
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        trace_context::inject(request.metadata_mut());
        request
    }

    /// Trades a JWT for a ws token.
    pub async fn issue_ws_token(
        &self,
        jwt: impl Into<SecretString>,
    ) -> Result<Grant, AuthCallError> {
        let jwt = credential(jwt.into())?;
        let response = self
            .call(AuthMethod::IssueWsToken, |channel| {
                let request = self.request(
                    proto::IssueWsTokenRequest {
                        jwt: jwt.expose_secret().to_owned(),
                    },
                    true,
                );
                async move {
                    AuthServiceClient::new(channel)
                        .issue_ws_token(request)
                        .await
                }
            })
            .await?;
        Ok(Grant {
            token: SecretString::from(response.token),
            user_id: response.user_id,
            expires_at: timestamp(response.expires_at)?,
        })
    }

    /// Checks (and, unless auth allows reuse, consumes) a ws token; its user.
    pub async fn validate_token(
        &self,
        token: impl Into<SecretString>,
    ) -> Result<String, AuthCallError> {
        let token = credential(token.into())?;
        let response = self
            .call(AuthMethod::ValidateToken, |channel| {
                let request = self.request(
                    proto::ValidateTokenRequest {
                        token: token.expose_secret().to_owned(),
                    },
                    true,
                );
                async move {
                    AuthServiceClient::new(channel)
                        .validate_token(request)
                        .await
                }
            })
            .await?;
        if response.user_id.is_empty() {
            return Err(AuthCallError::Malformed("empty user_id"));
        }
        Ok(response.user_id)
    }

    /// Sends a presence report (AdminService/ReportGateway); whether auth
    /// asks for a full one next.
    pub async fn report_gateway(
        &self,
        report: proto::ReportGatewayRequest,
    ) -> Result<bool, AuthCallError> {
        let response = self
            .call(AuthMethod::ReportGateway, |channel| {
                let request = self.request(report.clone(), true);
                async move {
                    AdminServiceClient::new(channel)
                        .report_gateway(request)
                        .await
                }
            })
            .await?;
        Ok(response.resync)
    }

    /// Verifies a JWT; who it is for and until when. A JWT over the
    /// contract's 8 KiB is refused here, as auth would refuse it.
    pub async fn verify_jwt(
        &self,
        jwt: impl Into<SecretString>,
    ) -> Result<Verified, AuthCallError> {
        let jwt = credential(jwt.into())?;
        let response = self
            .call(AuthMethod::VerifyJwt, |channel| {
                let request = self.request(
                    proto::VerifyJwtRequest {
                        jwt: jwt.expose_secret().to_owned(),
                    },
                    true,
                );
                async move { AuthServiceClient::new(channel).verify_jwt(request).await }
            })
            .await?;
        if response.user_id.is_empty() {
            return Err(AuthCallError::Malformed("empty user_id"));
        }
        Ok(Verified {
            user_id: response.user_id,
            expires_at: timestamp(response.expires_at)?,
            jti: (!response.jti.is_empty()).then_some(response.jti),
        })
    }

    /// One History call: at most `limit` retained events from `start` for
    /// everyone or `user_id`, oldest first. An answer over the decoding limit
    /// is asked for again in smaller pages.
    async fn history_page(
        &self,
        start: Start<'_>,
        user_id: &str,
        limit: u32,
    ) -> Result<HistoryPage, AuthCallError> {
        let mut limit = limit.max(1);
        loop {
            let answer = self
                .call(AuthMethod::History, |channel| {
                    let request = self.request(
                        proto::HistoryRequest {
                            after_id: match start {
                                Start::After(after_id) => after_id.to_string(),
                                Start::Oldest => String::new(),
                            },
                            user_id: Some(user_id.to_owned()),
                            limit: Some(limit),
                            from_oldest: start == Start::Oldest,
                            resumable: true,
                        },
                        true,
                    );
                    async move {
                        BroadcastServiceClient::new(channel)
                            .max_decoding_message_size(MAX_DECODING_BYTES)
                            .history(request)
                            .await
                    }
                })
                .await;
            match answer {
                Err(AuthCallError::TooLarge) if limit > 1 => {
                    // Called from a session's replay: the line names the connection.
                    crate::session::conn_log::conn_warn!(
                        limit,
                        "history page over the size limit; asking for less"
                    );
                    limit /= 2;
                }
                answer => return HistoryPage::decode(answer?),
            }
        }
    }

    /// One page of the retained events from `start` for everyone or
    /// `user_id`, oldest first: at most 64, so a caller paging through
    /// History holds one small page at a time. Unreadable events are left
    /// out but still move [`HistoryPage::last_id`].
    pub async fn history(
        &self,
        start: Start<'_>,
        user_id: &str,
    ) -> Result<HistoryPage, AuthCallError> {
        self.history_page(start, user_id, HISTORY_PAGE_LIMIT).await
    }

    /// Opens the Subscribe stream from `start` (`None`: live events only);
    /// the deadline covers opening it only.
    pub async fn subscribe(
        &self,
        gateway_id: &str,
        start: Option<Start<'_>>,
    ) -> Result<EventStream, AuthCallError> {
        let inner = self
            .call(AuthMethod::Subscribe, |channel| {
                let request = self.request(
                    proto::SubscribeRequest {
                        gateway_id: gateway_id.to_owned(),
                        after_id: match start {
                            Some(Start::After(after_id)) => Some(after_id.to_string()),
                            _ => None,
                        },
                        from_oldest: start == Some(Start::Oldest),
                    },
                    false,
                );
                async move {
                    let response = BroadcastServiceClient::new(channel)
                        .max_decoding_message_size(MAX_DECODING_BYTES)
                        .subscribe(request)
                        .await?;
                    let live_from = LiveFrom::read(response.metadata());
                    Ok(tonic::Response::new((response.into_inner(), live_from)))
                }
            })
            .await?;
        let (inner, live_from) = inner;
        Ok(EventStream { inner, live_from })
    }
}

/// A credential to pass on to auth: refused here when auth would refuse it
/// anyway (the contract's 8 KiB), saving the round trip.
fn credential(secret: SecretString) -> Result<SecretString, AuthCallError> {
    let len = secret.expose_secret().len();
    if len == 0 || len > MAX_CREDENTIAL_BYTES {
        return Err(AuthCallError::Rejected(Code::InvalidArgument));
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::close::CloseCode;

    #[tokio::test]
    async fn oversized_credentials_are_refused_without_calling_auth() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let client = AuthClient::new(&[url], None, Duration::from_millis(300), Metrics::default())
            .expect("valid url");
        let jwt = "a".repeat(MAX_CREDENTIAL_BYTES + 1);
        let error = client.verify_jwt(jwt.as_str()).await.expect_err("too long");
        assert!(matches!(
            error,
            AuthCallError::Rejected(Code::InvalidArgument)
        ));
        assert_eq!(error.close_code(), CloseCode::Unauthorized);
        let error = client
            .validate_token(jwt.as_str())
            .await
            .expect_err("too long");
        assert!(matches!(error, AuthCallError::Rejected(_)));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), listener.accept())
                .await
                .is_err(),
            "auth must not be contacted"
        );
    }
}
