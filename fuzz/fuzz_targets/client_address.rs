//! The client's address for the rate limits: `TRUSTED_PROXIES` (a list of addresses and CIDR
//! blocks, parsed at start) and the `X-Forwarded-For` headers of every request, read when the
//! TCP peer is a trusted proxy (`TrustedProxies::client`).
//!
//! Input: text lines: the `TRUSTED_PROXIES` list, the peer's address, then one
//! `X-Forwarded-For` value per line.
//!
//! Properties: nothing panics; an untrusted peer (and any peer when nothing is trusted) is the
//! client, whatever it forwards; otherwise the client is the peer or one of the forwarded
//! addresses, IPv4-mapped IPv6 addresses given as IPv4.

#![no_main]

use std::net::IpAddr;

use crawbl_edge::fuzzing::TrustedProxies;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let (Some(list), Some(peer)) = (lines.next(), lines.next()) else {
        return;
    };
    let Ok(trusted) = list.parse::<TrustedProxies>() else {
        return;
    };
    let Ok(peer) = peer.trim().parse::<IpAddr>() else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    let mut forwarded = Vec::new();
    for line in lines {
        let Ok(value) = http::HeaderValue::from_str(line) else {
            continue;
        };
        headers.append("x-forwarded-for", value);
        forwarded.extend(
            line.split(',')
                .filter_map(|entry| entry.trim().parse::<IpAddr>().ok())
                .map(canonical),
        );
    }

    let client = trusted.client(peer, &headers);
    let nobody = TrustedProxies::default();
    assert_eq!(nobody.client(peer, &headers), canonical(peer));
    assert!(
        client == canonical(peer) || forwarded.contains(&client),
        "{client} is neither the peer {peer} nor forwarded ({forwarded:?})"
    );
    assert!(!matches!(client, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some()));
    if trusted == nobody {
        assert_eq!(client, canonical(peer));
    }
    // Trusting exactly the peer's own address (a block of one) lets its forwarded address in.
    let exact = match canonical(peer) {
        IpAddr::V4(v4) => format!("{v4}/32"),
        IpAddr::V6(v6) => format!("{v6}/128"),
    };
    let only_peer: TrustedProxies = exact.parse().expect("an address as a block of one");
    let behind = only_peer.client(peer, &headers);
    assert!(behind == canonical(peer) || forwarded.contains(&behind));
});

fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}
