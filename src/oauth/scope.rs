//! Scopes (RFC 6749 §3.3): parsed once into a sorted, de-duplicated set.

use std::fmt;

pub use crate::syntax::is_scope_token;

use super::error::{Error, ErrorCode};

/// The scope of Tessera's own administration API. It is not one of the configured scopes:
/// only admin clients may hold it, and only through client_credentials.
pub(crate) const ADMIN_SCOPE: &str = "tessera:admin";

/// Whether `token` is a scope this server knows: a configured one, or the admin scope.
pub(crate) fn is_known(config: &crate::config::Config, token: &str) -> bool {
    token == ADMIN_SCOPE || config.scopes.iter().any(|s| s.name == token)
}

/// A set of scope tokens in a canonical order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope(Vec<String>);

impl Scope {
    /// Parses a space-delimited scope string; fails with `invalid_scope` on bad syntax.
    pub fn parse(value: &str) -> Result<Scope, Error> {
        let mut tokens = Vec::new();
        for token in value.split(' ') {
            if !is_scope_token(token) {
                return Err(Error::new(ErrorCode::InvalidScope, "scope is malformed"));
            }
            tokens.push(token.to_string());
        }
        Ok(Scope::from_tokens(tokens))
    }

    pub(crate) fn from_tokens(tokens: impl IntoIterator<Item = String>) -> Scope {
        let mut tokens: Vec<String> = tokens.into_iter().collect();
        tokens.sort();
        tokens.dedup();
        Scope(tokens)
    }

    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn contains(&self, token: &str) -> bool {
        self.0.iter().any(|t| t == token)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub(crate) fn is_subset_of(&self, allowed: &[String]) -> bool {
        self.0.iter().all(|t| allowed.contains(t))
    }

    /// The scope a request ends up with: the requested one if every token is both known to
    /// the server and allowed for the client, else `invalid_scope`. No request means the
    /// client's whole allowance (RFC 6749 §3.3 lets the server pick a default).
    pub fn resolve(
        requested: Option<&str>,
        client_allowed: &[String],
        known: impl Fn(&str) -> bool,
    ) -> Result<Scope, Error> {
        let scope = match requested {
            Some(value) => Scope::parse(value)?,
            None => Scope::from_tokens(client_allowed.iter().filter(|t| known(t)).cloned()),
        };
        if let Some(bad) = scope
            .tokens()
            .find(|t| !known(t) || !client_allowed.iter().any(|a| a == t))
        {
            return Err(Error::new(
                ErrorCode::InvalidScope,
                format!("scope {bad:?} is unknown or not allowed for this client"),
            ));
        }
        Ok(scope)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed() -> Vec<String> {
        vec!["read".into(), "write".into()]
    }

    #[test]
    fn scopes_are_sorted_and_deduplicated() {
        assert_eq!(Scope::parse("write read write").unwrap().to_string(), "read write");
    }

    #[test]
    fn malformed_scopes_are_rejected() {
        for bad in ["", "read  write", "re\"ad", "read\\", " read"] {
            assert_eq!(Scope::parse(bad).unwrap_err().code, ErrorCode::InvalidScope, "{bad:?}");
        }
    }

    #[test]
    fn unknown_or_disallowed_scopes_are_invalid_scope() {
        let known = |t: &str| t == "read" || t == "write" || t == "admin";
        assert!(Scope::resolve(Some("read"), &allowed(), known).is_ok());
        assert_eq!(
            Scope::resolve(Some("admin"), &allowed(), known).unwrap_err().code,
            ErrorCode::InvalidScope
        );
        assert_eq!(
            Scope::resolve(Some("nope"), &allowed(), known).unwrap_err().code,
            ErrorCode::InvalidScope
        );
        assert_eq!(
            Scope::resolve(None, &allowed(), known).unwrap().to_string(),
            "read write"
        );
    }
}
