//! An example resource server protected by Tessera: it verifies bearer JWTs offline against the
//! issuer's JWKS (`tessera_resource`), and DPoP-bound ones with their proofs (RFC 9449 §7),
//! answers RFC 6750 / RFC 9449 errors, and publishes RFC 9728 protected resource metadata. It
//! depends on this crate only, not on the server.
//!
//! Run: `cargo run --release --example resource_server -- --issuer URL --addr HOST:PORT [--audience AUD]`
//! (from the repository's root or from this crate's folder).
//!
//! - `GET /api/posts/protected_view/` (scope `read`) answers `Hello, there!!`
//! - `GET /api/posts/` (scope `read`) lists posts; `POST /api/posts/` (scope `write`) adds one
//! - `GET /api/posts/drafts/` (scope `read`) lists drafts: it needs a two-factor login at most
//!   five minutes old, and answers RFC 9470's `insufficient_user_authentication` challenge
//!   otherwise (step-up)
//! - `GET /.well-known/oauth-protected-resource` describes the resource
//!
//! It prints `listening on http://HOST:PORT` once it is ready (port 0 picks a free port).

use std::sync::{Arc, Mutex};

use clap::Parser;
use poem::listener::{Acceptor, Listener, TcpListener};
use poem::web::{Data, Json};
use poem::{get, handler, EndpointExt, Route, Server};
use serde_json::{json, Value};
use tessera_resource::bearer::{require_authentication, require_scope, Bearer, ProtectedResource};
use tessera_resource::{AuthenticationRequirement, Verifier, VerifierConfig};

/// The login level Tessera calls two factors (its `acr_values_supported`).
const MULTI_FACTOR: &str = "urn:tessera:acr:multi-factor";
/// How recent a login reading drafts needs.
const STEP_UP_MAX_AGE: u64 = 300;

#[derive(Parser)]
struct Args {
    /// The Tessera issuer URL.
    #[arg(long)]
    issuer: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8001")]
    addr: String,
    /// The audience to accept (Tessera's default audience is its issuer).
    #[arg(long)]
    audience: Option<String>,
}

/// The posts, in memory.
#[derive(Default)]
struct Posts(Mutex<Vec<Value>>);

#[handler]
fn protected_view(Bearer(claims): Bearer, resource: Data<&Arc<ProtectedResource>>) -> poem::Result<&'static str> {
    require_scope(&resource, &claims, "read")?;
    Ok("Hello, there!!")
}

#[handler]
fn list_posts(
    Bearer(claims): Bearer,
    resource: Data<&Arc<ProtectedResource>>,
    posts: Data<&Arc<Posts>>,
) -> poem::Result<Json<Value>> {
    require_scope(&resource, &claims, "read")?;
    let posts = posts.0 .0.lock().map(|p| p.clone()).unwrap_or_default();
    Ok(Json(json!({ "posts": posts })))
}

#[handler]
fn create_post(
    Bearer(claims): Bearer,
    resource: Data<&Arc<ProtectedResource>>,
    posts: Data<&Arc<Posts>>,
    body: String,
) -> poem::Result<Json<Value>> {
    require_scope(&resource, &claims, "write")?;
    let post = json!({ "author": claims.sub, "text": body });
    if let Ok(mut all) = posts.0 .0.lock() {
        all.push(post.clone());
    }
    Ok(Json(post))
}

/// Drafts are a step-up route (RFC 9470): two factors, at most five minutes ago.
#[handler]
fn list_drafts(Bearer(claims): Bearer, resource: Data<&Arc<ProtectedResource>>) -> poem::Result<Json<Value>> {
    require_scope(&resource, &claims, "read")?;
    let required = AuthenticationRequirement::acr(&[MULTI_FACTOR]).max_age(STEP_UP_MAX_AGE);
    require_authentication(&resource, &claims, &required)?;
    Ok(Json(json!({ "drafts": [], "author": claims.sub })))
}

#[handler]
fn metadata(resource: Data<&Arc<ProtectedResource>>) -> Json<Value> {
    Json(resource.metadata())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let issuer = args.issuer.trim_end_matches('/').to_string();
    let audience = args.audience.unwrap_or_else(|| issuer.clone());
    let verifier = Verifier::discover(VerifierConfig::new(&issuer, &audience)).await?;
    let acceptor = TcpListener::bind(args.addr).into_acceptor().await?;
    let local = acceptor.local_addr()[0]
        .as_socket_addr()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("no address"))?;
    let base = format!("http://{local}");
    let resource = Arc::new(ProtectedResource {
        verifier,
        resource: audience,
        issuer,
        scopes_supported: vec!["read".into(), "write".into()],
        metadata_url: format!("{base}/.well-known/oauth-protected-resource"),
        base_url: base.clone(),
    });
    let app = Route::new()
        .at("/api/posts/protected_view/", get(protected_view))
        .at("/api/posts/", get(list_posts).post(create_post))
        .at("/api/posts/drafts/", get(list_drafts))
        .at("/.well-known/oauth-protected-resource", get(metadata))
        .data(resource)
        .data(Arc::new(Posts::default()));
    println!("listening on {base}");
    Server::new_with_acceptor(acceptor).run(app).await?;
    Ok(())
}
