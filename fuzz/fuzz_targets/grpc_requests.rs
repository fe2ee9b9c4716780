//! Every request check of auth's gRPC edge, on arbitrary requests: the fuzz
//! bytes are decoded as the request's protobuf (as tonic decodes a body) and
//! run through the same `grpc::checks` function its handler runs. A request
//! is refused exactly when a field is empty or over its limit (the contract's
//! "Limits"), always with INVALID_ARGUMENT, and what passes is what was sent.
//! The gate is fuzzed too: the role of any `authorization` value, the role any
//! path needs, and UNAUTHENTICATED whenever the caller has less.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use prost_types::Timestamp;
use tonic::Code;
use wsauth_auth::caller::{Caller, CallerKeys, Role};
use wsauth_auth::error::AuthError;
use wsauth_auth::event::{EventId, EventKind};
use wsauth_auth::events::{HISTORY_MAX, Start};
use wsauth_auth::grpc::checks;
use wsauth_auth::grpc::gate::required_role;
use wsauth_shared::bearer::credential;
use wsauth_shared::limits::{MAX_CREDENTIAL_BYTES, MAX_ID_BYTES};
use wsauth_shared::proto::{
    HistoryRequest, IssueWsTokenRequest, PresenceRequest, PublishRequest, ReportGatewayRequest,
    RevokeJwtRequest, RevokeUserRequest, SubscribeRequest, ValidateTokenRequest, VerifyJwtRequest,
};

/// The contract's rule for a field: present and within its limit.
fn fits(value: &str, max: usize) -> bool {
    !value.is_empty() && value.len() <= max
}

fn id(value: &str) -> bool {
    fits(value, MAX_ID_BYTES)
}

fn credential_field(value: &str) -> bool {
    fits(value, MAX_CREDENTIAL_BYTES)
}

fn event_id(value: &str) -> Option<EventId> {
    if id(value) { value.parse().ok() } else { None }
}

fn ms(ts: &Timestamp) -> u64 {
    let seconds = u64::try_from(ts.seconds.max(0)).expect("not negative");
    let nanos = u64::try_from(ts.nanos.max(0)).expect("not negative");
    seconds
        .saturating_mul(1000)
        .saturating_add(nanos / 1_000_000)
}

/// `expected` is `Some` exactly when the contract accepts the request.
fn verdict<T: PartialEq + std::fmt::Debug>(got: Result<T, AuthError>, expected: Option<T>) {
    match (got, expected) {
        (Ok(got), Some(expected)) => assert_eq!(got, expected),
        (Err(error), None) => {
            let status = tonic::Status::from(error);
            assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
            assert!(!status.message().is_empty());
        }
        (got, expected) => panic!("checks gave {got:?}, the contract {expected:?}"),
    }
}

fn decode<M: Message + Default>(bytes: &[u8]) -> Option<M> {
    M::decode(bytes).ok()
}

