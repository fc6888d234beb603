//! Token verification for ingest: the algorithm is pinned to the key's, every contract claim is
//! required, clock skew is bounded, `sub` is bound to the buyer prefix of the object, and the
//! published keys must be fresh. Each failure maps to its own [`Reason`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use jsonwebtoken::errors::ErrorKind;
use sealbox_core::contract::Reason;
use serde_json::Value;

use crate::error::AuthzError;
use crate::jwks::{PublishedKeys, is_valid_kid};
use crate::keyset::{KeyAlg, Keyset};
use crate::token::{MAX_TOKEN_LIFETIME, TokenClaims};

/// Longest token accepted, so a hostile header costs nothing to refuse.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Header members naming keys or certificates elsewhere (RFC 7515 §4.1.2-4.1.8): never followed,
/// and a token carrying one is refused, since only the seller's published keys may verify.
const FOREIGN_KEY_HEADERS: [&str; 6] = ["jku", "jwk", "x5u", "x5c", "x5t", "x5t#S256"];

/// What a verifier checks besides the signature.
#[derive(Debug, Clone)]
pub struct VerifierConfig {
    /// Expected `iss`.
    pub issuer: String,
    /// Expected `aud` (the product id).
    pub audience: String,
    /// Allowed clock skew in seconds (at most 60).
    pub leeway_secs: u64,
    /// Keys older than this are not trusted: every token is refused until they are renewed.
    pub max_staleness: Duration,
}

impl VerifierConfig {
    /// The defaults: 60 s of clock skew, keys trusted for 15 minutes after their last refresh.
    pub fn new(issuer: &str, audience: &str) -> Self {
        VerifierConfig {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            leeway_secs: 60,
            max_staleness: Duration::from_secs(15 * 60),
        }
    }
}

pub use sealbox_core::ports::TokenRejection;

fn reject(reason: Reason, detail: impl Into<String>) -> TokenRejection {
    TokenRejection {
        reason,
        detail: detail.into(),
    }
}

struct VerifyingKey {
    alg: KeyAlg,
    public: Vec<u8>,
    key: jsonwebtoken::DecodingKey,
    validation: jsonwebtoken::Validation,
}

/// The published keys a verifier holds.
#[derive(Default)]
struct Known {
    keys: HashMap<String, Arc<VerifyingKey>>,
    revoked: HashSet<String>,
    /// Grant id -> tokens issued at or before this time are refused.
    denied: HashMap<String, i64>,
    loaded_at: Option<Instant>,
}

impl Known {
    /// True if the key that verified a cached token is still published, unchanged, and its
    /// buyer is not denied.
    fn still_vouches(&self, t: &CachedToken) -> bool {
        self.keys
            .get(&t.kid)
            .is_some_and(|k| Arc::ptr_eq(k, &t.key))
            && !self.denied(&t.claims)
    }

    fn denied(&self, claims: &TokenClaims) -> bool {
        self.denied
            .get(&claims.grant)
            .is_some_and(|before| claims.iat <= *before)
    }
}

/// Most verified tokens remembered; expired ones go first when it is full.
const MAX_CACHED_TOKENS: usize = 10_000;

struct CachedToken {
    kid: String,
    // The key itself, not only its name: a key swapped under the same kid must not vouch for
    // tokens the old one verified.
    key: Arc<VerifyingKey>,
    claims: TokenClaims,
}

/// Verifies tokens against the seller's published keys.
pub struct Verifier {
    config: VerifierConfig,
    known: RwLock<Known>,
    // A buyer sends the same token with many requests: a repeat costs a lookup, not a
    // signature check. Keyed by the token's SHA-256.
    verified: RwLock<HashMap<[u8; 32], CachedToken>>,
}

impl Verifier {
    /// A verifier that knows no keys yet: it refuses every token until [`Verifier::load`].
    pub fn new(config: VerifierConfig) -> Verifier {
        Verifier {
            config,
            known: RwLock::new(Known::default()),
            verified: RwLock::new(HashMap::new()),
        }
    }

    /// A verifier with the public keys of `keyset` (all states are published).
    pub fn from_keyset(config: VerifierConfig, keyset: &Keyset) -> Result<Verifier, AuthzError> {
        let v = Verifier::new(config);
        v.load(PublishedKeys::from_keyset(keyset, Vec::new())?)?;
        Ok(v)
    }

