//! The published key document: a JWK Set (RFC 7517) of the seller's public keys, with the deny
//! list beside the keys in the same document, so a verifier never holds keys fresher than its
//! deny list or the other way round.
//!
//! ```json
//! {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "...", "kid": "...", "alg": "EdDSA", "use": "sig"}],
//!  "revoked_kids": ["..."],
//!  "denied_grants": [{"grant": "Yq3v0c8Jm2Fh1kT0aB7x9w", "before": 1795000000}]}
//! ```
//!
//! RFC 7517 §5 lets a JWK Set carry members a reader does not understand; other JWT libraries
//! read `keys` and ignore the rest.

use std::collections::HashSet;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::AuthzError;
use crate::keyset::{KeyAlg, Keyset};

/// Largest JWKS document read; a seller publishes a handful of keys.
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Most keys taken from one document.
const MAX_KEYS: usize = 64;

/// Tokens of subscription `grant` issued at or before `before` are refused: the subscription
/// was revoked (or expired) at that time. A token issued after a new grant is not affected. The
/// grant id is opaque, so every buyer's deployment reads the list without learning who else
/// buys (a buyer id is an AWS account id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Denial {
    /// The subscription's grant id (the `grant` claim of its tokens).
    pub grant: String,
    /// Seconds since the epoch; tokens with `iat` at or before it are refused.
    pub before: i64,
}

/// A public key taken from a keyset or a JWKS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Key id.
    pub kid: String,
    /// The algorithm, always the key's own.
    pub alg: KeyAlg,
    /// Raw public key: 32 bytes (Ed25519) or the uncompressed P-256 point.
    pub public: Vec<u8>,
}

/// Everything a verifier takes from the published document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishedKeys {
    /// Usable keys.
    pub keys: Vec<PublicKey>,
    /// Keys revoked while tokens they signed may still be unexpired.
    pub revoked_kids: Vec<String>,
    /// Subscriptions whose earlier tokens are refused.
    pub denied: Vec<Denial>,
    /// Keys in the document that were refused, and why (for logs).
    pub refused: Vec<String>,
}

#[derive(Deserialize)]
struct Document {
    keys: Vec<Value>,
    #[serde(default)]
    revoked_kids: Vec<String>,
    #[serde(default)]
    denied_grants: Vec<Denial>,
}

/// The document to publish for `keyset` and the subscriptions in `denied`.
pub fn publish(keyset: &Keyset, denied: &[Denial]) -> Result<Value, AuthzError> {
    let mut doc = keyset.jwks()?;
    if let Some(obj) = doc.as_object_mut() {
        let revoked: Vec<&str> = keyset.revoked.iter().map(|r| r.kid.as_str()).collect();
        obj.insert("revoked_kids".into(), serde_json::json!(revoked));
        obj.insert("denied_grants".into(), serde_json::json!(denied));
    }
    Ok(doc)
}

