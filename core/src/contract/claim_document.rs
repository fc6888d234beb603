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
    #[serde(deserialize_with = "owner_in_one_form")]
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

/// An owner as read: an `ingest:` owner's ETag in its one form. The file store's tags were
/// quoted before [`ETag`] (2026-12-07), so a claim an earlier version made still names the
/// owner that version of the request object has now.
fn owner_in_one_form<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let owner = String::deserialize(d)?;
    Ok(match owner.strip_prefix("ingest:") {
        Some(etag) => format!("ingest:{}", ETag::new(etag)),
        None => owner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ingest_owner_with_a_quoted_etag_reads_in_the_one_form() {
        let json = r#"{"version":1,"buyer":"b","request_id":"r","owner":"ingest:\"1-2-3\"","request_etag":"\"1-2-3\"","claimed_at":"2026-12-01T00:00:00Z"}"#;
        let claim: ClaimDocument = serde_json::from_str(json).unwrap();
        assert_eq!(claim.owner, "ingest:1-2-3");
        assert_eq!(claim.request_etag, "1-2-3");
        let job = json.replace(r#"ingest:\"1-2-3\""#, "job:j1");
        let claim: ClaimDocument = serde_json::from_str(&job).unwrap();
        assert_eq!(claim.owner, "job:j1");
    }
}
