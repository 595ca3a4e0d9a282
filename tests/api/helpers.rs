use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tessera::oauth::audit::Caller;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::redirect::Policy;
use serde_json::Value;
use tempfile::TempDir;
use tessera::oauth::client::NewClient;
use tessera::oauth::Provider;
use tessera::store::{ClientType, GrantType};
use tessera::{App, Config};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const USERNAME: &str = "alice";
pub const PASSWORD: &str = "correct horse battery";
pub const REDIRECT_URI: &str = "https://app.example/callback";
pub const RESOURCE: &str = "https://api.example";
/// The post-logout redirect URI of [`TestApp::register_relying_party`]'s clients.
pub const LOGGED_OUT: &str = "https://app.example/logged-out";

/// A registered client as the tests know it.
#[derive(Clone, Debug)]
pub struct TestClient {
    pub id: String,
    pub secret: Option<String>,
}

/// A server as its clients see it: where it is, an HTTP client with a cookie jar (the user's
/// browser), and the two seeded clients. Everything that only talks HTTP lives here, so the
/// same steps drive an in-process server ([`TestApp`]) and the real binary.
#[derive(Clone)]
pub struct Remote {
    pub issuer: String,
    /// Where the server listens; the same as the issuer unless a test set the issuer.
    pub base: String,
    /// Keeps cookies and never follows redirects, so tests see every hop.
    pub http: reqwest::Client,
    /// A confidential client with every grant and one redirect URI.
    pub client: TestClient,
    /// A public client (PKCE, no secret) with the code and refresh grants.
    pub public_client: TestClient,
}

/// A running in-process server and everything a test needs to talk to it.
pub struct TestApp {
    remote: Remote,
    pub provider: Arc<Provider>,
    /// The server's store, to look inside it (the server's own code reaches it only through
    /// the provider).
    pub store: Arc<dyn tessera::store::Store>,
    pub data_dir: PathBuf,
    pub keys_dir: PathBuf,
    dirs: Option<TempDir>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
    /// The client [`TestApp::introspect`] asks as: an administration client, which may
    /// introspect every client's tokens (a client learns only about its own otherwise).
    introspector: tokio::sync::OnceCell<TestClient>,
}

impl std::ops::Deref for TestApp {
    type Target = Remote;
    fn deref(&self) -> &Remote {
        &self.remote
    }
}

/// A PKCE verifier and its S256 challenge.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Pkce {
        let verifier = tessera::oauth::random_token(32);
        let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes()));
        Pkce { verifier, challenge }
    }
}

pub fn test_config(dirs: &TempDir) -> Config {
    Config {
        addr: "127.0.0.1:0".into(),
        data_dir: dirs.path().join("data"),
        keys_dir: dirs.path().join("keys"),
        // Operators sign in with a password alone in the tests of everything else; the
        // default (an authenticator app required) has tests of its own (`factors`).
        operator_mfa: tessera::config::MfaPolicy::Optional,
        ..Config::default()
    }
}

pub async fn spawn_app() -> TestApp {
    let dirs = tempfile::tempdir().expect("temp dir");
    let config = test_config(&dirs);
    spawn_app_with(config, dirs).await
}

