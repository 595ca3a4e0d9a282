//! Passkeys (WebAuthn Level 2) over HTTP, with a software authenticator written here: P-256
//! keys from ring, attestation objects and COSE keys in CBOR, `none` attestation, the flags and
//! counter an authenticator sets. It answers the options the pages hand the browser, as
//! `navigator.credentials` would (tests/browser/passkeys.test.mjs does the same in chromium with
//! its virtual authenticator). The attacks: a replayed answer, another form's prompt, another
//! origin, no user verification, a cloned authenticator (its counter goes back), a passkey of
//! one account presented for another, a removed passkey, malformed answers.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_ASN1_SIGNING};
use serde_cbor_2::Value as Cbor;
use serde_json::{json, Value};

use crate::factors::{enrol_app, password_step, rp_query, security_action, submit_code};
use crate::helpers::*;

/// A credential the authenticator keeps (a discoverable one: it remembers its user).
struct Credential {
    id: Vec<u8>,
    pkcs8: Vec<u8>,
    user_handle: Vec<u8>,
    counter: u32,
}

/// A software authenticator for one origin.
pub(crate) struct Authenticator {
    origin: String,
    rp_id: String,
    credentials: Vec<Credential>,
    /// Whether it verifies its user (fingerprint, PIN): the UV flag.
    pub verifies_user: bool,
    /// Whether its keys sync to other devices (backup eligible and backed up).
    pub syncs: bool,
    /// Whether its signature counter counts (synced passkeys keep it at 0).
    pub counts: bool,
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unb64(text: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).expect("base64url")
}

fn sha256(bytes: &[u8]) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, bytes).as_ref().to_vec()
}

impl Authenticator {
    pub(crate) fn new(origin: &str) -> Authenticator {
        let rp_id = url::Url::parse(origin).unwrap().host_str().unwrap().to_string();
        Authenticator {
            origin: origin.to_string(),
            rp_id,
            credentials: Vec::new(),
            verifies_user: true,
            syncs: false,
            counts: true,
        }
    }

    fn flags(&self, attested: bool) -> u8 {
        let mut flags = 0x01; // user present
        if self.verifies_user {
            flags |= 0x04;
        }
        if self.syncs {
            flags |= 0x08 | 0x10;
        }
        if attested {
            flags |= 0x40;
        }
        flags
    }

    fn client_data(&self, kind: &str, options: &Value) -> Vec<u8> {
        let challenge = b64(&unb64(options["challenge"].as_str().expect("a challenge")));
        json!({ "type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": false })
            .to_string()
            .into_bytes()
    }

    /// `navigator.credentials.create`: a new key pair for the options' user, answered with
    /// `none` attestation.
    pub(crate) fn create(&mut self, options: &Value) -> String {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, pkcs8.as_ref(), &rng).unwrap();
        let point = key.public_key().as_ref();
        let cose = Cbor::Map(BTreeMap::from([
            (Cbor::Integer(1), Cbor::Integer(2)),
            (Cbor::Integer(3), Cbor::Integer(-7)),
            (Cbor::Integer(-1), Cbor::Integer(1)),
            (Cbor::Integer(-2), Cbor::Bytes(point[1..33].to_vec())),
            (Cbor::Integer(-3), Cbor::Bytes(point[33..65].to_vec())),
        ]));
        let id = ring::rand::generate::<[u8; 16]>(&rng).unwrap().expose().to_vec();
        let counter = u32::from(self.counts);
        let mut auth_data = sha256(self.rp_id.as_bytes());
        auth_data.push(self.flags(true));
        auth_data.extend_from_slice(&counter.to_be_bytes());
        auth_data.extend_from_slice(&[0u8; 16]); // AAGUID: none
        auth_data.extend_from_slice(&(id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&id);
        auth_data.extend_from_slice(&serde_cbor_2::to_vec(&cose).unwrap());
        let attestation = Cbor::Map(BTreeMap::from([
            (Cbor::Text("fmt".into()), Cbor::Text("none".into())),
            (Cbor::Text("attStmt".into()), Cbor::Map(BTreeMap::new())),
            (Cbor::Text("authData".into()), Cbor::Bytes(auth_data)),
        ]));
        let client_data = self.client_data("webauthn.create", options);
        self.credentials.push(Credential {
            id: id.clone(),
            pkcs8: pkcs8.as_ref().to_vec(),
            user_handle: unb64(options["user"]["id"].as_str().unwrap()),
            counter,
        });
        json!({
            "id": b64(&id),
            "rawId": b64(&id),
            "type": "public-key",
            "response": {
                "clientDataJSON": b64(&client_data),
                "attestationObject": b64(&serde_cbor_2::to_vec(&attestation).unwrap()),
                "transports": ["internal"],
            },
            "clientExtensionResults": {},
        })
        .to_string()
    }

