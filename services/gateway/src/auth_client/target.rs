//! One `AUTH_URL` entry (a target) and how its endpoints are made: a URL
//! is one endpoint, a `dns:` name one per address, each with TLS or not.

use std::net::SocketAddr;
use std::sync::Arc;

use tonic::transport::Endpoint;

use super::discovery::DnsName;
use super::endpoints::Replica;
use super::tls::ClientTls;

/// One `AUTH_URL` entry and the endpoints it stands for now.
pub(super) struct Target {
    pub kind: TargetKind,
    pub replicas: Vec<Arc<Replica>>,
}

pub(super) enum TargetKind {
    /// `http(s)://`: one channel (a host name in it is looked up on each connect).
    Fixed(Box<Endpoint>),
    /// `dns:`: one channel per address.
    Dns(DnsName),
}

/// How endpoints are secured.
pub(super) struct Security {
    /// The TLS setup, when any endpoint speaks TLS.
    pub tls: Option<ClientTls>,
    /// Whether `dns:` names' addresses speak TLS (any `AUTH_TLS_*` set).
    pub dns_tls: bool,
}

impl TargetKind {
    pub(super) fn uses_tls(&self, security: &Security) -> bool {
        match self {
            Self::Fixed(endpoint) => endpoint.uri().scheme_str() == Some("https"),
            Self::Dns(_) => security.dns_tls,
        }
    }

    /// This target's endpoint (at `addr`, for a name), with TLS when it uses
    /// it: verifying the name's host for a name, the URL's host for a URL,
    /// unless `AUTH_TLS_SERVER_NAME` says otherwise.
    pub(super) fn endpoint(
        &self,
        addr: Option<SocketAddr>,
        security: &Security,
    ) -> Result<Endpoint, tonic::transport::Error> {
        let (endpoint, name) = match (self, addr) {
            (Self::Fixed(endpoint), _) => (Endpoint::clone(endpoint), None),
            (Self::Dns(name), Some(addr)) => {
                let scheme = if security.dns_tls { "https" } else { "http" };
                let endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))?;
                (endpoint, Some(name.host.as_str()))
            }
            // Not asked for (names' endpoints have addresses): the name itself.
            (Self::Dns(name), None) => (
                Endpoint::from_shared(format!("http://{}:{}", name.host, name.port))?,
                None,
            ),
        };
        match (&security.tls, self.uses_tls(security)) {
            (Some(tls), true) => tls.apply(endpoint, name),
            _ => Ok(endpoint),
        }
    }
}
