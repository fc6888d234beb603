//! The object store port on S3.
//!
//! ETags have one form everywhere this adapter answers: without the surrounding quotes. HEAD,
//! GET, PUT and ListObjectsV2 give them quoted (`"9b2c…"`), S3 event notifications unquoted
//! (`9b2c…`); the unquoted form is the one both can reach without guessing, so an event's ETag
//! compares equal to a head's ([`ETag`]).
//!
//! Writes: a body below one part ([`PART_SIZE`]) is one PutObject; a longer stream is a
//! multipart upload, each part sent while the next is read, so at most two parts are in memory.
//! Create-new is `If-None-Match: *` on the PutObject or on the CompleteMultipartUpload, so the
//! check and the write are one step on S3's side. An upload that fails or is refused is aborted;
//! one whose future is dropped is aborted in the background (a bucket lifecycle rule for
//! incomplete multipart uploads is still the backstop for a process that dies mid-upload).
//!
//! User metadata is S3's own (`x-amz-meta-<name>`): set on the PutObject or on the
//! CreateMultipartUpload, answered by HeadObject and GetObject; ListObjectsV2 does not carry it.
//!
//! Reads of a missing key answer 404 only if the caller may list the bucket (`s3:ListBucket`);
//! without it S3 answers 403. A read S3 refuses for a reason about the object (403 of any code
//! but those about our credentials or clock, `InvalidObjectState`, `KMS.*`, a checksum mismatch)
//! is [`Error::Unreadable`]: for a buyer's object, that request's answer, never an outage.

use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream as SdkByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_types::error::display::DisplayErrorContext;
use bytes::Bytes;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use sealbox_core::ports::object_store::{
    ByteStream, Metadata, ObjectMeta, ObjectStore, PutMode, PutOptions, check_metadata,
};
use sealbox_core::{Error, Result};

use crate::sdk::storage_error;

/// Size of each part of a multipart upload (the last may be shorter); a streamed body shorter
/// than this is one PutObject.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// S3's limit on the parts of one upload.
const MAX_PARTS: usize = 10_000;

/// S3 answers at most this many keys per ListObjectsV2 call.
const LIST_PAGE: usize = 1000;

/// A capped read reserves at most this much before the body arrives.
const PREALLOCATE_AT_MOST: u64 = 64 * 1024 * 1024;

/// S3's limit on the length of a key, in bytes.
const MAX_KEY_BYTES: usize = 1024;

pub use sealbox_core::etag::ETag;

/// Object store over S3 buckets.
#[derive(Debug, Clone)]
pub struct S3ObjectStore {
    client: Client,
}

/// Why a read pinned to an ETag ([`S3ObjectStore::get_if_match`]) gave no body.
#[derive(Debug, thiserror::Error)]
pub enum PinnedReadError {
    /// The object is there but is another version than the one pinned (S3 answered 412).
    #[error("{bucket}/{key} changed: it no longer has ETag {etag}")]
    Changed {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
        /// The ETag asked for.
        etag: ETag,
    },
    /// Any other reason: [`Error::NotFound`] if there is no object at all, [`Error::TooLarge`],
    /// or a fault of S3.
    #[error(transparent)]
    Store(#[from] Error),
}

impl S3ObjectStore {
    /// A store over `client` (for emulators, a path-style client: see [`crate::sdk::Clients`]).
    pub fn new(client: Client) -> Self {
        S3ObjectStore { client }
    }

    /// The SDK client underneath.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Reads the version of an object whose ETag is `etag` (quoted or not), refusing one larger
    /// than `max_bytes`: [`PinnedReadError::Changed`] if the object was replaced since,
    /// `Store(Error::NotFound)` if it is gone.
    pub async fn get_if_match(
        &self,
        bucket: &str,
        key: &str,
        etag: &ETag,
        max_bytes: u64,
    ) -> Result<(ObjectMeta, Bytes), PinnedReadError> {
        check_key(key)?;
        let changed = || PinnedReadError::Changed {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            etag: etag.clone(),
        };
        // RFC 7232 wants the quoted form in If-Match.
        let sent = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .if_match(etag.quoted())
            .send()
            .await;
        let out = match sent {
            Ok(out) => out,
            Err(e) => {
                return Err(match classify(&e) {
                    Fault::Precondition => changed(),
                    _ => read_error(e, "reading", bucket, key).into(),
                });
            }
        };
        let (meta, body) = read_capped(bucket, key, out, max_bytes).await?;
        // S3 honours If-Match; checked again for stores that ignore it.
        if meta.etag != *etag {
            return Err(changed());
        }
        Ok((meta, body))
    }

