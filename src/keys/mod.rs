//! The keyring: signing keys, the JWKS built from them, and JWT signing/verification.
//!
//! A keyring is a list of keys, each with its algorithm and status (signing, published,
//! retired) and its PKCS#8 private key. Where it is kept is a [`KeyVault`]: a folder of PEM
//! files and a manifest ([`FolderVault`], the embedded default), or the database of a
//! cluster (private keys encrypted); both are parts of their [`crate::backend`]. The `kid` is the RFC 7638 JWK thumbprint, so it is
//! derived from the key and cannot drift from the JWKS entry.
//!
//! Signing goes straight through ring with key pairs parsed once at load. jsonwebtoken
//! re-parses the PKCS#8 document on every `encode` (for RSA that is a full key validation),
//! which would cost more than the signature itself on the token endpoint; jsonwebtoken is
//! used for verification, where it takes the public parameters of the same keys.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use crate::jose::Algorithm;

// The backends' vaults, where callers named them before they moved into their backends.
pub use crate::backend::postgres::vault as database;
pub use crate::backend::sled::vault::FolderVault;

/// Bits of a generated RSA key.
const RSA_BITS: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("keyring I/O error on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("keyring manifest is invalid: {0}")]
    Manifest(#[from] serde_json::Error),
    #[error("key {kid} could not be loaded: {reason}")]
    BadKey { kid: String, reason: String },
    #[error("no key with kid {0}")]
    UnknownKid(String),
    #[error("{0}")]
    Refused(&'static str),
    #[error("signing failed")]
    Signing,
    /// The keyring in the database (or its key-encryption key) is not usable.
    #[error("{0}")]
    Vault(String),
}

/// Where a key is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// Signs new tokens and is published. Exactly one key has this status.
    Signing,
    /// Published in the JWKS (to verify older tokens, or ahead of its promotion) but not signing.
    Published,
    /// Kept on disk but no longer published: tokens it signed no longer verify.
    Retired,
}

/// One manifest entry.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeyInfo {
    pub kid: String,
    pub alg: Algorithm,
    pub status: KeyStatus,
    pub created_at: i64,
    /// When the key last became the signing key (unknown for keys promoted before this was
    /// recorded): the runbook's wait before retiring the previous key starts here.
    #[serde(default)]
    pub promoted_at: Option<i64>,
}

/// A keyring as a vault keeps it: each key's entry and its PKCS#8 document (DER).
pub struct StoredKeyring {
    pub keys: Vec<(KeyInfo, Vec<u8>)>,
    /// Changes whenever the keyring does (see [`KeyVault::stamp`]).
    pub stamp: Stamp,
}

/// A value that changes whenever a keyring does: a running server compares it to reload.
pub(crate) type Stamp = String;

/// A change to a keyring, as [`KeyVault::change`] applies it: the entries (statuses may be
/// changed in place) and the keys to add with their private keys.
pub struct KeyringDraft {
    pub keys: Vec<KeyInfo>,
    pub added: Vec<(KeyInfo, Vec<u8>)>,
}

impl KeyringDraft {
    fn has_signing_key(&self) -> bool {
        self.keys.iter().any(|k| k.status == KeyStatus::Signing)
    }

    fn add(&mut self, info: KeyInfo, pkcs8: Vec<u8>) {
        self.keys.push(info.clone());
        self.added.push((info, pkcs8));
    }

    fn index(&self, kid: &str) -> Result<usize, KeyError> {
        self.keys
            .iter()
            .position(|k| k.kid == kid)
            .ok_or_else(|| KeyError::UnknownKid(kid.to_string()))
    }
}

/// A change to apply under the vault's lock; returns the key it concerns.
pub(crate) type KeyChangeFn = Box<dyn FnOnce(&mut KeyringDraft) -> Result<KeyInfo, KeyError> + Send>;

