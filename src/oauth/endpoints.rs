//! Every path Tessera serves, named once, and the table of them ([`ROUTES`]). The core builds
//! its URLs from these names (discovery, client-assertion audiences, registration URIs, the
//! device verification URI, login's return path); the HTTP layer reads the table: which side
//! serves a path (the OpenAPI service or the pages), whether POSTs to it are limited per client
//! address before any work is done, how its operations' callers authenticate (which the
//! generated spec cannot say by itself), and the label `/metrics` counts it under. The pages
//! mount their handlers on these names, and poem-openapi's `#[oai(path)]` literals are checked
//! against the table by a test, so no list of paths lives anywhere else.

/// The token endpoint (RFC 6749 §3.2).
pub const TOKEN: &str = "/o/token/";
/// The device authorization endpoint (RFC 8628 §3.1).
pub const DEVICE_AUTHORIZATION: &str = "/o/device_authorization/";
/// Pushed authorization requests (RFC 9126).
pub const PUSHED_AUTHORIZATION_REQUEST: &str = "/o/par/";
/// Token revocation (RFC 7009).
pub const REVOCATION: &str = "/o/revoke_token/";
/// Token introspection (RFC 7662).
pub const INTROSPECTION: &str = "/o/introspect/";
/// OpenID Connect UserInfo.
pub const USERINFO: &str = "/o/userinfo/";
/// Dynamic client registration (RFC 7591); a client's own registration is below it.
pub const REGISTRATION: &str = "/o/register/";
/// A registered client's registration (RFC 7592), `{client_id}` being its id.
pub const CLIENT_REGISTRATION: &str = "/o/register/{client_id}/";
pub const JWKS: &str = "/.well-known/jwks.json";
/// RFC 8414 metadata.
pub const SERVER_METADATA: &str = "/.well-known/oauth-authorization-server";
/// OpenID Connect Discovery.
pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
pub const HEALTH: &str = "/healthz";
pub const READY: &str = "/readyz";
pub const METRICS: &str = "/metrics";
/// The authorization endpoint (RFC 6749 §3.1).
pub const AUTHORIZE: &str = "/o/authorize/";
pub const LOGIN: &str = "/o/login/";
/// The second step of a login: a code from an authenticator app, a recovery code, or a passkey.
pub const LOGIN_FACTOR: &str = "/o/login/factor/";
/// Signing in with a passkey alone (no username typed).
pub const LOGIN_PASSKEY: &str = "/o/login/passkey/";
/// A user's sign-in factors: passkeys, authenticator app, recovery codes.
pub const SECURITY: &str = "/o/security/";
/// RP-initiated logout (OpenID Connect), also the logout page.
pub const LOGOUT: &str = "/o/logout/";
pub const PROFILE: &str = "/o/profile/";
pub const AUTHORIZED_APPS: &str = "/o/authorized_tokens/";
pub const HOME: &str = "/";
pub const STYLESHEET: &str = "/o/static/tessera.css";
pub const SCRIPT: &str = "/o/static/tessera.js";
/// The script that runs passkey ceremonies (WebAuthn needs one).
pub const PASSKEY_SCRIPT: &str = "/o/static/passkey.js";
/// The device verification page (RFC 8628 §3.3).
pub const DEVICE: &str = "/o/device/";
pub const PLAYGROUND: &str = "/o/playground/";
pub const PLAYGROUND_CALLBACK: &str = "/o/playground/callback/";
/// The application-management pages live under this prefix.
pub const APPLICATIONS: &str = "/o/applications/";
/// The operator's console: every page under it needs the operator role.
pub const CONSOLE: &str = "/admin/";
pub const DOCS: &str = "/docs";
pub const SPEC: &str = "/openapi.json";

/// Which side of the server answers a path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ServedBy {
    /// The OpenAPI service (documented in `openapi/openapi.json`).
    Api,
    /// The pages (HTML for people, and the docs).
    Page,
}

/// How the callers of an operation authenticate, where the endpoint reads the credentials
/// itself (so the spec says it in post-processing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// Client authentication: HTTP Basic or form fields, or only `client_id` for a public
    /// client (RFC 6749 §2.3).
    BasicOrForm,
    /// A bearer token in the `Authorization` header (RFC 6750 §2.1).
    Bearer,
    /// A bearer token in the header or the form body (RFC 6750 §2.1-2.2).
    BearerOrForm,
    /// A bearer token, or none (open registration).
    BearerOrNone,
}

