//! `dns:///host:port` entries of `AUTH_URL`: every address behind the name
//! becomes an endpoint, and the name is looked up again every
//! `AUTH_RESOLVE_INTERVAL_S`, so replicas that appear get calls and those
//! that go away stop getting new ones (their calls in flight finish on the
//! channel they started on).
//!
//! The lookup is a [`Resolve`] trait so tests can move a name between
//! processes; production uses the system resolver (getaddrinfo, so
//! `/etc/hosts` and the cluster's DNS alike).

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures::future::BoxFuture;

use super::ClientConfigError;
use super::endpoints::Endpoints;

/// The longest one lookup may take before it counts as failed.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// While a name has never resolved, it is retried this often (at most), so
/// a gateway started before DNS knows its auths does not wait a full interval.
const FIRST_RETRY: Duration = Duration::from_secs(1);

/// Looks a host name up: every address, with `port`.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>>;
}

/// The system resolver (`getaddrinfo` on tokio's blocking pool).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> BoxFuture<'a, io::Result<Vec<SocketAddr>>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

/// A `dns:` target in gRPC's naming: `dns:///host:port` or `dns:host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct DnsName {
    pub host: String,
    pub port: u16,
}

impl DnsName {
    /// `None` when `entry` is not a `dns:` target; an error when it is one
    /// this client cannot use (a DNS server authority, no port).
    pub(super) fn parse(entry: &str) -> Option<Result<Self, ClientConfigError>> {
        let rest = entry.strip_prefix("dns:")?;
        let bad = |reason: &'static str| ClientConfigError::BadDnsName {
            url: entry.to_owned(),
            reason,
        };
        let target = match rest.strip_prefix("//") {
            // `dns://server/name`: asking a given DNS server is not supported.
            Some(authority_and_path) => match authority_and_path.split_once('/') {
                Some(("", path)) => path,
                Some(_) => {
                    return Some(Err(bad(
                        "a DNS server authority is not supported; use dns:///host:port",
                    )));
                }
                None => return Some(Err(bad("expected dns:///host:port"))),
            },
            None => rest,
        };
        let Some((host, port)) = target.rsplit_once(':') else {
            return Some(Err(bad("a port is required (dns:///host:port)")));
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
            return Some(Err(bad("expected dns:///host:port")));
        }
        match port.parse::<u16>() {
            Ok(port) if port != 0 => Some(Ok(Self {
                host: host.to_owned(),
                port,
            })),
            _ => Some(Err(bad("the port must be 1 to 65535"))),
        }
    }
}

impl std::fmt::Display for DnsName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "dns:///{}:{}", self.host, self.port)
    }
}

/// Keeps target `target` of `endpoints` in step with what `name` resolves
/// to, every `interval`, until the client is dropped. A failed or empty
/// lookup keeps the last good set (and says so): a DNS hiccup must not take
/// every replica away.
pub(super) async fn follow(
    endpoints: Weak<Endpoints>,
    target: usize,
    name: DnsName,
    resolver: Arc<dyn Resolve>,
    interval: Duration,
) {
    let mut resolved_once = false;
    loop {
        let looked_up =
            tokio::time::timeout(LOOKUP_TIMEOUT, resolver.resolve(&name.host, name.port))
                .await
                .unwrap_or_else(|_| {
                    Err(io::Error::new(io::ErrorKind::TimedOut, "lookup timed out"))
                });
        // Only a live client is worth looking up for.
        let Some(live) = endpoints.upgrade() else {
            return;
        };
        match looked_up {
            Ok(addrs) if !addrs.is_empty() => {
                let addrs: BTreeSet<SocketAddr> = addrs.into_iter().collect();
                let change = live.set_addresses(target, &addrs);
                if !change.is_empty() || !resolved_once {
                    tracing::info!(
                        %name,
                        addresses = ?addrs,
                        added = ?change.added,
                        removed = ?change.removed,
                        "auth replicas resolved"
                    );
                }
                resolved_once = true;
            }
            Ok(_) if resolved_once => {
                tracing::warn!(%name, "auth name resolved to no address; keeping the last good set")
            }
            Err(error) if resolved_once => {
                tracing::warn!(%name, %error, "auth name did not resolve; keeping the last good set")
            }
            Ok(_) => tracing::warn!(%name, "auth name resolved to no address yet"),
            Err(error) => tracing::warn!(%name, %error, "auth name does not resolve yet"),
        }
        drop(live);
        let wait = if resolved_once {
            interval
        } else {
            interval.min(FIRST_RETRY)
        };
        tokio::time::sleep(wait).await;
    }
}

/// What one lookup changed.
#[derive(Debug, Default)]
pub(super) struct Change {
    pub added: Vec<SocketAddr>,
    pub removed: Vec<SocketAddr>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(entry: &str) -> Result<DnsName, String> {
        DnsName::parse(entry)
            .expect("a dns: entry")
            .map_err(|e| e.to_string())
    }

    #[test]
    fn dns_targets_follow_grpc_naming() {
        let name = |host: &str, port| DnsName {
            host: host.into(),
            port,
        };
        assert_eq!(
            parse("dns:///auth.example:50051"),
            Ok(name("auth.example", 50051))
        );
        assert_eq!(parse("dns:auth:1"), Ok(name("auth", 1)));
        assert_eq!(parse("dns:///[::1]:7"), Ok(name("::1", 7)));
        assert_eq!(
            parse("dns:///auth.example:50051").map(|n| n.to_string()),
            Ok("dns:///auth.example:50051".into())
        );
        assert!(DnsName::parse("http://auth:1").is_none());
        for (bad, says) in [
            ("dns://8.8.8.8/auth:1", "authority"),
            ("dns:///auth", "port is required"),
            ("dns:///auth:0", "1 to 65535"),
            ("dns:///auth:99999", "1 to 65535"),
            ("dns:///:50051", "expected"),
            ("dns://auth:1", "expected"),
            ("dns:///a/b:1", "expected"),
        ] {
            let error = parse(bad).expect_err(bad);
            assert!(
                error.contains(says) && error.contains(bad),
                "{bad}: {error}"
            );
        }
    }

    #[tokio::test]
    async fn the_system_resolver_finds_localhost() {
        let addrs = SystemResolver
            .resolve("localhost", 4)
            .await
            .expect("localhost resolves");
        assert!(!addrs.is_empty());
        assert!(
            addrs.iter().all(|a| a.ip().is_loopback() && a.port() == 4),
            "{addrs:?}"
        );
    }
}
