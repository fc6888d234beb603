//! What arrives on the inbox-events queue, decoded into [`InboxEvent`]s: S3 event notifications
//! (through SQS, through SNS and SQS, or handed to the function directly) and the embedded
//! watcher's own event documents. Parsed leniently with the project's own types, since
//! `aws_lambda_events::S3Event` refuses the `s3:TestEvent` S3 sends when a notification is
//! configured, and records without `userIdentity`.

use serde::Deserialize;
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use sealbox_core::contract::InboxEvent;
use sealbox_core::etag::ETag;
use sealbox_core::layout::decode_event_key;

/// A decoded inbox message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InboxMessage {
    /// Objects written to the inbox (usually one; S3 may put several records in a message).
    Events(Vec<InboxEvent>),
    /// S3's `s3:TestEvent`, sent once when a notification is configured: acknowledged, dropped.
    Test,
}

/// Why a message is not an inbox message (permanent: the same body never decodes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is not JSON.
    #[error("the inbox message is not JSON: {0}")]
    NotJson(String),
    /// The body is JSON but neither an S3 event notification nor an inbox event.
    #[error("the inbox message is not an S3 event notification: {0}")]
    NotAnEvent(String),
}

#[derive(Deserialize)]
struct Record {
    #[serde(rename = "eventName", default)]
    event_name: String,
    #[serde(rename = "eventTime", default)]
    event_time: Option<String>,
    s3: S3Entity,
}

#[derive(Deserialize)]
struct S3Entity {
    bucket: Bucket,
    object: Object,
}

#[derive(Deserialize)]
struct Bucket {
    name: String,
}

#[derive(Deserialize)]
struct Object {
    key: String,
    #[serde(default)]
    size: u64,
    #[serde(rename = "eTag", default)]
    etag: String,
}

/// Decodes one message body of the inbox-events queue.
pub fn decode(body: &str) -> Result<InboxMessage, DecodeError> {
    let value: Value =
        serde_json::from_str(body).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    decode_value(&value)
}

/// Decodes an inbox message already parsed as JSON (a direct S3 invocation's payload).
pub fn decode_value(value: &Value) -> Result<InboxMessage, DecodeError> {
    // S3 -> SNS -> SQS wraps the notification in an SNS envelope.
    if value.get("Type").and_then(Value::as_str) == Some("Notification")
        && let Some(inner) = value.get("Message").and_then(Value::as_str)
    {
        return decode(inner);
    }
    if value.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Ok(InboxMessage::Test);
    }
    if let Some(records) = value.get("Records").and_then(Value::as_array) {
        let mut events = Vec::with_capacity(records.len());
        for (i, r) in records.iter().enumerate() {
            let record: Record = serde_json::from_value(r.clone())
                .map_err(|e| DecodeError::NotAnEvent(format!("record {i}: {e}")))?;
            // Only writes are requests; removals and the like say nothing to ingest.
            if !record.event_name.starts_with("ObjectCreated:") {
                continue;
            }
            events.push(InboxEvent {
                bucket: record.s3.bucket.name,
                key: form_decode(&record.s3.object.key)?,
                etag: ETag::new(&record.s3.object.etag),
                size: record.s3.object.size,
                event_time: record
                    .event_time
                    .and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok())
                    .unwrap_or_else(OffsetDateTime::now_utc),
            });
        }
        return Ok(InboxMessage::Events(events));
    }
    serde_json::from_value::<InboxEvent>(value.clone())
        .map(|e| InboxMessage::Events(vec![e]))
        .map_err(|e| DecodeError::NotAnEvent(e.to_string()))
}

