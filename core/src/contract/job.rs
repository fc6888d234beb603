//! The job message ingest enqueues and the worker runs.

use super::*;
use crate::etag::ETag;

/// Largest job message that carries its inline input ([`InputRef::Carried`]): SQS bills each
/// 64 KiB of a message as one request, so a larger input is read from the request object instead.
pub const MAX_CARRYING_JOB_BYTES: usize = 64 * 1024;

/// Where the worker finds the input of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum InputRef {
    /// Inline in the request object (re-read by the worker, pinned by the job's ETag).
    Inline,
    /// Inline, carried in the job message itself: the bytes ingest authorized, so the worker
    /// reads nothing before invoking. Exactly one of the two members is set.
    Carried {
        /// The input, when it is UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        text: Option<String>,
        /// The input in standard base64, when it is not UTF-8.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base64: Option<String>,
    },
    /// An input object in the inbox.
    Object {
        /// Its key.
        key: String,
    },
}

impl InputRef {
    /// The input carried in a job: as text when it is UTF-8, else as base64.
    pub fn carried(bytes: Vec<u8>) -> InputRef {
        match String::from_utf8(bytes) {
            Ok(text) => InputRef::Carried {
                text: Some(text),
                base64: None,
            },
            Err(e) => InputRef::Carried {
                text: None,
                base64: Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
            },
        }
    }

    /// The bytes of a carried input: `None` for the other kinds, an error naming what is wrong
    /// for a carried input that is not exactly one valid member.
    pub fn carried_bytes(&self) -> Option<Result<Vec<u8>, String>> {
        let InputRef::Carried { text, base64 } = self else {
            return None;
        };
        Some(match (text, base64) {
            (Some(t), None) => Ok(t.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| format!("the carried input is not standard base64: {e}")),
            _ => Err("a carried input holds exactly one of text and base64".to_owned()),
        })
    }

    /// Whether the input is inline in the request (read from it or carried in the job).
    pub fn is_inline(&self) -> bool {
        matches!(self, InputRef::Inline | InputRef::Carried { .. })
    }
}

/// A job on the `jobs` queue: one accepted request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobMessage {
    /// Contract version (1).
    pub version: u32,
    /// Unique per job message (every send of ingest makes a new one): the owner named in the
    /// request's claim. A redelivery carries the same id, so it still owns the claim. Empty in
    /// messages of older builds; [`JobMessage::owner`] then derives one from the message.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub job_id: String,
    /// Buyer id.
    pub buyer: String,
    /// Request id.
    pub request_id: String,
    /// Key of the request object in the inbox.
    pub request_key: String,
    /// ETag of the request object that was authorized.
    pub request_etag: ETag,
    /// Where the input is.
    pub input: InputRef,
    /// Input MIME type.
    pub content_type: String,
    /// Output MIME type.
    pub accept: String,
    /// Custom attributes for the endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub custom_attributes: Option<String>,
    /// Split mode.
    #[serde(default)]
    pub split: Split,
    /// When the request object landed in the inbox.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// When ingest accepted it.
    #[serde(with = "time::serde::rfc3339")]
    pub accepted_at: OffsetDateTime,
    /// After this the job fails with `deadline_exceeded`.
    #[serde(with = "time::serde::rfc3339")]
    pub deadline: OffsetDateTime,
}

impl JobMessage {
    /// A fresh random job id (128 bits, hex).
    pub fn new_job_id() -> String {
        let mut bytes = [0u8; 16];
        // The system's random source does not fail on Linux once booted; a fixed fallback
        // only costs uniqueness, which the time below restores.
        if aws_lc_rs::rand::fill(&mut bytes).is_err() {
            let t = OffsetDateTime::now_utc()
                .unix_timestamp_nanos()
                .to_le_bytes();
            bytes.copy_from_slice(&t);
        }
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The job id of the `index`-th event of the queue message `message_id`: the same on every
    /// delivery of that message (128 bits of a SHA-256, hex). For a job run straight from its
    /// inbox event, so that a rerun of the event after a crash still owns the claim it made.
    pub fn job_id_for_event(message_id: &str, index: usize) -> String {
        let seed = format!("{message_id}#{index}");
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
        d.as_ref()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The owner this job names in a claim: `job:<job_id>`.
    pub fn owner(&self) -> String {
        if self.job_id.is_empty() {
            // A message of an older build: stable across its redeliveries all the same.
            let seed = format!(
                "{}|{}|{}",
                self.request_key,
                self.request_etag,
                rfc3339(self.accepted_at)
            );
            let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, seed.as_bytes());
            let h: String = d.as_ref()[..16]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            return format!("job:{h}");
        }
        format!("job:{}", self.job_id)
    }
}
