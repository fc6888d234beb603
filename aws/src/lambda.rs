//! What the Lambda functions share: the one SQS batch runner every SQS-driven function's `main`
//! calls ([`run_sqs_batch`], with the runtime under the feature `lambda`), and CloudWatch
//! Embedded Metric Format lines.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use sealbox_core::ports::{QueueConsumer, ReceivedMessage};
use sealbox_core::queue_handler::{Disposition, Metric as HandlerMetric, QueueHandler};
use serde_json::{Map, Value, json};

/// Runs `handler` as the Lambda function `function` of an SQS event source mapping, in the
/// style of the runtime's partial-batch example: each batch is handed over whole, every message
/// not done has its visibility set to its delay and is reported in the typed
/// [`SqsBatchResponse`], and the messages' metrics are written as EMF lines. A message to hold
/// is given back after its `otherwise` delay: an invocation cannot wait out an outage.
///
/// An event that is not an SQS batch (S3 invoking the function directly) is handed over as one
/// message whose body is the event; unless it is done, the invocation fails, so that Lambda
/// retries it.
#[cfg(feature = "lambda")]
pub async fn run_sqs_batch(
    function: &'static str,
    queue: std::sync::Arc<dyn QueueConsumer>,
    handler: std::sync::Arc<dyn QueueHandler>,
    calls: crate::sdk::CallCounter,
) -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<Value>| {
            let (queue, handler, calls) = (queue.clone(), handler.clone(), calls.clone());
            async move {
                let left = event
                    .context
                    .deadline()
                    .duration_since(SystemTime::now())
                    .unwrap_or_default()
                    .saturating_sub(DEADLINE_MARGIN);
                let deadline = tokio::time::Instant::now() + left;
                let before = calls.snapshot();
                let (queue, handler) = (queue.as_ref(), handler.as_ref());
                let answer = handle_event(function, queue, handler, event.payload, deadline).await;
                log_calls(&before, &calls.snapshot());
                answer.map_err(lambda_runtime::Error::from)
            }
        },
    ))
    .await
}

/// Logs the AWS calls one invocation made, by operation (`aws_calls`, a JSON object): what the
/// invocation cost beyond the Lambda service's own receives and deletes (`sealbox bench`'s
/// deployed-path figures read these lines).
pub fn log_calls(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) {
    let delta: Map<String, Value> = after
        .iter()
        .filter_map(|(op, n)| {
            let d = n.saturating_sub(before.get(op).copied().unwrap_or(0));
            (d > 0).then(|| (op.clone(), json!(d)))
        })
        .collect();
    let delta = Value::Object(delta).to_string();
    tracing::info!(aws_calls = %delta, "aws calls of this invocation");
}

/// Kept back from an invocation's deadline to settle its batch and answer.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

/// Why an invocation failed as a whole (Lambda retries it).
#[derive(Debug, thiserror::Error)]
pub enum InvocationError {
    /// The event is not JSON an SQS batch has.
    #[error("not an SQS event: {0}")]
    NotAnSqsEvent(String),
    /// A direct invocation's event was not handled: Lambda retries it.
    #[error("the event was not handled ({0:?}); Lambda retries it")]
    NotDone(Disposition),
}

/// One invocation of [`run_sqs_batch`], apart from the runtime.
pub async fn handle_event(
    function: &str,
    queue: &dyn QueueConsumer,
    handler: &dyn QueueHandler,
    payload: Value,
    deadline: tokio::time::Instant,
) -> Result<SqsBatchResponse, InvocationError> {
    let started = std::time::Instant::now();
    let source = payload
        .get("Records")
        .and_then(|r| r.get(0))
        .and_then(|r| r.get("eventSource"))
        .and_then(Value::as_str);
    let direct = source.is_some_and(|s| s != "aws:sqs");
    let messages: Vec<ReceivedMessage> = if direct {
        vec![ReceivedMessage {
            message_id: "direct-invocation".into(),
            body: payload.to_string(),
            receipt_handle: String::new(),
            receive_count: 1,
            sent_at: SystemTime::now(),
        }]
    } else {
        let event: SqsEvent = serde_json::from_value(payload)
            .map_err(|e| InvocationError::NotAnSqsEvent(e.to_string()))?;
        event.records.into_iter().map(received).collect()
    };
    let answers = handler.handle(&messages, Some(deadline)).await;
    let mut response = SqsBatchResponse::default();
    let mut metrics = Vec::new();
    let mut retries = 0;
    for (i, m) in messages.iter().enumerate() {
        // A handler that answered too few leaves the rest to come back.
        let (disposition, mut counted) = answers.get(i).map_or_else(
            || (Disposition::RetryAfter(Duration::ZERO), Vec::new()),
            |h| (h.disposition, h.metrics.clone()),
        );
        metrics.append(&mut counted);
        let delay = match disposition {
            Disposition::Done => continue,
            Disposition::RetryAfter(d) | Disposition::Hold { otherwise: d } => {
                retries += 1;
                d
            }
            Disposition::DeadLetter(d) => d,
        };
        if direct {
            emit_metrics(function, &metrics, retries, started.elapsed());
            return Err(InvocationError::NotDone(disposition));
        }
        if let Err(e) = queue.change_visibility(&m.receipt_handle, delay).await {
            // The queue's own visibility timeout brings it back instead.
            tracing::warn!(message_id = %m.message_id, error = %e, "could not delay a message to retry");
        }
        response.add_failure(m.message_id.clone());
    }
    emit_metrics(function, &metrics, retries, started.elapsed());
    Ok(response)
}