/// S3 event notifications carry keys form-encoded: `+` is a space, `%2B` a plus.
fn form_decode(key: &str) -> Result<String, DecodeError> {
    decode_event_key(key)
        .ok_or_else(|| DecodeError::NotAnEvent(format!("key {key:?} is not form-encoded UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as S3 sends it through SQS (trimmed of nothing but the ids).
    const S3_PUT: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","awsRegion":"us-east-1",
        "eventTime":"2026-11-26T12:00:00.123Z","eventName":"ObjectCreated:Put",
        "userIdentity":{"principalId":"AWS:EXAMPLE"},"requestParameters":{"sourceIPAddress":"127.0.0.1"},
        "responseElements":{"x-amz-request-id":"R","x-amz-id-2":"I"},
        "s3":{"s3SchemaVersion":"1.0","configurationId":"inbox","bucket":{"name":"inbox","ownerIdentity":{"principalId":"P"},"arn":"arn:aws:s3:::inbox"},
        "object":{"key":"111122223333/requests/a+b%2Bc%C3%A9.json","size":42,"eTag":"0123abcd","sequencer":"0055AED6DCD90281E5"}}}]}"#;

    #[test]
    fn an_s3_put_notification_becomes_one_event_with_the_key_form_decoded() {
        let m = decode(S3_PUT);
        let Ok(InboxMessage::Events(events)) = m else {
            panic!("{m:?}")
        };
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].bucket, "inbox");
        assert_eq!(events[0].key, "111122223333/requests/a b+cé.json");
        assert_eq!(events[0].size, 42);
        assert_eq!(events[0].etag, "0123abcd");
        assert_eq!(events[0].event_time.unix_timestamp(), 1_795_694_400);
    }

    #[test]
    fn a_record_without_user_identity_or_size_is_still_an_event() {
        let body = r#"{"Records":[{"eventName":"ObjectCreated:CompleteMultipartUpload",
            "s3":{"bucket":{"name":"inbox"},"object":{"key":"b/requests/x.json"}}}]}"#;
        let Ok(InboxMessage::Events(events)) = decode(body) else {
            panic!("not decoded")
        };
        assert_eq!(events[0].key, "b/requests/x.json");
        assert_eq!((events[0].size, events[0].etag.as_str()), (0, ""));
    }

    #[test]
    fn the_test_event_s3_sends_on_configuration_is_recognised() {
        let body = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-11-26T12:00:00.000Z",
            "Bucket":"inbox","RequestId":"R","HostId":"H"}"#;
        assert_eq!(decode(body), Ok(InboxMessage::Test));
    }

    #[test]
    fn removals_are_not_requests() {
        let body = r#"{"Records":[{"eventName":"ObjectRemoved:Delete",
            "s3":{"bucket":{"name":"inbox"},"object":{"key":"b/requests/x.json"}}}]}"#;
        assert_eq!(decode(body), Ok(InboxMessage::Events(Vec::new())));
    }

    #[test]
    fn a_notification_inside_an_sns_envelope_is_unwrapped() {
        let envelope = serde_json::json!({"Type": "Notification", "Message": S3_PUT});
        let Ok(InboxMessage::Events(events)) = decode(&envelope.to_string()) else {
            panic!("not decoded")
        };
        assert_eq!(events.len(), 1);
    }

    #[test]
    fn the_embedded_watchers_event_documents_decode_too() {
        let ev = InboxEvent {
            bucket: "inbox".into(),
            key: "b/requests/x.json".into(),
            etag: "e".into(),
            size: 3,
            event_time: OffsetDateTime::UNIX_EPOCH,
        };
        let body = serde_json::to_string(&ev).unwrap_or_default();
        assert_eq!(decode(&body), Ok(InboxMessage::Events(vec![ev])));
    }

    #[test]
    fn garbage_is_refused_with_its_reason() {
        assert!(matches!(decode("{not json"), Err(DecodeError::NotJson(_))));
        assert!(matches!(
            decode(r#"{"a":1}"#),
            Err(DecodeError::NotAnEvent(_))
        ));
        assert!(matches!(
            decode(r#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#),
            Err(DecodeError::NotAnEvent(_))
        ));
    }
}
