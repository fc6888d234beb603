//! Runs the ingest handler from the inbox-events queue (the embedded stand-in for the SQS event
//! source mapping that invokes the Lambda): receive a batch, handle it, delete what was handled,
//! back off what failed transiently.

use std::sync::Arc;
use std::time::Duration;

use sealbox_core::contract::InboxEvent;
use sealbox_core::ports::{JobQueue, ReceiveOptions, ReceivedMessage};
use tokio::sync::watch;

use crate::{Ingest, IngestError};

/// How the poller receives.
#[derive(Debug, Clone, Copy)]
pub struct PollerConfig {
    /// Messages per receive (1-10).
    pub batch: usize,
    /// Long-poll wait.
    pub wait: Duration,
    /// Visibility timeout of a received batch.
    pub visibility_timeout: Duration,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            batch: 10,
            wait: Duration::from_millis(500),
            visibility_timeout: Duration::from_secs(30),
        }
    }
}

/// Delay before the `receive_count`-th retry: exponential with jitter, capped.
pub fn retry_delay(receive_count: u32) -> Duration {
    sealbox_core::retry::redelivery_delay(
        receive_count,
        Duration::from_millis(500),
        Duration::from_secs(60),
    )
}

/// Receives and handles inbox events until `shutdown` turns true; finishes the batch in hand.
pub async fn run(
    ingest: Arc<Ingest>,
    events: Arc<dyn JobQueue>,
    config: PollerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    let opts = ReceiveOptions {
        max_messages: config.batch.clamp(1, 10),
        wait: config.wait,
        visibility_timeout: config.visibility_timeout,
    };
    while !*shutdown.borrow() {
        let received = tokio::select! {
            r = events.receive(opts) => r,
            _ = shutdown.changed() => break,
        };
        let messages = match received {
            Ok(m) => m,
            Err(e) => {
                tracing::error!(error = %e, "receiving inbox events failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        if messages.is_empty() {
            continue;
        }
        let mut parsed = Vec::with_capacity(messages.len());
        let mut done = Vec::with_capacity(messages.len());
        for m in &messages {
            match serde_json::from_str::<InboxEvent>(&m.body) {
                Ok(ev) => parsed.push((m, ev)),
                Err(e) => {
                    // Not an event this contract knows: nothing to answer, drop it loudly.
                    tracing::error!(message_id = %m.message_id, error = %e, "dropping an unreadable inbox event");
                    done.push(m.receipt_handle.clone());
                }
            }
        }
        let mut pending = parsed;
        let mut attempt = 0u32;
        loop {
            let evs: Vec<InboxEvent> = pending.iter().map(|(_, e)| e.clone()).collect();
            let results = ingest.handle_batch(&evs).await;
            let mut held = Vec::new();
            for ((m, ev), r) in pending.into_iter().zip(results) {
                match r {
                    Ok(_) => done.push(m.receipt_handle.clone()),
                    // Our own disk or database failing says nothing about the request: hold
                    // the event and try again, so an outage spends none of its receives.
                    Err(IngestError::Transient(e)) if e.is_own_storage() && !*shutdown.borrow() => {
                        tracing::warn!(key = %ev.key, error = %e, "storage failed; holding the inbox event without spending a receive");
                        held.push((m, ev));
                    }
                    Err(e) => release(events.as_ref(), m, &ev, &e).await,
                }
            }
            if held.is_empty() {
                break;
            }
            attempt += 1;
            for (m, _) in &held {
                if let Err(e) = events
                    .change_visibility(&m.receipt_handle, config.visibility_timeout)
                    .await
                {
                    tracing::warn!(error = %e, "could not extend a held inbox event");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(storage_retry_delay(attempt)) => {}
                _ = shutdown.changed() => {}
            }
            pending = held;
        }
        if let Err(e) = events.delete_batch(&done).await {
            // The events come back and are handled again: idempotent, so only slower.
            tracing::error!(error = %e, "deleting handled inbox events failed");
        }
    }
}

/// Delay before the `attempt`-th retry of events held through a fault of our own storage.
pub fn storage_retry_delay(attempt: u32) -> Duration {
    sealbox_core::retry::redelivery_delay(
        attempt,
        Duration::from_millis(250),
        Duration::from_secs(15),
    )
}

/// Gives a transiently failed event back to the queue after a jittered delay.
async fn release(events: &dyn JobQueue, m: &ReceivedMessage, ev: &InboxEvent, e: &IngestError) {
    let delay = retry_delay(m.receive_count);
    tracing::warn!(key = %ev.key, error = %e, retry_in_ms = delay.as_millis() as u64, "ingest will retry");
    if let Err(e) = events.change_visibility(&m.receipt_handle, delay).await {
        tracing::warn!(error = %e, "could not back off; the visibility timeout will");
    }
}
