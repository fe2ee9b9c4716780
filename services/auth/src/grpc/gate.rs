//! The gate in front of every gRPC call, before tonic routes or decodes it:
//! the caller's role from its `authorization` header, refused with
//! UNAUTHENTICATED when the method needs more (so a keyless caller cannot make
//! auth buffer a body), and a server-side deadline on the call.

use std::future::Ready;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::{Either, Map};
use tokio::time::Timeout;
use tokio::time::error::Elapsed;
use tonic::Status;
use tower::{Layer, Service};

use crate::caller::{Caller, CallerKeys, Role};

/// The role a method needs, by its gRPC path. Health and reflection are open,
/// IssueWsToken is authorised by the JWT it carries; anything not listed
/// (Publish, Revoke*, the operators' RPCs, unknown methods) needs an admin key,
/// so a method added later is closed until it is listed here.
pub fn required_role(path: &str) -> Role {
    match path {
        "/wsauth.v1.AuthService/IssueWsToken" => Role::Anonymous,
        "/wsauth.v1.AuthService/ValidateToken"
        | "/wsauth.v1.AuthService/VerifyJwt"
        | "/wsauth.v1.BroadcastService/Subscribe"
        | "/wsauth.v1.BroadcastService/History"
        | "/wsauth.v1.AdminService/ReportGateway" => Role::Internal,
        p if p.starts_with("/grpc.health.v1.Health/")
            || p.starts_with("/grpc.reflection.v1.ServerReflection/")
            || p.starts_with("/grpc.reflection.v1alpha.ServerReflection/") =>
        {
            Role::Anonymous
        }
        _ => Role::Admin,
    }
}

/// Wraps the gRPC routes in a [`Gate`].
#[derive(Clone)]
pub struct GateLayer {
    keys: CallerKeys,
    deadline: Duration,
}