/// Where a keyring is kept. Every method may be called by several processes at once (the CLI
/// beside a server, several nodes); [`KeyVault::change`] makes their changes happen one after
/// another.
#[async_trait]
pub trait KeyVault: Send + Sync {
    /// The whole keyring, private keys included.
    async fn read(&self) -> Result<StoredKeyring, KeyError>;
    /// The keyring's current stamp: cheap, polled by running servers.
    async fn stamp(&self) -> Result<Stamp, KeyError>;
    /// Applies `change` to the current keyring and stores the result as one atomic step,
    /// excluding every other change meanwhile.
    async fn change(&self, change: KeyChangeFn) -> Result<KeyInfo, KeyError>;
}

/// The operations of `tessera keys` (and the admin API's keys), on any vault.
pub struct Keyring;

impl Keyring {
    /// The keyring's entries, after making sure it is ready to serve: a first ES256 signing
    /// key if it has none, and an RS256 key published, since OpenID Connect relying parties
    /// expect RS256-signed ID tokens unless they registered otherwise. Processes starting at
    /// the same moment on one empty vault agree on one keyring (the check is repeated under the
    /// vault's lock).
    pub async fn open_or_init(vault: &dyn KeyVault) -> Result<Vec<KeyInfo>, KeyError> {
        let stored = vault.read().await?;
        let entries: Vec<KeyInfo> = stored.keys.into_iter().map(|(info, _)| info).collect();
        let ready = |keys: &[KeyInfo]| {
            keys.iter().any(|k| k.status == KeyStatus::Signing)
                && keys
                    .iter()
                    .any(|k| k.alg == Algorithm::RS256 && k.status != KeyStatus::Retired)
        };
        if ready(&entries) {
            return Ok(entries);
        }
        let es256 = new_key_material(Algorithm::ES256).await?;
        let rs256 = new_key_material(Algorithm::RS256).await?;
        vault
            .change(Box::new(move |draft| {
                if !draft.has_signing_key() {
                    let (info, pkcs8) = es256;
                    draft.add(
                        KeyInfo {
                            status: KeyStatus::Signing,
                            promoted_at: Some(info.created_at),
                            ..info
                        },
                        pkcs8,
                    );
                }
                if !draft
                    .keys
                    .iter()
                    .any(|k| k.alg == Algorithm::RS256 && k.status != KeyStatus::Retired)
                {
                    let (info, pkcs8) = rs256;
                    draft.add(info, pkcs8);
                }
                draft
                    .keys
                    .first()
                    .cloned()
                    .ok_or(KeyError::Refused("the keyring is empty"))
            }))
            .await?;
        Ok(vault.read().await?.keys.into_iter().map(|(info, _)| info).collect())
    }

    /// Copies every key of `from` (statuses kept) into `to`, which must hold none: moving a
    /// node's keyring into a cluster, so tokens it signed still verify.
    pub async fn copy(from: &dyn KeyVault, to: &dyn KeyVault) -> Result<usize, KeyError> {
        let keys = from.read().await?.keys;
        let count = keys.len();
        let first = keys
            .first()
            .map(|(info, _)| info.clone())
            .ok_or(KeyError::Refused("the keyring to copy has no keys"))?;
        to.change(Box::new(move |draft| {
            if !draft.keys.is_empty() {
                return Err(KeyError::Refused("the destination keyring already has keys"));
            }
            for (info, pkcs8) in keys {
                draft.add(info, pkcs8);
            }
            Ok(first)
        }))
        .await?;
        Ok(count)
    }

    /// Adds a new key. It is published but signs only if the keyring had no signing key;
    /// promote it later with [`Keyring::promote`] once caches have picked it up.
    pub async fn generate(vault: &dyn KeyVault, alg: Algorithm) -> Result<KeyInfo, KeyError> {
        let (info, pkcs8) = new_key_material(alg).await?;
        vault
            .change(Box::new(move |draft| {
                let status = if draft.has_signing_key() {
                    KeyStatus::Published
                } else {
                    KeyStatus::Signing
                };
                let promoted_at = (status == KeyStatus::Signing).then_some(info.created_at);
                let info = KeyInfo {
                    status,
                    promoted_at,
                    ..info
                };
                draft.add(info.clone(), pkcs8);
                Ok(info)
            }))
            .await
    }