    /// `navigator.credentials.get` with the credential `index` (of those made here), or the
    /// first one the options allow.
    pub(crate) fn get(&mut self, options: &Value, index: Option<usize>) -> String {
        let allowed: Vec<Vec<u8>> = options["allowCredentials"]
            .as_array()
            .map(|list| list.iter().map(|c| unb64(c["id"].as_str().unwrap())).collect())
            .unwrap_or_default();
        let index = index.unwrap_or_else(|| {
            self.credentials
                .iter()
                .position(|c| allowed.contains(&c.id))
                .expect("a credential the options allow")
        });
        let flags = self.flags(false);
        let counts = self.counts;
        let credential = &mut self.credentials[index];
        if counts {
            credential.counter += 1;
        }
        let mut auth_data = sha256(self.rp_id.as_bytes());
        auth_data.push(flags);
        auth_data.extend_from_slice(&credential.counter.to_be_bytes());
        let kind = "webauthn.get";
        let challenge = b64(&unb64(options["challenge"].as_str().expect("a challenge")));
        let client_data = json!({ "type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": false })
            .to_string()
            .into_bytes();
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&sha256(&client_data));
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &credential.pkcs8, &rng).unwrap();
        let signature = key.sign(&rng, &signed).unwrap();
        json!({
            "id": b64(&credential.id),
            "rawId": b64(&credential.id),
            "type": "public-key",
            "response": {
                "authenticatorData": b64(&auth_data),
                "clientDataJSON": b64(&client_data),
                "signature": b64(signature.as_ref()),
                "userHandle": b64(&credential.user_handle),
            },
            "clientExtensionResults": {},
        })
        .to_string()
    }

    /// Sets a credential's counter back (a clone of the authenticator made earlier).
    fn rewind(&mut self, index: usize, by: u32) {
        self.credentials[index].counter -= by;
    }
}

/// A server whose issuer is `http://localhost:PORT` (a relying party needs a domain name),
/// listening on 127.0.0.1 at that port.
pub(crate) async fn spawn_on_localhost(change: impl FnOnce(&mut tessera::Config)) -> TestApp {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dirs = tempfile::tempdir().unwrap();
    let mut config = test_config(&dirs);
    config.addr = format!("127.0.0.1:{port}");
    config.issuer = Some(url::Url::parse(&format!("http://localhost:{port}")).unwrap());
    change(&mut config);
    spawn_app_with(config, dirs).await
}

