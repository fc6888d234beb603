//! Runs the worker handler from the jobs queue with bounded concurrency: receives only as many
//! messages as it has free slots, keeps a long job's message invisible while it runs, deletes
//! finished messages in batches, and backs off retryable failures with jitter.

use std::sync::Arc;
use std::time::Duration;

use sealbox_core::ports::{QueueConsumer, ReceiveOptions, ReceivedMessage};
use tokio::sync::{Semaphore, mpsc, watch};

use sealbox_worker::{JobOutcome, JobReport, Worker, WorkerError};

/// How the worker poller behaves.
#[derive(Debug, Clone, Copy)]
pub struct PollerConfig {
    /// Jobs in progress at once (reading, invoking, writing); the endpoint's own cap is
    /// [`crate::WorkerConfig::max_concurrent_invocations`].
    pub concurrency: usize,
    /// Long-poll wait.
    pub wait: Duration,
    /// Visibility timeout; a running job's message is extended every half of it.
    pub visibility_timeout: Duration,
    /// How long a finished job's message may wait for others to share its delete call (up to
    /// ten); zero deletes whatever has finished at once.
    pub delete_linger: Duration,
}

impl Default for PollerConfig {
    fn default() -> Self {
        PollerConfig {
            concurrency: 16,
            wait: Duration::from_millis(500),
            visibility_timeout: Duration::from_secs(30),
            delete_linger: Duration::ZERO,
        }
    }
}

/// Runs jobs until `shutdown` turns true, then waits for the jobs in flight.
///
/// Up to `concurrency` jobs run at once, and up to as many more wait in hand, received ahead:
/// a slot that frees up starts its next job at once instead of waiting for a receive.
pub async fn run(
    worker: Arc<Worker>,
    jobs: Arc<dyn QueueConsumer>,
    config: PollerConfig,
    shutdown: watch::Receiver<bool>,
    observer: Option<mpsc::UnboundedSender<JobReport>>,
) {
    // Shared fairly: one buyer's backlog in hand never queues another buyer's job behind it.
    let running = super::FairSlots::new(config.concurrency);
    run_sharing(worker, jobs, running, config, shutdown, observer).await;
}

/// [`run`] with slots it may share with another poller: their number, not
/// `config.concurrency`, bounds the jobs in progress.
pub async fn run_sharing(
    worker: Arc<Worker>,
    jobs: Arc<dyn QueueConsumer>,
    running: Arc<super::FairSlots>,
    config: PollerConfig,
    mut shutdown: watch::Receiver<bool>,
    observer: Option<mpsc::UnboundedSender<JobReport>>,
) {
    // Receive ten at a time: with ten more places than slots, taking ten places never starves
    // a slot, and a batch costs the queue one operation instead of ten.
    let in_hand = running.size() + 10;
    let held = Arc::new(Semaphore::new(in_hand));
    let (done_tx, done_rx) = mpsc::unbounded_channel::<String>();
    let deleter = tokio::spawn(delete_in_batches(
        jobs.clone(),
        done_rx,
        config.delete_linger,
    ));
    let opts = ReceiveOptions {
        max_messages: 10,
        wait: config.wait,
        visibility_timeout: config.visibility_timeout,
    };
    while let Some((mut places, messages)) =
        super::receive_into_places(jobs.as_ref(), &held, opts, &mut shutdown, "jobs").await
    {
        for message in messages {
            let Some(permit) = places.split(1) else { break };
            let (worker, jobs, done, observer, running) = (
                worker.clone(),
                jobs.clone(),
                done_tx.clone(),
                observer.clone(),
                running.clone(),
            );
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let visibility = config.visibility_timeout;
                run_one(
                    &worker,
                    jobs.as_ref(),
                    &running,
                    message,
                    visibility,
                    &done,
                    observer,
                    shutdown,
                )
                .await;
                drop(permit);
            });
        }
        // Unused places drop here and free up.
    }
    // Drain: every place back means every job in hand has finished.
    let _ = held.acquire_many(in_hand as u32).await;
    drop(done_tx);
    let _ = deleter.await;
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    worker: &Worker,
    jobs: &dyn QueueConsumer,
    running: &Arc<super::FairSlots>,
    message: ReceivedMessage,
    visibility: Duration,
    done: &mpsc::UnboundedSender<String>,
    observer: Option<mpsc::UnboundedSender<JobReport>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let buyer = super::fair::buyer_of_job(&message.body);
    // Off the queue, this job counts as waiting or running: no longer as queued.
    running.dequeued(&buyer);
    let work = async {
        let mut attempt = 0u32;
        loop {
            let result = {
                let _slot = running.acquire(&buyer).await;
                worker.process(&message.body, message.receive_count).await
            };
            // Our own disk or database failing says nothing about the job: hold the message
            // (the heartbeat keeps it ours) and try again, so an outage spends no receives
            // and dead-letters nothing. Shutdown lets it go.
            match &result {
                Err(WorkerError::Retryable(e)) if e.is_own_storage() && !*shutdown.borrow() => {
                    attempt += 1;
                    let delay = sealbox_core::retry::storage_retry_delay(attempt);
                    tracing::warn!(message_id = %message.message_id, error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "storage failed; holding the job without spending a receive");
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = shutdown.changed() => {}
                    }
                }
                _ => break result,
            }
        }
    };
    tokio::pin!(work);
    let mut heartbeat = tokio::time::interval(visibility / 2);
    heartbeat.tick().await;
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = heartbeat.tick() => {
                // Keep a waiting or long-running job's message from going to someone else.
                if let Err(e) = jobs.change_visibility(&message.receipt_handle, visibility).await {
                    tracing::warn!(error = %e, "could not extend the visibility of a running job");
                }
            }
        }
    };
    match result {
        Ok((outcome, report)) => {
            if let JobOutcome::Failed(n) = &outcome {
                tracing::debug!(request_id = %n.request_id, "job settled as failed");
            }
            if let Some(o) = observer {
                let _ = o.send(report);
            }
            let _ = done.send(message.receipt_handle);
        }
        Err(WorkerError::MalformedJob(e)) => {
            // Leave it: after enough receives the queue moves it to the dead-letter queue.
            tracing::error!(message_id = %message.message_id, error = %e, "malformed job message");
        }
        Err(WorkerError::Retryable(e)) => {
            let delay = sealbox_worker::retry_delay_after(&e, message.receive_count);
            tracing::warn!(message_id = %message.message_id, receives = message.receive_count, error = %e, retry_in_ms = delay.as_millis() as u64, "job will retry");
            if let Err(e) = jobs.change_visibility(&message.receipt_handle, delay).await {
                tracing::warn!(error = %e, "could not back off; the visibility timeout will");
            }
        }
    }
}

