//! What the Lambda functions share, over plain types (the runtime itself lives in the function
//! packages): settling an SQS batch into a partial batch response, and CloudWatch Embedded
//! Metric Format lines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sealbox_core::ports::QueueConsumer;
use serde_json::{Map, Value, json};

/// One message of an SQS batch, as the glue sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMessage {
    /// The SQS message id (the `itemIdentifier` of a batch item failure).
    pub message_id: String,
    /// For changing its visibility.
    pub receipt_handle: String,
    /// The body.
    pub body: String,
    /// `ApproximateReceiveCount`, this receive included.
    pub receive_count: u32,
}

impl BatchMessage {
    /// A record of an SQS event, from its fields as the event carries them (the
    /// `ApproximateReceiveCount` attribute counts this receive; absent, it is the first).
    pub fn from_record(
        message_id: Option<String>,
        receipt_handle: Option<String>,
        body: Option<String>,
        attributes: &std::collections::HashMap<String, String>,
    ) -> BatchMessage {
        BatchMessage {
            message_id: message_id.unwrap_or_default(),
            receipt_handle: receipt_handle.unwrap_or_default(),
            body: body.unwrap_or_default(),
            receive_count: attributes
                .get("ApproximateReceiveCount")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1),
        }
    }
}

/// What becomes of one message of a batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Handled: the event source mapping deletes it.
    Done,
    /// Failed for now: comes back after this delay (its visibility is changed so).
    RetryAfter(Duration),
    /// Cannot be handled by anyone: left to the queue's redrive policy (dead letters).
    Leave,
}

/// Settles a batch: changes the visibility of the messages to retry, and returns the ids to
/// report as `batchItemFailures` (everything not done), so one bad message never fails its
/// neighbours.
pub async fn settle(
    queue: &dyn QueueConsumer,
    outcomes: &[(BatchMessage, Disposition)],
) -> Vec<String> {
    let mut failures = Vec::new();
    for (m, d) in outcomes {
        match d {
            Disposition::Done => {}
            Disposition::RetryAfter(delay) => {
                if let Err(e) = queue.change_visibility(&m.receipt_handle, *delay).await {
                    // The queue's own visibility timeout brings it back instead.
                    tracing::warn!(message_id = %m.message_id, error = %e, "could not delay a message to retry");
                }
                failures.push(m.message_id.clone());
            }
            Disposition::Leave => failures.push(m.message_id.clone()),
        }
    }
    failures
}

/// The partial batch response Lambda expects, `{"batchItemFailures":[{"itemIdentifier":..}]}`.
pub fn batch_response(failures: &[String]) -> Value {
    json!({
        "batchItemFailures": failures
            .iter()
            .map(|id| json!({ "itemIdentifier": id }))
            .collect::<Vec<_>>()
    })
}

/// A metric value and its CloudWatch unit (`Count`, `Milliseconds`).
#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: f64,
    /// Its unit.
    pub unit: &'static str,
}

impl Metric {
    /// A count.
    pub fn count(name: impl Into<String>, value: u64) -> Metric {
        Metric {
            name: name.into(),
            value: value as f64,
            unit: "Count",
        }
    }

    /// A duration in milliseconds.
    pub fn millis(name: impl Into<String>, d: Duration) -> Metric {
        Metric {
            name: name.into(),
            value: d.as_secs_f64() * 1e3,
            unit: "Milliseconds",
        }
    }
}

/// Logs JSON lines to stdout (`RUST_LOG` filters, default `info`); the Lambda runtime's span
/// carries the invocation's request id onto every line.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(true)
        .without_time()
        .init();
}

/// Namespace of the project's metrics.
pub const METRICS_NAMESPACE: &str = "sealbox";

/// One Embedded Metric Format document: `metrics` under namespace `sealbox` with the dimensions
/// `Function` and, if given, `extra` (e.g. `Reason`). CloudWatch Logs turns the line into metrics.
pub fn emf(function: &str, extra: Option<(&str, &str)>, metrics: &[Metric]) -> Value {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    let mut dims = vec!["Function"];
    let mut doc = Map::new();
    doc.insert("Function".into(), json!(function));
    if let Some((k, v)) = extra {
        dims.push(k);
        doc.insert(k.into(), json!(v));
    }
    for m in metrics {
        doc.insert(m.name.clone(), json!(m.value));
    }
    doc.insert(
        "_aws".into(),
        json!({
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": METRICS_NAMESPACE,
                "Dimensions": [dims],
                "Metrics": metrics.iter().map(|m| json!({"Name": m.name, "Unit": m.unit})).collect::<Vec<_>>(),
            }],
        }),
    );
    Value::Object(doc)
}

/// Writes EMF documents to stdout, one line each, where the Lambda service sends them to
/// CloudWatch Logs (metrics without any API call).
pub fn emit(docs: &[Value]) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    for d in docs {
        let _ = writeln!(out, "{d}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_response_names_each_failed_message() {
        let v = batch_response(&["a".into(), "b".into()]);
        assert_eq!(
            v,
            json!({"batchItemFailures": [{"itemIdentifier": "a"}, {"itemIdentifier": "b"}]})
        );
        assert_eq!(batch_response(&[]), json!({"batchItemFailures": []}));
    }

    #[test]
    fn an_emf_document_declares_its_metrics_and_dimensions() {
        let d = emf(
            "ingest",
            Some(("Reason", "token_expired")),
            &[Metric::count("Rejected", 2)],
        );
        assert_eq!(d["Function"], "ingest");
        assert_eq!(d["Reason"], "token_expired");
        assert_eq!(d["Rejected"], 2.0);
        let cw = &d["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cw["Namespace"], "sealbox");
        assert_eq!(cw["Dimensions"], json!([["Function", "Reason"]]));
        assert_eq!(
            cw["Metrics"],
            json!([{"Name": "Rejected", "Unit": "Count"}])
        );
        assert!(d["_aws"]["Timestamp"].as_u64().is_some_and(|t| t > 0));
    }
}
