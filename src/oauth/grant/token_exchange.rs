//! `grant_type=urn:ietf:params:oauth:grant-type:token-exchange` (RFC 8693): a confidential
//! client trades an access token Tessera issued (the *subject token*: a user's token that
//! reached it, say) for a new access token for another audience, with the same or a narrower
//! scope, optionally naming who acts for the subject (the *actor token*, the `act` claim of
//! §4.1).
//!
//! Where RFC 8693 leaves the choice to the server, Tessera decides:
//! - Subject and actor tokens are Tessera's own JWT access tokens, typed `access_token` or
//!   `jwt` (§3): verified with the published keys, `typ` at+jwt, issuer, expiry, and alive
//!   (neither the token, its grant nor its client revoked or deleted). ID tokens, refresh
//!   tokens and foreign tokens are refused: an ID token is addressed to its client, not a
//!   credential to pass on (OpenID Connect Core §2), and a refresh token is its client's alone.
//! - A subject token is accepted only if its `aud` is one of the client's
//!   `token_exchange.subject_audiences` (empty: the server's default audience), so a client
//!   exchanges only tokens meant for it. An actor token must have been issued to the
//!   exchanging client itself, so no client can name another party as the actor.
//! - Every refusal of a subject or actor token is `invalid_request` (§2.2.2 says so for tokens
//!   that are "invalid for any reason, or are unacceptable based on policy"); a target the
//!   client may not have is `invalid_target`; scope beyond the subject's is `invalid_scope`.
//! - One audience per token: `audience` and `resource` (once each; the form guard refuses
//!   repeated parameters) must name the same target if both are sent. With neither, the
//!   client's only allowed audience is used, or the request is `invalid_request` if it has
//!   several.
//! - The scope defaults to the subject token's scope, limited to the scopes the client may
//!   hold; the administration scope is never exchanged.
//! - The new token keeps the subject's `sub` and grant (`gid`), so revoking the subject's
//!   grant (its refresh token, `/o/authorized_tokens/`, the admin API) kills every token
//!   exchanged from it; it never outlives the subject token, and carries no refresh token.
//!   Revoking only the subject access token (RFC 7009) does not reach tokens already
//!   exchanged from it: they expire no later than it would have.
//! - With an actor token, `act` is `{sub, client_id}` of the actor, with the subject token's
//!   own `act` nested inside (§4.1: the outermost actor is the current one). Without one, the
//!   subject's `act` is carried over unchanged, so a delegation chain is never dropped.
//!   `may_act` (§4.4) is not read: Tessera never issues it.
//! - A sender-constrained subject or actor token (`cnf.jkt`, RFC 9449) is exchanged only with
//!   a DPoP proof of its key, and the new token is bound to that same key: a bound token
//!   stolen on its way to a resource is worth nothing without its key, and must not become a
//!   bearer token by being exchanged (the third review, finding 4). The subject audience rule
//!   alone does not stand in for the proof: a client may name its own subject audiences. A
//!   resource server that holds a user's bound token without its key therefore cannot
//!   exchange it; one proof names one key, so a subject and an actor bound to different keys
//!   cannot be exchanged together either.

use serde_json::{json, Value};

use crate::oauth::dpop::require_proof_of_key;
use crate::oauth::scope::{Scope, ADMIN_SCOPE};
use crate::oauth::token::Tokens;
use crate::oauth::token::{AccessTokenContent, TokenBinding, TokenResponse};
use crate::oauth::{Error, ErrorCode};
use crate::store::{ClientRecord, ClientType};

/// The token type URI of an OAuth access token (RFC 8693 §3).
pub const ACCESS_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:access_token";
/// The token type URI of a JWT (RFC 8693 §3); Tessera's access tokens are JWTs.
pub const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// The longest subject or actor token read. Tessera's access tokens are well under 2 KB even
/// with a long delegation chain; anything bigger is not one of them and is refused before any
/// parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The deepest `act` nesting an exchanged token may carry: each exchange adds one level, and
/// a chain this long is a loop, not a delegation.
pub const MAX_ACT_DEPTH: usize = 8;

