//! Client addresses: ranges of them (`trusted_proxies`), the client's address seen through
//! trusted reverse proxies, and the key an address is counted under by per-address limits.
//!
//! The client's address, seen through trusted reverse proxies. Rate limits and login
//! throttling count per address; behind a proxy every TCP connection comes from the proxy, so
//! without this every client would share one budget and one client could lock out the rest.
//!
//! Only hops the operator listed (`trusted_proxies`) are believed: each proxy appends the
//! address it received the request from to `X-Forwarded-For`, so the list is read from the
//! nearest hop backwards and the first address that is not a trusted proxy is the client.
//! Anything further left was written by the client itself and could say anything.

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use poem::http::HeaderMap;
use poem::Request;

/// An address or a CIDR block, e.g. `10.0.0.0/8`, `192.168.1.7` or `fd00::/8`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddressRange {
    network: IpAddr,
    prefix: u32,
}

impl FromStr for AddressRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.split_once('/') {
            Some((address, prefix)) => (address, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = address
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let network = network.to_canonical();
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(|| format!("{text:?} has a prefix length outside 0-{bits}"))?,
        };
        Ok(AddressRange { network, prefix })
    }
}

impl AddressRange {
    pub fn contains(&self, address: IpAddr) -> bool {
        match (self.network, address.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(address)) => {
                let mask = u32::MAX.checked_shl(32 - self.prefix).unwrap_or(0);
                u32::from(network) & mask == u32::from(address) & mask
            }
            (IpAddr::V6(network), IpAddr::V6(address)) => {
                let mask = u128::MAX.checked_shl(128 - self.prefix).unwrap_or(0);
                u128::from(network) & mask == u128::from(address) & mask
            }
            _ => false,
        }
    }
}

/// The address a request came from, believing `X-Forwarded-For` only as far as `trusted`
/// proxies wrote it. `None` when the connection has no IP address (never for TCP).
pub fn client_address(req: &Request, trusted: &[AddressRange]) -> Option<IpAddr> {
    let peer = req.remote_addr().as_socket_addr()?.ip();
    Some(client_behind(peer, req.headers(), trusted))
}

/// The address a request came from, worked out once per request by the HTTP front
/// ([`ClientAddress::remember`]) and read by every handler that counts or records callers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClientAddress(Option<IpAddr>);

impl ClientAddress {
    /// Works out the address of `req` (see [`client_address`]) and keeps it in the request.
    pub fn remember(req: &mut Request, trusted: &[AddressRange]) -> Self {
        let address = ClientAddress(client_address(req, trusted));
        req.extensions_mut().insert(address);
        address
    }

    /// The address the front remembered for `req`. Every route is behind the front; were one
    /// not, its callers would be counted by the connection's own address, never all as one.
    pub fn of(req: &Request) -> Self {
        match req.extensions().get::<ClientAddress>() {
            Some(address) => *address,
            None => ClientAddress(client_address(req, &[])),
        }
    }

    pub fn ip(self) -> Option<IpAddr> {
        self.0
    }

    /// The key per-address limits count it under ([`address_key`]: an IPv6 host by its /64).
    pub fn key(self) -> Option<String> {
        self.0.map(address_key)
    }

    /// The address as the audit trail shows it: the whole address, not its /64.
    pub fn shown(self) -> Option<String> {
        self.0.map(|ip| ip.to_string())
    }
}

fn client_behind(peer: IpAddr, headers: &HeaderMap, trusted: &[AddressRange]) -> IpAddr {
    let is_trusted = |address: IpAddr| trusted.iter().any(|range| range.contains(address));
    let mut client = peer.to_canonical();
    if !is_trusted(client) {
        return client;
    }
    // Repeated header lines are one list, in order (RFC 9110 §5.3).
    let hops: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .collect();
    for hop in hops.iter().rev() {
        let hop = hop.trim();
        // Some proxies write a port too ("203.0.113.7:4711", "[2001:db8::1]:4711").
        let Some(address) = hop
            .parse::<IpAddr>()
            .ok()
            .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        else {
            // Unreadable: the nearest hop that could be read is as far as can be told.
            break;
        };
        client = address.to_canonical();
        if !is_trusted(client) {
            break;
        }
    }
    client
}

