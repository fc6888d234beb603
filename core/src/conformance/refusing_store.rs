//! A test double for handler tests: an object store that refuses to hand over the objects it is
//! told to, as S3 answers 403 for an object its caller may not read, and passes everything else
//! to the store it wraps. It proves each handler's answer to [`Error::Unreadable`] on any backend
//! (the real refusals are proven on moto, whose GLACIER objects S3 refuses, and a file store
//! cannot refuse root).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::ports::object_store::{ByteStream, ObjectMeta, ObjectStore, PutOptions};
use crate::{Error, Result};

/// Wraps a store; reads of the keys given to [`RefusingStore::refuse`] fail with
/// [`Error::Unreadable`].
#[derive(Clone)]
pub struct RefusingStore<S> {
    inner: S,
    refused: Arc<Mutex<HashSet<String>>>,
}

impl<S: ObjectStore> RefusingStore<S> {
    /// Refuses nothing until told to.
    pub fn new(inner: S) -> Self {
        RefusingStore {
            inner,
            refused: Arc::default(),
        }
    }

    /// From now on, reads of `key` (in any bucket) are refused.
    pub fn refuse(&self, key: &str) {
        self.refused.lock().unwrap().insert(key.to_owned());
    }

    fn check(&self, bucket: &str, key: &str) -> Result<()> {
        if self.refused.lock().unwrap().contains(key) {
            return Err(Error::Unreadable {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                why: "S3 answered 403 AccessDenied: Access Denied".to_owned(),
            });
        }
        Ok(())
    }
}

#[async_trait]
impl<S: ObjectStore> ObjectStore for RefusingStore<S> {
    async fn put_opts(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        self.inner.put_opts(bucket, key, body, opts).await
    }

    async fn put_stream_opts(
        &self,
        bucket: &str,
        key: &str,
        body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        self.inner.put_stream_opts(bucket, key, body, opts).await
    }

    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<(ObjectMeta, Bytes)> {
        self.check(bucket, key)?;
        self.inner.get(bucket, key, max_bytes).await
    }

    async fn get_stream(&self, bucket: &str, key: &str) -> Result<(ObjectMeta, ByteStream)> {
        self.check(bucket, key)?;
        self.inner.get_stream(bucket, key).await
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        self.check(bucket, key)?;
        self.inner.head(bucket, key).await
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Vec<ObjectMeta>> {
        self.inner.list(bucket, prefix, start_after, max).await
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.inner.delete(bucket, key).await
    }
}