    /// One PutObject of a whole body.
    async fn put_object(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        check_key(key)?;
        check_metadata(&opts.metadata)?;
        let size = body.len() as u64;
        let mut request = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .content_length(size as i64)
            .set_metadata(sdk_metadata(&opts.metadata))
            .body(SdkByteStream::from(body));
        if opts.mode == PutMode::CreateNew {
            request = request.if_none_match("*");
        }
        let out = request
            .send()
            .await
            .map_err(|e| write_error(e, "writing", bucket, key))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            etag: required_etag(out.e_tag(), "writing", bucket, key)?,
            last_modified: written_now(),
            metadata: opts.metadata,
        })
    }

    /// A multipart upload of `first`, `second` and the rest of `body`.
    async fn put_multipart(
        &self,
        bucket: &str,
        key: &str,
        parts: (Bytes, Bytes),
        body: &mut ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(bucket)
            .key(key)
            .set_metadata(sdk_metadata(&opts.metadata))
            .send()
            .await
            .map_err(|e| write_error(e, "starting a multipart upload of", bucket, key))?;
        let Some(upload_id) = created.upload_id() else {
            return Err(Error::storage(
                format!("starting a multipart upload of s3://{bucket}/{key}"),
                "S3 answered without an upload id",
            ));
        };
        let upload = Upload {
            client: &self.client,
            bucket,
            key,
            upload_id,
        };
        let mut guard = AbortOnDrop {
            client: self.client.clone(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            upload_id: Some(upload_id.to_owned()),
        };
        let uploaded = upload.run(parts, body, opts.mode).await;
        if uploaded.is_err() {
            // Awaited here rather than left to the guard, so no part outlives a failed put.
            upload.abort().await;
        }
        guard.upload_id = None;
        uploaded.map(|meta| ObjectMeta {
            metadata: opts.metadata,
            ..meta
        })
    }
}

/// One multipart upload under way.
struct Upload<'a> {
    client: &'a Client,
    bucket: &'a str,
    key: &'a str,
    upload_id: &'a str,
}