    /// Generates a new key and makes it the signing key at once; older keys stay published.
    pub async fn rotate(vault: &dyn KeyVault, alg: Algorithm) -> Result<KeyInfo, KeyError> {
        let info = Keyring::generate(vault, alg).await?;
        Keyring::promote(vault, &info.kid).await
    }

    /// Makes a published key the signing key; the previous signing key stays published.
    pub async fn promote(vault: &dyn KeyVault, kid: &str) -> Result<KeyInfo, KeyError> {
        let kid = kid.to_string();
        vault
            .change(Box::new(move |draft| {
                let index = draft.index(&kid)?;
                if draft.keys[index].status == KeyStatus::Retired {
                    return Err(KeyError::Refused("a retired key cannot sign again; generate a new one"));
                }
                for key in &mut draft.keys {
                    if key.status == KeyStatus::Signing {
                        key.status = KeyStatus::Published;
                    }
                }
                if draft.keys[index].status != KeyStatus::Signing {
                    draft.keys[index].promoted_at = Some(crate::clock::now());
                }
                draft.keys[index].status = KeyStatus::Signing;
                Ok(draft.keys[index].clone())
            }))
            .await
    }

    /// Stops publishing a key. The signing key cannot be retired: promote another first.
    pub async fn retire(vault: &dyn KeyVault, kid: &str) -> Result<KeyInfo, KeyError> {
        let kid = kid.to_string();
        vault
            .change(Box::new(move |draft| {
                let index = draft.index(&kid)?;
                if draft.keys[index].status == KeyStatus::Signing {
                    return Err(KeyError::Refused(
                        "the signing key cannot be retired; rotate or promote another key first",
                    ));
                }
                draft.keys[index].status = KeyStatus::Retired;
                Ok(draft.keys[index].clone())
            }))
            .await
    }

    /// The published keys of a stored keyring, for serving.
    pub fn key_set(stored: &StoredKeyring) -> Result<KeySet, KeyError> {
        let mut signing = None;
        let mut signing_created_at = 0;
        let mut published = Vec::new();
        for (info, der) in stored.keys.iter().filter(|(k, _)| k.status != KeyStatus::Retired) {
            let key = Arc::new(LoadedKey::from_pkcs8(info.alg, &info.kid, der)?);
            if key.kid != info.kid {
                return Err(KeyError::BadKey {
                    kid: info.kid.clone(),
                    reason: "kid is not the key's thumbprint".into(),
                });
            }
            if info.status == KeyStatus::Signing {
                signing = Some(key.clone());
                signing_created_at = info.created_at;
            }
            published.push(key);
        }
        let signing = signing.ok_or(KeyError::Refused("the keyring has no signing key"))?;
        let jwks = json!({ "keys": published.iter().map(|k| &k.jwk).collect::<Vec<_>>() }).to_string();
        Ok(KeySet {
            signing,
            signing_created_at,
            published,
            jwks: jwks.into(),
        })
    }
}

/// A new key's entry (published, dated now) and its PKCS#8 document. RSA generation takes
/// a while, so it runs on the blocking pool.
async fn new_key_material(alg: Algorithm) -> Result<(KeyInfo, Vec<u8>), KeyError> {
    let pkcs8 = tokio::task::spawn_blocking(move || generate_pkcs8(alg))
        .await
        .map_err(|e| KeyError::Vault(format!("key generation failed: {e}")))??;
    let kid = LoadedKey::from_pkcs8(alg, "new", &pkcs8)?.kid;
    let info = KeyInfo {
        kid,
        alg,
        status: KeyStatus::Published,
        created_at: crate::clock::now(),
        promoted_at: None,
    };
    Ok((info, pkcs8))
}

