//! What downstream systems are told of each outcome, and its stable event id.

use super::*;

/// The kind of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    /// A result object was written.
    InferenceCompleted,
    /// A failure document was written.
    InferenceFailed,
    /// A rejection document was written.
    RequestRejected,
    /// Sent when a subscription is set up.
    TestNotification,
}

impl EventKind {
    /// The name as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::InferenceCompleted => "InferenceCompleted",
            EventKind::InferenceFailed => "InferenceFailed",
            EventKind::RequestRejected => "RequestRejected",
            EventKind::TestNotification => "TestNotification",
        }
    }
}

/// A notification to downstream systems (SNS message JSON; one line of `events.ndjson`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// Contract version (1).
    pub version: u32,
    /// Stable per outcome: a repeat of the same outcome carries the same id.
    pub event_id: String,
    /// What happened.
    pub event: EventKind,
    /// Buyer id.
    pub buyer: String,
    /// Request id.
    pub request_id: String,
    /// `s3://bucket/key` of the result, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_location: Option<String>,
    /// `s3://bucket/key` of the failure or rejection document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_location: Option<String>,
    /// MIME type of the object at the location.
    pub content_type: String,
    /// Size of the object at the location.
    pub bytes: u64,
    /// When the request object landed.
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// When the outcome was written.
    #[serde(with = "time::serde::rfc3339")]
    pub completed_at: OffsetDateTime,
    /// Deliveries of the job it took (0 for rejections).
    pub attempts: u32,
    /// Reason code, on failures and rejections.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// What the request used of the endpoint (absent for rejections, failures that never
    /// invoked it, and outcomes of older builds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

/// The stable event id of the single outcome of (buyer, request_id).
pub fn event_id(buyer: &str, request_id: &str) -> String {
    let d = aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        format!("sealbox/v1/{buyer}/{request_id}").as_bytes(),
    );
    let h: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}