impl Upload<'_> {
    /// Uploads `first`, `second` and the rest of `body` as parts, each sent while the next is
    /// read (so two parts at most are in memory), then completes the upload (create-new: only
    /// if no object is there by then).
    async fn run(
        &self,
        (first, second): (Bytes, Bytes),
        body: &mut ByteStream,
        mode: PutMode,
    ) -> Result<ObjectMeta> {
        let (bucket, key) = (self.bucket, self.key);
        let mut parts = Vec::new();
        let mut size = 0u64;
        let mut current = first;
        let mut read_ahead = Some(second);
        loop {
            let number = parts.len() + 1;
            size += current.len() as u64;
            if number > MAX_PARTS {
                return Err(Error::TooLarge {
                    bucket: bucket.to_owned(),
                    key: key.to_owned(),
                    size,
                    limit: (MAX_PARTS * PART_SIZE) as u64,
                });
            }
            let (etag, next) = match read_ahead.take() {
                Some(next) => (self.upload_part(number, current).await?, next),
                None => {
                    let (etag, next) = tokio::join!(
                        self.upload_part(number, current),
                        read_part(body, bucket, key)
                    );
                    (etag?, next?)
                }
            };
            parts.push(
                CompletedPart::builder()
                    .part_number(number as i32)
                    .e_tag(etag)
                    .build(),
            );
            // The last part may be of any size: the stream's end is an empty read.
            if next.is_empty() {
                break;
            }
            current = next;
        }
        let mut request = self
            .client
            .complete_multipart_upload()
            .bucket(bucket)
            .key(key)
            .upload_id(self.upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if mode == PutMode::CreateNew {
            request = request.if_none_match("*");
        }
        let out = request
            .send()
            .await
            .map_err(|e| write_error(e, "completing the multipart upload of", bucket, key))?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            etag: required_etag(out.e_tag(), "completing the upload of", bucket, key)?,
            last_modified: written_now(),
            metadata: Metadata::new(),
        })
    }

    /// Sends part `number`; answers its ETag as S3 gave it (CompleteMultipartUpload wants it so).
    async fn upload_part(&self, number: usize, body: Bytes) -> Result<String> {
        let (bucket, key) = (self.bucket, self.key);
        let doing = format!("uploading part {number} of");
        let out = self
            .client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(self.upload_id)
            .part_number(number as i32)
            .content_length(body.len() as i64)
            .body(SdkByteStream::from(body))
            .send()
            .await
            .map_err(|e| write_error(e, &doing, bucket, key))?;
        out.e_tag().map(str::to_owned).ok_or_else(|| {
            Error::storage(
                format!("{doing} s3://{bucket}/{key}"),
                "S3 answered without an ETag",
            )
        })
    }

    async fn abort(&self) {
        abort_upload(self.client, self.bucket, self.key, self.upload_id).await;
    }
}

#[async_trait]
impl ObjectStore for S3ObjectStore {
    async fn put_opts(
        &self,
        bucket: &str,
        key: &str,
        body: Bytes,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        self.put_object(bucket, key, body, opts).await
    }

    async fn put_stream_opts(
        &self,
        bucket: &str,
        key: &str,
        mut body: ByteStream,
        opts: PutOptions,
    ) -> Result<ObjectMeta> {
        check_key(key)?;
        // Before reading a byte of the body: a refusal costs nothing.
        check_metadata(&opts.metadata)?;
        let first = read_part(&mut body, bucket, key).await?;
        if first.len() < PART_SIZE {
            return self.put_object(bucket, key, first, opts).await;
        }
        let second = read_part(&mut body, bucket, key).await?;
        if second.is_empty() {
            return self.put_object(bucket, key, first, opts).await;
        }
        self.put_multipart(bucket, key, (first, second), &mut body, opts)
            .await
    }

    async fn get(&self, bucket: &str, key: &str, max_bytes: u64) -> Result<(ObjectMeta, Bytes)> {
        check_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| read_error(e, "reading", bucket, key))?;
        read_capped(bucket, key, out, max_bytes).await
    }

    async fn get_stream(&self, bucket: &str, key: &str) -> Result<(ObjectMeta, ByteStream)> {
        check_key(key)?;
        let out = self
            .client
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| read_error(e, "reading", bucket, key))?;
        let meta = ObjectMeta {
            metadata: port_metadata(out.metadata()),
            ..object_meta(
                key,
                out.content_length(),
                out.e_tag(),
                out.last_modified(),
                bucket,
            )?
        };
        Ok((meta, Box::pin(out.body.into_async_read())))
    }

    async fn head(&self, bucket: &str, key: &str) -> Result<Option<ObjectMeta>> {
        check_key(key)?;
        let sent = self
            .client
            .head_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await;
        match sent {
            Ok(out) => object_meta(
                key,
                out.content_length(),
                out.e_tag(),
                out.last_modified(),
                bucket,
            )
            .map(|meta| {
                Some(ObjectMeta {
                    metadata: port_metadata(out.metadata()),
                    ..meta
                })
            }),
            // A HEAD answer has no body, so a missing bucket is a bare 404 too: both are None.
            Err(e) if matches!(classify(&e), Fault::NotFound) => Ok(None),
            Err(e) => Err(read_error(e, "reading the metadata of", bucket, key)),
        }
    }

    async fn list(
        &self,
        bucket: &str,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Vec<ObjectMeta>> {
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        let context = || format!("listing s3://{bucket}/{prefix}");
        while found.len() < max {
            let want = (max - found.len()).min(LIST_PAGE);
            let mut request = self
                .client
                .list_objects_v2()
                .bucket(bucket)
                .prefix(prefix)
                .max_keys(want as i32);
            // The continuation token carries the position; start_after only starts the walk.
            request = match (&token, start_after) {
                (Some(t), _) => request.continuation_token(t),
                (None, Some(after)) => request.start_after(after),
                (None, None) => request,
            };
            let page = request
                .send()
                .await
                .map_err(|e| bucket_error(e, &context(), bucket))?;
            for object in page.contents() {
                let Some(key) = object.key() else { continue };
                found.push(object_meta(
                    key,
                    object.size(),
                    object.e_tag(),
                    object.last_modified(),
                    bucket,
                )?);
            }
            token = page.next_continuation_token().map(str::to_owned);
            if !page.is_truncated().unwrap_or(false) || token.is_none() {
                break;
            }
        }
        found.truncate(max);
        Ok(found)
    }

    async fn delete(&self, bucket: &str, key: &str) -> Result<()> {
        check_key(key)?;
        match self
            .client
            .delete_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            // S3 answers 204 for a missing key; an emulator's 404 means the same.
            Err(e) if matches!(classify(&e), Fault::NotFound) => Ok(()),
            Err(e) => Err(bucket_error(
                e,
                &format!("deleting s3://{bucket}/{key}"),
                bucket,
            )),
        }
    }
}

