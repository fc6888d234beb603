//! Authorizer port: what ingest asks of token verification, whatever feeds it keys.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::contract::{Reason, TokenClaims};

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {detail}")]
pub struct TokenRejection {
    /// The reason code.
    pub reason: Reason,
    /// What exactly, in words (never key material).
    pub detail: String,
}

/// Why a token does not authorize a request now.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotAuthorized {
    /// Refused for good: the request is answered with this rejection.
    #[error(transparent)]
    Rejected(#[from] TokenRejection),
    /// The token names a key the verifier has not seen, and its copy of the keys is not known
    /// to be newer than the request: a rejection now could be wrong (the key may have been
    /// published since), so the request waits at least `retry_after` for a refresh of the keys
    /// and is decided then.
    #[error("token signed by a key not seen yet; decided after the next refresh of the keys")]
    Deferred {
        /// When a refresh newer than the request can be made.
        retry_after: Duration,
    },
}

/// Decides whether a token authorizes a request under a buyer's prefix.
#[async_trait]
pub trait Authorizer: Send + Sync {
    /// The token's claims if it authorizes a request under `buyer`'s prefix that arrived at
    /// `arrived` (the request object's time in the inbox).
    async fn authorize(
        &self,
        token: &str,
        buyer: &str,
        arrived: SystemTime,
    ) -> Result<TokenClaims, NotAuthorized>;
}
