//! Message queue ports: SQS semantics (batches, receipt handles, visibility timeouts, receive
//! counts, delays, dead-letter queue after too many receives). One family, three narrow sides:
//! ingest only sends jobs, pollers and Lambda glue only consume, operators administer.

use std::time::{Duration, SystemTime};

use async_trait::async_trait;

use crate::error::Result;

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingMessage {
    /// The body (JSON in this project).
    pub body: String,
    /// Invisible for this long after sending.
    pub delay: Duration,
    /// The tenant the message belongs to (the buyer): receives share out the messages waiting
    /// between tenants, so one tenant's backlog does not delay the others (SQS fair queues:
    /// `MessageGroupId` on a standard queue). `None` is a tenant of its own.
    pub group: Option<String>,
}

impl OutgoingMessage {
    /// A message visible at once, of no tenant.
    pub fn new(body: String) -> Self {
        OutgoingMessage {
            body,
            delay: Duration::ZERO,
            group: None,
        }
    }

    /// The same message, belonging to tenant `group`.
    pub fn in_group(mut self, group: impl Into<String>) -> Self {
        self.group = Some(group.into());
        self
    }
}

/// How to receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReceiveOptions {
    /// At most this many messages (SQS allows 1-10).
    pub max_messages: usize,
    /// Long polling: wait up to this long for a first message.
    pub wait: Duration,
    /// Received messages stay invisible for this long unless deleted or changed.
    pub visibility_timeout: Duration,
}

/// A received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// Stable id of the message.
    pub message_id: String,
    /// The body.
    pub body: String,
    /// Handle for delete and change-visibility; valid until the message is received again.
    pub receipt_handle: String,
    /// How often it has been received, this time included.
    pub receive_count: u32,
    /// When it was first sent.
    pub sent_at: SystemTime,
}

/// Counts for operators.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Messages ready to receive.
    pub visible: u64,
    /// Messages received and not yet deleted.
    pub in_flight: u64,
    /// Messages sent with a delay or backed off, not yet visible.
    pub delayed: u64,
    /// Age of the oldest message in the queue.
    pub oldest_age: Option<Duration>,
}

/// The sending side of a queue (ingest enqueues jobs through it).
#[async_trait]
pub trait QueueSender: Send + Sync {
    /// Sends messages, at least once; returns their ids in order. `Ok` means every one was sent:
    /// an adapter whose service accepts a batch in part retries the rest or fails.
    async fn send_batch(&self, messages: &[OutgoingMessage]) -> Result<Vec<String>>;
}

/// The consuming side of a queue, with at-least-once delivery (pollers and Lambda glue).
#[async_trait]
pub trait QueueConsumer: Send + Sync {
    /// Receives up to `max_messages`, waiting up to `wait` for the first. When several groups
    /// have messages waiting, a receive takes from each in turn (fair share between tenants).
    async fn receive(&self, options: ReceiveOptions) -> Result<Vec<ReceivedMessage>>;
    /// Deletes messages by receipt handle; a stale handle deletes nothing and is not an error.
    async fn delete_batch(&self, receipt_handles: &[String]) -> Result<()>;
    /// Makes a received message visible again after `timeout` (zero: at once).
    async fn change_visibility(&self, receipt_handle: &str, timeout: Duration) -> Result<()>;
}

/// A message in a dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// Its id.
    pub message_id: String,
    /// Its body.
    pub body: String,
    /// Receives before it was moved.
    pub receive_count: u32,
    /// When it was first sent.
    pub sent_at: SystemTime,
}

/// The operators' side of a queue: its backlog and its dead letters.
#[async_trait]
pub trait QueueAdmin: Send + Sync {
    /// Backlog counts.
    async fn stats(&self) -> Result<QueueStats>;
    /// Messages in the dead-letter queue, oldest first, at most `max`.
    async fn list_dead(&self, max: usize) -> Result<Vec<DeadLetter>>;
    /// Moves up to `max` dead letters back to the source queue with a fresh receive count.
    async fn redrive(&self, max: usize) -> Result<u64>;
    /// Number of dead letters.
    async fn dead_count(&self) -> Result<u64>;
}
