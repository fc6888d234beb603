//! The `worker` Lambda function: reads its settings, builds the AWS adapters once, and runs the
//! worker handler on SQS batches of jobs, each bounded by the time the invocation has left,
//! through the one batch runner.

use std::sync::Arc;
use std::time::Duration;

use sealbox_aws::config::{Settings, Var};
use sealbox_aws::sagemaker::SageMakerEndpoint;
use sealbox_aws::sns::{BatchingSnsNotifier, SnsNotifier};
use sealbox_aws::{dynamodb_claims, lambda, s3::S3ObjectStore, sdk::Clients, sqs::SqsQueue};
use sealbox_core::ports::ObjectStore;
use sealbox_worker::{JobsHandler, Worker, WorkerConfig, WorkerPorts};

/// How long a notification waits for the batch's others to share its `PublishBatch`: short,
/// since the records of a batch run together and waiting is billed time.
const PUBLISH_LINGER: Duration = Duration::from_millis(20);

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    use Var::*;
    let settings = Settings::from_env(&Var::WORKER)?;
    // The endpoint's concurrency is shared by every instance: the event source mapping's
    // maximum concurrency caps instances, this caps calls per instance.
    let per_instance = std::env::var("SEALBOX_MAX_CONCURRENT_INVOCATIONS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(4);
    let clients = Clients::from_env().await;
    let store: Arc<dyn ObjectStore> = Arc::new(S3ObjectStore::new(clients.s3.clone()));
    let endpoint = SageMakerEndpoint::new(clients.sagemaker.clone(), settings.get(EndpointName));
    let sns = SnsNotifier::new(clients.sns.clone(), settings.get(TopicArn));
    let mut worker = Worker::new(
        WorkerPorts {
            store: store.clone(),
            endpoint: Arc::new(endpoint),
            // The records of a batch run together: their notifications share PublishBatch calls.
            notifier: Arc::new(BatchingSnsNotifier::start(sns, PUBLISH_LINGER)),
        },
        WorkerConfig {
            inbox: settings.get(InboxBucket).to_owned(),
            outbox: settings.get(OutboxBucket).to_owned(),
            invoke_attempts: 3,
            max_concurrent_invocations: per_instance,
        },
    );
    // With SEALBOX_CLAIMS_TABLE, claims are conditional writes in DynamoDB.
    if let Some(claims) = dynamodb_claims::from_settings(&clients, &settings, store) {
        worker = worker.with_claim_store(claims);
    }
    let jobs = SqsQueue::new(clients.sqs.clone(), settings.get(JobsQueueUrl));
    let handler = JobsHandler::new(Arc::new(worker));
    lambda::run_sqs_batch("worker", Arc::new(jobs), Arc::new(handler), clients.calls).await
}
