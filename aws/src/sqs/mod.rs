//! The queue ports over Amazon SQS: [`SqsQueue`] sends, consumes and administers one standard
//! queue and its dead-letter queue (`dead_letters`); `bootstrap::create_queue_pair` makes such a
//! pair.
//!
//! What SQS imposes on the ports' promises, and how this adapter meets them:
//! - A batch call takes at most 10 entries and 1 MiB (bodies and attributes together; 256 KiB
//!   before 2025), and may accept it in part. `send_batch` sends in calls within both limits,
//!   retries only the entries the service failed on its side (a few times, pausing between),
//!   never retries an entry the service refused as the sender's fault, and fails naming every
//!   entry not sent. It stops at the first call that fails as a whole (the rest is reported as
//!   not attempted), so `Ok` always means every message was sent.
//! - Times are whole seconds: delays, visibility timeouts and waits are rounded up. A delay over
//!   900 s is not clamped: SQS refuses that entry (the error names it), since a message that shows
//!   early is a different promise. A visibility timeout over 12 h is clamped to 12 h (a lease
//!   that ends early is only renewed or redelivered early); a long poll over 20 s waits 20 s.
//! - A stale receipt handle (deleted, expired, superseded, malformed) is not an error. SQS itself
//!   says a superseded handle "might not" delete: it may still delete (moto always does).
//! - `stats` has no `oldest_age`: SQS publishes it only as a CloudWatch metric.
//! - Dead letters: the dead-letter queue comes from the queue's `RedrivePolicy` (read once, on
//!   first use or in [`SqsQueue::connect`]) or is given. Listing them is a peek: they are received
//!   for a moment and released, which bumps their receive count; a dead letter's `receive_count`
//!   is its count less this peek, so earlier peeks count too, and SQS gives no order beyond the
//!   sort by sent time of what one pass saw. A redrive of every dead letter is an SQS message
//!   move task; of fewer, or where the service has no move task (moto answers 500), the adapter
//!   moves them itself: send to the queue, then delete from the dead-letter queue, so a failure
//!   can duplicate a message but never lose one.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_sqs::Client;
use aws_sdk_sqs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, Message, MessageAttributeValue, MessageSystemAttributeName,
    QueueAttributeName, SendMessageBatchRequestEntry,
};
use aws_smithy_types::retry::RetryConfig;
use sealbox_core::Error;
use sealbox_core::ports::queue::{
    DeadLetter, OutgoingMessage, QueueAdmin, QueueConsumer, QueueSender, QueueStats,
    ReceiveOptions, ReceivedMessage,
};
use serde::Deserialize;
use tokio::sync::OnceCell;

use crate::sdk::storage_error;

mod dead_letters;
use dead_letters::DeadLetters;

type Result<T, E = Error> = std::result::Result<T, E>;

/// Most entries in one batch call.
const MAX_BATCH_ENTRIES: usize = 10;
/// Most bytes in one batch call, bodies and message attributes together (SQS since 2025).
const MAX_BATCH_BYTES: usize = 1_048_576;
/// Most messages one receive returns.
const MAX_RECEIVE: usize = 10;
/// Longest long poll, in seconds.
const MAX_WAIT_SECS: i32 = 20;
/// Longest visibility timeout, in seconds (12 h).
pub(crate) const MAX_VISIBILITY_SECS: i32 = 43_200;
/// Retries of the entries of a batch that the service failed on its side.
const ENTRY_RETRIES: u32 = 3;
/// Pause before the first retry of failed entries; doubled each time.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long a peek or a redrive by hand holds a dead letter (seconds).
const HOLD_SECS: i32 = 30;
/// Long poll of a pass over the dead-letter queue: long enough to ask every SQS server, since a
/// short poll samples only some and could end a pass early.
const PASS_WAIT_SECS: i32 = 1;
/// How long a redrive waits for its move task before returning what has moved so far.
const MOVE_TASK_WAIT: Duration = Duration::from_secs(60);
/// Retention of a dead-letter queue made by [`create_queue_pair`]: SQS's maximum, 14 days (a
/// message expires by its first enqueue time, so the dead-letter queue must keep longer).
pub(crate) const DEAD_LETTER_RETENTION_SECS: u32 = 1_209_600;

