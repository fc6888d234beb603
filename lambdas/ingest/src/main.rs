//! The `ingest` Lambda function: reads its settings, builds the AWS adapters once, and runs the
//! ingest handler on SQS batches of inbox events (or S3 invoking it directly) through the one
//! batch runner.

use std::sync::Arc;

use sealbox_authz::{JwksVerifier, RefreshPolicy, VerifierConfig, jwks_source};
use sealbox_aws::config::{Settings, Var};
use sealbox_aws::identity::IamTokenSource;
use sealbox_aws::sdk::{Clients, load_config};
use sealbox_aws::{dynamodb_claims, lambda, s3::S3ObjectStore, sns::SnsNotifier, sqs::SqsQueue};
use sealbox_core::contract::DEFAULT_PAYLOAD_LIMIT;
use sealbox_core::ports::ObjectStore;
use sealbox_ingest::{Ingest, IngestConfig, IngestPorts};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda::init_logging();
    use Var::*;
    let settings = Settings::from_env(&Var::INGEST)?;
    let sdk_config = load_config().await;
    let clients = Clients::new(&sdk_config);
    let store: Arc<dyn ObjectStore> = Arc::new(S3ObjectStore::new(clients.s3.clone()));
    // The keys are fetched by the first request that needs them, and again when they are due.
    let source = jwks_source::at_location(settings.get(Jwks), store.clone())?;
    let config = VerifierConfig::new(settings.get(Issuer), settings.get(Product));
    let verifier = JwksVerifier::new(config, source, RefreshPolicy::default());
    let jobs = SqsQueue::new(clients.sqs.clone(), settings.get(JobsQueueUrl));
    let sns = SnsNotifier::new(clients.sns.clone(), settings.get(TopicArn));
    let mut ingest = Ingest::new(
        IngestPorts {
            store: store.clone(),
            jobs: Arc::new(jobs),
            notifier: Arc::new(sns),
            authorizer: Arc::new(verifier),
        },
        IngestConfig {
            inbox: settings.get(InboxBucket).to_owned(),
            outbox: settings.get(OutboxBucket).to_owned(),
            payload_limit: DEFAULT_PAYLOAD_LIMIT,
        },
    );
    // With SEALBOX_CLAIMS_TABLE, claims are conditional writes in DynamoDB.
    if let Some(claims) = dynamodb_claims::from_settings(&clients, &settings, store) {
        ingest = ingest.with_claim_store(claims);
    }
    // TokenSource: iam: a request object without a token gets one proving the function's own
    // account (its role), from the seller's token service.
    if let Some(source) = IamTokenSource::from_settings(sdk_config, &settings)? {
        ingest = ingest.with_token_source(source);
    }
    let events = SqsQueue::new(clients.sqs.clone(), settings.get(InboxEventsQueueUrl));
    lambda::run_sqs_batch("ingest", Arc::new(events), Arc::new(ingest), clients.calls).await
}
