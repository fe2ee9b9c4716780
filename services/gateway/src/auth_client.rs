//! The gateway's only door to auth: one shared HTTP/2 channel per endpoint,
//! a deadline on every call, the api key in metadata. Proto types stop here.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use wsauth_shared::proto::{
    self, auth_service_client::AuthServiceClient, broadcast_service_client::BroadcastServiceClient,
};

use crate::message::EventId;
use crate::metrics::{AuthMethod, Metrics};

/// Why a call to auth did not give an answer the gateway can use.
#[derive(Debug, thiserror::Error)]
pub enum AuthCallError {
    /// Auth looked at the credential and refused it.
    #[error("auth refused the credential ({0:?})")]
    Rejected(Code),
    /// Auth could not be reached or did not answer within the deadline.
    #[error("auth unavailable ({0})")]
    Unavailable(String),
    /// The `after_id` is older than what auth retains, or of another epoch.
    #[error("event id out of range")]
    OutOfRange,
    /// Anything else auth answered; the gateway treats it like an outage.
    #[error("auth call failed ({0:?})")]
    Failed(Code),
    /// Auth answered with something the gateway cannot read.
    #[error("malformed answer from auth: {0}")]
    Malformed(&'static str),
}

impl From<Status> for AuthCallError {
    fn from(status: Status) -> Self {
        match status.code() {
            Code::Unauthenticated
            | Code::InvalidArgument
            | Code::PermissionDenied
            | Code::NotFound => Self::Rejected(status.code()),
            Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => {
                // The message of a transport error says which endpoint failed and
                // how; it never holds a credential.
                Self::Unavailable(format!("{:?}: {}", status.code(), status.message()))
            }
            Code::OutOfRange => Self::OutOfRange,
            code => Self::Failed(code),
        }
    }
}

/// A ws token issued for a JWT.
#[derive(Debug)]
pub struct Grant {
    pub token: String,
    pub user_id: String,
    pub expires_at: SystemTime,
}

/// The identity behind a verified JWT.
#[derive(Debug)]
pub struct Verified {
    pub user_id: String,
    pub expires_at: SystemTime,
}

/// What an event asks the gateway to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventAction {
    Broadcast { data: String },
    Direct { user_id: String, data: String },
    Disconnect { user_id: String },
}

/// One event of auth's stream.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: EventId,
    /// The id as auth wrote it, sent to clients unchanged.
    pub id_text: String,
    pub action: EventAction,
}

impl TryFrom<proto::Event> for Event {
    type Error = AuthCallError;

    fn try_from(event: proto::Event) -> Result<Self, Self::Error> {
        let id = EventId::from_str(&event.id).map_err(|_| AuthCallError::Malformed("event id"))?;
        let action = match event.kind() {
            proto::EventKind::Broadcast => EventAction::Broadcast { data: event.data },
            proto::EventKind::Direct => EventAction::Direct {
                user_id: event.user_id,
                data: event.data,
            },
            proto::EventKind::Disconnect => EventAction::Disconnect {
                user_id: event.user_id,
            },
            proto::EventKind::Unspecified => return Err(AuthCallError::Malformed("event kind")),
        };
        Ok(Self {
            id,
            id_text: event.id,
            action,
        })
    }
}

/// A live Subscribe stream.
pub struct EventStream {
    inner: tonic::Streaming<proto::Event>,
}

impl EventStream {
    /// The next event; `None` when auth ended the stream.
    pub async fn next(&mut self) -> Option<Result<Event, AuthCallError>> {
        match self.inner.message().await {
            Ok(Some(event)) => Some(Event::try_from(event)),
            Ok(None) => None,
            Err(status) => Some(Err(status.into())),
        }
    }
}

/// Invalid `AUTH_URL` or `AUTH_API_KEY`.
#[derive(Debug, thiserror::Error)]
pub enum ClientConfigError {
    #[error("AUTH_URL is empty")]
    NoUrl,
    #[error("invalid AUTH_URL entry {url:?}: {source}")]
    BadUrl {
        url: String,
        source: tonic::transport::Error,
    },
    #[error("AUTH_API_KEY is not valid header text")]
    BadKey,
}

/// How long an endpoint that failed at the transport level is tried last.
const ENDPOINT_COOLDOWN: Duration = Duration::from_secs(2);

/// The auth endpoints, each one lazily connected, multiplexed HTTP/2 channel.
///
/// Balanced here rather than with `Channel::balance_list`: tower's balancer
/// keeps picking an endpoint whose process died (its lazy reconnect reports
/// ready), so one dead replica of two failed every other call. Here a call
/// that fails at the transport moves on to the next endpoint within the same
/// deadline, and the failed one is tried last for a short cooldown.
struct Endpoints {
    channels: Vec<Channel>,
    next: AtomicUsize,
    /// Per endpoint: until when (ms since `epoch`) it is tried last.
    down_until: Vec<AtomicU64>,
    epoch: Instant,
}

