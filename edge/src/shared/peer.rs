//! The client's IP address, for rate limits: the TCP peer, or, when the peer is a trusted proxy
//! (`TRUSTED_PROXIES`, e.g. the load balancer), the nearest address in `X-Forwarded-For` that is
//! not one. Without that, every client behind a proxy would share the proxy's limits.

use std::net::{IpAddr, SocketAddr};

use axum::extract::ConnectInfo;
use http::HeaderMap;
use http::request::Parts;

/// Addresses and CIDR blocks (`10.0.0.0/8`, `::1`) whose `X-Forwarded-For` is believed, kept
/// in the IPv6 space with IPv4 as mapped addresses (`10.0.0.0/8` is `::ffff:10.0.0.0/104`), so
/// one comparison serves both families and a mapped entry means what it maps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(u128, u8)>);

impl std::str::FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list; empty trusts none.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let mut blocks = Vec::new();
        for item in list
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (address, prefix) = match item.split_once('/') {
                Some((address, prefix)) => (address, Some(prefix)),
                None => (item, None),
            };
            let address: IpAddr = address
                .parse()
                .map_err(|_| format!("{item:?} is not an IP address or CIDR block"))?;
            let (bits, mapped) = if address.is_ipv4() {
                (32, 96)
            } else {
                (128, 0)
            };
            let prefix = match prefix {
                Some(prefix) => prefix
                    .parse::<u8>()
                    .ok()
                    .filter(|prefix| *prefix <= bits)
                    .ok_or_else(|| format!("{item:?} has no valid prefix length"))?,
                None => bits,
            };
            blocks.push((
                masked(as_v6_bits(address), prefix + mapped),
                prefix + mapped,
            ));
        }
        Ok(Self(blocks))
    }
}

impl TrustedProxies {
    fn contains(&self, address: IpAddr) -> bool {
        let address = as_v6_bits(address);
        self.0
            .iter()
            .any(|(block, prefix)| masked(address, *prefix) == *block)
    }

    /// The client of a request from `peer` carrying `headers`.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        if !self.contains(peer) {
            return canonical(peer);
        }
        // Each proxy appends the address it got the request from: read from the right, past
        // the trusted ones. An unparsable entry ends the trust there.
        let mut client = canonical(peer);
        for value in headers.get_all("x-forwarded-for").iter().rev() {
            let Ok(value) = value.to_str() else {
                return client;
            };
            for entry in value.rsplit(',') {
                let Ok(address) = entry.trim().parse::<IpAddr>() else {
                    return client;
                };
                client = canonical(address);
                if !self.contains(client) {
                    return client;
                }
            }
        }
        client
    }

    /// The client of a request (its parts), if the server recorded the TCP peer.
    pub fn client_of(&self, parts: &Parts) -> Option<IpAddr> {
        let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
        Some(self.client(peer.ip(), &parts.headers))
    }
}

/// IPv4-mapped IPv6 addresses as IPv4, so one client has one address.
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The address as 128 bits, IPv4 as its IPv4-mapped IPv6 address.
fn as_v6_bits(address: IpAddr) -> u128 {
    match address {
        IpAddr::V4(v4) => v4.to_ipv6_mapped().to_bits(),
        IpAddr::V6(v6) => v6.to_bits(),
    }
}

/// The first `prefix` bits of `bits` (`prefix` ≤ 128).
fn masked(bits: u128, prefix: u8) -> u128 {
    match u32::from(prefix) {
        0 => 0,
        prefix => bits & (u128::MAX << (128 - prefix)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append("x-forwarded-for", value.parse().expect("header value"));
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("an address")
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let trusted: TrustedProxies = "10.0.0.0/8".parse().expect("valid");
        let client = trusted.client(ip("203.0.113.9"), &forwarded(&["198.51.100.1"]));
        assert_eq!(client, ip("203.0.113.9"));
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("10.0.0.2"), &forwarded(&["1.2.3.4"])),
            ip("10.0.0.2")
        );
    }

    #[test]
    fn behind_trusted_proxies_the_nearest_untrusted_forwarded_address_is_the_client() {
        let trusted: TrustedProxies = "10.0.0.0/8, 192.168.1.7".parse().expect("valid");
        // A client-sent spoof on the left is ignored: only what trusted proxies appended counts.
        let headers = forwarded(&["6.6.6.6, 198.51.100.1", "192.168.1.7"]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &headers), ip("198.51.100.1"));
        let garbage = forwarded(&["not-an-address"]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &garbage), ip("10.1.2.3"));
        assert_eq!(
            trusted.client(ip("::ffff:10.1.2.3"), &forwarded(&["198.51.100.2"])),
            ip("198.51.100.2")
        );
    }

    #[test]
    fn ipv4_mapped_entries_are_the_ipv4_addresses_and_blocks_they_map() {
        // Found by the `client_address` fuzz target: a mapped entry was compared as IPv4 with
        // its IPv6 prefix length, an overflow. Now every block is compared in one 128-bit space.
        let trusted: TrustedProxies = "::ffff:10.0.0.0/104, ::ffff:192.168.1.7"
            .parse()
            .expect("valid");
        assert_eq!(trusted, "10.0.0.0/8, 192.168.1.7".parse().expect("valid"));
        let headers = forwarded(&["198.51.100.1"]);
        assert_eq!(trusted.client(ip("10.1.2.3"), &headers), ip("198.51.100.1"));
        assert_eq!(
            trusted.client(ip("::ffff:192.168.1.7"), &headers),
            ip("198.51.100.1")
        );
        assert_eq!(
            trusted.client(ip("203.0.113.9"), &headers),
            ip("203.0.113.9")
        );
        // Shorter than /96 it is an IPv6 block like any other, and the IPv4 peers it spans (as
        // mapped addresses) are in it; a block beside the mapped range holds none of them.
        let wide: TrustedProxies = "::ffff:0:0/95".parse().expect("valid");
        assert_eq!(wide.client(ip("10.1.2.3"), &headers), ip("198.51.100.1"));
        let beside: TrustedProxies = "::fffe:0:0/96".parse().expect("valid");
        assert_eq!(beside.client(ip("10.1.2.3"), &headers), ip("10.1.2.3"));
    }

    #[test]
    fn lists_that_are_not_addresses_or_blocks_are_refused() {
        assert!("10.0.0.0/33".parse::<TrustedProxies>().is_err());
        assert!("proxy.internal".parse::<TrustedProxies>().is_err());
        assert!("::/0".parse::<TrustedProxies>().is_ok());
        assert_eq!("".parse::<TrustedProxies>(), Ok(TrustedProxies::default()));
    }
}