/// The client a per-address limit counts an address as: an IPv4 address itself, an IPv6
/// address by its /64 prefix (its low 64 bits cleared), since one host is normally given a
/// whole /64 and could otherwise count as 2^64 different clients. Every per-address limit (rate
/// limits, login throttling, registrations, open connections) counts this way.
pub fn counted_as(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !u128::from(u64::MAX))),
        v4 => v4,
    }
}

/// [`counted_as`], as a string key.
pub fn address_key(ip: IpAddr) -> String {
    counted_as(ip).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use poem::http::HeaderValue;

    fn ranges(texts: &[&str]) -> Vec<AddressRange> {
        texts.iter().map(|t| t.parse().unwrap()).collect()
    }

    fn forwarded(lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append("x-forwarded-for", HeaderValue::from_str(line).unwrap());
        }
        headers
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn ranges_parse_and_match() {
        let private = "10.0.0.0/8".parse::<AddressRange>().unwrap();
        assert!(private.contains(ip("10.200.3.4")));
        assert!(!private.contains(ip("11.0.0.1")));
        assert!(private.contains(ip("::ffff:10.1.2.3")), "IPv4-mapped IPv6 is IPv4");
        let one = "192.168.1.7".parse::<AddressRange>().unwrap();
        assert!(one.contains(ip("192.168.1.7")) && !one.contains(ip("192.168.1.8")));
        let everything = "0.0.0.0/0".parse::<AddressRange>().unwrap();
        assert!(everything.contains(ip("8.8.8.8")));
        let v6 = "fd00::/8".parse::<AddressRange>().unwrap();
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")) && !v6.contains(ip("10.0.0.1")));
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/x", ""] {
            assert!(bad.parse::<AddressRange>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_header_is_ignored_unless_the_peer_is_a_trusted_proxy() {
        let headers = forwarded(&["203.0.113.9"]);
        assert_eq!(client_behind(ip("198.51.100.1"), &headers, &[]), ip("198.51.100.1"));
        let trusted = ranges(&["10.0.0.0/8"]);
        assert_eq!(
            client_behind(ip("198.51.100.1"), &headers, &trusted),
            ip("198.51.100.1")
        );
        assert_eq!(client_behind(ip("10.0.0.2"), &headers, &trusted), ip("203.0.113.9"));
    }

    #[test]
    fn the_first_untrusted_hop_from_the_right_is_the_client() {
        let trusted = ranges(&["10.0.0.0/8", "192.168.0.1"]);
        // The client forged the leftmost entry; the proxies appended the rest.
        let headers = forwarded(&["1.1.1.1, 203.0.113.9", "192.168.0.1"]);
        assert_eq!(client_behind(ip("10.0.0.2"), &headers, &trusted), ip("203.0.113.9"));
        let ports = forwarded(&["203.0.113.9:4711", "[2001:db8::1]:80"]);
        assert_eq!(client_behind(ip("10.0.0.2"), &ports, &trusted), ip("2001:db8::1"));
        // Only proxies all the way: the farthest one is the best answer.
        let proxies = forwarded(&["10.1.1.1, 192.168.0.1"]);
        assert_eq!(client_behind(ip("10.0.0.2"), &proxies, &trusted), ip("10.1.1.1"));
        // No header: the proxy itself.
        assert_eq!(
            client_behind(ip("10.0.0.2"), &HeaderMap::new(), &trusted),
            ip("10.0.0.2")
        );
        // An unreadable hop stops the walk at the nearest readable one.
        let garbage = forwarded(&["203.0.113.9, not-an-address, 10.3.3.3"]);
        assert_eq!(client_behind(ip("10.0.0.2"), &garbage, &trusted), ip("10.3.3.3"));
    }

    #[test]
    fn ipv6_addresses_count_by_their_64_bit_prefix() {
        let key = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }
}