fn generate_pkcs8(alg: Algorithm) -> Result<Vec<u8>, KeyError> {
    let rng = SystemRandom::new();
    let bad = |reason: String| KeyError::BadKey {
        kid: "new".into(),
        reason,
    };
    Ok(match alg {
        Algorithm::ES256 => EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| bad("P-256 generation failed".into()))?
            .as_ref()
            .to_vec(),
        Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| bad("Ed25519 generation failed".into()))?
            .as_ref()
            .to_vec(),
        // ring cannot generate RSA keys; the RustCrypto `rsa` crate does, and ring signs with them.
        Algorithm::RS256 => {
            use rsa::pkcs8::EncodePrivateKey;
            let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, RSA_BITS).map_err(|e| bad(e.to_string()))?;
            key.to_pkcs8_der().map_err(|e| bad(e.to_string()))?.as_bytes().to_vec()
        }
    })
}

pub(crate) fn pem_encode(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

pub(crate) fn pem_decode(pem: &str) -> Option<Vec<u8>> {
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PRIVATE KEY-----")?
        .strip_suffix("-----END PRIVATE KEY-----")?;
    let body: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    STANDARD.decode(body).ok()
}

/// RFC 7638 thumbprint of a JWK given as its canonical JSON (required members, sorted, no spaces).
fn thumbprint(canonical_jwk: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, canonical_jwk.as_bytes()))
}

enum Signer {
    Ecdsa(EcdsaKeyPair),
    Ed25519(Ed25519KeyPair),
    Rsa(RsaKeyPair),
}

/// A key parsed once: its signer, its JWK and a decoding key for verification.
pub struct LoadedKey {
    pub kid: String,
    pub alg: Algorithm,
    signer: Signer,
    jwk: Value,
    decoding: jsonwebtoken::DecodingKey,
}

impl LoadedKey {
    fn from_pkcs8(alg: Algorithm, kid_hint: &str, der: &[u8]) -> Result<LoadedKey, KeyError> {
        let bad = |reason: &str| KeyError::BadKey {
            kid: kid_hint.to_string(),
            reason: reason.to_string(),
        };
        let b64 = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
        // Members in RFC 7638 §3.2 order (lexicographic) so the thumbprint input is canonical.
        let (signer, thumbprint_input, mut jwk, decoding) = match alg {
            Algorithm::ES256 => {
                let pair =
                    EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, der, &SystemRandom::new())
                        .map_err(|e| bad(&e.to_string()))?;
                let point = pair.public_key().as_ref();
                let (x, y) = (b64(&point[1..33]), b64(&point[33..65]));
                let input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
                let decoding =
                    jsonwebtoken::DecodingKey::from_ec_components(&x, &y).map_err(|e| bad(&e.to_string()))?;
                (
                    Signer::Ecdsa(pair),
                    input,
                    json!({"kty": "EC", "crv": "P-256", "x": x, "y": y}),
                    decoding,
                )
            }
            Algorithm::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|e| bad(&e.to_string()))?;
                let x = b64(pair.public_key().as_ref());
                let input = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
                let decoding = jsonwebtoken::DecodingKey::from_ed_components(&x).map_err(|e| bad(&e.to_string()))?;
                (
                    Signer::Ed25519(pair),
                    input,
                    json!({"kty": "OKP", "crv": "Ed25519", "x": x}),
                    decoding,
                )
            }
            Algorithm::RS256 => {
                let pair = RsaKeyPair::from_pkcs8(der).map_err(|e| bad(&e.to_string()))?;
                let parts: signature::RsaPublicKeyComponents<Vec<u8>> = pair.public().into();
                let (n, e) = (b64(&parts.n), b64(&parts.e));
                let input = format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#);
                let decoding =
                    jsonwebtoken::DecodingKey::from_rsa_components(&n, &e).map_err(|e| bad(&e.to_string()))?;
                (
                    Signer::Rsa(pair),
                    input,
                    json!({"kty": "RSA", "n": n, "e": e}),
                    decoding,
                )
            }
        };
        let kid = thumbprint(&thumbprint_input);
        jwk["kid"] = json!(kid);
        jwk["alg"] = json!(alg.as_str());
        jwk["use"] = json!("sig");
        Ok(LoadedKey {
            kid,
            alg,
            signer,
            jwk,
            decoding,
        })
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Ecdsa(pair) => pair
                .sign(&rng, message)
                .map(|s| s.as_ref().to_vec())
                .map_err(|_| KeyError::Signing),
            Signer::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
            Signer::Rsa(pair) => {
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(&signature::RSA_PKCS1_SHA256, &rng, message, &mut out)
                    .map_err(|_| KeyError::Signing)?;
                Ok(out)
            }
        }
    }
}

