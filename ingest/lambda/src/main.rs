//! The `ingest` Lambda function. Reads its settings, builds the AWS adapters once, and hands the
//! ingest handler SQS batches of inbox events (S3 event notifications), answering with a
//! partial batch response; direct S3 invocations are handled too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_lambda_events::sqs::SqsEvent;
use lambda_runtime::{LambdaEvent, service_fn};
use sealbox_authz::jwks_source;
use sealbox_authz::{JwksVerifier, RefreshPolicy, VerifierConfig};
use sealbox_aws::config::{Settings, Var};
use sealbox_aws::dynamodb_claims;
use sealbox_aws::identity::IamTokenSource;
use sealbox_aws::lambda::{BatchMessage, Disposition, Metric, batch_response, emf, emit, settle};
use sealbox_aws::s3::S3ObjectStore;
use sealbox_aws::sdk::Clients;
use sealbox_aws::sns::SnsNotifier;
use sealbox_aws::sqs::SqsQueue;
use sealbox_core::contract::{DEFAULT_PAYLOAD_LIMIT, InboxEvent};
use sealbox_core::ports::ObjectStore;
use sealbox_ingest::inbox_message::{self, InboxMessage};
use sealbox_ingest::{Ingest, IngestConfig, IngestOutcome};
use serde_json::Value;

const FUNCTION: &str = "ingest";

/// What one instance builds once and keeps between invocations.
struct App {
    ingest: Ingest,
    verifier: Arc<JwksVerifier>,
    inbox_events: SqsQueue,
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    sealbox_aws::lambda::init_logging();
    let app = Arc::new(build().await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let app = app.clone();
        async move { handle(&app, event.payload).await }
    }))
    .await
}

async fn build() -> anyhow::Result<App> {
    let settings = Settings::from_env(&[
        Var::InboxBucket,
        Var::OutboxBucket,
        Var::InboxEventsQueueUrl,
        Var::JobsQueueUrl,
        Var::TopicArn,
        Var::Jwks,
        Var::Product,
        Var::Issuer,
        Var::TokenSource,
    ])?;
    let sdk_config = sealbox_aws::sdk::load_config().await;
    let clients = Clients::new(&sdk_config);
    let store: Arc<dyn ObjectStore> = Arc::new(S3ObjectStore::new(clients.s3.clone()));
    let source = jwks_source::at_location(settings.get(Var::Jwks), store.clone())?;
    let config = VerifierConfig::new(settings.get(Var::Issuer), settings.get(Var::Product));
    let verifier = Arc::new(JwksVerifier::new(config, source, RefreshPolicy::default()));
    if let Err(e) = verifier.refresh().await {
        // Not fatal: each invocation tries again; until then tokens get signing_keys_stale.
        tracing::error!(error = %e, "cannot read the published keys yet");
    }
    let ingest = Ingest::new(
        store.clone(),
        Arc::new(SqsQueue::new(
            clients.sqs.clone(),
            settings.get(Var::JobsQueueUrl),
        )),
        Arc::new(SnsNotifier::new(
            clients.sns.clone(),
            settings.get(Var::TopicArn),
        )),
        verifier.clone(),
        IngestConfig {
            inbox: settings.get(Var::InboxBucket).to_owned(),
            outbox: settings.get(Var::OutboxBucket).to_owned(),
            payload_limit: DEFAULT_PAYLOAD_LIMIT,
        },
    );
    // With SEALBOX_CLAIMS_TABLE, claims are conditional writes in DynamoDB.
    let ingest = match dynamodb_claims::from_settings(&clients, &settings, store.clone()) {
        Some(claims) => ingest.with_claim_store(claims),
        None => ingest,
    };
    // TokenSource: iam: a request object without a token gets one proving the function's own
    // account (its role), from the seller's token service.
    let ingest = if settings.get(Var::TokenSource) == "iam" {
        let url = Settings::from_env(&[Var::TokenServiceUrl])?;
        let url = url.get(Var::TokenServiceUrl);
        tracing::info!(token_service = %url, "request objects without a token get one with this function's AWS identity");
        ingest.with_token_source(Arc::new(IamTokenSource::new(
            sdk_config,
            url,
            settings.get(Var::Issuer),
        )))
    } else {
        ingest
    };
    let inbox_events = SqsQueue::new(clients.sqs, settings.get(Var::InboxEventsQueueUrl));
    Ok(App {
        ingest,
        verifier,
        inbox_events,
    })
}

