//! DPoP (RFC 9449) at the authorization server: proofs of possession of a key, and the tokens
//! bound to it.
//!
//! A client signs a short JWT (the proof, `typ: dpop+jwt`) for each HTTP request with a key
//! whose public half is in the proof's header (`jwk`); the server checks it (§4.3) and binds
//! the tokens it issues to that key's RFC 7638 thumbprint (`cnf.jkt`, §6.1). A stolen token is
//! then useless without the private key: every use needs a fresh proof naming the request's
//! method and URL (`htm`, `htu`), and at a resource the token itself (`ath`, §7).
//!
//! The proof itself is checked by [`verify_proof`], from `tessera_resource::dpop`: the same
//! code for the token endpoint, UserInfo and resource servers. What needs state is done here
//! by [`Dpop`]: each `jti` is accepted once within its window
//! ([`crate::store::EphemeralStore::remember_once`], shared by every node), and with
//! `dpop_nonce` on, proofs must carry a server nonce (§8): stateless, an HMAC of the current
//! time window under a secret every node shares, so that any node accepts any node's nonce.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

pub use tessera_resource::dpop::{
    thumbprint, verify_proof, Expected, Proof, CHALLENGE_ALGS, FUTURE_SKEW, PROOF_TYPE, SIGNING_ALGS,
};

use std::sync::Arc;

use super::secrets::Secrets;
use super::{now, Error, ErrorCode, Provider};
use crate::config::Config;
use crate::rate_limit::{Rate, RateLimiter};
use crate::store::{ClientRecord, EphemeralStore};

/// DPoP's state at Tessera: the replay memory, the nonces and the per-key budget. Shared by
/// every endpoint that takes a proof (token, PAR, revocation, UserInfo).
pub(crate) struct Dpop {
    /// The memory of spent `jti`s, shared by every node.
    replays: Arc<dyn EphemeralStore>,
    /// The nonces are signed with a server secret.
    secrets: Arc<Secrets>,
    config: Arc<Config>,
    /// DPoP proofs spent per key ([`PROOFS_PER_KEY`]): what one key holder may add to the
    /// replay memory.
    proof_rate: RateLimiter,
}

impl Dpop {
    pub(super) fn new(replays: Arc<dyn EphemeralStore>, secrets: &Arc<Secrets>, config: &Arc<Config>) -> Dpop {
        Dpop {
            replays,
            secrets: secrets.clone(),
            config: config.clone(),
            proof_rate: RateLimiter::new(Rate::per_second(PROOFS_PER_KEY)),
        }
    }
}

/// DPoP as the front offers it to other crates.
impl Provider {
    /// A fresh server nonce (`Dpop::dpop_nonce`).
    pub async fn dpop_nonce(&self) -> Result<String, Error> {
        self.dpop.dpop_nonce().await
    }
}

/// The server secret the nonces are signed with.
const NONCE_SECRET: &str = "dpop-nonce";
/// Proofs one key may spend a second where [`KeyBudget::PerKey`] applies.
pub(crate) const PROOFS_PER_KEY: u32 = 50;

/// Whether a proof's key is held to [`PROOFS_PER_KEY`]: where something else already bounds
/// how often proofs are spent (a grant known good at the token endpoint, the per-address push
/// budget at PAR), it is not, so a busy service using one key is not slowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum KeyBudget {
    PerKey,
    Unbounded,
}

/// The DPoP side of an HTTP request, as the HTTP layer hands it over.
#[derive(Debug, Default, Clone)]
pub struct ProofRequest {
    /// Every `DPoP` header value of the request (more than one is an error, RFC 9449 §4.3).
    pub proofs: Vec<String>,
    /// The request's method.
    pub method: String,
    /// The request's URL as the client addressed it: this server's public URL of the endpoint.
    pub url: String,
}

impl ProofRequest {
    /// The single proof of the request; `None` without one.
    pub fn proof(&self) -> Result<Option<&str>, String> {
        match self.proofs.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one.as_str())),
            _ => Err("send one DPoP header, not several".into()),
        }
    }
}

/// `invalid_dpop_proof` (RFC 9449 §5, §7.1).
pub(crate) fn invalid_proof(description: impl Into<String>) -> Error {
    Error::new(ErrorCode::InvalidDpopProof, description)
}