impl Endpoints {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Endpoint indexes in the order to try: round-robin, cooling ones last.
    fn order(&self) -> Vec<usize> {
        let n = self.channels.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = self.now_ms();
        let (mut up, mut cooling): (Vec<usize>, Vec<usize>) = (0..n)
            .map(|i| (start + i) % n)
            .partition(|&i| self.down_until[i].load(Ordering::Relaxed) <= now);
        up.append(&mut cooling);
        up
    }

    fn mark_down(&self, index: usize) {
        let until = self
            .now_ms()
            .saturating_add(ENDPOINT_COOLDOWN.as_millis() as u64);
        self.down_until[index].store(until, Ordering::Relaxed);
    }
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
    /// Builds the channels without connecting. Must run inside a tokio runtime.
    pub fn new(
        urls: &[String],
        api_key: Option<&SecretString>,
        timeout: Duration,
        metrics: Metrics,
    ) -> Result<Self, ClientConfigError> {
        let mut endpoints = Vec::with_capacity(urls.len());
        for url in urls.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
            let endpoint = Endpoint::from_str(url).map_err(|source| ClientConfigError::BadUrl {
                url: url.to_owned(),
                source,
            })?;
            endpoints.push(
                endpoint
                    .connect_timeout(timeout)
                    .tcp_nodelay(true)
                    // A dead auth must break the Subscribe stream promptly.
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .keep_alive_while_idle(true),
            );
        }
        if endpoints.is_empty() {
            return Err(ClientConfigError::NoUrl);
        }
        let endpoints = Arc::new(Endpoints {
            down_until: endpoints.iter().map(|_| AtomicU64::new(0)).collect(),
            // Lazy: the gateway starts while auth is down and connects on first use.
            channels: endpoints.into_iter().map(|e| e.connect_lazy()).collect(),
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        });
        let authorization = api_key
            .map(|key| {
                let mut value: MetadataValue<Ascii> = format!("Bearer {}", key.expose_secret())
                    .parse()
                    .map_err(|_| ClientConfigError::BadKey)?;
                value.set_sensitive(true);
                Ok(value)
            })
            .transpose()?;
        Ok(Self {
            endpoints,
            authorization,
            timeout,
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
        request
    }

    /// Runs one call under the deadline, moving to the next endpoint when one
    /// fails at the transport, and records its latency.
    async fn call<T, F, Fut>(&self, method: AuthMethod, mut attempt: F) -> Result<T, AuthCallError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let endpoints = &self.endpoints;
        let failover = async {
            let mut last = None;
            for index in endpoints.order() {
                match attempt(endpoints.channels[index].clone()).await {
                    Err(status) if status.code() == Code::Unavailable => {
                        endpoints.mark_down(index);
                        last = Some(status);
                    }
                    result => return result,
                }
            }
            Err(last.unwrap_or_else(|| Status::unavailable("no auth endpoint")))
        };
        let result = tokio::time::timeout(self.timeout, failover).await;
        self.metrics.auth_call(method, started.elapsed());
        match result {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(status.into()),
            Err(_) => Err(AuthCallError::Unavailable("deadline exceeded".into())),
        }
    }

    pub async fn issue_ws_token(&self, jwt: String) -> Result<Grant, AuthCallError> {
        let response = self
            .call(AuthMethod::IssueWsToken, |channel| {
                let request = self.request(proto::IssueWsTokenRequest { jwt: jwt.clone() }, true);
                async move {
                    AuthServiceClient::new(channel)
                        .issue_ws_token(request)
                        .await
                }
            })
            .await?;
        Ok(Grant {
            token: response.token,
            user_id: response.user_id,
            expires_at: timestamp(response.expires_at)?,
        })
    }