    /// Replaces the known keys, revoked keys and denied buyers with `published`, and counts
    /// them as fresh from now. Cached tokens of keys that left, and of buyers newly denied, are
    /// forgotten at once.
    pub fn load(&self, published: PublishedKeys) -> Result<(), AuthzError> {
        let old = self
            .known
            .read()
            .map(|k| k.keys.clone())
            .unwrap_or_default();
        let mut keys = HashMap::new();
        for k in published.keys {
            // An unchanged key keeps its parsed form.
            let same = old
                .get(&k.kid)
                .filter(|o| o.alg == k.alg && o.public == k.public);
            let entry = match same {
                Some(o) => o.clone(),
                None => Arc::new(self.verifying_key(k.alg, k.public)?),
            };
            keys.insert(k.kid, entry);
        }
        let known = Known {
            keys,
            revoked: published.revoked_kids.into_iter().collect(),
            denied: published
                .denied
                .into_iter()
                .fold(HashMap::new(), |mut m, d| {
                    // A grant listed twice is denied up to the later time.
                    let before = m.entry(d.grant).or_insert(d.before);
                    *before = (*before).max(d.before);
                    m
                }),
            loaded_at: Some(Instant::now()),
        };
        if let Ok(mut cache) = self.verified.write() {
            cache.retain(|_, t| known.still_vouches(t));
        }
        if let Ok(mut k) = self.known.write() {
            *k = known;
        }
        Ok(())
    }

    /// How many verified tokens are cached.
    pub fn cached_tokens(&self) -> usize {
        self.verified.read().map(|c| c.len()).unwrap_or(0)
    }

    /// How long ago the keys were last loaded, if ever.
    pub fn keys_age(&self) -> Option<Duration> {
        self.known.read().ok()?.loaded_at.map(|t| t.elapsed())
    }

    fn verifying_key(&self, alg: KeyAlg, public: Vec<u8>) -> Result<VerifyingKey, AuthzError> {
        let mut validation = jsonwebtoken::Validation::new(alg.jwt());
        validation.leeway = self.config.leeway_secs.min(60);
        validation.validate_nbf = true;
        validation.validate_exp = true;
        validation.set_audience(&[&self.config.audience]);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        let key = match alg {
            KeyAlg::EdDSA => jsonwebtoken::DecodingKey::from_ed_der(&public),
            KeyAlg::ES256 => jsonwebtoken::DecodingKey::from_ec_der(&public),
        };
        Ok(VerifyingKey {
            alg,
            public,
            key,
            validation,
        })
    }

    fn key(&self, kid: &str) -> Result<Arc<VerifyingKey>, TokenRejection> {
        let known = self
            .known
            .read()
            .map_err(|_| reject(Reason::SigningKeysStale, "key store unavailable"))?;
        if let Some(k) = known.keys.get(kid) {
            return Ok(k.clone());
        }
        if known.revoked.contains(kid) {
            return Err(reject(
                Reason::TokenKeyRevoked,
                format!("key {kid} was revoked"),
            ));
        }
        Err(reject(Reason::TokenUnknownKid, format!("no key {kid:?}")))
    }

    /// Refuses everything while the keys are missing or older than the allowed staleness.
    fn check_fresh(&self) -> Result<(), TokenRejection> {
        match self.keys_age() {
            Some(age) if age <= self.config.max_staleness => Ok(()),
            Some(age) => Err(reject(
                Reason::SigningKeysStale,
                format!(
                    "the seller's published keys were last refreshed {} s ago (limit {} s)",
                    age.as_secs(),
                    self.config.max_staleness.as_secs()
                ),
            )),
            None => Err(reject(
                Reason::SigningKeysStale,
                "the seller's published keys have not been loaded",
            )),
        }
    }

