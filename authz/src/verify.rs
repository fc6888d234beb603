//! Token verification for ingest: the algorithm is pinned to the key's, every contract claim is
//! required, clock skew is bounded, and `sub` is bound to the buyer prefix of the object.
//! Each failure maps to its own [`Reason`].

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::errors::ErrorKind;
use sealbox_core::contract::Reason;
use serde_json::Value;

use crate::error::AuthzError;
use crate::keyset::{KeyAlg, Keyset};
use crate::token::{Claims, MAX_TOKEN_LIFETIME};

/// Longest token accepted, so a hostile header costs nothing to refuse.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// What a verifier checks besides the signature.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud` (the product id).
    pub audience: String,
    /// Allowed clock skew in seconds (at most 60).
    pub leeway_secs: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct TokenRejection {
    /// The reason code.
    pub reason: Reason,
    /// What exactly, in words (never key material).
    pub detail: String,
}

fn reject(reason: Reason, detail: impl Into<String>) -> TokenRejection {
    TokenRejection {
        reason,
        detail: detail.into(),
    }
}

struct PublicKey {
    alg: KeyAlg,
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

/// Most verified tokens remembered; the cache is emptied when it is full.
const MAX_CACHED_TOKENS: usize = 10_000;

/// Verifies tokens against the published keys of a keyset.
pub struct Verifier {
    config: VerifierConfig,
    keys: RwLock<HashMap<String, Arc<PublicKey>>>,
    // A buyer sends the same token with many requests: a repeat costs a lookup, not a
    // signature check. Keyed by the token's SHA-256; holds the claims and the signing kid.
    verified: RwLock<HashMap<[u8; 32], (String, Claims)>>,
}

impl Verifier {
    /// A verifier with the public keys of `keyset` (all states are published).
    pub fn new(config: VerifierConfig, keyset: &Keyset) -> Result<Verifier, AuthzError> {
        let v = Verifier {
            config,
            keys: RwLock::new(HashMap::new()),
            verified: RwLock::new(HashMap::new()),
        };
        v.replace_keys(keyset)?;
        Ok(v)
    }

    /// Replaces the known keys with those of `keyset`.
    pub fn replace_keys(&self, keyset: &Keyset) -> Result<(), AuthzError> {
        let mut map = HashMap::new();
        for k in &keyset.keys {
            let mut validation = jsonwebtoken::Validation::new(k.alg.jwt());
            validation.leeway = self.config.leeway_secs.min(60);
            validation.validate_nbf = true;
            validation.validate_exp = true;
            validation.set_audience(&[&self.config.audience]);
            validation.set_issuer(&[&self.config.issuer]);
            validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
            map.insert(
                k.kid.clone(),
                Arc::new(PublicKey {
                    alg: k.alg,
                    key: k.decoding_key()?,
                    validation,
                }),
            );
        }
        if let Ok(mut keys) = self.keys.write() {
            *keys = map;
        }
        // A key may have gone: nothing verified with it may be trusted from the cache.
        if let Ok(mut cache) = self.verified.write() {
            cache.clear();
        }
        Ok(())
    }

    fn key(&self, kid: &str) -> Option<Arc<PublicKey>> {
        self.keys.read().ok()?.get(kid).cloned()
    }

    /// Verifies `token` for a request written under the prefix of `buyer`.
    pub fn verify(&self, token: &str, buyer: &str) -> Result<Claims, TokenRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(reject(
                Reason::TokenMalformed,
                format!("longer than {MAX_TOKEN_BYTES} bytes"),
            ));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        let cached = self
            .verified
            .read()
            .ok()
            .and_then(|c| c.get(&hash).cloned());
        if let Some((kid, claims)) = cached {
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let leeway = self.config.leeway_secs.min(60) as i64;
            // Still published, not expired: the same answer as a full check, minus the signature.
            if claims.exp.saturating_add(leeway) >= now && self.key(&kid).is_some() {
                return self.check_claims_cached(claims, buyer);
            }
        }
        let (kid, claims) = self.verify_uncached(token)?;
        if let Ok(mut cache) = self.verified.write() {
            if cache.len() >= MAX_CACHED_TOKENS {
                cache.clear();
            }
            cache.insert(hash, (kid, claims.clone()));
        }
        self.check_claims_cached(claims, buyer)
    }

    fn check_claims_cached(&self, claims: Claims, buyer: &str) -> Result<Claims, TokenRejection> {
        if claims.sub != buyer {
            return Err(reject(
                Reason::TokenSubjectMismatch,
                format!(
                    "token is for buyer {:?}, object is under {buyer:?}",
                    claims.sub
                ),
            ));
        }
        Ok(claims)
    }

