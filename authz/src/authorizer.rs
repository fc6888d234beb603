//! Authorizer port: what ingest asks of token verification, whatever feeds it keys.

use async_trait::async_trait;

use crate::jwks_verifier::JwksVerifier;
use crate::token::Claims;
use crate::verify::{TokenRejection, Verifier};

/// Decides whether a token authorizes a request under a buyer's prefix.
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// The token's claims if it authorizes a request under `buyer`'s prefix.
    async fn authorize(&self, token: &str, buyer: &str) -> Result<Claims, TokenRejection>;
}

#[async_trait]
impl Authorizer for Verifier {
    async fn authorize(&self, token: &str, buyer: &str) -> Result<Claims, TokenRejection> {
        self.verify(token, buyer)
    }
}

#[async_trait]
impl Authorizer for JwksVerifier {
    async fn authorize(&self, token: &str, buyer: &str) -> Result<Claims, TokenRejection> {
        self.verify(token, buyer).await
    }
}
