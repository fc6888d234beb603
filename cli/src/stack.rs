//! The embedded stack: builds the local adapters from a data directory and wires the same
//! handlers that run in Lambda (ingest, worker) with the inbox watcher and the model server.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sealbox_authz::caller_identity::StsForwarder;
use sealbox_authz::jwks_source::{FileJwks, HttpJwks, JwksSource, ObjectJwks};
use sealbox_authz::key_store::file::FileKeyStore;
use sealbox_authz::token_service::{JWKS_PATH, TokenService, TokenServiceConfig};
use sealbox_authz::{AuthzError, JwksVerifier, KeyAlg, Keyset, RefreshPolicy, VerifierConfig};
use sealbox_core::contract::{DEFAULT_PAYLOAD_LIMIT, Notification};
use sealbox_core::layout::{INBOX, OUTBOX};
use sealbox_ingest::{Ingest, IngestConfig, IngestPorts};
use sealbox_worker::{JobReport, Worker, WorkerConfig, WorkerPorts};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use sealbox_embedded::event_log::EventLog;
use sealbox_embedded::fs_store::FsObjectStore;
use sealbox_embedded::http_endpoint::HttpEndpoint;
use sealbox_embedded::inbox_watcher::{InboxScanner, InboxWatcher};
use sealbox_embedded::sqlite_queue::{QueueDb, RedrivePolicy, SqliteQueue};
use sealbox_embedded::sqlite_subscriptions::SqliteSubscriptions;
use sealbox_embedded::webhook::{Webhook, WebhookConfig};

/// Default product id (`aud` of tokens).
pub const DEFAULT_PRODUCT: &str = "iris-classifier";
/// Default seller name (`iss` of tokens).
pub const DEFAULT_ISSUER: &str = "sealbox-seller";
/// Name of the inbox-events queue.
pub const INBOX_EVENTS: &str = "inbox-events";
/// Name of the jobs queue.
pub const JOBS: &str = "jobs";

/// Why the embedded stack could not start: each variant is a reason the operator can act on.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// Another `sealbox up` holds the data directory's lock.
    #[error("another `sealbox up` is running on {}", data_dir.display())]
    AlreadyRunning {
        /// The data directory.
        data_dir: PathBuf,
    },
    /// A file or folder of the data directory could not be resolved, created or written.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A setting is unusable (a URL that is not http(s) with a host, key refresh settings that
    /// would refuse good tokens).
    #[error("{0}")]
    Config(String),
    /// The seller's keyset could not be loaded or created.
    #[error(transparent)]
    Keys(AuthzError),
    /// The subscription registry could not be opened.
    #[error(transparent)]
    Registry(AuthzError),
    /// The source of the published keys could not be set up.
    #[error(transparent)]
    KeysSource(AuthzError),
    /// The token service refused its settings.
    #[error(transparent)]
    TokenService(AuthzError),
    /// A server could not listen on its address (the port is taken, or not allowed).
    #[error("binding the {what} to {addr}")]
    Bind {
        /// Which server.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The sample model could not be trained.
    #[error(transparent)]
    Model(sealbox_model::ModelError),
    /// The queue database could not be opened.
    #[error("opening {}", path.display())]
    QueueDb {
        /// The database file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: sealbox_core::Error,
    },
    /// The webhook could not start (its URL, HTTP client or cursor file).
    #[error("starting the webhook")]
    Webhook(#[source] sealbox_core::Error),
    /// A local adapter could not start: the buckets, the queues, the event log, the inbox
    /// watcher or the model's HTTP client.
    #[error(transparent)]
    Adapter(sealbox_core::Error),
}

/// Where everything lives under a data directory.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The data directory.
    pub data_dir: PathBuf,
    /// `DATA/buckets`: one folder per bucket.
    pub buckets: PathBuf,
    /// `DATA/queues.db`: the queues.
    pub queue_db: PathBuf,
    /// `DATA/events.ndjson`: the notifications.
    pub events: PathBuf,
    /// `DATA/seller/keyset.json`: the seller's keys.
    pub keyset: PathBuf,
    /// `DATA/seller/subscriptions.db`: the subscription registry.
    pub subscriptions: PathBuf,
    /// `DATA/token-service.url`: where the running `sealbox up` serves tokens and keys.
    pub token_url: PathBuf,
    /// `DATA/buyers`: buyers' cached tokens.
    pub buyers: PathBuf,
    /// `DATA/up.lock`: held by the running `sealbox up`.
    pub lock: PathBuf,
}

