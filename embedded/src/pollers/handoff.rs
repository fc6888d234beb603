//! Runs ingest and the worker in one process straight from the inbox-events queue: a request
//! that ingest accepts runs here at once, and its inbox event, kept invisible while the job
//! runs, stays the durable record until the outcome exists. Only jobs that must wait (a
//! throttled endpoint, a transient failure) go to the jobs queue, where the jobs poller or the
//! worker function takes them. Every job spared the jobs queue saves its send, receive and
//! delete. A crash loses nothing: the event comes back, and its rerun owns the claim the first
//! run made, since the job id comes from the event's message id.

use std::sync::Arc;
use std::time::Duration;

use sealbox_core::contract::{InboxEvent, JobMessage};
use sealbox_core::ports::{
    OutgoingMessage, QueueConsumer, QueueSender, ReceiveOptions, ReceivedMessage,
};
use tokio::sync::{Semaphore, mpsc, watch};

use sealbox_ingest::inbox_message::{self, InboxMessage};
use sealbox_ingest::{Dispatch, Ingest, IngestError, IngestOutcome};
use sealbox_worker::{JobReport, Worker, WorkerError};

/// Longest delay SQS gives a message (15 minutes).
const MAX_DELAY: Duration = Duration::from_secs(900);

/// How the hand-off poller behaves.
#[derive(Debug, Clone, Copy)]
pub struct PollerConfig {
    /// Jobs in progress at once (the endpoint's own cap is the worker's).
    pub concurrency: usize,
    /// Long-poll wait.
    pub wait: Duration,
    /// Visibility timeout of an inbox event; extended every half of it while its job runs.
    pub visibility_timeout: Duration,
    /// After a receive that did not fill its batch, how long to let events gather before the
    /// next one (zero: receive again at once).
    pub receive_linger: Duration,
    /// How long a handled event's message may wait for others to share its delete call.
    pub delete_linger: Duration,
}

/// What every message's task needs.
struct Shared {
    ingest: Arc<Ingest>,
    worker: Arc<Worker>,
    events: Arc<dyn QueueConsumer>,
    jobs: Arc<dyn QueueSender>,
    running: Arc<super::fair::FairSlots>,
    done: mpsc::UnboundedSender<String>,
    observer: Option<mpsc::UnboundedSender<JobReport>>,
    visibility: Duration,
}

