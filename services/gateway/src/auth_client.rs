//! The gateway's only door to auth: one shared HTTP/2 channel per endpoint,
//! a deadline on every call, the api key in metadata. Proto types stop here.

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use secrecy::{ExposeSecret, SecretString};
use tokio::time::error::Elapsed;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status};
use wsauth_shared::proto::{
    self, auth_service_client::AuthServiceClient, broadcast_service_client::BroadcastServiceClient,
};

use crate::close::CloseCode;
use crate::message::{EventId, MAX_CREDENTIAL_BYTES};
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
    /// Only auth's own OUT_OF_RANGE: the transport's size limit is `Failed`.
    #[error("event id out of range")]
    OutOfRange,
    /// Anything else auth answered; the gateway treats it like an outage.
    #[error("auth call failed ({0:?})")]
    Failed(Code),
    /// Auth answered with something the gateway cannot read.
    #[error("malformed answer from auth: {0}")]
    Malformed(&'static str),
    /// The answer was over the client's decoding limit (the transport's
    /// OUT_OF_RANGE, not auth's): ask for less.
    #[error("answer from auth over the size limit")]
    TooLarge,
}

/// What the gateway does about an [`AuthCallError`]: the one classification
/// every caller (HTTP handlers, sessions, the subscriber) goes by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The credential is bad: 401 / close 4401.
    Rejected,
    /// The resume point is gone: continue live, log the possible gap.
    OutOfRange,
    /// Auth did not give a usable answer: 503 / close 1011, retry later.
    Unavailable,
}

impl AuthCallError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Rejected(_) => ErrorKind::Rejected,
            Self::OutOfRange => ErrorKind::OutOfRange,
            Self::Unavailable(_) | Self::Failed(_) | Self::Malformed(_) | Self::TooLarge => {
                ErrorKind::Unavailable
            }
        }
    }

    /// The close code for a socket whose JWT check failed this way, for phase
    /// 2 and refreshes alike. OUT_OF_RANGE never answers a JWT check, so it
    /// counts as auth misbehaving.
    pub fn close_code(&self) -> CloseCode {
        match self.kind() {
            ErrorKind::Rejected => CloseCode::Unauthorized,
            ErrorKind::OutOfRange | ErrorKind::Unavailable => CloseCode::AuthUnavailable,
        }
    }
}

/// tonic reports a message over its decoding limit as OUT_OF_RANGE too; its
/// text is fixed (tonic's codec/decode.rs), and never one auth writes.
fn is_transport_size_limit(status: &Status) -> bool {
    status.message().contains("message length too large")
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
            Code::OutOfRange if is_transport_size_limit(&status) => Self::TooLarge,
            Code::OutOfRange => Self::OutOfRange,
            code => Self::Failed(code),
        }
    }
}

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

/// An event the gateway cannot act on. Skipped, never fatal: one bad event
/// must not stop delivery of every later one.
#[derive(Debug)]
pub struct Unreadable {
    /// Its id when that parses, so the resume point can still move past it.
    pub id: Option<EventId>,
    pub what: &'static str,
}

/// Reads one event of auth's stream.
pub fn decode_event(event: proto::Event) -> Result<Event, Unreadable> {
    let id = EventId::from_str(&event.id).map_err(|_| Unreadable {
        id: None,
        what: "event id",
    })?;
    let action = match event.kind() {
        proto::EventKind::Broadcast => EventAction::Broadcast { data: event.data },
        proto::EventKind::Direct if !event.user_id.is_empty() => EventAction::Direct {
            user_id: event.user_id,
            data: event.data,
        },
        proto::EventKind::Disconnect if !event.user_id.is_empty() => EventAction::Disconnect {
            user_id: event.user_id,
        },
        proto::EventKind::Direct | proto::EventKind::Disconnect => {
            return Err(Unreadable {
                id: Some(id),
                what: "event without user_id",
            });
        }
        proto::EventKind::Unspecified => {
            return Err(Unreadable {
                id: Some(id),
                what: "event kind",
            });
        }
    };
    Ok(Event {
        id,
        id_text: event.id,
        action,
    })
}

impl TryFrom<proto::Event> for Event {
    type Error = AuthCallError;

