//! The URIs of a client: how many and how long, which redirect URIs may be registered and
//! how a requested one is matched (RFC 9700 §4.1.3, RFC 8252 §7), resource indicators
//! (RFC 8707), and which client ids are Client ID Metadata Document URLs.

use url::Url;

use crate::oauth::{Error, ErrorCode};

/// The most URIs of one kind a client may register, and the longest URI: generous for real
/// apps, and small enough that a registration (open dynamic registration above all) cannot
/// make the server store arbitrary amounts of data.
pub(crate) const MAX_URIS: usize = 50;
pub(crate) const MAX_URI_BYTES: usize = 2048;

/// Checks a list of URIs against [`MAX_URIS`] and [`MAX_URI_BYTES`], before anything else reads
/// (or echoes) them.
pub(crate) fn check_uri_list(what: &str, uris: &[String]) -> Result<(), Error> {
    if uris.len() > MAX_URIS {
        return Err(Error::invalid_request(format!(
            "a client may have at most {MAX_URIS} {what}"
        )));
    }
    if uris.iter().any(|uri| uri.len() > MAX_URI_BYTES) {
        return Err(Error::invalid_request(format!(
            "{what} are at most {MAX_URI_BYTES} bytes long"
        )));
    }
    // A URL parser takes a raw NUL or newline (it escapes them in its own copy only).
    if uris.iter().any(|uri| uri.chars().any(char::is_control)) {
        return Err(Error::invalid_request(format!(
            "{what} must not contain control characters"
        )));
    }
    Ok(())
}

/// Checks a redirect URI at registration: absolute, no fragment (RFC 6749 §3.1.2), and either
/// https, loopback http (RFC 8252 §7.3), or a private-use scheme for native apps (RFC 8252 §7.1).
pub fn validate_redirect_uri(uri: &str) -> Result<(), Error> {
    let bad = |why: &str| Error::invalid_request(format!("redirect URI {uri:?} {why}"));
    let url = Url::parse(uri).map_err(|_| bad("is not an absolute URI"))?;
    if url.fragment().is_some() || uri.contains('#') {
        return Err(bad("must not contain a fragment"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&url) => Ok(()),
        "http" => Err(bad("must use https unless it is a loopback address")),
        "javascript" | "data" | "file" | "vbscript" | "blob" | "about" => Err(bad("uses a forbidden scheme")),
        // A private-use scheme must be a reverse domain name (RFC 8252 §7.1).
        scheme if scheme.contains('.') => Ok(()),
        _ => Err(bad(
            "must be https, loopback http, or a reverse-domain private-use scheme",
        )),
    }
}

pub(super) fn validate_resource(resource: &str) -> Result<(), Error> {
    match Url::parse(resource) {
        Ok(url) if url.fragment().is_none() && !resource.contains('#') => Ok(()),
        _ => Err(Error::new(
            ErrorCode::InvalidTarget,
            "a resource must be an absolute URI without a fragment (RFC 8707 §2)",
        )),
    }
}

pub(crate) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

/// Finds the registered redirect URI that `requested` matches. Matching is exact string
/// comparison (RFC 9700 §4.1.3), except that a loopback http URI may differ in port only,
/// because native apps get an ephemeral port from the OS (RFC 8252 §7.3).
pub fn match_redirect_uri<'a>(registered: &'a [String], requested: &str) -> Option<&'a String> {
    if let Some(exact) = registered.iter().find(|r| r.as_str() == requested) {
        return Some(exact);
    }
    let requested_url = Url::parse(requested).ok()?;
    // Refuse anything the parser would normalise: only the port may differ from the registration.
    if requested_url.scheme() != "http" || !is_loopback(&requested_url) || requested_url.as_str() != requested {
        return None;
    }
    let without_port = |mut url: Url| {
        url.set_port(None).ok()?;
        Some(url.to_string())
    };
    let wanted = without_port(requested_url)?;
    registered.iter().find(|r| {
        Url::parse(r)
            .ok()
            .filter(|u| u.scheme() == "http" && is_loopback(u) && u.as_str() == r.as_str())
            .and_then(without_port)
            .is_some_and(|u| u == wanted)
    })
}

/// Whether `client_id` has the shape of a Client ID Metadata Document URL: https, a host, a
/// path other than `/`, no fragment, no credentials, no dot segments, and written as a URL
/// parser writes it (so one document cannot be named by two spellings).
pub fn is_document_url(client_id: &str) -> bool {
    if !client_id.starts_with("https://") || client_id.len() > MAX_URI_BYTES {
        return false;
    }
    let Ok(url) = Url::parse(client_id) else {
        return false;
    };
    url.host().is_some()
        && url.path() != "/"
        && url.fragment().is_none()
        && url.username().is_empty()
        && url.password().is_none()
        && !client_id.contains("/./")
        && !client_id.contains("/../")
        && url.as_str() == client_id
}