    /// Full verification: header, key, signature and every claim but the buyer binding.
    fn verify_uncached(&self, token: &str) -> Result<(String, Claims), TokenRejection> {
        let mut parts = token.split('.');
        let (Some(h), Some(_), Some(_), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(reject(
                Reason::TokenMalformed,
                "not three dot-separated parts",
            ));
        };
        let header: Value = B64
            .decode(h)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .filter(Value::is_object)
            .ok_or_else(|| reject(Reason::TokenMalformed, "header is not base64url JSON"))?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .ok_or_else(|| reject(Reason::TokenMalformed, "header has no alg"))?;
        if alg.eq_ignore_ascii_case("none") {
            return Err(reject(Reason::TokenAlgNone, "unsigned tokens are refused"));
        }
        if alg.to_ascii_uppercase().starts_with("HS") {
            return Err(reject(Reason::TokenAlgHmac, format!("{alg} is refused")));
        }
        if header.get("crit").is_some() {
            return Err(reject(
                Reason::TokenMalformed,
                "crit headers are not supported",
            ));
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| reject(Reason::TokenUnknownKid, "header has no kid"))?;
        let key = self.key(kid).ok_or_else(|| {
            let shown: String = kid.chars().take(64).filter(|c| !c.is_control()).collect();
            reject(Reason::TokenUnknownKid, format!("no key {shown:?}"))
        })?;
        // The key decides the algorithm, never the header.
        if alg != key.alg.as_str() {
            return Err(reject(
                Reason::TokenAlgMismatch,
                format!("key {kid} is {}, token says {alg}", key.alg.as_str()),
            ));
        }
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &key.validation)
            .map_err(|e| map_error(e.kind()))?;
        Ok((kid.to_owned(), self.check_claims(data.claims)?))
    }

    fn check_claims(&self, claims: Value) -> Result<Claims, TokenRejection> {
        for (name, is_ok) in [
            ("iat", claims.get("iat").is_some_and(Value::is_number)),
            ("jti", claims.get("jti").is_some_and(Value::is_string)),
            ("scope", claims.get("scope").is_some_and(Value::is_string)),
            ("sub", claims.get("sub").is_some_and(Value::is_string)),
            ("aud", claims.get("aud").is_some_and(Value::is_string)),
        ] {
            if !is_ok {
                return Err(reject(
                    Reason::TokenMissingClaim,
                    format!("claim {name} is missing or mistyped"),
                ));
            }
        }
        let claims: Claims = serde_json::from_value(claims)
            .map_err(|e| reject(Reason::TokenMissingClaim, format!("claims: {e}")))?;
        if !claims.scope.split(' ').any(|s| s == "invoke") {
            return Err(reject(Reason::TokenScopeMissing, "scope lacks invoke"));
        }
        let lifetime = claims.exp.saturating_sub(claims.iat);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let leeway = self.config.leeway_secs.min(60) as i64;
        if lifetime > MAX_TOKEN_LIFETIME.as_secs() as i64
            || claims.exp.saturating_sub(now) > MAX_TOKEN_LIFETIME.as_secs() as i64 + leeway
        {
            return Err(reject(
                Reason::TokenLifetimeTooLong,
                "tokens may live at most 12 hours",
            ));
        }
        Ok(claims)
    }
}

fn map_error(kind: &ErrorKind) -> TokenRejection {
    match kind {
        ErrorKind::InvalidSignature => {
            reject(Reason::TokenBadSignature, "signature does not verify")
        }
        ErrorKind::ExpiredSignature => reject(Reason::TokenExpired, "token has expired"),
        ErrorKind::ImmatureSignature => reject(Reason::TokenNotYetValid, "token is not valid yet"),
        ErrorKind::InvalidAudience => reject(Reason::TokenWrongAudience, "aud is not this product"),
        ErrorKind::InvalidIssuer => reject(Reason::TokenWrongIssuer, "iss is not the seller"),
        ErrorKind::MissingRequiredClaim(c) => {
            reject(Reason::TokenMissingClaim, format!("claim {c} is missing"))
        }
        ErrorKind::InvalidClaimFormat(c) => {
            reject(Reason::TokenMissingClaim, format!("claim {c} is mistyped"))
        }
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => {
            reject(Reason::TokenAlgMismatch, "algorithm does not match the key")
        }
        other => reject(Reason::TokenMalformed, format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokenIssuer;
    use std::time::Duration;

    fn setup(alg: KeyAlg) -> (Keyset, Verifier, TokenIssuer) {
        let ks = Keyset::generate("seller", alg).unwrap();
        let v = Verifier::new(
            VerifierConfig {
                issuer: "seller".into(),
                audience: "product".into(),
                leeway_secs: 60,
            },
            &ks,
        )
        .unwrap();
        let issuer = TokenIssuer::new(&ks).unwrap();
        (ks, v, issuer)
    }

    #[test]
    fn issued_tokens_verify_for_both_algorithms() {
        for alg in [KeyAlg::EdDSA, KeyAlg::ES256] {
            let (_, v, i) = setup(alg);
            let t = i.issue("b1", "product", Duration::from_secs(60)).unwrap();
            assert_eq!(v.verify(&t, "b1").map(|c| c.sub), Ok("b1".to_owned()));
        }
    }

    #[test]
    fn a_cached_token_is_still_bound_to_its_buyer_and_forgotten_when_keys_change() {
        let (ks, v, i) = setup(KeyAlg::EdDSA);
        let t = i.issue("b1", "product", Duration::from_secs(60)).unwrap();
        assert!(v.verify(&t, "b1").is_ok());
        assert_eq!(
            v.verify(&t, "b2").unwrap_err().reason,
            Reason::TokenSubjectMismatch
        );
        let other = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        v.replace_keys(&other).unwrap();
        assert_eq!(
            v.verify(&t, "b1").unwrap_err().reason,
            Reason::TokenUnknownKid
        );
        v.replace_keys(&ks).unwrap();
        assert!(v.verify(&t, "b1").is_ok());
    }

    #[test]
    fn a_token_for_another_buyer_is_refused() {
        let (_, v, i) = setup(KeyAlg::EdDSA);
        let t = i.issue("b1", "product", Duration::from_secs(60)).unwrap();
        assert_eq!(
            v.verify(&t, "b2").unwrap_err().reason,
            Reason::TokenSubjectMismatch
        );
    }
}
