//! `sealbox aws ...`: the AWS side of the CLI, with settings from the standard AWS environment.

use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sealbox_authz::jwks_source;
use sealbox_authz::{JwksVerifier, RefreshPolicy, VerifierConfig};
use sealbox_aws::config::{Settings, Var};
use sealbox_aws::s3::S3ObjectStore;
use sealbox_aws::sagemaker::SageMakerEndpoint;
use sealbox_aws::sdk::Clients;
use sealbox_aws::sns::{BatchingSnsNotifier, SnsNotifier};
use sealbox_aws::sqs::SqsQueue;
use sealbox_core::contract::{DEFAULT_PAYLOAD_LIMIT, Notification};
use sealbox_core::ports::{Notifier, ObjectStore};
use sealbox_ingest::{Ingest, IngestConfig, IngestPorts};
use sealbox_pollers as pollers;
use sealbox_worker::{Worker, WorkerConfig, WorkerPorts};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use crate::stack::Observers;

/// `sealbox aws bootstrap --name NAME [--json]`: creates a development stack and prints the
/// settings that reach it, as `KEY=VALUE` lines or one JSON object.
pub async fn bootstrap(name: &str, json: bool) -> anyhow::Result<ExitCode> {
    if let Err(sealbox_core::Error::InvalidKey { rule, .. }) =
        sealbox_aws::bootstrap::Names::new(name)
    {
        anyhow::bail!("--name {name:?}: {rule}");
    }
    let clients = Clients::from_env().await;
    let settings = sealbox_aws::bootstrap::bootstrap(&clients, name)
        .await
        .with_context(|| format!("bootstrapping the stack {name:?} (is the AWS environment set, e.g. AWS_ENDPOINT_URL for an emulator?)"))?;
    print_settings(&settings, json);
    Ok(ExitCode::SUCCESS)
}

