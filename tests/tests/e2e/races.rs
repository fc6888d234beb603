//! Exactly one outcome for certain: the races around a request's claim, forced into each
//! interleaving by a model that holds its first call until the test lets it go (no sleeps).
//!
//! Each test runs the real handlers (ingest, worker) over the real embedded adapters (file
//! store, SQLite queue, event log); only the model is a stand-in, so that a job can be held
//! while it owns the claim.
// Test support: a panic is how a test reports a broken precondition.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use sealbox_authz::{KeyAlg, Keyset, TokenIssuer, Verifier, VerifierConfig};
use sealbox_core::contract::{
    CONTRACT_VERSION, ClaimDocument, EventKind, InboxEvent, JobMessage, Notification,
    OutcomeDocument, OutcomeKind, Reason, Violation, event_id,
};
use sealbox_core::layout::{claim_key, failed_key, rejected_key, request_key, result_key};
use sealbox_core::ports::{
    Endpoint, Invocation, InvocationOutput, ObjectStore, PutMode, QueueConsumer, ReceiveOptions,
};
use sealbox_embedded::event_log::{EventLog, read_event_log};
use sealbox_embedded::fs_store::FsObjectStore;
use sealbox_embedded::sqlite_queue::{QueueDb, SqliteQueue};
use sealbox_ingest::{Ingest, IngestConfig, IngestOutcome, IngestPorts};
use sealbox_worker::{JobOutcome, Worker, WorkerConfig, WorkerPorts};
use tokio::sync::Semaphore;

const BUYER: &str = "111122223333";
const ID: &str = "order-1";

/// A model whose calls wait for a permit: the test decides when a running job may finish.
struct HeldModel {
    calls: AtomicUsize,
    entered: Semaphore,
    release: Semaphore,
}

#[async_trait]
impl Endpoint for HeldModel {
    async fn invoke(&self, inv: Invocation) -> sealbox_core::Result<InvocationOutput> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.entered.add_permits(1);
        let permit = self
            .release
            .acquire()
            .await
            .map_err(|e| sealbox_core::Error::Task(e.to_string()))?;
        permit.forget();
        Ok(InvocationOutput {
            body: Bytes::from(format!("answer to {} bytes\n", inv.body.len())),
            content_type: inv.accept,
            custom_attributes: None,
            consumed_units: None,
        })
    }
    fn payload_limit(&self) -> u64 {
        1 << 20
    }
}

struct Rig {
    dir: tempfile::TempDir,
    store: FsObjectStore,
    jobs: SqliteQueue,
    ingest: Ingest,
    worker: Arc<Worker>,
    model: Arc<HeldModel>,
    token: String,
}

fn rig() -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let store = FsObjectStore::new(dir.path().join("buckets"), false);
    let jobs = QueueDb::open(&dir.path().join("queues.db"))
        .unwrap()
        .queue("jobs", None);
    let keyset = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
    let token = TokenIssuer::new(&keyset)
        .unwrap()
        .issue(BUYER, "product", "g-test", Duration::from_secs(600))
        .unwrap();
    let verifier =
        Verifier::from_keyset(VerifierConfig::new("seller", "product"), &keyset).unwrap();
    let events = dir.path().join("events.ndjson");
    let notifier = Arc::new(EventLog::open(&events, false).unwrap());
    let ingest = Ingest::new(
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
    );
    let model = Arc::new(HeldModel {
        calls: AtomicUsize::new(0),
        entered: Semaphore::new(0),
        release: Semaphore::new(0),
    });
    let worker = Arc::new(Worker::new(
        WorkerPorts {
            store: Arc::new(store.clone()),
            endpoint: model.clone(),
            notifier,
        },
        WorkerConfig {
            inbox: "inbox".into(),
            outbox: "outbox".into(),
            invoke_attempts: 1,
            max_concurrent_invocations: 4,
        },
    ));
    Rig {
        dir,
        store,
        jobs,
        ingest,
        worker,
        model,
        token,
    }
}