fn gate(bytes: &[u8]) {
    let (path, header) = bytes.split_at(bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()));
    let path = String::from_utf8_lossy(path);
    let keys = CallerKeys::new(&["internal-key".into()], &["admin-key".into()]);
    let role = keys.role_of(Some(header));
    let expected_role = match credential(header) {
        Some(b"admin-key") => Role::Admin,
        Some(b"internal-key") => Role::Internal,
        _ => Role::Anonymous,
    };
    assert_eq!(role, expected_role, "{header:?}");
    let needed = required_role(&path);
    let expected_needed = match path.as_ref() {
        "/wsauth.v1.AuthService/IssueWsToken" => Role::Anonymous,
        "/wsauth.v1.AuthService/ValidateToken"
        | "/wsauth.v1.AuthService/VerifyJwt"
        | "/wsauth.v1.BroadcastService/Subscribe"
        | "/wsauth.v1.BroadcastService/History"
        | "/wsauth.v1.AdminService/ReportGateway" => Role::Internal,
        p if [
            "/grpc.health.v1.Health/",
            "/grpc.reflection.v1.ServerReflection/",
            "/grpc.reflection.v1alpha.ServerReflection/",
        ]
        .iter()
        .any(|open| p.starts_with(open)) =>
        {
            Role::Anonymous
        }
        _ => Role::Admin,
    };
    assert_eq!(needed, expected_needed, "{path}");
    match Caller(role).require(needed) {
        Ok(()) => assert!(role >= needed),
        Err(error) => {
            assert!(role < needed);
            assert_eq!(tonic::Status::from(error).code(), Code::Unauthenticated);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let [selector, max, body @ ..] = data else {
        return;
    };
    match selector % 11 {
        0 => {
            if let Some(r) = decode::<IssueWsTokenRequest>(body) {
                verdict(
                    checks::issue_ws_token(&r),
                    credential_field(&r.jwt).then_some(()),
                );
            }
        }
        1 => {
            if let Some(r) = decode::<ValidateTokenRequest>(body) {
                verdict(
                    checks::validate_token(&r),
                    credential_field(&r.token).then_some(()),
                );
            }
        }
        2 => {
            if let Some(r) = decode::<VerifyJwtRequest>(body) {
                verdict(
                    checks::verify_jwt(&r),
                    credential_field(&r.jwt).then_some(()),
                );
            }
        }
        3 => {
            if let Some(r) = decode::<RevokeJwtRequest>(body) {
                let expected = id(&r.jti).then(|| r.expires_at.as_ref().map(ms));
                verdict(checks::revoke_jwt(&r), expected);
            }
        }
        4 => {
            if let Some(r) = decode::<RevokeUserRequest>(body) {
                verdict(checks::revoke_user(&r), id(&r.user_id).then_some(()));
            }
        }
        5 => {
            if let Some(r) = decode::<PresenceRequest>(body) {
                verdict(checks::presence(&r), id(&r.user_id).then_some(()));
            }
        }
        6 => {
            if let Some(r) = decode::<PublishRequest>(body) {
                // A small configured MAX_EVENT_BYTES, so that the limit is reached.
                let max_event_bytes = usize::from(*max) + 1;
                let expected = match &r.user_id {
                    _ if !fits(&r.data, max_event_bytes) => None,
                    None => Some(EventKind::Broadcast),
                    Some(user) => id(user).then_some(EventKind::Direct),
                };
                verdict(checks::publish(&r, max_event_bytes), expected);
            }
        }
        7 => {
            if let Some(r) = decode::<HistoryRequest>(body) {
                let start = if r.from_oldest {
                    r.after_id.is_empty().then_some(Start::Oldest)
                } else {
                    event_id(&r.after_id).map(Start::After)
                };
                let user_ok = r.user_id.as_deref().is_none_or(id);
                let limit = match r.limit {
                    None | Some(0) => HISTORY_MAX,
                    Some(n) => usize::try_from(n).expect("u32 fits"),
                };
                let expected = start.filter(|_| user_ok).map(|start| (start, limit));
                verdict(checks::history(&r), expected);
            }
        }
        8 => {
            if let Some(r) = decode::<SubscribeRequest>(body) {
                let start = match (r.after_id.as_deref(), r.from_oldest) {
                    (Some(_), true) => None,
                    (Some(after), false) => event_id(after).map(|id| Some(Start::After(id))),
                    (None, true) => Some(Some(Start::Oldest)),
                    (None, false) => Some(None),
                };
                let expected = start.filter(|_| id(&r.gateway_id));
                verdict(checks::subscribe(&r), expected);
            }
        }
        9 => {
            if let Some(r) = decode::<ReportGatewayRequest>(body) {
                let entry_ok = |e: &wsauth_shared::proto::ConnectionEntry| {
                    id(&e.conn_id) && !e.conn_id.contains('\n') && id(&e.user_id)
                };
                let ok = id(&r.gateway_id) && r.added.iter().chain(&r.removed).all(entry_ok);
                let sent = r.clone();
                match (checks::report_gateway(r), ok) {
                    (Ok(report), true) => {
                        assert_eq!(report.gateway_id, sent.gateway_id);
                        assert_eq!(
                            (report.connections, report.authenticated, report.full),
                            (sent.connections, sent.authenticated, sent.full)
                        );
                        assert_eq!(report.started_at_ms, sent.started_at.as_ref().map_or(0, ms));
                        for (got, entries) in [
                            (&report.added, &sent.added),
                            (&report.removed, &sent.removed),
                        ] {
                            assert_eq!(got.len(), entries.len());
                            for (g, e) in got.iter().zip(entries) {
                                assert_eq!((&g.conn_id, &g.user_id), (&e.conn_id, &e.user_id));
                                assert_eq!(
                                    g.connected_at_ms,
                                    e.connected_at.as_ref().map_or(0, ms)
                                );
                            }
                        }
                    }
                    (Err(error), false) => {
                        assert_eq!(tonic::Status::from(error).code(), Code::InvalidArgument);
                    }
                    (got, ok) => panic!(
                        "report_gateway gave {:?}, the contract ok={ok}",
                        got.map(|r| r.gateway_id)
                    ),
                }
            }
        }
        _ => gate(body),
    }
});