/// `sealbox aws teardown --name NAME`: deletes what `bootstrap` made, printing each resource.
pub async fn teardown(name: &str) -> anyhow::Result<ExitCode> {
    if let Err(sealbox_core::Error::InvalidKey { rule, .. }) =
        sealbox_aws::bootstrap::Names::new(name)
    {
        anyhow::bail!("--name {name:?}: {rule}");
    }
    let clients = Clients::from_env().await;
    let deleted = sealbox_aws::teardown::teardown(&clients, name, |d| println!("deleted {d}"))
        .await
        .with_context(|| {
            format!(
                "tearing down the stack {name:?} (what is listed above is deleted; run the \
                 command again for the rest)"
            )
        })?;
    if deleted == 0 {
        eprintln!("nothing of the stack {name:?} exists (already torn down?)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints settings as `KEY=VALUE` lines, or one JSON object.
pub(crate) fn print_settings(settings: &[(Var, String)], json: bool) {
    if json {
        let object: serde_json::Map<String, serde_json::Value> = settings
            .iter()
            .map(|(k, v)| (k.name().to_owned(), serde_json::Value::from(v.as_str())))
            .collect();
        println!("{}", serde_json::Value::Object(object));
    } else {
        for (k, v) in settings {
            println!("{}={v}", k.name());
        }
    }
}

/// The object store of the AWS environment, and the settings `needed` (every missing one
/// named at once): what `buyer submit` and `buyer results` read and write with `--backend aws`.
pub(crate) async fn object_store(needed: &[Var]) -> anyhow::Result<(S3ObjectStore, Settings)> {
    let settings = Settings::from_env(needed)?;
    let clients = Clients::from_env().await;
    Ok((S3ObjectStore::new(clients.s3.clone()), settings))
}

/// The queues whose URLs are the settings `needed`, in that order (every missing one named at
/// once): what `status` and `dlq` administer with `--backend aws`. Each finds its dead-letter
/// queue from its redrive policy on first use.
pub(crate) async fn queues(needed: &[Var]) -> anyhow::Result<Vec<SqsQueue>> {
    let settings = Settings::from_env(needed)?;
    let clients = Clients::from_env().await;
    Ok(needed
        .iter()
        .map(|&var| SqsQueue::new(clients.sqs.clone(), settings.get(var)))
        .collect())
}

/// Options of `sealbox up --backend aws`.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// Model invocations in flight at once (the endpoint's concurrency cap).
    pub concurrency: usize,
    /// How often the published keys are refreshed.
    pub jwks_refresh: Duration,
    /// Tokens are refused once the keys are older than this.
    pub jwks_max_staleness: Duration,
}

/// Jobs in hand beyond the endpoint's cap: each waits on S3, SNS or SQS, not on the model.
const JOBS_BESIDE_THE_ENDPOINT: usize = 16;

/// The pipeline of `sealbox up --backend aws` running in this process: the published keys'
/// refresher, the hand-off poller (ingest, then the worker at once on what it accepts, from the
/// inbox-events queue) and the jobs poller (the jobs that had to wait). Stop it with
/// [`Pipeline::stop`], which drains the jobs in flight.
pub struct Pipeline {
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Stops receiving and waits for the batches and jobs in hand to finish.
    pub async fn stop(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Wires ingest and the worker over `clients` with `settings` (every [`Var`]) and starts the
/// embedded pollers against the real queues. `observers` taps what `sealbox bench` measures:
/// every notification once SNS has accepted it, and the worker's report of each job.
pub async fn start_pipeline(
    clients: &Clients,
    settings: &Settings,
    opts: &UpOptions,
    observers: Observers,
) -> anyhow::Result<Pipeline> {
    let store: Arc<dyn ObjectStore> = Arc::new(S3ObjectStore::new(clients.s3.clone()));
    let sns = SnsNotifier::new(clients.sns.clone(), settings.get(Var::TopicArn));
    // Jobs settle concurrently, so the worker's notifications share PublishBatch calls;
    // ingest writes its rejections one after another, so it publishes each at once.
    let batching: Arc<dyn Notifier> = Arc::new(BatchingSnsNotifier::start(
        sns.clone(),
        sealbox_aws::BATCH_LINGER,
    ));
    let sns: Arc<dyn Notifier> = Arc::new(sns);
    let tapped = |inner: Arc<dyn Notifier>| -> Arc<dyn Notifier> {
        match &observers.notifications {
            Some(tap) => Arc::new(Tapped {
                inner,
                tap: tap.clone(),
            }),
            None => inner,
        }
    };
    let (ingest_notifier, worker_notifier) = (tapped(sns), tapped(batching));
    let jobs = Arc::new(SqsQueue::new(
        clients.sqs.clone(),
        settings.get(Var::JobsQueueUrl),
    ));
    let events = Arc::new(SqsQueue::new(
        clients.sqs.clone(),
        settings.get(Var::InboxEventsQueueUrl),
    ));
    let source = jwks_source::at_location(settings.get(Var::Jwks), store.clone())?;
    let mut config = VerifierConfig::new(settings.get(Var::Issuer), settings.get(Var::Product));
    config.max_staleness = opts.jwks_max_staleness;
    let default = RefreshPolicy::default();
    // As in the embedded runtime: an unknown kid never waits longer than a regular refresh.
    let policy = RefreshPolicy {
        interval: opts.jwks_refresh,
        unknown_kid_min_interval: default.unknown_kid_min_interval.min(opts.jwks_refresh),
    };
    let verifier = Arc::new(JwksVerifier::new(config, source, policy));
    if let Err(e) = verifier.refresh().await {
        tracing::error!(error = %e, "cannot read the published keys yet; tokens are refused until they load");
    }
    // With SEALBOX_CLAIMS_TABLE, claims are conditional writes in DynamoDB, as in the functions.
    let claims = sealbox_aws::dynamodb_claims::from_settings(clients, settings, store.clone());
    let ingest = Ingest::new(
        IngestPorts {
            store: store.clone(),
            jobs: jobs.clone(),
            notifier: ingest_notifier,
            authorizer: verifier.clone(),
        },
        IngestConfig {
            inbox: settings.get(Var::InboxBucket).to_owned(),
            outbox: settings.get(Var::OutboxBucket).to_owned(),
            payload_limit: DEFAULT_PAYLOAD_LIMIT,
        },
    );
    let worker = Worker::new(
        WorkerPorts {
            store,
            endpoint: Arc::new(SageMakerEndpoint::new(
                clients.sagemaker.clone(),
                settings.get(Var::EndpointName),
            )),
            notifier: worker_notifier,
        },
        WorkerConfig {
            inbox: settings.get(Var::InboxBucket).to_owned(),
            outbox: settings.get(Var::OutboxBucket).to_owned(),
            invoke_attempts: 3,
            max_concurrent_invocations: opts.concurrency,
        },
    );
    let (ingest, worker) = match claims {
        Some(claims) => (
            ingest.with_claim_store(claims.clone()),
            worker.with_claim_store(claims),
        ),
        None => (ingest, worker),
    };
    let (ingest, worker) = (Arc::new(ingest), Arc::new(worker));
    let (shutdown, shutdown_rx) = watch::channel(false);
    // The endpoint's cap is the worker's own (`max_concurrent_invocations`); the jobs around it
    // read, write and wait for their batched notification and deletion.
    let concurrency = opts.concurrency + JOBS_BESIDE_THE_ENDPOINT;
    // One set of slots for both pollers, shared fairly between buyers.
    let slots = pollers::FairSlots::new(concurrency);
    let tasks = vec![
        tokio::spawn(verifier.run(shutdown_rx.clone())),
        // Accepted requests run straight from their inbox events; only jobs that must wait go
        // through the jobs queue, which the jobs poller serves: those of a throttled endpoint
        // or a transient failure, and those of a buyer holding its share of the slots.
        tokio::spawn(pollers::handoff::run(
            ingest,
            worker.clone(),
            events,
            jobs.clone(),
            slots.clone(),
            pollers::PollerConfig {
                wait: Duration::from_secs(20),
                visibility_timeout: Duration::from_secs(60),
                receive_linger: sealbox_aws::BATCH_LINGER,
                delete_linger: sealbox_aws::BATCH_LINGER,
            },
            shutdown_rx.clone(),
            observers.jobs.clone(),
        )),
        tokio::spawn(pollers::jobs::run(
            worker,
            jobs,
            slots,
            pollers::PollerConfig {
                wait: Duration::from_secs(20),
                visibility_timeout: Duration::from_secs(60),
                receive_linger: Duration::ZERO,
                delete_linger: sealbox_aws::BATCH_LINGER,
            },
            shutdown_rx,
            observers.jobs,
        )),
    ];
    Ok(Pipeline { shutdown, tasks })
}

/// A notifier that hands each notification to an in-process observer once the real one has
/// published it (the benchmark's tap; SNS is still called for every notification).
struct Tapped {
    inner: Arc<dyn Notifier>,
    tap: mpsc::UnboundedSender<Notification>,
}

impl Notifier for Tapped {
    // What `#[async_trait]` would write (this crate does not depend on it).
    fn publish<'a, 'b, 'c>(
        &'a self,
        notification: &'b Notification,
    ) -> Pin<Box<dyn Future<Output = sealbox_core::Result<()>> + Send + 'c>>
    where
        'a: 'c,
        'b: 'c,
        Self: 'c,
    {
        Box::pin(async move {
            self.inner.publish(notification).await?;
            let _ = self.tap.send(notification.clone());
            Ok(())
        })
    }
}

/// `sealbox up --backend aws`: the inbox-events and jobs pollers against the real queues, in
/// one process (a container, an instance, or development against an emulator). SIGTERM drains;
/// a SIGKILL loses nothing, since every message stays on its queue until its outcome exists.
pub async fn up(opts: UpOptions) -> anyhow::Result<ExitCode> {
    let settings = Settings::from_env(&Var::ALL)?;
    let clients = Clients::from_env().await;
    let pipeline = start_pipeline(&clients, &settings, &opts, Observers::default()).await?;
    println!(
        "sealbox ready on AWS: drop request objects into s3://{}/<buyer>/requests/ (jobs {}, endpoint {})",
        settings.get(Var::InboxBucket),
        settings.get(Var::JobsQueueUrl),
        settings.get(Var::EndpointName)
    );
    crate::commands::wait_for_signal().await?;
    eprintln!("sealbox: stopping; finishing the jobs in flight");
    pipeline.stop().await;
    Ok(ExitCode::SUCCESS)
}
