//! Where a verifier gets the seller's published keys: an HTTP(S) URL, an object in a bucket,
//! or a local file. One port, three adapters.

mod file;
mod http;
mod object;

pub use file::FileJwks;
pub use http::HttpJwks;
pub use object::ObjectJwks;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sealbox_core::ports::ObjectStore;

use crate::error::AuthzError;

/// The source at `location`, as the AWS roles' `SEALBOX_JWKS` names it: `s3://bucket/key` (read
/// from `store`) or an http(s) URL.
pub fn at_location(
    location: &str,
    store: Arc<dyn ObjectStore>,
) -> Result<Arc<dyn JwksSource>, AuthzError> {
    match location.strip_prefix("s3://") {
        Some(rest) => match rest.split_once('/') {
            Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
                Ok(Arc::new(ObjectJwks::new(store, bucket, key)))
            }
            _ => Err(AuthzError::JwksUnavailable {
                source_name: location.to_owned(),
                detail: "expected s3://bucket/key".into(),
            }),
        },
        None => Ok(Arc::new(HttpJwks::new(location, Duration::from_secs(5))?)),
    }
}

/// A source of the published key document.
#[async_trait]
pub trait JwksSource: Send + Sync {
    /// The document's bytes, at most [`crate::jwks::MAX_JWKS_BYTES`].
    async fn fetch(&self) -> Result<Vec<u8>, AuthzError>;
    /// Where it comes from, for logs and errors.
    fn describe(&self) -> String;
}