/// Whether a token bound to the key `bound` (its `cnf.jkt`, or a refresh token's) came with a
/// proof of that key (`proven`: the thumbprint of the request's verified proof). A bound
/// token is worthless without its key, and must stay so wherever it is presented: to be
/// exchanged, to be revoked. `what` names the token in the error (`invalid_dpop_proof`).
pub(crate) fn require_proof_of_key(bound: Option<&str>, proven: Option<&str>, what: &str) -> Result<(), Error> {
    match (bound, proven) {
        (None, _) => Ok(()),
        (Some(_), None) => Err(invalid_proof(format!(
            "{what} is bound to a DPoP key; send a DPoP proof made with it"
        ))),
        (Some(bound), Some(proven)) if bound != proven => {
            Err(invalid_proof(format!("{what} is bound to another DPoP key")))
        }
        (Some(_), Some(_)) => Ok(()),
    }
}

impl Dpop {
    /// The proof of a token request, verified (RFC 9449 §5) but its `jti` not yet spent: the
    /// grant spends it ([`Dpop::spend_proof`]) once the request is known good (a real code,
    /// a live refresh token), so a request anyone can make (a public client's, with a made-up
    /// code) never fills the replay memory. `None` when there is none and the client does not
    /// need one; a client with `dpop_bound_access_tokens` must send one, and one with
    /// `require_dpop_nonce` must put a server nonce in it. Errors:
    /// `invalid_dpop_proof`, or `use_dpop_nonce` with a fresh nonce to retry with.
    pub(crate) async fn token_request_proof(
        &self,
        client: &ClientRecord,
        request: &ProofRequest,
    ) -> Result<Option<Proof>, Error> {
        let proof = self
            .verify_request_proof(request, None, client.policy.require_dpop_nonce)
            .await?;
        if proof.is_none() && client.policy.dpop_bound_access_tokens {
            return Err(invalid_proof(
                "this client must send a DPoP proof with every token request",
            ));
        }
        Ok(proof)
    }

    /// Checks the request's proof, if it has one, with `access_token` as its `ath` (at a
    /// resource): the proof itself, the server nonce when nonces are on, and its `jti` used
    /// once (on every node). With [`KeyBudget::PerKey`] the key may spend at most
    /// [`PROOFS_PER_KEY`] proofs a second (burst twice that; 429 beyond): where nothing else
    /// bounds how often one key holder may come (UserInfo, revocation), the replay memory must
    /// not be theirs to fill.
    pub(crate) async fn check_proof(
        &self,
        request: &ProofRequest,
        access_token: Option<&str>,
        budget: KeyBudget,
    ) -> Result<Option<Proof>, Error> {
        let proof = self.verify_request_proof(request, access_token, false).await?;
        if let Some(proof) = &proof {
            if budget == KeyBudget::PerKey {
                self.proof_rate.check(&proof.jkt).map_err(Error::rate_limited)?;
            }
            self.spend_proof(proof).await?;
        }
        Ok(proof)
    }

    /// Spends a verified proof's `jti` (on every node), when the request it came with is
    /// known good: a replay fails from then on.
    pub(crate) async fn spend_proof(&self, proof: &Proof) -> Result<(), Error> {
        let max_age = self.config.dpop_proof_max_age.as_secs() as i64;
        let key = [
            b"dpop-jti\0".as_slice(),
            proof.jkt.as_bytes(),
            b"\0",
            proof.jti.as_bytes(),
        ]
        .concat();
        let until_ms = (proof.accepted_until(max_age) + 1) * 1000;
        if !self.replays.remember_once(&key, until_ms).await? {
            return Err(invalid_proof("the proof's jti was used before"));
        }
        Ok(())
    }

