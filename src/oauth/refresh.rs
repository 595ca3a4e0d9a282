//! The shape of an opaque refresh token: which family (grant) it belongs to, and which of the
//! family's tokens it is.
//!
//! A family's first token is its id, 32 random bytes in base64url (43 characters: the shape
//! every refresh token had before families, so those still work). Each rotation hands out the
//! id followed by 16 fresh random bytes (22 more characters). The store keeps one record per
//! family, under the hash of the id, holding the hash of the current token
//! ([`crate::store::RefreshRecord`]). A token of the family that is not the current one is a
//! spent one: reuse (RFC 9700 §4.14.2). Only a holder of one of the family's tokens knows the
//! id, so nobody else can present a token the server takes for one of the family's.

use crate::oauth::{random_token, secret_hash};
use crate::store::SecretHash;

/// Characters of a family's id, the whole of its first token (32 bytes in base64url).
const FAMILY_ID_CHARS: usize = 43;
/// Characters of a later token: the id, then 16 random bytes in base64url.
const LATER_TOKEN_CHARS: usize = FAMILY_ID_CHARS + 22;

/// A refresh token as presented: the family it names and its own hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresentedRefresh<'a> {
    /// The family's id, the token's first 43 characters.
    id: &'a str,
    /// The hash of the id: the family record's key.
    pub family: SecretHash,
    /// The hash of the whole token.
    pub token: SecretHash,
}

impl<'a> PresentedRefresh<'a> {
    /// `None` for anything no refresh token of ours looks like.
    pub fn parse(presented: &'a str) -> Option<PresentedRefresh<'a>> {
        if !matches!(presented.len(), FAMILY_ID_CHARS | LATER_TOKEN_CHARS) || !presented.is_ascii() {
            return None;
        }
        let id = &presented[..FAMILY_ID_CHARS];
        let family = secret_hash(id);
        let token = if presented.len() == FAMILY_ID_CHARS {
            family
        } else {
            secret_hash(presented)
        };
        Some(PresentedRefresh { id, family, token })
    }

    /// The family's next token, and its hash.
    pub fn successor(&self) -> (String, SecretHash) {
        let token = format!("{}{}", self.id, random_token(16));
        let hash = secret_hash(&token);
        (token, hash)
    }
}

/// A new family's first token, and the hash its record is kept under.
pub fn first_refresh_token() -> (String, SecretHash) {
    let token = random_token(32);
    let family = secret_hash(&token);
    (token, family)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_family_s_tokens_share_its_key_and_differ_from_each_other() {
        let (first, family) = first_refresh_token();
        let presented = PresentedRefresh::parse(&first).unwrap();
        assert_eq!((presented.family, presented.token), (family, family));
        let (second, second_hash) = presented.successor();
        assert_eq!(second.len(), LATER_TOKEN_CHARS);
        let again = PresentedRefresh::parse(&second).unwrap();
        assert_eq!((again.family, again.token), (family, second_hash));
        let (third, third_hash) = again.successor();
        assert!(third.starts_with(&first) && third != second);
        assert_ne!(third_hash, second_hash);
        assert_eq!(PresentedRefresh::parse(&third).unwrap().family, family);
    }

    #[test]
    fn anything_else_names_no_family() {
        let (first, _) = first_refresh_token();
        let not_ascii = [format!("{}a", "é".repeat(21)), format!("{}a", "é".repeat(32))];
        for other in ["", "x", &first[1..], &format!("{first}a"), &not_ascii[0], &not_ascii[1]] {
            assert_eq!(PresentedRefresh::parse(other), None, "{other}");
        }
    }
}