/// A token exchange request's parameters (RFC 8693 §2.1), required ones present.
#[derive(Debug, Clone)]
pub struct ExchangeRequest {
    pub subject_token: String,
    pub subject_token_type: String,
    pub actor_token: Option<String>,
    pub actor_token_type: Option<String>,
    pub requested_token_type: Option<String>,
    pub audience: Option<String>,
    pub resource: Option<String>,
    pub scope: Option<String>,
}

/// Which of Tessera's token types `value` names: the two URIs an access token JWT answers to.
fn tessera_token_type(value: &str, parameter: &str) -> Result<&'static str, Error> {
    match value {
        ACCESS_TOKEN_TYPE => Ok(ACCESS_TOKEN_TYPE),
        JWT_TOKEN_TYPE => Ok(JWT_TOKEN_TYPE),
        _ => Err(Error::invalid_request(format!(
            "{parameter} must be {ACCESS_TOKEN_TYPE} or {JWT_TOKEN_TYPE}"
        ))),
    }
}

impl Tokens {
    /// Issues an access token for the subject token's `sub`, to `client`, for the target
    /// audience, with the subject's grant and an `act` claim naming the actor if one is given.
    /// Nothing is stored: the exchange costs the token checks and one signature.
    pub(super) async fn token_exchange_grant(
        &self,
        client: &ClientRecord,
        request: ExchangeRequest,
        dpop_jkt: Option<&str>,
    ) -> Result<TokenResponse, Error> {
        if client.client_type != ClientType::Confidential {
            return Err(Error::new(
                ErrorCode::UnauthorizedClient,
                "public clients cannot use token exchange",
            ));
        }
        let policy = &client.policy.token_exchange;
        let issued_token_type = match request.requested_token_type.as_deref() {
            None => ACCESS_TOKEN_TYPE,
            Some(value) => tessera_token_type(value, "requested_token_type")?,
        };
        tessera_token_type(&request.subject_token_type, "subject_token_type")?;
        let actor_token = match (request.actor_token.as_deref(), request.actor_token_type.as_deref()) {
            (Some(token), Some(token_type)) => {
                tessera_token_type(token_type, "actor_token_type")?;
                Some(token)
            }
            // RFC 8693 §2.1: actor_token_type is REQUIRED with actor_token, and MUST NOT be
            // sent without it.
            (Some(_), None) => return Err(Error::invalid_request("actor_token_type is missing")),
            (None, Some(_)) => return Err(Error::invalid_request("actor_token_type was sent without actor_token")),
            (None, None) => None,
        };
        if policy.require_actor && actor_token.is_none() {
            return Err(Error::invalid_request(
                "this client must name who acts: actor_token is required",
            ));
        }
        let audience = exchange_target(
            &policy.audiences,
            request.audience.as_deref(),
            request.resource.as_deref(),
        )?;

        let subject = self.exchangeable_token(&request.subject_token, "subject_token").await?;
        let allowed_subjects: &[String] = if policy.subject_audiences.is_empty() {
            std::slice::from_ref(&self.default_audience)
        } else {
            &policy.subject_audiences
        };
        if !audiences_of(&subject).any(|aud| allowed_subjects.iter().any(|allowed| allowed == aud)) {
            return Err(Error::invalid_request(
                "this client may not exchange tokens issued for that audience",
            ));
        }
        let actor = match actor_token {
            Some(token) => {
                let actor = self.exchangeable_token(token, "actor_token").await?;
                if actor["client_id"].as_str() != Some(client.client_id.as_str()) {
                    return Err(Error::invalid_request(
                        "the actor_token must have been issued to this client",
                    ));
                }
                Some(actor)
            }
            None => None,
        };

        // A bound token proves nothing without its key; the new token is bound to the key the
        // proof shows, which for a bound subject is the subject's own.
        require_proof_of_key(subject["cnf"]["jkt"].as_str(), dpop_jkt, "the subject_token")?;
        if let Some(actor) = &actor {
            require_proof_of_key(actor["cnf"]["jkt"].as_str(), dpop_jkt, "the actor_token")?;
        }
        let scope = exchanged_scope(&subject, request.scope.as_deref(), &client.scopes)?;
        let act = delegation(&subject, actor.as_ref())?;
        // With a DPoP proof the exchanged token is bound to its key, like any other (RFC 9449).
        let binding = TokenBinding {
            act,
            ..TokenBinding::dpop(dpop_jkt)
        };
        let sub = subject["sub"]
            .as_str()
            .ok_or_else(|| Error::invalid_request("the subject_token names no subject"))?;
        // The user's login behind the subject token, as it said.
        let subject_amr: Vec<String> = subject["amr"]
            .as_array()
            .map(|methods| methods.iter().filter_map(|m| m.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        let subject_level = subject["acr"].as_str().and_then(crate::oauth::acr::Level::parse);
        // A client that requires two-factor logins takes no one-factor login in another form.
        if client.policy.require_mfa && subject_level < Some(crate::oauth::acr::Level::MultiFactor) {
            return Err(Error::invalid_grant(
                "this client requires a two-factor login, and the subject token's login had one factor",
            ));
        }
        let login = match (subject["auth_time"].as_i64(), subject_level) {
            (Some(auth_time), Some(level)) if !subject_amr.is_empty() => Some(crate::oauth::acr::LoginClaims {
                auth_time,
                acr: level.as_str(),
                amr: &subject_amr,
            }),
            _ => None,
        };
        let access = self.mint_access_token_with(
            client,
            &AccessTokenContent {
                sub,
                scope: &scope,
                audience: &audience,
                grant_id: subject["gid"].as_str(),
                login,
                binding: &binding,
                not_after: subject["exp"].as_i64(),
            },
        )?;
        Ok(TokenResponse {
            access_token: access.jwt,
            token_type: binding.token_type(),
            expires_in: access.expires_in,
            // RFC 8693 §2.2.1: a refresh token is optional; an exchanged token is short-lived
            // and tied to its subject token, so none is issued.
            refresh_token: None,
            scope: scope.to_string(),
            id_token: None,
            issued_token_type: Some(issued_token_type),
            dpop_nonce: None,
        })
    }

    /// The claims of a subject or actor token, if it is one of Tessera's access tokens and
    /// still good: every failure is `invalid_request` naming `parameter` (RFC 8693 §2.2.2).
    async fn exchangeable_token(&self, token: &str, parameter: &str) -> Result<Value, Error> {
        let invalid = || Error::invalid_request(format!("the {parameter} is invalid, expired or not ours"));
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid());
        }
        let claims = self
            .keys
            .current()
            .verify_jwt(token, "at+jwt", &self.issuer)
            .ok_or_else(invalid)?;
        if !self.access_token_live(&claims).await? {
            return Err(Error::invalid_request(format!("the {parameter} was revoked")));
        }
        Ok(claims)
    }
}