    /// [`Dpop::spend_proof`] for a grant's proof, if it has one; its key's thumbprint.
    pub(crate) async fn spend_grant_proof<'p>(&self, proof: Option<&'p Proof>) -> Result<Option<&'p str>, Error> {
        match proof {
            Some(proof) => {
                self.spend_proof(proof).await?;
                Ok(Some(proof.jkt.as_str()))
            }
            None => Ok(None),
        }
    }

    /// Verifies the request's proof, if it has one (the proof itself and the server nonce when
    /// the server's `dpop_nonce` or `client_needs_nonce` says so), without spending its `jti`.
    async fn verify_request_proof(
        &self,
        request: &ProofRequest,
        access_token: Option<&str>,
        client_needs_nonce: bool,
    ) -> Result<Option<Proof>, Error> {
        let Some(proof) = request.proof().map_err(invalid_proof)? else {
            return Ok(None);
        };
        let max_age = self.config.dpop_proof_max_age.as_secs() as i64;
        let expected = Expected {
            method: &request.method,
            url: &request.url,
            access_token,
            now: now(),
            max_age,
        };
        let proof = verify_proof(proof, &expected).map_err(invalid_proof)?;
        let needs_nonce = self.config.dpop_nonce || client_needs_nonce;
        if needs_nonce && !self.nonce_valid(proof.nonce.as_deref()).await? {
            return Err(Error {
                dpop_nonce: Some(self.dpop_nonce().await?),
                ..Error::new(
                    ErrorCode::UseDpopNonce,
                    "the proof must carry the nonce in the DPoP-Nonce header",
                )
            });
        }
        Ok(Some(proof))
    }

    /// A server nonce for proofs (RFC 9449 §8), when nonces are on: valid on every node for
    /// this window and the next.
    pub async fn dpop_nonce(&self) -> Result<String, Error> {
        let window = self.nonce_window(now());
        Ok(encode_nonce(&self.nonce_key().await?, window))
    }

    /// A fresh nonce for a successful token response, if `client`'s proofs need one (the
    /// server's `dpop_nonce`, or the client's `require_dpop_nonce`), for the `DPoP-Nonce`
    /// header (RFC 9449 §8.2): the client's next proof can carry it without a `use_dpop_nonce`
    /// round trip when the window has moved on.
    pub(crate) async fn next_dpop_nonce(&self, client: &ClientRecord) -> Option<String> {
        if !(self.config.dpop_nonce || client.policy.require_dpop_nonce) {
            return None;
        }
        self.dpop_nonce().await.ok()
    }

    async fn nonce_valid(&self, nonce: Option<&str>) -> Result<bool, Error> {
        let Some(nonce) = nonce else {
            return Ok(false);
        };
        let key = self.nonce_key().await?;
        let window = self.nonce_window(now());
        Ok([window, window.saturating_sub(1)]
            .iter()
            .any(|w| nonce_matches(&key, *w, nonce)))
    }

    /// Nonce windows are as long as a proof's acceptance window, so a nonce outlives any proof
    /// made with it and changes every window.
    fn nonce_window(&self, now: i64) -> u64 {
        let length = self.config.dpop_proof_max_age.as_secs().max(1);
        now.max(0) as u64 / length
    }

    /// The nonce key: one server secret shared by every node, made on first use.
    async fn nonce_key(&self) -> Result<hmac::Key, Error> {
        self.secrets.hmac_key(NONCE_SECRET).await
    }
}

/// `window` (8 bytes, big-endian) and its HMAC-SHA256, base64url.
fn encode_nonce(key: &hmac::Key, window: u64) -> String {
    let tag = hmac::sign(key, &window.to_be_bytes());
    URL_SAFE_NO_PAD.encode([&window.to_be_bytes()[..], tag.as_ref()].concat())
}

/// Whether `nonce` is the nonce of `window` (ring compares the tag in constant time).
fn nonce_matches(key: &hmac::Key, window: u64, nonce: &str) -> bool {
    match URL_SAFE_NO_PAD.decode(nonce) {
        Ok(bytes) if bytes.len() == 40 && bytes[..8] == window.to_be_bytes() => {
            hmac::verify(key, &bytes[..8], &bytes[8..]).is_ok()
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_hold_for_their_window_only_and_cannot_be_forged() {
        let key = hmac::Key::new(hmac::HMAC_SHA256, &[7; 32]);
        let nonce = encode_nonce(&key, 100);
        assert!(nonce_matches(&key, 100, &nonce));
        assert!(!nonce_matches(&key, 101, &nonce));
        let other = hmac::Key::new(hmac::HMAC_SHA256, &[8; 32]);
        assert!(!nonce_matches(&other, 100, &nonce));
        assert!(!nonce_matches(&key, 100, "not a nonce"));
    }

    #[test]
    fn several_proof_headers_are_an_error() {
        let request = ProofRequest {
            proofs: vec!["a".into(), "b".into()],
            ..Default::default()
        };
        assert!(request.proof().is_err());
    }
}
