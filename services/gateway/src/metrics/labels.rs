//! The metrics' label values (typed, so a label can only take the values
//! the enums list) and the label sets built from them.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};

use crate::close::CloseCode;

/// Why the gateway refused an HTTP request (the `reason` label); every
/// refusal's status comes from [`crate::error::HttpError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Origin not allowed (403).
    ForbiddenOrigin,
    /// Missing, malformed or refused credential (401).
    Unauthorized,
    /// Auth unreachable (503).
    AuthUnavailable,
    /// The gateway is shutting down (503).
    ShuttingDown,
    /// Not a valid WebSocket upgrade request (400).
    BadRequest,
    /// A WebSocket version other than 13, or no upgrade possible (426).
    UpgradeRequired,
    /// No such route (404).
    NotFound,
    /// The route exists for another method (405).
    MethodNotAllowed,
    /// `MAX_CONNECTIONS` sockets open (503).
    GatewayFull,
    /// `MAX_PENDING_AUTH` sockets waiting for their first frame (503).
    PendingAuthFull,
    /// Over `PER_IP_RATE` (429).
    RateLimited,
}

impl Refusal {
    /// Every refusal, in declaration order (`refusal as usize` indexes it).
    pub const ALL: [Refusal; 11] = [
        Self::ForbiddenOrigin,
        Self::Unauthorized,
        Self::AuthUnavailable,
        Self::ShuttingDown,
        Self::BadRequest,
        Self::UpgradeRequired,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::GatewayFull,
        Self::PendingAuthFull,
        Self::RateLimited,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ForbiddenOrigin => "forbidden_origin",
            Self::Unauthorized => "unauthorized",
            Self::AuthUnavailable => "auth_unavailable",
            Self::ShuttingDown => "shutting_down",
            Self::BadRequest => "bad_request",
            Self::UpgradeRequired => "upgrade_required",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::GatewayFull => "gateway_full",
            Self::PendingAuthFull => "pending_auth_full",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// Which route refused (the `route` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Route {
    Ws,
    Token,
    Other,
}

impl Route {
    pub const ALL: [Route; 3] = [Self::Ws, Self::Token, Self::Other];

    /// The route a request path belongs to.
    pub fn of(path: &str) -> Self {
        match path {
            "/ws" => Self::Ws,
            "/token/ws" => Self::Token,
            _ => Self::Other,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ws => "/ws",
            Self::Token => "/token/ws",
            Self::Other => "other",
        }
    }
}

/// How a WebSocket handshake ended (the `outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Handshake {
    /// Phase 2 succeeded: `auth_ok` sent.
    Ok,
    /// Phase 2 failed; the close code says how.
    Phase2Failed,
    /// Refused before the 101.
    Refused(Refusal),
}

/// Close reasons (the `code` label): the contract's codes plus what the peer
/// or the network did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Closed {
    /// The gateway closed with this code.
    Code(CloseCode),
    /// The client closed (or vanished after closing).
    Client,
    /// No pong or frame for two ping intervals.
    Dead,
    /// A socket error ended the connection.
    Error,
}

/// The auth RPCs the gateway calls (the `method` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AuthMethod {
    IssueWsToken,
    ValidateToken,
    VerifyJwt,
    History,
    Subscribe,
    ReportGateway,
}

impl AuthMethod {
    /// Every method, in declaration order (`method as usize` indexes it).
    pub const ALL: [AuthMethod; 6] = [
        Self::IssueWsToken,
        Self::ValidateToken,
        Self::VerifyJwt,
        Self::History,
        Self::Subscribe,
        Self::ReportGateway,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::IssueWsToken => "IssueWsToken",
            Self::ValidateToken => "ValidateToken",
            Self::VerifyJwt => "VerifyJwt",
            Self::History => "History",
            Self::Subscribe => "Subscribe",
            Self::ReportGateway => "ReportGateway",
        }
    }
}

// === label encoding ===

impl EncodeLabelValue for Refusal {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Route {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

impl EncodeLabelValue for Handshake {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(match self {
            Self::Ok => "ok",
            Self::Phase2Failed => "phase2_failed",
            Self::Refused(refusal) => refusal.as_str(),
        })
    }
}

impl EncodeLabelValue for Closed {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        match self {
            Self::Code(code) => write!(encoder, "{}", code.code()),
            Self::Client => encoder.write_str("client"),
            Self::Dead => encoder.write_str("dead"),
            Self::Error => encoder.write_str("error"),
        }
    }
}

impl EncodeLabelValue for AuthMethod {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> std::fmt::Result {
        encoder.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct HandshakeLabels {
    pub(super) outcome: Handshake,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct RefusalLabels {
    pub(super) route: Route,
    pub(super) reason: Refusal,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct CloseLabels {
    pub(super) code: Closed,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(super) struct MethodLabels {
    pub(super) method: AuthMethod,
}
