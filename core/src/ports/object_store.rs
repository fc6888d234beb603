//! Object store port: S3 semantics (ETags, conditional create, capped and streaming reads).

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use time::OffsetDateTime;

use crate::error::Result;

/// A streaming object body.
pub type ByteStream = Pin<Box<dyn tokio::io::AsyncRead + Send>>;

/// Metadata of a stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    /// The key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Entity tag: changes whenever the object is replaced.
    pub etag: String,
    /// When it was last written.
    pub last_modified: OffsetDateTime,
}

/// How a put treats an existing object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there.
    Overwrite,
    /// Fail with [`crate::Error::AlreadyExists`] if an object exists (`If-None-Match: *`).
    CreateNew,
}

/// Buckets of objects addressed by key.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Writes a whole object atomically: readers see the old object or the new one, never a part.
    async fn put(&self, bucket: &str, key: &str, body: Bytes, mode: PutMode) -> Result<ObjectMeta>;
    /// Writes an object from a stream, atomically, without holding it in memory.
    async fn put_stream(
        &self,
        bucket: &str,
        key: &str,
        body: ByteStream,
        mode: PutMode,
    ) -> Result<ObjectMeta>;
    /// Reads a whole object, refusing one larger than `max_bytes` with [`crate::Error::TooLarge`].
    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<(ObjectMeta, Bytes)>;
    /// Opens an object for streaming.
    async fn get_stream(&self, bucket: &str, key: &str) -> Result<(ObjectMeta, ByteStream)>;
    /// The object's metadata, or `None` if there is none.
    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>>;
    /// Keys starting with `prefix`, in order, after `start_after`, at most `max`.
    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Vec<ObjectMeta>>;
    /// Deletes an object; deleting a missing object succeeds.
    async fn delete(&self, bucket: &str, key: &str) -> Result<()>;
}
