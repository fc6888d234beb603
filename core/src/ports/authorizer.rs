//! Authorizer port: what ingest asks of token verification, whatever feeds it keys.

use async_trait::async_trait;

use crate::contract::{Claims, Reason};

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct TokenRejection {
    /// The reason code.
    pub reason: Reason,
    /// What exactly, in words (never key material).
    pub detail: String,
}

/// Decides whether a token authorizes a request under a buyer's prefix.
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// The token's claims if it authorizes a request under `buyer`'s prefix.
    async fn authorize(&self, token: &str, buyer: &str) -> Result<Claims, TokenRejection>;
}
