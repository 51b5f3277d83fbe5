//! Passwords (argon2id), access tokens (HS256 JWT over ring::hmac),
//! refresh tokens (opaque, stored hashed, rotated) and login rate limits.

pub mod jwt;
pub mod ratelimit;

use argon2::{Argon2, PasswordHasher, PasswordVerifier};
use ring::rand::{SecureRandom, SystemRandom};

use crate::error::{Error, Result};

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The OS RNG failing leaves nothing safe to do.
    SystemRandom::new()
        .fill(&mut b)
        .expect("the OS random number generator failed");
    b
}

pub const MIN_PASSWORD: usize = 8;

pub fn check_password_strength(pw: &str) -> Result<()> {
    if pw.chars().count() < MIN_PASSWORD || pw.len() > 1024 {
        return Err(Error::Invalid(format!(
            "password: use {MIN_PASSWORD} to 1024 characters"
        )));
    }
    Ok(())
}

/// An argon2id PHC string (random salt, the crate's default cost).
pub fn hash_password(pw: &str) -> Result<String> {
    check_password_strength(pw)?;
    Argon2::default()
        .hash_password(pw.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| Error::Internal(format!("hash password: {e}")))
}

pub fn verify_password(pw: &str, phc: &str) -> bool {
    Argon2::default()
        .verify_password(pw.as_bytes(), phc)
        .is_ok()
}

/// Argon2id takes 19 MiB and a core for tens of milliseconds per hash: a
/// class signing in at once must queue, not allocate 19 MiB × 300.
fn hashing_permits() -> &'static tokio::sync::Semaphore {
    static S: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();
    S.get_or_init(|| {
        let n = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        tokio::sync::Semaphore::new(n.clamp(1, 8))
    })
}

/// [`hash_password`] on the blocking pool, at most one per core at a time.
pub async fn hash_password_async(pw: String) -> Result<String> {
    check_password_strength(&pw)?;
    let _permit = hashing_permits()
        .acquire()
        .await
        .map_err(|e| Error::Internal(e.to_string()))?;
    tokio::task::spawn_blocking(move || hash_password(&pw))
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
}

/// [`verify_password`] on the blocking pool, at most one per core at a time.
pub async fn verify_password_async(pw: String, phc: String) -> bool {
    let Ok(_permit) = hashing_permits().acquire().await else {
        return false;
    };
    tokio::task::spawn_blocking(move || verify_password(&pw, &phc))
        .await
        .unwrap_or(false)
}

/// A hash to verify against when the user does not exist, so a login for
/// an unknown name costs the same as one with a wrong password.
pub fn dummy_hash() -> &'static str {
    static H: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    H.get_or_init(|| hash_password("not-a-real-password").unwrap_or_default())
}

/// A refresh token: `LOGINID.SECRET`; only SHA-256(SECRET) is stored.
pub fn new_refresh_secret() -> String {
    crate::store::hex(&random_bytes::<32>())
}

pub fn sha256_hex(s: &str) -> String {
    crate::store::hex(ring::digest::digest(&ring::digest::SHA256, s.as_bytes()).as_ref())
}

/// Constant-time string comparison (token hashes).
pub fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    #[test]
    fn argon2id_round_trip() {
        let h = super::hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(super::verify_password("correct horse", &h));
        assert!(!super::verify_password("wrong horse!", &h));
        assert!(!super::verify_password("x", "not a phc string"));
        assert!(super::hash_password("short").is_err());
    }
}