    fn try_from(event: proto::Event) -> Result<Self, Self::Error> {
        decode_event(event).map_err(|bad| AuthCallError::Malformed(bad.what))
    }
}

/// One item of the Subscribe stream.
#[derive(Debug)]
pub enum Incoming {
    Event(Event),
    Unreadable(Unreadable),
}

/// A live Subscribe stream.
pub struct EventStream {
    inner: tonic::Streaming<proto::Event>,
}

impl EventStream {
    /// The next item; `None` when auth ended the stream.
    pub async fn next(&mut self) -> Option<Result<Incoming, AuthCallError>> {
        match self.inner.message().await {
            Ok(Some(event)) => Some(Ok(match decode_event(event) {
                Ok(event) => Incoming::Event(event),
                Err(bad) => Incoming::Unreadable(bad),
            })),
            Ok(None) => None,
            Err(status) => Some(Err(status.into())),
        }
    }
}

/// One page of History.
#[derive(Debug, Default)]
pub struct HistoryPage {
    /// The readable events, oldest first.
    pub events: Vec<Event>,
    /// The id of the page's last event, readable or not: where the next page starts.
    pub last_id: Option<EventId>,
    /// Fewer events than asked for: nothing retained comes after this page.
    pub complete: bool,
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
/// The least time one attempt gets, so a short remaining budget is not
/// split into attempts too short to ever succeed.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);
/// Events asked for per History call: small answers, well under the
/// decoding limit even with events at auth's default `MAX_EVENT_BYTES`.
pub const HISTORY_PAGE_LIMIT: u32 = 64;
/// Events [`AuthClient::history`] gathers (over several small calls) before
/// returning: auth's default page, which callers of `history` expect.
const HISTORY_BATCH: usize = 1000;
/// Largest answer the gateway decodes (tonic's default is 4 MiB, less than
/// 64 events of 64 KiB plus framing). A page still too large is halved.
pub const MAX_DECODING_BYTES: usize = 16 * 1024 * 1024;

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

/// The time one attempt may take: its fair share of what is left of the
/// call's deadline, so an endpoint that accepts and never answers leaves
/// time for the others.
fn attempt_budget(remaining: Duration, endpoints_left: usize) -> Duration {
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
        let urls: Vec<&str> = urls
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .collect();
        // A connect that takes longer than its share would starve the others.
        let connect_timeout = attempt_budget(timeout, urls.len());
        let mut endpoints = Vec::with_capacity(urls.len());
        for url in urls {
            let endpoint = Endpoint::from_str(url).map_err(|source| ClientConfigError::BadUrl {
                url: url.to_owned(),
                source,
            })?;
            endpoints.push(
                endpoint
                    .connect_timeout(connect_timeout)
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

    /// Runs one call under the deadline, each endpoint in turn getting its
    /// share of what is left; an endpoint that fails at the transport or does
    /// not answer in its share is marked down and the next one is tried
    /// (unless the call may not be sent twice). Records the latency.
    async fn call<T, F, Fut>(&self, method: AuthMethod, mut attempt: F) -> Result<T, AuthCallError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        let started = Instant::now();
        let endpoints = &self.endpoints;
        let order = endpoints.order();
        let mut last = None;
        let mut result = None;
        for (tried, &index) in order.iter().enumerate() {
            let remaining = self.timeout.saturating_sub(started.elapsed());
            if remaining.is_zero() {
                break;
            }
            let budget = attempt_budget(remaining, order.len() - tried);
            let outcome =
                tokio::time::timeout(budget, attempt(endpoints.channels[index].clone())).await;
            match judge(method, outcome) {
                Attempt::Answer(answer) => {
                    if answer
                        .as_ref()
                        .is_err_and(|s| s.code() == Code::Unavailable)
                    {
                        endpoints.mark_down(index);
                    }
                    result = Some(answer);
                    break;
                }
                Attempt::Next(status) => {
                    tracing::debug!(
                        endpoint = index,
                        message = status.message(),
                        "auth endpoint failed; trying the next"
                    );
                    endpoints.mark_down(index);
                    last = Some(status);
                }
            }
        }
        self.metrics.auth_call(method, started.elapsed());
        match result {
            Some(Ok(response)) => Ok(response.into_inner()),
            Some(Err(status)) => Err(status.into()),
            None => Err(last
                .map(AuthCallError::from)
                .unwrap_or_else(|| AuthCallError::Unavailable("deadline exceeded".into()))),
        }
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
        })
    }

