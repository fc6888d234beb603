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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;
    use sealbox_core::contract::{CONTRACT_VERSION, EventKind, InputRef, JobMessage, Split};
    use sealbox_core::layout::request_key;
    use sealbox_core::ports::{
        ByteStream, ObjectMeta, ObjectStore, OutgoingMessage, PutMode, PutOptions, QueueAdmin,
        QueueSender,
    };
    use sealbox_embedded::event_log::{EventLog, read_event_log};
    use sealbox_embedded::fs_store::FsObjectStore;
    use sealbox_embedded::sqlite_queue::{QueueDb, RedrivePolicy};

    use std::time::Duration;

    use super::*;
    use sealbox_core::testkit::ScriptedEndpoint;
    use sealbox_worker::WorkerConfig;

    /// The file store, with its first `failures` writes failing as a full disk would.
    struct FullDisk {
        inner: FsObjectStore,
        failures: AtomicUsize,
    }

    impl FullDisk {
        fn fail(&self) -> sealbox_core::Result<()> {
            let left = self.failures.load(Ordering::SeqCst);
            if left > 0 {
                self.failures.store(left - 1, Ordering::SeqCst);
                let e = std::io::Error::from(std::io::ErrorKind::StorageFull);
                return Err(sealbox_core::Error::io("writing the outbox", e));
            }
            Ok(())
        }
    }

    #[async_trait]
    impl ObjectStore for FullDisk {
        async fn put_opts(
            &self,
            bucket: &str,
            key: &str,
            body: Bytes,
            opts: PutOptions,
        ) -> sealbox_core::Result<ObjectMeta> {
            self.fail()?;
            self.inner.put_opts(bucket, key, body, opts).await
        }
        async fn put_stream_opts(
            &self,
            bucket: &str,
            key: &str,
            body: ByteStream,
            opts: PutOptions,
        ) -> sealbox_core::Result<ObjectMeta> {
            self.fail()?;
            self.inner.put_stream_opts(bucket, key, body, opts).await
        }
        async fn get(
            &self,
            bucket: &str,
            key: &str,
            max: u64,
        ) -> sealbox_core::Result<(ObjectMeta, Bytes)> {
            self.inner.get(bucket, key, max).await
        }
        async fn get_stream(
            &self,
            bucket: &str,
            key: &str,
        ) -> sealbox_core::Result<(ObjectMeta, ByteStream)> {
            self.inner.get_stream(bucket, key).await
        }
        async fn head(&self, bucket: &str, key: &str) -> sealbox_core::Result<Option<ObjectMeta>> {
            self.inner.head(bucket, key).await
        }
        async fn list(
            &self,
            bucket: &str,
            prefix: &str,
            start_after: Option<&str>,
            max: usize,
        ) -> sealbox_core::Result<Vec<ObjectMeta>> {
            self.inner.list(bucket, prefix, start_after, max).await
        }
        async fn delete(&self, bucket: &str, key: &str) -> sealbox_core::Result<()> {
            self.inner.delete(bucket, key).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_of_our_own_storage_holds_the_job_without_spending_receives() {
        let dir = tempfile::tempdir().unwrap();
        let inner = FsObjectStore::new(dir.path().join("buckets"), false);
        inner
            .put(
                "inbox",
                "b1/inputs/x.csv",
                Bytes::from("1,2,3,4"),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        let store = Arc::new(FullDisk {
            inner,
            failures: AtomicUsize::new(2),
        });
        let events = dir.path().join("events.ndjson");
        let worker = Arc::new(Worker::new(
            store,
            Arc::new(ScriptedEndpoint::unmetered(1 << 20)),
            Arc::new(EventLog::open(&events, false).unwrap()),
            WorkerConfig {
                inbox: "inbox".into(),
                outbox: "outbox".into(),
                invoke_attempts: 1,
                max_concurrent_invocations: 1,
            },
        ));
        // One receive only: a job that went back to the queue even once would dead-letter.
        let jobs = QueueDb::open(&dir.path().join("q.db")).unwrap().queue(
            "jobs",
            Some(RedrivePolicy {
                dead_letter_queue: "jobs-dlq".into(),
                max_receives: 1,
            }),
        );
        let now = time::OffsetDateTime::now_utc();
        let job = JobMessage {
            version: CONTRACT_VERSION,
            job_id: JobMessage::new_job_id(),
            buyer: "b1".into(),
            request_id: "r1".into(),
            request_key: request_key("b1", "r1"),
            request_etag: String::new(),
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
            notes = read_event_log(&events).unwrap_or_default();
            if !notes.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(true).unwrap();
        poller.await.unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].event, EventKind::InferenceCompleted);
        assert_eq!(notes[0].attempts, 1, "no receive was spent on the outage");
        assert_eq!(jobs.dead_count().await.unwrap(), 0);
    }
}
