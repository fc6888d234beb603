//! Per-buyer secrets for the token service: random, shown once at `grant`, stored only as an
//! argon2id hash so a copy of the registry does not let anyone get tokens.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;

use crate::error::AuthzError;

/// Prefix of every buyer secret, so a leaked one is recognisable (e.g. by secret scanners).
pub const SECRET_PREFIX: &str = "sbx_";

/// A new random secret: 256 bits, base64url, with [`SECRET_PREFIX`].
pub fn new_secret() -> Result<String, AuthzError> {
    let mut bytes = [0u8; 32];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|e| AuthzError::Crypto(e.to_string()))?;
    Ok(format!("{SECRET_PREFIX}{}", B64.encode(bytes)))
}

/// The argon2id hash (PHC string) of `secret`, with a random salt.
pub fn hash_secret(secret: &str) -> Result<String, AuthzError> {
    let mut salt = [0u8; 16];
    aws_lc_rs::rand::fill(&mut salt).map_err(|e| AuthzError::Crypto(e.to_string()))?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| AuthzError::Crypto(e.to_string()))?;
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AuthzError::Crypto(e.to_string()))
}

/// True if `secret` matches `hash`; a malformed hash matches nothing.
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|h| {
        Argon2::default()
            .verify_password(secret.as_bytes(), &h)
            .is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_verifies_against_its_hash_only() {
        let s = new_secret().unwrap();
        assert!(s.starts_with(SECRET_PREFIX) && s.len() > 40);
        let h = hash_secret(&s).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains(&s[SECRET_PREFIX.len()..]));
        assert!(verify_secret(&s, &h));
        assert!(!verify_secret(&new_secret().unwrap(), &h));
        assert!(!verify_secret(&s, "not a hash"));
        assert_ne!(hash_secret(&s).unwrap(), h, "salted");
    }
}
