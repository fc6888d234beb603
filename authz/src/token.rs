//! Token issue: seller-signed JWTs with the claims of contract v1.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde::Serialize;
use time::OffsetDateTime;

use crate::error::AuthzError;
use crate::key_store::KeyStore;
use crate::keyset::{KeyAlg, Keyset};

/// Longest token lifetime the contract allows.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

pub use sealbox_core::contract::TokenClaims;

/// Signs tokens with the keyset's current key.
pub struct TokenIssuer {
    issuer: String,
    kid: String,
    alg: KeyAlg,
    key: jsonwebtoken::EncodingKey,
}

impl TokenIssuer {
    /// An issuer for the keyset's current key.
    pub fn new(keyset: &Keyset) -> Result<TokenIssuer, AuthzError> {
        let current = keyset.current()?;
        Ok(TokenIssuer {
            issuer: keyset.issuer.clone(),
            kid: current.kid.clone(),
            alg: current.alg,
            key: current.encoding_key()?,
        })
    }

    /// Signs arbitrary claims with the current key (tests use it to build hostile tokens).
    pub fn sign<T: Serialize>(&self, claims: &T) -> Result<String, AuthzError> {
        let mut header = jsonwebtoken::Header::new(self.alg.jwt());
        header.kid = Some(self.kid.clone());
        header.typ = Some("JWT".into());
        jsonwebtoken::encode(&header, claims, &self.key)
            .map_err(|e| AuthzError::Crypto(e.to_string()))
    }

    /// A token for `buyer` and `product` under the subscription `grant` (its grant id), valid
    /// from now for `ttl`.
    pub fn issue(
        &self,
        buyer: &str,
        product: &str,
        grant: &str,
        ttl: Duration,
    ) -> Result<String, AuthzError> {
        self.sign(&claims(&self.issuer, buyer, product, grant, ttl)?)
    }

    /// The key id tokens are signed with.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// The claims of a new token for `buyer` and `product` under `grant`, valid from now for `ttl`.
fn claims(
    issuer: &str,
    buyer: &str,
    product: &str,
    grant: &str,
    ttl: Duration,
) -> Result<TokenClaims, AuthzError> {
    if ttl.is_zero() || ttl > MAX_TOKEN_LIFETIME {
        return Err(AuthzError::BadLifetime(ttl.as_secs()));
    }
    if !sealbox_core::contract::is_valid_id(buyer) {
        return Err(AuthzError::BadBuyer(buyer.to_owned()));
    }
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let mut jti = [0u8; 16];
    aws_lc_rs::rand::fill(&mut jti).map_err(|e| AuthzError::Crypto(e.to_string()))?;
    Ok(TokenClaims {
        iss: issuer.to_owned(),
        sub: buyer.to_owned(),
        aud: product.to_owned(),
        iat: now,
        nbf: now,
        exp: now + ttl.as_secs() as i64,
        jti: B64.encode(jti),
        scope: "invoke".into(),
        grant: grant.to_owned(),
    })
}

/// A token for `buyer` and `product` under `grant`, signed by the current key of `keyset`
/// through `store`: the key may live where no private half can be read (KMS).
pub async fn issue_through(
    store: &dyn KeyStore,
    keyset: &Keyset,
    buyer: &str,
    product: &str,
    grant: &str,
    ttl: Duration,
) -> Result<String, AuthzError> {
    let key = keyset.current()?;
    let claims = claims(&keyset.issuer, buyer, product, grant, ttl)?;
    let header = serde_json::json!({"alg": key.alg.as_str(), "kid": key.kid, "typ": "JWT"});
    let input = format!(
        "{}.{}",
        B64.encode(to_json(&header)?),
        B64.encode(to_json(&claims)?)
    );
    let signature = store.sign(key, input.as_bytes()).await?;
    Ok(format!("{input}.{}", B64.encode(signature)))
}

fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>, AuthzError> {
    serde_json::to_vec(value).map_err(|e| AuthzError::Crypto(format!("token JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_and_signed_tokens_declare_typ_jwt_in_their_header() {
        let ks = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        let issuer = TokenIssuer::new(&ks).unwrap();
        let issued = issuer
            .issue("b1", "product", "g-b1", Duration::from_secs(60))
            .unwrap();
        let signed = issuer.sign(&serde_json::json!({"any": "claims"})).unwrap();
        for t in [issued, signed] {
            let header = t.split('.').next().unwrap();
            let header: serde_json::Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(header)
                    .unwrap(),
            )
            .unwrap();
            assert_eq!(header["typ"], "JWT", "{header}");
        }
    }

    #[tokio::test]
    async fn a_token_signed_through_the_file_store_verifies_like_a_local_one() {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::key_store::file::FileKeyStore::new(dir.path().join("keyset.json"));
        for alg in [KeyAlg::EdDSA, KeyAlg::ES256] {
            let _ = std::fs::remove_file(store.path());
            let ks = store.init("seller", alg).await.unwrap();
            let token = issue_through(&store, &ks, "b1", "p", "g1", Duration::from_secs(60))
                .await
                .unwrap();
            let v = crate::Verifier::from_keyset(crate::VerifierConfig::new("seller", "p"), &ks)
                .unwrap();
            let claims = v.verify(&token, "b1").unwrap();
            assert_eq!((claims.grant.as_str(), claims.sub.as_str()), ("g1", "b1"));
        }
    }
}
