//! The set of auth endpoints calls choose from, and how it changes.
//!
//! Each `AUTH_URL` entry is a target: an `http(s)://` URL is one endpoint;
//! a `dns:///host:port` name is one endpoint per address it resolves to,
//! kept in step by [`super::discovery`]. Calls take a snapshot of the set, so
//! a replica that leaves it (or whose channel is rebuilt) stops getting new
//! calls while the ones it has finish on their own channel.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;
use tonic::transport::{Channel, Endpoint};

use super::ClientConfigError;
use super::discovery::{Change, DnsName};
use super::failover::attempt_budget;
use super::target::{Security, Target, TargetKind};
use super::tls::ClientTls;

/// How long an endpoint that failed at the transport level is tried last.
const ENDPOINT_COOLDOWN: Duration = Duration::from_secs(2);

/// One auth endpoint: a lazily connected, multiplexed HTTP/2 channel.
pub(super) struct Replica {
    /// The URL, or the address a name resolved to: for logs.
    pub label: String,
    /// The resolved address, for endpoints found through DNS.
    addr: Option<SocketAddr>,
    pub channel: Channel,
    /// Until when (ms since the set's epoch) it is tried last.
    down_until: AtomicU64,
}

/// A snapshot of the set: what one call works with.
pub(super) type Replicas = Arc<[Arc<Replica>]>;

/// What the set is built from.
struct State {
    targets: Vec<Target>,
    security: Security,
}

/// The auth endpoints.
pub(super) struct Endpoints {
    /// The set new calls choose from.
    current: watch::Sender<Replicas>,
    /// What it is built from (std Mutex: never held across an await).
    state: Mutex<State>,
    call_timeout: Duration,
    next: AtomicUsize,
    epoch: Instant,
}

