//! sealbox worker: runs one job against the model endpoint and settles its single outcome.
//! The handler is a plain async function over ports: `process` (the job from its message to its
//! outcome), `invoke` (input, endpoint, result), `split` (`split: line` inputs). The pollers and
//! the worker Lambda function run it from the jobs queue through `queue_handler`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use sealbox_core::Error;
use sealbox_core::contract::{
    CONTRACT_VERSION, ClaimDocument, Input, InputRef, JobMessage, MAX_REQUEST_OBJECT_BYTES,
    Notification, OutcomeDocument, OutcomeKind, Reason, RequestObject, Split, Usage, ValidRequest,
    Violation,
};
use sealbox_core::fault::{BuyerObject, answer_for_read};
use sealbox_core::layout::result_key;
use sealbox_core::object_claims::ObjectClaims;
use sealbox_core::outcome::{Claim, Outcomes, ResultInfo};
use sealbox_core::ports::{
    ByteStream, ClaimStore, Endpoint, Invocation, Notifier, ObjectStore, PutMode, PutOptions,
};
use sealbox_core::retry::Backoff;
use time::OffsetDateTime;
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, AsyncWriteExt};

mod invoke;
mod process;
pub mod queue_handler;
mod split;

use invoke::{RunError, fail, put_result, result_options};
pub use queue_handler::{JobsHandler, disposition};

/// Why a job could not finish now; its message comes back later (or goes to the DLQ).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The job message is not contract v1: it cannot be answered and will dead-letter.
    #[error("malformed job message: {0}")]
    MalformedJob(String),
    /// The endpoint, storage or notifier failed for now (as ingest's `IngestError::Transient`).
    #[error("transient: {0}")]
    Transient(#[from] Error),
}

/// How long a job that failed for now stays away, by its receive count (see
/// [`queue_handler::disposition`]).
pub const BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(120));

/// What became of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobOutcome {
    /// A result was written (or was already there) and announced.
    Completed(Notification),
    /// A failure document was written (or was already there) and announced.
    Failed(Notification),
    /// The request object was replaced before the job ran; the new version has its own job.
    Superseded,
    /// Another attempt owns the request (its claim came first): its outcome, announced again if
    /// it exists yet.
    OwnedElsewhere(Option<Notification>),
}

/// Settings of the worker handler.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Inbox bucket.
    pub inbox: String,
    /// Outbox bucket.
    pub outbox: String,
    /// Quick in-process retries of a retryable invocation before the message is backed off.
    pub invoke_attempts: usize,
    /// Invocations in flight at once, across all jobs: the endpoint's concurrency cap.
    pub max_concurrent_invocations: usize,
}

/// What the worker measured of one job (for benchmarks and the demo).
#[derive(Debug, Clone)]
pub struct JobReport {
    /// Buyer id.
    pub buyer: String,
    /// Request id.
    pub request_id: String,
    /// Time spent inside endpoint calls.
    pub invoke_time: Duration,
    /// Number of endpoint calls.
    pub invocations: u32,
    /// Records the successful calls scored (metered units, or 1 per unmetered answer).
    pub records: u64,
    /// Whether every successful call metered its units.
    pub metered: bool,
    /// Payload bytes sent, over every call.
    pub bytes_in: u64,
    /// Bytes the successful calls answered.
    pub bytes_out: u64,
}

impl JobReport {
    /// What the job used of the endpoint, as outcomes and notifications carry it.
    pub fn usage(&self) -> Usage {
        Usage {
            invocations: self.invocations,
            records: self.records,
            metered: self.metered,
            bytes_in: self.bytes_in,
            bytes_out: self.bytes_out,
            model_ms: self.invoke_time.as_millis().min(u128::from(u64::MAX)) as u64,
        }
    }
}

/// The ports the worker runs on, by name.
pub struct WorkerPorts {
    /// Where inputs are read (the inbox) and results and outcomes written (the outbox).
    pub store: Arc<dyn ObjectStore>,
    /// The seller's model.
    pub endpoint: Arc<dyn Endpoint>,
    /// Where outcomes are announced.
    pub notifier: Arc<dyn Notifier>,
}