impl Paths {
    /// The layout under `data_dir`.
    pub fn new(data_dir: &Path) -> Paths {
        Paths {
            data_dir: data_dir.to_owned(),
            buckets: data_dir.join("buckets"),
            queue_db: data_dir.join("queues.db"),
            events: data_dir.join("events.ndjson"),
            keyset: data_dir.join("seller").join("keyset.json"),
            subscriptions: data_dir.join("seller").join("subscriptions.db"),
            token_url: data_dir.join("token-service.url"),
            buyers: data_dir.join("buyers"),
            lock: data_dir.join("up.lock"),
        }
    }

    /// The object store over `buckets/`.
    pub fn store(&self, durable: bool) -> FsObjectStore {
        FsObjectStore::new(&self.buckets, durable)
    }

    /// The two queues with their dead-letter queues.
    pub fn queues(&self, max_receives: u32) -> Result<(SqliteQueue, SqliteQueue), StackError> {
        let db = QueueDb::open(&self.queue_db).map_err(|source| StackError::QueueDb {
            path: self.queue_db.clone(),
            source,
        })?;
        let events = db.queue(
            INBOX_EVENTS,
            Some(RedrivePolicy {
                dead_letter_queue: format!("{INBOX_EVENTS}-dlq"),
                max_receives: 10,
            }),
        );
        let jobs = db.queue(
            JOBS,
            Some(RedrivePolicy {
                dead_letter_queue: format!("{JOBS}-dlq"),
                max_receives,
            }),
        );
        Ok((events, jobs))
    }
}

/// Where the model runs.
#[derive(Debug, Clone)]
pub enum ModelSource {
    /// The sample model in this process, with this much artificial latency per invocation.
    InProcess {
        /// Added latency.
        latency: Duration,
        /// Port on 127.0.0.1 (0: any free port).
        port: u16,
    },
    /// A model container already listening at this URL.
    Url(String),
}

/// Where ingest reads the seller's published keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeysSource {
    /// The stack's own token service (`/.well-known/jwks.json`).
    TokenService,
    /// A JWKS at an HTTP(S) URL.
    Url(String),
    /// A JWKS object in a bucket of the embedded store.
    Object {
        /// Bucket.
        bucket: String,
        /// Key.
        key: String,
    },
    /// A JWKS file.
    File(PathBuf),
}

impl std::str::FromStr for KeysSource {
    type Err = String;

    /// `http(s)://...` is a URL, `s3://bucket/key` an object of the embedded store, anything
    /// else a file path.
    fn from_str(s: &str) -> Result<Self, String> {
        if s.starts_with("https://") {
            return Ok(KeysSource::Url(s.to_owned()));
        }
        if let Some(rest) = s.strip_prefix("http://") {
            // Keys fetched in clear could be swapped on the way: only from this machine.
            let host = rest.split(['/', '?']).next().unwrap_or_default();
            let host = match host.find(']') {
                Some(end) if host.starts_with('[') => &host[..=end],
                _ => host.rsplit_once(':').map_or(host, |(h, _)| h),
            };
            return match host {
                "127.0.0.1" | "localhost" | "[::1]" => Ok(KeysSource::Url(s.to_owned())),
                _ => Err(format!(
                    "{s:?}: published keys must come over https (http only from loopback)"
                )),
            };
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            return match rest.split_once('/') {
                Some((bucket, key)) if !bucket.is_empty() && !key.is_empty() => {
                    Ok(KeysSource::Object {
                        bucket: bucket.to_owned(),
                        key: key.to_owned(),
                    })
                }
                _ => Err(format!("{s:?}: want s3://BUCKET/KEY")),
            };
        }
        if s.is_empty() {
            return Err("empty keys source".into());
        }
        Ok(KeysSource::File(PathBuf::from(s)))
    }
}

/// Settings of the embedded stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Product id tokens must be issued for.
    pub product: String,
    /// Seller name tokens must be issued by (used when creating keys).
    pub issuer: String,
    /// The model.
    pub model: ModelSource,
    /// Worker concurrency cap.
    pub concurrency: usize,
    /// Ingest pollers running at once.
    pub ingest_pollers: usize,
    /// Receives of a job before it is dead-lettered.
    pub max_receives: u32,
    /// Visibility timeout of jobs.
    pub visibility_timeout: Duration,
    /// Webhook for notifications.
    pub webhook: Option<String>,
    /// Port of the token service on 127.0.0.1 (0: any free port).
    pub token_port: u16,
    /// Longest token the token service hands out.
    pub max_token_lifetime: Duration,
    /// Where ingest reads the published keys.
    pub keys_source: KeysSource,
    /// How ingest refreshes the published keys.
    pub jwks_refresh: RefreshPolicy,
    /// Ingest refuses every token once its copy of the keys is older than this.
    pub jwks_max_staleness: Duration,
    /// fsync objects and event lines (survive power loss, not only crashes); queue commits
    /// always survive a crash of the process (SQLite WAL), not necessarily a power loss.
    pub durable: bool,
}

