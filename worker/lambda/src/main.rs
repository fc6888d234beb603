//! The `worker` Lambda function. Reads its settings, builds the AWS adapters once, and runs the
//! worker handler on SQS batches of jobs, each bounded by the time the invocation has left,
//! answering with a partial batch response.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use sealbox_aws::config::{Settings, Var};
use sealbox_aws::dynamodb_claims;
use sealbox_aws::lambda::{BatchMessage, Disposition, Metric, batch_response, emf, emit, settle};
use sealbox_aws::s3::S3ObjectStore;
use sealbox_aws::sagemaker::SageMakerEndpoint;
use sealbox_aws::sdk::Clients;
use sealbox_aws::sns::{BatchingSnsNotifier, SnsNotifier};
use sealbox_aws::sqs::SqsQueue;
use sealbox_core::ports::ObjectStore;
use sealbox_worker::{JobOutcome, JobReport, Worker, WorkerConfig, WorkerError};
use serde_json::Value;
use tokio::task::JoinSet;

const FUNCTION: &str = "worker";
/// How long a notification waits for the batch's others to share its `PublishBatch`: short,
/// since the records of a batch run together and waiting is billed time.
const PUBLISH_LINGER: Duration = Duration::from_millis(20);
/// Kept back from the invocation's deadline to settle the batch and answer.
const DEADLINE_MARGIN: Duration = Duration::from_secs(2);

struct App {
    worker: Arc<Worker>,
    jobs: SqsQueue,
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    sealbox_aws::lambda::init_logging();
    let app = Arc::new(build().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let app = app.clone();
        async move {
            let deadline = event.context.deadline();
            handle(&app, event.payload, deadline).await
        }
    }))
    .await
}

