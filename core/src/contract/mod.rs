//! Wire contract v1: everything that crosses a process or account boundary, one file a concept:
//! the request object and its strict reader (`request`), the reason codes (`reasons`), the job
//! message (`job`), the inbox event (`inbox_event`), the claim document (`claim_document`),
//! notifications (`notification`), outcome documents and usage (`outcome_document`) and the
//! token's claims (`token_claims`). All are re-exported here: `sealbox_core::contract::X`.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::ports::object_store::Metadata;

mod claim_document;
mod inbox_event;
mod job;
mod notification;
mod outcome_document;
mod reasons;
mod request;
#[cfg(test)]
mod tests;
mod token_claims;

pub use claim_document::*;
pub use inbox_event::*;
pub use job::*;
pub use notification::*;
pub use outcome_document::*;
pub use reasons::*;
pub use request::*;
pub use token_claims::*;

/// The only contract version this build speaks.
pub const CONTRACT_VERSION: u32 = 1;
/// Largest request object accepted (1 MiB).
pub const MAX_REQUEST_OBJECT_BYTES: u64 = 1024 * 1024;
/// Largest inline input (`text` or decoded `base64`) accepted inside a request object.
pub const MAX_INLINE_INPUT_BYTES: usize = 256 * 1024;
/// Default endpoint payload limit (SageMaker real-time endpoints accept 6 MB).
pub const DEFAULT_PAYLOAD_LIMIT: u64 = 6 * 1000 * 1000;
/// Longest `custom_attributes` value (SageMaker's limit).
pub const MAX_CUSTOM_ATTRIBUTES: usize = 1024;
/// Smallest and largest `ttl_seconds`, and the default.
pub const TTL_RANGE: std::ops::RangeInclusive<u32> = 60..=21_600;
/// Default time to live of a request, in seconds.
pub const DEFAULT_TTL_SECONDS: u32 = 21_600;
/// Longest `request_id` and buyer id.
pub const MAX_ID_LEN: usize = 64;

/// True if `id` is 1-64 characters of `[A-Za-z0-9._-]` and not `.` or `..`.
pub fn is_valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Formats an RFC 3339 timestamp (UTC).
pub fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}