/// Aborts a multipart upload if dropped while armed: a put whose future is cancelled mid-upload
/// leaves no parts behind.
struct AbortOnDrop {
    client: Client,
    bucket: String,
    key: String,
    upload_id: Option<String>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(bucket = %self.bucket, key = %self.key, %upload_id,
                "a cancelled multipart upload was left behind (no runtime to abort it)");
            return;
        };
        let (client, bucket, key) = (self.client.clone(), self.bucket.clone(), self.key.clone());
        runtime.spawn(async move { abort_upload(&client, &bucket, &key, &upload_id).await });
    }
}

async fn abort_upload(client: &Client, bucket: &str, key: &str, upload_id: &str) {
    let aborted = client
        .abort_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(upload_id)
        .send()
        .await;
    if let Err(e) = aborted {
        // Only costs storage until the bucket's lifecycle rule removes it; the put's own error
        // is the one to report.
        tracing::warn!(bucket, key, upload_id, error = %DisplayErrorContext(&e),
            "aborting a multipart upload failed");
    }
}

/// Reads up to [`PART_SIZE`] bytes of `body`; fewer only at its end.
async fn read_part(body: &mut ByteStream, bucket: &str, key: &str) -> Result<Bytes> {
    let mut buf = Vec::with_capacity(PART_SIZE);
    body.take(PART_SIZE as u64)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| {
            Error::io(
                format!("reading the body to write to s3://{bucket}/{key}"),
                e,
            )
        })?;
    Ok(Bytes::from(buf))
}

/// The body of a GetObject answer, refused before reading a byte if S3 says it is larger than
/// `max_bytes`, and never read past `max_bytes + 1` bytes whatever it said.
async fn read_capped(
    bucket: &str,
    key: &str,
    out: aws_sdk_s3::operation::get_object::GetObjectOutput,
    max_bytes: u64,
) -> Result<(ObjectMeta, Bytes)> {
    let meta = ObjectMeta {
        metadata: port_metadata(out.metadata()),
        ..object_meta(
            key,
            out.content_length(),
            out.e_tag(),
            out.last_modified(),
            bucket,
        )?
    };
    let too_large = |size| Error::TooLarge {
        bucket: bucket.to_owned(),
        key: key.to_owned(),
        size,
        limit: max_bytes,
    };
    if meta.size > max_bytes {
        // Dropping the body closes the connection without reading it.
        return Err(too_large(meta.size));
    }
    // The size is S3's word: allocated as the body arrives past the first 64 MiB.
    let mut buf = Vec::with_capacity(meta.size.min(PREALLOCATE_AT_MOST) as usize);
    out.body
        .into_async_read()
        .take(max_bytes.saturating_add(1))
        .read_to_end(&mut buf)
        .await
        .map_err(|e| body_error(e, bucket, key))?;
    if buf.len() as u64 > max_bytes {
        return Err(too_large(buf.len() as u64));
    }
    Ok((meta, Bytes::from(buf)))
}