impl StackOptions {
    /// Defaults for a data directory.
    pub fn new(data_dir: &Path) -> StackOptions {
        StackOptions {
            data_dir: data_dir.to_owned(),
            product: DEFAULT_PRODUCT.into(),
            issuer: DEFAULT_ISSUER.into(),
            model: ModelSource::InProcess {
                latency: Duration::ZERO,
                port: 0,
            },
            concurrency: 16,
            ingest_pollers: 2,
            max_receives: 5,
            visibility_timeout: Duration::from_secs(30),
            webhook: None,
            token_port: 0,
            max_token_lifetime: Duration::from_secs(3600),
            keys_source: KeysSource::TokenService,
            jwks_refresh: RefreshPolicy::default(),
            jwks_max_staleness: Duration::from_secs(15 * 60),
            durable: false,
        }
    }
}

/// In-process taps for the demo and benchmarks.
#[derive(Default)]
pub struct Observers {
    /// Receives every notification.
    pub notifications: Option<mpsc::UnboundedSender<Notification>>,
    /// Receives what the worker measured of each job.
    pub jobs: Option<mpsc::UnboundedSender<JobReport>>,
}

/// A running embedded stack.
pub struct Stack {
    /// Its paths.
    pub paths: Paths,
    /// The model endpoint URL.
    pub model_url: String,
    /// The token service URL (`POST /token`, `GET /.well-known/jwks.json`).
    pub token_url: String,
    /// The object store.
    pub store: FsObjectStore,
    shutdown: watch::Sender<bool>,
    pollers: Vec<JoinHandle<()>>,
    alarm: Arc<tokio::sync::Notify>,
    model: Option<(watch::Sender<bool>, JoinHandle<()>)>,
    token_service: JoinHandle<()>,
    watcher: Option<InboxWatcher>,
    _lock: std::fs::File,
}