    /// One History call: at most `limit` retained events after `after_id` for
    /// everyone or `user_id`, oldest first. Unreadable events are left out
    /// (logged) but still move [`HistoryPage::last_id`]. An answer over the
    /// decoding limit is asked for again in smaller pages.
    pub async fn history_page(
        &self,
        after_id: &EventId,
        user_id: &str,
        limit: u32,
    ) -> Result<HistoryPage, AuthCallError> {
        let mut limit = limit.max(1);
        let response = loop {
            let answer = self
                .call(AuthMethod::History, |channel| {
                    let request = self.request(
                        proto::HistoryRequest {
                            after_id: after_id.to_string(),
                            user_id: Some(user_id.to_owned()),
                            limit: Some(limit),
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
                    tracing::warn!(limit, "history page over the size limit; asking for less");
                    limit /= 2;
                }
                answer => break answer?,
            }
        };
        let complete = response.events.len() < limit as usize;
        let mut page = HistoryPage {
            events: Vec::with_capacity(response.events.len()),
            last_id: None,
            complete,
        };
        for event in response.events {
            match decode_event(event) {
                Ok(event) => {
                    page.last_id = Some(event.id.clone());
                    page.events.push(event);
                }
                Err(bad) => {
                    tracing::error!(what = bad.what, id = ?bad.id.as_ref().map(ToString::to_string), "skipping unreadable event in history");
                    if bad.id.is_some() {
                        page.last_id = bad.id;
                    }
                }
            }
        }
        Ok(page)
    }

    /// The retained events after `after_id` for everyone or `user_id`, oldest
    /// first: up to 1000 (auth's default page), fetched in small pages. Prefer
    /// [`AuthClient::history_page`], which bounds what one call holds.
    pub async fn history(
        &self,
        after_id: &EventId,
        user_id: &str,
    ) -> Result<Vec<Event>, AuthCallError> {
        let mut events = Vec::new();
        let mut after = after_id.clone();
        loop {
            let page = self
                .history_page(&after, user_id, HISTORY_PAGE_LIMIT)
                .await?;
            events.extend(page.events);
            match page.last_id {
                Some(last) if !page.complete && events.len() < HISTORY_BATCH => after = last,
                _ => return Ok(events),
            }
        }
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
                        .max_decoding_message_size(MAX_DECODING_BYTES)
                        .subscribe(request)
                        .await
                }
            })
            .await?;
        Ok(EventStream { inner })
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

    #[test]
    fn the_transports_size_limit_is_not_a_retention_miss() {
        // tonic's own text for an answer over max_decoding_message_size.
        let size = Status::out_of_range(
            "Error, decoded message length too large: found 5000000 bytes, the limit is: 4194304 bytes",
        );
        let error = AuthCallError::from(size);
        assert!(matches!(error, AuthCallError::TooLarge), "{error:?}");
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        // auth's own retention and epoch answers.
        for message in [
            "event id ab:1-0 is older than the retained events; resubscribe without after_id",
            "event id ab:1-0 is from another stream epoch (current epoch cd): events may have been lost",
        ] {
            let error = AuthCallError::from(Status::out_of_range(message));
            assert!(matches!(error, AuthCallError::OutOfRange), "{message}");
            assert_eq!(error.kind(), ErrorKind::OutOfRange);
        }
    }

    #[test]
    fn one_classification_gives_the_close_code() {
        use CloseCode::*;
        let cases = [
            (AuthCallError::Rejected(Code::Unauthenticated), Unauthorized),
            (AuthCallError::Unavailable("down".into()), AuthUnavailable),
            (AuthCallError::Failed(Code::Internal), AuthUnavailable),
            (AuthCallError::Malformed("x"), AuthUnavailable),
            (AuthCallError::TooLarge, AuthUnavailable),
            (AuthCallError::OutOfRange, AuthUnavailable),
        ];
        for (error, code) in cases {
            assert_eq!(error.close_code(), code, "{error:?}");
        }
    }

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

