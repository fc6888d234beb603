//! Notifier over SNS: each notification is one message on the notifications topic, its body the
//! contract's notification JSON, with the message attributes `event` (the event kind as the body
//! names it, e.g. `InferenceFailed`) and `buyer` (String), so subscribers can filter without
//! reading bodies. Delivery is at least once: a publish that fails is reported and the pipeline
//! publishes again, with the same `event_id` in the body, so subscribers drop repeats by it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sns::types::{MessageAttributeValue, PublishBatchRequestEntry};
use aws_smithy_types::error::display::DisplayErrorContext;
use tokio::sync::{mpsc, oneshot};

use sealbox_core::contract::Notification;
use sealbox_core::ports::notifier::Notifier;
use sealbox_core::{Error, Result};

/// Message attribute naming the event kind (`InferenceCompleted`, `InferenceFailed`, ...).
pub const EVENT_ATTRIBUTE: &str = "event";
/// Message attribute naming the buyer.
pub const BUYER_ATTRIBUTE: &str = "buyer";
/// Most entries SNS takes in one `PublishBatch`.
pub const MAX_BATCH_ENTRIES: usize = 10;
/// How many times `publish_batch` sends an entry SNS refused for a reason of its own (throttled,
/// an internal error) before it reports it; the pipeline's own retry takes over from there.
pub const BATCH_ATTEMPTS: u32 = 3;
/// Pause before the first resend of refused batch entries; doubled for each further one.
const BATCH_BACKOFF: Duration = Duration::from_millis(100);

/// Publishes notifications to one SNS topic.
#[derive(Debug, Clone)]
pub struct SnsNotifier {
    client: aws_sdk_sns::Client,
    topic_arn: String,
}

impl SnsNotifier {
    /// A notifier publishing to `topic_arn` through `client`.
    pub fn new(client: aws_sdk_sns::Client, topic_arn: impl Into<String>) -> Self {
        SnsNotifier {
            client,
            topic_arn: topic_arn.into(),
        }
    }

    /// The topic it publishes to.
    pub fn topic_arn(&self) -> &str {
        &self.topic_arn
    }

    /// Publishes several notifications with `PublishBatch` (ten per call). Entries SNS refuses
    /// are sent again up to [`BATCH_ATTEMPTS`] times in all, except those refused as the
    /// sender's fault (they would be refused again); whatever is still undelivered is reported
    /// as one [`Error::Notify`] naming each `event_id`. Entries delivered before an error stay
    /// delivered: publishing the whole slice again is safe (at least once).
    pub async fn publish_batch(&self, notifications: &[Notification]) -> Result<()> {
        let mut undelivered = Vec::new();
        for chunk in notifications.chunks(MAX_BATCH_ENTRIES) {
            let refused = self.publish_chunk(chunk).await?;
            undelivered.extend(refused.into_iter().map(|(_, why)| why));
        }
        if undelivered.is_empty() {
            Ok(())
        } else {
            Err(Error::Notify(format!(
                "{} of {} notifications not accepted by {}: {}",
                undelivered.len(),
                notifications.len(),
                self.topic_arn,
                undelivered.join("; ")
            )))
        }
    }