impl Stack {
    /// Creates keys if missing, starts the model, the watcher, ingest and the workers.
    pub async fn start(mut opts: StackOptions, observers: Observers) -> Result<Stack, StackError> {
        // Resolved once: the inbox watcher reports absolute paths, and a relative folder would
        // match none of them.
        opts.data_dir = std::path::absolute(&opts.data_dir)
            .map_err(|e| io_error(format!("resolving {}", opts.data_dir.display()), e))?;
        check_urls(&opts)?;
        let paths = Paths::new(&opts.data_dir);
        std::fs::create_dir_all(&paths.data_dir)
            .map_err(|e| io_error(format!("creating {}", paths.data_dir.display()), e))?;
        let lock = std::fs::File::create(&paths.lock)
            .map_err(|e| io_error(format!("creating {}", paths.lock.display()), e))?;
        lock.try_lock().map_err(|_| StackError::AlreadyRunning {
            data_dir: paths.data_dir.clone(),
        })?;
        check_key_refresh(&opts)?;
        let keyset = Keyset::load_or_init(&paths.keyset, &opts.issuer, KeyAlg::EdDSA)
            .map_err(StackError::Keys)?;
        let issuer = keyset.issuer.clone();
        let registry =
            SqliteSubscriptions::open(&paths.subscriptions).map_err(StackError::Registry)?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (token_url, token_service) = start_token_service(
            &opts,
            Arc::new(FileKeyStore::new(&paths.keyset)),
            Arc::new(registry),
            shutdown_rx.clone(),
        )
        .await?;
        std::fs::write(&paths.token_url, format!("{token_url}\n"))
            .map_err(|e| io_error(format!("writing {}", paths.token_url.display()), e))?;
        // Ingest reads the keys the way any verifier does: from the published document.
        let mut config = VerifierConfig::new(&issuer, &opts.product);
        config.max_staleness = opts.jwks_max_staleness;
        let store = paths.store(opts.durable);
        let source: Arc<dyn JwksSource> = match &opts.keys_source {
            KeysSource::TokenService => Arc::new(
                HttpJwks::new(&format!("{token_url}{JWKS_PATH}"), Duration::from_secs(5))
                    .map_err(StackError::KeysSource)?,
            ),
            KeysSource::Url(url) => Arc::new(
                HttpJwks::new(url, Duration::from_secs(5)).map_err(StackError::KeysSource)?,
            ),
            KeysSource::Object { bucket, key } => {
                Arc::new(ObjectJwks::new(Arc::new(store.clone()), bucket, key))
            }
            KeysSource::File(path) => Arc::new(FileJwks::new(path)),
        };
        let described = source.describe();
        let verifier = Arc::new(JwksVerifier::new(config, source, opts.jwks_refresh));
        if let Err(e) = verifier.refresh().await {
            // Not fatal: the source may come up later; until then every token is refused
            // with signing_keys_stale, and requests wait in no queue but get that answer.
            tracing::error!(error = %e, source = %described, "cannot read the published keys yet");
        }

        let (model_url, model) = match &opts.model {
            ModelSource::Url(u) => (u.clone(), None),
            ModelSource::InProcess { latency, port } => {
                let (url, stop, task) = start_model(*latency, *port).await?;
                (url, Some((stop, task)))
            }
        };
        for bucket in [INBOX, OUTBOX] {
            let dir = store.bucket_dir(bucket);
            std::fs::create_dir_all(&dir)
                .map_err(|e| io_error(format!("creating {}", dir.display()), e))?;
            let swept = store
                .sweep_temp_files(bucket)
                .map_err(StackError::Adapter)?;
            if swept > 0 {
                tracing::info!(
                    bucket,
                    swept,
                    "removed temporary files of interrupted writes"
                );
            }
        }
        let (events, jobs) = paths.queues(opts.max_receives)?;
        // This process is the only consumer: whatever was in flight died with the last one.
        events
            .release_in_flight()
            .await
            .map_err(StackError::Adapter)?;
        jobs.release_in_flight()
            .await
            .map_err(StackError::Adapter)?;

        let mut log = EventLog::open(&paths.events, opts.durable).map_err(StackError::Adapter)?;
        if let Some(url) = &opts.webhook {
            let cursor = paths.data_dir.join("webhook.cursor");
            let hook = Webhook::start(WebhookConfig::new(url.clone(), cursor), &log)
                .map_err(StackError::Webhook)?;
            log = log.with_webhook(hook);
        }
        if let Some(o) = observers.notifications {
            log = log.with_observer(o);
        }
        let notifier = Arc::new(log);
        let endpoint = Arc::new(
            HttpEndpoint::new(&model_url, Duration::from_secs(60), DEFAULT_PAYLOAD_LIMIT)
                .map_err(StackError::Adapter)?,
        );
        let store_port: Arc<FsObjectStore> = Arc::new(store.clone());
        let verifier_handle = verifier.clone();
        let ingest = Arc::new(Ingest::new(
            IngestPorts {
                store: store_port.clone(),
                jobs: Arc::new(jobs.clone()),
                notifier: notifier.clone(),
                authorizer: verifier,
            },
            IngestConfig {
                inbox: INBOX.into(),
                outbox: OUTBOX.into(),
                payload_limit: DEFAULT_PAYLOAD_LIMIT,
            },
        ));
        let worker = Arc::new(Worker::new(
            WorkerPorts {
                store: store_port,
                endpoint,
                notifier,
            },
            WorkerConfig {
                inbox: INBOX.into(),
                outbox: OUTBOX.into(),
                invoke_attempts: 3,
                max_concurrent_invocations: opts.concurrency,
            },
        ));

        let alarm = Arc::new(tokio::sync::Notify::new());
        let mut pollers = Vec::new();
        let events_port: Arc<SqliteQueue> = Arc::new(events.clone());
        for _ in 0..opts.ingest_pollers.max(1) {
            pollers.push(supervise(
                "ingest",
                sealbox_pollers::inbox::run(
                    ingest.clone(),
                    events_port.clone(),
                    sealbox_pollers::PollerConfig::default(),
                    shutdown_rx.clone(),
                ),
                shutdown_rx.clone(),
                alarm.clone(),
            ));
        }
        let worker_poller = sealbox_pollers::jobs::run(
            worker,
            Arc::new(jobs),
            // Twice the invocation cap: jobs read inputs and write results beside the calls.
            sealbox_pollers::FairSlots::new(2 * opts.concurrency),
            sealbox_pollers::PollerConfig {
                wait: Duration::from_millis(500),
                visibility_timeout: opts.visibility_timeout,
                // A local delete is cheap: no reason to hold one back.
                delete_linger: Duration::ZERO,
                receive_linger: Duration::ZERO,
            },
            shutdown_rx.clone(),
            observers.jobs,
        );
        pollers.push(supervise(
            "worker",
            worker_poller,
            shutdown_rx,
            alarm.clone(),
        ));
        pollers.push(tokio::spawn(verifier_handle.run(shutdown.subscribe())));
        let watcher = InboxWatcher::start(InboxScanner::new(&store, INBOX, events))
            .await
            .map_err(StackError::Adapter)?;
        Ok(Stack {
            paths,
            model_url,
            token_url,
            token_service,
            store,
            shutdown,
            pollers,
            alarm,
            model,
            watcher: Some(watcher),
            _lock: lock,
        })
    }

