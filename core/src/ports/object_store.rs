//! Object store port: S3 semantics (ETags, conditional create, capped and streaming reads,
//! user metadata written with the object and read back by head and get, not by listings).

use std::collections::BTreeMap;
use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use time::OffsetDateTime;

use crate::error::{Error, Result};

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
    pub etag: ETag,
    /// When it was last written.
    pub last_modified: OffsetDateTime,
    /// User metadata written with the object. Head and get answer it; listings do not (S3's
    /// ListObjectsV2 does not carry it), so a listed object's is empty.
    pub metadata: Metadata,
}

/// User metadata of an object (S3's `x-amz-meta-<name>` headers, the names without the prefix).
/// Names are 1-64 of `[a-z0-9-]` (S3 lowercases names, so only lowercase round-trips), values
/// printable ASCII (S3 sends them as HTTP headers), names and values at most
/// [`MAX_METADATA_BYTES`] in all; [`check_metadata`] enforces this for every adapter alike.
pub type Metadata = BTreeMap<String, String>;

/// S3's limit on the user metadata of one object: its names and values, 2 KB in all.
pub const MAX_METADATA_BYTES: usize = 2048;

/// Refuses metadata S3 would refuse or alter, so both adapters accept exactly the same maps.
pub fn check_metadata(metadata: &Metadata) -> Result<()> {
    let invalid = |name: &str, rule| {
        Err(Error::InvalidKey {
            key: name.to_owned(),
            rule,
        })
    };
    let mut total = 0usize;
    for (name, value) in metadata {
        let name_ok = (1..=64).contains(&name.len())
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !name_ok {
            return invalid(name, "metadata names are 1-64 of [a-z0-9-]");
        }
        if !value.bytes().all(|b| (b' '..=b'~').contains(&b)) {
            return invalid(name, "metadata values are printable ASCII");
        }
        total += name.len() + value.len();
    }
    if total > MAX_METADATA_BYTES {
        return invalid(
            "metadata",
            "user metadata is at most 2048 bytes of names and values (S3's limit)",
        );
    }
    Ok(())
}

pub use crate::etag::ETag;

/// How a put treats an existing object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PutMode {
    /// Replace whatever is there.
    #[default]
    Overwrite,
    /// Fail with [`crate::Error::AlreadyExists`] if an object exists (`If-None-Match: *`).
    CreateNew,
}

/// What a put does beyond writing the body (as `object_store::PutOptions` of arrow-rs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PutOptions {
    /// How it treats an existing object.
    pub mode: PutMode,
    /// User metadata, published with the body in the same atomic step.
    pub metadata: Metadata,
}

impl From<PutMode> for PutOptions {
    fn from(mode: PutMode) -> Self {
        PutOptions {
            mode,
            metadata: Metadata::new(),
        }
    }
}

/// Buckets of objects addressed by key.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Writes a whole object atomically: readers see the old object or the new one, never a part.
    async fn put(&self, bucket: &str, key: &str, body: Bytes, mode: PutMode) -> Result<ObjectMeta> {
        self.put_opts(bucket, key, body, mode.into()).await
    }
    /// [`ObjectStore::put`] with user metadata: the body and the metadata are published
    /// together, so no reader sees one without the other.
    async fn put_opts(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        opts: PutOptions,
    ) -> Result<ObjectMeta>;
    /// Writes an object from a stream, atomically, without holding it in memory.
    async fn put_stream(
        &self,
        bucket: &str,
        key: &str,
        body: ByteStream,
        mode: PutMode,
    ) -> Result<ObjectMeta> {
        self.put_stream_opts(bucket, key, body, mode.into()).await
    }
    /// [`ObjectStore::put_stream`] with user metadata, published with the body.
    async fn put_stream_opts(
        &self,
        bucket: &str,
        key: &str,
        body: ByteStream,
        opts: PutOptions,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn one(name: &str, value: &str) -> Metadata {
        Metadata::from([(name.to_owned(), value.to_owned())])
    }

    #[test]
    fn metadata_of_lowercase_names_and_ascii_values_within_2_kb_is_accepted() {
        assert!(check_metadata(&Metadata::new()).is_ok());
        assert!(check_metadata(&one("sealbox-usage", r#"{"records":3}"#)).is_ok());
        let name = "a".repeat(64);
        assert!(check_metadata(&one(&name, &"v".repeat(MAX_METADATA_BYTES - 64))).is_ok());
    }

    #[test]
    fn metadata_s3_would_refuse_or_alter_is_refused_with_the_rule() {
        for (name, value, rule) in [
            ("Sealbox-Usage", "1", "names"),
            ("", "1", "names"),
            ("sealbox_usage", "1", "names"),
            ("sealbox-usage", "caf\u{e9}", "values"),
            ("sealbox-usage", "a\nb", "values"),
        ] {
            match check_metadata(&one(name, value)) {
                Err(Error::InvalidKey { rule: r, .. }) => assert!(r.contains(rule), "{name}: {r}"),
                other => panic!("{name:?}={value:?}: {other:?}"),
            }
        }
        let big = one("sealbox-usage", &"v".repeat(MAX_METADATA_BYTES));
        match check_metadata(&big) {
            Err(Error::InvalidKey { rule, .. }) => assert!(rule.contains("2048"), "{rule}"),
            other => panic!("{other:?}"),
        }
    }
}