/// Handles inbox events and runs their jobs until `shutdown` turns true, then finishes the
/// events in hand (their jobs included) and deletes them.
pub async fn run(
    ingest: Arc<Ingest>,
    worker: Arc<Worker>,
    events: Arc<dyn QueueConsumer>,
    jobs: Arc<dyn QueueSender>,
    config: PollerConfig,
    mut shutdown: watch::Receiver<bool>,
    observer: Option<mpsc::UnboundedSender<JobReport>>,
) {
    let concurrency = config.concurrency.max(1);
    // Ten places more than slots: a receive of ten never starves a slot (as the jobs poller).
    let in_hand = concurrency + 10;
    let held = Arc::new(Semaphore::new(in_hand));
    let (done, done_rx) = mpsc::unbounded_channel::<String>();
    let deleter = tokio::spawn(super::jobs::delete_in_batches(
        events.clone(),
        done_rx,
        config.delete_linger,
    ));
    let shared = Arc::new(Shared {
        ingest,
        worker,
        events: events.clone(),
        jobs,
        // Shared fairly: one buyer's burst never queues another buyer's job behind it.
        running: super::fair::FairSlots::new(concurrency),
        done,
        observer,
        visibility: config.visibility_timeout,
    });
    let opts = ReceiveOptions {
        max_messages: 10,
        wait: config.wait,
        visibility_timeout: config.visibility_timeout,
    };
    while let Some((mut places, messages)) =
        super::receive_into_places(events.as_ref(), &held, opts, &mut shutdown, "inbox events")
            .await
    {
        let partial = messages.len() < 10;
        for message in messages {
            let Some(permit) = places.split(1) else { break };
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            tokio::spawn(async move {
                handle_message(&shared, message, shutdown).await;
                drop(permit);
            });
        }
        drop(places);
        if partial && !config.receive_linger.is_zero() {
            // Light load: let the next events gather so that one receive takes several.
            tokio::select! {
                _ = tokio::time::sleep(config.receive_linger) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
    // Drain: every place back means every event in hand has been handled.
    let _ = held.acquire_many(in_hand as u32).await;
    drop(shared);
    let _ = deleter.await;
}

/// Handles one inbox-events message, keeping it invisible until each of its events is done.
async fn handle_message(s: &Shared, m: ReceivedMessage, shutdown: watch::Receiver<bool>) {
    let evs = match inbox_message::decode(&m.body) {
        Ok(InboxMessage::Events(evs)) if !evs.is_empty() => evs,
        Ok(_) => {
            let _ = s.done.send(m.receipt_handle);
            return;
        }
        Err(e) => {
            super::leave_unreadable(s.events.as_ref(), &m, &e).await;
            return;
        }
    };
    let work = handle_events(s, &m, &evs, shutdown);
    tokio::pin!(work);
    let mut heartbeat = tokio::time::interval(s.visibility / 2);
    heartbeat.tick().await;
    let result = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = heartbeat.tick() => {
                // The event is the job's only record while it runs: keep it ours.
                if let Err(e) = s.events.change_visibility(&m.receipt_handle, s.visibility).await {
                    tracing::warn!(error = %e, "could not extend the visibility of a running inbox event");
                }
            }
        }
    };
    match result {
        Ok(()) => {
            let _ = s.done.send(m.receipt_handle.clone());
        }
        Err(e) => {
            let delay = e.retry_delay(m.receive_count);
            let key = evs.first().map(|ev| ev.key.as_str()).unwrap_or_default();
            tracing::warn!(key, error = %e, retry_in_ms = delay.as_millis() as u64, "inbox event will retry");
            if let Err(e) = s.events.change_visibility(&m.receipt_handle, delay).await {
                tracing::warn!(error = %e, "could not back off; the visibility timeout will");
            }
        }
    }
}

/// Ingest decides every event of the message; each accepted job runs at once.
async fn handle_events(
    s: &Shared,
    m: &ReceivedMessage,
    evs: &[InboxEvent],
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), IngestError> {
    let job_ids: Vec<String> = (0..evs.len())
        .map(|i| JobMessage::job_id_for_event(&m.message_id, i))
        .collect();
    let mut attempt = 0u32;
    let results = loop {
        let results = s
            .ingest
            .handle_batch_via(evs, Dispatch::Caller { job_ids: &job_ids })
            .await;
        // Our own storage failing says nothing about the request: hold the event and try again,
        // so an outage spends none of its receives. Events are idempotent, so all are redone.
        let outage = results
            .iter()
            .any(|r| matches!(r, Err(IngestError::Transient(e)) if e.is_own_storage()));
        if !outage || *shutdown.borrow() {
            break results;
        }
        attempt += 1;
        tracing::warn!(message_id = %m.message_id, attempt, "storage failed; holding the inbox event without spending a receive");
        tokio::select! {
            _ = tokio::time::sleep(sealbox_core::retry::storage_retry_delay(attempt)) => {}
            _ = shutdown.changed() => {}
        }
    };
    let mut failed = Ok(());
    for result in results {
        match result {
            Ok(IngestOutcome::Accepted(job)) => {
                if let Err(e) = run_job(s, &job, m.receive_count, shutdown.clone()).await {
                    failed = Err(e);
                }
            }
            Ok(_) => {}
            Err(e) => failed = Err(e),
        }
    }
    failed
}

/// Runs an accepted job; one that must wait goes to the jobs queue with its delay (its job id
/// owns the claim there too). `Ok` once the job has its outcome or is queued.
async fn run_job(
    s: &Shared,
    job: &JobMessage,
    receive_count: u32,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), IngestError> {
    let body = serde_json::to_string(job)
        .map_err(|e| IngestError::Transient(sealbox_core::Error::json("encoding a job", e)))?;
    let mut attempt = 0u32;
    loop {
        let result = {
            let _slot = s.running.acquire(&job.buyer).await;
            s.worker.process(&body, receive_count).await
        };
        match result {
            Ok((_, report)) => {
                if let Some(o) = &s.observer {
                    let _ = o.send(report);
                }
                return Ok(());
            }
            Err(WorkerError::Retryable(e)) if e.is_own_storage() && !*shutdown.borrow() => {
                attempt += 1;
                let delay = sealbox_core::retry::storage_retry_delay(attempt);
                tracing::warn!(request_id = %job.request_id, error = %e, attempt, retry_in_ms = delay.as_millis() as u64, "storage failed; holding the job without spending a receive");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = shutdown.changed() => {}
                }
            }
            Err(WorkerError::Retryable(e)) => {
                let delay = sealbox_worker::retry_delay_after(&e, receive_count).min(MAX_DELAY);
                tracing::warn!(request_id = %job.request_id, error = %e, retry_in_ms = delay.as_millis() as u64, "job will retry from the jobs queue");
                let message = OutgoingMessage {
                    body,
                    delay,
                    group: Some(job.buyer.clone()),
                };
                return s
                    .jobs
                    .send_batch(std::slice::from_ref(&message))
                    .await
                    .map(|_| ())
                    .map_err(IngestError::Transient);
            }
            Err(WorkerError::MalformedJob(e)) => {
                // A job this process just wrote: a bug, not the buyer's. The event comes back
                // and, after its receives, goes to the dead-letter queue for a look.
                return Err(IngestError::Transient(sealbox_core::Error::Task(format!(
                    "a job made here does not parse: {e}"
                ))));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use async_trait::async_trait;
    use bytes::Bytes;
    use sealbox_authz::{KeyAlg, Keyset, TokenIssuer, Verifier, VerifierConfig};
    use sealbox_core::contract::{CONTRACT_VERSION, ClaimDocument, EventKind, Notification};
    use sealbox_core::layout::{claim_key, request_key, result_key};
    use sealbox_core::outcome::Outcomes;
    use sealbox_core::ports::{
        Endpoint, Invocation, InvocationOutput, ObjectStore, PutMode, QueueAdmin,
    };
    use sealbox_ingest::IngestConfig;
    use sealbox_worker::WorkerConfig;

    use super::*;
    use crate::event_log::{EventLog, read_event_log};
    use crate::fs_store::FsObjectStore;
    use crate::sqlite_queue::{QueueDb, SqliteQueue};

    /// Echoes its input, or answers that it is busy while `busy` is set.
    struct Model {
        busy: AtomicBool,
    }

    #[async_trait]
    impl Endpoint for Model {
        async fn invoke(&self, inv: Invocation) -> sealbox_core::Result<InvocationOutput> {
            if self.busy.load(Ordering::SeqCst) {
                return Err(sealbox_core::Error::EndpointUnavailable {
                    message: "throttled".into(),
                    retry_after: None,
                });
            }
            Ok(InvocationOutput {
                body: inv.body,
                content_type: inv.accept,
                custom_attributes: None,
            })
        }
        fn payload_limit(&self) -> u64 {
            1 << 20
        }
    }

    struct Rig {
        dir: tempfile::TempDir,
        store: FsObjectStore,
        events: SqliteQueue,
        jobs: SqliteQueue,
        ingest: Arc<Ingest>,
        worker: Arc<Worker>,
        log: EventLog,
    }

    fn rig(busy: bool) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let store = FsObjectStore::new(dir.path().join("buckets"), false);
        let db = QueueDb::open(&dir.path().join("q.db")).unwrap();
        let (events, jobs) = (db.queue("inbox-events", None), db.queue("jobs", None));
        let log = EventLog::open(&dir.path().join("events.ndjson"), false).unwrap();
        let keyset = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        std::fs::write(
            dir.path().join("token"),
            TokenIssuer::new(&keyset)
                .unwrap()
                .issue("b1", "p", "g-b1", Duration::from_secs(600))
                .unwrap(),
        )
        .unwrap();
        let verifier = Verifier::from_keyset(VerifierConfig::new("seller", "p"), &keyset).unwrap();
        let ingest = Arc::new(Ingest::new(
            Arc::new(store.clone()),
            Arc::new(jobs.clone()),
            Arc::new(log.clone()),
            Arc::new(verifier),
            IngestConfig {
                inbox: "inbox".into(),
                outbox: "outbox".into(),
                payload_limit: 1 << 20,
            },
        ));
        let worker = Arc::new(Worker::new(
            Arc::new(store.clone()),
            Arc::new(Model {
                busy: AtomicBool::new(busy),
            }),
            Arc::new(log.clone()),
            WorkerConfig {
                inbox: "inbox".into(),
                outbox: "outbox".into(),
                invoke_attempts: 1,
                max_concurrent_invocations: 2,
            },
        ));
        Rig {
            dir,
            store,
            events,
            jobs,
            ingest,
            worker,
            log,
        }
    }

    impl Rig {
        /// Writes a good request `r1` and its inbox event; returns the event's message id.
        async fn request(&self) -> String {
            let token = std::fs::read_to_string(self.dir.path().join("token")).unwrap();
            let body = serde_json::json!({
                "version": 1, "request_id": "r1", "token": token,
                "input": {"text": "5.1,3.5,1.4,0.2"},
                "content_type": "text/csv", "accept": "text/csv"
            });
            let meta = self
                .store
                .put(
                    "inbox",
                    &request_key("b1", "r1"),
                    Bytes::from(body.to_string()),
                    PutMode::Overwrite,
                )
                .await
                .unwrap();
            let event = InboxEvent {
                bucket: "inbox".into(),
                key: meta.key.clone(),
                etag: meta.etag,
                size: meta.size,
                event_time: meta.last_modified,
            };
            let message = OutgoingMessage::new(serde_json::to_string(&event).unwrap());
            self.events.send_batch(&[message]).await.unwrap().remove(0)
        }

        /// Runs the poller until `done` holds of the notifications (or `most` has passed), then
        /// stops it.
        async fn run_until(
            &self,
            done: impl Fn(&[Notification]) -> bool,
            most: Duration,
        ) -> Vec<Notification> {
            let (stop, stopped) = watch::channel(false);
            let poller = tokio::spawn(run(
                self.ingest.clone(),
                self.worker.clone(),
                Arc::new(self.events.clone()),
                Arc::new(self.jobs.clone()),
                PollerConfig {
                    concurrency: 2,
                    wait: Duration::from_millis(50),
                    visibility_timeout: Duration::from_secs(30),
                    receive_linger: Duration::from_millis(10),
                    delete_linger: Duration::from_millis(10),
                },
                stopped,
                None,
            ));
            let mut notes = Vec::new();
            let until = tokio::time::Instant::now() + most;
            while tokio::time::Instant::now() < until {
                notes = read_event_log(self.log.path()).unwrap_or_default();
                if done(&notes) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            stop.send(true).unwrap();
            poller.await.unwrap();
            notes
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_accepted_request_runs_from_its_event_and_never_touches_the_jobs_queue() {
        let r = rig(false);
        r.request().await;
        let notes = r
            .run_until(|n| !n.is_empty(), Duration::from_secs(10))
            .await;
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].event, EventKind::InferenceCompleted);
        let (_, out) = r
            .store
            .get("outbox", &result_key("b1", "r1"), 100)
            .await
            .unwrap();
        assert_eq!(&out[..], b"5.1,3.5,1.4,0.2");
        assert_eq!(r.jobs.stats().await.unwrap(), Default::default());
        assert_eq!(
            r.events.stats().await.unwrap(),
            Default::default(),
            "deleted"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_must_wait_goes_to_the_jobs_queue_owning_the_claim_it_made() {
        let r = rig(true);
        let message_id = r.request().await;
        let notes = r.run_until(|_| false, Duration::from_secs(2)).await;
        assert!(notes.is_empty(), "{notes:?}");
        // The event is done with; the job waits on the jobs queue, delayed.
        assert_eq!(r.events.stats().await.unwrap(), Default::default());
        let waiting = r.jobs.stats().await.unwrap();
        // Delayed by the retry delay (about a second, with jitter): visible by now or soon.
        assert_eq!(waiting.visible + waiting.delayed, 1, "{waiting:?}");
        assert_eq!(waiting.in_flight, 0, "{waiting:?}");
        let (_, claim) = r
            .store
            .get("outbox", &claim_key("b1", "r1"), 4096)
            .await
            .unwrap();
        let claim: ClaimDocument = serde_json::from_slice(&claim).unwrap();
        let job_id = JobMessage::job_id_for_event(&message_id, 0);
        assert_eq!(claim.owner, format!("job:{job_id}"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rerun_of_an_event_after_a_crash_owns_the_claim_its_first_run_made() {
        let r = rig(false);
        let message_id = r.request().await;
        // The first run claimed the request and died before the outcome.
        let (_, body) = r
            .store
            .get("inbox", &request_key("b1", "r1"), 4096)
            .await
            .unwrap();
        let etag = r
            .store
            .head("inbox", &request_key("b1", "r1"))
            .await
            .unwrap()
            .unwrap()
            .etag;
        assert!(!body.is_empty());
        let claim = ClaimDocument {
            version: CONTRACT_VERSION,
            buyer: "b1".into(),
            request_id: "r1".into(),
            owner: format!("job:{}", JobMessage::job_id_for_event(&message_id, 0)),
            request_etag: etag,
            claimed_at: time::OffsetDateTime::now_utc(),
            rejection: None,
        };
        let outcomes = Outcomes {
            store: &r.store,
            outbox: "outbox",
            notifier: &r.log,
        };
        outcomes.claim(&claim).await.unwrap();
        let notes = r
            .run_until(|n| !n.is_empty(), Duration::from_secs(10))
            .await;
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].event, EventKind::InferenceCompleted);
    }
}
