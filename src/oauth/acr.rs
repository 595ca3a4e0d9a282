//! How strongly a user proved who they are. A login records the RFC 8176 `amr` values of what
//! was proved; from them follows the login's level, the `acr` that ID tokens and access tokens
//! carry (OpenID Connect Core §2, RFC 9068 §2.2.1) and that apps ask for with `acr_values`
//! (Core §3.1.2.1) or a resource server with RFC 9470's challenge.

/// RFC 8176 §2 authentication method references.
pub const PWD: &str = "pwd";
/// A one-time code: an authenticator app's (TOTP) or a recovery code.
pub const OTP: &str = "otp";
/// More than one factor took part.
pub const MFA: &str = "mfa";

/// The levels of a login, weakest first. Each is an `acr` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// One factor: a password.
    SingleFactor,
    /// Two factors: a password and a one-time code.
    MultiFactor,
}

impl Level {
    /// Every level, weakest first (`acr_values_supported`).
    pub const ALL: [Level; 2] = [Level::SingleFactor, Level::MultiFactor];

    /// The `acr` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::SingleFactor => "urn:tessera:acr:single-factor",
            Level::MultiFactor => "urn:tessera:acr:multi-factor",
        }
    }

    pub fn parse(value: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|level| level.as_str() == value)
    }

    /// The level a login with these methods reached.
    pub fn of(amr: &[String]) -> Level {
        if amr.iter().any(|m| m == MFA) {
            Level::MultiFactor
        } else {
            Level::SingleFactor
        }
    }
}

/// A login as tokens describe it (OpenID Connect Core §2; RFC 9068 §2.2.1): when, how, and
/// the level that makes.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct LoginClaims<'a> {
    pub auth_time: i64,
    pub acr: &'static str,
    pub amr: &'a [String],
}

impl<'a> LoginClaims<'a> {
    /// The login behind a grant.
    pub fn of_grant(grant: &'a crate::store::GrantRecord) -> LoginClaims<'a> {
        LoginClaims {
            auth_time: grant.auth_time,
            acr: Level::of(&grant.amr).as_str(),
            amr: &grant.amr,
        }
    }
}

/// `amr` after `more` was proved on top of `amr` (each value once, `mfa` last).
pub fn adding(amr: &[String], more: &[&str]) -> Vec<String> {
    let mut methods: Vec<String> = amr.iter().filter(|m| *m != MFA).cloned().collect();
    for method in more {
        if *method != MFA && !methods.iter().any(|m| m == method) {
            methods.push(method.to_string());
        }
    }
    if methods.len() > 1 {
        methods.push(MFA.to_string());
    }
    methods
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_after_a_password_is_two_factors() {
        let password = crate::store::password_only();
        assert_eq!(Level::of(&password), Level::SingleFactor);
        let both = adding(&password, &[OTP]);
        assert_eq!(both, [PWD, OTP, MFA]);
        assert_eq!(Level::of(&both), Level::MultiFactor);
        // Proving the same factor again adds nothing.
        assert_eq!(adding(&both, &[OTP]), both);
        assert!(Level::SingleFactor < Level::MultiFactor);
        for level in Level::ALL {
            assert_eq!(Level::parse(level.as_str()), Some(level));
        }
        assert_eq!(Level::parse("urn:tessera:acr:nope"), None);
    }
}
