//! The one place refusals are counted: every [`HttpError`](crate::error::HttpError)
//! response carries its [`Refusal`], whichever handler (or fallback) made it.
//!
//! A plain tower layer rather than `middleware::from_fn`, which boxes a
//! future and clones the router's service for every request: this one runs
//! on every request, so it adds one counter handle and nothing else
//! (callgrind, issue 8).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use axum::extract::Request;
use axum::response::Response;
use tower::{Layer, Service};

use crate::metrics::{Metrics, Refusal, Route};

/// Wraps the router in [`CountRefusals`].
#[derive(Clone)]
pub struct CountRefusalsLayer {
    metrics: Metrics,
}

impl CountRefusalsLayer {
    pub fn new(metrics: Metrics) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for CountRefusalsLayer {
    type Service = CountRefusals<S>;

    fn layer(&self, inner: S) -> CountRefusals<S> {
        CountRefusals {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// See the module docs.
#[derive(Clone)]
pub struct CountRefusals<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> Service<Request> for CountRefusals<S>
where
    S: Service<Request, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Counted<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        Counted {
            route: Route::of(request.uri().path()),
            metrics: self.metrics.clone(),
            inner: self.inner.call(request),
        }
    }
}

/// A request's answer on its way out, counted when it is a refusal.
pub struct Counted<F> {
    inner: F,
    route: Route,
    metrics: Metrics,
}

impl<F, E> Future for Counted<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let answer = ready!(Pin::new(&mut this.inner).poll(cx));
        if let Ok(response) = &answer
            && let Some(refusal) = response.extensions().get::<Refusal>()
        {
            this.metrics.refused(this.route, *refusal);
        }
        Poll::Ready(answer)
    }
}