/// Object metadata from the fields S3 answers, the ETag in its normal form.
fn object_meta(
    key: &str,
    size: Option<i64>,
    etag: Option<&str>,
    last_modified: Option<&aws_smithy_types::DateTime>,
    bucket: &str,
) -> Result<ObjectMeta> {
    let missing = |what: &str| {
        Error::storage(
            format!("reading the metadata of s3://{bucket}/{key}"),
            format!("S3 answered without {what}"),
        )
    };
    let size = size
        .and_then(|s| u64::try_from(s).ok())
        .ok_or_else(|| missing("a size"))?;
    let etag = etag
        .map(ETag::new)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| missing("an ETag"))?;
    let last_modified = last_modified
        .and_then(|t| OffsetDateTime::from_unix_timestamp_nanos(t.as_nanos()).ok())
        .ok_or_else(|| missing("a last-modified time"))?;
    Ok(ObjectMeta {
        key: key.to_owned(),
        size,
        etag,
        last_modified,
        metadata: Metadata::new(),
    })
}

/// The port's metadata as the SDK sends it (`None` sends no `x-amz-meta-*` header).
fn sdk_metadata(metadata: &Metadata) -> Option<std::collections::HashMap<String, String>> {
    (!metadata.is_empty()).then(|| metadata.clone().into_iter().collect())
}

/// The user metadata a HeadObject or GetObject answered, as the port holds it. S3 answers
/// names lowercased; the port only accepts lowercase ones, so they match what was put.
fn port_metadata(sdk: Option<&std::collections::HashMap<String, String>>) -> Metadata {
    sdk.map(|m| {
        m.iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
            .collect()
    })
    .unwrap_or_default()
}

fn required_etag(etag: Option<&str>, doing: &str, bucket: &str, key: &str) -> Result<ETag> {
    etag.map(ETag::new)
        .filter(|e| !e.is_empty())
        .ok_or_else(|| {
            Error::storage(
                format!("{doing} s3://{bucket}/{key}"),
                "S3 answered without an ETag",
            )
        })
}

/// When a write was acknowledged, on this machine's clock: PutObject and
/// CompleteMultipartUpload do not answer the object's Last-Modified, and a HEAD to learn it
/// would cost a call and could see a later version.
fn written_now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// Keys S3 cannot hold are refused before a call (an empty key would address the bucket).
fn check_key(key: &str) -> Result<()> {
    let rule = if key.is_empty() {
        "must not be empty"
    } else if key.len() > MAX_KEY_BYTES {
        "must be at most 1024 bytes"
    } else {
        return Ok(());
    };
    Err(Error::InvalidKey {
        key: key.to_owned(),
        rule,
    })
}

/// What an S3 error means to the port.
enum Fault {
    /// No such key (or a bare 404).
    NotFound,
    /// No such bucket.
    NoSuchBucket,
    /// A condition failed: 412 PreconditionFailed, or 409 ConditionalRequestConflict (another
    /// conditional write of the key was in progress).
    Precondition,
    /// S3 will not hand over this object, for a reason about the object: 403 (access denied,
    /// a storage class that keeps it from being read), `InvalidObjectState`, a KMS refusal.
    /// Not the 403s that say our own credentials or clock are wrong: those are ours.
    Refused,
    /// Anything else.
    Other,
}

/// 403 codes about the caller's credentials or clock, not about the object: every read would
/// fail the same, so they are faults of ours, held and retried, never a buyer's answer.
const CREDENTIAL_CODES: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "RequestTimeTooSkewed",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
];

