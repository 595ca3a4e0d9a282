//! Argon2id password hashes (PHC strings), worked out in memory the process keeps for them.
//!
//! A hash with the default parameters works in 19 MiB. Left to allocate it, the argon2 crate
//! asks the allocator each time, and a blocking thread that ran a hash may keep those 19 MiB
//! in its own cache until the thread ends, uncleared.
//! Here the memory comes from a pool and goes back to it, cleared (the argon2 crate frees its
//! blocks as they are, even with its `zeroize` feature): the pool keeps the memory of two
//! hashes of the default size, the most that usually run at once; a hash beyond them, or of
//! another size (an imported hash's parameters), allocates its own and frees it, cleared. `max_parallel_password_checks` bounds how many run at once for logins.

use std::sync::Mutex;

use argon2::password_hash::{rand_core::OsRng, Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

/// Memory kept between hashes: this many hashes' worth at most (38 MiB at the defaults).
const KEPT: usize = 2;

static POOL: Mutex<Vec<Vec<Block>>> = Mutex::new(Vec::new());

/// Runs `hash` on at least `blocks` blocks of pooled memory, then clears them (they hold what
/// the password was turned into) and gives them back.
fn with_memory<T>(blocks: usize, hash: impl FnOnce(&mut [Block]) -> T) -> T {
    // Only the default size is pooled: a gigabyte an imported hash asked for is not kept.
    let pooled = (blocks == Params::default().block_count())
        .then(|| POOL.lock().unwrap_or_else(|p| p.into_inner()).pop())
        .flatten();
    let mut memory = pooled.unwrap_or_else(|| vec![Block::new(); blocks]);
    let out = hash(&mut memory);
    // Volatile writes: a buffer about to be freed is cleared too.
    memory.iter_mut().for_each(Zeroize::zeroize);
    if blocks == Params::default().block_count() {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < KEPT {
            pool.push(memory);
        }
    }
    out
}

/// Hashes a password with Argon2id and the crate's default (OWASP-recommended) parameters.
pub fn hash_password(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    let argon2 = Argon2::default();
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes)?;
    let length = argon2.params().output_len().unwrap_or(Params::DEFAULT_OUTPUT_LEN);
    let output = Output::init_with(length, |out| {
        with_memory(argon2.params().block_count(), |memory| {
            argon2.hash_password_into_with_memory(password.as_bytes(), salt_bytes, out, memory)
        })
        .map_err(Into::into)
    })?;
    let hash = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: ParamsString::try_from(argon2.params())?,
        salt: Some(salt.as_salt()),
        hash: Some(output),
    };
    Ok(hash.to_string())
}

/// Whether `password` is the one `phc` (an Argon2 PHC string, whatever its parameters) was
/// made from. Compared in constant time.
pub fn password_matches(password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else {
        return false;
    };
    let Ok(algorithm) = Algorithm::try_from(hash.algorithm) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from).transpose() {
        Ok(version) => version.unwrap_or_default(),
        Err(_) => return false,
    };
    let Ok(params) = Params::try_from(&hash) else {
        return false;
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let argon2 = Argon2::new(algorithm, version, params);
    let mut out = vec![0u8; expected.len()];
    let hashed = with_memory(argon2.params().block_count(), |memory| {
        argon2.hash_password_into_with_memory(password.as_bytes(), salt_bytes, &mut out, memory)
    });
    let matches = hashed.is_ok() && bool::from(out.ct_eq(expected.as_bytes()));
    out.zeroize();
    matches
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[test]
    fn hashes_are_the_crates_own_both_ways() {
        let ours = hash_password("correct horse").unwrap();
        assert!(ours.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{ours}");
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(Argon2::default().verify_password(b"correct horse", &parsed).is_ok());
        assert!(Argon2::default().verify_password(b"wrong horse", &parsed).is_err());

        let salt = SaltString::generate(&mut OsRng);
        let theirs = Argon2::default()
            .hash_password(b"battery staple", &salt)
            .unwrap()
            .to_string();
        assert!(password_matches("battery staple", &theirs));
        assert!(!password_matches("battery stapler", &theirs));
        // Other parameters than the defaults (an imported hash) are read from the string.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(1024, 1, 1, None).unwrap(),
        );
        let imported = small.hash_password(b"imported", &salt).unwrap().to_string();
        assert!(password_matches("imported", &imported));
        assert!(!password_matches("exported", &imported));
        for broken in [
            "",
            "$argon2id$",
            "not a hash",
            "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ",
        ] {
            assert!(!password_matches("x", broken), "{broken}");
        }
    }

    #[test]
    fn the_memory_is_reused_and_cleared() {
        let blocks = Argon2::default().params().block_count();
        hash_password("first").unwrap();
        hash_password("second").unwrap();
        // A hash of other parameters works in memory of its own, never kept.
        let small = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(64, 1, 1, None).unwrap(),
        );
        let salt = SaltString::generate(&mut OsRng);
        let other = small.hash_password(b"other", &salt).unwrap().to_string();
        assert!(password_matches("other", &other));
        let pool = POOL.lock().unwrap();
        // Other tests hash at the same time: some memory may be in use, never more than kept.
        assert!((1..=KEPT).contains(&pool.len()) || pool.is_empty());
        assert!(pool.iter().all(|memory| memory.len() == blocks));
        assert!(pool
            .iter()
            .all(|memory| memory.iter().all(|block| block.as_ref().iter().all(|w| *w == 0))));
    }
}
