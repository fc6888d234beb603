//! Runs the ingest handler from the inbox-events queue (the one-process stand-in for the SQS
//! event source mapping that invokes the Lambda function): a receive's events are ingested
//! together, with one send of their jobs.

use std::sync::Arc;

use sealbox_core::ports::QueueConsumer;
use sealbox_ingest::Ingest;
use tokio::sync::watch;

use crate::{Intake, PollerConfig};

/// Receives and handles inbox events until `shutdown` turns true; finishes the batch in hand.
pub async fn run(
    ingest: Arc<Ingest>,
    events: Arc<dyn QueueConsumer>,
    config: PollerConfig,
    shutdown: watch::Receiver<bool>,
) {
    // One receive in hand: the next waits for this one's events, as the Lambda function does.
    let intake = Intake {
        in_hand: 10,
        one_by_one: false,
    };
    crate::run(events, ingest, intake, config, shutdown).await;
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use sealbox_authz::{KeyAlg, Keyset, Verifier, VerifierConfig};
    use sealbox_core::contract::{EventKind, InboxEvent, Reason};
    use sealbox_core::ports::{ObjectStore, OutgoingMessage, PutMode, QueueAdmin, QueueSender};
    use sealbox_core::testkit::{MemoryNotifier, MemoryQueue, MemoryStore};
    use sealbox_ingest::{IngestConfig, IngestPorts};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_of_our_own_storage_holds_the_event_without_spending_receives() {
        let store = MemoryStore::new();
        let put = store
            .put(
                "inbox",
                "b1/requests/r1.json",
                Bytes::from("{not json"),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        // The outbox cannot take the rejection, twice.
        store.fail_writes(2);
        // One receive only: an event given back to the queue even once would dead-letter.
        let events = MemoryQueue::new(1);
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
        let notifier = Arc::new(MemoryNotifier::new());
        let keyset = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        let ingest = Arc::new(Ingest::new(
            IngestPorts {
                store: Arc::new(store.clone()),
                jobs: Arc::new(MemoryQueue::new(5)),
                notifier: notifier.clone(),
                authorizer: Arc::new(
                    Verifier::from_keyset(VerifierConfig::new("seller", "p"), &keyset).unwrap(),
                ),
            },
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
                wait: Duration::from_millis(100),
                visibility_timeout: Duration::from_secs(2),
                ..PollerConfig::default()
            },
            stopped,
        ));
        let mut notes = Vec::new();
        for _ in 0..600 {
            notes = notifier.published();
            if !notes.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(true).unwrap();
        poller.await.unwrap();
        assert_eq!(store.writes_to_fail(), 0, "the outage was met");
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].event, EventKind::RequestRejected);
        assert_eq!(notes[0].reason, Some(Reason::MalformedJson));
        assert_eq!(events.dead_count().await.unwrap(), 0);
    }
}
