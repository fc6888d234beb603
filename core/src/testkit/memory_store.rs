//! An [`ObjectStore`] in memory: buckets made on first use, ETags from a counter.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::ports::object_store::{
    ByteStream, ETag, ObjectMeta, ObjectStore, PutMode, PutOptions, check_metadata,
};
use crate::{Error, Result};

/// Each object by (bucket, key), with its metadata.
type Objects = BTreeMap<(String, String), (ObjectMeta, Bytes)>;

/// Objects by (bucket, key). Clones share the objects, and the outage of
/// [`MemoryStore::fail_writes`].
#[derive(Default, Clone)]
pub struct MemoryStore {
    objects: Arc<Mutex<Objects>>,
    versions: Arc<AtomicU64>,
    failing_writes: Arc<AtomicUsize>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// The next `n` writes fail as on a full disk: our own storage's outage, which the handlers
    /// hold rather than answer.
    pub fn fail_writes(&self, n: usize) {
        self.failing_writes.store(n, Ordering::SeqCst);
    }

    /// Writes still to fail (see [`MemoryStore::fail_writes`]).
    pub fn writes_to_fail(&self) -> usize {
        self.failing_writes.load(Ordering::SeqCst)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Objects> {
        // Every write leaves the map whole, so a panic elsewhere cannot spoil it.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn found(&self, bucket: &str, key: &str) -> Result<(ObjectMeta, Bytes)> {
        self.lock()
            .get(&(bucket.to_owned(), key.to_owned()))
            .cloned()
            .ok_or_else(|| Error::NotFound {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            })
    }
}

#[async_trait]
impl ObjectStore for MemoryStore {
    async fn put_opts(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        check_metadata(&opts.metadata)?;
        let failing = self
            .failing_writes
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if failing.is_ok() {
            let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
            return Err(Error::io(format!("writing {bucket}/{key}"), full));
        }
        let mut objects = self.lock();
        let at = (bucket.to_owned(), key.to_owned());
        if opts.mode == PutMode::CreateNew && objects.contains_key(&at) {
            return Err(Error::AlreadyExists {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
            });
        }
        let version = self.versions.fetch_add(1, Ordering::Relaxed) + 1;
        let meta = ObjectMeta {
            key: key.to_owned(),
            size: body.len() as u64,
            etag: ETag::new(format!("m{version}")),
            last_modified: OffsetDateTime::now_utc(),
            metadata: opts.metadata,
        };
        objects.insert(at, (meta.clone(), body));
        Ok(meta)
    }

    async fn put_stream_opts(
        &self,
        bucket: &str,
        key: &str,
        mut body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        let mut bytes = Vec::new();
        // The outage, if any, is met by `put_opts`.
        body.read_to_end(&mut bytes)
            .await
            .map_err(|e| Error::io(format!("reading the body of {bucket}/{key}"), e))?;
        self.put_opts(bucket, key, bytes.into(), opts).await
    }

    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<(ObjectMeta, Bytes)> {
        let (meta, body) = self.found(bucket, key)?;
        if meta.size > max_bytes {
            return Err(Error::TooLarge {
                bucket: bucket.to_owned(),
                key: key.to_owned(),
                size: meta.size,
                limit: max_bytes,
            });
        }
        Ok((meta, body))
    }

    async fn get_stream(&self, bucket: &str, key: &str) -> Result<(ObjectMeta, ByteStream)> {
        let (meta, body) = self.found(bucket, key)?;
        Ok((meta, Box::pin(std::io::Cursor::new(body))))
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        Ok(self.found(bucket, key).ok().map(|(meta, _)| meta))
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Vec<ObjectMeta>> {
        let objects = self.lock();
        Ok(objects
            .iter()
            .filter(|((b, k), _)| b == bucket && k.starts_with(prefix))
            .filter(|((_, k), _)| start_after.is_none_or(|after| k.as_str() > after))
            .take(max)
            .map(|(_, (meta, _))| ObjectMeta {
                // Listings carry no user metadata (S3's do not).
                metadata: Default::default(),
                ..meta.clone()
            })
            .collect())
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        self.lock().remove(&(bucket.to_owned(), key.to_owned()));
        Ok(())
    }
}
