//! Runs ingest and the worker in one process straight from the inbox-events queue: a request
//! that ingest accepts runs here at once, and its inbox event, kept invisible while the job
//! runs, stays the durable record until the outcome exists. Jobs that must wait go to the jobs
//! queue, where the jobs poller or the worker function takes them: a throttled endpoint or a
//! transient failure, and the jobs of a buyer already holding its share of the slots. The
//! inbox-events queue cannot be shared fairly between buyers (S3 sets no message group), the
//! jobs queue is: so one buyer's burst is read through at the speed of ingest and waits there,
//! and the next buyer's events behind it are read and run now, not after the burst. Every job
//! spared the jobs queue saves its send, receive and delete. A crash loses nothing: the event
//! comes back, and its rerun owns the claim the first run made, since the job id comes from the
//! event's message id.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sealbox_core::contract::{InboxEvent, JobMessage};
use sealbox_core::ports::{OutgoingMessage, QueueConsumer, QueueSender, ReceivedMessage};
use sealbox_core::queue_handler::{Disposition, Handled, QueueHandler};
use tokio::sync::{mpsc, oneshot, watch};

use sealbox_ingest::inbox_message::{self, InboxMessage};
use sealbox_ingest::{Dispatch, Ingest, IngestError, IngestOutcome};
use sealbox_worker::{JobReport, Worker};

use crate::{FairSlots, Intake, PollerConfig};

/// Longest delay SQS gives a message (15 minutes).
const MAX_DELAY: Duration = Duration::from_secs(900);

/// Inbox events in hand beyond the slots: read ahead and ingested while the slots are busy, so
/// that a buyer's burst is read through (its jobs sent to the jobs queue) at the speed of
/// ingest, not of the model.
const READ_AHEAD: usize = 40;

/// Most messages one send call of a queue service takes (SQS: ten).
const SEND_BATCH: usize = 10;

/// A job for the jobs queue, and where to say whether it got there.
type ToJobs = (OutgoingMessage, oneshot::Sender<sealbox_core::Result<()>>);

/// Handles inbox events and runs their jobs in `running`'s slots (which the jobs poller may
/// share) until `shutdown` turns true, then finishes the events in hand (their jobs included)
/// and deletes them. `config.delete_linger` is also how long a job for the jobs queue waits
/// for others to share its send call.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    ingest: Arc<Ingest>,
    worker: Arc<Worker>,
    events: Arc<dyn QueueConsumer>,
    jobs: Arc<dyn QueueSender>,
    running: Arc<FairSlots>,
    config: PollerConfig,
    shutdown: watch::Receiver<bool>,
    observer: Option<mpsc::UnboundedSender<JobReport>>,
) {
    // Ten places more than slots: a receive of ten never starves a slot (as the jobs poller);
    // and more to read ahead through a burst.
    let intake = Intake {
        in_hand: running.size() + 10 + READ_AHEAD,
        one_by_one: true,
    };
    let (to_jobs, to_jobs_rx) = mpsc::unbounded_channel::<ToJobs>();
    let sender = tokio::spawn(send_in_batches(jobs, to_jobs_rx, config.delete_linger));
    let handler = Arc::new(HandOff {
        ingest,
        worker,
        to_jobs,
        running,
        observer,
    });
    crate::run(events, handler, intake, config, shutdown).await;
    // The handler and its sender of jobs went with the poller: the sender ends once it is idle.
    let _ = sender.await;
}

/// Ingest and the worker in one: each accepted job runs at once, or waits on the jobs queue.
struct HandOff {
    ingest: Arc<Ingest>,
    worker: Arc<Worker>,
    to_jobs: mpsc::UnboundedSender<ToJobs>,
    running: Arc<FairSlots>,
    observer: Option<mpsc::UnboundedSender<JobReport>>,
}