async fn handle(app: &App, payload: Value) -> Result<Value, lambda_runtime::Error> {
    if let Err(e) = app.verifier.refresh_if_due().await {
        tracing::warn!(error = %e, "refreshing the published keys failed; keeping the last copy");
    }
    if is_direct_s3(&payload) {
        return handle_direct(app, &payload).await;
    }
    let event: SqsEvent = serde_json::from_value(payload)?;
    let started = Instant::now();
    let messages: Vec<BatchMessage> = event
        .records
        .into_iter()
        .map(|r| BatchMessage::from_record(r.message_id, r.receipt_handle, r.body, &r.attributes))
        .collect();
    // Decode every message, handle all their events as one batch (one SendMessageBatch).
    let mut decoded: Vec<Option<Vec<InboxEvent>>> = Vec::with_capacity(messages.len());
    for m in &messages {
        decoded.push(match inbox_message::decode(&m.body) {
            Ok(InboxMessage::Events(evs)) => Some(evs),
            Ok(InboxMessage::Test) => Some(Vec::new()),
            Err(e) => {
                // Left to the redrive policy: an operator sees it among the dead letters.
                tracing::error!(message_id = %m.message_id, error = %e, "an unreadable inbox event");
                None
            }
        });
    }
    let all: Vec<InboxEvent> = decoded.iter().flatten().flatten().cloned().collect();
    let mut results = app.ingest.handle_batch(&all).await.into_iter();
    let mut tally = Tally::default();
    let mut outcomes = Vec::with_capacity(messages.len());
    for (m, evs) in messages.into_iter().zip(decoded) {
        let Some(evs) = evs else {
            outcomes.push((m, Disposition::Leave));
            continue;
        };
        let mut failed: Option<std::time::Duration> = None;
        for _ in &evs {
            match results.next() {
                Some(Ok(outcome)) => tally.add(&outcome),
                Some(Err(e)) => {
                    tracing::warn!(message_id = %m.message_id, error = %e, "ingest will retry");
                    // The longest wait any of its events asks for.
                    let delay = e.retry_delay(m.receive_count);
                    failed = Some(failed.map_or(delay, |d: std::time::Duration| d.max(delay)));
                }
                None => {
                    failed = Some(failed.unwrap_or(sealbox_ingest::retry_delay(m.receive_count)))
                }
            }
        }
        let d = if let Some(delay) = failed {
            tally.retries += 1;
            Disposition::RetryAfter(delay)
        } else {
            Disposition::Done
        };
        outcomes.push((m, d));
    }
    let failures = settle(&app.inbox_events, &outcomes).await;
    tally.emit(started.elapsed());
    Ok(batch_response(&failures))
}

fn is_direct_s3(payload: &Value) -> bool {
    payload
        .get("Records")
        .and_then(|r| r.get(0))
        .and_then(|r| r.get("eventSource"))
        .and_then(Value::as_str)
        == Some("aws:s3")
}

/// S3 invoking the function itself (asynchronously): an error makes Lambda retry the event.
async fn handle_direct(app: &App, payload: &Value) -> Result<Value, lambda_runtime::Error> {
    let events = match inbox_message::decode_value(payload)? {
        InboxMessage::Events(evs) => evs,
        InboxMessage::Test => Vec::new(),
    };
    let mut tally = Tally::default();
    let started = Instant::now();
    for r in app.ingest.handle_batch(&events).await {
        tally.add(&r?);
    }
    tally.emit(started.elapsed());
    Ok(Value::Null)
}

/// Counts of one invocation, for its metrics.
#[derive(Default)]
struct Tally {
    accepted: u64,
    rejected: std::collections::BTreeMap<String, u64>,
    retries: u64,
}

impl Tally {
    fn add(&mut self, outcome: &IngestOutcome) {
        match outcome {
            IngestOutcome::Accepted(_) => self.accepted += 1,
            IngestOutcome::Rejected { reason, .. } => {
                *self.rejected.entry(reason.to_string()).or_default() += 1
            }
            IngestOutcome::AlreadyAnswered | IngestOutcome::Ignored(_) => {}
        }
    }

    fn emit(&self, took: Duration) {
        let mut docs = vec![emf(
            FUNCTION,
            None,
            &[
                Metric::count("Accepted", self.accepted),
                Metric::count("Retries", self.retries),
                Metric::millis("BatchLatency", took),
            ],
        )];
        for (reason, n) in &self.rejected {
            docs.push(emf(
                FUNCTION,
                Some(("Reason", reason)),
                &[Metric::count("Rejected", *n)],
            ));
        }
        emit(&docs);
    }
}