/// The worker handler and the ports it needs.
pub struct Worker {
    store: Arc<dyn ObjectStore>,
    endpoint: Arc<dyn Endpoint>,
    notifier: Arc<dyn Notifier>,
    // Only invocations take a slot: reading inputs and writing results overlap with them,
    // so the endpoint stays busy at its cap.
    invoke_slots: tokio::sync::Semaphore,
    /// Who owns each request: claims as objects in the outbox unless told otherwise.
    claims: Arc<dyn ClaimStore>,
    config: WorkerConfig,
}

pub(crate) struct Failure(Violation);

/// What a job finds of the request object it was accepted for.
pub(crate) enum Authorized {
    /// Still the authorized version; its inline input, if the input is inline.
    Input(Option<Vec<u8>>),
    /// Replaced by a newer version since it was authorized.
    Replaced,
    /// Cannot run, for this reason.
    Gone(Violation),
}

impl Worker {
    /// Wires the handler.
    pub fn new(ports: WorkerPorts, config: WorkerConfig) -> Self {
        let WorkerPorts {
            store,
            endpoint,
            notifier,
        } = ports;
        Worker {
            claims: Arc::new(ObjectClaims::new(store.clone(), config.outbox.clone())),
            store,
            endpoint,
            notifier,
            invoke_slots: tokio::sync::Semaphore::new(config.max_concurrent_invocations.max(1)),
            config,
        }
    }

    /// Claims (who owns each request) kept in `claims` rather than as objects in the outbox.
    pub fn with_claim_store(mut self, claims: Arc<dyn ClaimStore>) -> Self {
        self.claims = claims;
        self
    }

