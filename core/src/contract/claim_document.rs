//! The claim document: who owns a request, decided once.

use super::*;
use crate::etag::ETag;

/// The claim of a request id (`<buyer>/claims/<request_id>.json` in the outbox), created with
/// create-new (`If-None-Match: *`) before any outcome of the request is written: whoever
/// created it owns the request and is the only one that writes its outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClaimDocument {
    /// Contract version (1).
    pub version: u32,
    /// Buyer id.
    pub buyer: String,
    /// Request id (the object name when the request id itself was unusable).
    pub request_id: String,
    /// Who owns it: `job:<job_id>` (a job and its redeliveries) or `ingest:<etag>` (ingest
    /// rejecting that version of the request object).
    pub owner: String,
    /// ETag of the request object version the owner answers.
    pub request_etag: ETag,
    /// When the claim was made.
    #[serde(with = "time::serde::rfc3339")]
    pub claimed_at: OffsetDateTime,
    /// An ingest claim carries its whole rejection, so anyone who finds the claim without the
    /// document (the owner died in between) can finish writing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<OutcomeDocument>,
}
