//! The gateway's Prometheus metrics: prometheus-client with typed labels,
//! every labelled handle created once at setup so that counting an event is
//! one atomic add, never a label lookup.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::close::CloseCode;

mod labels;

pub use self::labels::{AuthMethod, Closed, Handshake, Refusal, Route};
use self::labels::{CloseLabels, HandshakeLabels, MethodLabels, RefusalLabels};

/// Latency buckets of calls to auth, in seconds: 0.5 ms to ~4 s.
fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 14)
}

fn latency_histogram() -> Histogram {
    Histogram::new(latency_buckets())
}

// === impl Metrics ===

/// The cached handles; the registry holds the same metrics for encoding.
struct Inner {
    registry: Registry,
    connections_open: Gauge,
    sockets_open: Gauge,
    pending_auth: Gauge,
    subscribed: Gauge,
    events: Counter,
    gaps: Counter,
    handshake_ok: Counter,
    handshake_phase2_failed: Counter,
    /// Indexed by `Refusal as usize`.
    handshake_refused: Vec<Counter>,
    /// Indexed by `Route as usize`, then `Refusal as usize`.
    refusals: Vec<Vec<Counter>>,
    /// Indexed by `CloseCode as usize`.
    closes_by_gateway: Vec<Counter>,
    close_client: Counter,
    close_dead: Counter,
    close_error: Counter,
    /// Indexed by `AuthMethod as usize`.
    auth_calls: Vec<Histogram>,
}