    /// Resolves if a poller stops on its own (a bug): the stack can no longer make progress.
    pub async fn failed(&self) {
        self.alarm.notified().await;
    }

    /// The inbox folder buyers drop request objects into.
    pub fn inbox_dir(&self) -> PathBuf {
        self.store.bucket_dir(INBOX)
    }

    /// Stops watching, lets the jobs in flight finish, then stops the model.
    pub async fn stop(mut self) {
        self.watcher.take();
        let _ = self.shutdown.send(true);
        for p in self.pollers.drain(..) {
            let _ = p.await;
        }
        if let Some((stop, task)) = self.model.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        let _ = (&mut self.token_service).await;
        let _ = std::fs::remove_file(&self.paths.token_url);
    }
}

/// Refuses a `--webhook` or `--model-url` that is not an http:// or https:// URL with a host:
/// the stack would start ready, then fail every delivery or every job.
fn check_urls(opts: &StackOptions) -> Result<(), StackError> {
    let model = match &opts.model {
        ModelSource::Url(url) => Some(("--model-url", url)),
        ModelSource::InProcess { .. } => None,
    };
    let webhook = opts.webhook.as_ref().map(|url| ("--webhook", url));
    for (flag, url) in model.into_iter().chain(webhook) {
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            StackError::Config(format!(
                "{flag} {url:?} is not a URL ({e}); want http://HOST[:PORT][/PATH] or https://..."
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https")
            || parsed.host_str().is_none_or(str::is_empty)
        {
            return Err(StackError::Config(format!(
                "{flag} {url:?} is not an http:// or https:// URL with a host; want http://HOST[:PORT][/PATH] or https://..."
            )));
        }
    }
    Ok(())
}

/// Refuses key refresh settings that would refuse tokens while nothing is wrong: a refresh
/// interval of zero (a busy loop), or a staleness limit the refreshes cannot stay under.
fn check_key_refresh(opts: &StackOptions) -> Result<(), StackError> {
    let refresh = opts.jwks_refresh.interval;
    if refresh.is_zero() {
        return Err(StackError::Config(
            "--jwks-refresh must be more than zero".into(),
        ));
    }
    if opts.jwks_max_staleness < 2 * refresh {
        return Err(StackError::Config(format!(
            "--jwks-max-staleness ({}) must be at least twice --jwks-refresh ({}), or tokens \
             are refused between refreshes",
            humantime::format_duration(opts.jwks_max_staleness),
            humantime::format_duration(refresh)
        )));
    }
    Ok(())
}

/// Starts the token service on 127.0.0.1 and returns its URL and task.
async fn start_token_service(
    opts: &StackOptions,
    keys: Arc<FileKeyStore>,
    registry: Arc<SqliteSubscriptions>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(String, JoinHandle<()>), StackError> {
    let mut config = TokenServiceConfig::new(&opts.product);
    config.max_lifetime = opts.max_token_lifetime;
    config.jwks_max_age = opts.jwks_refresh.interval;
    // Buyers with AWS credentials prove their account through STS (or the endpoint the
    // environment names for it), with no secret.
    let service = Arc::new(
        TokenService::new(config, keys, registry)
            .map_err(StackError::TokenService)?
            .accepting_aws_identity(StsForwarder::from_env()),
    );
    let (listener, addr) = bind("token service", opts.token_port).await?;
    let url = format!("http://{addr}");
    let task = tokio::spawn(async move {
        let stopped = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(
            listener,
            service
                .router()
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopped)
        .await
        {
            tracing::error!(error = %e, "token service stopped");
        }
    });
    Ok((url, task))
}

/// Listens on `port` of 127.0.0.1 for the server `what`; returns the listener and its address.
async fn bind(
    what: &'static str,
    port: u16,
) -> Result<(tokio::net::TcpListener, SocketAddr), StackError> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| StackError::Bind { what, addr, source })?;
    let addr = listener
        .local_addr()
        .map_err(|e| io_error(format!("reading the address of the {what}"), e))?;
    Ok((listener, addr))
}

/// A [`StackError::Io`] with what was being done.
fn io_error(context: String, source: std::io::Error) -> StackError {
    StackError::Io { context, source }
}

/// Runs a poller; if it ends before shutdown (it panicked), logs it and sounds the alarm.
fn supervise(
    name: &'static str,
    poller: impl std::future::Future<Output = ()> + Send + 'static,
    shutdown: watch::Receiver<bool>,
    alarm: Arc<tokio::sync::Notify>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let ended = tokio::spawn(poller).await;
        if !*shutdown.borrow() {
            tracing::error!(poller = name, outcome = ?ended, "a poller stopped unexpectedly");
            alarm.notify_one();
        }
    })
}

