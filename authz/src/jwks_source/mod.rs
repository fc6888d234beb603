//! Where a verifier gets the seller's published keys: an HTTP(S) URL, an object in a bucket,
//! or a local file. One port, three adapters.

mod file;
mod http;
mod object;

pub use file::FileJwks;
pub use http::HttpJwks;
pub use object::ObjectJwks;

use async_trait::async_trait;

use crate::error::AuthzError;

/// A source of the published key document.
#[async_trait]
pub trait JwksSource: Send + Sync {
    /// The document's bytes, at most [`crate::jwks::MAX_JWKS_BYTES`].
    async fn fetch(&self) -> Result<Vec<u8>, AuthzError>;
    /// Where it comes from, for logs and errors.
    fn describe(&self) -> String;
}