    /// Checks (and, unless auth allows reuse, consumes) a ws token; its user.
    pub async fn validate_token(&self, token: String) -> Result<String, AuthCallError> {
        let response = self
            .call(AuthMethod::ValidateToken, |channel| {
                let request = self.request(
                    proto::ValidateTokenRequest {
                        token: token.clone(),
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

    pub async fn verify_jwt(&self, jwt: String) -> Result<Verified, AuthCallError> {
        let response = self
            .call(AuthMethod::VerifyJwt, |channel| {
                let request = self.request(proto::VerifyJwtRequest { jwt: jwt.clone() }, true);
                async move { AuthServiceClient::new(channel).verify_jwt(request).await }
            })
            .await?;
        if response.user_id.is_empty() {
            return Err(AuthCallError::Malformed("empty user_id"));
        }
        Ok(Verified {
            user_id: response.user_id,
            expires_at: timestamp(response.expires_at)?,
        })
    }

    /// The retained events after `after_id` for everyone or `user_id`, oldest first.
    pub async fn history(
        &self,
        after_id: &EventId,
        user_id: &str,
    ) -> Result<Vec<Event>, AuthCallError> {
        let response = self
            .call(AuthMethod::History, |channel| {
                let request = self.request(
                    proto::HistoryRequest {
                        after_id: after_id.to_string(),
                        user_id: Some(user_id.to_owned()),
                        limit: None,
                    },
                    true,
                );
                async move { BroadcastServiceClient::new(channel).history(request).await }
            })
            .await?;
        response.events.into_iter().map(Event::try_from).collect()
    }

    /// Opens the Subscribe stream; the deadline covers opening it only.
    pub async fn subscribe(
        &self,
        gateway_id: &str,
        after_id: Option<&EventId>,
    ) -> Result<EventStream, AuthCallError> {
        let inner = self
            .call(AuthMethod::Subscribe, |channel| {
                let request = self.request(
                    proto::SubscribeRequest {
                        gateway_id: gateway_id.to_owned(),
                        after_id: after_id.map(ToString::to_string),
                    },
                    false,
                );
                async move {
                    BroadcastServiceClient::new(channel)
                        .subscribe(request)
                        .await
                }
            })
            .await?;
        Ok(EventStream { inner })
    }
}

fn timestamp(ts: Option<prost_types::Timestamp>) -> Result<SystemTime, AuthCallError> {
    ts.and_then(|ts| SystemTime::try_from(ts).ok())
        .ok_or(AuthCallError::Malformed("expires_at"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_what_the_gateway_does() {
        let map = |code| AuthCallError::from(Status::new(code, "x"));
        assert!(matches!(
            map(Code::Unauthenticated),
            AuthCallError::Rejected(_)
        ));
        assert!(matches!(
            map(Code::InvalidArgument),
            AuthCallError::Rejected(_)
        ));
        assert!(matches!(
            map(Code::Unavailable),
            AuthCallError::Unavailable(_)
        ));
        assert!(matches!(
            map(Code::DeadlineExceeded),
            AuthCallError::Unavailable(_)
        ));
        assert!(matches!(map(Code::OutOfRange), AuthCallError::OutOfRange));
        assert!(matches!(map(Code::Internal), AuthCallError::Failed(_)));
    }

    #[tokio::test]
    async fn bad_urls_are_refused_and_good_ones_connect_lazily() {
        let metrics = Metrics::default();
        let timeout = Duration::from_millis(100);
        assert!(matches!(
            AuthClient::new(&[], None, timeout, metrics.clone()),
            Err(ClientConfigError::NoUrl)
        ));
        // Nothing listens there: building must still succeed.
        let urls = vec![
            "http://127.0.0.1:9".to_owned(),
            "http://127.0.0.1:10".to_owned(),
        ];
        assert!(AuthClient::new(&urls, None, timeout, metrics).is_ok());
    }

    #[tokio::test]
    async fn endpoints_rotate_and_a_failed_one_is_tried_last_while_cooling() {
        let urls: Vec<String> = (1..=3).map(|p| format!("http://127.0.0.1:{p}")).collect();
        let client = AuthClient::new(&urls, None, Duration::from_millis(100), Metrics::default())
            .expect("valid urls");
        let endpoints = &client.endpoints;
        assert_eq!(endpoints.order(), [0, 1, 2]);
        assert_eq!(endpoints.order(), [1, 2, 0]);
        endpoints.mark_down(2);
        assert_eq!(endpoints.order(), [0, 1, 2]);
        assert_eq!(endpoints.order(), [0, 1, 2], "2 stays last while cooling");
        endpoints.down_until[2].store(0, Ordering::Relaxed);
        assert_eq!(endpoints.order(), [1, 2, 0]);
    }

    #[tokio::test]
    async fn with_every_endpoint_down_a_call_is_unavailable_within_the_deadline() {
        let dead: Vec<String> = (0..2)
            .map(|_| {
                let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
                format!("http://{}", listener.local_addr().expect("addr"))
            })
            .collect();
        let client = AuthClient::new(&dead, None, Duration::from_millis(500), Metrics::default())
            .expect("valid urls");
        let started = Instant::now();
        let error = client
            .validate_token("t".into())
            .await
            .expect_err("all down");
        assert!(matches!(error, AuthCallError::Unavailable(_)), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[tokio::test]
    async fn an_unreachable_auth_is_unavailable_within_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let client = AuthClient::new(
            &[format!("http://127.0.0.1:{port}")],
            None,
            Duration::from_millis(500),
            Metrics::default(),
        )
        .expect("valid url");
        let started = Instant::now();
        let error = client
            .verify_jwt("x".into())
            .await
            .expect_err("nothing listens");
        assert!(matches!(error, AuthCallError::Unavailable(_)), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