/// The gateway's metrics: a cheap-clone handle.
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let connections_open = gauge(
            &mut registry,
            "wsauth_gateway_connections_open",
            "Authenticated connections registered in the hub",
        );
        let sockets_open = gauge(
            &mut registry,
            "wsauth_gateway_sockets_open",
            "Upgraded WebSockets, including those still authenticating",
        );
        let pending_auth = gauge(
            &mut registry,
            "wsauth_gateway_pending_auth",
            "WebSockets admitted and not yet past auth_ok (capped by MAX_PENDING_AUTH)",
        );
        let subscribed = gauge(
            &mut registry,
            "wsauth_gateway_subscribed",
            "1 while the Subscribe stream to auth is open",
        );
        let events = Counter::default();
        registry.register(
            "wsauth_gateway_events",
            "Events received from the Subscribe stream",
            events.clone(),
        );
        let gaps = Counter::default();
        registry.register(
            "wsauth_gateway_stream_gaps",
            "Times the Subscribe stream's resume point was lost (Redis lost the stream or it was trimmed) and every connection was sent a gap",
            gaps.clone(),
        );

        let handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "wsauth_gateway_handshakes",
            "WebSocket handshakes by outcome",
            handshakes.clone(),
        );
        let handshake = |outcome| handshakes.get_or_create_owned(&HandshakeLabels { outcome });
        let handshake_ok = handshake(Handshake::Ok);
        let handshake_phase2_failed = handshake(Handshake::Phase2Failed);
        let handshake_refused = Refusal::ALL
            .iter()
            .map(|r| handshake(Handshake::Refused(*r)))
            .collect();

        let refusal_family = Family::<RefusalLabels, Counter>::default();
        registry.register(
            "wsauth_gateway_http_refusals",
            "HTTP requests refused, by route and reason",
            refusal_family.clone(),
        );
        let refusals = Route::ALL
            .iter()
            .map(|route| {
                Refusal::ALL
                    .iter()
                    .map(|reason| {
                        refusal_family.get_or_create_owned(&RefusalLabels {
                            route: *route,
                            reason: *reason,
                        })
                    })
                    .collect()
            })
            .collect();

        let closes = Family::<CloseLabels, Counter>::default();
        registry.register(
            "wsauth_gateway_closes",
            "WebSocket closes by code",
            closes.clone(),
        );
        let close = |code| closes.get_or_create_owned(&CloseLabels { code });
        let closes_by_gateway = CloseCode::ALL
            .iter()
            .map(|c| close(Closed::Code(*c)))
            .collect();

        let auth_call_family =
            Family::<MethodLabels, Histogram>::new_with_constructor(latency_histogram as fn() -> _);
        registry.register_with_unit(
            "wsauth_gateway_auth_call_duration",
            "Latency of gRPC calls to auth",
            Unit::Seconds,
            auth_call_family.clone(),
        );
        let auth_calls = AuthMethod::ALL
            .iter()
            .map(|method| auth_call_family.get_or_create_owned(&MethodLabels { method: *method }))
            .collect();

        Self {
            inner: Arc::new(Inner {
                connections_open,
                sockets_open,
                pending_auth,
                subscribed,
                events,
                gaps,
                handshake_ok,
                handshake_phase2_failed,
                handshake_refused,
                refusals,
                closes_by_gateway,
                close_client: close(Closed::Client),
                close_dead: close(Closed::Dead),
                close_error: close(Closed::Error),
                auth_calls,
                registry,
            }),
        }
    }

    pub fn connection_opened(&self) {
        self.inner.connections_open.inc();
    }

    pub fn connection_closed(&self) {
        self.inner.connections_open.dec();
    }

    /// Follows [`crate::admission::Admission`]'s pending count.
    pub fn pending_auth_changed(&self, by: i64) {
        self.inner.pending_auth.inc_by(by);
    }

    pub fn socket_opened(&self) {
        self.inner.sockets_open.inc();
    }

    pub fn socket_closed(&self) {
        self.inner.sockets_open.dec();
    }

    /// Shows the Subscribe stream's state; readiness itself is
    /// [`crate::state::Readiness`], which calls this.
    pub fn set_subscribed(&self, subscribed: bool) {
        self.inner.subscribed.set(i64::from(subscribed));
    }

    pub fn event_received(&self) {
        self.inner.events.inc();
    }

    pub fn stream_gap(&self) {
        self.inner.gaps.inc();
    }

    pub fn handshake(&self, outcome: Handshake) {
        let inner = &*self.inner;
        match outcome {
            Handshake::Ok => inner.handshake_ok.inc(),
            Handshake::Phase2Failed => inner.handshake_phase2_failed.inc(),
            Handshake::Refused(refusal) => inner.handshake_refused[refusal as usize].inc(),
        };
    }

    /// Counts a refused HTTP request; a refused `/ws` is also a failed handshake.
    pub fn refused(&self, route: Route, refusal: Refusal) {
        self.inner.refusals[route as usize][refusal as usize].inc();
        if route == Route::Ws {
            self.handshake(Handshake::Refused(refusal));
        }
    }

    pub fn closed(&self, closed: Closed) {
        let inner = &*self.inner;
        match closed {
            Closed::Code(code) => inner.closes_by_gateway[code as usize].inc(),
            Closed::Client => inner.close_client.inc(),
            Closed::Dead => inner.close_dead.inc(),
            Closed::Error => inner.close_error.inc(),
        };
    }

    pub fn auth_call(&self, method: AuthMethod, elapsed: Duration) {
        self.inner.auth_calls[method as usize].observe(elapsed.as_secs_f64());
    }

    /// Upgraded WebSockets currently open, authenticated or not.
    pub fn sockets_open(&self) -> i64 {
        self.inner.sockets_open.get()
    }

    /// Authenticated connections currently open.
    pub fn connections_open(&self) -> i64 {
        self.inner.connections_open.get()
    }

    /// The Prometheus text exposition (format 0.0.4, [`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8192);
        // Writing into a String cannot fail.
        let _ =
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.inner.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_order_matches_the_all_lists_that_index_the_handles() {
        for (i, r) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i);
        }
        for (i, m) in AuthMethod::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i);
        }
        for (i, c) in CloseCode::ALL.iter().enumerate() {
            assert_eq!(*c as usize, i);
        }
    }

    #[test]
    fn render_has_every_metric_with_current_values() {
        let metrics = Metrics::default();
        metrics.connection_opened();
        metrics.connection_opened();
        metrics.connection_closed();
        metrics.handshake(Handshake::Ok);
        metrics.refused(Route::Ws, Refusal::BadRequest);
        metrics.refused(Route::Token, Refusal::Unauthorized);
        metrics.closed(Closed::Code(CloseCode::Policy));
        metrics.closed(Closed::Dead);
        metrics.auth_call(AuthMethod::VerifyJwt, Duration::from_millis(3));
        let text = metrics.render();
        for line in [
            "wsauth_gateway_connections_open 1\n",
            "wsauth_gateway_sockets_open 0\n",
            "wsauth_gateway_subscribed 0\n",
            "wsauth_gateway_events_total 0\n",
            "wsauth_gateway_stream_gaps_total 0\n",
            "wsauth_gateway_handshakes_total{outcome=\"ok\"} 1\n",
            "wsauth_gateway_handshakes_total{outcome=\"bad_request\"} 1\n",
            "wsauth_gateway_handshakes_total{outcome=\"unauthorized\"} 0\n",
            "wsauth_gateway_http_refusals_total{route=\"/ws\",reason=\"bad_request\"} 1\n",
            "wsauth_gateway_http_refusals_total{route=\"/token/ws\",reason=\"unauthorized\"} 1\n",
            "wsauth_gateway_closes_total{code=\"1008\"} 1\n",
            "wsauth_gateway_closes_total{code=\"dead\"} 1\n",
            "wsauth_gateway_auth_call_duration_seconds_bucket{method=\"VerifyJwt\",le=\"0.002\"} 0\n",
            "wsauth_gateway_auth_call_duration_seconds_bucket{method=\"VerifyJwt\",le=\"0.004\"} 1\n",
            "wsauth_gateway_auth_call_duration_seconds_count{method=\"VerifyJwt\"} 1\n",
            "wsauth_gateway_auth_call_duration_seconds_count{method=\"Subscribe\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        for code in CloseCode::ALL {
            let series = format!("wsauth_gateway_closes_total{{code=\"{}\"}}", code.code());
            assert!(text.contains(&series), "{series}");
        }
        for other in ["client", "dead", "error"] {
            assert!(text.contains(&format!("wsauth_gateway_closes_total{{code=\"{other}\"}}")));
        }
    }
}