/// A record of an SQS event as a received message (`ApproximateReceiveCount` counts this
/// receive; absent, it is the first).
fn received(r: SqsMessage) -> ReceivedMessage {
    let sent_at = r
        .attributes
        .get("SentTimestamp")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or_else(SystemTime::now, |ms| UNIX_EPOCH + Duration::from_millis(ms));
    ReceivedMessage {
        message_id: r.message_id.unwrap_or_default(),
        receipt_handle: r.receipt_handle.unwrap_or_default(),
        body: r.body.unwrap_or_default(),
        receive_count: r
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1),
        sent_at,
    }
}

/// Writes one invocation's metrics: counts summed by name and dimension, `Retries` and
/// `BatchLatency`, each latency a document of its own (CloudWatch aggregates the lines).
fn emit_metrics(function: &str, metrics: &[HandlerMetric], retries: u64, took: Duration) {
    // By name and dimension.
    type Key<'a> = (&'a str, Option<(&'a str, &'a str)>);
    let mut counts: std::collections::BTreeMap<Key, u64> = std::collections::BTreeMap::new();
    let mut docs = Vec::new();
    for m in metrics {
        match m {
            HandlerMetric::Count { name, dimension } => {
                *counts
                    .entry((*name, dimension.as_ref().map(|(k, v)| (*k, v.as_str()))))
                    .or_default() += 1
            }
            HandlerMetric::Latency { name, took } => {
                docs.push(emf(function, None, &[Metric::millis(*name, *took)]))
            }
        }
    }
    let mut plain = vec![
        Metric::count("Retries", retries),
        Metric::millis("BatchLatency", took),
    ];
    for ((name, dimension), n) in counts {
        match dimension {
            None => plain.push(Metric::count(name, n)),
            Some(dim) => docs.push(emf(function, Some(dim), &[Metric::count(name, n)])),
        }
    }
    docs.insert(0, emf(function, None, &plain));
    emit(&docs);
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
    use std::sync::Mutex;

    use async_trait::async_trait;
    use sealbox_core::ports::ReceiveOptions;
    use sealbox_core::queue_handler::Handled;

    use super::*;

    /// The visibility changes the runner asked for.
    #[derive(Default)]
    struct Visibility(Mutex<Vec<(String, Duration)>>);

    #[async_trait]
    impl QueueConsumer for Visibility {
        async fn receive(&self, _: ReceiveOptions) -> sealbox_core::Result<Vec<ReceivedMessage>> {
            Ok(Vec::new())
        }
        async fn delete_batch(&self, _: &[String]) -> sealbox_core::Result<()> {
            Ok(())
        }
        async fn change_visibility(&self, handle: &str, t: Duration) -> sealbox_core::Result<()> {
            self.0.lock().unwrap().push((handle.to_owned(), t));
            Ok(())
        }
    }

    /// Answers each message by its body: `done`, `retry`, `hold`, `dead`.
    struct ByBody;

    #[async_trait]
    impl QueueHandler for ByBody {
        async fn handle(
            &self,
            messages: &[ReceivedMessage],
            _: Option<tokio::time::Instant>,
        ) -> Vec<Handled> {
            let s = Duration::from_secs;
            messages
                .iter()
                .map(|m| {
                    Handled::plain(match m.body.as_str() {
                        "retry" => Disposition::RetryAfter(s(5)),
                        "hold" => Disposition::Hold { otherwise: s(2) },
                        "dead" => Disposition::DeadLetter(s(1)),
                        _ => Disposition::Done,
                    })
                })
                .collect()
        }
    }

    fn sqs_event(bodies: &[&str]) -> Value {
        let records: Vec<Value> = bodies
            .iter()
            .enumerate()
            .map(|(i, b)| {
                json!({"messageId": format!("m{i}"), "receiptHandle": format!("h{i}"), "body": b,
                       "attributes": {"ApproximateReceiveCount": "2", "SentTimestamp": "1700000000000"},
                       "eventSource": "aws:sqs"})
            })
            .collect();
        json!({ "Records": records })
    }

    #[tokio::test]
    async fn every_message_not_done_is_reported_and_comes_back_after_its_own_delay() {
        let queue = Visibility::default();
        let event = sqs_event(&["done", "retry", "hold", "dead"]);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let response = handle_event("t", &queue, &ByBody, event, deadline)
            .await
            .unwrap();
        let failed: Vec<&str> = response
            .batch_item_failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(failed, ["m1", "m2", "m3"]);
        let s = Duration::from_secs;
        assert_eq!(
            *queue.0.lock().unwrap(),
            [
                ("h1".into(), s(5)),
                ("h2".into(), s(2)),
                ("h3".into(), s(1))
            ]
        );
    }

    #[tokio::test]
    async fn a_direct_invocation_fails_unless_its_event_is_done_and_garbage_is_refused() {
        let queue = Visibility::default();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let s3 = |body: &str| json!({"Records": [{"eventSource": "aws:s3", "x": body}]});
        // The whole event is the body: `ByBody` finds none of its words in it.
        assert!(
            handle_event("t", &queue, &ByBody, s3("done"), deadline)
                .await
                .is_ok()
        );
        struct Held;
        #[async_trait]
        impl QueueHandler for Held {
            async fn handle(
                &self,
                m: &[ReceivedMessage],
                _: Option<tokio::time::Instant>,
            ) -> Vec<Handled> {
                vec![
                    Handled::plain(Disposition::Hold {
                        otherwise: Duration::ZERO
                    });
                    m.len()
                ]
            }
        }
        let e = handle_event("t", &queue, &Held, s3("x"), deadline)
            .await
            .unwrap_err();
        assert!(matches!(e, InvocationError::NotDone(_)), "{e}");
        let e = handle_event("t", &queue, &ByBody, json!({"Records": 3}), deadline)
            .await
            .unwrap_err();
        assert!(matches!(e, InvocationError::NotAnSqsEvent(_)), "{e}");
        assert!(queue.0.lock().unwrap().is_empty());
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