/// Whether this run tests cluster mode: `TESSERA_TEST_BACKEND=postgres` runs every in-process
/// server on its own database of the tests' PostgreSQL instead of a data folder (tests/run.sh
/// runs the suite both ways).
pub fn on_postgres() -> bool {
    std::env::var("TESSERA_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// Points `config` at this test's database when the suite runs on PostgreSQL.
async fn use_test_backend(config: &mut Config, dirs: &TempDir) {
    if !on_postgres() || config.database_url.is_some() {
        return;
    }
    use_database(config, dirs).await;
}

/// Points `config` at a database of the tests' PostgreSQL: one database per test folder
/// (remembered beside it, so a restarted server, and `backend_env`, find its data again) and a
/// key-encryption key file (0600) in the folder.
async fn use_database(config: &mut Config, dirs: &TempDir) {
    let memo = dirs.path().join("database-url");
    let url = match std::fs::read_to_string(&memo) {
        Ok(url) => url,
        Err(_) => {
            let url = crate::postgres::PgServer::shared().create_database().await;
            std::fs::write(&memo, &url).unwrap();
            url
        }
    };
    let kek = dirs.path().join("key-encryption-key");
    if !kek.exists() {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&kek)
            .unwrap();
        file.write_all(tessera::keys::database::KeyEncryptionKey::generate().as_bytes())
            .unwrap();
    }
    config.database_url = Some(url);
    config.database.key_encryption_key_file = Some(kek);
}

/// A server in cluster mode on a fresh database of the tests' PostgreSQL, whatever backend the
/// suite runs on, with `adjust`; returns it and the database's URL.
pub async fn spawn_on_postgres(adjust: impl FnOnce(&mut Config)) -> (TestApp, String) {
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    use_database(&mut config, &dirs).await;
    let url = config.database_url.clone().unwrap();
    adjust(&mut config);
    (spawn_app_with(config, dirs).await, url)
}

/// Starts a server with `config`, seeding a confidential client, a public client and a user
/// when the data folder has none yet.
pub async fn spawn_app_with(mut config: Config, dirs: TempDir) -> TestApp {
    use_test_backend(&mut config, &dirs).await;
    let (data_dir, keys_dir) = (config.data_dir.clone(), config.keys_dir.clone());
    let store = once_unlocked(|| tessera::open_store(&config)).await;
    let app = App::build_with_store(config, store.clone())
        .await
        .expect("server starts");
    let provider = app.provider();
    let issuer = app.issuer().to_string();
    let base = format!("http://{}", app.addr());
    let (client, public_client) = seed(&provider, &dirs).await;
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        remote: Remote::new(issuer, base, client, public_client),
        provider,
        store,
        data_dir,
        keys_dir,
        dirs: Some(dirs),
        shutdown: Some(tx),
        server: Some(server),
        introspector: tokio::sync::OnceCell::new(),
    }
}

/// Client settings with only the essentials: an operator's client of this type and these
/// grants, scope `read`, no redirect URI or resource, the server's lifetimes. Tests set the
/// rest with `NewClient { field, ..client_settings(..) }`.
pub fn client_settings(name: &str, client_type: ClientType, grant_types: Vec<GrantType>) -> NewClient {
    NewClient {
        name: name.into(),
        client_type,
        grant_types,
        redirect_uris: vec![],
        scope: "read".into(),
        resources: vec![],
        access_token_ttl: None,
        refresh_token_ttl: None,
        skip_consent: false,
        owner_user_id: None,
        post_logout_redirect_uris: vec![],
        id_token_signed_response_alg: None,
        admin: false,
        keys: None,
        policy: Default::default(),
    }
}

/// Seeds once per data folder; the ids are remembered in a file beside it so that a
/// restarted server's test sees the same clients.
async fn seed(provider: &Provider, dirs: &TempDir) -> (TestClient, TestClient) {
    let memo = dirs.path().join("seeded.json");
    if let Ok(bytes) = std::fs::read(&memo) {
        let v: Value = serde_json::from_slice(&bytes).unwrap();
        let c = |k: &str| TestClient {
            id: v[k]["id"].as_str().unwrap().into(),
            secret: v[k]["secret"].as_str().map(String::from),
        };
        return (c("client"), c("public"));
    }
    let (confidential, secret) = provider
        .register_client(
            &Caller::system(),
            NewClient {
                name: "Test App".into(),
                client_type: ClientType::Confidential,
                grant_types: vec![
                    GrantType::AuthorizationCode,
                    GrantType::ClientCredentials,
                    GrantType::RefreshToken,
                ],
                redirect_uris: vec![REDIRECT_URI.into()],
                scope: "read write".into(),
                resources: vec![RESOURCE.into()],
                access_token_ttl: None,
                refresh_token_ttl: None,
                skip_consent: false,
                owner_user_id: None,
                post_logout_redirect_uris: vec![],
                id_token_signed_response_alg: None,
                admin: false,
                keys: None,
                policy: Default::default(),
            },
        )
        .await
        .unwrap();
    let (public, _) = provider
        .register_client(
            &Caller::system(),
            NewClient {
                name: "Public App".into(),
                client_type: ClientType::Public,
                grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
                redirect_uris: vec!["http://127.0.0.1/callback".into()],
                scope: "read".into(),
                resources: vec![],
                access_token_ttl: None,
                refresh_token_ttl: None,
                skip_consent: false,
                owner_user_id: None,
                post_logout_redirect_uris: vec![],
                id_token_signed_response_alg: None,
                admin: false,
                keys: None,
                policy: Default::default(),
            },
        )
        .await
        .unwrap();
    provider
        .create_user(&Caller::system(), USERNAME, PASSWORD, Some("alice@example.com".into()))
        .await
        .unwrap();
    let client = TestClient {
        id: confidential.client_id,
        secret,
    };
    let public_client = TestClient {
        id: public.client_id,
        secret: None,
    };
    let memo_value = serde_json::json!({
        "client": {"id": client.id, "secret": client.secret},
        "public": {"id": public_client.id},
    });
    std::fs::write(memo, memo_value.to_string()).unwrap();
    (client, public_client)
}