#[async_trait]
impl QueueHandler for HandOff {
    async fn handle(
        &self,
        messages: &[ReceivedMessage],
        _deadline: Option<tokio::time::Instant>,
    ) -> Vec<Handled> {
        let mut answers = Vec::with_capacity(messages.len());
        for m in messages {
            let d = match inbox_message::decode(&m.body) {
                Ok(InboxMessage::Events(evs)) if !evs.is_empty() => {
                    self.handle_events(m, &evs).await
                }
                Ok(_) => Disposition::Done,
                Err(e) => {
                    tracing::error!(message_id = %m.message_id, receives = m.receive_count, error = %e, "an unreadable inbox event; left to the dead-letter queue");
                    sealbox_ingest::queue_handler::unreadable(m.receive_count)
                }
            };
            answers.push(Handled::plain(d));
        }
        answers
    }
}

impl HandOff {
    /// Ingest decides every event of the message; each accepted job runs at once. The message
    /// is done when every event is: held, it is handled again whole (events are idempotent).
    async fn handle_events(&self, m: &ReceivedMessage, evs: &[InboxEvent]) -> Disposition {
        let job_ids: Vec<String> = (0..evs.len())
            .map(|i| JobMessage::job_id_for_event(&m.message_id, i))
            .collect();
        let results = self
            .ingest
            .handle_batch_via(evs, Dispatch::Caller { job_ids: &job_ids })
            .await;
        let mut answer = Disposition::Done;
        for (result, ev) in results.into_iter().zip(evs) {
            let d = match result {
                Ok(IngestOutcome::Accepted(job)) => self.run_job(&job, m.receive_count).await,
                other => sealbox_ingest::queue_handler::disposition(&other, m.receive_count),
            };
            if d != Disposition::Done {
                tracing::warn!(key = %ev.key, ?d, "the inbox event will be handled again");
            }
            answer = answer.and(d);
        }
        answer
    }

    /// Runs an accepted job; one that must wait goes to the jobs queue with its delay (its job
    /// id owns the claim there too). Done once the job has its outcome or is queued.
    async fn run_job(&self, job: &JobMessage, receive_count: u32) -> Disposition {
        let body = match serde_json::to_string(job) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "encoding a job failed");
                return Disposition::RetryAfter(sealbox_ingest::BACKOFF.delay(receive_count));
            }
        };
        if !self.running.within_share(&job.buyer) {
            // This buyer holds its share of the slots and more than any other: its job waits
            // on the jobs queue, which is shared fairly between buyers, so the events behind it
            // are read and run now.
            let d = self
                .enqueue(body, Duration::ZERO, &job.buyer, receive_count)
                .await;
            if d == Disposition::Done {
                self.running.queued(&job.buyer);
            }
            return d;
        }
        let message = ReceivedMessage {
            message_id: job.job_id.clone(),
            body,
            receipt_handle: String::new(),
            receive_count,
            sent_at: std::time::SystemTime::now(),
        };
        let (handled, report) = {
            let _slot = self.running.acquire(&job.buyer).await;
            self.worker.handle_message(&message, None).await
        };
        if let (Some(o), Some(report)) = (&self.observer, report) {
            let _ = o.send(report);
        }
        match handled.disposition {
            // The job must wait: on the jobs queue, so that this event is done with.
            Disposition::RetryAfter(delay) => {
                let delay = delay.min(MAX_DELAY);
                tracing::warn!(request_id = %job.request_id, retry_in_ms = delay.as_millis() as u64, "the job will retry from the jobs queue");
                self.enqueue(message.body, delay, &job.buyer, receive_count)
                    .await
            }
            // A job this process just wrote does not parse: a bug, not the buyer's. The event
            // comes back and, after its receives, goes to the dead-letter queue for a look.
            other => other,
        }
    }

    /// Puts a job on the jobs queue; an outage of the queue holds the event. Done once the job
    /// is there.
    async fn enqueue(
        &self,
        body: String,
        delay: Duration,
        buyer: &str,
        receive_count: u32,
    ) -> Disposition {
        let message = OutgoingMessage {
            body,
            delay,
            group: Some(buyer.to_owned()),
        };
        let (reply, answer) = oneshot::channel();
        let stopped = || Err(sealbox_core::Error::Task("the jobs sender stopped".into()));
        let sent = match self.to_jobs.send((message, reply)) {
            Ok(()) => answer.await.unwrap_or_else(|_| stopped()),
            Err(_) => stopped(),
        };
        match sent {
            Ok(()) => Disposition::Done,
            Err(e) => {
                tracing::warn!(error = %e, "sending a job to the jobs queue failed");
                sealbox_ingest::queue_handler::disposition(
                    &Err(IngestError::Transient(e)),
                    receive_count,
                )
            }
        }
    }
}