    /// One `PublishBatch` of at most ten, with its resends; returns what stayed undelivered,
    /// by position in `chunk`, with the reason.
    async fn publish_chunk(&self, chunk: &[Notification]) -> Result<Vec<(usize, String)>> {
        // Entry ids are the positions in the chunk: unique within the call, as SNS requires.
        let mut pending: Vec<usize> = (0..chunk.len()).collect();
        let mut undelivered = Vec::new();
        let mut last_refusal: BTreeMap<usize, String> = BTreeMap::new();
        let mut backoff = BATCH_BACKOFF;
        for attempt in 1..=BATCH_ATTEMPTS {
            let entries = pending
                .iter()
                .map(|&i| batch_entry(i, &chunk[i]))
                .collect::<Result<Vec<_>>>()?;
            let out = self
                .client
                .publish_batch()
                .topic_arn(&self.topic_arn)
                .set_publish_batch_request_entries(Some(entries))
                .send()
                .await
                .map_err(|e| {
                    Error::Notify(format!(
                        "publishing a batch of {} to {}: {}",
                        pending.len(),
                        self.topic_arn,
                        DisplayErrorContext(e)
                    ))
                })?;
            let accepted: BTreeSet<&str> = out.successful().iter().filter_map(|s| s.id()).collect();
            let mut retry = Vec::new();
            for &i in &pending {
                let id = i.to_string();
                if accepted.contains(id.as_str()) {
                    continue;
                }
                match out.failed().iter().find(|f| f.id() == id) {
                    Some(f) if f.sender_fault() => {
                        undelivered.push((i, refusal(&chunk[i], f.code(), f.message(), true)));
                    }
                    Some(f) => {
                        last_refusal.insert(i, refusal(&chunk[i], f.code(), f.message(), false));
                        retry.push(i);
                    }
                    // Neither accepted nor refused: not known delivered, so it is sent again.
                    None => {
                        last_refusal.insert(i, refusal(&chunk[i], "NoAnswer", None, false));
                        retry.push(i);
                    }
                }
            }
            pending = retry;
            if pending.is_empty() {
                break;
            }
            if attempt < BATCH_ATTEMPTS {
                tracing::warn!(
                    topic = %self.topic_arn,
                    refused = pending.len(),
                    attempt,
                    "SNS refused batch entries; sending them again"
                );
                tokio::time::sleep(backoff).await;
                backoff *= 2;
            }
        }
        undelivered.extend(
            pending
                .into_iter()
                .filter_map(|i| last_refusal.remove(&i).map(|why| (i, why))),
        );
        Ok(undelivered)
    }
}

/// A notification waiting for its batch, and who waits for its answer.
struct Waiting {
    notification: Notification,
    answer: oneshot::Sender<Result<()>>,
}

/// A [`Notifier`] that gathers the notifications of concurrent jobs into `PublishBatch` calls:
/// a batch goes out when it holds ten or `linger` after its first notification, whichever comes
/// first, and each `publish` returns once SNS has accepted its own entry (or with the reason it
/// did not). Several batches may be in flight at once. Ten jobs settling together cost one call
/// instead of ten; a lone notification waits at most `linger`.
#[derive(Debug, Clone)]
pub struct BatchingSnsNotifier {
    queue: mpsc::UnboundedSender<Waiting>,
    topic_arn: String,
}

impl BatchingSnsNotifier {
    /// Starts the batcher on the current Tokio runtime; it stops when the last clone is dropped.
    pub fn start(sns: SnsNotifier, linger: Duration) -> Self {
        let (queue, waiting) = mpsc::unbounded_channel();
        let topic_arn = sns.topic_arn.clone();
        tokio::spawn(gather(sns, waiting, linger));
        BatchingSnsNotifier { queue, topic_arn }
    }
}

/// Gathers batches until every sender is gone, then lets the batches in flight finish.
async fn gather(sns: SnsNotifier, mut waiting: mpsc::UnboundedReceiver<Waiting>, linger: Duration) {
    while let Some(first) = waiting.recv().await {
        let mut batch = vec![first];
        let until = tokio::time::Instant::now() + linger;
        while batch.len() < MAX_BATCH_ENTRIES {
            match tokio::time::timeout_at(until, waiting.recv()).await {
                Ok(Some(next)) => batch.push(next),
                Ok(None) | Err(_) => break,
            }
        }
        let sns = sns.clone();
        tokio::spawn(async move {
            let (notifications, answers): (Vec<_>, Vec<_>) = batch
                .into_iter()
                .map(|w| (w.notification, w.answer))
                .unzip();
            match sns.publish_chunk(&notifications).await {
                Ok(refused) => {
                    let mut refused: BTreeMap<usize, String> = refused.into_iter().collect();
                    for (i, answer) in answers.into_iter().enumerate() {
                        let result = match refused.remove(&i) {
                            None => Ok(()),
                            Some(why) => Err(Error::Notify(format!(
                                "not accepted by {}: {why}",
                                sns.topic_arn
                            ))),
                        };
                        let _ = answer.send(result);
                    }
                }
                Err(e) => {
                    let why = e.to_string();
                    for answer in answers {
                        let _ = answer.send(Err(Error::Notify(why.clone())));
                    }
                }
            }
        });
    }
}