/// A token's audiences: `aud` is one string or an array of them (RFC 7519 §4.1.3).
fn audiences_of(claims: &Value) -> impl Iterator<Item = &str> {
    let (one, many) = match &claims["aud"] {
        Value::String(aud) => (Some(aud.as_str()), None),
        Value::Array(list) => (None, Some(list.iter().filter_map(Value::as_str))),
        _ => (None, None),
    };
    one.into_iter().chain(many.into_iter().flatten())
}

/// The one audience of the new token: the `audience` and/or `resource` asked for (the same
/// if both), which the client's policy must allow (`invalid_target` otherwise, RFC 8693
/// §2.2.2); with neither, the policy's only audience.
fn exchange_target(allowed: &[String], audience: Option<&str>, resource: Option<&str>) -> Result<String, Error> {
    let target = match (audience, resource) {
        (Some(a), Some(r)) if a != r => {
            return Err(Error::new(
                ErrorCode::InvalidTarget,
                "audience and resource name different targets; an exchanged token has one audience",
            ))
        }
        (Some(target), _) | (None, Some(target)) => target,
        (None, None) => match allowed {
            [only] => only,
            _ => {
                return Err(Error::invalid_request(
                    "audience (or resource) is required: this client may exchange for several audiences",
                ))
            }
        },
    };
    if allowed.iter().any(|a| a == target) {
        Ok(target.to_string())
    } else {
        Err(Error::new(
            ErrorCode::InvalidTarget,
            "this client may not exchange tokens for that audience",
        ))
    }
}

