//! Token source port: where ingest gets a token for request objects that carry none, when the
//! buyer's stack says tokens come from its own AWS identity (`TokenSource: iam`).

use async_trait::async_trait;

/// Why no token could be had.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenUnavailable {
    /// The token service answered and refused (not subscribed, a proof it does not accept):
    /// waiting will not change it, so the request is answered `token_refused` with this detail.
    #[error("the token service refused: {0}")]
    Refused(String),
    /// The token service could not be reached or failed on its side: held and retried.
    #[error("the token service is unavailable: {0}")]
    Unreachable(String),
}

/// Gets a token that proves this deployment's own buyer account, reused until near its expiry.
#[async_trait]
pub trait TokenSource: Send + Sync {
    /// A token (the JWT alone) for the account this deployment runs as.
    async fn token(&self) -> Result<String, TokenUnavailable>;
}