    /// Verifies `token` for a request written under the prefix of `buyer`.
    pub fn verify(&self, token: &str, buyer: &str) -> Result<TokenClaims, TokenRejection> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(reject(
                Reason::TokenMalformed,
                format!("longer than {MAX_TOKEN_BYTES} bytes"),
            ));
        }
        self.check_fresh()?;
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let leeway = self.config.leeway_secs.min(60) as i64;
        let cached = self.verified.read().ok().and_then(|c| {
            c.get(&hash)
                .filter(|t| t.claims.exp.saturating_add(leeway) >= now)
                .map(|t| {
                    let known = self.known.read().ok()?;
                    known.still_vouches(t).then(|| t.claims.clone())
                })
        });
        // Entries of keys that left and of denied buyers are evicted when keys load; checking
        // again on a hit closes the window of a token cached while keys were loading. A hit is
        // the same answer as a full check, minus the signature.
        let claims = match cached.flatten() {
            Some(claims) => claims,
            None => {
                let (kid, key, claims) = self.verify_uncached(token)?;
                if let Ok(mut cache) = self.verified.write() {
                    if cache.len() >= MAX_CACHED_TOKENS {
                        cache.retain(|_, t| t.claims.exp.saturating_add(leeway) >= now);
                        if cache.len() >= MAX_CACHED_TOKENS {
                            cache.clear();
                        }
                    }
                    cache.insert(
                        hash,
                        CachedToken {
                            kid,
                            key,
                            claims: claims.clone(),
                        },
                    );
                }
                claims
            }
        };
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
    fn verify_uncached(
        &self,
        token: &str,
    ) -> Result<(String, Arc<VerifyingKey>, TokenClaims), TokenRejection> {
        // The most common paste error: the HTTP header's prefix copied along with the token.
        if token
            .get(..7)
            .is_some_and(|p| p.eq_ignore_ascii_case("bearer "))
        {
            return Err(reject(
                Reason::TokenMalformed,
                "starts with `Bearer `: the request object's token is the JWT alone, without \
                 the HTTP Authorization prefix",
            ));
        }
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
        // Explicit typing (RFC 8725 §3.11): another kind of JWT signed by the same keys, such
        // as an `at+jwt` access token, must not pass for ours. Media type names compare
        // case-insensitively (RFC 7515 §4.1.9).
        match header.get("typ").map(Value::as_str) {
            Some(Some(typ)) if typ.eq_ignore_ascii_case("JWT") => {}
            Some(_) => return Err(reject(Reason::TokenMalformed, "typ must be JWT")),
            None => {
                return Err(reject(
                    Reason::TokenMalformed,
                    "typ must be JWT; the header has none",
                ));
            }
        }
        if header.get("crit").is_some() {
            return Err(reject(
                Reason::TokenMalformed,
                "crit headers are not supported",
            ));
        }
        if let Some(h) = FOREIGN_KEY_HEADERS
            .iter()
            .find(|h| header.get(**h).is_some())
        {
            return Err(reject(
                Reason::TokenMalformed,
                format!("header {h} is refused: only the seller's published keys verify tokens"),
            ));
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| reject(Reason::TokenUnknownKid, "header has no kid"))?;
        if !is_valid_kid(kid) {
            return Err(reject(
                Reason::TokenMalformed,
                "kid is not 1-128 of [A-Za-z0-9._-]",
            ));
        }
        let key = self.key(kid)?;
        // The key decides the algorithm, never the header.
        if alg != key.alg.as_str() {
            return Err(reject(
                Reason::TokenAlgMismatch,
                format!("key {kid} is {}, token says {alg}", key.alg.as_str()),
            ));
        }
        let data = jsonwebtoken::decode::<Value>(token, &key.key, &key.validation)
            .map_err(|e| decode_error(e.kind(), token))?;
        let claims = self.check_claims(data.claims)?;
        let denied = self.known.read().map(|k| k.denied(&claims)).unwrap_or(true);
        if denied {
            return Err(reject(
                Reason::TokenBuyerRevoked,
                format!(
                    "the subscription of buyer {} was revoked after this token was issued",
                    claims.sub
                ),
            ));
        }
        Ok((kid.to_owned(), key, claims))
    }

    fn check_claims(&self, claims: Value) -> Result<TokenClaims, TokenRejection> {
        check_claim_types(&claims)?;
        let claims: TokenClaims = serde_json::from_value(claims)
            .map_err(|e| reject(Reason::TokenMissingClaim, format!("claims: {e}")))?;
        if !claims.scope.split(' ').any(|s| s == "invoke") {
            return Err(reject(Reason::TokenScopeMissing, "scope lacks invoke"));
        }
        let lifetime = claims.exp.saturating_sub(claims.iat);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let leeway = self.config.leeway_secs.min(60) as i64;
        // Issued in the future: its lifetime and the deny list (iat <= before) would not hold.
        if claims.iat > now.saturating_add(leeway) {
            return Err(reject(Reason::TokenNotYetValid, "iat is in the future"));
        }
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

/// Names of the contract's string claims and of its date claims (whole seconds since the epoch).
const STRING_CLAIMS: [&str; 6] = ["iss", "sub", "aud", "jti", "scope", "grant"];
const DATE_CLAIMS: [&str; 3] = ["iat", "nbf", "exp"];

/// Checks that every contract claim is present with its type, before any value is judged.
fn check_claim_types(claims: &Value) -> Result<(), TokenRejection> {
    // RFC 7519 allows an array; the contract's `aud` is the one product id. An array is a
    // statement about the audience (often naming others too), so it is refused as one.
    if claims.get("aud").is_some_and(Value::is_array) {
        return Err(reject(
            Reason::TokenWrongAudience,
            "aud must be a single string naming the product, not an array",
        ));
    }
    for name in STRING_CLAIMS.into_iter().chain(DATE_CLAIMS) {
        let date = DATE_CLAIMS.contains(&name);
        let fits = match claims.get(name) {
            None | Some(Value::Null) => {
                return Err(reject(
                    Reason::TokenMissingClaim,
                    format!("claim {name} is missing"),
                ));
            }
            // What `TokenClaims` holds (i64) and jsonwebtoken reads (u64).
            Some(v) if date => v.as_u64().is_some_and(|n| i64::try_from(n).is_ok()),
            Some(v) => v.is_string(),
        };
        if !fits {
            let rule = if date {
                "a whole number of seconds since the epoch"
            } else {
                "a string"
            };
            return Err(reject(
                Reason::TokenMissingClaim,
                format!("claim {name} is mistyped: must be {rule}"),
            ));
        }
    }
    Ok(())
}

/// Maps an error of `jsonwebtoken::decode`. Its claim errors come only after the signature
/// verified, so the payload is the seller's own and is read again to name the claim precisely:
/// jsonwebtoken calls a mistyped `exp` missing, and has no word for an `aud` array.
fn decode_error(kind: &ErrorKind, token: &str) -> TokenRejection {
    let claim_error = matches!(
        kind,
        ErrorKind::MissingRequiredClaim(_)
            | ErrorKind::InvalidClaimFormat(_)
            | ErrorKind::InvalidAudience
            | ErrorKind::InvalidIssuer
    );
    if claim_error
        && let Some(payload) = token.split('.').nth(1)
        && let Some(claims) = B64
            .decode(payload)
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        && let Err(r) = check_claim_types(&claims)
    {
        return r;
    }
    map_error(kind)
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
        let v = Verifier::from_keyset(VerifierConfig::new("seller", "product"), &ks).unwrap();
        let issuer = TokenIssuer::new(&ks).unwrap();
        (ks, v, issuer)
    }

    #[test]
    fn issued_tokens_verify_for_both_algorithms() {
        for alg in [KeyAlg::EdDSA, KeyAlg::ES256] {
            let (_, v, i) = setup(alg);
            let t = i
                .issue("b1", "product", "g-b1", Duration::from_secs(60))
                .unwrap();
            assert_eq!(v.verify(&t, "b1").map(|c| c.sub), Ok("b1".to_owned()));
        }
    }

    #[test]
    fn a_cached_token_is_still_bound_to_its_buyer_and_forgotten_when_keys_change() {
        let (ks, v, i) = setup(KeyAlg::EdDSA);
        let t = i
            .issue("b1", "product", "g-b1", Duration::from_secs(60))
            .unwrap();
        assert!(v.verify(&t, "b1").is_ok());
        assert_eq!(
            v.verify(&t, "b2").unwrap_err().reason,
            Reason::TokenSubjectMismatch
        );
        let other = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        v.load(PublishedKeys::from_keyset(&other, Vec::new()).unwrap())
            .unwrap();
        assert_eq!(
            v.verify(&t, "b1").unwrap_err().reason,
            Reason::TokenUnknownKid
        );
        v.load(PublishedKeys::from_keyset(&ks, Vec::new()).unwrap())
            .unwrap();
        assert!(v.verify(&t, "b1").is_ok());
    }

    #[test]
    fn a_refresh_evicts_the_cached_tokens_of_a_removed_key_or_a_denied_buyer_only() {
        use crate::jwks::Denial;
        let (mut ks, v, i) = setup(KeyAlg::EdDSA);
        let t1 = i
            .issue("b1", "product", "g-b1", Duration::from_secs(60))
            .unwrap();
        let t2 = i
            .issue("b2", "product", "g-b2", Duration::from_secs(60))
            .unwrap();
        ks.rotate(time::OffsetDateTime::now_utc(), crate::keyset::RETIRE_AFTER)
            .unwrap();
        let t3 = TokenIssuer::new(&ks)
            .unwrap()
            .issue("b3", "product", "g-b3", Duration::from_secs(60))
            .unwrap();
        v.load(PublishedKeys::from_keyset(&ks, Vec::new()).unwrap())
            .unwrap();
        for (t, b) in [(&t1, "b1"), (&t2, "b2"), (&t3, "b3")] {
            assert!(v.verify(t, b).is_ok());
        }
        assert_eq!(v.cached_tokens(), 3);
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let deny_b1 = vec![Denial {
            grant: "g-b1".into(),
            before: now,
        }];
        v.load(PublishedKeys::from_keyset(&ks, deny_b1.clone()).unwrap())
            .unwrap();
        assert_eq!(v.cached_tokens(), 2, "only b1's token leaves");
        assert_eq!(
            v.verify(&t1, "b1").unwrap_err().reason,
            Reason::TokenBuyerRevoked
        );
        let old_kid = i.kid().to_owned();
        ks.revoke(
            &old_kid,
            time::OffsetDateTime::now_utc(),
            crate::keyset::RETIRE_AFTER,
        )
        .unwrap();
        v.load(PublishedKeys::from_keyset(&ks, deny_b1).unwrap())
            .unwrap();
        assert_eq!(v.cached_tokens(), 1, "only the revoked key's tokens leave");
        assert_eq!(
            v.verify(&t2, "b2").unwrap_err().reason,
            Reason::TokenKeyRevoked
        );
        assert!(v.verify(&t3, "b3").is_ok());
    }

    #[test]
    fn a_key_swapped_under_the_same_kid_does_not_vouch_for_tokens_cached_with_the_old_one() {
        use crate::jwks::PublicKey;
        let (ks, v, i) = setup(KeyAlg::EdDSA);
        let t = i
            .issue("b1", "product", "g-b1", Duration::from_secs(60))
            .unwrap();
        assert!(v.verify(&t, "b1").is_ok());
        let other = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        let swapped = PublishedKeys {
            keys: vec![PublicKey {
                kid: ks.current().unwrap().kid.clone(),
                alg: KeyAlg::EdDSA,
                public: other.current().unwrap().public_bytes().unwrap(),
            }],
            ..PublishedKeys::default()
        };
        v.load(swapped).unwrap();
        assert_eq!(
            v.verify(&t, "b1").unwrap_err().reason,
            Reason::TokenBadSignature
        );
    }

    /// A token with exactly this header and these claims, signed by the keyset's current key.
    fn signed(ks: &Keyset, header: &Value, claims: &Value) -> String {
        let key = ks.current().unwrap();
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = jsonwebtoken::crypto::sign(
            input.as_bytes(),
            &key.encoding_key().unwrap(),
            key.alg.jwt(),
        )
        .unwrap();
        format!("{input}.{sig}")
    }

    fn header(ks: &Keyset, typ: Option<Value>) -> Value {
        let key = ks.current().unwrap();
        let mut h = serde_json::json!({"alg": key.alg.as_str(), "kid": key.kid});
        if let Some(typ) = typ {
            h["typ"] = typ;
        }
        h
    }

    fn claims() -> Value {
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        serde_json::json!({
            "iss": "seller", "sub": "b1", "aud": "product", "iat": now, "nbf": now,
            "exp": now + 600, "jti": "t-1", "scope": "invoke", "grant": "g-b1"
        })
    }

    #[test]
    fn a_token_sent_with_a_bearer_prefix_is_refused_with_a_reason_that_names_the_prefix() {
        let (ks, v, _) = setup(KeyAlg::EdDSA);
        let t = signed(&ks, &header(&ks, Some("JWT".into())), &claims());
        assert!(v.verify(&t, "b1").is_ok());
        let r = v.verify(&format!("Bearer {t}"), "b1").unwrap_err();
        assert_eq!(r.reason, Reason::TokenMalformed);
        assert!(r.detail.contains("`Bearer `"), "{r}");
    }

    #[test]
    fn a_token_is_accepted_only_when_its_typ_is_jwt_in_any_case() {
        let (ks, v, _) = setup(KeyAlg::EdDSA);
        for typ in ["JWT", "jwt", "Jwt"] {
            let t = signed(&ks, &header(&ks, Some(typ.into())), &claims());
            assert!(v.verify(&t, "b1").is_ok(), "typ {typ}");
        }
        let refused: [Option<Value>; 7] = [
            None,
            Some("at+jwt".into()),
            Some("application/at+jwt".into()),
            Some("JWS".into()),
            Some("".into()),
            Some(Value::Null),
            Some(serde_json::json!(["JWT"])),
        ];
        for typ in refused {
            let t = signed(&ks, &header(&ks, typ.clone()), &claims());
            let r = v.verify(&t, "b1").unwrap_err();
            assert_eq!(r.reason, Reason::TokenMalformed, "typ {typ:?}");
            assert!(r.detail.contains("typ must be JWT"), "typ {typ:?}: {r}");
        }
    }

    #[test]
    fn an_aud_array_is_a_wrong_audience_even_when_it_names_the_product() {
        let (ks, v, _) = setup(KeyAlg::EdDSA);
        let h = header(&ks, Some("JWT".into()));
        for aud in [
            serde_json::json!(["product"]),
            serde_json::json!(["other", "product"]),
            serde_json::json!(["other"]),
            serde_json::json!(["product", 1]),
            serde_json::json!([]),
        ] {
            let mut c = claims();
            c["aud"] = aud.clone();
            let r = v.verify(&signed(&ks, &h, &c), "b1").unwrap_err();
            assert_eq!(r.reason, Reason::TokenWrongAudience, "aud {aud}");
            assert!(
                r.detail
                    .contains("aud must be a single string naming the product"),
                "aud {aud}: {r}"
            );
        }
    }

    #[test]
    fn a_missing_or_mistyped_claim_is_a_missing_claim_that_names_it() {
        let (ks, v, _) = setup(KeyAlg::EdDSA);
        let h = header(&ks, Some("JWT".into()));
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let cases = [
            ("iss", serde_json::json!(5), "mistyped"),
            ("iss", serde_json::json!(["seller"]), "mistyped"),
            ("iss", serde_json::json!(["someone-else"]), "mistyped"),
            ("sub", serde_json::json!(5), "mistyped"),
            ("aud", serde_json::json!(5), "mistyped"),
            ("aud", serde_json::json!({"id": "product"}), "mistyped"),
            ("aud", Value::Null, "missing"),
            ("jti", serde_json::json!(1), "mistyped"),
            ("scope", serde_json::json!(["invoke"]), "mistyped"),
            ("grant", serde_json::json!(7), "mistyped"),
            ("iat", serde_json::json!(now.to_string()), "mistyped"),
            ("iat", serde_json::json!(now as f64 + 0.5), "mistyped"),
            ("iat", serde_json::json!(-1), "mistyped"),
            ("nbf", serde_json::json!(now.to_string()), "mistyped"),
            (
                "exp",
                serde_json::json!((now + 600).to_string()),
                "mistyped",
            ),
            ("exp", serde_json::json!((now + 600) as f64), "mistyped"),
            ("exp", serde_json::json!(u64::MAX), "mistyped"),
        ];
        for (name, value, how) in cases {
            let mut c = claims();
            c[name] = value.clone();
            let r = v.verify(&signed(&ks, &h, &c), "b1").unwrap_err();
            assert_eq!(r.reason, Reason::TokenMissingClaim, "{name} {value}");
            assert!(
                r.detail.contains(&format!("claim {name} is {how}")),
                "{name} {value}: {r}"
            );
        }
        for name in STRING_CLAIMS.into_iter().chain(DATE_CLAIMS) {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(name);
            let r = v.verify(&signed(&ks, &h, &c), "b1").unwrap_err();
            assert_eq!(
                (r.reason, r.detail),
                (
                    Reason::TokenMissingClaim,
                    format!("claim {name} is missing")
                ),
            );
        }
    }

    #[test]
    fn a_token_for_another_buyer_is_refused() {
        let (_, v, i) = setup(KeyAlg::EdDSA);
        let t = i
            .issue("b1", "product", "g-b1", Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            v.verify(&t, "b2").unwrap_err().reason,
            Reason::TokenSubjectMismatch
        );
    }
}