#[async_trait]
impl Notifier for BatchingSnsNotifier {
    async fn publish(&self, n: &Notification) -> Result<()> {
        let (answer, answered) = oneshot::channel();
        let stopped = || {
            Error::Notify(format!(
                "the batcher publishing to {} has stopped",
                self.topic_arn
            ))
        };
        self.queue
            .send(Waiting {
                notification: n.clone(),
                answer,
            })
            .map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

/// The notification's body and its filterable attributes.
fn body_and_attributes(
    n: &Notification,
) -> Result<(String, MessageAttributeValue, MessageAttributeValue)> {
    let body = serde_json::to_string(n).map_err(|e| Error::json("encoding a notification", e))?;
    Ok((
        body,
        string_attribute(n.event.as_str())?,
        string_attribute(&n.buyer)?,
    ))
}

fn string_attribute(value: &str) -> Result<MessageAttributeValue> {
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(value)
        .build()
        .map_err(|e| Error::Notify(format!("building a message attribute: {e}")))
}

fn batch_entry(index: usize, n: &Notification) -> Result<PublishBatchRequestEntry> {
    let (body, event, buyer) = body_and_attributes(n)?;
    PublishBatchRequestEntry::builder()
        .id(index.to_string())
        .message(body)
        .message_attributes(EVENT_ATTRIBUTE, event)
        .message_attributes(BUYER_ATTRIBUTE, buyer)
        .build()
        .map_err(|e| Error::Notify(format!("building a batch entry: {e}")))
}

fn refusal(n: &Notification, code: &str, message: Option<&str>, sender_fault: bool) -> String {
    let whose = if sender_fault { ", sender's fault" } else { "" };
    format!(
        "{} ({} {}/{}): {code}{whose}: {}",
        n.event_id,
        n.event.as_str(),
        n.buyer,
        n.request_id,
        message.unwrap_or("no message")
    )
}

#[async_trait]
impl Notifier for SnsNotifier {
    async fn publish(&self, n: &Notification) -> Result<()> {
        let (body, event, buyer) = body_and_attributes(n)?;
        self.client
            .publish()
            .topic_arn(&self.topic_arn)
            .message(body)
            .message_attributes(EVENT_ATTRIBUTE, event)
            .message_attributes(BUYER_ATTRIBUTE, buyer)
            .send()
            .await
            .map_err(|e| {
                Error::Notify(format!(
                    "publishing {} to {}: {}",
                    n.event_id,
                    self.topic_arn,
                    DisplayErrorContext(e)
                ))
            })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use sealbox_core::contract::EventKind;

    #[test]
    fn attributes_carry_the_event_and_buyer_as_the_body_names_them() {
        let mut n = sealbox_core::conformance::test_notification("r1");
        n.event = EventKind::InferenceFailed;
        let (body, event, buyer) = body_and_attributes(&n).unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["event"], "InferenceFailed");
        assert_eq!(v["event_id"], n.event_id.as_str());
        assert_eq!(event.string_value(), Some("InferenceFailed"));
        assert_eq!(event.data_type(), "String");
        assert_eq!(buyer.string_value(), Some("b"));
        assert_eq!(buyer.data_type(), "String");
    }

    #[test]
    fn a_refusal_names_the_event_id_and_the_code() {
        let n = sealbox_core::conformance::test_notification("r2");
        let text = refusal(&n, "Throttled", Some("slow down"), false);
        assert!(text.contains(&n.event_id), "{text}");
        assert!(text.contains("Throttled: slow down"), "{text}");
        assert!(refusal(&n, "InvalidParameter", None, true).contains("sender's fault"));
    }
}
