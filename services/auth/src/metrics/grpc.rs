//! A tower layer around auth's gRPC server: each call is counted by RPC and
//! status code when its status is known (in the response headers for an
//! error, in the trailers otherwise), timed from arrival to that status, and
//! a Subscribe stream is counted as open until it ends.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use tower::{Layer, Service};

use super::{AuthMetrics, code_index};

/// Adds [`GrpcMetrics`] around a service.
#[derive(Clone)]
pub struct GrpcMetricsLayer {
    metrics: AuthMetrics,
}

impl GrpcMetricsLayer {
    pub fn new(metrics: AuthMetrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`GrpcMetricsLayer`] makes.
#[derive(Clone)]
pub struct GrpcMetrics<S> {
    inner: S,
    metrics: AuthMetrics,
}

impl<S, ReqBody, ResBody> Service<http::Request<ReqBody>> for GrpcMetrics<S>
where
    S: Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = http::Response<MeteredBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let call = Call {
            metrics: self.metrics.clone(),
            rpc: AuthMetrics::rpc_index(request.uri().path()),
            started: Instant::now(),
            stream_open: false,
        };
        let response = self.inner.call(request);
        Box::pin(async move {
            let mut call = call;
            let response = response.await?;
            let (parts, body) = response.into_parts();
            let call = match parts.headers.get("grpc-status") {
                // Trailers-only: the call ended with its headers.
                Some(status) => {
                    call.finish(status.as_bytes());
                    None
                }
                None => {
                    call.open();
                    Some(call)
                }
            };
            Ok(http::Response::from_parts(
                parts,
                MeteredBody { inner: body, call },
            ))
        })
    }
}

/// A call whose status is not known yet.
struct Call {
    metrics: AuthMetrics,
    /// Index of the RPC in the metrics' table.
    rpc: usize,
    started: Instant,
    /// A Subscribe stream counted in the open-streams gauge.
    stream_open: bool,
}

impl Call {
    /// The response started: a Subscribe stream is open from here.
    fn open(&mut self) {
        if self.metrics.rpc(self.rpc).is_subscribe {
            self.metrics.subscribe_streams().inc();
            self.stream_open = true;
        }
    }

    fn finish(mut self, status: &[u8]) {
        self.record(code_index(status));
    }

    fn record(&mut self, code: usize) {
        let rpc = self.metrics.rpc(self.rpc);
        rpc.handled[code].inc();
        rpc.seconds.observe(self.started.elapsed().as_secs_f64());
        if std::mem::take(&mut self.stream_open) {
            self.metrics.subscribe_streams().dec();
        }
    }
}

/// The response body, watched for the `grpc-status` trailer.
pub struct MeteredBody<B> {
    inner: B,
    call: Option<Call>,
}

impl<B: Body + Unpin> Body for MeteredBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(status) = frame.trailers_ref().and_then(|t| t.get("grpc-status"))
                    && let Some(call) = self.call.take()
                {
                    call.finish(status.as_bytes());
                }
            }
            // A body that broke or ended without a status: UNKNOWN, as a client sees it.
            Poll::Ready(Some(Err(_)) | None) => {
                if let Some(call) = self.call.take() {
                    call.finish(b"2");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for MeteredBody<B> {
    /// Dropped before its status: the client went away (CANCELLED), as a
    /// gateway leaving its Subscribe stream does.
    fn drop(&mut self) {
        if let Some(mut call) = self.call.take() {
            call.record(1);
        }
    }
}