/// One SQS standard queue and its dead-letter queue, implementing the three queue ports.
/// Cheap to clone (the clones share the discovered dead-letter queue).
#[derive(Debug, Clone)]
pub struct SqsQueue {
    sqs: Client,
    url: Arc<str>,
    given_dead_letter_url: Option<Arc<str>>,
    dead_letters: Arc<OnceCell<Option<DeadLetters>>>,
}

impl SqsQueue {
    /// The queue at `queue_url`; its dead-letter queue is read from its `RedrivePolicy` on first
    /// use (none: no dead letters to list, count or redrive).
    pub fn new(sqs: Client, queue_url: impl Into<String>) -> SqsQueue {
        SqsQueue {
            sqs,
            url: Arc::from(queue_url.into()),
            given_dead_letter_url: None,
            dead_letters: Arc::default(),
        }
    }

    /// The queue at `queue_url`, its dead-letter queue read now: fails if the queue does not
    /// exist or its redrive policy cannot be read.
    pub async fn connect(sqs: Client, queue_url: impl Into<String>) -> Result<SqsQueue> {
        let queue = SqsQueue::new(sqs, queue_url);
        queue.dead_letters().await?;
        Ok(queue)
    }

    /// This queue with its dead-letter queue given instead of read from its redrive policy.
    pub fn with_dead_letter_queue(self, dead_letter_url: impl Into<String>) -> SqsQueue {
        SqsQueue {
            given_dead_letter_url: Some(Arc::from(dead_letter_url.into())),
            dead_letters: Arc::default(),
            ..self
        }
    }

    /// The queue's URL.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The dead-letter queue's URL, once known (given, or read by an earlier call).
    pub fn dead_letter_url(&self) -> Option<&str> {
        match self.dead_letters.get() {
            Some(found) => found.as_ref().map(|d| d.url.as_str()),
            None => self.given_dead_letter_url.as_deref(),
        }
    }

    pub(crate) async fn attributes(
        &self,
        url: &str,
        names: &[QueueAttributeName],
    ) -> Result<HashMap<QueueAttributeName, String>> {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .map_err(|e| sqs_error("reading queue attributes", url, e))?;
        Ok(out.attributes().cloned().unwrap_or_default())
    }

    /// Visible, in-flight and delayed counts of the queue at `url`.
    async fn counts(&self, url: &str) -> Result<(u64, u64, u64)> {
        let attrs = self
            .attributes(
                url,
                &[
                    QueueAttributeName::ApproximateNumberOfMessages,
                    QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
                    QueueAttributeName::ApproximateNumberOfMessagesDelayed,
                ],
            )
            .await?;
        let count = |name: QueueAttributeName| {
            attrs
                .get(&name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok((
            count(QueueAttributeName::ApproximateNumberOfMessages),
            count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
            count(QueueAttributeName::ApproximateNumberOfMessagesDelayed),
        ))
    }

    /// One receive from the queue at `url`, with the receive count and sent time of each.
    async fn receive_from(
        &self,
        url: &str,
        max: usize,
        wait_secs: i32,
        visibility_secs: i32,
        with_attributes: bool,
    ) -> Result<Vec<Message>> {
        let mut call = self
            .sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(max.clamp(1, MAX_RECEIVE) as i32)
            .wait_time_seconds(wait_secs)
            .visibility_timeout(visibility_secs)
            .message_system_attribute_names(MessageSystemAttributeName::ApproximateReceiveCount)
            .message_system_attribute_names(MessageSystemAttributeName::SentTimestamp);
        if with_attributes {
            // A redrive sends each message back with its attributes and its tenant.
            call = call
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::MessageGroupId);
        }
        let out = call
            .send()
            .await
            .map_err(|e| sqs_error("receiving messages", url, e))?;
        Ok(out.messages.unwrap_or_default())
    }

    /// Makes held messages of the queue at `url` visible again, as far as it can: a handle it
    /// cannot release only means that message shows again when its timeout ends.
    async fn release(&self, url: &str, handles: &[String]) {
        for chunk in handles.chunks(MAX_BATCH_ENTRIES) {
            let entries: Vec<_> = chunk
                .iter()
                .enumerate()
                .filter_map(|(i, h)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(h)
                        .visibility_timeout(0)
                        .build()
                        .ok()
                })
                .collect();
            let result = self
                .sqs
                .change_message_visibility_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await;
            match result {
                Ok(out) if out.failed().is_empty() => {}
                Ok(out) => tracing::warn!(
                    queue = url,
                    failed = out.failed().len(),
                    "some held messages were not released; they show again when their timeout ends"
                ),
                Err(e) => tracing::warn!(
                    queue = url,
                    error = %aws_smithy_types::error::display::DisplayErrorContext(&e),
                    "held messages were not released; they show again when their timeout ends"
                ),
            }
        }
    }