/// Most receipt handles one delete call of a queue service takes (SQS: ten).
const DELETE_BATCH: usize = 10;

/// Deletes the messages whose receipt handles arrive, in batches (see `delete_linger`).
pub(crate) async fn delete_in_batches(
    jobs: Arc<dyn QueueConsumer>,
    mut rx: mpsc::UnboundedReceiver<String>,
    linger: Duration,
) {
    let mut batch = Vec::with_capacity(64);
    while rx.recv_many(&mut batch, 64).await > 0 {
        let until = tokio::time::Instant::now() + linger;
        while batch.len() < DELETE_BATCH {
            match tokio::time::timeout_at(until, rx.recv_many(&mut batch, 64)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        if let Err(e) = jobs.delete_batch(&batch).await {
            // Undeleted jobs come back; their outcome exists, so they are only announced again.
            tracing::error!(error = %e, count = batch.len(), "deleting finished jobs failed");
        }
        batch.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use crate::event_log::{EventLog, read_event_log};
    use crate::fs_store::FsObjectStore;
    use crate::sqlite_queue::{QueueDb, RedrivePolicy};
    use async_trait::async_trait;
    use bytes::Bytes;
    use sealbox_core::contract::{CONTRACT_VERSION, EventKind, InputRef, JobMessage, Split};
    use sealbox_core::layout::request_key;
    use sealbox_core::ports::{
        ByteStream, Endpoint, Invocation, InvocationOutput, ObjectMeta, ObjectStore,
        OutgoingMessage, PutMode, PutOptions, QueueAdmin, QueueSender,
    };

    use super::*;
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

    struct Echo;

    #[async_trait]
    impl Endpoint for Echo {
        async fn invoke(&self, inv: Invocation) -> sealbox_core::Result<InvocationOutput> {
            Ok(InvocationOutput {
                body: inv.body,
                content_type: inv.accept,
                custom_attributes: None,
                consumed_units: None,
            })
        }
        fn payload_limit(&self) -> u64 {
            1 << 20
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
            Arc::new(Echo),
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
            PollerConfig {
                concurrency: 1,
                wait: Duration::from_millis(100),
                visibility_timeout: Duration::from_secs(2),
                delete_linger: Duration::from_millis(20),
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
