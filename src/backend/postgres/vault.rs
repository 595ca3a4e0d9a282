//! The keyring of a cluster, in its PostgreSQL database: every node signs with the same keys
//! and publishes the same JWKS. Private keys are sealed with AES-256-GCM under a key-encryption
//! key (KEK) that is never stored in the database (`key_encryption_key_file`, or
//! `TESSERA_KEY_ENCRYPTION_KEY`), with the kid as associated data so a sealed key cannot be
//! moved to another row. A database dump alone therefore does not leak signing keys.
//!
//! Changes run in one transaction that first locks the `keyring` row, so concurrent changes
//! (`tessera keys` on any machine, the admin API on any node) happen one after another; the
//! row's version is the stamp nodes poll to reload.

use async_trait::async_trait;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use deadpool_postgres::Pool;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

use crate::keys::{KeyChangeFn, KeyError, KeyInfo, KeyVault, KeyringDraft, Stamp, StoredKeyring};

/// A key-encryption key: 32 random bytes.
pub struct KeyEncryptionKey(LessSafeKey);

impl KeyEncryptionKey {
    /// Parses a KEK written as base64 (standard or URL-safe, padded or not) of 32 bytes, as
    /// `tessera keys new-encryption-key` prints it.
    pub fn parse(text: &str) -> Result<KeyEncryptionKey, KeyError> {
        let text = text.trim();
        let bytes = URL_SAFE_NO_PAD
            .decode(text.trim_end_matches('='))
            .or_else(|_| STANDARD.decode(text))
            .map_err(|_| KeyError::Vault("the key-encryption key is not base64".into()))?;
        let key = UnboundKey::new(&AES_256_GCM, &bytes)
            .map_err(|_| KeyError::Vault(format!("the key-encryption key must be 32 bytes, not {}", bytes.len())))?;
        Ok(KeyEncryptionKey(LessSafeKey::new(key)))
    }