/// The keys a running server uses: one signing key plus every published key.
pub struct KeySet {
    pub signing: Arc<LoadedKey>,
    /// When the signing key was generated (seconds since the epoch).
    pub signing_created_at: i64,
    /// In manifest order, so the last key of an algorithm is the newest.
    pub published: Vec<Arc<LoadedKey>>,
    /// The JWKS document, serialised once per load.
    pub jwks: Arc<str>,
}

impl KeySet {
    /// Signs `claims` with the signing key as a compact JWS with header `{alg, kid, typ}`.
    pub fn sign_jwt(&self, typ: &str, claims: &impl Serialize) -> Result<String, KeyError> {
        sign_with(&self.signing, typ, claims)
    }

    /// The key that signs tokens which must use `alg` (ID tokens, whose algorithm the client
    /// chose): the signing key if it has that algorithm, else the newest published key that
    /// has. Relying parties refetch the JWKS on an unknown `kid`, so a newly generated key may
    /// sign ID tokens at once; access tokens wait for `promote`, as resource servers cache.
    pub(crate) fn signer_for(&self, alg: Algorithm) -> Option<&Arc<LoadedKey>> {
        if self.signing.alg == alg {
            return Some(&self.signing);
        }
        self.published.iter().rev().find(|k| k.alg == alg)
    }

    /// The algorithms this key set can sign with.
    pub fn algorithms(&self) -> Vec<Algorithm> {
        [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA]
            .into_iter()
            .filter(|alg| self.signer_for(*alg).is_some())
            .collect()
    }

    /// Signs `claims` with the key [`KeySet::signer_for`] picks for `alg`.
    pub(crate) fn sign_jwt_with(&self, alg: Algorithm, typ: &str, claims: &impl Serialize) -> Result<String, KeyError> {
        let key = self.signer_for(alg).ok_or(KeyError::Refused(
            "no published key has the algorithm this client needs",
        ))?;
        sign_with(key, typ, claims)
    }

    /// Verifies a JWT signed by one of the published keys, with the algorithm fixed by that
    /// key (never by the token header), the given `typ` and issuer. Unlike [`KeySet::verify_jwt`]
    /// it accepts an expired token: an `id_token_hint` at logout is usually expired.
    pub fn verify_jwt_ignoring_expiry(&self, token: &str, typ: &str, issuer: &str) -> Option<Value> {
        self.verify(token, typ, issuer, false)
    }

    /// Verifies a JWT signed by one of the published keys, with the algorithm fixed by that
    /// key (never by the token header), the given `typ` and issuer, and unexpired.
    /// Returns the claims; the audience is not checked here.
    pub fn verify_jwt(&self, token: &str, typ: &str, issuer: &str) -> Option<Value> {
        self.verify(token, typ, issuer, true)
    }

    fn verify(&self, token: &str, typ: &str, issuer: &str, check_expiry: bool) -> Option<Value> {
        let header = jsonwebtoken::decode_header(token).ok()?;
        if header.typ.as_deref() != Some(typ) {
            return None;
        }
        let kid = header.kid?;
        let key = self.published.iter().find(|k| k.kid == kid)?;
        let mut validation = jsonwebtoken::Validation::new(key.alg.jsonwebtoken());
        validation.set_issuer(&[issuer]);
        validation.validate_aud = false;
        validation.validate_exp = check_expiry;
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "iss"]);
        jsonwebtoken::decode::<Value>(token, &key.decoding, &validation)
            .ok()
            .map(|d| d.claims)
    }
}

