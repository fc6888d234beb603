//! The seller's keyset: signing keys with their states (`next`, `current`, `previous`, revoked).
//! Where they are kept is a `KeyStore`'s business: a file readable only by its owner
//! (`FileKeyStore`), or KMS, whose keys never leave it.

use std::fmt;
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

/// How long a key stays known after it stops signing: the longest token lifetime plus the
/// largest clock leeway, after which every token it signed has expired.
pub const RETIRE_AFTER: std::time::Duration =
    std::time::Duration::from_secs(crate::token::MAX_TOKEN_LIFETIME.as_secs() + 60);

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
    /// When it became the current key (absent for a key made current: its creation).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub current_since: Option<OffsetDateTime>,
    /// For a `previous` key: when every token it signed has expired and it leaves the JWKS.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub retires_at: Option<OffsetDateTime>,
    /// Public key: raw 32 bytes (Ed25519) or the uncompressed point (P-256), base64url.
    pub public_key: String,
    /// PKCS#8 private key, base64url, for a key kept in the keyset file. Never printed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    private_key: Option<String>,
    /// The KMS key (id or ARN) of a key that lives in KMS: its private half never leaves it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms_key_id: Option<String>,
}

impl fmt::Debug for KeyEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyEntry")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("current_since", &self.current_since)
            .field("retires_at", &self.retires_at)
            .field("public_key", &self.public_key)
            .field("kms_key_id", &self.kms_key_id)
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
        let mut key = KeyEntry::public_only(alg, state, &public);
        key.private_key = Some(B64.encode(pkcs8));
        Ok(key)
    }

    /// A key whose private half is elsewhere (KMS): `public` is the raw Ed25519 key or the
    /// uncompressed P-256 point.
    pub fn in_kms(alg: KeyAlg, state: KeyState, public: &[u8], kms_key_id: &str) -> KeyEntry {
        let mut key = KeyEntry::public_only(alg, state, public);
        key.kms_key_id = Some(kms_key_id.to_owned());
        key
    }

    fn public_only(alg: KeyAlg, state: KeyState, public: &[u8]) -> KeyEntry {
        // kid: a short thumbprint of the public key, so it names the key and nothing else.
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, public);
        KeyEntry {
            kid: B64.encode(&digest.as_ref()[..12]),
            alg,
            state,
            created_at: OffsetDateTime::now_utc(),
            current_since: None,
            retires_at: None,
            public_key: B64.encode(public),
            private_key: None,
            kms_key_id: None,
        }
    }

    fn private_der(&self) -> Result<Vec<u8>, AuthzError> {
        let Some(private) = &self.private_key else {
            return Err(AuthzError::NotLocal(self.kid.clone()));
        };
        B64.decode(private)
            .map_err(|e| AuthzError::Crypto(format!("private key of {}: {e}", self.kid)))
    }

    /// The JOSE signature of `input` with this key's private half, for a key kept in the
    /// keyset file (the same bytes `jsonwebtoken` makes: Ed25519, or P-256 r‖s).
    pub fn sign_locally(&self, input: &[u8]) -> Result<Vec<u8>, AuthzError> {
        let der = self.private_der()?;
        let crypto = |e: String| AuthzError::Crypto(format!("signing with {}: {e}", self.kid));
        match self.alg {
            KeyAlg::EdDSA => {
                let pair = Ed25519KeyPair::from_pkcs8(&der).map_err(|e| crypto(e.to_string()))?;
                Ok(pair.sign(input).as_ref().to_vec())
            }
            KeyAlg::ES256 => {
                let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &der)
                    .map_err(|e| crypto(e.to_string()))?;
                let sig = pair
                    .sign(&SystemRandom::new(), input)
                    .map_err(|e| crypto(e.to_string()))?;
                Ok(sig.as_ref().to_vec())
            }
        }
    }

    /// The public key bytes.
    pub fn public_bytes(&self) -> Result<Vec<u8>, AuthzError> {
        B64.decode(&self.public_key)
            .map_err(|e| AuthzError::Crypto(format!("public key of {}: {e}", self.kid)))
    }

    /// The key for signing tokens.
    pub fn encoding_key(&self) -> Result<jsonwebtoken::EncodingKey, AuthzError> {
        let der = self.private_der()?;
        Ok(match self.alg {
            KeyAlg::EdDSA => jsonwebtoken::EncodingKey::from_ed_der(&der),
            KeyAlg::ES256 => jsonwebtoken::EncodingKey::from_ec_der(&der),
        })
    }

    /// The private key as a PKCS#8 PEM, to hand the key to another signer (an HSM import, an
    /// interoperability test). Never logged or printed by sealbox itself.
    pub fn private_pkcs8_pem(&self) -> Result<String, AuthzError> {
        let der = self.private_der()?;
        let der = match self.alg {
            // Stored as PKCS#8 v2 (with the public key); v1 is what every reader accepts.
            KeyAlg::EdDSA => Ed25519KeyPair::from_pkcs8(&der)
                .map_err(|e| e.to_string())
                .and_then(|k| k.to_pkcs8v1().map_err(|e| e.to_string()))
                .map(|d| d.as_ref().to_vec())
                .map_err(|e| AuthzError::Crypto(format!("private key of {}: {e}", self.kid)))?,
            KeyAlg::ES256 => der,
        };
        let body = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        Ok(pem)
    }

    /// The public key as a JWK (RFC 7517): `OKP`/`Ed25519` or `EC`/`P-256`; never private parts.
    pub fn jwk(&self) -> Result<serde_json::Value, AuthzError> {
        let public = self.public_bytes()?;
        Ok(match self.alg {
            KeyAlg::EdDSA => serde_json::json!({
                "kty": "OKP", "crv": "Ed25519", "x": B64.encode(&public),
                "kid": self.kid, "alg": "EdDSA", "use": "sig",
            }),
            KeyAlg::ES256 => {
                // Uncompressed point: 0x04 || x (32) || y (32).
                if public.len() != 65 || public[0] != 4 {
                    return Err(AuthzError::Crypto(format!(
                        "public key of {} is not a P-256 point",
                        self.kid
                    )));
                }
                serde_json::json!({
                    "kty": "EC", "crv": "P-256",
                    "x": B64.encode(&public[1..33]), "y": B64.encode(&public[33..65]),
                    "kid": self.kid, "alg": "ES256", "use": "sig",
                })
            }
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

/// Makes a new key of an algorithm, in a state: generated here, or created in KMS.
pub type FreshKey<'a> = dyn FnMut(KeyAlg, KeyState) -> Result<KeyEntry, AuthzError> + 'a;

/// The seller's keys and the issuer name they sign for.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Keyset {
    /// `iss` of every token.
    pub issuer: String,
    /// The keys.
    pub keys: Vec<KeyEntry>,
    /// Keys revoked while tokens they signed may still be unexpired: published as revoked so
    /// verifiers name the reason, until those tokens are dead anyway.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoked: Vec<RevokedKey>,
}

/// A revoked key id and until when it is announced as revoked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedKey {
    /// Key id.
    pub kid: String,
    /// When every token it signed has expired.
    #[serde(with = "time::serde::rfc3339")]
    pub until: OffsetDateTime,
}

impl Keyset {
    /// The ids of the keys in `state`, in order.
    pub fn kids(&self, state: KeyState) -> std::collections::BTreeSet<String> {
        self.keys
            .iter()
            .filter(|k| k.state == state)
            .map(|k| k.kid.clone())
            .collect()
    }

    /// A new keyset with a current key and a next key.
    pub fn generate(issuer: &str, alg: KeyAlg) -> Result<Keyset, AuthzError> {
        Keyset::generate_with(issuer, alg, &mut KeyEntry::generate)
    }

    /// A new keyset whose two keys come from `fresh` (a KMS key store makes them in KMS).
    pub fn generate_with(
        issuer: &str,
        alg: KeyAlg,
        fresh: &mut FreshKey<'_>,
    ) -> Result<Keyset, AuthzError> {
        Ok(Keyset {
            issuer: issuer.to_owned(),
            keys: vec![fresh(alg, KeyState::Current)?, fresh(alg, KeyState::Next)?],
            revoked: Vec::new(),
        })
    }

    /// Moves each key one step: previous keys past their retirement leave, current becomes
    /// previous (retiring after `retire_after`, the longest token lifetime plus clock leeway),
    /// next becomes current, and a new next is made.
    pub fn rotate(
        &mut self,
        now: OffsetDateTime,
        retire_after: std::time::Duration,
    ) -> Result<(), AuthzError> {
        self.rotate_with(now, retire_after, &mut KeyEntry::generate)
    }

    /// [`Keyset::rotate`] with new keys from `fresh`.
    pub fn rotate_with(
        &mut self,
        now: OffsetDateTime,
        retire_after: std::time::Duration,
        fresh: &mut FreshKey<'_>,
    ) -> Result<(), AuthzError> {
        self.retire_expired(now);
        let alg = self.current()?.alg;
        let retires_at = now + retire_after;
        let mut promoted = false;
        for k in &mut self.keys {
            match k.state {
                KeyState::Current => {
                    k.state = KeyState::Previous;
                    k.retires_at = Some(retires_at);
                }
                KeyState::Next if !promoted => {
                    k.state = KeyState::Current;
                    k.current_since = Some(now);
                    promoted = true;
                }
                _ => {}
            }
        }
        if !promoted {
            self.keys.push(fresh(alg, KeyState::Current)?);
        }
        self.keys.push(fresh(alg, KeyState::Next)?);
        Ok(())
    }

    /// Removes the key `kid` at once and lists it as revoked until `now + retire_after`.
    /// Revoking the current key promotes the next one (and makes a new next); revoking the
    /// next key makes a new next.
    pub fn revoke(
        &mut self,
        kid: &str,
        now: OffsetDateTime,
        retire_after: std::time::Duration,
    ) -> Result<KeyState, AuthzError> {
        self.revoke_with(kid, now, retire_after, &mut KeyEntry::generate)
    }

    /// [`Keyset::revoke`] with new keys from `fresh`.
    pub fn revoke_with(
        &mut self,
        kid: &str,
        now: OffsetDateTime,
        retire_after: std::time::Duration,
        fresh: &mut FreshKey<'_>,
    ) -> Result<KeyState, AuthzError> {
        let i = self
            .keys
            .iter()
            .position(|k| k.kid == kid)
            .ok_or_else(|| AuthzError::UnknownKey(kid.to_owned()))?;
        let alg = self.keys[i].alg;
        let removed = self.keys.remove(i);
        self.revoked.push(RevokedKey {
            kid: removed.kid.clone(),
            until: now + retire_after,
        });
        match removed.state {
            KeyState::Current => {
                match self.keys.iter_mut().find(|k| k.state == KeyState::Next) {
                    Some(next) => {
                        next.state = KeyState::Current;
                        next.current_since = Some(now);
                    }
                    None => self.keys.push(fresh(alg, KeyState::Current)?),
                }
                self.keys.push(fresh(alg, KeyState::Next)?);
            }
            KeyState::Next => self.keys.push(fresh(alg, KeyState::Next)?),
            KeyState::Previous => {}
        }
        Ok(removed.state)
    }

    /// Drops previous keys whose every token has expired.
    pub fn retire_expired(&mut self, now: OffsetDateTime) {
        self.keys
            .retain(|k| k.state != KeyState::Previous || k.retires_at.is_none_or(|t| t > now));
        self.revoked.retain(|r| r.until > now);
    }

    /// The JWKS (RFC 7517) of every published key: next, current and previous.
    pub fn jwks(&self) -> Result<serde_json::Value, AuthzError> {
        let keys = self
            .keys
            .iter()
            .map(KeyEntry::jwk)
            .collect::<Result<Vec<_>, _>>()?;
        Ok(serde_json::json!({ "keys": keys }))
    }

    /// How long the current key has been signing at `now`.
    pub fn current_age(&self, now: OffsetDateTime) -> Result<std::time::Duration, AuthzError> {
        let k = self.current()?;
        let since = k.current_since.unwrap_or(k.created_at);
        Ok(std::time::Duration::try_from(now - since).unwrap_or_default())
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
        let json = serde_json::to_vec_pretty(self).map_err(|e| AuthzError::Corrupt {
            path: shown.clone(),
            detail: e.to_string(),
        })?;
        crate::private_file::write(path, &json).map_err(io)
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
    fn rotation_moves_each_key_one_step_and_retires_previous_keys_after_their_tokens() {
        let mut ks = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        let (cur, next) = (ks.current().unwrap().kid.clone(), ks.keys[1].kid.clone());
        let t0 = OffsetDateTime::now_utc();
        let retire = std::time::Duration::from_secs(3600);
        ks.rotate(t0, retire).unwrap();
        let state = |ks: &Keyset, kid: &str| ks.keys.iter().find(|k| k.kid == kid).map(|k| k.state);
        assert_eq!(state(&ks, &cur), Some(KeyState::Previous));
        assert_eq!(state(&ks, &next), Some(KeyState::Current));
        assert_eq!(
            ks.keys.iter().filter(|k| k.state == KeyState::Next).count(),
            1
        );
        assert_eq!(ks.jwks().unwrap()["keys"].as_array().unwrap().len(), 3);
        ks.retire_expired(t0 + retire - std::time::Duration::from_secs(1));
        assert_eq!(state(&ks, &cur), Some(KeyState::Previous));
        ks.rotate(t0 + retire, retire).unwrap();
        assert_eq!(
            state(&ks, &cur),
            None,
            "the first key retired once its tokens expired"
        );
        assert_eq!(state(&ks, &next), Some(KeyState::Previous));
    }

    #[test]
    fn revoking_the_current_key_promotes_the_next_one() {
        let mut ks = Keyset::generate("seller", KeyAlg::ES256).unwrap();
        let (cur, next) = (ks.current().unwrap().kid.clone(), ks.keys[1].kid.clone());
        let now = OffsetDateTime::now_utc();
        assert_eq!(
            ks.revoke(&cur, now, RETIRE_AFTER).unwrap(),
            KeyState::Current
        );
        assert_eq!(ks.current().unwrap().kid, next);
        assert!(ks.keys.iter().all(|k| k.kid != cur));
        assert_eq!(
            ks.revoked.iter().map(|r| &r.kid).collect::<Vec<_>>(),
            [&cur]
        );
        assert!(matches!(
            ks.revoke("nope", now, RETIRE_AFTER),
            Err(AuthzError::UnknownKey(_))
        ));
        ks.retire_expired(now + RETIRE_AFTER);
        assert!(
            ks.revoked.is_empty(),
            "listed as revoked only while it matters"
        );
    }

    #[test]
    fn the_jwks_publishes_public_parts_only() {
        for alg in [KeyAlg::EdDSA, KeyAlg::ES256] {
            let ks = Keyset::generate("seller", alg).unwrap();
            let jwks = ks.jwks().unwrap();
            for k in jwks["keys"].as_array().unwrap() {
                assert_eq!(k["use"], "sig");
                assert!(k.get("d").is_none(), "{k}");
                let text = k.to_string();
                assert!(
                    ks.keys
                        .iter()
                        .all(|e| !text.contains(e.private_key.as_deref().unwrap()))
                );
            }
            let kty = jwks["keys"][0]["kty"].as_str().unwrap().to_owned();
            assert_eq!(kty, if alg == KeyAlg::EdDSA { "OKP" } else { "EC" });
        }
    }

    #[test]
    fn debug_output_never_shows_the_private_key() {
        let k = KeyEntry::generate(KeyAlg::EdDSA, KeyState::Current).unwrap();
        assert!(!format!("{k:?}").contains(k.private_key.as_deref().unwrap()));
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