    pub(crate) fn outcomes(&self) -> Outcomes<'_> {
        Outcomes {
            store: self.store.as_ref(),
            outbox: &self.config.outbox,
            notifier: self.notifier.as_ref(),
            claims: self.claims.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use sealbox_core::conformance::refusing_store::RefusingStore;
    use sealbox_core::contract::{CONTRACT_VERSION, EventKind};
    use sealbox_core::layout::{failed_key, request_key};
    use sealbox_core::testkit::{MemoryNotifier, MemoryStore, ScriptedEndpoint};

    use super::*;

    struct Fixture {
        store: RefusingStore<MemoryStore>,
        echo: Arc<ScriptedEndpoint>,
        worker: Worker,
        events: Arc<MemoryNotifier>,
    }

    fn fixture(limit: u64) -> Fixture {
        let store = RefusingStore::new(MemoryStore::new());
        let events = Arc::new(MemoryNotifier::new());
        let echo = Arc::new(ScriptedEndpoint::echo(limit));
        let worker = Worker::new(
            WorkerPorts {
                store: Arc::new(store.clone()),
                endpoint: echo.clone(),
                notifier: events.clone(),
            },
            WorkerConfig {
                inbox: "inbox".into(),
                outbox: "outbox".into(),
                invoke_attempts: 3,
                max_concurrent_invocations: 4,
            },
        );
        Fixture {
            store,
            echo,
            worker,
            events,
        }
    }

    impl Fixture {
        /// The same store and event log, another model.
        fn with_model(mut self, endpoint: Arc<dyn Endpoint>) -> Self {
            self.worker = Worker::new(
                WorkerPorts {
                    store: Arc::new(self.store.clone()),
                    endpoint,
                    notifier: self.events.clone(),
                },
                self.worker.config.clone(),
            );
            self
        }

        /// A job on `input` accepted for a version of its request object that has since been
        /// replaced (the stored one has another ETag); its message body.
        async fn job_of_a_replaced_request(&self, input: InputRef) -> String {
            let j = job(input, Split::None, "\"an-older-etag\"");
            self.store
                .put(
                    "inbox",
                    &j.request_key,
                    Bytes::from("{}"),
                    PutMode::Overwrite,
                )
                .await
                .unwrap();
            serde_json::to_string(&j).unwrap()
        }

        /// Stores `input` as `b1/inputs/x.csv` and runs a job on it.
        async fn run_on_object(&self, input: &str, split: Split) -> (JobOutcome, JobReport) {
            self.store
                .put(
                    "inbox",
                    "b1/inputs/x.csv",
                    Bytes::from(input.to_owned()),
                    PutMode::Overwrite,
                )
                .await
                .unwrap();
            let key = "b1/inputs/x.csv".into();
            self.run(&job(InputRef::Object { key }, split, "")).await
        }

        /// Runs job `j` on its first delivery.
        async fn run(&self, j: &JobMessage) -> (JobOutcome, JobReport) {
            self.worker
                .process(&serde_json::to_string(j).unwrap(), 1)
                .await
                .unwrap()
        }
    }

    fn job(input: InputRef, split: Split, etag: &str) -> JobMessage {
        let now = OffsetDateTime::now_utc();
        JobMessage {
            version: CONTRACT_VERSION,
            job_id: JobMessage::new_job_id(),
            buyer: "b1".into(),
            request_id: "r1".into(),
            request_key: request_key("b1", "r1"),
            request_etag: etag.into(),
            input,
            content_type: "text/csv".into(),
            accept: "text/csv".into(),
            custom_attributes: None,
            split,
            received_at: now,
            accepted_at: now,
            deadline: now + time::Duration::hours(1),
        }
    }

    #[tokio::test]
    async fn inputs_the_store_refuses_fail_their_job_with_the_reason_at_once() {
        for split in [Split::None, Split::Line] {
            let f = fixture(1000);
            f.store.refuse("b1/inputs/x.csv");
            let (outcome, report) = f.run_on_object("1,2,3,4\n", split).await;
            let JobOutcome::Failed(n) = outcome else {
                panic!("{split:?}: {outcome:?}")
            };
            assert_eq!(n.reason, Some(Reason::InputUnreadable), "{split:?}");
            assert_eq!(report.invocations, 0, "{split:?}");
        }
        // An inline input too large for the job message is read from the request object.
        let f = fixture(1000);
        let j = job(InputRef::Inline, Split::None, "");
        f.store.refuse(&j.request_key);
        let (outcome, _) = f.run(&j).await;
        let JobOutcome::Failed(n) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(n.reason, Some(Reason::RequestUnreadable));
    }

    #[tokio::test]
    async fn split_lines_are_batched_under_the_payload_limit_and_joined_line_by_line() {
        let f = fixture(100);
        let lines: Vec<String> = (0..50).map(|i| format!("row-{i:03},1,2,3")).collect();
        let input = lines.join("\n");
        let (outcome, report) = f.run_on_object(&input, Split::Line).await;
        assert!(matches!(outcome, JobOutcome::Completed(_)), "{outcome:?}");
        let sizes = f.echo.payloads();
        assert!(
            sizes.len() > 1 && sizes.iter().all(|s| *s <= 100),
            "{sizes:?}"
        );
        assert_eq!(report.invocations as usize, sizes.len());
        let (_, out) = f
            .store
            .get("outbox", &result_key("b1", "r1"), 1 << 20)
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out), format!("{input}\n"));
    }

    #[tokio::test]
    async fn a_record_over_the_payload_limit_fails_the_job_with_its_reason() {
        let f = fixture(10);
        let (outcome, _) = f
            .run_on_object("short\nthis line is far too long\n", Split::Line)
            .await;
        let JobOutcome::Failed(n) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(n.reason, Some(Reason::InputTooLarge));
        assert!(
            f.store
                .head("outbox", &failed_key("b1", "r1"))
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn a_job_past_its_deadline_fails_without_invoking() {
        let f = fixture(1000);
        let mut j = job(
            InputRef::Object {
                key: "b1/inputs/x.csv".into(),
            },
            Split::None,
            "",
        );
        j.deadline = OffsetDateTime::now_utc() - time::Duration::seconds(1);
        let (outcome, report) = f.run(&j).await;
        let JobOutcome::Failed(n) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(n.reason, Some(Reason::DeadlineExceeded));
        assert_eq!(report.invocations, 0);
    }

    #[tokio::test]
    async fn a_replaced_request_object_does_not_run_under_the_old_authorization() {
        let f = fixture(1000);
        let j = f.job_of_a_replaced_request(InputRef::Inline).await;
        let (outcome, report) = f.worker.process(&j, 1).await.unwrap();
        assert_eq!(outcome, JobOutcome::Superseded);
        assert_eq!(report.invocations, 0);
    }

    #[tokio::test]
    async fn a_carried_input_runs_on_first_delivery_without_reading_the_request_object() {
        let f = fixture(1000);
        // The request object is already replaced: the first delivery does not look, it runs
        // the bytes ingest authorized.
        let j = f
            .job_of_a_replaced_request(InputRef::carried(b"1,2,3,4".to_vec()))
            .await;
        let (outcome, report) = f.worker.process(&j, 1).await.unwrap();
        assert!(matches!(outcome, JobOutcome::Completed(_)), "{outcome:?}");
        assert_eq!(f.echo.payloads(), [7]);
        let (_, out) = f
            .store
            .get("outbox", &result_key("b1", "r1"), 100)
            .await
            .unwrap();
        assert_eq!(&out[..], b"1,2,3,4");
        assert_eq!(report.invocations, 1);
    }

    #[tokio::test]
    async fn a_redelivered_carried_input_whose_request_was_replaced_is_superseded() {
        let f = fixture(1000);
        let j = f
            .job_of_a_replaced_request(InputRef::carried(b"1,2,3,4".to_vec()))
            .await;
        let (outcome, report) = f.worker.process(&j, 2).await.unwrap();
        assert_eq!(outcome, JobOutcome::Superseded);
        assert_eq!(report.invocations, 0);
    }

    #[tokio::test]
    async fn a_carried_input_that_is_not_base64_fails_the_job_with_a_reason() {
        let f = fixture(1000);
        let j = job(
            InputRef::Carried {
                text: None,
                base64: Some("%%%".into()),
            },
            Split::None,
            "",
        );
        let (outcome, _) = f.run(&j).await;
        let JobOutcome::Failed(n) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(n.reason, Some(Reason::MalformedJob));
        assert!(f.echo.payloads().is_empty());
    }

    #[tokio::test]
    async fn a_redelivered_job_is_announced_again_with_the_same_event_id_and_not_invoked() {
        let f = fixture(1000);
        f.store
            .put(
                "inbox",
                "b1/inputs/x.csv",
                Bytes::from("1,2,3,4"),
                PutMode::Overwrite,
            )
            .await
            .unwrap();
        let body = serde_json::to_string(&job(
            InputRef::Object {
                key: "b1/inputs/x.csv".into(),
            },
            Split::None,
            "",
        ))
        .unwrap();
        f.worker.process(&body, 1).await.unwrap();
        f.worker.process(&body, 2).await.unwrap();
        assert_eq!(f.echo.payloads().len(), 1);
        let notes = f.events.published();
        assert_eq!(notes.len(), 2);
        assert!(
            notes.iter().all(
                |n| n.event == EventKind::InferenceCompleted && n.event_id == notes[0].event_id
            )
        );
    }

    #[test]
    fn a_retry_waits_at_least_as_long_as_the_endpoint_asked() {
        let throttled = |asked| Error::EndpointUnavailable {
            message: "slow down".into(),
            retry_after: asked,
        };
        let asked = Duration::from_secs(600);
        let delay = |asked| match queue_handler::disposition(
            &Err(WorkerError::Transient(throttled(asked))),
            1,
        ) {
            sealbox_core::queue_handler::Disposition::RetryAfter(d) => d,
            d => panic!("a throttled job is retried: {d:?}"),
        };
        assert_eq!(delay(Some(asked)), asked);
        assert!(delay(None) <= Duration::from_secs(120));
    }

    #[tokio::test]
    async fn a_malformed_job_message_is_an_error_not_a_panic() {
        let f = fixture(1000);
        let r = f.worker.process("{\"version\": 1}", 1).await;
        assert!(matches!(r, Err(WorkerError::MalformedJob(_))), "{r:?}");
    }

    #[tokio::test]
    async fn a_model_fault_of_its_own_fails_the_job_once_with_its_own_reason() {
        let cases: [(fn() -> Error, Reason); 2] = [
            (
                || Error::ResponseTooLarge { limit: 12 },
                Reason::ModelResponseTooLarge,
            ),
            (
                || Error::ModelFailed {
                    status: 424,
                    message: "dependency".into(),
                },
                Reason::ModelError,
            ),
        ];
        for (error, reason) in cases {
            let f = fixture(1000).with_model(Arc::new(ScriptedEndpoint::failing(1000, error)));
            let (outcome, report) = f.run_on_object("1,2,3,4", Split::None).await;
            let JobOutcome::Failed(n) = outcome else {
                panic!("{outcome:?}")
            };
            assert_eq!(n.reason, Some(reason));
            assert_eq!(report.invocations, 1, "permanent: not retried");
        }
    }

    #[tokio::test]
    async fn a_split_input_sums_its_usage_over_every_invocation_and_announces_it() {
        let f = fixture(100);
        let lines: Vec<String> = (0..50).map(|i| format!("{i},1,2,3")).collect();
        let input = lines.join("\n");
        let (outcome, report) = f.run_on_object(&input, Split::Line).await;
        let JobOutcome::Completed(n) = outcome else {
            panic!("{outcome:?}")
        };
        let sizes = f.echo.payloads();
        let sent: usize = sizes.iter().sum();
        let usage = n.usage.expect("a completed job announces its usage");
        assert!(usage.invocations > 1, "{usage:?}");
        assert_eq!(usage.invocations as usize, sizes.len());
        assert_eq!(usage.records, 50);
        assert!(usage.metered);
        assert_eq!(usage.bytes_in, sent as u64);
        assert_eq!(usage.bytes_out, sent as u64, "the echo answers what it got");
        assert_eq!(usage, report.usage());
        let head = f
            .store
            .head("outbox", &result_key("b1", "r1"))
            .await
            .unwrap();
        let stored = head.expect("the result").metadata;
        assert_eq!(Usage::from_metadata(&stored).unwrap(), Some(usage));
    }

    #[tokio::test]
    async fn a_repeated_announcement_carries_the_usage_of_the_run_that_answered() {
        let f = fixture(1000);
        let j = job(
            InputRef::Carried {
                text: Some("1,2,3,4\n5,6,7,8\n".into()),
                base64: None,
            },
            Split::None,
            "",
        );
        let body = serde_json::to_string(&j).unwrap();
        f.worker.process(&body, 1).await.unwrap();
        f.worker.process(&body, 2).await.unwrap();
        let notes = f.events.published();
        assert_eq!(notes.len(), 2);
        assert_eq!(notes[0].usage.map(|u| u.records), Some(2));
        assert_eq!(notes[1].usage, notes[0].usage);
    }

    #[tokio::test]
    async fn answers_that_meter_nothing_count_one_record_each_and_say_so() {
        let f = fixture(1000).with_model(Arc::new(ScriptedEndpoint::unmetered(10)));
        let (outcome, _) = f.run_on_object("1,2,3\n4,5,6\n7,8,9\n", Split::Line).await;
        let JobOutcome::Completed(n) = outcome else {
            panic!("{outcome:?}")
        };
        let usage = n.usage.expect("usage");
        assert_eq!(
            usage.invocations, 3,
            "one line per batch under a limit of 10"
        );
        assert_eq!(usage.records, 3);
        assert!(!usage.metered);
    }

    #[tokio::test]
    async fn a_job_that_fails_after_invoking_carries_the_usage_of_its_calls() {
        let f = fixture(1000).with_model(Arc::new(ScriptedEndpoint::failing(1000, || {
            Error::ModelFailed {
                status: 424,
                message: "dependency".into(),
            }
        })));
        let (outcome, _) = f.run_on_object("1,2,3,4", Split::None).await;
        let JobOutcome::Failed(n) = outcome else {
            panic!("{outcome:?}")
        };
        let usage = n.usage.expect("usage of the failed call");
        assert_eq!((usage.invocations, usage.records), (1, 0));
        assert_eq!(usage.bytes_in, 7);
        let (_, doc) = f
            .store
            .get("outbox", &failed_key("b1", "r1"), 1 << 16)
            .await
            .unwrap();
        let doc: OutcomeDocument = serde_json::from_slice(&doc).unwrap();
        assert_eq!(doc.usage, Some(usage));
    }

    #[tokio::test]
    async fn a_job_that_fails_before_invoking_carries_no_usage() {
        let f = fixture(1000);
        f.store.refuse("b1/inputs/x.csv");
        let (outcome, _) = f.run_on_object("1,2,3,4\n", Split::None).await;
        let JobOutcome::Failed(n) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(n.usage, None);
    }
}