    #[test]
    fn unreadable_events_keep_their_id_when_it_parses() {
        let event = |id: &str, kind: proto::EventKind, user: &str| {
            let mut event = proto::Event {
                id: id.into(),
                data: "d".into(),
                user_id: user.into(),
                ..Default::default()
            };
            event.set_kind(kind);
            event
        };
        let ok = decode_event(event("ab:1-0", proto::EventKind::Broadcast, "")).expect("readable");
        assert_eq!(ok.action, EventAction::Broadcast { data: "d".into() });
        let bad = decode_event(event("ab:2-0", proto::EventKind::Unspecified, ""))
            .expect_err("unknown kind");
        assert_eq!(bad.id.map(|id| id.to_string()).as_deref(), Some("ab:2-0"));
        let bad = decode_event(event("ab:3-0", proto::EventKind::Direct, ""))
            .expect_err("direct without user");
        assert!(bad.id.is_some());
        let bad = decode_event(event("nope", proto::EventKind::Broadcast, "")).expect_err("bad id");
        assert!(bad.id.is_none());
    }

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

    #[tokio::test]
    async fn a_replica_that_never_answers_is_left_for_the_next_within_the_deadline() {
        let (urls, accepted) = silent_peers(2).await;
        let client = AuthClient::new(&urls, None, Duration::from_millis(600), Metrics::default())
            .expect("valid urls");
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
        let now = client.endpoints.now_ms();
        for down in &client.endpoints.down_until {
            assert!(down.load(Ordering::Relaxed) > now, "both marked down");
        }
    }

    #[tokio::test]
    async fn validate_token_is_not_sent_twice_once_it_may_have_reached_auth() {
        let (urls, accepted) = silent_peers(2).await;
        let client = AuthClient::new(&urls, None, Duration::from_millis(600), Metrics::default())
            .expect("valid urls");
        let error = client.validate_token("token").await.expect_err("no answer");
        assert!(matches!(error, AuthCallError::Unavailable(_)), "{error:?}");
        let tried: usize = accepted.iter().map(|c| c.load(Ordering::SeqCst)).sum();
        assert_eq!(tried, 1, "the token may be consumed: no second replica");
        // The silent one is tried last from now on.
        let silent = accepted
            .iter()
            .position(|c| c.load(Ordering::SeqCst) == 1)
            .expect("one tried");
        assert_eq!(client.endpoints.order().last(), Some(&silent));
    }

    #[tokio::test]
    async fn validate_token_moves_on_when_the_connection_is_refused() {
        let (mut urls, accepted) = silent_peers(1).await;
        let refused = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let refused_url = format!("http://{}", refused.local_addr().expect("addr"));
        drop(refused);
        urls.insert(0, refused_url);
        let client = AuthClient::new(&urls, None, Duration::from_millis(600), Metrics::default())
            .expect("valid urls");
        let _ = client.validate_token("token").await;
        assert_eq!(
            accepted[0].load(Ordering::SeqCst),
            1,
            "a refused connect never sent the request: the next replica is tried"
        );
    }

    #[tokio::test]
    async fn bad_urls_are_refused_and_good_ones_connect_lazily() {
        let metrics = Metrics::default();
        let timeout = Duration::from_millis(100);
        assert!(matches!(
            AuthClient::new(&[], None, timeout, metrics.clone()),
            Err(ClientConfigError::NoUrl)
        ));
        assert!(matches!(
            AuthClient::new(&[" ".into()], None, timeout, metrics.clone()),
            Err(ClientConfigError::NoUrl)
        ));
        let bad = vec!["http://127.0.0.1:1".to_owned(), "not a url".to_owned()];
        match AuthClient::new(&bad, None, timeout, metrics.clone()) {
            Err(ClientConfigError::BadUrl { url, .. }) => assert_eq!(url, "not a url"),
            _ => panic!("a bad url must be refused"),
        }
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
        let error = client.validate_token("t").await.expect_err("all down");
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
        let error = client.verify_jwt("x").await.expect_err("nothing listens");
        assert!(matches!(error, AuthCallError::Unavailable(_)), "{error:?}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