/// The text of `<code id="ID">` in a page (a client id or a secret shown once).
pub fn code_element(html: &str, id: &str) -> Option<String> {
    let marker = format!("<code id=\"{id}\">");
    let start = html.find(&marker)? + marker.len();
    Some(html[start..start + html[start..].find('<')?].to_string())
}

/// The CSRF token of the form on the page at `path`, as `browser` sees it.
pub async fn csrf_of(browser: &Remote, path: &str) -> String {
    hidden_input(&browser.get_text(path).await, "csrf_token").expect("the page has a CSRF token")
}

/// Pulls a hidden input's value out of a page.
pub fn hidden_input(html: &str, name: &str) -> Option<String> {
    let marker = format!("name=\"{name}\" value=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&#x2f;", "/")
            .replace("&amp;", "&")
            .replace("&#x3d;", "=")
            .replace("&#x3f;", "?"),
    )
}

pub fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("location")
        .expect("a Location header")
        .to_str()
        .unwrap()
        .to_string()
}

/// The query parameters of a URL.
pub fn query_of(url: &str) -> Vec<(String, String)> {
    url::Url::parse(url).unwrap().query_pairs().into_owned().collect()
}

pub fn param(url: &str, name: &str) -> Option<String> {
    query_of(url).into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

/// Decodes a JWT's header and claims without verifying it.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut parts = token.split('.');
    let mut decode = || serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts.next().unwrap()).unwrap()).unwrap();
    (decode(), decode())
}

