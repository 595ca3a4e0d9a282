//! JOSE vocabulary shared by the keyring, the records that name an algorithm, and the
//! verifiers: the JWS algorithms Tessera signs with.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The JWS algorithms a key can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256 (the default).
    #[value(name = "ES256", alias = "es256")]
    ES256,
    /// Ed25519.
    #[value(name = "EdDSA", alias = "eddsa")]
    EdDSA,
    /// RSASSA-PKCS1-v1_5 with SHA-256, 2048-bit keys.
    #[value(name = "RS256", alias = "rs256")]
    RS256,
}

impl Algorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
            Algorithm::RS256 => "RS256",
        }
    }

    pub(crate) fn jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        match self {
            Algorithm::ES256 => jsonwebtoken::Algorithm::ES256,
            Algorithm::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            Algorithm::RS256 => jsonwebtoken::Algorithm::RS256,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