    /// Sends `entries` to the queue at `url` in calls within SQS's limits; see [`Sent`].
    async fn send_entries(&self, url: &str, entries: &[Entry]) -> Sent {
        let mut sent = Sent {
            slots: vec![Slot::NotAttempted; entries.len()],
            stopped_by: None,
        };
        for chunk in chunks(entries) {
            let mut pending: Vec<usize> = chunk.collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                let request: Vec<_> = pending
                    .iter()
                    .filter_map(|&i| entries[i].request(i))
                    .collect();
                let out = match self
                    .sqs
                    .send_message_batch()
                    .queue_url(url)
                    .set_entries(Some(request))
                    .send()
                    .await
                {
                    Ok(out) => out,
                    Err(e) => {
                        sent.stopped_by = Some(sqs_error("sending messages", url, e));
                        return sent;
                    }
                };
                let mut answered = HashSet::new();
                for ok in out.successful() {
                    if let Some(i) = entry_index(ok.id(), &pending) {
                        sent.slots[i] = Slot::Sent(ok.message_id().to_owned());
                        answered.insert(i);
                    }
                }
                let mut retry = Vec::new();
                for failed in out.failed() {
                    let Some(i) = entry_index(failed.id(), &pending) else {
                        continue;
                    };
                    answered.insert(i);
                    let reason = failure_text(failed);
                    if failed.sender_fault() || attempt == ENTRY_RETRIES {
                        let attempts = attempt + 1;
                        sent.slots[i] = Slot::Refused(if failed.sender_fault() {
                            reason
                        } else {
                            format!("{reason} (after {attempts} attempts)")
                        });
                    } else {
                        retry.push(i);
                    }
                }
                // An entry the answer does not mention is sent again: a duplicate at worst.
                for &i in &pending {
                    if !answered.contains(&i) {
                        if attempt == ENTRY_RETRIES {
                            sent.slots[i] =
                                Slot::Refused("the service did not answer for it".into());
                        } else {
                            retry.push(i);
                        }
                    }
                }
                retry.sort_unstable();
                pending = retry;
                if !pending.is_empty() {
                    tokio::time::sleep(RETRY_PAUSE * 2u32.pow(attempt)).await;
                    attempt += 1;
                }
            }
        }
        sent
    }

    /// Deletes one message by receipt handle; a stale handle is not an error.
    async fn delete_one(&self, url: &str, handle: &str) -> Result<()> {
        match self
            .sqs
            .delete_message()
            .queue_url(url)
            .receipt_handle(handle)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code().is_some_and(|c| is_stale_handle(c, e.message())) => Ok(()),
            Err(e) => Err(sqs_error("deleting a message", url, e)),
        }
    }

    /// Deletes by receipt handle from the queue at `url`; stale handles are not an error.
    async fn delete_from(&self, url: &str, handles: &[String]) -> Result<()> {
        // SQS refuses a batch naming one handle twice.
        let mut seen = HashSet::new();
        let handles: Vec<&String> = handles.iter().filter(|h| seen.insert(*h)).collect();
        let mut problems = Vec::new();
        for chunk in handles.chunks(MAX_BATCH_ENTRIES) {
            let mut pending: Vec<usize> = (0..chunk.len()).collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                let entries: Vec<_> = pending
                    .iter()
                    .filter_map(|&i| {
                        DeleteMessageBatchRequestEntry::builder()
                            .id(i.to_string())
                            .receipt_handle(chunk[i])
                            .build()
                            .ok()
                    })
                    .collect();
                let out = match self
                    .sqs
                    .delete_message_batch()
                    .queue_url(url)
                    .set_entries(Some(entries))
                    .send()
                    .await
                {
                    Ok(out) => out,
                    // A handle refused for the whole call: one by one, so the others go.
                    Err(e) if e.code().is_some_and(|c| is_stale_handle(c, e.message())) => {
                        for &i in &pending {
                            self.delete_one(url, chunk[i]).await?;
                        }
                        break;
                    }
                    Err(e) => return Err(sqs_error("deleting messages", url, e)),
                };
                let mut retry = Vec::new();
                for failed in out.failed() {
                    let Some(i) = entry_index(failed.id(), &pending) else {
                        continue;
                    };
                    if is_stale_handle(failed.code(), failed.message()) {
                        tracing::debug!(queue = url, "stale receipt handle: nothing to delete");
                    } else if failed.sender_fault() || attempt == ENTRY_RETRIES {
                        problems.push(failure_text(failed));
                    } else {
                        retry.push(i);
                    }
                }
                pending = retry;
                if !pending.is_empty() {
                    tokio::time::sleep(RETRY_PAUSE * 2u32.pow(attempt)).await;
                    attempt += 1;
                }
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::storage(
                format!(
                    "deleting {} messages from {url}: {} not deleted",
                    handles.len(),
                    problems.len()
                ),
                problems.join("; "),
            ))
        }
    }
}