/// One row of the table.
#[derive(Clone, Copy, Debug)]
pub struct Route {
    /// The path as served, trailing slash included. A `{name}` segment matches any one
    /// segment; a trailing `*` matches any rest.
    pub path: &'static str,
    pub served_by: ServedBy,
    /// POSTs are limited per client address (`rate_limit_per_address`) before anything else.
    pub limited_per_address: bool,
    /// The operations' authentication, by HTTP method.
    pub auth: &'static [(&'static str, ClientAuth)],
    /// The `route` label of `/metrics`.
    pub metric: &'static str,
}

const fn api(path: &'static str, metric: &'static str) -> Route {
    Route {
        path,
        served_by: ServedBy::Api,
        limited_per_address: false,
        auth: &[],
        metric,
    }
}

const fn page(path: &'static str, metric: &'static str) -> Route {
    Route {
        path,
        served_by: ServedBy::Page,
        limited_per_address: false,
        auth: &[],
        metric,
    }
}

const fn limited(route: Route) -> Route {
    Route {
        limited_per_address: true,
        ..route
    }
}

const fn authenticated(route: Route, auth: &'static [(&'static str, ClientAuth)]) -> Route {
    Route { auth, ..route }
}

/// Every path, in the order they are matched.
pub const ROUTES: &[Route] = &[
    limited(authenticated(
        api(TOKEN, "/o/token"),
        &[("post", ClientAuth::BasicOrForm)],
    )),
    limited(authenticated(
        api(DEVICE_AUTHORIZATION, "/o/device_authorization"),
        &[("post", ClientAuth::BasicOrForm)],
    )),
    limited(authenticated(
        api(PUSHED_AUTHORIZATION_REQUEST, "/o/par"),
        &[("post", ClientAuth::BasicOrForm)],
    )),
    limited(authenticated(
        api(REVOCATION, "/o/revoke_token"),
        &[("post", ClientAuth::BasicOrForm)],
    )),
    limited(authenticated(
        api(INTROSPECTION, "/o/introspect"),
        &[("post", ClientAuth::BasicOrForm)],
    )),
    authenticated(
        api(USERINFO, "/o/userinfo"),
        &[("get", ClientAuth::Bearer), ("post", ClientAuth::BearerOrForm)],
    ),
    limited(authenticated(
        api(REGISTRATION, "/o/register"),
        &[("post", ClientAuth::BearerOrNone)],
    )),
    authenticated(
        api(CLIENT_REGISTRATION, "/o/register/{client_id}"),
        &[
            ("get", ClientAuth::Bearer),
            ("put", ClientAuth::Bearer),
            ("delete", ClientAuth::Bearer),
        ],
    ),
    api(JWKS, "/.well-known/jwks.json"),
    api(SERVER_METADATA, "/.well-known/oauth-authorization-server"),
    api(OPENID_CONFIGURATION, "/.well-known/openid-configuration"),
    api(HEALTH, "/healthz"),
    api(READY, "/readyz"),
    api(METRICS, "/metrics"),
    api("/api/v1/clients*", "/api/v1/clients/*"),
    api("/api/v1/users*", "/api/v1/users/*"),
    api("/api/v1/grants*", "/api/v1/grants/*"),
    api("/api/v1/keys*", "/api/v1/keys/*"),
    api("/api/v1/audit", "/api/v1/audit"),
    page(AUTHORIZE, "/o/authorize"),
    limited(page(LOGIN, "/o/login")),
    limited(page(LOGIN_FACTOR, "/o/login/factor")),
    limited(page(LOGIN_PASSKEY, "/o/login/passkey")),
    page(SECURITY, "/o/security"),
    page(LOGOUT, "/o/logout"),
    page(PROFILE, "/o/profile"),
    limited(page(DEVICE, "/o/device")),
    page(AUTHORIZED_APPS, "/o/authorized_tokens"),
    page(PLAYGROUND, "/o/playground"),
    page(PLAYGROUND_CALLBACK, "/o/playground/callback"),
    page(STYLESHEET, "/o/static/*"),
    page(SCRIPT, "/o/static/*"),
    page(PASSKEY_SCRIPT, "/o/static/*"),
    page("/o/applications/*", "/o/applications/*"),
    page("/admin/*", "/admin/*"),
    page(DOCS, "/docs"),
    page(SPEC, "/openapi.json"),
    page(HOME, "/"),
];