fn sign_with(key: &LoadedKey, typ: &str, claims: &impl Serialize) -> Result<String, KeyError> {
    let header = json!({"alg": key.alg.as_str(), "kid": key.kid, "typ": typ});
    let mut jwt = URL_SAFE_NO_PAD.encode(header.to_string());
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?));
    let signature = key.sign(jwt.as_bytes())?;
    jwt.push('.');
    jwt.push_str(&URL_SAFE_NO_PAD.encode(signature));
    Ok(jwt)
}

/// The live key set of a running server, reloaded when its vault's stamp changes (a
/// `tessera keys` command, the admin API, another node).
pub struct Keys {
    vault: Arc<dyn KeyVault>,
    current: RwLock<(Arc<KeySet>, Stamp)>,
}

impl Keys {
    /// Loads the keyring from `vault`, initialising it if it is new.
    pub async fn load(vault: Arc<dyn KeyVault>) -> Result<Keys, KeyError> {
        Keyring::open_or_init(vault.as_ref()).await?;
        let stored = vault.read().await?;
        let set = Keyring::key_set(&stored)?;
        Ok(Keys {
            vault,
            current: RwLock::new((Arc::new(set), stored.stamp)),
        })
    }

    /// Where the keyring is kept (for the key operations of the admin API).
    pub fn vault(&self) -> &dyn KeyVault {
        self.vault.as_ref()
    }

