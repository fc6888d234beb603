//! Runs the ingest handler from the inbox-events queue (the embedded stand-in for the SQS event
//! source mapping that invokes the Lambda): receive a batch, handle it, delete what was handled,
//! back off what failed transiently.

use std::sync::Arc;
use std::time::Duration;

use sealbox_core::contract::InboxEvent;
use sealbox_core::ports::{QueueConsumer, ReceiveOptions, ReceivedMessage};
use tokio::sync::watch;

use sealbox_ingest::inbox_message::{self, InboxMessage};
use sealbox_ingest::{Ingest, IngestError};

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

/// Receives and handles inbox events until `shutdown` turns true; finishes the batch in hand.
pub async fn run(
    ingest: Arc<Ingest>,
    events: Arc<dyn QueueConsumer>,
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
        let mut pending = Vec::with_capacity(messages.len());
        let mut done = Vec::with_capacity(messages.len());
        for m in &messages {
            match inbox_message::decode(&m.body) {
                Ok(InboxMessage::Events(evs)) if !evs.is_empty() => pending.push((m, evs)),
                Ok(_) => done.push(m.receipt_handle.clone()),
                Err(e) => super::leave_unreadable(events.as_ref(), m, &e).await,
            }
        }
        let mut attempt = 0u32;
        loop {
            let evs: Vec<InboxEvent> = pending.iter().flat_map(|(_, e)| e.clone()).collect();
            let mut results = ingest.handle_batch(&evs).await.into_iter();
            let mut held = Vec::new();
            for (m, evs) in pending {
                // A message is done when each of its events is; events are idempotent, so a
                // message that comes back is handled again as a whole.
                let mut hold = false;
                let mut failed = None;
                for _ in &evs {
                    match results.next() {
                        Some(Ok(_)) => {}
                        // Our own disk or database failing says nothing about the request:
                        // hold the event and try again, so an outage spends none of its receives.
                        Some(Err(IngestError::Transient(e)))
                            if e.is_own_storage() && !*shutdown.borrow() =>
                        {
                            tracing::warn!(message_id = %m.message_id, error = %e, "storage failed; holding the inbox event without spending a receive");
                            hold = true;
                        }
                        Some(Err(e)) => failed = Some(e),
                        None => {
                            failed = Some(IngestError::Transient(sealbox_core::Error::Task(
                                "ingest answered fewer results than events".into(),
                            )))
                        }
                    }
                }
                match (failed, hold) {
                    (Some(e), _) => release(events.as_ref(), m, &evs[0], &e).await,
                    (None, true) => held.push((m, evs)),
                    (None, false) => done.push(m.receipt_handle.clone()),
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
                _ = tokio::time::sleep(sealbox_core::retry::storage_retry_delay(attempt)) => {}
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

/// Gives a transiently failed event back to the queue after a jittered delay.
async fn release(
    events: &dyn QueueConsumer,
    m: &ReceivedMessage,
    ev: &InboxEvent,
    e: &IngestError,
) {
    let delay = e.retry_delay(m.receive_count);
    tracing::warn!(key = %ev.key, error = %e, retry_in_ms = delay.as_millis() as u64, "ingest will retry");
    if let Err(e) = events.change_visibility(&m.receipt_handle, delay).await {
        tracing::warn!(error = %e, "could not back off; the visibility timeout will");
    }
}

#[cfg(test)]
mod tests {
    use crate::event_log::{EventLog, read_event_log};
    use crate::fs_store::FsObjectStore;
    use crate::sqlite_queue::{QueueDb, RedrivePolicy};
    use bytes::Bytes;
    use sealbox_authz::{KeyAlg, Keyset, Verifier, VerifierConfig};
    use sealbox_core::contract::{EventKind, Reason};
    use sealbox_core::ports::{ObjectStore, OutgoingMessage, PutMode, QueueAdmin, QueueSender};

    use super::*;
    use sealbox_ingest::IngestConfig;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_of_our_own_storage_holds_the_event_without_spending_receives() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsObjectStore::new(dir.path().join("buckets"), false);
        let put = store
            .put(
                "inbox",
                "b1/requests/r1.json",
                Bytes::from("{not json"),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        // The outbox cannot take the rejection: where its folder should be lies a file.
        let blocker = dir.path().join("buckets/outbox/b1");
        std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
        std::fs::write(&blocker, b"in the way").unwrap();
        let db = QueueDb::open(&dir.path().join("q.db")).unwrap();
        // One receive only: an event given back to the queue even once would dead-letter.
        let events = db.queue(
            "inbox-events",
            Some(RedrivePolicy {
                dead_letter_queue: "inbox-events-dlq".into(),
                max_receives: 1,
            }),
        );
        let event = InboxEvent {
            bucket: "inbox".into(),
            key: put.key.clone(),
            etag: put.etag.clone(),
            size: put.size,
            event_time: put.last_modified,
        };
        events
            .send_batch(&[OutgoingMessage::new(serde_json::to_string(&event).unwrap())])
            .await
            .unwrap();
        let log = dir.path().join("events.ndjson");
        let keyset = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        let ingest = Arc::new(Ingest::new(
            Arc::new(store),
            Arc::new(db.queue("jobs", None)),
            Arc::new(EventLog::open(&log, false).unwrap()),
            Arc::new(Verifier::from_keyset(VerifierConfig::new("seller", "p"), &keyset).unwrap()),
            IngestConfig {
                inbox: "inbox".into(),
                outbox: "outbox".into(),
                payload_limit: 100,
            },
        ));
        let (stop, stopped) = watch::channel(false);
        let poller = tokio::spawn(run(
            ingest,
            Arc::new(events.clone()),
            PollerConfig {
                batch: 10,
                wait: Duration::from_millis(100),
                visibility_timeout: Duration::from_secs(2),
            },
            stopped,
        ));
        // Held: nothing is written while the outbox is broken.
        while read_event_log(&log).unwrap_or_default().is_empty()
            && events.stats().await.unwrap().in_flight == 0
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(read_event_log(&log).unwrap_or_default().is_empty());
        std::fs::remove_file(&blocker).unwrap();
        let mut notes = Vec::new();
        for _ in 0..600 {
            notes = read_event_log(&log).unwrap_or_default();
            if !notes.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(true).unwrap();
        poller.await.unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].event, EventKind::RequestRejected);
        assert_eq!(notes[0].reason, Some(Reason::MalformedJson));
        assert_eq!(events.dead_count().await.unwrap(), 0);
    }
}