impl Endpoints {
    /// Reads the `AUTH_URL` entries and builds a channel for each URL, without
    /// connecting: the gateway starts while auth is down and connects on
    /// first use. `dns:` names start with no endpoint (the names to follow
    /// are returned, by target index). Must run inside a tokio runtime.
    pub(super) fn new(
        urls: &[String],
        call_timeout: Duration,
        security: Security,
    ) -> Result<(Self, Vec<(usize, DnsName)>), ClientConfigError> {
        let urls: Vec<&str> = urls
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(ClientConfigError::NoUrl);
        }
        let mut kinds = Vec::with_capacity(urls.len());
        let mut names = Vec::new();
        for url in urls {
            if let Some(name) = DnsName::parse(url) {
                let name = name?;
                names.push((kinds.len(), name.clone()));
                kinds.push(TargetKind::Dns(name));
                continue;
            }
            let endpoint = Endpoint::from_str(url).map_err(|source| ClientConfigError::BadUrl {
                url: url.to_owned(),
                source,
            })?;
            let kind = TargetKind::Fixed(Box::new(endpoint));
            // Half the endpoints in the clear would defeat the TLS asked for.
            if security.dns_tls && !kind.uses_tls(&security) {
                return Err(ClientConfigError::PlaintextWithTls {
                    url: url.to_owned(),
                });
            }
            kinds.push(kind);
        }
        let endpoints = Self {
            current: watch::Sender::new(Arc::from(Vec::new())),
            state: Mutex::new(State {
                targets: Vec::new(),
                security,
            }),
            call_timeout,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
        };
        let fixed = kinds
            .iter()
            .filter(|k| matches!(k, TargetKind::Fixed(_)))
            .count();
        let mut state = endpoints.state.lock().unwrap_or_else(|e| e.into_inner());
        for kind in kinds {
            let mut replicas = Vec::new();
            if let TargetKind::Fixed(url) = &kind {
                let endpoint = kind.endpoint(None, &state.security).map_err(|source| {
                    ClientConfigError::BadUrl {
                        url: url.uri().to_string(),
                        source,
                    }
                })?;
                replicas.push(endpoints.replica(url.uri().to_string(), None, endpoint, fixed));
            }
            state.targets.push(Target { kind, replicas });
        }
        endpoints.publish(&state.targets);
        drop(state);
        Ok((endpoints, names))
    }

    /// The one place channels are made: every call to auth goes through a
    /// channel built here.
    fn replica(
        &self,
        label: String,
        addr: Option<SocketAddr>,
        endpoint: Endpoint,
        count: usize,
    ) -> Arc<Replica> {
        // A connect that takes longer than its share would starve the others.
        let endpoint = endpoint
            .connect_timeout(attempt_budget(self.call_timeout, count))
            .tcp_nodelay(true)
            // A dead auth must break the Subscribe stream promptly.
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        Arc::new(Replica {
            label,
            addr,
            channel: endpoint.connect_lazy(),
            down_until: AtomicU64::new(0),
        })
    }

    /// Makes `targets` the set new calls choose from.
    fn publish(&self, targets: &[Target]) {
        let set: Vec<Arc<Replica>> = targets
            .iter()
            .flat_map(|t| t.replicas.iter().cloned())
            .collect();
        self.current.send_replace(Arc::from(set));
    }

    /// Makes the endpoints of `dns:` target `target` the addresses `addrs`:
    /// those already there keep their channel (and its connection), new ones
    /// get one, the others leave the set. What changed.
    pub(super) fn set_addresses(&self, target: usize, addrs: &BTreeSet<SocketAddr>) -> Change {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State { targets, security } = &mut *state;
        let total: usize = targets.iter().map(|t| t.replicas.len()).sum();
        let Some(Target {
            kind: kind @ TargetKind::Dns(_),
            replicas,
        }) = targets.get_mut(target)
        else {
            return Change::default();
        };
        let count = total - replicas.len() + addrs.len();
        let mut change = Change::default();
        let mut kept = Vec::with_capacity(addrs.len());
        for replica in replicas.drain(..) {
            match replica.addr {
                Some(addr) if addrs.contains(&addr) => kept.push(replica),
                Some(addr) => change.removed.push(addr),
                None => {}
            }
        }
        for &addr in addrs {
            if kept.iter().any(|r| r.addr == Some(addr)) {
                continue;
            }
            let TargetKind::Dns(name) = &*kind else {
                unreachable!("matched above")
            };
            let label = format!("{addr} ({name})");
            match kind.endpoint(Some(addr), security) {
                Ok(endpoint) => {
                    kept.push(self.replica(label, Some(addr), endpoint, count));
                    change.added.push(addr);
                }
                // Checked at start with the same settings: not expected.
                Err(error) => tracing::warn!(%error, endpoint = %label, "cannot build a channel"),
            }
        }
        kept.sort_by_key(|r| r.addr);
        *replicas = kept;
        if !change.is_empty() {
            self.publish(targets);
        }
        change
    }

    /// Rebuilds the channel of every endpoint that speaks TLS with `tls`:
    /// new calls open new connections with it, calls in flight finish on
    /// the old ones.
    pub(super) fn set_tls(&self, tls: ClientTls) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let State { targets, security } = &mut *state;
        security.tls = Some(tls);
        let count = targets.iter().map(|t| t.replicas.len()).sum();
        for target in targets.iter_mut() {
            if !target.kind.uses_tls(security) {
                continue;
            }
            for replica in &mut target.replicas {
                match target.kind.endpoint(replica.addr, security) {
                    Ok(endpoint) => {
                        *replica =
                            self.replica(replica.label.clone(), replica.addr, endpoint, count)
                    }
                    Err(error) => {
                        tracing::warn!(%error, endpoint = %replica.label, "cannot rebuild a channel; keeping the old one")
                    }
                }
            }
        }
        self.publish(targets);
    }

    /// The set now; when it is empty (no name resolved yet), waits for
    /// endpoints up to `patience`.
    pub(super) async fn snapshot(&self, patience: Duration) -> Replicas {
        let mut changes = self.current.subscribe();
        let wait = changes.wait_for(|set| !set.is_empty());
        match tokio::time::timeout(patience, wait).await {
            Ok(Ok(set)) => set.clone(),
            _ => self.current.borrow().clone(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// `set`'s endpoints in the order to try: round-robin, cooling ones last.
    pub(super) fn order(&self, set: &Replicas) -> Vec<Arc<Replica>> {
        let n = set.len();
        if n == 0 {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % n;
        let now = self.now_ms();
        let (mut up, mut cooling): (Vec<_>, Vec<_>) = (0..n)
            .map(|i| Arc::clone(&set[(start + i) % n]))
            .partition(|r| r.down_until.load(Ordering::Relaxed) <= now);
        up.append(&mut cooling);
        up
    }

    pub(super) fn mark_down(&self, replica: &Replica) {
        let until = self
            .now_ms()
            .saturating_add(ENDPOINT_COOLDOWN.as_millis() as u64);
        replica.down_until.store(until, Ordering::Relaxed);
    }

    /// The set now, for tests.
    #[cfg(test)]
    pub(super) fn current(&self) -> Replicas {
        self.current.borrow().clone()
    }

    /// Whether `replica` is being tried last, for tests.
    #[cfg(test)]
    pub(super) fn is_cooling(&self, replica: &Replica) -> bool {
        replica.down_until.load(Ordering::Relaxed) > self.now_ms()
    }

    #[cfg(test)]
    pub(super) fn cool_off(&self, replica: &Replica) {
        replica.down_until.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Security {
        Security {
            tls: None,
            dns_tls: false,
        }
    }

    fn labels(replicas: &[Arc<Replica>]) -> Vec<String> {
        replicas.iter().map(|r| r.label.clone()).collect()
    }

    #[tokio::test]
    async fn endpoints_rotate_and_a_failed_one_is_tried_last_while_cooling() {
        let urls: Vec<String> = (1..=3).map(|p| format!("http://127.0.0.1:{p}")).collect();
        let (endpoints, names) =
            Endpoints::new(&urls, Duration::from_millis(100), plain()).expect("valid");
        assert!(names.is_empty());
        let set = endpoints.current();
        let url = |p: u16| format!("http://127.0.0.1:{p}/");
        assert_eq!(labels(&endpoints.order(&set)), [url(1), url(2), url(3)]);
        assert_eq!(labels(&endpoints.order(&set)), [url(2), url(3), url(1)]);
        endpoints.mark_down(&set[2]);
        assert_eq!(labels(&endpoints.order(&set)), [url(1), url(2), url(3)]);
        assert_eq!(
            labels(&endpoints.order(&set)),
            [url(1), url(2), url(3)],
            "3 stays last"
        );
        endpoints.cool_off(&set[2]);
        assert_eq!(labels(&endpoints.order(&set)), [url(2), url(3), url(1)]);
    }

    #[tokio::test]
    async fn a_name_adds_and_removes_endpoints_keeping_the_unchanged_ones() {
        let urls = vec![
            "http://127.0.0.1:1".to_owned(),
            "dns:///auth.test:50051".to_owned(),
        ];
        let (endpoints, names) =
            Endpoints::new(&urls, Duration::from_millis(100), plain()).expect("valid");
        assert_eq!(names.len(), 1);
        assert_eq!(names[0].0, 1, "the name is the second target");
        assert_eq!(endpoints.current().len(), 1, "the name has no address yet");

        let addr = |last: u8| SocketAddr::from(([127, 0, 0, last], 50051));
        let change = endpoints.set_addresses(1, &[addr(2), addr(3)].into());
        assert_eq!((change.added.len(), change.removed.len()), (2, 0));
        let before = endpoints.current();
        let name = "(dns:///auth.test:50051)";
        assert_eq!(
            labels(&before)[1..],
            [
                format!("127.0.0.2:50051 {name}"),
                format!("127.0.0.3:50051 {name}")
            ]
        );

        assert!(
            endpoints
                .set_addresses(1, &[addr(2), addr(3)].into())
                .is_empty()
        );
        let change = endpoints.set_addresses(1, &[addr(3), addr(4)].into());
        assert_eq!(change.added, [addr(4)]);
        assert_eq!(change.removed, [addr(2)]);
        let after = endpoints.current();
        assert_eq!(
            labels(&after)[1..],
            [
                format!("127.0.0.3:50051 {name}"),
                format!("127.0.0.4:50051 {name}")
            ]
        );
        assert!(
            Arc::ptr_eq(&before[2], &after[1]),
            "127.0.0.3 kept its channel"
        );
        assert!(Arc::ptr_eq(&before[0], &after[0]), "the URL is untouched");
        // A snapshot taken before still holds the removed replica.
        assert_eq!(before[1].addr, Some(addr(2)));
        // A URL target is not a name.
        assert!(endpoints.set_addresses(0, &[addr(9)].into()).is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waits_for_the_first_resolution_within_its_patience() {
        let urls = vec!["dns:///auth.test:1".to_owned()];
        let (endpoints, _) =
            Endpoints::new(&urls, Duration::from_millis(100), plain()).expect("valid");
        let endpoints = Arc::new(endpoints);
        assert!(
            endpoints
                .snapshot(Duration::from_millis(50))
                .await
                .is_empty()
        );
        let resolver = Arc::clone(&endpoints);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            resolver.set_addresses(0, &[SocketAddr::from(([127, 0, 0, 1], 1))].into());
        });
        assert_eq!(endpoints.snapshot(Duration::from_secs(1)).await.len(), 1);
    }
}
