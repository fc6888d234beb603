//! The seller's keyset: signing keys with their states, kept in a file readable only by its owner.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::error::AuthzError;

/// Signature algorithm of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KeyAlg {
    /// Ed25519 (default).
    EdDSA,
    /// ECDSA P-256 with SHA-256.
    ES256,
}

impl KeyAlg {
    /// The JOSE algorithm.
    pub fn jwt(self) -> jsonwebtoken::Algorithm {
        match self {
            KeyAlg::EdDSA => jsonwebtoken::Algorithm::EdDSA,
            KeyAlg::ES256 => jsonwebtoken::Algorithm::ES256,
        }
    }

    /// The `alg` header value.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlg::EdDSA => "EdDSA",
            KeyAlg::ES256 => "ES256",
        }
    }
}

/// Where a key is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyState {
    /// Published, not signing yet.
    Next,
    /// Signing.
    Current,
    /// Published until every token it signed has expired.
    Previous,
}

/// One key of the keyset.
#[derive(Clone, Serialize, Deserialize)]
pub struct KeyEntry {
    /// Key id (`kid`).
    pub kid: String,
    /// Algorithm.
    pub alg: KeyAlg,
    /// State.
    pub state: KeyState,
    /// When it was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Public key: raw 32 bytes (Ed25519) or the uncompressed point (P-256), base64url.
    pub public_key: String,
    /// PKCS#8 private key, base64url. Never printed.
    private_key: String,
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("public_key", &self.public_key)
            .finish_non_exhaustive()
    }
}

impl KeyEntry {
    /// Generates a key.
    pub fn generate(alg: KeyAlg, state: KeyState) -> Result<KeyEntry, AuthzError> {
        let rng = SystemRandom::new();
        let crypto = |e: aws_lc_rs::error::Unspecified| AuthzError::Crypto(e.to_string());
        let (pkcs8, public) = match alg {
            KeyAlg::EdDSA => {
                let doc = Ed25519KeyPair::generate_pkcs8(&rng).map_err(crypto)?;
                let pair = Ed25519KeyPair::from_pkcs8(doc.as_ref())
                    .map_err(|e| AuthzError::Crypto(e.to_string()))?;
                (doc.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
            }
            KeyAlg::ES256 => {
                let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .map_err(crypto)?;
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, doc.as_ref())
                    .map_err(|e| AuthzError::Crypto(e.to_string()))?;
                (doc.as_ref().to_vec(), pair.public_key().as_ref().to_vec())
            }
        };
        // kid: a short thumbprint of the public key, so it names the key and nothing else.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &public);
        let kid = B64.encode(&digest.as_ref()[..12]);
        Ok(KeyEntry {
            kid,
            alg,
            state,
            created_at: OffsetDateTime::now_utc(),
            public_key: B64.encode(public),
            private_key: B64.encode(pkcs8),
        })
    }

    /// The public key bytes.
    pub fn public_bytes(&self) -> Result<Vec<u8>, AuthzError> {
        B64.decode(&self.public_key)
            .map_err(|e| AuthzError::Crypto(format!("public key of {}: {e}", self.kid)))
    }

    /// The key for signing tokens.
    pub fn encoding_key(&self) -> Result<jsonwebtoken::EncodingKey, AuthzError> {
        let der = B64
            .decode(&self.private_key)
            .map_err(|e| AuthzError::Crypto(format!("private key of {}: {e}", self.kid)))?;
        Ok(match self.alg {
            KeyAlg::EdDSA => jsonwebtoken::EncodingKey::from_ed_der(&der),
            KeyAlg::ES256 => jsonwebtoken::EncodingKey::from_ec_der(&der),
        })
    }

    /// The key for verifying tokens.
    pub fn decoding_key(&self) -> Result<jsonwebtoken::DecodingKey, AuthzError> {
        let public = self.public_bytes()?;
        Ok(match self.alg {
            KeyAlg::EdDSA => jsonwebtoken::DecodingKey::from_ed_der(&public),
            KeyAlg::ES256 => jsonwebtoken::DecodingKey::from_ec_der(&public),
        })
    }
}

/// The seller's keys and the issuer name they sign for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Keyset {
    /// `iss` of every token.
    pub issuer: String,
    /// The keys.
    pub keys: Vec<KeyEntry>,
}

impl Keyset {
    /// A new keyset with a current key and a next key.
    pub fn generate(issuer: &str, alg: KeyAlg) -> Result<Keyset, AuthzError> {
        Ok(Keyset {
            issuer: issuer.to_owned(),
            keys: vec![
                KeyEntry::generate(alg, KeyState::Current)?,
                KeyEntry::generate(alg, KeyState::Next)?,
            ],
        })
    }

    /// The signing key.
    pub fn current(&self) -> Result<&KeyEntry, AuthzError> {
        self.keys
            .iter()
            .find(|k| k.state == KeyState::Current)
            .ok_or(AuthzError::NoCurrentKey)
    }

    /// Reads a keyset file.
    pub fn load(path: &Path) -> Result<Keyset, AuthzError> {
        let shown = path.display().to_string();
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(AuthzError::NoKeyset(shown));
            }
            Err(source) => {
                return Err(AuthzError::Io {
                    path: shown,
                    source,
                });
            }
        };
        let ks: Keyset = serde_json::from_str(&text).map_err(|e| AuthzError::Corrupt {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        ks.current().map_err(|_| AuthzError::Corrupt {
            path: shown,
            detail: "no key in state current".into(),
        })?;
        Ok(ks)
    }

    /// Writes the keyset atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), AuthzError> {
        let shown = path.display().to_string();
        let io = |source| AuthzError::Io {
            path: shown.clone(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(self).map_err(|e| AuthzError::Corrupt {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Creates and saves a keyset at `path`, refusing to replace one.
    pub fn init(path: &Path, issuer: &str, alg: KeyAlg) -> Result<Keyset, AuthzError> {
        if path.exists() {
            return Err(AuthzError::Exists(path.display().to_string()));
        }
        let ks = Keyset::generate(issuer, alg)?;
        ks.save(path)?;
        Ok(ks)
    }

    /// Loads the keyset at `path`, creating one if there is none.
    pub fn load_or_init(path: &Path, issuer: &str, alg: KeyAlg) -> Result<Keyset, AuthzError> {
        match Keyset::load(path) {
            Err(AuthzError::NoKeyset(_)) => Keyset::init(path, issuer, alg),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_keyset_file_is_private_and_round_trips() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("seller/keyset.json");
        let ks = Keyset::init(&path, "seller", KeyAlg::EdDSA).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let back = Keyset::load(&path).unwrap();
        assert_eq!(back.current().unwrap().kid, ks.current().unwrap().kid);
        assert!(matches!(
            Keyset::init(&path, "seller", KeyAlg::EdDSA),
            Err(AuthzError::Exists(_))
        ));
    }

    #[test]
    fn debug_output_never_shows_the_private_key() {
        let k = KeyEntry::generate(KeyAlg::EdDSA, KeyState::Current).unwrap();
        assert!(!format!("{k:?}").contains(&k.private_key));
    }

    #[test]
    fn a_corrupt_keyset_is_named_as_such() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("k.json");
        std::fs::write(&path, "{").unwrap();
        assert!(matches!(
            Keyset::load(&path),
            Err(AuthzError::Corrupt { .. })
        ));
    }
}