#[async_trait]
impl QueueSender for SqsQueue {
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<String>> {
        let entries: Vec<Entry> = messages
            .iter()
            .map(|m| Entry {
                body: m.body.clone(),
                delay_seconds: whole_seconds(m.delay),
                attributes: None,
                group: m.group.clone(),
            })
            .collect();
        let sent = self.send_entries(&self.url, &entries).await;
        match sent.problem() {
            None => Ok(sent
                .slots
                .into_iter()
                .map(|slot| match slot {
                    Slot::Sent(id) => id,
                    // problem() is None only when every slot is Sent.
                    Slot::Refused(_) | Slot::NotAttempted => String::new(),
                })
                .collect()),
            Some(problem) => Err(Error::storage(
                format!(
                    "sending {} messages to {}: {} of them sent",
                    entries.len(),
                    self.url,
                    sent.sent()
                ),
                problem,
            )),
        }
    }
}

#[async_trait]
impl QueueConsumer for SqsQueue {
    async fn receive(&self, options: ReceiveOptions) -> Result<Vec<ReceivedMessage>> {
        if options.max_messages == 0 {
            return Ok(Vec::new());
        }
        let messages = self
            .receive_from(
                &self.url,
                options.max_messages,
                whole_seconds(options.wait).min(MAX_WAIT_SECS),
                whole_seconds(options.visibility_timeout).min(MAX_VISIBILITY_SECS),
                false,
            )
            .await?;
        Ok(messages.into_iter().filter_map(received).collect())
    }

    async fn delete_batch(&self, receipt_handles: &[String]) -> Result<()> {
        self.delete_from(&self.url, receipt_handles).await
    }

    async fn change_visibility(&self, receipt_handle: &str, timeout: Duration) -> Result<()> {
        let result = self
            .sqs
            .change_message_visibility()
            .queue_url(&*self.url)
            .receipt_handle(receipt_handle)
            .visibility_timeout(whole_seconds(timeout).min(MAX_VISIBILITY_SECS))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.code()
                    .is_some_and(|code| is_stale_handle(code, e.message())) =>
            {
                tracing::debug!(queue = %self.url, "stale receipt handle: visibility unchanged");
                Ok(())
            }
            Err(e) => Err(sqs_error("changing a message's visibility", &self.url, e)),
        }
    }
}

/// A message to send: a port message, or a dead letter going back with its attributes.
struct Entry {
    body: String,
    delay_seconds: i32,
    attributes: Option<HashMap<String, MessageAttributeValue>>,
    /// `MessageGroupId`: on a standard queue, the tenant of a fair queue.
    group: Option<String>,
}