/// Whether `path` fits `pattern` (trailing slashes aside: `/o/token` is `/o/token/`), where a
/// `{name}` segment matches any one segment and a trailing `*` any rest.
pub fn fits(pattern: &str, path: &str) -> bool {
    if let Some(prefix) = pattern.strip_suffix('*') {
        return path.starts_with(prefix) || path == prefix.trim_end_matches('/');
    }
    let trim = |p: &str| {
        if p.len() > 1 {
            p.trim_end_matches('/').to_string()
        } else {
            p.to_string()
        }
    };
    let (pattern, path) = (trim(pattern), trim(path));
    let (mut want, mut got) = (pattern.split('/'), path.split('/'));
    loop {
        match (want.next(), got.next()) {
            (None, None) => return true,
            (Some(w), Some(g)) if w == g || (w.starts_with('{') && w.ends_with('}') && !g.is_empty()) => {}
            _ => return false,
        }
    }
}

/// The row for a request path, if Tessera serves it.
pub fn route_of(path: &str) -> Option<&'static Route> {
    ROUTES.iter().find(|route| fits(route.path, path))
}

/// Whether the pages answer `path` (everything else goes to the OpenAPI service).
pub fn is_page(path: &str) -> bool {
    route_of(path).is_some_and(|r| r.served_by == ServedBy::Page)
}

/// Whether a POST to `path` is limited per client address.
pub fn limited_per_address(path: &str) -> bool {
    route_of(path).is_some_and(|r| r.limited_per_address)
}

/// The `route` label for `/metrics`: a fixed set of values, whatever paths are asked for.
pub fn metric_label(path: &str) -> &'static str {
    route_of(path).map_or("other", |r| r.metric)
}

/// How callers of `method` on the documented `path` authenticate, if the spec must be told.
pub fn client_auth(path: &str, method: &str) -> Option<ClientAuth> {
    let route = route_of(path)?;
    route.auth.iter().find(|(m, _)| *m == method).map(|(_, auth)| *auth)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_find_their_rows_with_or_without_the_trailing_slash() {
        assert_eq!(metric_label("/o/token/"), "/o/token");
        assert_eq!(metric_label("/o/token"), "/o/token");
        assert_eq!(metric_label("/o/register/abc123/"), "/o/register/{client_id}");
        assert_eq!(metric_label("/o/register/"), "/o/register");
        assert_eq!(metric_label("/api/v1/clients/abc/secret"), "/api/v1/clients/*");
        assert_eq!(metric_label("/api/v1/clients"), "/api/v1/clients/*");
        assert_eq!(metric_label("/"), "/");
        assert_eq!(metric_label("/wp-admin/../../etc/passwd"), "other");
        assert!(is_page("/o/applications/x/edit/") && is_page("/o/login/") && is_page("/"));
        assert!(!is_page("/o/token/") && !is_page("/nowhere"));
        assert!(limited_per_address("/o/login/") && limited_per_address("/o/token"));
        assert!(!limited_per_address("/o/userinfo/"));
        assert_eq!(client_auth("/o/userinfo/", "post"), Some(ClientAuth::BearerOrForm));
        assert_eq!(
            client_auth("/o/register/{client_id}/", "delete"),
            Some(ClientAuth::Bearer)
        );
        assert_eq!(client_auth("/.well-known/jwks.json", "get"), None);
    }

    /// poem-openapi's `#[oai(path)]` attributes need literals: the spec they make must serve
    /// exactly the table's API rows, so a path renamed in one place and not the other fails here.
    #[test]
    fn the_spec_serves_exactly_the_tables_api_paths() {
        let spec: serde_json::Value = serde_json::from_str(&crate::http::spec()).unwrap();
        let served: Vec<&String> = spec["paths"].as_object().unwrap().keys().collect();
        for path in &served {
            let row = route_of(path).unwrap_or_else(|| panic!("{path} is not in the table"));
            assert_eq!(row.served_by, ServedBy::Api, "{path}");
        }
        for row in ROUTES
            .iter()
            .filter(|r| r.served_by == ServedBy::Api && !r.path.ends_with('*'))
        {
            assert!(
                served.iter().any(|path| fits(row.path, path)),
                "{} is not in the spec",
                row.path
            );
        }
        for (name, path) in [("TOKEN", TOKEN), ("USERINFO", USERINFO), ("REGISTRATION", REGISTRATION)] {
            assert!(served.iter().any(|p| *p == path), "{name}");
        }
    }
}