    pub fn current(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(guard) => guard.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    fn current_stamp(&self) -> Stamp {
        match self.current.read() {
            Ok(guard) => guard.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// Reloads the key set if the keyring changed since the last load. A keyring that fails
    /// to load leaves the previous keys in service and is reported to the caller.
    pub(crate) async fn reload_if_changed(&self) -> Result<bool, KeyError> {
        if self.vault.stamp().await? == self.current_stamp() {
            return Ok(false);
        }
        let stored = self.vault.read().await?;
        let set = Keyring::key_set(&stored)?;
        if let Ok(mut guard) = self.current.write() {
            *guard = (Arc::new(set), stored.stamp);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keyring in a fresh folder.
    async fn folder_keyring() -> (FolderVault, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let vault = FolderVault::new(dir.path());
        Keyring::open_or_init(&vault).await.unwrap();
        (vault, dir)
    }

    async fn key_set(vault: &FolderVault) -> KeySet {
        Keyring::key_set(&vault.read().await.unwrap()).unwrap()
    }

    #[tokio::test]
    async fn every_algorithm_signs_a_token_its_own_jwks_entry_verifies() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let (vault, _dir) = folder_keyring().await;
            Keyring::rotate(&vault, alg).await.unwrap();
            let set = key_set(&vault).await;
            assert_eq!(set.signing.alg, alg);
            let claims = json!({"iss": "https://issuer", "exp": crate::clock::now() + 60});
            let jwt = set.sign_jwt("at+jwt", &claims).unwrap();
            assert_eq!(
                set.verify_jwt(&jwt, "at+jwt", "https://issuer").unwrap()["iss"],
                "https://issuer"
            );
            assert!(
                set.verify_jwt(&jwt, "JWT", "https://issuer").is_none(),
                "typ is enforced"
            );
            assert!(
                set.verify_jwt(&jwt, "at+jwt", "https://other").is_none(),
                "iss is enforced"
            );
        }
    }

    #[tokio::test]
    async fn a_new_keyring_can_sign_rs256_id_tokens_and_the_newest_key_of_an_algorithm_signs() {
        let (vault, _dir) = folder_keyring().await;
        let set = key_set(&vault).await;
        assert_eq!(set.signing.alg, Algorithm::ES256, "access tokens stay ES256");
        assert_eq!(set.algorithms(), [Algorithm::RS256, Algorithm::ES256]);
        let rs256 = set.signer_for(Algorithm::RS256).unwrap().kid.clone();
        let newer = Keyring::generate(&vault, Algorithm::RS256).await.unwrap();
        let set = key_set(&vault).await;
        assert_eq!(set.signer_for(Algorithm::RS256).unwrap().kid, newer.kid);
        assert_ne!(rs256, newer.kid);
        assert_eq!(set.signer_for(Algorithm::ES256).unwrap().kid, set.signing.kid);
        assert!(set.signer_for(Algorithm::EdDSA).is_none());
        let claims = json!({"iss": "https://issuer", "exp": crate::clock::now() - 10});
        let expired = set.sign_jwt_with(Algorithm::RS256, "JWT", &claims).unwrap();
        assert!(set.verify_jwt(&expired, "JWT", "https://issuer").is_none());
        assert!(set
            .verify_jwt_ignoring_expiry(&expired, "JWT", "https://issuer")
            .is_some());
    }

    #[test]
    fn kid_is_the_rfc7638_thumbprint() {
        // RFC 7638 §3.1 example key and its thumbprint.
        let input = r#"{"e":"AQAB","kty":"RSA","n":"0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"}"#;
        assert_eq!(thumbprint(input), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    /// A manifest from elsewhere (a backup being restored) whose key id names a path: the
    /// keyring refuses it rather than read or write outside its folder.
    #[tokio::test]
    async fn a_key_id_that_names_a_path_is_refused() {
        let (vault, dir) = folder_keyring().await;
        let manifest = dir.path().join("keyring.json");
        let text = std::fs::read_to_string(&manifest).unwrap();
        let kid = vault.read().await.unwrap().keys[0].0.kid.clone();
        std::fs::write(&manifest, text.replace(&kid, "../../outside")).unwrap();
        let refused = vault.read().await.err().expect("refused");
        assert!(refused.to_string().contains("base64url"), "{refused}");
        let elsewhere = tempfile::tempdir().unwrap();
        let copied = Keyring::copy(&vault, &FolderVault::new(elsewhere.path())).await;
        assert!(copied.is_err());
        assert!(!elsewhere.path().join("../../outside.pem").exists());
    }

    #[tokio::test]
    async fn key_files_are_private_and_retired_keys_leave_the_jwks() {
        use std::os::unix::fs::PermissionsExt;
        let (vault, dir) = folder_keyring().await;
        let first = vault.read().await.unwrap().keys[0].0.clone();
        let mode = std::fs::metadata(dir.path().join(format!("{}.pem", first.kid)))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            Keyring::retire(&vault, &first.kid).await.is_err(),
            "the signing key cannot be retired"
        );
        Keyring::rotate(&vault, Algorithm::EdDSA).await.unwrap();
        assert_eq!(
            key_set(&vault).await.published.len(),
            3,
            "ES256, the ID-token RS256 key, EdDSA"
        );
        Keyring::retire(&vault, &first.kid).await.unwrap();
        let set = key_set(&vault).await;
        assert_eq!(set.published.len(), 2);
        assert!(!set.jwks.contains(&first.kid));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn processes_starting_at_once_on_an_empty_vault_agree_on_one_keyring() {
        let dir = tempfile::tempdir().unwrap();
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let path = dir.path().to_path_buf();
                tokio::spawn(async move { Keyring::open_or_init(&FolderVault::new(&path)).await.unwrap() })
            })
            .collect();
        let mut keyrings = Vec::new();
        for start in starts {
            keyrings.push(start.await.unwrap().into_iter().map(|k| k.kid).collect::<Vec<_>>());
        }
        assert!(keyrings.windows(2).all(|w| w[0] == w[1]), "{keyrings:?}");
        assert_eq!(keyrings[0].len(), 2, "one ES256 signing key and one RS256 key");
    }
}