/// An attribute's value in a page (HTML entities undone).
fn attribute(html: &str, name: &str) -> Option<String> {
    let marker = format!("{name}=\"");
    let start = html.find(&marker)? + marker.len();
    let end = html[start..].find('"')? + start;
    Some(
        html[start..end]
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&#x2f;", "/")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// The prompt of the passkey form on a page: its options and sealed ceremony.
fn prompt(page: &str) -> (Value, String) {
    let options = attribute(page, "data-options").expect("the page prompts for a passkey");
    let ceremony = hidden_input(page, "ceremony").expect("the prompt's sealed state");
    (serde_json::from_str(&options).unwrap(), ceremony)
}

/// Registers a passkey named `name` for the signed-in `person` from the security page;
/// returns the page after it.
pub(crate) async fn register_passkey(person: &Remote, authenticator: &mut Authenticator, name: &str) -> String {
    let started = security_action(person, &[("action", "start_passkey"), ("name", name)]).await;
    assert_eq!(started.status(), 200);
    let page = started.text().await.unwrap();
    let (options, ceremony) = prompt(&page);
    let issuer_host = url::Url::parse(&person.issuer).unwrap().host_str().unwrap().to_string();
    assert_eq!(
        options["rp"]["id"], issuer_host,
        "the relying party is the issuer's host"
    );
    assert_eq!(options["authenticatorSelection"]["userVerification"], "required");
    assert_eq!(
        options["authenticatorSelection"]["residentKey"], "required",
        "a discoverable credential"
    );
    assert_eq!(options["attestation"], "none");
    let credential = authenticator.create(&options);
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let finished = person
        .http
        .post(person.url("/o/security/"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("action", "finish_passkey"),
            ("ceremony", ceremony.as_str()),
            ("credential", credential.as_str()),
        ])
        .send()
        .await
        .unwrap();
    finished.text().await.unwrap()
}

/// The login page's passkey prompt, and its CSRF token.
async fn login_prompt(person: &Remote, next: &str) -> (Value, String, String) {
    let path = match next {
        "" => "/o/login/".to_string(),
        next => format!("/o/login/?next={}", urlencoding(next)),
    };
    let page = person.get_text(&path).await;
    let (options, ceremony) = prompt(&page);
    (options, ceremony, hidden_input(&page, "csrf_token").unwrap())
}

fn urlencoding(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}

async fn passkey_sign_in(
    person: &Remote,
    csrf: &str,
    ceremony: &str,
    credential: &str,
    next: &str,
) -> reqwest::Response {
    person
        .http
        .post(person.url("/o/login/passkey/"))
        .form(&[
            ("csrf_token", csrf),
            ("next", next),
            ("ceremony", ceremony),
            ("credential", credential),
        ])
        .send()
        .await
        .unwrap()
}

/// The `amr` of the browser's session, as an access token made from it says.
async fn signed_in_amr(person: &Remote) -> Value {
    let tokens = person.get_tokens().await;
    jwt_parts(tokens["access_token"].as_str().unwrap()).1["amr"].clone()
}

/// Whether the browser has a session (its security page shows, rather than sending to login).
async fn has_session(person: &Remote) -> bool {
    person
        .http
        .get(person.url("/o/security/"))
        .send()
        .await
        .unwrap()
        .status()
        == 200
}

/// A user's factors as the store has them: (kind, name).
async fn stored_factors(app: &TestApp) -> Vec<(String, String)> {
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    app.store
        .factors_of(&user.user_id)
        .await
        .unwrap()
        .iter()
        .map(|f| (f.secret.kind().to_string(), f.name.clone()))
        .collect()
}

#[tokio::test]
async fn a_registered_passkey_signs_in_without_a_username_and_tokens_say_two_factors() {
    let app = spawn_on_localhost(|_| {}).await;
    let mut authenticator = Authenticator::new(&app.issuer);
    let owner = browser(&app);
    assert_eq!(owner.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    let page = register_passkey(&owner, &mut authenticator, "Work laptop").await;
    assert!(page.contains("Your passkey is added"), "{page}");
    assert!(page.contains("Work laptop"), "listed under its name: {page}");
    assert_eq!(
        stored_factors(&app).await,
        [("passkey".to_string(), "Work laptop".to_string())]
    );

    // A new browser, no username typed: the authenticator's passkey names the user.
    let rp = app.register_relying_party(None, None).await;
    let person = browser(&app);
    let pkce = Pkce::new();
    let query = rp_query(&person, &rp, &pkce, &[]);
    let to_login = person.authorize(&query).await;
    let next = location(&to_login)
        .split_once("next=")
        .map(|(_, n)| {
            url::form_urlencoded::parse(format!("n={n}").as_bytes())
                .next()
                .unwrap()
                .1
                .to_string()
        })
        .unwrap();
    let (options, ceremony, csrf) = login_prompt(&person, &next).await;
    assert!(
        options["allowCredentials"].as_array().is_none_or(|a| a.is_empty()),
        "a discoverable request names no credential: {options}"
    );
    assert_eq!(options["userVerification"], "required");
    let answer = authenticator.get(&options, Some(0));
    let signed_in = passkey_sign_in(&person, &csrf, &ceremony, &answer, &next).await;
    assert_eq!(signed_in.status(), 303, "{}", signed_in.text().await.unwrap());
    assert_eq!(location(&signed_in), next);

    let redirect = person.authorize_and_allow(&query).await;
    let code = param(&redirect, "code").expect("a code");
    let exchange = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT_URI),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let tokens: Value = app.token(&rp, &exchange).await.json().await.unwrap();
    let (_, id_token) = jwt_parts(tokens["id_token"].as_str().unwrap());
    assert_eq!(
        id_token["amr"],
        json!(["hwk", "user", "mfa"]),
        "RFC 8176: a hardware key and user verification"
    );
    assert_eq!(id_token["acr"], "urn:tessera:acr:multi-factor");
    let (_, access) = jwt_parts(tokens["access_token"].as_str().unwrap());
    assert_eq!(access["amr"], id_token["amr"]);

    // Another browser's form cannot take a prompt made for this one's.
    let again = browser(&app);
    let (_, _, other_csrf) = login_prompt(&again, "").await;
    let (options2, ceremony2, _) = login_prompt(&browser(&app), "").await;
    let answer2 = authenticator.get(&options2, Some(0));
    let stolen = passkey_sign_in(&again, &other_csrf, &ceremony2, &answer2, "").await;
    assert_eq!(stolen.status(), 401);
    assert!(stolen.text().await.unwrap().contains("not made for this page"));
}

/// A replay: the very form, cookie, prompt and answer sent again (a browser without a cookie
/// jar, so its login-form cookie stays what it was).
#[tokio::test]
async fn a_passkey_answer_is_accepted_once() {
    let app = spawn_on_localhost(|_| {}).await;
    let mut authenticator = Authenticator::new(&app.issuer);
    // A passkey whose counter stays 0 (synced ones do): the counter cannot catch the replay.
    authenticator.counts = false;
    let owner = browser(&app);
    owner.log_in("/o/login/", USERNAME, PASSWORD).await;
    register_passkey(&owner, &mut authenticator, "Key").await;

    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form_page = plain.get(app.url("/o/login/")).send().await.unwrap();
    let cookie = form_page.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let page = form_page.text().await.unwrap();
    let (options, ceremony) = prompt(&page);
    let csrf = hidden_input(&page, "csrf_token").unwrap();
    let answer = authenticator.get(&options, Some(0));
    let send = || {
        plain
            .post(app.url("/o/login/passkey/"))
            .header("cookie", &cookie)
            .form(&[
                ("csrf_token", csrf.as_str()),
                ("next", ""),
                ("ceremony", ceremony.as_str()),
                ("credential", answer.as_str()),
            ])
            .send()
    };
    assert_eq!(send().await.unwrap().status(), 303);
    let replayed = send().await.unwrap();
    assert_eq!(replayed.status(), 401, "a prompt is answered once");
    assert!(replayed.text().await.unwrap().contains("answered already"));
}

#[tokio::test]
async fn a_synced_passkey_says_a_software_key_and_counts_nothing() {
    let app = spawn_on_localhost(|_| {}).await;
    let mut authenticator = Authenticator::new(&app.issuer);
    authenticator.syncs = true;
    authenticator.counts = false;
    let owner = browser(&app);
    owner.log_in("/o/login/", USERNAME, PASSWORD).await;
    register_passkey(&owner, &mut authenticator, "Phone").await;
    for _ in 0..2 {
        // Twice with the counter at 0.
        let person = browser(&app);
        let (options, ceremony, csrf) = login_prompt(&person, "").await;
        let signed_in = passkey_sign_in(&person, &csrf, &ceremony, &authenticator.get(&options, Some(0)), "").await;
        assert_eq!(
            signed_in.status(),
            303,
            "a counter that stays 0 is a synced passkey's, not a clone's"
        );
    }
    let person = browser(&app);
    let (options, ceremony, csrf) = login_prompt(&person, "").await;
    passkey_sign_in(&person, &csrf, &ceremony, &authenticator.get(&options, Some(0)), "").await;
    assert_eq!(signed_in_amr(&person).await, json!(["swk", "user", "mfa"]));
}

#[tokio::test]
async fn a_passkey_without_user_verification_another_origin_or_rp_id_or_a_cloned_counter_is_refused() {
    let app = spawn_on_localhost(|_| {}).await;
    let owner = browser(&app);
    owner.log_in("/o/login/", USERNAME, PASSWORD).await;

    // Registration without user verification: refused, nothing stored.
    let mut careless = Authenticator::new(&app.issuer);
    careless.verifies_user = false;
    let page = register_passkey(&owner, &mut careless, "No PIN").await;
    assert!(page.contains("was not accepted"), "{page}");
    assert!(stored_factors(&app).await.is_empty());

    // A page on another origin (a phishing site relaying the prompt): refused.
    let mut phished = Authenticator::new("http://localhost:1");
    phished.rp_id = "localhost".into();
    let page = register_passkey(&owner, &mut phished, "Phished").await;
    assert!(page.contains("was not accepted"), "{page}");
    assert!(stored_factors(&app).await.is_empty());

    // An authenticator that signs for another relying party (its RP id hash): refused.
    let mut elsewhere = Authenticator::new(&app.issuer);
    elsewhere.rp_id = "evil.example".into();
    let page = register_passkey(&owner, &mut elsewhere, "Elsewhere").await;
    assert!(page.contains("was not accepted"), "{page}");
    assert!(stored_factors(&app).await.is_empty());

    let mut authenticator = Authenticator::new(&app.issuer);
    register_passkey(&owner, &mut authenticator, "Key").await;
    let person = browser(&app);

    // Signing for another relying party: refused.
    authenticator.rp_id = "evil.example".into();
    let (options, ceremony, csrf) = login_prompt(&person, "").await;
    let refused = passkey_sign_in(&person, &csrf, &ceremony, &authenticator.get(&options, Some(0)), "").await;
    assert_eq!(refused.status(), 401);
    authenticator.rp_id = "localhost".into();

    // Signing in without user verification: refused.
    authenticator.verifies_user = false;
    let (options, ceremony, csrf) = login_prompt(&person, "").await;
    let refused = passkey_sign_in(&person, &csrf, &ceremony, &authenticator.get(&options, Some(0)), "").await;
    assert_eq!(refused.status(), 401);
    authenticator.verifies_user = true;

    // From another origin: refused.
    let origin = std::mem::replace(&mut authenticator.origin, "http://localhost:1".into());
    let (options, ceremony, csrf) = login_prompt(&person, "").await;
    let refused = passkey_sign_in(&person, &csrf, &ceremony, &authenticator.get(&options, Some(0)), "").await;
    assert_eq!(refused.status(), 401);
    authenticator.origin = origin;

    // The real one: in.
    let (options, ceremony, csrf) = login_prompt(&person, "").await;
    let ok = passkey_sign_in(&person, &csrf, &ceremony, &authenticator.get(&options, Some(0)), "").await;
    assert_eq!(ok.status(), 303);

    // A clone made before that sign-in shows a counter that went back: refused.
    authenticator.rewind(0, 1);
    let clone = browser(&app);
    let (options, ceremony, csrf) = login_prompt(&clone, "").await;
    let refused = passkey_sign_in(&clone, &csrf, &ceremony, &authenticator.get(&options, Some(0)), "").await;
    assert_eq!(
        refused.status(),
        401,
        "a counter that went back is a cloned authenticator"
    );
    assert!(!has_session(&clone).await);
}

#[tokio::test]
async fn a_passkey_is_its_own_accounts_only_and_a_removed_one_signs_nobody_in() {
    let app = spawn_on_localhost(|_| {}).await;
    let bob = app
        .provider
        .create_user(
            &tessera::oauth::audit::Caller::system(),
            "bob",
            "bob's long password",
            None,
        )
        .await
        .unwrap();
    let mut authenticator = Authenticator::new(&app.issuer);
    let alice = browser(&app);
    alice.log_in("/o/login/", USERNAME, PASSWORD).await;
    register_passkey(&alice, &mut authenticator, "Alice's key").await;

    // Alice's key presented under Bob's user handle: Bob has no such passkey.
    authenticator.credentials[0].user_handle = (0..16)
        .map(|i| u8::from_str_radix(&bob.user_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let mallory = browser(&app);
    let (options, ceremony, csrf) = login_prompt(&mallory, "").await;
    let refused = passkey_sign_in(&mallory, &csrf, &ceremony, &authenticator.get(&options, Some(0)), "").await;
    assert_eq!(refused.status(), 401);
    assert!(refused.text().await.unwrap().contains("not registered here"));
    assert!(!has_session(&mallory).await, "nobody signed in");

    // Removed (alice's session showed the passkey when it registered it, so it may): its
    // answers sign nobody in.
    let alice_id = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap().user_id;
    authenticator.credentials[0].user_handle = (0..16)
        .map(|i| u8::from_str_radix(&alice_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let factor_id = app.store.factors_of(&alice_id).await.unwrap()[0].factor_id.clone();
    let removed = security_action(&alice, &[("action", "remove_confirmed"), ("factor", &factor_id)]).await;
    assert!(removed.text().await.unwrap().contains("Removed."));
    let (options, ceremony, csrf) = login_prompt(&mallory, "").await;
    let refused = passkey_sign_in(&mallory, &csrf, &ceremony, &authenticator.get(&options, Some(0)), "").await;
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn a_passkey_is_the_second_step_after_a_password_and_a_step_up() {
    let app = spawn_on_localhost(|_| {}).await;
    let mut authenticator = Authenticator::new(&app.issuer);
    let owner = browser(&app);
    owner.log_in("/o/login/", USERNAME, PASSWORD).await;
    register_passkey(&owner, &mut authenticator, "Key").await;

    // The password now asks for the passkey: the prompt allows this user's passkey only.
    let person = browser(&app);
    let (csrf, next) = password_step(&person, "/o/login/").await;
    let page = person.get_text("/o/login/factor/").await;
    let (options, ceremony) = prompt(&page);
    let allowed = options["allowCredentials"].as_array().expect("the user's passkeys");
    assert_eq!(allowed.len(), 1);
    assert!(
        !page.contains("name=\"code\""),
        "no code field for a user with a passkey only: {page}"
    );
    let answer = authenticator.get(&options, None);
    let done = person
        .http
        .post(person.url("/o/login/factor/"))
        .form(&[
            ("csrf_token", csrf.as_str()),
            ("next", next.as_str()),
            ("ceremony", ceremony.as_str()),
            ("credential", answer.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), 303, "{}", done.text().await.unwrap());
    assert_eq!(signed_in_amr(&person).await, json!(["pwd", "hwk", "user", "mfa"]));

    // A code is no way round it for a user without an app or recovery codes.
    let other = browser(&app);
    let (csrf, next) = password_step(&other, "/o/login/").await;
    let refused = submit_code(&other, &csrf, &next, "123456").await;
    assert_eq!(refused.status(), 401);
}

#[tokio::test]
async fn a_password_only_session_cannot_add_a_passkey_to_an_account_with_an_app() {
    let app = spawn_on_localhost(|_| {}).await;
    // A session that signed in with the password before the app was added elsewhere (or a
    // thief's) is sent to show a factor first.
    let thief = browser(&app);
    assert_eq!(thief.log_in("/o/login/", USERNAME, PASSWORD).await.status(), 303);
    enrol_app(&browser(&app)).await;
    let started = security_action(&thief, &[("action", "start_passkey"), ("name", "Mine")]).await;
    assert_eq!(started.status(), 303, "sent to show a second factor first");
    assert!(location(&started).starts_with("/o/login/factor/"));
    // Nor can it finish a registration it prompted for before the app was added.
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    assert_eq!(app.store.factors_of(&user.user_id).await.unwrap().len(), 1);
}

#[tokio::test]
async fn malformed_passkey_answers_get_clear_errors_and_store_nothing() {
    let app = spawn_on_localhost(|_| {}).await;
    let owner = browser(&app);
    owner.log_in("/o/login/", USERNAME, PASSWORD).await;
    for (ceremony, credential) in [
        ("", ""),
        ("not-sealed", "{}"),
        ("AAAA", "null"),
        ("x", &"[".repeat(10_000)),
        ("x", "{\"id\":\"\\u0000\"}"),
    ] {
        let finished = security_action(
            &owner,
            &[
                ("action", "finish_passkey"),
                ("ceremony", ceremony),
                ("credential", credential),
            ],
        )
        .await;
        assert_eq!(finished.status(), 400, "{ceremony:?} {credential:.40}");
        let person = browser(&app);
        let (_, _, csrf) = login_prompt(&person, "").await;
        let login = passkey_sign_in(&person, &csrf, ceremony, credential, "").await;
        assert!(login.status().is_client_error(), "{}", login.status());
    }
    // A right prompt with a malformed answer.
    let started = security_action(&owner, &[("action", "start_passkey"), ("name", "Key")]).await;
    let page = started.text().await.unwrap();
    let (_, ceremony) = prompt(&page);
    let finished = security_action(
        &owner,
        &[
            ("action", "finish_passkey"),
            ("ceremony", &ceremony),
            ("credential", "{\"id\":1}"),
        ],
    )
    .await;
    assert_eq!(finished.status(), 400);
    assert!(finished.text().await.unwrap().contains("malformed"));
    // Names: empty, too long, control characters.
    for name in ["", "   ", &"x".repeat(65), "a\u{7}b", "a\u{202e}b"] {
        let started = security_action(&owner, &[("action", "start_passkey"), ("name", name)]).await;
        assert_eq!(started.status(), 400, "{name:?}");
    }
    assert!(stored_factors(&app).await.is_empty());
}

#[tokio::test]
async fn passkeys_are_not_offered_on_an_ip_issuer_or_where_second_factors_are_off() {
    // The embedded default's issuer is an IP address: no relying party can be made there.
    let app = spawn_app().await;
    let page = browser(&app).get_text("/o/login/").await;
    assert!(!page.contains("data-passkey"), "{page}");
    let owner = browser(&app);
    owner.log_in("/o/login/", USERNAME, PASSWORD).await;
    let page = owner.get_text("/o/security/").await;
    assert!(
        page.contains("Passkeys need this server to be reached by a domain name"),
        "{page}"
    );

    let off = spawn_on_localhost(|c| {
        c.mfa = tessera::config::MfaPolicy::Off;
        c.operator_mfa = tessera::config::MfaPolicy::Off;
    })
    .await;
    let page = browser(&off).get_text("/o/login/").await;
    assert!(!page.contains("data-passkey"), "{page}");

    let on = spawn_on_localhost(|_| {}).await;
    let page = browser(&on).get_text("/o/login/").await;
    assert!(page.contains("data-passkey=\"get\""), "{page}");
    assert!(
        page.contains("autocomplete=\"username webauthn\""),
        "autofill offers passkeys"
    );
    let script = on.http.get(on.url("/o/static/passkey.js")).send().await.unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.text().await.unwrap().contains("isConditionalMediationAvailable"));
}

#[tokio::test]
async fn fifty_parallel_answers_to_one_prompt_sign_in_once() {
    let app = spawn_on_localhost(|_| {}).await;
    let mut authenticator = Authenticator::new(&app.issuer);
    authenticator.counts = false; // one answer, sent 50 times: the prompt is what is reused
    let owner = browser(&app);
    owner.log_in("/o/login/", USERNAME, PASSWORD).await;
    register_passkey(&owner, &mut authenticator, "Key").await;
    let person = browser(&app);
    let (options, ceremony, csrf) = login_prompt(&person, "").await;
    let answer = authenticator.get(&options, Some(0));
    let attempts = (0..50).map(|_| {
        let (person, csrf, ceremony, answer) = (person.clone(), csrf.clone(), ceremony.clone(), answer.clone());
        tokio::spawn(async move { passkey_sign_in(&person, &csrf, &ceremony, &answer, "").await.status() })
    });
    let statuses: Vec<u16> = futures_statuses(attempts).await;
    assert_eq!(statuses.iter().filter(|s| **s == 303).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|s| *s == 303 || *s == 401), "{statuses:?}");
}

async fn futures_statuses(tasks: impl Iterator<Item = tokio::task::JoinHandle<reqwest::StatusCode>>) -> Vec<u16> {
    let mut statuses = Vec::new();
    for task in tasks.collect::<Vec<_>>() {
        statuses.push(task.await.unwrap().as_u16());
    }
    statuses
}

/// Operators see a user's passkeys by name (never their keys) and remove one; the console's
/// user page lists them too. A removal by an operator ends the user's sessions.
#[tokio::test]
async fn operators_see_passkeys_by_name_and_remove_them() {
    let app = spawn_on_localhost(|_| {}).await;
    let mut authenticator = Authenticator::new(&app.issuer);
    let owner = browser(&app);
    owner.log_in("/o/login/", USERNAME, PASSWORD).await;
    register_passkey(&owner, &mut authenticator, "Desk key").await;
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    let (_, bearer) = app.admin_bearer().await;
    let factors_url = app.url(&format!("/api/v1/users/{}/factors", user.user_id));
    let listed: Value = app
        .http
        .get(&factors_url)
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let factor = &listed["factors"][0];
    assert_eq!(factor["kind"], "passkey");
    assert_eq!(factor["name"], "Desk key");
    assert!(factor["last_used_at"].is_number());
    let text = listed.to_string();
    assert!(
        !text.contains("cred") && !text.contains("\"x\""),
        "no key material: {text}"
    );

    let id = factor["factor_id"].as_str().unwrap();
    let removed = app
        .http
        .delete(format!("{factors_url}/{id}"))
        .bearer_auth(&bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(removed.status(), 200);
    assert!(!has_session(&owner).await, "the user's sessions ended with the removal");
    let person = browser(&app);
    let (options, ceremony, csrf) = login_prompt(&person, "").await;
    let refused = passkey_sign_in(&person, &csrf, &ceremony, &authenticator.get(&options, Some(0)), "").await;
    assert_eq!(refused.status(), 401);
}

/// The review of this work (H1): a session whose password was typed long ago (a cookie stolen
/// yesterday) could add the account's first factor, a passkey of its own, and sign in with it
/// for ever, the password changed or not. The first factor now needs a password typed in the
/// last 15 minutes: on the security page, and on the way through a request that needs two
/// factors.
#[tokio::test]
async fn an_old_session_types_the_password_again_before_adding_the_first_factor() {
    let app = spawn_on_localhost(|_| {}).await;
    let user = app.store.get_user_by_name(USERNAME).await.unwrap().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let (id, csrf) = (
        "a-stolen-session-cookie-value-of-43-characters",
        "a-csrf-token-of-the-stolen-session",
    );
    let stolen = tessera::store::SessionRecord {
        user_id: Some(user.user_id.clone()),
        csrf_token: csrf.into(),
        auth_time: Some(now - 20 * 60),
        expires_at: now + 3600,
        user_epoch: user.session_epoch,
        amr: vec!["pwd".into()],
        factor_time: None,
    };
    app.store
        .put_session(&tessera::oauth::secret_hash(id), &stolen)
        .await
        .unwrap();
    let thief = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = format!("tessera_session={id}");
    assert_eq!(
        thief
            .get(app.url("/o/security/"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "the stolen session is a session"
    );
    for action in [
        vec![("action", "start_passkey"), ("name", "Mine")],
        vec![("action", "start_totp")],
        vec![("action", "recovery_codes")],
    ] {
        let mut form = vec![("csrf_token", csrf)];
        form.extend(action.iter().copied());
        let refused = thief
            .post(app.url("/o/security/"))
            .header("cookie", &cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        assert_eq!(refused.status(), 303, "{action:?}");
        assert_eq!(location(&refused), "/o/login/?next=/o/security/", "{action:?}");
    }
    // On the way (a request that needs two factors): the factor form sends to the login, and
    // its POST refuses to take a first app.
    let form = thief
        .get(app.url("/o/login/factor/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 303);
    assert!(location(&form).starts_with("/o/login/"), "{}", location(&form));
    let refused = thief
        .post(app.url("/o/login/factor/"))
        .header("cookie", &cookie)
        .form(&[("csrf_token", csrf), ("next", ""), ("code", "123456")])
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    assert!(app.store.factors_of(&user.user_id).await.unwrap().is_empty());

    // A password typed just now may.
    let owner = browser(&app);
    owner.log_in("/o/login/", USERNAME, PASSWORD).await;
    let mut authenticator = Authenticator::new(&app.issuer);
    let page = register_passkey(&owner, &mut authenticator, "Mine").await;
    assert!(page.contains("Your passkey is added"), "{page}");
}