fn classify<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> Fault {
    match err.code() {
        Some("NoSuchBucket") => return Fault::NoSuchBucket,
        Some("NoSuchKey" | "NotFound") => return Fault::NotFound,
        Some("PreconditionFailed" | "ConditionalRequestConflict") => return Fault::Precondition,
        Some("InvalidObjectState") => return Fault::Refused,
        Some(code) if code.starts_with("KMS.") => return Fault::Refused,
        Some(code) if CREDENTIAL_CODES.contains(&code) => return Fault::Other,
        _ => {}
    }
    // HEAD answers carry no error code: the status says it.
    match err.raw_response().map(|r| r.status().as_u16()) {
        Some(404) => Fault::NotFound,
        Some(412) => Fault::Precondition,
        Some(403) => Fault::Refused,
        _ => Fault::Other,
    }
}

/// A failed read or delete as a port error.
fn read_error<E>(err: SdkError<E, HttpResponse>, doing: &str, bucket: &str, key: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match classify(&err) {
        Fault::NotFound => Error::NotFound {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        },
        Fault::Refused => Error::Unreadable {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            why: refusal(&err),
        },
        _ => bucket_error(err, &format!("{doing} s3://{bucket}/{key}"), bucket),
    }
}

/// What S3 answered, in a line a buyer can act on: status, code and message.
fn refusal<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> String {
    let status = err
        .raw_response()
        .map(|r| r.status().as_u16().to_string())
        .unwrap_or_else(|| "an error".to_owned());
    match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("S3 answered {status} {code}: {message}"),
        (Some(code), None) => format!("S3 answered {status} {code}"),
        _ => format!("S3 answered {status}"),
    }
}

/// A failed body read: a checksum that does not match is the object's (S3 would send the same
/// bytes again); anything else is a fault of the connection, ours to retry.
fn body_error(e: std::io::Error, bucket: &str, key: &str) -> Error {
    let text = DisplayErrorContext(&e).to_string();
    if text.to_ascii_lowercase().contains("checksum mismatch") {
        return Error::Unreadable {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            why: format!("its body does not match its checksum: {text}"),
        };
    }
    storage_error(format!("reading the body of s3://{bucket}/{key}"), e)
}

/// A failed write as a port error: a failed create-new condition is `AlreadyExists`.
fn write_error<E>(err: SdkError<E, HttpResponse>, doing: &str, bucket: &str, key: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match classify(&err) {
        Fault::Precondition => Error::AlreadyExists {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        },
        _ => bucket_error(err, &format!("{doing} s3://{bucket}/{key}"), bucket),
    }
}

/// A fault of S3 as a storage error, saying so plainly when the bucket does not exist.
fn bucket_error<E>(err: SdkError<E, HttpResponse>, context: &str, bucket: &str) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match classify(&err) {
        Fault::NoSuchBucket => Error::storage(
            context,
            format!(
                "bucket {bucket:?} does not exist (or is in another account or region): {}",
                DisplayErrorContext(&err)
            ),
        ),
        _ => storage_error(context, err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_s3_cannot_hold_are_invalid() {
        assert!(matches!(check_key(""), Err(Error::InvalidKey { .. })));
        assert!(matches!(
            check_key(&"k".repeat(1025)),
            Err(Error::InvalidKey { .. })
        ));
        assert!(check_key(&"k".repeat(1024)).is_ok());
        assert!(check_key("../odd but legal on S3").is_ok());
    }

    #[test]
    fn no_metadata_sends_no_header_and_names_come_back_lowercase() {
        assert_eq!(sdk_metadata(&Metadata::new()), None);
        let metadata = Metadata::from([("sealbox-usage".to_owned(), "{}".to_owned())]);
        let sent = sdk_metadata(&metadata).unwrap();
        assert_eq!(port_metadata(Some(&sent)), metadata);
        let answered =
            std::collections::HashMap::from([("Sealbox-Usage".to_owned(), "{}".to_owned())]);
        assert_eq!(port_metadata(Some(&answered)), metadata);
        assert!(port_metadata(None).is_empty());
    }
}