impl Entry {
    /// Bytes it counts against a batch's limit.
    fn size(&self) -> usize {
        let attributes = self.attributes.iter().flatten().map(|(name, value)| {
            name.len()
                + value.data_type().len()
                + value.string_value().map_or(0, str::len)
                + value.binary_value().map_or(0, |b| b.as_ref().len())
        });
        self.body.len() + attributes.sum::<usize>()
    }

    /// The request entry, its id the entry's index in the whole send.
    fn request(&self, index: usize) -> Option<SendMessageBatchRequestEntry> {
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(index.to_string())
            .message_body(&self.body)
            .set_message_attributes(self.attributes.clone())
            .set_message_group_id(self.group.clone());
        if self.delay_seconds > 0 {
            entry = entry.delay_seconds(self.delay_seconds);
        }
        // Only a missing id or body fails to build, and both are always set.
        entry.build().ok()
    }
}

/// Ranges of entries, in order, each one batch call: at most ten and at most 1 MiB (an entry
/// larger than that alone, for the service to refuse).
fn chunks(entries: &[Entry]) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, entry) in entries.iter().enumerate() {
        let size = entry.size();
        if i > start && (i - start == MAX_BATCH_ENTRIES || bytes + size > MAX_BATCH_BYTES) {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < entries.len() {
        out.push(start..entries.len());
    }
    out
}

/// What became of each entry of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    /// Sent, with its message id.
    Sent(String),
    /// Refused by the service (or failing on its side after every retry), with why.
    Refused(String),
    /// Not sent: a call before it failed as a whole.
    NotAttempted,
}

/// The outcome of a send: each entry's slot, and the failure that stopped it early.
#[derive(Debug)]
struct Sent {
    slots: Vec<Slot>,
    stopped_by: Option<Error>,
}

