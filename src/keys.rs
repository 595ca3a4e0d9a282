//! The keyring: signing keys on disk, the JWKS built from them, and JWT signing/verification.
//!
//! A keyring is a folder holding one PKCS#8 PEM file per key (mode 0600) and a manifest,
//! `keyring.json`, that records each key's algorithm and status. The `kid` is the RFC 7638
//! JWK thumbprint, so it is derived from the key and cannot drift from the JWKS entry.
//!
//! Signing goes straight through ring with key pairs parsed once at load. jsonwebtoken
//! re-parses the PKCS#8 document on every `encode` (for RSA that is a full key validation),
//! which would cost more than the signature itself on the token endpoint; jsonwebtoken is
//! used for verification, where it takes the public parameters of the same keys.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use crate::jose::Algorithm;

/// Bits of a generated RSA key.
const RSA_BITS: usize = 2048;
const MANIFEST: &str = "keyring.json";

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
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    }
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
}

#[derive(Default, Serialize, Deserialize)]
struct Manifest {
    keys: Vec<KeyInfo>,
}

/// The on-disk keyring: the operations of `tessera keys`.
pub struct Keyring {
    dir: PathBuf,
    manifest: Manifest,
}

impl Keyring {
    /// Opens the keyring in `dir`, creating the folder (0700) and, when it holds no key yet,
    /// a first ES256 signing key. It also makes sure an RS256 key is published: OpenID Connect
    /// relying parties expect RS256-signed ID tokens unless they registered otherwise.
    pub fn open_or_init(dir: &Path) -> Result<Keyring, KeyError> {
        crate::files::create_private_dir(dir).map_err(io_err(dir))?;
        let path = dir.join(MANIFEST);
        let manifest = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest::default(),
            Err(e) => return Err(io_err(&path)(e)),
        };
        let mut ring = Keyring {
            dir: dir.to_path_buf(),
            manifest,
        };
        if !ring.manifest.keys.iter().any(|k| k.status == KeyStatus::Signing) {
            ring.generate(Algorithm::ES256)?;
        }
        if !ring
            .manifest
            .keys
            .iter()
            .any(|k| k.alg == Algorithm::RS256 && k.status != KeyStatus::Retired)
        {
            ring.generate(Algorithm::RS256)?;
        }
        Ok(ring)
    }

    pub fn keys(&self) -> &[KeyInfo] {
        &self.manifest.keys
    }

    /// Adds a new key. It is published but signs only if the keyring had no signing key;
    /// promote it later with [`Keyring::promote`] once caches have picked it up.
    pub fn generate(&mut self, alg: Algorithm) -> Result<KeyInfo, KeyError> {
        let pkcs8 = generate_pkcs8(alg)?;
        let loaded = LoadedKey::from_pkcs8(alg, "new", &pkcs8)?;
        let kid = loaded.kid.clone();
        let path = self.dir.join(format!("{kid}.pem"));
        write_private(&path, pem_encode(&pkcs8).as_bytes())?;
        let status = if self.manifest.keys.iter().any(|k| k.status == KeyStatus::Signing) {
            KeyStatus::Published
        } else {
            KeyStatus::Signing
        };
        let info = KeyInfo {
            kid,
            alg,
            status,
            created_at: crate::clock::now(),
        };
        self.manifest.keys.push(info.clone());
        self.save()?;
        Ok(info)
    }

    /// Generates a new key and makes it the signing key at once; older keys stay published.
    pub fn rotate(&mut self, alg: Algorithm) -> Result<KeyInfo, KeyError> {
        let info = self.generate(alg)?;
        self.promote(&info.kid)
    }

    /// Makes a published key the signing key; the previous signing key stays published.
    pub fn promote(&mut self, kid: &str) -> Result<KeyInfo, KeyError> {
        let index = self.index(kid)?;
        if self.manifest.keys[index].status == KeyStatus::Retired {
            return Err(KeyError::Refused("a retired key cannot sign again; generate a new one"));
        }
        for key in &mut self.manifest.keys {
            if key.status == KeyStatus::Signing {
                key.status = KeyStatus::Published;
            }
        }
        self.manifest.keys[index].status = KeyStatus::Signing;
        self.save()?;
        Ok(self.manifest.keys[index].clone())
    }

    /// Stops publishing a key. The signing key cannot be retired: promote another first.
    pub fn retire(&mut self, kid: &str) -> Result<KeyInfo, KeyError> {
        let index = self.index(kid)?;
        if self.manifest.keys[index].status == KeyStatus::Signing {
            return Err(KeyError::Refused(
                "the signing key cannot be retired; rotate or promote another key first",
            ));
        }
        self.manifest.keys[index].status = KeyStatus::Retired;
        self.save()?;
        Ok(self.manifest.keys[index].clone())
    }

    fn index(&self, kid: &str) -> Result<usize, KeyError> {
        self.manifest
            .keys
            .iter()
            .position(|k| k.kid == kid)
            .ok_or_else(|| KeyError::UnknownKid(kid.to_string()))
    }

    /// Writes the manifest atomically (temp file + rename), so a reader never sees half of it.
    fn save(&self) -> Result<(), KeyError> {
        let path = self.dir.join(MANIFEST);
        let tmp = self.dir.join(format!(".{MANIFEST}.tmp"));
        write_private(&tmp, &serde_json::to_vec_pretty(&self.manifest)?)?;
        fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// Loads the published keys for serving.
    pub fn load(&self) -> Result<KeySet, KeyError> {
        let mut signing = None;
        let mut signing_created_at = 0;
        let mut published = Vec::new();
        for info in self.manifest.keys.iter().filter(|k| k.status != KeyStatus::Retired) {
            let path = self.dir.join(format!("{}.pem", info.kid));
            let pem = fs::read_to_string(&path).map_err(io_err(&path))?;
            let der = pem_decode(&pem).ok_or_else(|| KeyError::BadKey {
                kid: info.kid.clone(),
                reason: "not a PEM document".into(),
            })?;
            let key = Arc::new(LoadedKey::from_pkcs8(info.alg, &info.kid, &der)?);
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

    fn manifest_mtime(dir: &Path) -> Option<SystemTime> {
        fs::metadata(dir.join(MANIFEST)).and_then(|m| m.modified()).ok()
    }
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

/// Writes a file that only the owner can read (0600), replacing any old one.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), KeyError> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err(path))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(io_err(path))
}

fn pem_encode(der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or_default());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

fn pem_decode(pem: &str) -> Option<Vec<u8>> {
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
    pub fn signer_for(&self, alg: Algorithm) -> Option<&Arc<LoadedKey>> {
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
    pub fn sign_jwt_with(&self, alg: Algorithm, typ: &str, claims: &impl Serialize) -> Result<String, KeyError> {
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

/// The live key set of a running server, reloaded when `tessera keys` changes the manifest.
pub struct Keys {
    dir: PathBuf,
    current: RwLock<(Arc<KeySet>, Option<SystemTime>)>,
}

impl Keys {
    pub fn load(dir: &Path) -> Result<Keys, KeyError> {
        let set = Keyring::open_or_init(dir)?.load()?;
        let mtime = Keyring::manifest_mtime(dir);
        Ok(Keys {
            dir: dir.to_path_buf(),
            current: RwLock::new((Arc::new(set), mtime)),
        })
    }

    pub fn current(&self) -> Arc<KeySet> {
        match self.current.read() {
            Ok(guard) => guard.0.clone(),
            Err(poisoned) => poisoned.into_inner().0.clone(),
        }
    }

    /// Reloads the key set if the manifest changed since the last load. A keyring that fails
    /// to load leaves the previous keys in service and is reported to the caller.
    pub fn reload_if_changed(&self) -> Result<bool, KeyError> {
        let mtime = Keyring::manifest_mtime(&self.dir);
        let last = self.current.read().map(|g| g.1).unwrap_or(None);
        if mtime == last {
            return Ok(false);
        }
        let set = Keyring::open_or_init(&self.dir)?.load()?;
        if let Ok(mut guard) = self.current.write() {
            *guard = (Arc::new(set), mtime);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_algorithm_signs_a_token_its_own_jwks_entry_verifies() {
        for alg in [Algorithm::ES256, Algorithm::EdDSA, Algorithm::RS256] {
            let dir = tempfile::tempdir().unwrap();
            let mut ring = Keyring::open_or_init(dir.path()).unwrap();
            ring.rotate(alg).unwrap();
            let set = ring.load().unwrap();
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

    #[test]
    fn a_new_keyring_can_sign_rs256_id_tokens_and_the_newest_key_of_an_algorithm_signs() {
        let dir = tempfile::tempdir().unwrap();
        let mut ring = Keyring::open_or_init(dir.path()).unwrap();
        let set = ring.load().unwrap();
        assert_eq!(set.signing.alg, Algorithm::ES256, "access tokens stay ES256");
        assert_eq!(set.algorithms(), [Algorithm::RS256, Algorithm::ES256]);
        let rs256 = set.signer_for(Algorithm::RS256).unwrap().kid.clone();
        let newer = ring.generate(Algorithm::RS256).unwrap();
        let set = ring.load().unwrap();
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

    #[test]
    fn key_files_are_private_and_retired_keys_leave_the_jwks() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let mut ring = Keyring::open_or_init(dir.path()).unwrap();
        let first = ring.keys()[0].clone();
        let mode = fs::metadata(dir.path().join(format!("{}.pem", first.kid)))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(ring.retire(&first.kid).is_err(), "the signing key cannot be retired");
        ring.rotate(Algorithm::EdDSA).unwrap();
        assert_eq!(
            ring.load().unwrap().published.len(),
            3,
            "ES256, the ID-token RS256 key, EdDSA"
        );
        ring.retire(&first.kid).unwrap();
        let set = ring.load().unwrap();
        assert_eq!(set.published.len(), 2);
        assert!(!set.jwks.contains(&first.kid));
    }
}