/// The new token's scope: the requested one, or the subject's, within both the subject
/// token's scope and what the client may hold (`invalid_scope` otherwise). The administration
/// scope is only ever granted through client_credentials, so it is never exchanged.
fn exchanged_scope(subject: &Value, requested: Option<&str>, client_scopes: &[String]) -> Result<Scope, Error> {
    let granted = Scope::parse(subject["scope"].as_str().unwrap_or_default())
        .map_err(|_| Error::invalid_request("the subject_token's scope is malformed"))?;
    let holdable = |t: &str| granted.contains(t) && client_scopes.iter().any(|c| c == t) && t != ADMIN_SCOPE;
    let scope = match requested {
        Some(requested) => {
            let requested = Scope::parse(requested)?;
            if let Some(bad) = requested.tokens().find(|t| !holdable(t)) {
                return Err(Error::new(
                    ErrorCode::InvalidScope,
                    format!("scope {bad:?} is beyond the subject_token's scope or this client's"),
                ));
            }
            requested
        }
        None => Scope::from_tokens(granted.tokens().filter(|t| holdable(t)).map(str::to_string)),
    };
    if scope.is_empty() {
        return Err(Error::new(
            ErrorCode::InvalidScope,
            "the subject_token has no scope this client may hold",
        ));
    }
    Ok(scope)
}

/// The `act` claim of the new token (RFC 8693 §4.1): the actor, with whoever acted before
/// (the subject token's `act`) nested inside; without an actor, the subject's `act` as is.
fn delegation(subject: &Value, actor: Option<&Value>) -> Result<Option<Value>, Error> {
    let earlier = subject.get("act").filter(|act| act.is_object()).cloned();
    let Some(actor) = actor else {
        return Ok(earlier);
    };
    let Some(actor_sub) = actor["sub"].as_str() else {
        return Err(Error::invalid_request("the actor_token names no subject"));
    };
    let mut act = json!({"sub": actor_sub, "client_id": actor["client_id"]});
    if let Some(earlier) = earlier {
        if act_depth(&earlier) >= MAX_ACT_DEPTH {
            return Err(Error::invalid_request(
                "the subject_token's delegation chain is too long",
            ));
        }
        act["act"] = earlier;
    }
    Ok(Some(act))
}

