//! The inbox event: an object landed in the inbox.

use super::*;
use crate::etag::ETag;

/// An inbox event: an object landed in the inbox (what S3 sends to the `inbox-events` queue).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboxEvent {
    /// Bucket name.
    pub bucket: String,
    /// Object key, decoded.
    pub key: String,
    /// ETag of the version that was written.
    pub etag: ETag,
    /// Size in bytes.
    pub size: u64,
    /// When it was written.
    #[serde(with = "time::serde::rfc3339")]
    pub event_time: OffsetDateTime,
}
