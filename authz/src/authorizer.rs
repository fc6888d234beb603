//! The verifiers as adapters of the core `Authorizer` port.

use std::time::SystemTime;

use async_trait::async_trait;
pub use sealbox_core::ports::{Authorizer, NotAuthorized};

use crate::jwks_verifier::JwksVerifier;
use crate::token::TokenClaims;
use crate::verify::Verifier;

/// Keys given once, never fetched: every refusal is final.
#[async_trait]
impl Authorizer for Verifier {
    async fn authorize(
        &self,
        token: &str,
        buyer: &str,
        _arrived: SystemTime,
    ) -> Result<TokenClaims, NotAuthorized> {
        Ok(self.verify(token, buyer)?)
    }
}

#[async_trait]
impl Authorizer for JwksVerifier {
    async fn authorize(
        &self,
        token: &str,
        buyer: &str,
        arrived: SystemTime,
    ) -> Result<TokenClaims, NotAuthorized> {
        self.verify(token, buyer, arrived).await
    }
}
