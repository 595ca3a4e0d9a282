//! Requests Tessera makes to URLs that someone else chose (the playground's "call an API",
//! and documents a client names by URL), made safe against server-side request forgery:
//!
//! - no redirect is followed (a redirect could lead to an internal address, carrying whatever
//!   credentials the request had);
//! - the address actually connected to must be public: loopback, private, link-local and every
//!   other special-use range of RFC 6890 are refused. The check sits in the DNS resolver that
//!   the connection itself uses (and on IP literals before any connection), so a name that
//!   resolves to a public address once and a private one the next time (DNS rebinding) cannot
//!   get past it. `outbound_allow_private_addresses` lifts the rule, for development and tests;
//! - no proxy from the environment is used (it would connect for us, unchecked);
//! - connect and total timeouts, and a cap on the body, enforced while it streams in, so a huge
//!   or endless response costs at most the cap in memory.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use url::Url;

/// How outbound requests are made.
#[derive(Clone, Debug)]
pub struct OutboundPolicy {
    /// Let requests reach loopback, private and other special-use addresses.
    pub allow_private_addresses: bool,
    /// Extra certificate authorities trusted for https (e.g. a private or a test CA).
    pub extra_roots: Vec<reqwest::Certificate>,
    pub connect_timeout: Duration,
    /// The longest a whole request may take, body included.
    pub timeout: Duration,
}

impl Default for OutboundPolicy {
    fn default() -> Self {
        OutboundPolicy {
            allow_private_addresses: false,
            extra_roots: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        }
    }
}

/// Why an outbound request failed.
#[derive(Debug, thiserror::Error)]
pub enum OutboundError {
    #[error("the URL must use {0}")]
    Scheme(&'static str),
    #[error("{0} is not a public address; outbound requests may not reach it")]
    NotPublic(String),
    /// A name that resolves to no public address: which addresses it resolves to is not said,
    /// or anyone could learn what internal names resolve to.
    #[error("{0} does not resolve to a public address; outbound requests may not reach it")]
    NoPublicAddress(String),
    #[error("the request failed: {0}")]
    Request(String),
    #[error("no answer within {0} seconds")]
    Timeout(u64),
}

/// A response, with at most `max_body` bytes of its body.
#[derive(Debug)]
pub struct Fetched {
    pub status: u16,
    pub content_type: Option<String>,
    pub cache_control: Option<String>,
    /// A `WWW-Authenticate` challenge (the playground follows RFC 9470's).
    pub www_authenticate: Option<String>,
    pub body: Vec<u8>,
    /// The response had more than was read.
    pub truncated: bool,
}

/// The outbound HTTP client.
pub struct Outbound {
    client: reqwest::Client,
    policy: OutboundPolicy,
}

impl Outbound {
    pub fn new(policy: OutboundPolicy) -> Outbound {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            // No connection is kept after its request: the hosts are others' choice, and an
            // idle connection to each of thousands of them would hold a socket apiece.
            .pool_max_idle_per_host(0)
            .no_proxy()
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.timeout)
            .user_agent(concat!("tessera/", env!("CARGO_PKG_VERSION")));
        if !policy.allow_private_addresses {
            builder = builder.dns_resolver(Arc::new(PublicOnly));
        }
        for root in &policy.extra_roots {
            builder = builder.add_root_certificate(root.clone());
        }
        // Building fails only if the TLS backend cannot start, which rustls always can.
        let client = builder.build().expect("the outbound HTTP client can be built");
        Outbound { client, policy }
    }