async fn build() -> anyhow::Result<App> {
    let settings = Settings::from_env(&[
        Var::InboxBucket,
        Var::OutboxBucket,
        Var::JobsQueueUrl,
        Var::TopicArn,
        Var::EndpointName,
    ])?;
    // The endpoint's concurrency is shared by every instance: the event source mapping's
    // maximum concurrency caps instances, this caps calls per instance.
    let per_instance = std::env::var("SEALBOX_MAX_CONCURRENT_INVOCATIONS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(4);
    let clients = Clients::from_env().await;
    let store: Arc<dyn ObjectStore> = Arc::new(S3ObjectStore::new(clients.s3.clone()));
    let claims = dynamodb_claims::from_settings(&clients, &settings, store.clone());
    let worker = Worker::new(
        store,
        Arc::new(SageMakerEndpoint::new(
            clients.sagemaker.clone(),
            settings.get(Var::EndpointName),
        )),
        // The records of a batch run together: their notifications share PublishBatch calls.
        Arc::new(BatchingSnsNotifier::start(
            SnsNotifier::new(clients.sns.clone(), settings.get(Var::TopicArn)),
            PUBLISH_LINGER,
        )),
        WorkerConfig {
            inbox: settings.get(Var::InboxBucket).to_owned(),
            outbox: settings.get(Var::OutboxBucket).to_owned(),
            invoke_attempts: 3,
            max_concurrent_invocations: per_instance,
        },
    );
    // With SEALBOX_CLAIMS_TABLE, claims are conditional writes in DynamoDB.
    let worker = match claims {
        Some(claims) => worker.with_claim_store(claims),
        None => worker,
    };
    Ok(App {
        worker: Arc::new(worker),
        jobs: SqsQueue::new(clients.sqs, settings.get(Var::JobsQueueUrl)),
    })
}

type JobResult = Result<Result<(JobOutcome, JobReport), WorkerError>, tokio::time::error::Elapsed>;

async fn handle(
    app: &App,
    payload: Value,
    deadline: SystemTime,
) -> Result<Value, lambda_runtime::Error> {
    let event: SqsEvent = serde_json::from_value(payload)?;
    let budget = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default()
        .saturating_sub(DEADLINE_MARGIN);
    let mut running = JoinSet::new();
    for (i, r) in event.records.into_iter().enumerate() {
        let message =
            BatchMessage::from_record(r.message_id, r.receipt_handle, r.body, &r.attributes);
        let worker = app.worker.clone();
        running.spawn(async move {
            let result: JobResult =
                tokio::time::timeout(budget, worker.process(&message.body, message.receive_count))
                    .await;
            (i, message, result)
        });
    }
    let mut finished = Vec::new();
    while let Some(joined) = running.join_next().await {
        match joined {
            Ok(done) => finished.push(done),
            // A panicking job: its message was not settled, so it comes back by itself.
            Err(e) => tracing::error!(error = %e, "a job task failed"),
        }
    }
    finished.sort_by_key(|(i, _, _)| *i);
    let mut tally = Tally::default();
    let outcomes: Vec<(BatchMessage, Disposition)> = finished
        .into_iter()
        .map(|(_, m, result)| {
            let d = disposition(&m, result, &mut tally);
            (m, d)
        })
        .collect();
    let failures = settle(&app.jobs, &outcomes).await;
    tally.emit();
    Ok(batch_response(&failures))
}

fn disposition(m: &BatchMessage, result: JobResult, tally: &mut Tally) -> Disposition {
    match result {
        Ok(Ok((outcome, report))) => {
            tally.add(&outcome, &report);
            Disposition::Done
        }
        Ok(Err(WorkerError::MalformedJob(e))) => {
            // Nobody can run it: the redrive policy dead-letters it after its receives.
            tracing::error!(message_id = %m.message_id, error = %e, "malformed job message");
            Disposition::Leave
        }
        Ok(Err(WorkerError::Retryable(e))) => {
            let delay = sealbox_worker::retry_delay_after(&e, m.receive_count);
            tracing::warn!(message_id = %m.message_id, receives = m.receive_count, error = %e, retry_in_ms = delay.as_millis() as u64, "job will retry");
            tally.retries += 1;
            Disposition::RetryAfter(delay)
        }
        Err(_) => {
            tracing::warn!(message_id = %m.message_id, "the invocation's time ran out; the job will retry");
            tally.retries += 1;
            Disposition::RetryAfter(sealbox_worker::retry_delay(m.receive_count))
        }
    }
}

/// Counts and latencies of one invocation, for its metrics.
#[derive(Default)]
struct Tally {
    completed: u64,
    failed: u64,
    retries: u64,
    invoke: Vec<Duration>,
    end_to_end: Vec<Duration>,
}

impl Tally {
    fn add(&mut self, outcome: &JobOutcome, report: &JobReport) {
        let n = match outcome {
            JobOutcome::Completed(n) => {
                self.completed += 1;
                n
            }
            JobOutcome::Failed(n) => {
                self.failed += 1;
                n
            }
            JobOutcome::Superseded | JobOutcome::OwnedElsewhere(_) => return,
        };
        if report.invocations > 0 {
            self.invoke.push(report.invoke_time);
        }
        let e2e = n.completed_at - n.received_at;
        self.end_to_end
            .push(Duration::try_from(e2e).unwrap_or_default());
    }

    fn emit(&self) {
        let mut metrics = vec![
            Metric::count("Completed", self.completed),
            Metric::count("Failed", self.failed),
            Metric::count("Retries", self.retries),
        ];
        // One value per document keeps EMF simple; CloudWatch aggregates the lines.
        let mut docs = Vec::new();
        for d in &self.invoke {
            docs.push(emf(FUNCTION, None, &[Metric::millis("InvokeLatency", *d)]));
        }
        for d in &self.end_to_end {
            docs.push(emf(
                FUNCTION,
                None,
                &[Metric::millis("EndToEndLatency", *d)],
            ));
        }
        docs.insert(0, emf(FUNCTION, None, &std::mem::take(&mut metrics)));
        emit(&docs);
    }
}
