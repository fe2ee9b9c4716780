//! Whose request this is, for `PER_IP_RATE`: the socket's peer, or, when the
//! peer is one of `TRUSTED_PROXIES`, the right-most `X-Forwarded-For` address
//! that is not itself a trusted proxy. Anything a client can write further
//! left is ignored, so an untrusted peer cannot pick its own bucket.

use std::net::IpAddr;
use std::str::FromStr;

use axum::http::HeaderMap;

/// An address block such as `10.0.0.0/8` or `2001:db8::/32`; a bare address
/// is a block of one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let (addr, prefix) = match value.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (value, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{value:?} is not an IP address or CIDR block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= max)
                .ok_or_else(|| format!("{value:?}: the prefix length must be 0 to {max}"))?,
        };
        // `::ffff:10.0.0.0/104` is the IPv4 block 10.0.0.0/8, matched as IPv4.
        let (network, prefix) = match (network, canonical(network)) {
            (IpAddr::V6(_), IpAddr::V4(v4)) => {
                let prefix = prefix.checked_sub(96).ok_or_else(|| {
                    format!("{value:?}: an IPv4-mapped block needs a prefix of 96 to 128")
                })?;
                (IpAddr::V4(v4), prefix)
            }
            _ => (network, prefix),
        };
        Ok(Self { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, addr: IpAddr) -> bool {
        match (self.network, canonical(addr)) {
            (IpAddr::V4(network), IpAddr::V4(addr)) => {
                // The IPv4 bits at the top, so the prefix counts from there.
                masked(u128::from(network.to_bits()) << 96, self.prefix)
                    == masked(u128::from(addr.to_bits()) << 96, self.prefix)
            }
            (IpAddr::V6(network), IpAddr::V6(addr)) => {
                masked(network.to_bits(), self.prefix) == masked(addr.to_bits(), self.prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of `bits`.
fn masked(bits: u128, prefix: u8) -> u128 {
    match prefix {
        0 => 0,
        128.. => bits,
        prefix => bits & (u128::MAX << (128 - u32::from(prefix))),
    }
}

/// An IPv4 peer seen through a dual-stack socket (`::ffff:a.b.c.d`) is that
/// IPv4 address, for matching and for its bucket.
fn canonical(addr: IpAddr) -> IpAddr {
    addr.to_canonical()
}

/// The proxies whose `X-Forwarded-For` is believed. Empty: none.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<Cidr>);

impl TrustedProxies {
    pub fn new(blocks: Vec<Cidr>) -> Self {
        Self(blocks)
    }

    fn trusts(&self, addr: IpAddr) -> bool {
        self.0.iter().any(|block| block.contains(addr))
    }

    /// The client's address for a request from `peer` with `headers`.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        // Every X-Forwarded-For header, in order, is one list; walk it from the
        // right (the hop nearest us) past the trusted proxies.
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match parse_hop(hop) {
                Ok(addr) if self.trusts(addr) => client = canonical(addr),
                Ok(addr) => return canonical(addr),
                // Garbage where an address should be: the last trusted hop is
                // the nearest address we can vouch for.
                Err(_) => return client,
            }
        }
        client
    }
}

/// One `X-Forwarded-For` entry: an address, or (as some load balancers
/// write) an address with a port, `1.2.3.4:5678` or `[2001:db8::1]:443`.
fn parse_hop(hop: &str) -> Result<IpAddr, std::net::AddrParseError> {
    let hop = hop.trim();
    hop.parse::<IpAddr>().or_else(|error| {
        hop.parse::<std::net::SocketAddr>()
            .map(|addr| addr.ip())
            .map_err(|_| error)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(value: &str) -> IpAddr {
        value.parse().expect("test address")
    }

    fn trusted(blocks: &str) -> TrustedProxies {
        TrustedProxies::new(
            blocks
                .split(',')
                .map(|block| block.parse().expect("test block"))
                .collect(),
        )
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().expect("ascii"));
        }
        headers
    }

    #[test]
    fn blocks_parse_and_match() {
        let block: Cidr = "10.1.0.0/16".parse().expect("valid");
        assert!(block.contains(ip("10.1.255.3")));
        assert!(!block.contains(ip("10.2.0.1")));
        assert!(block.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped peer");
        let single: Cidr = "192.0.2.7".parse().expect("valid");
        assert!(single.contains(ip("192.0.2.7")) && !single.contains(ip("192.0.2.8")));
        let v6: Cidr = "2001:db8::/32".parse().expect("valid");
        assert!(v6.contains(ip("2001:db8:1::1")) && !v6.contains(ip("2001:db9::1")));
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .expect("valid")
                .contains(ip("8.8.8.8"))
        );
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "host",
            "10.0.0.0/x",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let proxies = trusted("10.0.0.0/8");
        let peer = ip("203.0.113.9");
        assert_eq!(proxies.client_ip(peer, &xff(&["198.51.100.1"])), peer);
        assert_eq!(
            TrustedProxies::default().client_ip(ip("10.0.0.1"), &xff(&["1.2.3.4"])),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_rightmost_untrusted_hop_is_the_client() {
        let proxies = trusted("10.0.0.0/8,192.0.2.1");
        let peer = ip("10.0.0.5");
        // The client forged the left entry; the proxies appended the rest.
        let headers = xff(&["6.6.6.6, 198.51.100.7", "192.0.2.1"]);
        assert_eq!(proxies.client_ip(peer, &headers), ip("198.51.100.7"));
        assert_eq!(
            proxies.client_ip(peer, &HeaderMap::new()),
            peer,
            "no header: the proxy"
        );
        assert_eq!(
            proxies.client_ip(peer, &xff(&["10.0.0.9"])),
            ip("10.0.0.9"),
            "only proxies: the farthest one"
        );
        assert_eq!(
            proxies.client_ip(peer, &xff(&["198.51.100.7, nonsense, 10.0.0.9"])),
            ip("10.0.0.9"),
            "garbage stops the walk at the last trusted hop"
        );
        assert_eq!(
            proxies.client_ip(peer, &xff(&["198.51.100.7:41234, [2001:db8::1]:443"])),
            ip("2001:db8::1"),
            "entries with a port"
        );
    }
}