    /// A new random KEK, as text.
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        // The system RNG does not fail on supported platforms (ring documents it).
        SystemRandom::new().fill(&mut bytes).expect("the system RNG works");
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Seals a server secret (the key that seals scratch values, the one that signs cookies,
    /// the DPoP nonce key) for the database, with its name as associated data, so a database
    /// reader cannot use it and it cannot be moved to another name.
    pub fn seal_secret(&self, name: &str, secret: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.seal(&format!("server-secret\0{name}"), secret)
    }

    /// What [`KeyEncryptionKey::seal_secret`] sealed, if this KEK sealed it under `name`.
    pub fn open_secret(&self, name: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        self.open(&format!("server-secret\0{name}"), sealed).map_err(|_| {
            KeyError::Vault(format!(
                "the server secret {name} in the database does not open with this key-encryption key: \
                 every node needs the one the cluster's keys were sealed with"
            ))
        })
    }

    fn seal(&self, kid: &str, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| KeyError::Vault("the system RNG failed".into()))?;
        let mut sealed = plaintext.to_vec();
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(kid.as_bytes()),
                &mut sealed,
            )
            .map_err(|_| KeyError::Vault("sealing a key failed".into()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(&self, kid: &str, sealed: &[u8]) -> Result<Vec<u8>, KeyError> {
        let wrong = || {
            KeyError::Vault(format!(
                "key {kid} in the database does not open with this key-encryption key: every node \
                 needs the one the cluster's keys were sealed with"
            ))
        };
        if sealed.len() < NONCE_LEN {
            return Err(wrong());
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| wrong())?;
        let mut buffer = ciphertext.to_vec();
        let plaintext = self
            .0
            .open_in_place(nonce, Aad::from(kid.as_bytes()), &mut buffer)
            .map_err(|_| wrong())?;
        Ok(plaintext.to_vec())
    }
}

/// The keyring in the cluster's database.
pub struct DatabaseVault {
    pool: Pool,
    kek: KeyEncryptionKey,
}

fn db(e: impl std::fmt::Display) -> KeyError {
    KeyError::Vault(format!("the keyring in the database: {e}"))
}

/// A status or algorithm as its column holds it (its serde name).
fn column<T: serde::Serialize>(value: &T) -> Result<String, KeyError> {
    match serde_json::to_value(value)? {
        serde_json::Value::String(s) => Ok(s),
        other => Err(db(format!("unexpected value {other}"))),
    }
}

fn from_column<T: serde::de::DeserializeOwned>(text: String) -> Result<T, KeyError> {
    Ok(serde_json::from_value(serde_json::Value::String(text))?)
}

impl DatabaseVault {
    pub fn new(pool: Pool, kek: KeyEncryptionKey) -> DatabaseVault {
        DatabaseVault { pool, kek }
    }

    async fn rows(client: &tokio_postgres::Transaction<'_>) -> Result<Vec<tokio_postgres::Row>, KeyError> {
        client
            .query(
                "SELECT kid, alg, status, created_at, private_key, promoted_at FROM keys ORDER BY position",
                &[],
            )
            .await
            .map_err(db)
    }

    fn info(row: &tokio_postgres::Row) -> Result<KeyInfo, KeyError> {
        Ok(KeyInfo {
            kid: row.get(0),
            alg: from_column(row.get(1))?,
            status: from_column(row.get(2))?,
            created_at: row.get(3),
            promoted_at: row.get(5),
        })
    }
}

#[async_trait]
impl KeyVault for DatabaseVault {
    async fn read(&self) -> Result<StoredKeyring, KeyError> {
        let mut client = self.pool.get().await.map_err(db)?;
        // One snapshot for the keys and the version they are at.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await
            .map_err(db)?;
        let version: i64 = tx
            .query_one("SELECT version FROM keyring WHERE id = 1", &[])
            .await
            .map_err(db)?
            .get(0);
        let mut keys = Vec::new();
        for row in Self::rows(&tx).await? {
            let info = Self::info(&row)?;
            let pkcs8 = self.kek.open(&info.kid, row.get::<_, &[u8]>(4))?;
            keys.push((info, pkcs8));
        }
        tx.commit().await.map_err(db)?;
        Ok(StoredKeyring {
            keys,
            stamp: version.to_string(),
        })
    }

    async fn stamp(&self) -> Result<Stamp, KeyError> {
        let client = self.pool.get().await.map_err(db)?;
        let version: i64 = client
            .query_one("SELECT version FROM keyring WHERE id = 1", &[])
            .await
            .map_err(db)?
            .get(0);
        Ok(version.to_string())
    }

    async fn change(&self, change: KeyChangeFn) -> Result<KeyInfo, KeyError> {
        let mut client = self.pool.get().await.map_err(db)?;
        let tx = client.transaction().await.map_err(db)?;
        // The row lock makes every other change wait until this one commits.
        tx.execute("SELECT version FROM keyring WHERE id = 1 FOR UPDATE", &[])
            .await
            .map_err(db)?;
        let mut keys = Vec::new();
        for row in Self::rows(&tx).await? {
            let info = Self::info(&row)?;
            // A change made with another KEK would seal new keys the other nodes cannot open.
            self.kek.open(&info.kid, row.get::<_, &[u8]>(4))?;
            keys.push(info);
        }
        let mut draft = KeyringDraft {
            keys,
            added: Vec::new(),
        };
        let outcome = change(&mut draft)?;
        for (info, pkcs8) in &draft.added {
            tx.execute(
                "INSERT INTO keys (kid, alg, status, created_at, position, private_key, promoted_at) \
                 VALUES ($1, $2, $3, $4, 0, $5, $6)",
                &[
                    &info.kid,
                    &column(&info.alg)?,
                    &column(&info.status)?,
                    &info.created_at,
                    &self.kek.seal(&info.kid, pkcs8)?,
                    &info.promoted_at,
                ],
            )
            .await
            .map_err(db)?;
        }
        for (position, info) in draft.keys.iter().enumerate() {
            tx.execute(
                "UPDATE keys SET status = $2, position = $3, promoted_at = $4 WHERE kid = $1",
                &[&info.kid, &column(&info.status)?, &(position as i64), &info.promoted_at],
            )
            .await
            .map_err(db)?;
        }
        tx.execute("UPDATE keyring SET version = version + 1 WHERE id = 1", &[])
            .await
            .map_err(db)?;
        tx.commit().await.map_err(db)?;
        Ok(outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_key_opens_only_with_its_kek_and_its_kid() {
        let kek = KeyEncryptionKey::parse(&KeyEncryptionKey::generate()).unwrap();
        let sealed = kek.seal("kid-1", b"private key").unwrap();
        assert_eq!(kek.open("kid-1", &sealed).unwrap(), b"private key");
        assert!(kek.open("kid-2", &sealed).is_err(), "moved to another kid");
        let other = KeyEncryptionKey::parse(&KeyEncryptionKey::generate()).unwrap();
        assert!(other.open("kid-1", &sealed).is_err(), "another KEK");
        assert!(KeyEncryptionKey::parse("c2hvcnQ").is_err(), "too short");
        let secret = kek.seal_secret("cookie-hmac", &[7; 32]).unwrap();
        assert_eq!(kek.open_secret("cookie-hmac", &secret).unwrap(), [7; 32]);
        assert!(kek.open_secret("dpop-nonce", &secret).is_err(), "moved to another name");
        assert!(kek.open("cookie-hmac", &secret).is_err(), "a secret is no key");
    }
}