/// Starts the sample model on 127.0.0.1 and returns its URL, a stop switch and its task.
pub async fn start_model(
    latency: Duration,
    port: u16,
) -> Result<(String, watch::Sender<bool>, JoinHandle<()>), StackError> {
    let model = sealbox_model::IrisModel::shared().map_err(StackError::Model)?;
    let (listener, addr) = bind("model server", port).await?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        let cfg = sealbox_model::ModelConfig::with_latency(latency);
        if let Err(e) = sealbox_model::serve(listener, model, cfg, shutdown).await {
            tracing::error!(error = %e, "model server stopped");
        }
    });
    Ok((format!("http://{addr}"), stop, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_keys_come_over_https_or_from_this_machine() {
        for ok in [
            "https://seller.example/.well-known/jwks.json",
            "http://127.0.0.1:8080/jwks.json",
            "http://localhost/jwks.json",
            "http://[::1]:9/jwks.json",
            "http://[::1]/jwks.json",
        ] {
            assert!(matches!(ok.parse(), Ok(KeysSource::Url(_))), "{ok}");
        }
        for bad in [
            "http://seller.example/jwks.json",
            "http://127.0.0.1.evil/x",
            "s3://b",
            "",
        ] {
            assert!(bad.parse::<KeysSource>().is_err(), "{bad}");
        }
        assert_eq!(
            "s3://public/jwks.json".parse(),
            Ok(KeysSource::Object {
                bucket: "public".into(),
                key: "jwks.json".into()
            })
        );
        assert_eq!(
            "keys/jwks.json".parse(),
            Ok(KeysSource::File("keys/jwks.json".into()))
        );
    }

    #[test]
    fn webhook_and_model_urls_that_are_not_http_urls_with_a_host_are_refused_naming_the_flag() {
        let mut opts = StackOptions::new(Path::new("/nowhere"));
        assert!(check_urls(&opts).is_ok());
        for bad in [
            "notaurl",
            "ftp://host/x",
            "http://",
            "file:///tmp/hook",
            "localhost:8080",
        ] {
            opts.webhook = Some(bad.into());
            let e = check_urls(&opts).unwrap_err().to_string();
            assert!(e.starts_with("--webhook"), "{bad}: {e}");
            opts.webhook = None;
            opts.model = ModelSource::Url(bad.into());
            let e = check_urls(&opts).unwrap_err().to_string();
            assert!(e.starts_with("--model-url"), "{bad}: {e}");
            opts.model = ModelSource::InProcess {
                latency: Duration::ZERO,
                port: 0,
            };
        }
        opts.webhook = Some("https://hooks.example/sealbox".into());
        opts.model = ModelSource::Url("http://127.0.0.1:8080".into());
        assert!(check_urls(&opts).is_ok());
    }

    #[test]
    fn refresh_settings_that_would_refuse_good_tokens_are_refused() {
        let mut opts = StackOptions::new(Path::new("/nowhere"));
        assert!(check_key_refresh(&opts).is_ok());
        opts.jwks_refresh.interval = Duration::ZERO;
        assert!(check_key_refresh(&opts).is_err());
        opts.jwks_refresh.interval = Duration::from_secs(30 * 60);
        assert!(check_key_refresh(&opts).is_err());
    }
}