impl GateLayer {
    /// Checks callers against `keys`; every call must produce its response
    /// (for a server stream: its headers) within `deadline`.
    pub fn new(keys: CallerKeys, deadline: Duration) -> Self {
        Self { keys, deadline }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = Gate<S>;

    fn layer(&self, inner: S) -> Gate<S> {
        Gate {
            inner,
            keys: self.keys.clone(),
            deadline: self.deadline,
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct Gate<S> {
    inner: S,
    keys: CallerKeys,
    deadline: Duration,
}

/// What [`Gate`] answers with: a refusal at once, or the call under the deadline.
type GateFuture<F, T> = Either<Ready<T>, Map<Timeout<F>, fn(Result<T, Elapsed>) -> T>>;

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for Gate<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = http::Response<ResBody>;
    type Error = S::Error;
    type Future = GateFuture<S::Future, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<ReqBody>) -> Self::Future {
        let required = required_role(request.uri().path());
        // An open method needs no key: its caller is not hashed and checked
        // (no handler of an open method reads the role).
        let caller = if required == Role::Anonymous {
            Caller(Role::Anonymous)
        } else {
            Caller(
                self.keys.role_of(
                    request
                        .headers()
                        .get(http::header::AUTHORIZATION)
                        .map(http::HeaderValue::as_bytes),
                ),
            )
        };
        if let Err(error) = caller.require(required) {
            // The body is dropped unread: h2 resets the stream and returns its
            // flow-control window, so nothing of it is buffered.
            drop(request);
            return Either::Left(std::future::ready(Ok(Status::from(error).into_http())));
        }
        request.extensions_mut().insert(caller);
        // The readied service answers this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        // A named future (no box per call): the timeout's `Elapsed` becomes
        // DEADLINE_EXCEEDED through a plain fn.
        let past_deadline: fn(_) -> _ = past_deadline;
        Either::Right(tokio::time::timeout(self.deadline, inner.call(request)).map(past_deadline))
    }
}

/// The call's own answer, or DEADLINE_EXCEEDED when the deadline passed first.
fn past_deadline<B: Default, E>(
    outcome: Result<Result<http::Response<B>, E>, Elapsed>,
) -> Result<http::Response<B>, E> {
    outcome.unwrap_or_else(|_| {
        Ok(Status::deadline_exceeded("the server-side deadline passed").into_http())
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::future::Future;
    use std::pin::Pin;

    use super::*;

    type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

    #[test]
    fn methods_map_to_the_contract_roles() {
        for (path, role) in [
            ("/wsauth.v1.AuthService/IssueWsToken", Role::Anonymous),
            ("/wsauth.v1.AuthService/ValidateToken", Role::Internal),
            ("/wsauth.v1.AuthService/VerifyJwt", Role::Internal),
            ("/wsauth.v1.AuthService/RevokeJwt", Role::Admin),
            ("/wsauth.v1.AuthService/RevokeUser", Role::Admin),
            ("/wsauth.v1.BroadcastService/Publish", Role::Admin),
            ("/wsauth.v1.BroadcastService/History", Role::Internal),
            ("/wsauth.v1.BroadcastService/Subscribe", Role::Internal),
            ("/wsauth.v1.AdminService/ListGateways", Role::Admin),
            ("/wsauth.v1.AdminService/Presence", Role::Admin),
            ("/wsauth.v1.AdminService/ReportGateway", Role::Internal),
            ("/grpc.health.v1.Health/Check", Role::Anonymous),
            (
                "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                Role::Anonymous,
            ),
            ("/wsauth.v1.AuthService/Unknown", Role::Admin),
            ("/", Role::Admin),
            ("", Role::Admin),
        ] {
            assert_eq!(required_role(path), role, "{path}");
        }
    }

    /// Answers every call with 200 and records that it was reached.
    #[derive(Clone)]
    struct Reached(std::sync::Arc<std::sync::atomic::AtomicBool>, Duration);

    impl Service<http::Request<()>> for Reached {
        type Response = http::Response<()>;
        type Error = Infallible;
        type Future = BoxFuture<Result<http::Response<()>, Infallible>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, request: http::Request<()>) -> Self::Future {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            assert!(request.extensions().get::<Caller>().is_some());
            let delay = self.1;
            Box::pin(async move {
                tokio::time::sleep(delay).await;
                Ok(http::Response::new(()))
            })
        }
    }

    fn gate(delay: Duration) -> (Gate<Reached>, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let reached = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let keys = CallerKeys::new(&["int".into()], &["adm".into()]);
        let layer = GateLayer::new(keys, Duration::from_millis(100));
        (layer.layer(Reached(reached.clone(), delay)), reached)
    }

    fn request(path: &str, key: Option<&str>) -> http::Request<()> {
        let mut builder = http::Request::builder().uri(path);
        if let Some(key) = key {
            builder = builder.header("authorization", format!("Bearer {key}"));
        }
        builder.body(()).expect("valid request")
    }

    fn grpc_status(response: &http::Response<()>) -> Option<&str> {
        response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
    }

    #[tokio::test]
    async fn a_missing_or_weak_key_is_refused_before_the_service() {
        for (path, key) in [
            ("/wsauth.v1.BroadcastService/Publish", None),
            ("/wsauth.v1.BroadcastService/Publish", Some("int")),
            ("/wsauth.v1.BroadcastService/Publish", Some("nope")),
            ("/wsauth.v1.AuthService/ValidateToken", None),
        ] {
            let (mut gate, reached) = gate(Duration::ZERO);
            let response = gate.call(request(path, key)).await.expect("infallible");
            assert_eq!(grpc_status(&response), Some("16"), "{path} {key:?}");
            assert!(!reached.load(std::sync::atomic::Ordering::SeqCst));
        }
    }

    #[tokio::test]
    async fn a_sufficient_key_reaches_the_service() {
        for (path, key) in [
            ("/wsauth.v1.BroadcastService/Publish", Some("adm")),
            ("/wsauth.v1.AuthService/ValidateToken", Some("int")),
            ("/wsauth.v1.AuthService/IssueWsToken", None),
            ("/grpc.health.v1.Health/Check", None),
        ] {
            let (mut gate, reached) = gate(Duration::ZERO);
            let response = gate.call(request(path, key)).await.expect("infallible");
            assert_eq!(grpc_status(&response), None, "{path} {key:?}");
            assert!(reached.load(std::sync::atomic::Ordering::SeqCst));
        }
    }

    #[tokio::test]
    async fn a_call_past_the_deadline_is_deadline_exceeded() {
        let (mut gate, _) = gate(Duration::from_secs(5));
        let response = gate
            .call(request("/wsauth.v1.AuthService/IssueWsToken", None))
            .await
            .expect("infallible");
        assert_eq!(grpc_status(&response), Some("4"));
    }
}
