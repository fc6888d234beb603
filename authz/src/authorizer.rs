//! The verifiers as adapters of the core `Authorizer` port.

use async_trait::async_trait;
pub use sealbox_core::ports::Authorizer;

use crate::jwks_verifier::JwksVerifier;
use crate::token::Claims;
use crate::verify::{TokenRejection, Verifier};

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
