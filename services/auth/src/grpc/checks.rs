//! The input checks of every gRPC request, one function per request type,
//! run by the handlers after the caller's role and before the domain: empty
//! fields and fields over their limit are INVALID_ARGUMENT (the contract's
//! "Limits"). `pub` so that the fuzz targets (`fuzz/fuzz_targets/grpc_requests.rs`,
//! a crate of their own) run these very functions on arbitrary requests.

use wsauth_shared::limits::{MAX_CREDENTIAL_BYTES, MAX_ID_BYTES};
use wsauth_shared::proto::{
    ConnectionEntry, HistoryRequest, IssueWsTokenRequest, PresenceRequest, PublishRequest,
    ReportGatewayRequest, RevokeJwtRequest, RevokeUserRequest, SubscribeRequest,
    ValidateTokenRequest, VerifyJwtRequest,
};

use super::millis;
use crate::error::AuthError;
use crate::event::{EventId, EventKind};
use crate::events::{HISTORY_MAX, Start};
use crate::presence::{ConnEntry, GatewayReport};

/// INVALID_ARGUMENT when `value` is empty or longer than `max` bytes.
pub(crate) fn check(
    value: &str,
    max: usize,
    empty: &'static str,
    too_long: &'static str,
) -> Result<(), AuthError> {
    if value.is_empty() {
        Err(AuthError::InvalidArgument(empty))
    } else if value.len() > max {
        Err(AuthError::InvalidArgument(too_long))
    } else {
        Ok(())
    }
}

/// A `user_id` argument: present and at most 256 bytes.
pub(crate) fn check_user_id(user_id: &str) -> Result<(), AuthError> {
    check(
        user_id,
        MAX_ID_BYTES,
        "user_id is empty",
        "user_id is longer than 256 bytes",
    )
}

fn check_jwt(jwt: &str) -> Result<(), AuthError> {
    check(
        jwt,
        MAX_CREDENTIAL_BYTES,
        "jwt is empty",
        "jwt is longer than 8 KiB",
    )
}

fn check_gateway_id(id: &str) -> Result<(), AuthError> {
    check(
        id,
        MAX_ID_BYTES,
        "gateway_id is empty",
        "gateway_id is longer than 256 bytes",
    )
}

fn parse_event_id(id: &str) -> Result<EventId, AuthError> {
    check(
        id,
        MAX_ID_BYTES,
        "after_id is empty",
        "after_id is longer than 256 bytes",
    )?;
    id.parse()
        .map_err(|_| AuthError::InvalidArgument("after_id is not an event id"))
}

/// IssueWsToken: the JWT, present and at most 8 KiB.
pub fn issue_ws_token(request: &IssueWsTokenRequest) -> Result<(), AuthError> {
    check_jwt(&request.jwt)
}

/// ValidateToken: the ws token, present and at most 8 KiB.
pub fn validate_token(request: &ValidateTokenRequest) -> Result<(), AuthError> {
    check(
        &request.token,
        MAX_CREDENTIAL_BYTES,
        "token is empty",
        "token is longer than 8 KiB",
    )
}

/// VerifyJwt: the JWT, present and at most 8 KiB.
pub fn verify_jwt(request: &VerifyJwtRequest) -> Result<(), AuthError> {
    check_jwt(&request.jwt)
}

/// RevokeJwt: the jti, present and at most 256 bytes; its `expires_at` in Unix ms.
pub fn revoke_jwt(request: &RevokeJwtRequest) -> Result<Option<u64>, AuthError> {
    check(
        &request.jti,
        MAX_ID_BYTES,
        "jti is empty",
        "jti is longer than 256 bytes",
    )?;
    Ok(request.expires_at.as_ref().map(millis))
}

/// RevokeUser: the user id.
pub fn revoke_user(request: &RevokeUserRequest) -> Result<(), AuthError> {
    check_user_id(&request.user_id)
}

/// Publish: data present and at most `max_event_bytes`; with a user id, a
/// direct event.
pub fn publish(request: &PublishRequest, max_event_bytes: usize) -> Result<EventKind, AuthError> {
    if request.data.is_empty() {
        return Err(AuthError::InvalidArgument("data is empty"));
    }
    if request.data.len() > max_event_bytes {
        return Err(AuthError::InvalidArgument(
            "data is longer than MAX_EVENT_BYTES",
        ));
    }
    match &request.user_id {
        Some(user_id) => {
            check_user_id(user_id)?;
            Ok(EventKind::Direct)
        }
        None => Ok(EventKind::Broadcast),
    }
}

/// History: where the read starts and how many events at most.
pub fn history(request: &HistoryRequest) -> Result<(Start, usize), AuthError> {
    let start = if request.from_oldest {
        if !request.after_id.is_empty() {
            return Err(AuthError::InvalidArgument(
                "after_id and from_oldest exclude each other",
            ));
        }
        Start::Oldest
    } else {
        Start::After(parse_event_id(&request.after_id)?)
    };
    if let Some(user_id) = &request.user_id {
        check_user_id(user_id)?;
    }
    // 0 is proto3's "unset": the default.
    let limit = match request.limit {
        None | Some(0) => HISTORY_MAX,
        Some(n) => usize::try_from(n).unwrap_or(HISTORY_MAX),
    };
    Ok((start, limit))
}

/// Subscribe: the gateway id, and where the stream starts (`None`: live only).
pub fn subscribe(request: &SubscribeRequest) -> Result<Option<Start>, AuthError> {
    check_gateway_id(&request.gateway_id)?;
    match (request.after_id.as_deref(), request.from_oldest) {
        (Some(_), true) => Err(AuthError::InvalidArgument(
            "after_id and from_oldest exclude each other",
        )),
        (Some(after), false) => Ok(Some(Start::After(parse_event_id(after)?))),
        (None, true) => Ok(Some(Start::Oldest)),
        (None, false) => Ok(None),
    }
}

/// Presence: the user id.
pub fn presence(request: &PresenceRequest) -> Result<(), AuthError> {
    check_user_id(&request.user_id)
}

/// ReportGateway: the gateway id and every connection entry, as the domain's report.
pub fn report_gateway(request: ReportGatewayRequest) -> Result<GatewayReport, AuthError> {
    check_gateway_id(&request.gateway_id)?;
    let entries = |list: Vec<ConnectionEntry>| -> Result<Vec<ConnEntry>, AuthError> {
        list.into_iter().map(conn_entry).collect()
    };
    Ok(GatewayReport {
        connections: request.connections,
        authenticated: request.authenticated,
        started_at_ms: request.started_at.as_ref().map_or(0, millis),
        full: request.full,
        added: entries(request.added)?,
        removed: entries(request.removed)?,
        gateway_id: request.gateway_id,
    })
}

fn conn_entry(entry: ConnectionEntry) -> Result<ConnEntry, AuthError> {
    check(
        &entry.conn_id,
        MAX_ID_BYTES,
        "conn_id is empty",
        "conn_id is longer than 256 bytes",
    )?;
    // The Redis layout joins conn_id and gateway_id with a newline.
    if entry.conn_id.contains('\n') {
        return Err(AuthError::InvalidArgument("conn_id holds a newline"));
    }
    check_user_id(&entry.user_id)?;
    Ok(ConnEntry {
        connected_at_ms: entry.connected_at.as_ref().map_or(0, millis),
        conn_id: entry.conn_id,
        user_id: entry.user_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_reject_empty_and_long() {
        assert!(check("", 3, "e", "l").is_err());
        assert!(check("abcd", 3, "e", "l").is_err());
        assert!(check("abc", 3, "e", "l").is_ok());
    }
}