/// How many actors an `act` claim names, itself included.
fn act_depth(act: &Value) -> usize {
    let mut depth = 0;
    let mut current = Some(act);
    while let Some(act) = current {
        depth += 1;
        current = act.get("act");
    }
    depth
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["https://a.example".into(), "https://b.example".into()]
    }

    #[test]
    fn the_target_must_be_allowed_and_single() {
        let allowed = allowed();
        assert_eq!(
            exchange_target(&allowed, Some("https://a.example"), None).unwrap(),
            "https://a.example"
        );
        assert_eq!(
            exchange_target(&allowed, None, Some("https://b.example")).unwrap(),
            "https://b.example"
        );
        assert_eq!(
            exchange_target(&allowed, Some("https://b.example"), Some("https://b.example")).unwrap(),
            "https://b.example"
        );
        let code = |r: Result<String, Error>| r.unwrap_err().code;
        assert_eq!(
            code(exchange_target(&allowed, Some("https://c.example"), None)),
            ErrorCode::InvalidTarget
        );
        assert_eq!(
            code(exchange_target(
                &allowed,
                Some("https://a.example"),
                Some("https://b.example")
            )),
            ErrorCode::InvalidTarget
        );
        assert_eq!(code(exchange_target(&allowed, None, None)), ErrorCode::InvalidRequest);
        assert_eq!(
            exchange_target(&allowed[..1], None, None).unwrap(),
            "https://a.example",
            "the only allowed audience is the default"
        );
    }

    #[test]
    fn the_scope_stays_within_the_subject_and_the_client() {
        let subject = json!({"scope": "read write tessera:admin"});
        let client: Vec<String> = vec!["read".into(), "write".into(), "tessera:admin".into()];
        let scope = |requested| exchanged_scope(&subject, requested, &client).map(|s| s.to_string());
        assert_eq!(scope(None).unwrap(), "read write", "the admin scope is never exchanged");
        assert_eq!(scope(Some("read")).unwrap(), "read");
        assert_eq!(scope(Some("read delete")).unwrap_err().code, ErrorCode::InvalidScope);
        assert_eq!(scope(Some("tessera:admin")).unwrap_err().code, ErrorCode::InvalidScope);
        let narrow_client = vec!["read".to_string()];
        assert_eq!(
            exchanged_scope(&subject, None, &narrow_client).unwrap().to_string(),
            "read"
        );
        assert_eq!(
            exchanged_scope(&subject, Some("write"), &narrow_client)
                .unwrap_err()
                .code,
            ErrorCode::InvalidScope
        );
        let nothing_in_common = vec!["other".to_string()];
        assert_eq!(
            exchanged_scope(&subject, None, &nothing_in_common).unwrap_err().code,
            ErrorCode::InvalidScope
        );
    }

    #[test]
    fn actors_nest_with_the_current_one_outermost() {
        let first = delegation(
            &json!({"sub": "alice"}),
            Some(&json!({"sub": "svc-a", "client_id": "svc-a"})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(first, json!({"sub": "svc-a", "client_id": "svc-a"}));
        let second = delegation(
            &json!({"sub": "alice", "act": first}),
            Some(&json!({"sub": "svc-b", "client_id": "svc-b"})),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            second,
            json!({"sub": "svc-b", "client_id": "svc-b", "act": {"sub": "svc-a", "client_id": "svc-a"}})
        );
        assert_eq!(
            delegation(&json!({"sub": "alice", "act": second}), None).unwrap(),
            Some(second.clone()),
            "without an actor the chain is kept"
        );
        assert_eq!(delegation(&json!({"sub": "alice"}), None).unwrap(), None);
    }

    #[test]
    fn a_delegation_chain_is_bounded() {
        let mut act = json!({"sub": "svc-0"});
        for i in 1..MAX_ACT_DEPTH {
            act = json!({"sub": format!("svc-{i}"), "act": act});
        }
        assert_eq!(act_depth(&act), MAX_ACT_DEPTH);
        let refused = delegation(&json!({"sub": "alice", "act": act}), Some(&json!({"sub": "svc-x"})));
        assert_eq!(refused.unwrap_err().code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn audiences_are_read_as_a_string_or_an_array() {
        assert_eq!(audiences_of(&json!({"aud": "x"})).collect::<Vec<_>>(), ["x"]);
        assert_eq!(
            audiences_of(&json!({"aud": ["x", "y"]})).collect::<Vec<_>>(),
            ["x", "y"]
        );
        assert_eq!(audiences_of(&json!({})).count(), 0);
    }

    #[test]
    fn only_access_token_and_jwt_types_are_ours() {
        assert!(tessera_token_type(ACCESS_TOKEN_TYPE, "x").is_ok());
        assert!(tessera_token_type(JWT_TOKEN_TYPE, "x").is_ok());
        for other in [
            "urn:ietf:params:oauth:token-type:id_token",
            "urn:ietf:params:oauth:token-type:refresh_token",
            "urn:ietf:params:oauth:token-type:saml2",
            "access_token",
        ] {
            assert_eq!(
                tessera_token_type(other, "x").unwrap_err().code,
                ErrorCode::InvalidRequest
            );
        }
    }
}