/// Sends the jobs that arrive to the jobs queue in batches of up to ten (waiting up to
/// `linger` for a batch to fill), and tells each whether it got there.
async fn send_in_batches(
    jobs: Arc<dyn QueueSender>,
    mut rx: mpsc::UnboundedReceiver<ToJobs>,
    linger: Duration,
) {
    let mut batch = Vec::with_capacity(SEND_BATCH);
    while rx.recv_many(&mut batch, SEND_BATCH).await > 0 {
        let until = tokio::time::Instant::now() + linger;
        while batch.len() < SEND_BATCH {
            let room = SEND_BATCH - batch.len();
            match tokio::time::timeout_at(until, rx.recv_many(&mut batch, room)).await {
                Ok(n) if n > 0 => {}
                _ => break,
            }
        }
        let (messages, replies): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
        let sent = jobs.send_batch(&messages).await;
        for reply in replies {
            let _ = reply.send(match &sent {
                Ok(_) => Ok(()),
                // One error for every job of the batch, of the same kind (whose it is).
                Err(e) if e.is_own_storage() => Err(sealbox_core::Error::storage(
                    "sending jobs to the jobs queue",
                    e.to_string(),
                )),
                Err(e) => Err(sealbox_core::Error::Task(format!(
                    "sending jobs to the jobs queue: {e}"
                ))),
            });
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
    use sealbox_core::object_claims::ObjectClaims;
    use sealbox_core::ports::ClaimStore;
    use sealbox_core::ports::{ObjectStore, PutMode, QueueAdmin, ReceiveOptions};
    use sealbox_core::testkit::{MemoryNotifier, MemoryQueue, MemoryStore, ScriptedEndpoint};
    use sealbox_ingest::{IngestConfig, IngestPorts};
    use sealbox_worker::{WorkerConfig, WorkerPorts};

    use super::*;

    /// Receives before a message is dead-lettered: more than any test here spends.
    const MAX_RECEIVES: u32 = 100;

    struct Rig {
        tokens: std::collections::HashMap<&'static str, String>,
        store: MemoryStore,
        events: MemoryQueue,
        jobs: MemoryQueue,
        ingest: Arc<Ingest>,
        worker: Arc<Worker>,
        notifier: Arc<MemoryNotifier>,
    }

    fn rig(busy: bool) -> Rig {
        rig_with(busy, Duration::ZERO)
    }

    fn rig_with(busy: bool, latency: Duration) -> Rig {
        let store = MemoryStore::new();
        let (events, jobs) = (
            MemoryQueue::new(MAX_RECEIVES),
            MemoryQueue::new(MAX_RECEIVES),
        );
        let notifier = Arc::new(MemoryNotifier::new());
        let keyset = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        let issuer = TokenIssuer::new(&keyset).unwrap();
        let tokens = ["b1", "b2"]
            .into_iter()
            .map(|buyer| {
                let grant = format!("g-{buyer}");
                let token = issuer
                    .issue(buyer, "p", &grant, Duration::from_secs(600))
                    .unwrap();
                (buyer, token)
            })
            .collect();
        let verifier = Verifier::from_keyset(VerifierConfig::new("seller", "p"), &keyset).unwrap();
        let ingest = Arc::new(Ingest::new(
            IngestPorts {
                store: Arc::new(store.clone()),
                jobs: Arc::new(jobs.clone()),
                notifier: notifier.clone(),
                authorizer: Arc::new(verifier),
            },
            IngestConfig {
                inbox: "inbox".into(),
                outbox: "outbox".into(),
                payload_limit: 1 << 20,
            },
        ));
        let worker = Arc::new(Worker::new(
            WorkerPorts {
                store: Arc::new(store.clone()),
                endpoint: {
                    // Echoes its input after `latency`, or answers that it is busy.
                    let model = ScriptedEndpoint::unmetered(1 << 20).with_latency(latency);
                    model.set_busy(busy);
                    Arc::new(model)
                },
                notifier: notifier.clone(),
            },
            WorkerConfig {
                inbox: "inbox".into(),
                outbox: "outbox".into(),
                invoke_attempts: 1,
                max_concurrent_invocations: 2,
            },
        ));
        Rig {
            tokens,
            store,
            events,
            jobs,
            ingest,
            worker,
            notifier,
        }
    }

    impl Rig {
        /// Writes a good request `r1` of `b1` and its inbox event; returns the event's message id.
        async fn request(&self) -> String {
            self.request_of("b1", "r1").await
        }

        /// Writes a good request of `buyer` and its inbox event; returns the event's message id.
        async fn request_of(&self, buyer: &str, id: &str) -> String {
            let token = &self.tokens[buyer];
            let body = serde_json::json!({
                "version": 1, "request_id": id, "token": token,
                "input": {"text": "5.1,3.5,1.4,0.2"},
                "content_type": "text/csv", "accept": "text/csv"
            });
            let meta = self
                .store
                .put(
                    "inbox",
                    &request_key(buyer, id),
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

        /// Runs the poller (and a jobs poller sharing its slots, with `jobs_poller`) until
        /// `done` holds of the notifications (or `most` has passed), then stops it.
        async fn run_until(
            &self,
            done: impl Fn(&[Notification]) -> bool,
            most: Duration,
            jobs_poller: bool,
        ) -> Vec<Notification> {
            let (stop, stopped) = watch::channel(false);
            // Two slots, shared with a jobs poller as in `sealbox up --backend aws`.
            let slots = crate::FairSlots::new(2);
            let poller = tokio::spawn(run(
                self.ingest.clone(),
                self.worker.clone(),
                Arc::new(self.events.clone()),
                Arc::new(self.jobs.clone()),
                slots.clone(),
                PollerConfig {
                    wait: Duration::from_millis(50),
                    visibility_timeout: Duration::from_secs(30),
                    receive_linger: Duration::from_millis(10),
                    delete_linger: Duration::from_millis(10),
                },
                stopped.clone(),
                None,
            ));
            let jobs_poller = jobs_poller.then(|| {
                tokio::spawn(crate::jobs::run(
                    self.worker.clone(),
                    Arc::new(self.jobs.clone()),
                    slots,
                    PollerConfig {
                        wait: Duration::from_millis(50),
                        visibility_timeout: Duration::from_secs(30),
                        delete_linger: Duration::from_millis(10),
                        ..PollerConfig::default()
                    },
                    stopped,
                    None,
                ))
            });
            let mut notes = Vec::new();
            let until = tokio::time::Instant::now() + most;
            while tokio::time::Instant::now() < until {
                notes = self.notifier.published();
                if done(&notes) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            stop.send(true).unwrap();
            poller.await.unwrap();
            if let Some(p) = jobs_poller {
                p.await.unwrap();
            }
            notes
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_accepted_request_runs_from_its_event_and_never_touches_the_jobs_queue() {
        let r = rig(false);
        r.request().await;
        let notes = r
            .run_until(|n| !n.is_empty(), Duration::from_secs(10), false)
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
        let notes = r.run_until(|_| false, Duration::from_secs(2), false).await;
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
        let claims = ObjectClaims::new(std::sync::Arc::new(r.store.clone()), "outbox");
        claims.claim(&claim).await.unwrap();
        let notes = r
            .run_until(|n| !n.is_empty(), Duration::from_secs(10), false)
            .await;
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert_eq!(notes[0].event, EventKind::InferenceCompleted);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_one_buyer_waits_on_the_jobs_queue_so_the_next_buyers_events_run_first() {
        let r = rig_with(false, Duration::from_millis(20));
        // b1's burst is ahead of b2's few in the inbox-events queue, which has no groups, and
        // is more than the poller holds in hand (52 places with two slots).
        for i in 0..120 {
            r.request_of("b1", &format!("a{i:03}")).await;
        }
        for i in 0..4 {
            r.request_of("b2", &format!("b{i:03}")).await;
        }
        let notes = r
            .run_until(|n| n.len() == 124, Duration::from_secs(60), true)
            .await;
        assert_eq!(notes.len(), 124, "{notes:?}");
        assert!(
            notes
                .iter()
                .all(|n| n.event == EventKind::InferenceCompleted),
            "{notes:?}"
        );
        // With two slots, b1's burst takes sixty rounds of the model; b2's four finish in the
        // first rounds after its events are read (at the speed of ingest), not after the
        // burst, nor after the burst's events that fit in hand.
        let last_b2 = notes.iter().rposition(|n| n.buyer == "b2").unwrap();
        assert!(
            last_b2 < 40,
            "b2's last came {last_b2}th of 124: {:?}",
            notes.iter().map(|n| &n.request_id).collect::<Vec<_>>()
        );
        // Everything is done with on both queues.
        assert_eq!(r.events.stats().await.unwrap(), Default::default());
        assert_eq!(r.jobs.stats().await.unwrap(), Default::default());
    }

    /// The jobs queue, down while `down` is set (an outage of our own queue).
    struct Outage {
        inner: MemoryQueue,
        down: Arc<AtomicBool>,
    }

    #[async_trait]
    impl QueueSender for Outage {
        async fn send_batch(
            &self,
            messages: &[OutgoingMessage],
        ) -> sealbox_core::Result<Vec<String>> {
            if self.down.load(Ordering::SeqCst) {
                return Err(sealbox_core::Error::storage(
                    "sending to the jobs queue",
                    "the queue service is down",
                ));
            }
            self.inner.send_batch(messages).await
        }
    }

    /// The inbox-events queue, counting the messages it hands out.
    struct CountingReceives {
        inner: MemoryQueue,
        received: Arc<std::sync::atomic::AtomicUsize>,
    }

    #[async_trait]
    impl QueueConsumer for CountingReceives {
        async fn receive(
            &self,
            options: ReceiveOptions,
        ) -> sealbox_core::Result<Vec<ReceivedMessage>> {
            let got = self.inner.receive(options).await?;
            self.received.fetch_add(got.len(), Ordering::SeqCst);
            Ok(got)
        }
        async fn delete_batch(&self, receipt_handles: &[String]) -> sealbox_core::Result<()> {
            self.inner.delete_batch(receipt_handles).await
        }
        async fn change_visibility(
            &self,
            receipt_handle: &str,
            timeout: Duration,
        ) -> sealbox_core::Result<()> {
            self.inner.change_visibility(receipt_handle, timeout).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_outage_of_the_jobs_queue_holds_the_event_in_hand_without_giving_it_back() {
        // The endpoint is busy, so the job must wait on the jobs queue, which is down.
        let r = rig(true);
        r.request().await;
        let down = Arc::new(AtomicBool::new(true));
        let received = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (stop, stopped) = watch::channel(false);
        let poller = tokio::spawn(run(
            r.ingest.clone(),
            r.worker.clone(),
            Arc::new(CountingReceives {
                inner: r.events.clone(),
                received: received.clone(),
            }),
            Arc::new(Outage {
                inner: r.jobs.clone(),
                down: down.clone(),
            }),
            crate::FairSlots::new(2),
            PollerConfig {
                wait: Duration::from_millis(50),
                visibility_timeout: Duration::from_secs(30),
                receive_linger: Duration::from_millis(10),
                delete_linger: Duration::from_millis(10),
            },
            stopped,
            None,
        ));
        // Three seconds of outage: given back, the event would come back after its retry
        // delay (at most a second for a first receive) and be received again.
        tokio::time::sleep(Duration::from_secs(3)).await;
        down.store(false, Ordering::SeqCst);
        let until = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let jobs = r.jobs.stats().await.unwrap();
            let events = r.events.stats().await.unwrap();
            if jobs.visible + jobs.delayed == 1 && events == Default::default() {
                break;
            }
            assert!(tokio::time::Instant::now() < until, "{jobs:?} {events:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stop.send(true).unwrap();
        poller.await.unwrap();
        assert_eq!(received.load(Ordering::SeqCst), 1, "received once, held");
    }
}
