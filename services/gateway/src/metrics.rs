//! Prometheus metrics, kept in atomics and rendered by hand.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::close::CloseCode;

/// Outcomes of a WebSocket handshake, as the `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    /// Phase 2 succeeded: `auth_ok` sent.
    Ok,
    /// Origin not allowed (403).
    Forbidden,
    /// Missing or refused ws token (401).
    Unauthorized,
    /// Auth unreachable during phase 1 (503).
    Unavailable,
    /// Phase 2 failed; the close code says how.
    Phase2Failed,
    /// Refused because the gateway is shutting down (503).
    ShuttingDown,
}

const HANDSHAKES: [(Handshake, &str); 6] = [
    (Handshake::Ok, "ok"),
    (Handshake::Forbidden, "forbidden_origin"),
    (Handshake::Unauthorized, "unauthorized"),
    (Handshake::Unavailable, "auth_unavailable"),
    (Handshake::Phase2Failed, "phase2_failed"),
    (Handshake::ShuttingDown, "shutting_down"),
];

/// Close reasons, as the `code` label: the contract's codes plus what the
/// peer or the network did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// The `code` labels after the contract's codes, in [`Closed`]'s order.
const OTHER_CLOSES: [&str; 3] = ["client", "dead", "error"];
const CLOSE_SLOTS: usize = CloseCode::ALL.len() + OTHER_CLOSES.len();

/// The slot of a close reason: the contract's codes first, in
/// [`CloseCode::ALL`] order, so the labels come from [`CloseCode::code`].
fn close_index(closed: Closed) -> usize {
    match closed {
        Closed::Code(code) => CloseCode::ALL
            .iter()
            .position(|c| *c == code)
            .expect("CloseCode::ALL lists every code"),
        Closed::Client => CloseCode::ALL.len(),
        Closed::Dead => CloseCode::ALL.len() + 1,
        Closed::Error => CloseCode::ALL.len() + 2,
    }
}

fn close_label(index: usize) -> String {
    match CloseCode::ALL.get(index) {
        Some(code) => code.code().to_string(),
        None => OTHER_CLOSES[index - CloseCode::ALL.len()].to_owned(),
    }
}

/// The auth RPCs the gateway calls, as the `method` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    IssueWsToken,
    ValidateToken,
    VerifyJwt,
    History,
    Subscribe,
}

const METHODS: [&str; 5] = [
    "IssueWsToken",
    "ValidateToken",
    "VerifyJwt",
    "History",
    "Subscribe",
];

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 10] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

#[derive(Default)]
struct Histogram {
    /// Non-cumulative counts per bucket; the last slot is +Inf.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

#[derive(Default)]
struct Inner {
    connections_open: AtomicI64,
    sockets_open: AtomicI64,
    subscribed: AtomicI64,
    events: AtomicU64,
    handshakes: [AtomicU64; HANDSHAKES.len()],
    closes: [AtomicU64; CLOSE_SLOTS],
    auth_calls: [Histogram; METHODS.len()],
}

/// The gateway's metrics: a cheap-clone handle over atomics.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Metrics {
    pub fn connection_opened(&self) {
        self.inner.connections_open.fetch_add(1, Relaxed);
    }

    pub fn connection_closed(&self) {
        self.inner.connections_open.fetch_sub(1, Relaxed);
    }

    pub fn socket_opened(&self) {
        self.inner.sockets_open.fetch_add(1, Relaxed);
    }

    pub fn socket_closed(&self) {
        self.inner.sockets_open.fetch_sub(1, Relaxed);
    }

    pub fn set_subscribed(&self, subscribed: bool) {
        self.inner.subscribed.store(i64::from(subscribed), Relaxed);
    }

    pub fn is_subscribed(&self) -> bool {
        self.inner.subscribed.load(Relaxed) == 1
    }

    pub fn event_received(&self) {
        self.inner.events.fetch_add(1, Relaxed);
    }

    pub fn handshake(&self, outcome: Handshake) {
        let index = HANDSHAKES
            .iter()
            .position(|(h, _)| *h == outcome)
            .expect("HANDSHAKES lists every outcome");
        self.inner.handshakes[index].fetch_add(1, Relaxed);
    }

    pub fn closed(&self, closed: Closed) {
        self.inner.closes[close_index(closed)].fetch_add(1, Relaxed);
    }

    pub fn auth_call(&self, method: AuthMethod, elapsed: Duration) {
        let histogram = &self.inner.auth_calls[method as usize];
        let seconds = elapsed.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        histogram.buckets[bucket].fetch_add(1, Relaxed);
        histogram.count.fetch_add(1, Relaxed);
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        histogram.sum_micros.fetch_add(micros, Relaxed);
    }