impl Remote {
    /// A fresh browser (empty cookie jar) for the server at `base`.
    pub fn new(issuer: String, base: String, client: TestClient, public_client: TestClient) -> Remote {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .expect("http client");
        Remote {
            issuer,
            base,
            http,
            client,
            public_client,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// The query string of a typical authorization request by the confidential client.
    pub fn authorize_query(&self, pkce: &Pkce, state: &str) -> Vec<(String, String)> {
        [
            ("response_type", "code"),
            ("client_id", &self.client.id),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "read write"),
            ("state", state),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    /// GET /o/authorize/ with these parameters.
    pub async fn authorize(&self, params: &[(String, String)]) -> reqwest::Response {
        self.try_authorize(params).await.unwrap()
    }

    /// [`Remote::authorize`], handing back a transport error (the server went away).
    pub async fn try_authorize(&self, params: &[(String, String)]) -> reqwest::Result<reqwest::Response> {
        self.http.get(self.url("/o/authorize/")).query(params).send().await
    }

    /// Logs in through the login page, following the `next` the server asks for.
    pub async fn log_in(&self, next: &str, username: &str, password: &str) -> reqwest::Response {
        self.try_log_in(next, username, password).await.unwrap()
    }

    /// [`Remote::log_in`], handing back a transport error (the server went away).
    pub async fn try_log_in(&self, next: &str, username: &str, password: &str) -> reqwest::Result<reqwest::Response> {
        let page = self.http.get(self.url(next)).send().await?.text().await?;
        let csrf = hidden_input(&page, "csrf_token").expect("login page has a CSRF token");
        let next_field = hidden_input(&page, "next").unwrap_or_default();
        self.http
            .post(self.url("/o/login/"))
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("username", username),
                ("password", password),
                ("next", next_field.as_str()),
            ])
            .send()
            .await
    }

    /// Shows the consent page for an authorization request and answers it.
    pub async fn consent(&self, params: &[(String, String)], decision: &str) -> reqwest::Response {
        let page = self.authorize(params).await;
        assert_eq!(page.status(), 200, "the consent page is shown");
        let html = page.text().await.unwrap();
        let csrf = hidden_input(&html, "csrf_token").expect("consent page has a CSRF token");
        self.http
            .post(self.url("/o/authorize/"))
            .query(params)
            .form(&[("csrf_token", csrf.as_str()), ("decision", decision)])
            .send()
            .await
            .unwrap()
    }

    /// The whole front channel: authorize, log in if asked, allow if asked (a remembered
    /// consent goes straight back). Returns the redirect to the client.
    pub async fn authorize_and_allow(&self, params: &[(String, String)]) -> String {
        self.try_authorize_and_allow(params).await.unwrap()
    }

    /// [`Remote::authorize_and_allow`], handing back a transport error (the server went away);
    /// any other surprise still fails the test.
    pub async fn try_authorize_and_allow(&self, params: &[(String, String)]) -> reqwest::Result<String> {
        let mut response = self.try_authorize(params).await?;
        if response.status() == 302 && location(&response).starts_with("/o/login/") {
            let login = self.try_log_in(&location(&response), USERNAME, PASSWORD).await?;
            assert_eq!(login.status(), 303, "login succeeds");
            response = self.try_authorize(params).await?;
        }
        if response.status() == 302 {
            return Ok(location(&response));
        }
        assert_eq!(response.status(), 200, "the consent page is shown");
        let html = response.text().await?;
        let csrf = hidden_input(&html, "csrf_token").expect("consent page has a CSRF token");
        let decision = self
            .http
            .post(self.url("/o/authorize/"))
            .query(params)
            .form(&[("csrf_token", csrf.as_str()), ("decision", "allow")])
            .send()
            .await?;
        assert_eq!(decision.status(), 303);
        Ok(location(&decision))
    }

    /// Runs the code flow and returns the code (and the PKCE pair it is bound to).
    pub async fn get_code(&self) -> (String, Pkce) {
        self.try_get_code().await.unwrap()
    }

    /// [`Remote::get_code`], handing back a transport error (the server went away).
    pub async fn try_get_code(&self) -> reqwest::Result<(String, Pkce)> {
        let pkce = Pkce::new();
        let redirect = self
            .try_authorize_and_allow(&self.authorize_query(&pkce, "xyz"))
            .await?;
        Ok((param(&redirect, "code").expect("a code"), pkce))
    }

    pub async fn token(&self, client: &TestClient, form: &[(&str, &str)]) -> reqwest::Response {
        self.try_token(client, form).await.unwrap()
    }

    /// [`Remote::token`], handing back a transport error (the server went away).
    pub async fn try_token(&self, client: &TestClient, form: &[(&str, &str)]) -> reqwest::Result<reqwest::Response> {
        let mut request = self.http.post(self.url("/o/token/"));
        let mut form: Vec<(&str, &str)> = form.to_vec();
        match &client.secret {
            Some(secret) => request = request.basic_auth(&client.id, Some(secret)),
            None => form.push(("client_id", &client.id)),
        }
        request.form(&form).send().await
    }

    pub async fn exchange_code(&self, code: &str, verifier: &str) -> reqwest::Response {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier),
        ];
        self.token(&self.client, &form).await
    }

    /// Code flow plus exchange: the token response body.
    pub async fn get_tokens(&self) -> Value {
        let (code, pkce) = self.get_code().await;
        let response = self.exchange_code(&code, &pkce.verifier).await;
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn refresh(&self, refresh_token: &str) -> reqwest::Response {
        self.token(
            &self.client,
            &[("grant_type", "refresh_token"), ("refresh_token", refresh_token)],
        )
        .await
    }

    pub async fn client_credentials_as(&self, client: &TestClient, scope: &str) -> reqwest::Response {
        self.token(client, &[("grant_type", "client_credentials"), ("scope", scope)])
            .await
    }

    pub async fn client_credentials(&self, scope: &str) -> reqwest::Response {
        self.token(&self.client, &[("grant_type", "client_credentials"), ("scope", scope)])
            .await
    }

    /// Introspects `token` as `client` (HTTP Basic); asserts a 200.
    pub async fn introspect_as(&self, client: &TestClient, token: &str) -> Value {
        let response = self
            .http
            .post(self.url("/o/introspect/"))
            .basic_auth(&client.id, client.secret.as_ref())
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }

    pub async fn revoke(&self, token: &str, hint: Option<&str>) -> reqwest::Response {
        let mut form = vec![("token", token)];
        if let Some(hint) = hint {
            form.push(("token_type_hint", hint));
        }
        self.http
            .post(self.url("/o/revoke_token/"))
            .basic_auth(&self.client.id, self.client.secret.as_ref())
            .form(&form)
            .send()
            .await
            .unwrap()
    }

    /// GET a path and return the body as text.
    pub async fn get_text(&self, path: &str) -> String {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// GET a path and parse the JSON body.
    pub async fn get_json(&self, path: &str) -> Value {
        self.http
            .get(self.url(path))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub async fn get_jwks(&self) -> Value {
        self.get_json("/.well-known/jwks.json").await
    }

    /// Verifies an access token against the served JWKS with jsonwebtoken; returns the claims.
    pub async fn verify_with_jwks(&self, token: &str) -> Option<Value> {
        let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(self.get_jwks().await).ok()?;
        let header = jsonwebtoken::decode_header(token).ok()?;
        let jwk = jwks.find(header.kid.as_deref()?)?;
        let key = jsonwebtoken::DecodingKey::from_jwk(jwk).ok()?;
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_issuer(&[&self.issuer]);
        validation.validate_aud = false;
        jsonwebtoken::decode::<Value>(token, &key, &validation)
            .ok()
            .map(|d| d.claims)
    }
}

impl TestApp {
    /// The server's keyring, as `tessera keys` changes it.
    pub async fn key_vault(&self) -> Arc<dyn tessera::keys::KeyVault> {
        tessera::open_key_vault(&self.provider.config)
            .await
            .expect("the keyring opens")
    }

    /// Registers a confidential OpenID Connect relying party: code + refresh grants, the
    /// OpenID Connect scopes and `read`, a post-logout redirect URI, and the given ID token
    /// algorithm (`None`: RS256) and access token lifetime.
    pub async fn register_relying_party(
        &self,
        alg: Option<tessera::keys::Algorithm>,
        access_token_ttl: Option<u64>,
    ) -> TestClient {
        let (client, secret) = self
            .provider
            .register_client(
                &Caller::system(),
                NewClient {
                    name: "Relying Party".into(),
                    client_type: ClientType::Confidential,
                    grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
                    redirect_uris: vec![REDIRECT_URI.into()],
                    scope: "openid profile email read".into(),
                    resources: vec![RESOURCE.into()],
                    access_token_ttl,
                    refresh_token_ttl: None,
                    skip_consent: false,
                    owner_user_id: None,
                    post_logout_redirect_uris: vec![LOGGED_OUT.into()],
                    id_token_signed_response_alg: alg,
                    admin: false,
                    keys: None,
                    policy: Default::default(),
                },
            )
            .await
            .unwrap();
        TestClient {
            id: client.client_id,
            secret,
        }
    }

    /// Introspects `token` as a client the operator lets introspect every client's tokens
    /// (an administration client, made on first use); asserts a 200.
    pub async fn introspect(&self, token: &str) -> Value {
        let introspector = self
            .introspector
            .get_or_init(|| self.register_admin_client(None))
            .await
            .clone();
        self.introspect_as(&introspector, token).await
    }

    /// A new admin client and a `tessera:admin` access token of it.
    pub async fn admin_bearer(&self) -> (TestClient, String) {
        let admin = self.register_admin_client(None).await;
        let token: Value = self
            .client_credentials_as(&admin, "tessera:admin")
            .await
            .json()
            .await
            .unwrap();
        let bearer = token["access_token"].as_str().unwrap().to_string();
        (admin, bearer)
    }

    /// Registers an admin client (as `tessera app create --admin` does), with this access
    /// token lifetime (`None`: the server's).
    pub async fn register_admin_client(&self, access_token_ttl: Option<u64>) -> TestClient {
        let (client, secret) = self
            .provider
            .register_client(
                &Caller::system(),
                NewClient {
                    name: "Admin".into(),
                    client_type: ClientType::Confidential,
                    grant_types: vec![GrantType::ClientCredentials],
                    redirect_uris: vec![],
                    scope: "tessera:admin".into(),
                    resources: vec![],
                    access_token_ttl,
                    refresh_token_ttl: None,
                    skip_consent: false,
                    owner_user_id: None,
                    post_logout_redirect_uris: vec![],
                    id_token_signed_response_alg: None,
                    admin: true,
                    keys: None,
                    policy: Default::default(),
                },
            )
            .await
            .unwrap();
        TestClient {
            id: client.client_id,
            secret,
        }
    }

    /// Stops the server gracefully and returns its folders, so a test can start it again.
    pub async fn stop(mut self) -> TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(15), server)
                .await
                .expect("server stops")
                .unwrap()
                .unwrap();
        }
        // The test's handle on the store must go too before the folder can be opened again.
        let dirs = self.dirs.take().unwrap();
        drop(self);
        dirs
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The real `tessera` binary serving on a free port, its stderr drained on a thread so a
/// full pipe never stalls it. Killed if the test fails before stopping it.
pub struct ServerProcess {
    child: std::process::Child,
    pub base: String,
    /// Everything the server wrote to stderr, once it has exited.
    logs: Option<std::thread::JoinHandle<String>>,
    /// What it has written to stdout so far (the banner).
    stdout: Arc<std::sync::Mutex<String>>,
}

impl ServerProcess {
    /// Runs `tessera serve --addr 127.0.0.1:0 <args>` in `dir` (so `data/` and `keys/` are
    /// its defaults) with these extra environment variables, and waits for its address.
    pub fn start(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> ServerProcess {
        use std::io::Read;
        use std::process::{Command, Stdio};
        let mut child = Command::new(env!("CARGO_BIN_EXE_tessera"))
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .current_dir(dir)
            .env_remove("TESSERA_DATA_DIR")
            .env_remove("TESSERA_KEYS_DIR")
            .env_remove("TESSERA_CONFIG")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the tessera binary starts");
        let mut stderr = child.stderr.take().unwrap();
        let stdout = Arc::new(std::sync::Mutex::new(String::new()));
        let mut out = child.stdout.take().unwrap();
        let collected = stdout.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = out.read(&mut buf) {
                collected.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        // The address is in the first log lines: `addr=127.0.0.1:PORT ` as text, or
        // `"addr":"127.0.0.1:PORT"` with `--log-format json`.
        let mut head = Vec::new();
        let addr = loop {
            let mut byte = [0u8; 1];
            if stderr.read(&mut byte).unwrap_or(0) != 1 {
                let _ = child.kill();
                panic!(
                    "the server exited before logging its address:\n{}",
                    String::from_utf8_lossy(&head)
                );
            }
            head.push(byte[0]);
            let text = String::from_utf8_lossy(&head);
            let found = [("addr=", ' '), ("\"addr\":\"", '"')]
                .into_iter()
                .find_map(|(start, end)| {
                    let rest = text.split(start).nth(1)?;
                    rest.find(end).map(|at| rest[..at].to_string())
                });
            if let Some(addr) = found {
                break addr;
            }
        };
        let logs = std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = stderr.read_to_string(&mut rest);
            String::from_utf8_lossy(&head).into_owned() + &rest
        });
        ServerProcess {
            child,
            base: format!("http://{addr}"),
            logs: Some(logs),
            stdout,
        }
    }

    /// What the server printed on stdout, once it holds `until` (waits up to 10 s).
    pub fn stdout_once_it_has(&self, until: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.stdout.lock().unwrap().clone();
            if text.contains(until) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the server did not print {until:?}; it printed:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: the process gets no chance to flush or clean up.
    pub fn kill(mut self) -> String {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.logs.take().unwrap().join().unwrap()
    }

    /// SIGTERM and wait for a graceful exit; returns the logs.
    pub fn terminate(mut self) -> String {
        let pid = self.child.id().to_string();
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the server exits cleanly on SIGTERM: {status}");
        self.logs.take().unwrap().join().unwrap()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.logs.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Another browser (its own cookie jar) on the same server.
pub fn browser(app: &TestApp) -> Remote {
    Remote::new(
        app.issuer.clone(),
        app.base.clone(),
        app.client.clone(),
        app.public_client.clone(),
    )
}

/// A browser that sends every request as if from `address` through a trusted proxy (the
/// server must list 127.0.0.1 in `trusted_proxies`).
pub fn browser_behind_proxy(app: &TestApp, address: &str) -> Remote {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert("x-forwarded-for", address.parse().unwrap());
    let mut remote = browser(app);
    remote.http = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap();
    remote
}

pub async fn behind_a_proxy(adjust: impl FnOnce(&mut tessera::Config)) -> TestApp {
    let dirs = tempfile::tempdir().unwrap();
    let mut config = tessera::Config {
        trusted_proxies: vec!["127.0.0.1".parse().unwrap()],
        rate_limit_per_address: tessera::rate_limit::Rate::OFF,
        ..test_config(&dirs)
    };
    adjust(&mut config);
    spawn_app_with(config, dirs).await
}

/// The environment that points the `tessera` binary at the same backend as the in-process
/// servers of the test folder `dir`: nothing for a data folder, the database URL and the
/// key-encryption key on PostgreSQL.
pub fn backend_env(dir: &std::path::Path) -> Vec<(String, String)> {
    match std::fs::read_to_string(dir.join("database-url")) {
        Ok(url) => vec![
            ("TESSERA_DATABASE_URL".into(), url),
            (
                "TESSERA_KEY_ENCRYPTION_KEY".into(),
                std::fs::read_to_string(dir.join("key-encryption-key")).unwrap(),
            ),
        ],
        Err(_) => Vec::new(),
    }
}

/// The store of the test folder `dir` as the next start will find it (no server may hold a
/// data folder meanwhile).
pub async fn open_test_store(dir: &std::path::Path) -> Arc<dyn tessera::store::Store> {
    match std::fs::read_to_string(dir.join("database-url")) {
        Ok(url) => Arc::new(open_database(&url).await),
        Err(_) => {
            let data = dir.join("data");
            Arc::new(once_unlocked(|| async { tessera::store::SledStore::open(&data) }).await)
        }
    }
}

/// What `open` opens, once the data folder's lock is free: a server stopped a moment ago may
/// still be letting go of it. Tried for up to 5 s.
pub async fn once_unlocked<T, E, Fut>(open: impl Fn() -> Fut) -> T
where
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut tries = 0;
    loop {
        match open().await {
            Ok(opened) => return opened,
            Err(e) if tries < 50 && e.to_string().contains("in use") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("the store opens: {e}"),
        }
    }
}

/// Makes the stopped server's store in `dirs` look as an earlier version left it: no one-time
/// upgrade of its records has run ([`tessera::store::Store::upgraded`]).
pub async fn forget_upgrades(dirs: &TempDir) {
    match std::fs::read_to_string(dirs.path().join("database-url")) {
        Ok(url) => {
            let (db, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
            tokio::spawn(connection);
            db.execute("DELETE FROM upgrades", &[]).await.unwrap();
        }
        Err(_) => {
            let path = dirs.path().join("data");
            let db = once_unlocked(|| async { sled::open(&path).map_err(|e| format!("in use: {e}")) }).await;
            let meta = db.open_tree("meta").unwrap();
            for key in meta.scan_prefix("upgrade:").keys() {
                meta.remove(key.unwrap()).unwrap();
            }
            db.flush().unwrap();
        }
    }
}

/// The store in the database at `url`, read beside the servers using it.
pub async fn open_database(url: &str) -> tessera::store::PgStore {
    let options = tessera::store::PgOptions {
        url: url.into(),
        pool_size: 4,
        pool_wait: Duration::from_secs(10),
        ca_file: None,
    };
    tessera::store::PgStore::connect(&options)
        .await
        .expect("the database opens")
}

/// Every row of every table of the database at `url`, as JSON text (to search for secrets).
pub async fn database_text(url: &str) -> Vec<u8> {
    let (db, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    let tables = db
        .query(
            "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
            &[],
        )
        .await
        .unwrap();
    let mut text = Vec::new();
    for table in tables {
        let name: String = table.get(0);
        for row in db
            .query(&format!("SELECT row_to_json(t)::text FROM {name} t"), &[])
            .await
            .unwrap()
        {
            text.extend_from_slice(row.get::<_, String>(0).as_bytes());
        }
    }
    text
}

/// The command `tessera ARGS` in `dir`, with none of the caller's Tessera settings but `env`.
pub fn tessera_command(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tessera"));
    command.args(args).current_dir(dir);
    for name in [
        "TESSERA_DATA_DIR",
        "TESSERA_KEYS_DIR",
        "TESSERA_CONFIG",
        "TESSERA_DATABASE_URL",
        "TESSERA_KEY_ENCRYPTION_KEY",
    ] {
        command.env_remove(name);
    }
    command.envs(env.iter().copied());
    command
}

/// `tessera ARGS` run in `dir`, with none of the caller's Tessera settings but `env`, and
/// `stdin` on its standard input.
pub fn run_tessera(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)], stdin: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = tessera_command(dir, args, env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tessera runs");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// `tessera ARGS` run in `dir` as `run_tessera` runs it, logging at trace level; it must
/// succeed. Returns its standard output and its log (standard error).
pub fn run_tessera_traced(dir: &std::path::Path, args: &[&str], stdin: &str) -> (String, String) {
    let output = run_tessera(dir, args, &[("RUST_LOG", "trace")], stdin);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    (
        String::from_utf8(output.stdout).unwrap(),
        String::from_utf8(output.stderr).unwrap(),
    )
}

/// Runs the futures at once (each on its own task) and collects their outputs in order.
pub async fn join_all<T: Send + 'static>(
    futures: impl IntoIterator<Item = impl std::future::Future<Output = T> + Send + 'static>,
) -> Vec<T> {
    let tasks: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut outputs = Vec::with_capacity(tasks.len());
    for task in tasks {
        outputs.push(task.await.unwrap());
    }
    outputs
}

/// Runs `run` on every item, at most `parallel` at once (each on its own task); returns the
/// outputs in the order they finish.
pub async fn for_each_concurrent<I, F, Fut, T>(items: Vec<I>, parallel: usize, run: F) -> Vec<T>
where
    I: Send + 'static,
    F: Fn(I) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    let mut results = Vec::with_capacity(items.len());
    for item in items {
        if set.len() >= parallel {
            results.push(set.join_next().await.unwrap().unwrap());
        }
        set.spawn(run(item));
    }
    while let Some(result) = set.join_next().await {
        results.push(result.unwrap());
    }
    results
}

/// A reqwest client whose connections come from `from` (a loopback address of the test's
/// choosing, so the server counts it as another caller); it follows no redirect.
pub fn from_address(from: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(std::net::IpAddr::from(from))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A memory figure of process `pid` from `/proc/PID/status`, in KiB: `VmRSS` (resident now) or
/// `VmHWM` (the peak).
pub fn memory_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// The checked-in OpenAPI document, `openapi/openapi.json`.
pub fn committed_spec() -> Value {
    serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi/openapi.json")).unwrap(),
    )
    .unwrap()
}

/// A schema of the OpenAPI document `spec` with its `$ref` followed.
pub fn resolved<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(reference) => &spec["components"]["schemas"][reference.trim_start_matches("#/components/schemas/")],
        None => schema,
    }
}

/// The bytes of every regular file under `dir` (the running server's control socket is not one).
pub fn file_contents(dir: &std::path::Path) -> Vec<Vec<u8>> {
    let mut contents = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            contents.extend(file_contents(&entry.path()));
        } else if kind.is_file() {
            contents.push(std::fs::read(entry.path()).unwrap());
        }
    }
    contents
}