impl Sent {
    fn sent(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Sent(_)))
            .count()
    }

    /// What was not sent, and why, naming each entry by its index; `None` if all were sent.
    fn problem(&self) -> Option<String> {
        let mut parts: Vec<String> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| match slot {
                Slot::Refused(why) => Some(format!("message {i} refused: {why}")),
                _ => None,
            })
            .collect();
        let unsent: Vec<usize> = self
            .slots
            .iter()
            .enumerate()
            .filter(|(_, slot)| **slot == Slot::NotAttempted)
            .map(|(i, _)| i)
            .collect();
        if !unsent.is_empty() {
            let why = self
                .stopped_by
                .as_ref()
                .map_or_else(|| "not attempted".to_owned(), |e| e.to_string());
            parts.push(format!("messages {} not sent: {why}", ranges(&unsent)));
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// "0-2, 5, 7-9" for [0, 1, 2, 5, 7, 8, 9] (sorted indexes).
fn ranges(indexes: &[usize]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < indexes.len() {
        let start = indexes[i];
        let mut end = start;
        while i + 1 < indexes.len() && indexes[i + 1] == end + 1 {
            i += 1;
            end = indexes[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(", ")
}

/// The index an answer's entry id names, if it is one of `pending`.
fn entry_index(id: &str, pending: &[usize]) -> Option<usize> {
    id.parse().ok().filter(|i| pending.contains(i))
}

fn failure_text(failed: &BatchResultErrorEntry) -> String {
    match failed.message() {
        Some(message) => format!("{}: {message}", failed.code()),
        None => failed.code().to_owned(),
    }
}

/// Whether an error code says a receipt handle is stale: malformed, deleted, expired or
/// superseded, or its message no longer in flight.
fn is_stale_handle(code: &str, message: Option<&str>) -> bool {
    match code {
        "ReceiptHandleIsInvalid"
        | "MessageNotInflight"
        | "AWS.SimpleQueueService.MessageNotInflight" => true,
        "InvalidParameterValue" => message.is_some_and(|m| {
            let m = m.to_ascii_lowercase();
            m.contains("receipt handle") || m.contains("receipthandle")
        }),
        _ => false,
    }
}

/// A duration in whole seconds for SQS, rounded up (never shorter than asked).
pub(crate) fn whole_seconds(d: Duration) -> i32 {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    i32::try_from(secs).unwrap_or(i32::MAX)
}

/// A received message as the port has it; `None` (logged) for one without an id or handle,
/// which cannot be processed and comes back when its timeout ends.
fn received(m: Message) -> Option<ReceivedMessage> {
    let attribute = |name: MessageSystemAttributeName| {
        m.attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse::<u64>().ok())
    };
    let receive_count = attribute(MessageSystemAttributeName::ApproximateReceiveCount)
        .map_or(1, |n| u32::try_from(n).unwrap_or(u32::MAX));
    let sent_at = attribute(MessageSystemAttributeName::SentTimestamp)
        .map_or_else(SystemTime::now, |ms| UNIX_EPOCH + Duration::from_millis(ms));
    let (Some(message_id), Some(receipt_handle)) = (m.message_id, m.receipt_handle) else {
        tracing::warn!("SQS returned a message without an id or receipt handle; skipped");
        return None;
    };
    Some(ReceivedMessage {
        message_id,
        body: m.body.unwrap_or_default(),
        receipt_handle,
        receive_count,
        sent_at,
    })
}

/// An SDK failure as a port error; a missing queue says so, naming it.
pub(crate) fn sqs_error<E>(
    what: &str,
    queue: &str,
    err: SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>,
) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err.code() {
        Some("QueueDoesNotExist" | "AWS.SimpleQueueService.NonExistentQueue") => {
            storage_error(format!("{what}: the queue {queue} does not exist"), err)
        }
        _ => storage_error(format!("{what} ({queue})"), err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(size: usize) -> Entry {
        Entry {
            body: "x".repeat(size),
            delay_seconds: 0,
            attributes: None,
            group: None,
        }
    }

    #[test]
    fn batches_hold_at_most_ten_entries_and_one_mebibyte() {
        let small: Vec<Entry> = (0..25).map(|_| entry(10)).collect();
        assert_eq!(chunks(&small), vec![0..10, 10..20, 20..25]);
        let half = MAX_BATCH_BYTES / 2;
        let big = vec![
            entry(half),
            entry(half),
            entry(1),
            entry(MAX_BATCH_BYTES + 1),
            entry(1),
        ];
        assert_eq!(chunks(&big), vec![0..2, 2..3, 3..4, 4..5]);
        assert!(chunks(&[]).is_empty());
    }

    #[test]
    fn durations_round_up_to_whole_seconds() {
        assert_eq!(whole_seconds(Duration::ZERO), 0);
        assert_eq!(whole_seconds(Duration::from_millis(1)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1000)), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(whole_seconds(Duration::MAX), i32::MAX);
    }

    #[test]
    fn a_problem_names_each_entry_not_sent() {
        let sent = Sent {
            slots: vec![
                Slot::Sent("a".into()),
                Slot::Refused("InvalidParameterValue: too long".into()),
                Slot::Sent("b".into()),
                Slot::NotAttempted,
                Slot::NotAttempted,
            ],
            stopped_by: Some(Error::storage("sending", "boom")),
        };
        assert_eq!(sent.sent(), 2);
        assert_eq!(
            sent.problem().unwrap(),
            "message 1 refused: InvalidParameterValue: too long; messages 3-4 not sent: sending: boom"
        );
        let all = Sent {
            slots: vec![Slot::Sent("a".into())],
            stopped_by: None,
        };
        assert_eq!(all.problem(), None);
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8, 9]), "0-2, 5, 7-9");
    }

    #[test]
    fn stale_handles_are_recognised_by_code_or_message() {
        assert!(is_stale_handle("ReceiptHandleIsInvalid", None));
        assert!(is_stale_handle("MessageNotInflight", None));
        assert!(is_stale_handle(
            "InvalidParameterValue",
            Some(
                "Value x for parameter ReceiptHandle is invalid. Reason: The receipt handle has expired."
            )
        ));
        assert!(!is_stale_handle(
            "InvalidParameterValue",
            Some("Value 901 for parameter DelaySeconds")
        ));
        assert!(!is_stale_handle("InternalError", None));
    }
}
