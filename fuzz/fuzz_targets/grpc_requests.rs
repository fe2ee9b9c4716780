//! Every request check of auth's gRPC edge, on arbitrary requests: the fuzz
//! bytes are decoded as the request's protobuf (as tonic decodes a body) and
//! run through the same `grpc::checks` function its handler runs. A request
//! is refused exactly when a field is empty or over its limit (the contract's
//! "Limits"), always with INVALID_ARGUMENT, and what passes is what was sent.
//! The gate is fuzzed too, through its real `tower::Service` with the key in the
//! `authorization` header: the role of any value, the role any path needs (the
//! contract's table in `wsauth_auth::oracles`), UNAUTHENTICATED before the
//! service whenever the caller has less, and no key checked for open methods.
#![no_main]

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use prost::Message;
use prost_types::Timestamp;
use tonic::Code;
use tower::{Layer as _, Service};
use wsauth_auth::caller::{Caller, CallerKeys};
use wsauth_auth::error::AuthError;
use wsauth_auth::event::{EventId, EventKind};
use wsauth_auth::events::{HISTORY_MAX, Start};
use wsauth_auth::grpc::checks;
use wsauth_auth::grpc::gate::{GateLayer, required_role};
use wsauth_auth::oracles::{contract_role, gate_caller, presented_role};
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

/// Stands for tonic behind the gate: answers at once, recording the caller
/// the gate handed on.
#[derive(Clone, Default)]
struct Behind(Arc<Mutex<Option<Caller>>>);

impl Service<http::Request<()>> for Behind {
    type Response = http::Response<()>;
    type Error = Infallible;
    type Future = Ready<Result<http::Response<()>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<()>) -> Self::Future {
        *self.0.lock().expect("not poisoned") = request.extensions().get::<Caller>().copied();
        ready(Ok(http::Response::new(())))
    }
}

thread_local! {
    /// The gate's deadline is a tokio timer: one runtime per fuzzing thread.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
}

/// The real gate (`Gate::call`, as the server layers it before tonic) on an
/// arbitrary path and `authorization` value, judged by the contract's table
/// (`wsauth_auth::oracles`, shared with auth's proptests): a caller with less
/// than the method needs is refused with UNAUTHENTICATED before the service,
/// any other reaches it carrying its role, and an open method's caller is
/// anonymous whatever key it presents (the gate skips the hash).
fn gate(bytes: &[u8]) {
    let [open, rest @ ..] = bytes else {
        return;
    };
    let (path, header) = rest.split_at(rest.iter().position(|&b| b == 0).unwrap_or(rest.len()));
    let header = header.get(1..).unwrap_or_default();
    let path = String::from_utf8_lossy(path);
    // The table itself on any text, then the gate on what is a request path.
    assert_eq!(required_role(&path), contract_role(&path), "{path:?}");
    // Mostly keys configured; sometimes none (every caller is admin).
    let (internal, admin): (&[&str], &[&str]) = if open % 8 == 0 {
        (&[], &[])
    } else {
        (&["internal-key"], &["admin-key"])
    };
    let secrets = |keys: &[&str]| keys.iter().map(|&k| k.into()).collect::<Vec<_>>();
    let keys = CallerKeys::new(&secrets(internal), &secrets(admin));
    let presented = presented_role(Some(header), internal, admin);
    assert_eq!(keys.role_of(Some(header)), presented, "{header:?}");

    let Ok(request) = http::Request::builder()
        .uri(path.as_ref())
        .header(http::header::AUTHORIZATION, header)
        .body(())
    else {
        // Not a path and a header value hyper would hand over.
        return;
    };
    let path = request.uri().path().to_owned();
    let needed = contract_role(&path);
    let caller = gate_caller(&path, presented);
    let behind = Behind::default();
    let mut gate = GateLayer::new(keys, Duration::from_secs(10)).layer(behind.clone());
    let response = RUNTIME
        .with(|rt| rt.block_on(async { gate.call(request).await }))
        .expect("infallible");
    let reached = behind.0.lock().expect("not poisoned").take();
    let status = response
        .headers()
        .get("grpc-status")
        .map(|v| v.to_str().expect("a code").to_owned());
    if caller >= needed {
        assert_eq!(reached, Some(Caller(caller)), "{path:?} {header:?}");
        assert_eq!(status, None, "{path:?} {header:?}");
    } else {
        assert_eq!(reached, None, "{path:?} {header:?}");
        assert_eq!(status.as_deref(), Some("16"), "{path:?} {header:?}");
        let refused = Caller(caller)
            .require(needed)
            .expect_err("less than needed");
        assert_eq!(tonic::Status::from(refused).code(), Code::Unauthenticated);
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
