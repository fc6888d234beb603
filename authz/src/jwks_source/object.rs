//! Published keys in an object, for buyers who read them from S3.

use std::sync::Arc;

use async_trait::async_trait;
use sealbox_core::ports::ObjectStore;

use super::JwksSource;
use crate::error::AuthzError;
use crate::jwks::MAX_JWKS_BYTES;

/// Published keys read from `bucket/key` of an object store.
pub struct ObjectJwks {
    store: Arc<dyn ObjectStore>,
    bucket: String,
    key: String,
}

impl ObjectJwks {
    /// The document at `bucket/key` in `store`.
    pub fn new(store: Arc<dyn ObjectStore>, bucket: &str, key: &str) -> Self {
        ObjectJwks {
            store,
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        }
    }
}

#[async_trait]
impl JwksSource for ObjectJwks {
    async fn fetch(&self) -> Result<Vec<u8>, AuthzError> {
        match self
            .store
            .get(&self.bucket, &self.key, MAX_JWKS_BYTES as u64)
            .await
        {
            Ok((_, body)) => Ok(body.to_vec()),
            Err(e) => Err(AuthzError::JwksUnavailable {
                source_name: self.describe(),
                detail: e.to_string(),
            }),
        }
    }

    fn describe(&self) -> String {
        sealbox_core::layout::location(&self.bucket, &self.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sealbox_core::ports::PutMode;
    use sealbox_embedded::fs_store::FsObjectStore;

    #[tokio::test]
    async fn the_published_keys_are_read_from_an_object_and_a_missing_one_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(FsObjectStore::new(dir.path(), false));
        let source = ObjectJwks::new(store.clone(), "public", "jwks.json");
        assert!(matches!(
            source.fetch().await,
            Err(AuthzError::JwksUnavailable { .. })
        ));
        store
            .put(
                "public",
                "jwks.json",
                "{\"keys\": []}".into(),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        assert_eq!(source.fetch().await.unwrap(), b"{\"keys\": []}");
        assert_eq!(source.describe(), "s3://public/jwks.json");
    }
}
