//! Integration tests: each starts the real server on port 0 with its own data and keys
//! folders and talks HTTP to it.

// spawn_app() and the TestApp methods named after user actions.
mod helpers;
// A throwaway PostgreSQL server shared by the tests that need one.
mod postgres;
// An https server on loopback for documents clients publish (metadata, key sets).
mod documents;

// The admin API under /api/v1/: authorisation, problem details, paging, each area.
mod admin;
// The code + PKCE flow through login and consent, and every authorization-endpoint rule.
mod authorization_code;
// Registering and managing apps in /o/applications/.
mod applications;
// Malformed, oversized, duplicated and hostile input: at the token endpoint, and a NUL anywhere.
mod bad_input;
// The pages in a real browser (chromium via playwright-core).
mod browser;
// Cluster mode: nodes of the real binary sharing one PostgreSQL database, the CLI beside them,
// sealed server secrets, the client cache, 503 while the database is down.
mod cluster;
// The operator's console under /admin/: access, CSRF, confirmations, each area, hostile forms.
pub mod console;
// Consent memory: remembered approvals, prompt=consent, first-party apps.
mod consent;
// The `tessera` binary's commands, including refusal while a server holds the data.
mod cli;
// Connections at the HTTP edge: caps overall and per address, head and body deadlines, HTTP/1.1.
mod connections;
// A newcomer's first start: the banner, `serve --dev`'s demo user and app, completions, --version.
mod first_start;
// SIGKILL under refresh and code-exchange load, restarts on the same data folder.
mod crash;
// The device authorization grant (RFC 8628): endpoint, verification page, polling errors.
pub mod device;
// client_credentials, client authentication methods and the access token's claims.
mod client_credentials;
// DPoP (RFC 9449): proofs at the token endpoint, bound tokens at UserInfo and a resource server.
mod dpop;
// RFC 8414 metadata, the JWKS, the OpenAPI document, CORS and health.
mod discovery;
// Client ID Metadata Documents: clients named by a URL, fetched safely, shown by host.
mod client_documents;
// private_key_jwt client authentication (RFC 7523): every key type, every bad assertion, jwks_uri.
mod private_key_jwt;
// Introspection (RFC 7662) and revocation (RFC 7009).
mod introspect_revoke;
// Third-party libraries: PyJWT and jose verify tokens via the JWKS; Authlib runs the code flow.
pub mod interop;
// The MCP TypeScript SDK logs in (registration, Client ID Metadata Document) and calls a tool.
mod mcp;
// private_key_jwt from third-party clients (openid-client, Authlib): every algorithm, jwks_uri.
mod private_key_jwt_interop;
// Second factors: an authenticator app and recovery codes, throttled, and what tokens say.
pub mod factors;
// Passkeys (WebAuthn) with a software authenticator: registration, sign-in, second step, attacks.
pub mod passkeys;
// Key rotation, and restarting on the same data and keys.
mod keys;
// Logging in: the throttle per user and per address, the device cookie, the login form's cookie
// and redirect, the bound on parallel password checks.
mod login;
// /metrics through a Prometheus parser, /readyz, JSON log lines, no secret in any log line.
mod observability;
// OpenID Connect: ID tokens, UserInfo, discovery, prompt/max_age, logout, the profile page.
mod oidc;
// Home and authorized-apps pages.
mod pages;
// Pushed authorization requests (RFC 9126).
mod par;
// The DPoP, PAR and token exchange client settings, through every way a client is made.
mod client_policy;
// The operator role (issue 16): the CLI and the admin API give it, no page does.
mod operators;
// The audit trail (issue 16): every change recorded once, by whom; the pending file; the listing.
mod audit;
mod backup;
// The built-in test consumer at /o/playground/.
mod playground;
// Purging expired records: the store stays flat, and nothing still usable goes.
mod purge;
// Dynamic client registration (RFC 7591/7592) and its policy.
mod registration;
// The store contract every backend keeps, with its atomicity under concurrency.
mod store_contract;
// SDKs generated from the spec (openapi-python-client, openapi-typescript) against the server.
mod sdk;
// The resource-server verifier (tessera::resource).
mod resource;
// The example resource server (tessera-resource's) as a process: RFC 6750 errors, scopes, RFC 9728 metadata.
pub mod resource_server;
// Request rates per client and per address (429 with Retry-After), behind trusted proxies too.
mod rate_limit;
// Refresh rotation, reuse detection and concurrency (with the code's, on one credential).
mod refresh_token;
// Token exchange (RFC 8693): policy, scope, audiences, act chains, revocation through the grant.
mod token_exchange;
