//! The outcome documents (rejection and failure) and the usage each outcome carries.

use super::*;

/// What one request used of the model endpoint, summed over all its invocations (every batch
/// of a split input): what a buyer reconciles the AWS Marketplace bill against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Endpoint calls made, retried calls included.
    pub invocations: u32,
    /// Records scored: the `ConsumedUnits` each successful answer metered, or 1 for an answer
    /// that metered nothing (AWS Marketplace bills one unit per successful answer by default).
    pub records: u64,
    /// True when every successful answer metered its units, so `records` is what the model
    /// metered; false when some answer was counted as 1.
    pub metered: bool,
    /// Payload bytes sent, over every call.
    pub bytes_in: u64,
    /// Bytes answered by successful calls.
    pub bytes_out: u64,
    /// Milliseconds spent inside endpoint calls.
    pub model_ms: u64,
}

impl Usage {
    /// Nothing used yet: no answer has gone unmetered.
    pub fn none() -> Usage {
        Usage {
            metered: true,
            ..Usage::default()
        }
    }

    /// Adds `other` (another request's usage, for totals).
    pub fn add(&mut self, other: &Usage) {
        self.invocations = self.invocations.saturating_add(other.invocations);
        self.records = self.records.saturating_add(other.records);
        self.metered &= other.metered;
        self.bytes_in = self.bytes_in.saturating_add(other.bytes_in);
        self.bytes_out = self.bytes_out.saturating_add(other.bytes_out);
        self.model_ms = self.model_ms.saturating_add(other.model_ms);
    }
}

/// The user metadata name under which a result object carries its request's [`Usage`]
/// (on S3 the header `x-amz-meta-sealbox-usage`), as compact JSON: the result and its usage
/// are one write, so there is no usage without its result nor a result without its usage.
pub const USAGE_METADATA: &str = "sealbox-usage";

impl Usage {
    /// The result object's metadata carrying this usage.
    pub fn to_metadata(&self) -> Result<Metadata, serde_json::Error> {
        Ok(Metadata::from([(
            USAGE_METADATA.to_owned(),
            serde_json::to_string(self)?,
        )]))
    }

    /// The usage a result object's metadata carries: `None` for results written without it
    /// (older builds), an error for a value that is not a usage.
    pub fn from_metadata(metadata: &Metadata) -> Result<Option<Usage>, serde_json::Error> {
        metadata
            .get(USAGE_METADATA)
            .map(|v| serde_json::from_str(v))
            .transpose()
    }
}

/// Which kind of outcome document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutcomeKind {
    /// Refused by ingest (under `rejected/`).
    Rejected,
    /// Failed in the worker (under `failed/`).
    Failed,
}

/// A rejection or failure document (what `rejected/` and `failed/` hold).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeDocument {
    /// Contract version (1).
    pub version: u32,
    /// Buyer id.
    pub buyer: String,
    /// Request id (the object name when the request id itself was unusable).
    pub request_id: String,
    /// Rejected by ingest or failed in the worker.
    pub outcome: OutcomeKind,
    /// Reason code.
    pub reason: Reason,
    /// The field that broke a rule, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// What went wrong, in words.
    pub message: String,
    /// What to do about it, in one line ([`Reason::hint`]); absent in documents of older builds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Key of the request object.
    pub request_key: String,
    /// Deliveries of the job (0 for rejections).
    pub attempts: u32,
    /// When the request object landed.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// When this document was written.
    #[serde(with = "time::serde::rfc3339")]
    pub decided_at: OffsetDateTime,
    /// What the request used of the endpoint before it failed (absent when it never invoked
    /// it, in rejections, and in documents of older builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

impl OutcomeDocument {
    /// A document decided now.
    pub fn new(
        outcome: OutcomeKind,
        buyer: &str,
        request_id: &str,
        request_key: &str,
        violation: &Violation,
    ) -> Self {
        OutcomeDocument {
            version: CONTRACT_VERSION,
            buyer: buyer.to_owned(),
            request_id: request_id.to_owned(),
            outcome,
            reason: violation.reason,
            field: Some(violation.field.clone()).filter(|f| !f.is_empty()),
            message: violation.rule.clone(),
            hint: Some(violation.reason.hint().to_owned()),
            request_key: request_key.to_owned(),
            attempts: 0,
            received_at: OffsetDateTime::now_utc(),
            decided_at: OffsetDateTime::now_utc(),
            usage: None,
        }
    }
}
