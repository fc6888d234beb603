//! The claims of a sealbox token (JWT).

use super::*;

/// The claims of a sealbox token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenClaims {
    /// Seller.
    pub iss: String,
    /// Buyer id.
    pub sub: String,
    /// Product id.
    pub aud: String,
    /// Issued at (seconds since the epoch).
    pub iat: i64,
    /// Not before.
    pub nbf: i64,
    /// Expires.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// Space-separated scopes; must contain `invoke`.
    pub scope: String,
    /// The opaque id of the subscription (grant) the token was issued under: what the published
    /// deny list names, so the list never shows a buyer id.
    pub grant: String,
}