    /// Authenticated connections currently open.
    pub fn connections_open(&self) -> i64 {
        self.inner.connections_open.load(Relaxed)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let inner = &*self.inner;
        let mut out = String::with_capacity(4096);
        let gauge = |out: &mut String, name: &str, help: &str, value: i64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        };
        gauge(
            &mut out,
            "wsauth_gateway_connections_open",
            "Authenticated connections registered in the hub.",
            inner.connections_open.load(Relaxed),
        );
        gauge(
            &mut out,
            "wsauth_gateway_sockets_open",
            "Upgraded WebSockets, including those still authenticating.",
            inner.sockets_open.load(Relaxed),
        );
        gauge(
            &mut out,
            "wsauth_gateway_subscribed",
            "1 while the Subscribe stream to auth is open.",
            inner.subscribed.load(Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP wsauth_gateway_events_total Events received from the Subscribe stream.\n\
             # TYPE wsauth_gateway_events_total counter\n\
             wsauth_gateway_events_total {}",
            inner.events.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP wsauth_gateway_handshakes_total WebSocket handshakes by outcome.\n\
             # TYPE wsauth_gateway_handshakes_total counter"
        );
        for (i, (_, label)) in HANDSHAKES.iter().enumerate() {
            let _ = writeln!(
                out,
                "wsauth_gateway_handshakes_total{{outcome=\"{label}\"}} {}",
                inner.handshakes[i].load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP wsauth_gateway_closes_total WebSocket closes by code.\n\
             # TYPE wsauth_gateway_closes_total counter"
        );
        for (i, count) in inner.closes.iter().enumerate() {
            let _ = writeln!(
                out,
                "wsauth_gateway_closes_total{{code=\"{}\"}} {}",
                close_label(i),
                count.load(Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP wsauth_gateway_auth_call_duration_seconds Latency of gRPC calls to auth.\n\
             # TYPE wsauth_gateway_auth_call_duration_seconds histogram"
        );
        for (m, method) in METHODS.iter().enumerate() {
            let histogram = &inner.auth_calls[m];
            let mut cumulative = 0;
            for (b, bound) in BUCKETS.iter().enumerate() {
                cumulative += histogram.buckets[b].load(Relaxed);
                let _ = writeln!(
                    out,
                    "wsauth_gateway_auth_call_duration_seconds_bucket{{method=\"{method}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            cumulative += histogram.buckets[BUCKETS.len()].load(Relaxed);
            let sum = histogram.sum_micros.load(Relaxed) as f64 / 1e6;
            let _ = writeln!(
                out,
                "wsauth_gateway_auth_call_duration_seconds_bucket{{method=\"{method}\",le=\"+Inf\"}} {cumulative}\n\
                 wsauth_gateway_auth_call_duration_seconds_sum{{method=\"{method}\"}} {sum}\n\
                 wsauth_gateway_auth_call_duration_seconds_count{{method=\"{method}\"}} {}",
                histogram.count.load(Relaxed)
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_every_metric_with_current_values() {
        let metrics = Metrics::default();
        metrics.connection_opened();
        metrics.connection_opened();
        metrics.connection_closed();
        metrics.handshake(Handshake::Ok);
        metrics.closed(Closed::Code(CloseCode::Policy));
        metrics.auth_call(AuthMethod::VerifyJwt, Duration::from_millis(3));
        let text = metrics.render();
        assert!(
            text.contains("wsauth_gateway_connections_open 1\n"),
            "{text}"
        );
        assert!(text.contains("wsauth_gateway_sockets_open 0\n"));
        assert!(text.contains("wsauth_gateway_subscribed 0\n"));
        assert!(text.contains("wsauth_gateway_events_total 0\n"));
        assert!(text.contains("wsauth_gateway_handshakes_total{outcome=\"ok\"} 1\n"));
        assert!(text.contains("wsauth_gateway_closes_total{code=\"1008\"} 1\n"));
        for code in CloseCode::ALL {
            assert!(text.contains(&format!(
                "wsauth_gateway_closes_total{{code=\"{}\"}}",
                code.code()
            )));
        }
        for other in ["client", "dead", "error"] {
            assert!(text.contains(&format!("wsauth_gateway_closes_total{{code=\"{other}\"}}")));
        }
        assert!(text.contains(
            "wsauth_gateway_auth_call_duration_seconds_bucket{method=\"VerifyJwt\",le=\"0.001\"} 0\n"
        ));
        assert!(text.contains(
            "wsauth_gateway_auth_call_duration_seconds_bucket{method=\"VerifyJwt\",le=\"0.005\"} 1\n"
        ));
        assert!(
            text.contains(
                "wsauth_gateway_auth_call_duration_seconds_count{method=\"VerifyJwt\"} 1\n"
            )
        );
    }
}