impl Rig {
    /// Stores a version of the request object (`text` as its input, or a broken token) and
    /// returns the inbox event S3 would send for it.
    async fn put_version(&self, text: &str, good_token: bool) -> InboxEvent {
        let token = if good_token {
            self.token.as_str()
        } else {
            "not-a-token"
        };
        let body = serde_json::json!({
            "version": 1, "request_id": ID, "token": token, "input": {"text": text},
            "content_type": "text/csv", "accept": "text/csv"
        });
        let key = request_key(BUYER, ID);
        let meta = self
            .store
            .put(
                "inbox",
                &key,
                Bytes::from(body.to_string()),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        InboxEvent {
            bucket: "inbox".into(),
            key,
            etag: meta.etag,
            size: meta.size,
            event_time: meta.last_modified,
        }
    }

    /// Ingests an event that must be accepted, and returns its job message as sent.
    async fn accept(&self, ev: &InboxEvent) -> String {
        let out = self.ingest.handle(ev).await.unwrap();
        assert!(matches!(out, IngestOutcome::Accepted(_)), "{out:?}");
        let opts = ReceiveOptions {
            max_messages: 1,
            wait: Duration::ZERO,
            visibility_timeout: Duration::from_secs(60),
        };
        self.jobs.receive(opts).await.unwrap().remove(0).body
    }

    /// Runs a job in the background.
    fn spawn_job(&self, body: String) -> tokio::task::JoinHandle<JobOutcome> {
        let worker = self.worker.clone();
        tokio::spawn(async move { worker.process(&body, 1).await.unwrap().0 })
    }

    /// Waits until the model holds a call.
    async fn model_entered(&self) {
        self.model.entered.acquire().await.unwrap().forget();
    }

    /// Writes a claim as an attempt that then died would have left it.
    async fn put_claim(&self, owner: &str, etag: &str, rejection: Option<OutcomeDocument>) {
        let claim = ClaimDocument {
            version: CONTRACT_VERSION,
            buyer: BUYER.into(),
            request_id: ID.into(),
            owner: owner.into(),
            request_etag: etag.into(),
            claimed_at: time::OffsetDateTime::now_utc(),
            rejection,
        };
        self.store
            .put(
                "outbox",
                &claim_key(BUYER, ID),
                Bytes::from(serde_json::to_vec(&claim).unwrap()),
                PutMode::CreateNew,
            )
            .await
            .unwrap();
    }

    /// Outcome objects of the request (claims excluded).
    async fn outcome_keys(&self) -> Vec<String> {
        let mut found = Vec::new();
        for key in [
            result_key(BUYER, ID),
            failed_key(BUYER, ID),
            rejected_key(BUYER, ID),
        ] {
            if self.store.head("outbox", &key).await.unwrap().is_some() {
                found.push(key);
            }
        }
        found
    }

    fn notes(&self) -> Vec<Notification> {
        read_event_log(&self.dir.path().join("events.ndjson")).unwrap()
    }

    /// The job announced the rejection that owns the request, and the model was never called.
    async fn assert_only_the_rejection_announced(&self, outcome: &JobOutcome) {
        assert!(
            matches!(outcome, JobOutcome::OwnedElsewhere(Some(_))),
            "{outcome:?}"
        );
        assert_eq!(self.model.calls.load(Ordering::SeqCst), 0);
        self.assert_one_outcome(&rejected_key(BUYER, ID), EventKind::RequestRejected)
            .await;
    }

    /// One outcome of this kind, and every notification of the request announces it.
    async fn assert_one_outcome(&self, key: &str, event: EventKind) {
        assert_eq!(self.outcome_keys().await, [key.to_owned()]);
        let notes = self.notes();
        assert!(!notes.is_empty());
        for n in &notes {
            assert_eq!(
                (n.event, n.event_id.as_str()),
                (event, event_id(BUYER, ID).as_str()),
                "{notes:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_replaced_while_its_job_runs_keeps_the_first_outcome_alone() {
    let r = rig();
    let first = r.put_version("5.1,3.5,1.4,0.2", true).await;
    let job = r.accept(&first).await;
    let running = r.spawn_job(job);
    r.model_entered().await;

    // The buyer replaces the request while its job holds the claim; the new version is good
    // and accepted, but its job finds the claim taken and leaves the request to its owner.
    let second = r.put_version("6.3,3.3,6.0,2.5", true).await;
    let newer = r.accept(&second).await;
    let (outcome, report) = r.worker.process(&newer, 1).await.unwrap();
    assert_eq!(outcome, JobOutcome::OwnedElsewhere(None));
    assert_eq!(report.invocations, 0);

    r.model.release.add_permits(1);
    assert!(matches!(running.await.unwrap(), JobOutcome::Completed(_)));
    assert_eq!(r.model.calls.load(Ordering::SeqCst), 1);
    r.assert_one_outcome(&result_key(BUYER, ID), EventKind::InferenceCompleted)
        .await;

    // Once the outcome exists, the newer job (redelivered) announces it again, same event_id.
    let (outcome, _) = r.worker.process(&newer, 2).await.unwrap();
    assert!(
        matches!(outcome, JobOutcome::OwnedElsewhere(Some(_))),
        "{outcome:?}"
    );
    r.assert_one_outcome(&result_key(BUYER, ID), EventKind::InferenceCompleted)
        .await;
    assert_eq!(r.notes().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_for_one_request_id_at_once_invoke_the_model_once() {
    let r = rig();
    let ev = r.put_version("5.1,3.5,1.4,0.2", true).await;
    // The same event delivered twice (S3 notifications are at least once): two jobs.
    let a = r.accept(&ev).await;
    let b = r.accept(&ev).await;
    assert_ne!(a, b, "each job message has its own job id");
    let first = r.spawn_job(a);
    r.model_entered().await;
    let second = r.spawn_job(b);
    assert_eq!(second.await.unwrap(), JobOutcome::OwnedElsewhere(None));
    r.model.release.add_permits(1);
    assert!(matches!(first.await.unwrap(), JobOutcome::Completed(_)));
    assert_eq!(r.model.calls.load(Ordering::SeqCst), 1);
    r.assert_one_outcome(&result_key(BUYER, ID), EventKind::InferenceCompleted)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_jobs_started_together_have_one_owner_whichever_claims_first() {
    let r = rig();
    let ev = r.put_version("5.1,3.5,1.4,0.2", true).await;
    let a = r.accept(&ev).await;
    let b = r.accept(&ev).await;
    // Both start at once; only the owner reaches the model, so one permit finishes the race.
    r.model.release.add_permits(1);
    let (x, y) = tokio::join!(r.spawn_job(a), r.spawn_job(b));
    let outcomes = [x.unwrap(), y.unwrap()];
    let completed = outcomes
        .iter()
        .filter(|o| matches!(o, JobOutcome::Completed(_)))
        .count();
    assert_eq!(completed, 1, "{outcomes:?}");
    assert_eq!(r.model.calls.load(Ordering::SeqCst), 1);
    r.assert_one_outcome(&result_key(BUYER, ID), EventKind::InferenceCompleted)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_rejection_racing_a_running_job_writes_nothing() {
    let r = rig();
    let good = r.put_version("5.1,3.5,1.4,0.2", true).await;
    let job = r.accept(&good).await;
    let running = r.spawn_job(job);
    r.model_entered().await;

    // A broken copy lands while the job holds the claim: ingest would reject it, but the
    // request id is taken, so it writes no rejection.
    let bad = r.put_version("5.1,3.5,1.4,0.2", false).await;
    assert_eq!(
        r.ingest.handle(&bad).await.unwrap(),
        IngestOutcome::OwnedElsewhere
    );
    r.model.release.add_permits(1);
    assert!(matches!(running.await.unwrap(), JobOutcome::Completed(_)));
    r.assert_one_outcome(&result_key(BUYER, ID), EventKind::InferenceCompleted)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_after_an_ingest_rejection_announces_the_rejection_and_never_invokes() {
    let r = rig();
    let good = r.put_version("5.1,3.5,1.4,0.2", true).await;
    let queued = r.accept(&good).await;
    // Replaced by a broken version before its job runs: ingest rejects and claims the id.
    let bad = r.put_version("x", false).await;
    let out = r.ingest.handle(&bad).await.unwrap();
    assert!(matches!(out, IngestOutcome::Rejected { .. }), "{out:?}");
    // The queued job carries the input it was accepted with, and the rejection's claim came
    // first: it announces the rejection (same event id) and writes nothing.
    let (outcome, _) = r.worker.process(&queued, 1).await.unwrap();
    r.assert_only_the_rejection_announced(&outcome).await;
    // A good version after that is accepted, but its job only announces the rejection.
    let again = r.put_version("6.3,3.3,6.0,2.5", true).await;
    let later = r.accept(&again).await;
    let (outcome, _) = r.worker.process(&later, 1).await.unwrap();
    r.assert_only_the_rejection_announced(&outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejection_whose_writer_stopped_after_claiming_is_finished_by_the_next_attempt() {
    let r = rig();
    // Ingest claimed the id for its rejection and died before writing the document.
    let mut doc = OutcomeDocument::new(
        OutcomeKind::Rejected,
        BUYER,
        ID,
        &request_key(BUYER, ID),
        &Violation::new(Reason::TokenMalformed, "token", "not a JWT"),
    );
    doc.attempts = 0;
    r.put_claim("ingest:\"gone\"", "\"gone\"", Some(doc)).await;
    let ev = r.put_version("5.1,3.5,1.4,0.2", true).await;
    let job = r.accept(&ev).await;
    let (outcome, _) = r.worker.process(&job, 1).await.unwrap();
    r.assert_only_the_rejection_announced(&outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_whose_request_was_replaced_after_it_claimed_answers_with_a_reason() {
    let r = rig();
    let ev = r.put_version("5.1,3.5,1.4,0.2", true).await;
    let body = r.accept(&ev).await;
    let job: JobMessage = serde_json::from_str(&body).unwrap();
    // The first delivery claimed the id and died; then the buyer replaced the request.
    r.put_claim(&job.owner(), &job.request_etag, None).await;
    r.put_version("6.3,3.3,6.0,2.5", true).await;
    let (outcome, _) = r.worker.process(&body, 2).await.unwrap();
    let JobOutcome::Failed(n) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(n.reason, Some(Reason::RequestReplaced));
    r.assert_one_outcome(&failed_key(BUYER, ID), EventKind::InferenceFailed)
        .await;
}
