//! Runs the worker handler from the jobs queue in slots shared fairly between buyers: receives
//! only as many messages as it has places, runs each job in the slot of its buyer's turn, and
//! settles each message as its job finishes.

use std::sync::Arc;

use async_trait::async_trait;
use sealbox_core::ports::{QueueConsumer, ReceivedMessage};
use sealbox_core::queue_handler::{Handled, QueueHandler};
use sealbox_worker::{JobReport, Worker};
use tokio::sync::{mpsc, watch};

use crate::{FairSlots, Intake, PollerConfig};

/// Runs jobs in `slots` (which the hand-off poller may share: their number bounds the jobs in
/// progress) until `shutdown` turns true, then waits for the jobs in hand. Up to as many jobs
/// again wait in hand, received ahead: a slot that frees up starts its next job at once.
pub async fn run(
    worker: Arc<Worker>,
    jobs: Arc<dyn QueueConsumer>,
    slots: Arc<FairSlots>,
    config: PollerConfig,
    shutdown: watch::Receiver<bool>,
    observer: Option<mpsc::UnboundedSender<JobReport>>,
) {
    // Ten more places than slots: taking ten places for a receive never starves a slot.
    let intake = Intake {
        in_hand: slots.size() + 10,
        one_by_one: true,
    };
    let handler = FairJobs {
        worker,
        slots,
        observer,
    };
    crate::run(jobs, Arc::new(handler), intake, config, shutdown).await;
}

/// The worker, each job in a slot of its buyer's fair share.
struct FairJobs {
    worker: Arc<Worker>,
    slots: Arc<FairSlots>,
    observer: Option<mpsc::UnboundedSender<JobReport>>,
}

#[async_trait]
impl QueueHandler for FairJobs {
    fn received(&self, m: &ReceivedMessage) {
        // Off the queue, this job counts as waiting or running: no longer as queued.
        self.slots.dequeued(&crate::fair::buyer_of_job(&m.body));
    }

    async fn handle(
        &self,
        messages: &[ReceivedMessage],
        deadline: Option<tokio::time::Instant>,
    ) -> Vec<Handled> {
        let mut answers = Vec::with_capacity(messages.len());
        for m in messages {
            let (handled, report) = {
                let _slot = self
                    .slots
                    .acquire(&crate::fair::buyer_of_job(&m.body))
                    .await;
                self.worker.handle_message(m, deadline).await
            };
            if let (Some(o), Some(report)) = (&self.observer, report) {
                let _ = o.send(report);
            }
            answers.push(handled);
        }
        answers
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use sealbox_core::contract::{CONTRACT_VERSION, EventKind, InputRef, JobMessage, Split};
    use sealbox_core::layout::request_key;
    use sealbox_core::ports::{ObjectStore, OutgoingMessage, PutMode, QueueAdmin, QueueSender};
    use sealbox_core::testkit::{MemoryNotifier, MemoryQueue, MemoryStore, ScriptedEndpoint};
    use sealbox_worker::{WorkerConfig, WorkerPorts};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_of_our_own_storage_holds_the_job_without_spending_receives() {
        let store = MemoryStore::new();
        store
            .put(
                "inbox",
                "b1/inputs/x.csv",
                Bytes::from("1,2,3,4"),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        // The outbox cannot take the result, twice, as on a full disk.
        store.fail_writes(2);
        let notifier = Arc::new(MemoryNotifier::new());
        let worker = Arc::new(Worker::new(
            WorkerPorts {
                store: Arc::new(store.clone()),
                endpoint: Arc::new(ScriptedEndpoint::unmetered(1 << 20)),
                notifier: notifier.clone(),
            },
            WorkerConfig {
                inbox: "inbox".into(),
                outbox: "outbox".into(),
                invoke_attempts: 1,
                max_concurrent_invocations: 1,
            },
        ));
        // One receive only: a job that went back to the queue even once would dead-letter.
        let jobs = MemoryQueue::new(1);
        let now = time::OffsetDateTime::now_utc();
        let job = JobMessage {
            version: CONTRACT_VERSION,
            job_id: JobMessage::new_job_id(),
            buyer: "b1".into(),
            request_id: "r1".into(),
            request_key: request_key("b1", "r1"),
            request_etag: Default::default(),
            input: InputRef::Object {
                key: "b1/inputs/x.csv".into(),
            },
            content_type: "text/csv".into(),
            accept: "text/csv".into(),
            custom_attributes: None,
            split: Split::None,
            received_at: now,
            accepted_at: now,
            deadline: now + time::Duration::hours(1),
        };
        jobs.send_batch(&[OutgoingMessage::new(serde_json::to_string(&job).unwrap())])
            .await
            .unwrap();
        let (stop, stopped) = watch::channel(false);
        let poller = tokio::spawn(run(
            worker,
            Arc::new(jobs.clone()),
            FairSlots::new(1),
            PollerConfig {
                wait: Duration::from_millis(100),
                visibility_timeout: Duration::from_secs(2),
                delete_linger: Duration::from_millis(20),
                ..PollerConfig::default()
            },
            stopped,
            None,
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
        assert_eq!(notes[0].event, EventKind::InferenceCompleted);
        assert_eq!(notes[0].attempts, 1, "no receive was spent on the outage");
        assert_eq!(jobs.dead_count().await.unwrap(), 0);
    }
}
