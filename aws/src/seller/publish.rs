//! The published keys document in S3: written whenever keys or subscriptions change, read by
//! every buyer's ingest (`SEALBOX_JWKS=s3://…`, or over https through the bucket's website or a
//! CDN, which honour its `Cache-Control`).

use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use sealbox_authz::AuthzError;
use sealbox_authz::jwks::{Denial, publish};
use sealbox_authz::key_store::KeyStore;
use sealbox_authz::subscriptions::SubscriptionRegistry;
use time::OffsetDateTime;

use crate::config::s3_location;

/// How long a reader may keep the document: one verifier refresh interval, so a cache in front
/// of it delays a revocation by at most one more interval.
pub const PUBLISHED_MAX_AGE: Duration = Duration::from_secs(60);

/// Writes the published keys document to one S3 object.
#[derive(Debug, Clone)]
pub struct S3Publisher {
    s3: aws_sdk_s3::Client,
    location: String,
}

impl S3Publisher {
    /// A publisher to `location`, `s3://bucket/key`.
    pub fn new(s3: aws_sdk_s3::Client, location: impl Into<String>) -> Self {
        S3Publisher {
            s3,
            location: location.into(),
        }
    }

    /// Where it publishes.
    pub fn location(&self) -> &str {
        &self.location
    }

    /// Writes `doc` to the object.
    async fn put(&self, doc: &serde_json::Value) -> Result<(), AuthzError> {
        let Some((bucket, key)) = s3_location(&self.location) else {
            return Err(AuthzError::KeyStore(format!(
                "cannot publish to {:?}: not s3://bucket/key",
                self.location
            )));
        };
        let body =
            serde_json::to_vec(doc).map_err(|e| AuthzError::KeyStore(format!("JSON: {e}")))?;
        self.s3
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_type("application/jwk-set+json")
            .cache_control(format!("public, max-age={}", PUBLISHED_MAX_AGE.as_secs()))
            .body(ByteStream::from(body))
            .send()
            .await
            .map_err(|e| {
                AuthzError::KeyStore(format!(
                    "publishing the keys to {}: {}",
                    self.location,
                    super::sdk_sentence(&e)
                ))
            })?;
        Ok(())
    }

    /// Publishes the keyset of `keys` now and the deny list of `registry`; answers the
    /// document. The list holds the denied grants of every product: grant ids are opaque and
    /// unique, so one document serves them all and tells no reader whose they are.
    ///
    /// Several writers publish (the scheduled rotation, Marketplace events, the seller's
    /// commands) and S3 keeps the last write, so a writer that read the keys just before
    /// another rotated them could hide the new key, or a revocation, until the next
    /// publication. After each write the keys and the deny list are read again, and the
    /// document is written again until it is what they say: whichever writer comes last then
    /// writes the newest state.
    pub async fn publish_current(
        &self,
        keys: &dyn KeyStore,
        registry: &dyn SubscriptionRegistry,
    ) -> Result<serde_json::Value, AuthzError> {
        let mut doc = current_document(keys, registry).await?;
        for _ in 0..PUBLISH_ATTEMPTS {
            self.put(&doc).await?;
            let now = current_document(keys, registry).await?;
            if now == doc {
                return Ok(doc);
            }
            doc = now;
        }
        Err(AuthzError::KeyStore(format!(
            "the keys or the deny list changed {PUBLISH_ATTEMPTS} times while they were published \
             to {}; publish again",
            self.location
        )))
    }
}

/// How many times [`S3Publisher::publish_current`] writes before it gives up on keys or a deny
/// list that keep changing under it.
const PUBLISH_ATTEMPTS: usize = 5;

/// The document of the keyset in `keys` and the deny list of `registry`, now.
async fn current_document(
    keys: &dyn KeyStore,
    registry: &dyn SubscriptionRegistry,
) -> Result<serde_json::Value, AuthzError> {
    let now = OffsetDateTime::now_utc();
    let mut keyset = keys.load().await?;
    // Keys past retirement are not published even before the store drops them.
    keyset.retire_expired(now);
    let subscriptions = registry.list().await?;
    let denied: Vec<Denial> = subscriptions.iter().filter_map(|s| s.denial(now)).collect();
    publish(&keyset, &denied)
}