/// True if `kid` can be a key id: 1-128 of `[A-Za-z0-9._-]`. Anything else (paths, control
/// characters, URLs) is refused before it is looked up or logged.
pub fn is_valid_kid(kid: &str) -> bool {
    (1..=128).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl PublishedKeys {
    /// The keys a keyset publishes, with `denied`.
    pub fn from_keyset(keyset: &Keyset, denied: Vec<Denial>) -> Result<Self, AuthzError> {
        let keys = keyset
            .keys
            .iter()
            .map(|k| {
                Ok(PublicKey {
                    kid: k.kid.clone(),
                    alg: k.alg,
                    public: k.public_bytes()?,
                })
            })
            .collect::<Result<Vec<_>, AuthzError>>()?;
        Ok(PublishedKeys {
            keys,
            revoked_kids: keyset.revoked.iter().map(|r| r.kid.clone()).collect(),
            denied,
            refused: Vec::new(),
        })
    }

    /// Reads a published document. Keys that are symmetric (`oct`), carry private parts, or are
    /// not of an algorithm sealbox signs with are refused one by one (listed in `refused`); a
    /// document that is not a JWK Set at all is an error.
    pub fn parse(bytes: &[u8]) -> Result<Self, AuthzError> {
        if bytes.len() > MAX_JWKS_BYTES {
            return Err(AuthzError::BadJwks(format!(
                "{} bytes; at most {MAX_JWKS_BYTES}",
                bytes.len()
            )));
        }
        let doc: Document = serde_json::from_slice(bytes)
            .map_err(|e| AuthzError::BadJwks(format!("not a JWK Set: {e}")))?;
        let mut out = PublishedKeys {
            revoked_kids: doc.revoked_kids,
            denied: doc.denied_grants,
            ..PublishedKeys::default()
        };
        // Every kid that appears, usable or not: two keys under one kid are trusted under
        // neither, even when one of them was refused.
        let mut seen = HashSet::new();
        let mut twice = HashSet::new();
        for (i, jwk) in doc.keys.iter().enumerate() {
            if i >= MAX_KEYS {
                out.refused
                    .push(format!("keys after the first {MAX_KEYS} ignored"));
                break;
            }
            if let Some(kid) = jwk.get("kid").and_then(Value::as_str)
                && !seen.insert(kid.to_owned())
            {
                twice.insert(kid.to_owned());
            }
            match key_from_jwk(jwk) {
                Ok(key) => out.keys.push(key),
                Err(why) => out.refused.push(format!("key #{i}: {why}")),
            }
        }
        let revoked: HashSet<&String> = out.revoked_kids.iter().collect();
        let mut dropped = Vec::new();
        out.keys.retain(|k| {
            let why = if twice.contains(&k.kid) {
                "kid appears twice"
            } else if revoked.contains(&k.kid) {
                "listed as revoked"
            } else {
                return true;
            };
            dropped.push(format!("key {}: {why}", k.kid));
            false
        });
        out.refused.extend(dropped);
        Ok(out)
    }
}

/// Members that only private or symmetric JWKs have (RFC 7518 §6.2.2, §6.3.2, §6.4.1).
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn key_from_jwk(jwk: &Value) -> Result<PublicKey, String> {
    let obj = jwk.as_object().ok_or("not a JSON object")?;
    let text = |name: &str| obj.get(name).and_then(Value::as_str);
    let kid = text("kid").ok_or("no kid")?;
    if !is_valid_kid(kid) {
        return Err("kid is not 1-128 of [A-Za-z0-9._-]".into());
    }
    let kty = text("kty").ok_or_else(|| format!("{kid}: no kty"))?;
    if kty == "oct" {
        return Err(format!("{kid}: symmetric (oct) keys are never accepted"));
    }
    if let Some(m) = PRIVATE_MEMBERS.iter().find(|m| obj.contains_key(**m)) {
        return Err(format!(
            "{kid}: carries private key material ({m}); refused"
        ));
    }
    if let Some(u) = obj.get("use")
        && u.as_str() != Some("sig")
    {
        return Err(format!("{kid}: use is {u}, not sig"));
    }
    let coordinate = |name: &str| -> Result<Vec<u8>, String> {
        let bytes = text(name)
            .and_then(|s| B64.decode(s).ok())
            .ok_or_else(|| format!("{kid}: {name} is not base64url"))?;
        if bytes.len() != 32 {
            return Err(format!("{kid}: {name} is {} bytes, not 32", bytes.len()));
        }
        Ok(bytes)
    };
    let (alg, public) = match (kty, text("crv")) {
        ("OKP", Some("Ed25519")) => (KeyAlg::EdDSA, coordinate("x")?),
        ("EC", Some("P-256")) => {
            let mut point = vec![4u8];
            point.extend(coordinate("x")?);
            point.extend(coordinate("y")?);
            (KeyAlg::ES256, point)
        }
        (kty, crv) => {
            return Err(format!(
                "{kid}: {kty}/{} is not a key sealbox signs with (OKP/Ed25519, EC/P-256)",
                crv.unwrap_or("-")
            ));
        }
    };
    if let Some(a) = obj.get("alg")
        && a.as_str() != Some(alg.as_str())
    {
        return Err(format!("{kid}: alg {a} does not fit a {kty} key"));
    }
    Ok(PublicKey {
        kid: kid.to_owned(),
        alg,
        public,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(keys: Value) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap()
    }

    #[test]
    fn a_published_keyset_reads_back_as_the_same_keys() {
        for alg in [KeyAlg::EdDSA, KeyAlg::ES256] {
            let mut ks = Keyset::generate("seller", alg).unwrap();
            let gone = ks.keys[1].kid.clone();
            ks.revoke(
                &gone,
                time::OffsetDateTime::now_utc(),
                crate::keyset::RETIRE_AFTER,
            )
            .unwrap();
            let denied = vec![Denial {
                grant: "g-b1".into(),
                before: 42,
            }];
            let published = publish(&ks, &denied).unwrap();
            let read = PublishedKeys::parse(&serde_json::to_vec(&published).unwrap()).unwrap();
            assert_eq!(
                read,
                PublishedKeys::from_keyset(&ks, denied.clone()).unwrap()
            );
            assert_eq!(read.revoked_kids, [gone]);
        }
    }

    #[test]
    fn symmetric_private_and_foreign_keys_are_refused_one_by_one() {
        let ks = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        let good = ks.keys[0].jwk().unwrap();
        let mut private = good.clone();
        private["kid"] = "priv".into();
        private["d"] = "AAAA".into();
        let bytes = doc(serde_json::json!([
            good,
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            private,
            {"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "../etc/passwd", "x": "AAAA"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "short", "x": "AAAA"},
            {"kty": "OKP", "crv": "Ed25519", "kid": "wrongalg", "alg": "ES256",
             "x": good["x"].clone()},
            {"kty": "OKP", "crv": "Ed25519", "kid": "enc", "use": "enc", "x": good["x"].clone()},
        ]));
        let read = PublishedKeys::parse(&bytes).unwrap();
        assert_eq!(read.keys.len(), 1);
        assert_eq!(read.keys[0].kid, ks.keys[0].kid);
        assert_eq!(read.refused.len(), 7, "{:?}", read.refused);
        assert!(read.refused[0].contains("oct"));
        assert!(read.refused[1].contains("private"));
    }

    #[test]
    fn a_kid_published_twice_is_trusted_under_neither_key() {
        let a = Keyset::generate("s", KeyAlg::EdDSA).unwrap();
        let b = Keyset::generate("s", KeyAlg::EdDSA).unwrap();
        let mut twin = b.keys[0].jwk().unwrap();
        twin["kid"] = a.keys[0].jwk().unwrap()["kid"].clone();
        let read = PublishedKeys::parse(&doc(serde_json::json!([a.keys[0].jwk().unwrap(), twin])))
            .unwrap();
        assert!(read.keys.is_empty());
    }

    #[test]
    fn a_kid_published_twice_is_refused_even_if_one_copy_is_unusable_and_revoked_kids_are_not_keys()
    {
        let a = Keyset::generate("s", KeyAlg::EdDSA).unwrap();
        let good = a.keys[0].jwk().unwrap();
        let mut broken = good.clone();
        broken["x"] = "AAAA".into();
        let read = PublishedKeys::parse(&doc(serde_json::json!([broken, good.clone()]))).unwrap();
        assert!(read.keys.is_empty());
        let mut doc = serde_json::json!({"keys": [good.clone()], "revoked_kids": [good["kid"]]});
        let read = PublishedKeys::parse(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert!(read.keys.is_empty(), "a revoked kid is not a key");
        doc["revoked_kids"] = serde_json::json!([]);
        let read = PublishedKeys::parse(&serde_json::to_vec(&doc).unwrap()).unwrap();
        assert_eq!(read.keys.len(), 1);
    }

    #[test]
    fn a_document_that_is_not_a_jwk_set_is_an_error() {
        for bad in [&b"[]"[..], b"{}", b"not json", b"{\"keys\": 3}"] {
            assert!(matches!(
                PublishedKeys::parse(bad),
                Err(AuthzError::BadJwks(_))
            ));
        }
        let big = vec![b' '; MAX_JWKS_BYTES + 1];
        assert!(PublishedKeys::parse(&big).is_err());
    }

    #[test]
    fn key_ids_are_plain_names() {
        assert!(is_valid_kid("e-TdEjSKbR20ai6i"));
        for bad in [
            "",
            "../x",
            "a/b",
            "a\u{0}b",
            "a\nb",
            "https://x",
            &"k".repeat(129),
        ] {
            assert!(!is_valid_kid(bad), "{bad:?}");
        }
    }
}