    /// GETs `url` (http or https; https only when `https_only`), with `bearer` as
    /// `Authorization: Bearer` if given, reading at most `max_body` bytes of the body.
    pub async fn get(
        &self,
        url: &str,
        https_only: bool,
        bearer: Option<&str>,
        accept: &str,
        max_body: usize,
    ) -> Result<Fetched, OutboundError> {
        let url = Url::parse(url).map_err(|e| OutboundError::Request(e.to_string()))?;
        match url.scheme() {
            "https" => {}
            "http" if !https_only => {}
            _ => {
                return Err(OutboundError::Scheme(if https_only {
                    "https"
                } else {
                    "http or https"
                }))
            }
        }
        // An IP literal never reaches the resolver: check it here.
        if !self.policy.allow_private_addresses {
            let literal = match url.host() {
                Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
                Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
                _ => None,
            };
            if let Some(ip) = literal.filter(|ip| !is_public(*ip)) {
                return Err(OutboundError::NotPublic(ip.to_string()));
            }
        }
        let mut request = self.client.get(url).header(reqwest::header::ACCEPT, accept);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let timeout = self.policy.timeout.as_secs();
        let failed = |e: reqwest::Error| {
            if e.is_timeout() {
                OutboundError::Timeout(timeout)
            } else {
                OutboundError::Request(without_url(&e))
            }
        };
        let mut response = request.send().await.map_err(failed)?;
        // The resolver checked every address it gave out; this confirms the one used.
        if let Some(peer) = response.remote_addr() {
            if !self.policy.allow_private_addresses && !is_public(peer.ip()) {
                return Err(OutboundError::NotPublic(peer.ip().to_string()));
            }
        }
        let status = response.status().as_u16();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let content_type = header(reqwest::header::CONTENT_TYPE);
        let cache_control = header(reqwest::header::CACHE_CONTROL);
        let www_authenticate = header(reqwest::header::WWW_AUTHENTICATE);
        let mut body = Vec::new();
        let mut truncated = false;
        while let Some(chunk) = response.chunk().await.map_err(failed)? {
            let room = max_body - body.len();
            if chunk.len() > room {
                body.extend_from_slice(&chunk[..room]);
                truncated = true;
                break; // dropping the response closes the connection
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            status,
            content_type,
            cache_control,
            www_authenticate,
            body,
            truncated,
        })
    }
}

/// reqwest's message without the URL, which may carry a token in its query.
fn without_url(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "the URL");
    }
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// A resolver that hands out public addresses only.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let resolved: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = resolved.iter().copied().filter(|a| is_public(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(OutboundError::NoPublicAddress(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Whether `ip` is an ordinary public unicast address: not in any special-use block of the
/// IANA registries (RFC 6890 and its updates).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let special = a == 0                                  // "this network" 0.0.0.0/8
        || a == 10                                        // private 10/8
        || (a == 100 && (64..128).contains(&b))           // shared address space 100.64/10
        || a == 127                                       // loopback
        || (a == 169 && b == 254)                         // link-local
        || (a == 172 && (16..32).contains(&b))            // private 172.16/12
        || (a == 192 && b == 0 && c == 0)                 // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2)                 // TEST-NET-1
        || (a == 192 && b == 88 && c == 99)               // 6to4 relay anycast
        || (a == 192 && b == 168)                         // private 192.168/16
        || (a == 198 && (b == 18 || b == 19))             // benchmarking 198.18/15
        || (a == 198 && b == 51 && c == 100)              // TEST-NET-2
        || (a == 203 && b == 0 && c == 113)               // TEST-NET-3
        || a >= 224; // multicast 224/4, reserved 240/4, broadcast
    !special
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let s = ip.segments();
    let special = ip.is_unspecified()
        || ip.is_loopback()
        || (s[0] == 0x64 && s[1] == 0xff9b)                // NAT64 64:ff9b::/96 (and /48 local use)
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0])        // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] < 0x200)               // IETF protocol assignments 2001::/23
        || (s[0] == 0x2001 && s[1] == 0xdb8)              // documentation 2001:db8::/32
        || s[0] == 0x2002                                 // 6to4 2002::/16
        || (s[0] & 0xfe00) == 0xfc00                      // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80                      // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0                      // site-local (deprecated) fec0::/10
        || (s[0] & 0xff00) == 0xff00                      // multicast ff00::/8
        || s[0..4] == [0, 0, 0, 0]; // ::/64: IPv4-compatible ::/96, IPv4-translated ::ffff:0:0/96
    !special
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_use_addresses_are_not_public() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.51.100.1",
            "203.0.113.9",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "::ffff:0:7f00:1",
            "64:ff9b::a9fe:a9fe",
            "100::1",
            "2001:db8::1",
            "2001:10::1",
            "2002:a9fe:a9fe::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
        ] {
            assert!(!is_public(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(ip.parse().unwrap()), "{ip}");
        }
    }
}
