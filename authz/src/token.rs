//! Token issue: seller-signed JWTs with the claims of contract v1.

use std::time::Duration;

use base64::Engine as _;
use serde::Serialize;
use time::OffsetDateTime;

use crate::error::AuthzError;
use crate::keyset::{KeyAlg, Keyset};

/// Longest token lifetime the contract allows.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(12 * 3600);

pub use sealbox_core::contract::Claims;

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

    /// A token for `buyer` and `product`, valid from now for `ttl`.
    pub fn issue(&self, buyer: &str, product: &str, ttl: Duration) -> Result<String, AuthzError> {
        if ttl.is_zero() || ttl > MAX_TOKEN_LIFETIME {
            return Err(AuthzError::BadLifetime(ttl.as_secs()));
        }
        if !sealbox_core::contract::is_valid_id(buyer) {
            return Err(AuthzError::BadBuyer(buyer.to_owned()));
        }
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let mut jti = [0u8; 16];
        aws_lc_rs::rand::fill(&mut jti).map_err(|e| AuthzError::Crypto(e.to_string()))?;
        self.sign(&Claims {
            iss: self.issuer.clone(),
            sub: buyer.to_owned(),
            aud: product.to_owned(),
            iat: now,
            nbf: now,
            exp: now + ttl.as_secs() as i64,
            jti: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(jti),
            scope: "invoke".into(),
        })
    }

    /// The key id tokens are signed with.
    pub fn kid(&self) -> &str {
        &self.kid
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_and_signed_tokens_declare_typ_jwt_in_their_header() {
        let ks = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        let issuer = TokenIssuer::new(&ks).unwrap();
        let issued = issuer
            .issue("b1", "product", Duration::from_secs(60))
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
}
