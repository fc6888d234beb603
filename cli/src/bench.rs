//! `sealbox bench`: drives request objects through the same path `up` uses (written into the
//! inbox, until the notification) and reports throughput, overhead and endpoint utilisation.
//! With `--backend aws`, the same on S3, SQS, SNS and SageMaker Runtime (whatever endpoint the
//! AWS environment names), with the AWS calls the pipeline makes per job.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher as _, Hasher as _};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;

use crate::output::Backend;
use sealbox_authz::{KeyAlg, Keyset};
use sealbox_aws::config::{Settings, Var};
use sealbox_aws::s3::S3ObjectStore;
use sealbox_aws::sdk::{Clients, load_config};
use sealbox_core::contract::{EventKind, Notification};
use sealbox_core::layout::INBOX;
use sealbox_core::ports::{ObjectStore, PutMode};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::cases::{CaseContext, SAMPLE_ROWS, text_request};
use crate::demo::percentile;
use crate::stack::{DEFAULT_ISSUER, DEFAULT_PRODUCT, ModelSource, Observers, Stack, StackOptions};

/// Arguments of `sealbox bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Where the pipeline runs: embedded, a fresh stack in a fresh data directory; aws, at
    /// whatever endpoint the AWS environment names (AWS_ENDPOINT_URL for an emulator), a fresh
    /// development stack `bench-<random>`, the sample model served in this process as the
    /// SageMaker Runtime API, and the pipeline of `up --backend aws` in this process.
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,
    /// Jobs in the throughput run of each scenario (aws: all jobs, the first tenth a warm-up).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub jobs: u32,
    /// Model latency scenarios in milliseconds (repeat the flag; default: 0 and 20; aws: one
    /// scenario, default 0).
    #[arg(long = "model-latency-ms")]
    pub model_latency_ms: Vec<u64>,
    /// Model invocations in flight at once (the worker's cap).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Seconds of the half-load run that measures overhead (embedded only).
    #[arg(long, default_value_t = 3.0)]
    pub half_load_seconds: f64,
    /// Put the scenarios' data directories under this folder (default: the system temp folder;
    /// embedded only).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
    /// Instead of throughput: how long a second buyer's 20 requests take alone, and right
    /// after a first buyer's burst of `--burst` requests (model latency default 20 ms; aws: on
    /// a fresh stack, deleted afterwards).
    #[arg(long)]
    pub fair_share: bool,
    /// Requests in the first buyer's burst (with `--fair-share`).
    #[arg(long, default_value_t = 1500, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub burst: u32,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// One scenario's numbers.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    /// Model latency.
    pub model_latency_ms: u64,
    /// Worker concurrency cap.
    pub concurrency: u16,
    /// Jobs in the throughput run.
    pub jobs: u32,
    /// Seconds from the first write to the last notification.
    pub seconds: f64,
    /// Jobs per second.
    pub jobs_per_sec: f64,
    /// Median time outside the model per job, at half load.
    pub overhead_ms_p50: f64,
    /// 99th percentile of the same.
    pub overhead_ms_p99: f64,
    /// Time inside endpoint calls / (concurrency cap x wall time), in the throughput run.
    pub endpoint_busy_ratio: f64,
    /// Process CPU time per job in the throughput run (model server included: it is in-process).
    pub cpu_ms_per_job: f64,
    /// Peak resident set of the process.
    pub peak_rss_mb: f64,
}

fn cpu_time() -> Duration {
    cpu_time_of(&std::fs::read_to_string("/proc/self/stat").unwrap_or_default())
}

/// utime + stime of a `/proc/<pid>/stat` line, in clock ticks (100 per second on Linux).
fn cpu_time_of(stat: &str) -> Duration {
    // The fields after the command's closing parenthesis start at field 3 (state); utime and
    // stime are fields 14 and 15. By position: some fields before them may be negative
    // (`tpgid` is -1 without a terminal), so they cannot be skipped as "not numbers".
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let field = |n: usize| -> u64 {
        after
            .split_whitespace()
            .nth(n - 3)
            .and_then(|x| x.parse().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((field(14) + field(15)) * 10)
}

fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

struct Run {
    seconds: f64,
    e2e: HashMap<String, Duration>,
    invoke: HashMap<String, Duration>,
    /// The first notification's kind, by request id.
    kinds: HashMap<String, EventKind>,
}

/// Writes `bodies` into `bucket` of `store` (at `rate` per second, or as fast as possible) and
/// waits for every notification.
async fn drive(
    store: Arc<dyn ObjectStore>,
    bucket: &str,
    bodies: Vec<(String, Vec<u8>)>,
    rate: Option<f64>,
    notes: &mut mpsc::UnboundedReceiver<Notification>,
    reports: &mut mpsc::UnboundedReceiver<sealbox_worker::JobReport>,
) -> anyhow::Result<Run> {
    let n = bodies.len();
    let started = Instant::now();
    // Buyers upload concurrently: several writers, unless a rate is set.
    let writers = if rate.is_some() { 1 } else { 4 };
    let mut chunks: Vec<Vec<(String, Vec<u8>)>> = (0..writers).map(|_| Vec::new()).collect();
    for (i, b) in bodies.into_iter().enumerate() {
        chunks[i % writers].push(b);
    }
    let mut tasks = Vec::new();
    for chunk in chunks {
        let store = store.clone();
        let bucket = bucket.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut written = HashMap::with_capacity(chunk.len());
            let mut tick = rate.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r)));
            for (key, body) in chunk {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                store
                    .put(&bucket, &key, Bytes::from(body), PutMode::Overwrite)
                    .await?;
                written.insert(key, Instant::now());
            }
            anyhow::Ok(written)
        }));
    }
    let mut arrived = HashMap::with_capacity(n);
    let mut kinds = HashMap::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while arrived.len() < n {
        match tokio::time::timeout_at(deadline, notes.recv()).await {
            Ok(Some(note)) => {
                kinds.entry(note.request_id.clone()).or_insert(note.event);
                arrived.entry(note.request_id).or_insert_with(Instant::now);
            }
            _ => anyhow::bail!("only {} of {n} jobs finished in time", arrived.len()),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut written = HashMap::with_capacity(n);
    for t in tasks {
        written.extend(t.await??);
    }
    let mut invoke = HashMap::with_capacity(n);
    while let Ok(r) = reports.try_recv() {
        invoke.insert(r.request_id, r.invoke_time);
    }
    let e2e = arrived
        .into_iter()
        .filter_map(|(id, t)| {
            let key = format!("bench/requests/{id}.json");
            written
                .get(&key)
                .map(|w| (id, t.saturating_duration_since(*w)))
        })
        .collect();
    Ok(Run {
        seconds,
        e2e,
        invoke,
        kinds,
    })
}

/// Runs one scenario in the fresh data directory `dir`.
pub async fn scenario(
    args: &BenchArgs,
    latency_ms: u64,
    dir: &tempfile::TempDir,
) -> anyhow::Result<BenchResult> {
    let mut opts = StackOptions::new(dir.path());
    opts.model = ModelSource::InProcess {
        latency: Duration::from_millis(latency_ms),
        port: 0,
    };
    opts.concurrency = usize::from(args.concurrency);
    let (ntx, mut notes) = mpsc::unbounded_channel();
    let (jtx, mut reports) = mpsc::unbounded_channel();
    let stack = Stack::start(
        opts.clone(),
        Observers {
            notifications: Some(ntx),
            jobs: Some(jtx),
        },
    )
    .await?;
    let keyset = Keyset::load(&stack.paths.keyset)?;
    let ctx = CaseContext::new(&keyset, "bench", "other", &opts.product)?;
    let token = ctx.token("bench")?;
    let make = |prefix: &str, n: usize| -> Vec<(String, Vec<u8>)> {
        (0..n)
            .map(|i| {
                let id = format!("{prefix}-{i:07}");
                let body = serde_json::to_vec(&text_request(&id, Some(&token), SAMPLE_ROWS[i % 3]))
                    .unwrap_or_default();
                (format!("bench/requests/{id}.json"), body)
            })
            .collect()
    };
    // Warm up connections, caches and the page cache of the queue database.
    let store: Arc<dyn ObjectStore> = Arc::new(stack.store.clone());
    drive(
        store.clone(),
        INBOX,
        make("warm", 200),
        None,
        &mut notes,
        &mut reports,
    )
    .await?;

    let cpu0 = cpu_time();
    let full = drive(
        store.clone(),
        INBOX,
        make("full", args.jobs as usize),
        None,
        &mut notes,
        &mut reports,
    )
    .await?;
    let cpu = cpu_time().saturating_sub(cpu0);
    let jobs_per_sec = args.jobs as f64 / full.seconds;
    let busy: Duration = full.invoke.values().sum();
    let endpoint_busy_ratio = busy.as_secs_f64() / (args.concurrency as f64 * full.seconds);

    let rate = (jobs_per_sec / 2.0).max(1.0);
    let half_jobs = ((rate * args.half_load_seconds) as usize).max(50);
    let half = drive(
        store,
        INBOX,
        make("half", half_jobs),
        Some(rate),
        &mut notes,
        &mut reports,
    )
    .await?;
    let mut overhead: Vec<Duration> = half
        .e2e
        .iter()
        .map(|(id, e2e)| e2e.saturating_sub(half.invoke.get(id).copied().unwrap_or_default()))
        .collect();
    stack.stop().await;
    Ok(BenchResult {
        model_latency_ms: latency_ms,
        concurrency: args.concurrency,
        jobs: args.jobs,
        seconds: full.seconds,
        jobs_per_sec,
        overhead_ms_p50: percentile(&mut overhead, 50.0).as_secs_f64() * 1000.0,
        overhead_ms_p99: percentile(&mut overhead, 99.0).as_secs_f64() * 1000.0,
        endpoint_busy_ratio,
        cpu_ms_per_job: cpu.as_secs_f64() * 1000.0 / args.jobs as f64,
        peak_rss_mb: peak_rss_mb(),
    })
}

/// A fresh data directory for one scenario, under `--dir` (made if missing) or the system's
/// temporary folder.
fn scenario_dir(base: Option<&std::path::Path>) -> anyhow::Result<tempfile::TempDir> {
    let Some(base) = base else {
        return Ok(tempfile::tempdir()?);
    };
    std::fs::create_dir_all(base)
        .and_then(|()| tempfile::tempdir_in(base))
        .with_context(|| {
            format!(
                "--dir {}: cannot make a data directory there",
                base.display()
            )
        })
}

/// `sealbox bench`.
pub async fn run(mut args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.fair_share {
        let r = match args.backend {
            Backend::Embedded => {
                let dir = scenario_dir(args.dir.as_deref())?;
                crate::bench_fair_share::run(&args, args.burst, &dir).await?
            }
            Backend::Aws => {
                anyhow::ensure!(
                    args.dir.is_none(),
                    "--dir is for the embedded backend; --backend aws keeps no data directory"
                );
                crate::bench_fair_share::run_aws(&args, args.burst).await?
            }
        };
        if args.json {
            println!("{}", serde_json::to_string_pretty(&r)?);
        } else {
            println!(
                "{}, model {} ms, concurrency {}: buyer B's {} requests took {:.2} s alone and {:.2} s right after buyer A's burst of {} (the burst took {:.2} s)",
                r.backend,
                r.model_latency_ms,
                r.concurrency,
                r.few,
                r.few_alone_seconds,
                r.few_after_burst_seconds,
                r.burst,
                r.burst_seconds
            );
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.backend == Backend::Aws {
        return run_aws(&args).await;
    }
    if args.model_latency_ms.is_empty() {
        args.model_latency_ms = vec![0, 20];
    }
    let mut results = Vec::new();
    // Data directories are removed only at the end: freeing many inodes just before a scenario
    // makes the file system's inode allocation slower for minutes, which would skew it.
    let mut dirs = Vec::new();
    for latency in args.model_latency_ms.clone() {
        let dir = scenario_dir(args.dir.as_deref())?;
        let r = scenario(&args, latency, &dir).await?;
        dirs.push(dir);
        if !args.json {
            println!(
                "model {:>3} ms, concurrency {:>3}: {:>6} jobs in {:>6.2} s = {:>7.0} jobs/s; overhead p50 {:.2} ms, p99 {:.2} ms (half load); endpoint busy {:.1}%; {:.3} cpu ms/job; peak RSS {:.0} MB",
                r.model_latency_ms,
                r.concurrency,
                r.jobs,
                r.seconds,
                r.jobs_per_sec,
                r.overhead_ms_p50,
                r.overhead_ms_p99,
                r.endpoint_busy_ratio * 100.0,
                r.cpu_ms_per_job,
                r.peak_rss_mb
            );
        }
        results.push(r);
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&results)?);
    }
    Ok(ExitCode::SUCCESS)
}

/// The numbers of `sealbox bench --backend aws`.
#[derive(Debug, Clone, Serialize)]
pub struct AwsBenchResult {
    /// Always `aws`.
    pub backend: &'static str,
    /// The endpoint every AWS client used (`AWS_ENDPOINT_URL`), if one was set.
    pub endpoint_url: Option<String>,
    /// The development stack bootstrapped for this run.
    pub stack: String,
    /// Whether the stack was deleted afterwards (if not, `sealbox aws teardown --name STACK`
    /// deletes it; the command says why it could not).
    pub stack_deleted: bool,
    /// Model latency.
    pub model_latency_ms: u64,
    /// Worker concurrency cap.
    pub concurrency: u16,
    /// Request objects written in all (warm-up included).
    pub jobs: u32,
    /// The first jobs, run to the end before the measured ones: not measured.
    pub warmup_jobs: u32,
    /// Jobs measured (written after the warm-up finished).
    pub measured_jobs: u32,
    /// Jobs announced `InferenceCompleted` (all jobs).
    pub completed: usize,
    /// Jobs announced `InferenceFailed` (all jobs).
    pub failed: usize,
    /// Jobs announced `RequestRejected` (all jobs).
    pub rejected: usize,
    /// Seconds from the first measured write to the last notification.
    pub seconds: f64,
    /// Measured jobs per second.
    pub jobs_per_sec: f64,
    /// Median time from a request object's write to its notification (all measured jobs
    /// written at once, so queueing is included).
    pub latency_ms_p50: f64,
    /// 99th percentile of the same.
    pub latency_ms_p99: f64,
    /// Median of that time minus the time inside endpoint calls.
    pub overhead_ms_p50: f64,
    /// 99th percentile of the same.
    pub overhead_ms_p99: f64,
    /// Time inside endpoint calls / (concurrency cap x wall time).
    pub endpoint_busy_ratio: f64,
    /// This process's CPU time per measured job (the pipeline and the model; not the emulator).
    pub cpu_ms_per_job: f64,
    /// Peak resident set of the process.
    pub peak_rss_mb: f64,
    /// AWS calls (attempts) the pipeline made between the end of the warm-up and the end.
    pub aws_calls: u64,
    /// `aws_calls` / measured jobs.
    pub aws_calls_per_job: f64,
    /// The same per job, by `service.Operation` as the SDK names them (`S3.PutObject`).
    pub aws_calls_by_operation: BTreeMap<String, f64>,
    /// What those calls cost for a million jobs, in USD, at the list prices of
    /// [`crate::prices`] (the endpoint excluded).
    pub usd_per_million_jobs: f64,
    /// The same by operation.
    pub usd_per_million_jobs_by_operation: BTreeMap<String, f64>,
    /// Operations called but not in the cost: the endpoint, and any the price table lacks.
    pub not_in_cost: Vec<String>,
    /// The date of the price table.
    pub prices_as_of: &'static str,
    /// Calls in the same window that are not counted above: the buyer's uploads of the request
    /// objects, made by the benchmark through clients of their own.
    pub excluded_buyer_calls: BTreeMap<String, u64>,
}

/// The sample model's endpoint name (it answers any).
const AWS_ENDPOINT_NAME: &str = "bench";
/// Where the benchmark publishes the seller's keys in the outbox bucket.
const AWS_JWKS_KEY: &str = "seller/jwks.json";

/// Calls in `after` that were not in `before`, by operation.
fn calls_between(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(op, n)| (op.clone(), n - before.get(op).copied().unwrap_or(0).min(*n)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// A stack name no earlier run used: `bench-` and 8 random hex digits.
fn fresh_stack_name() -> String {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    );
    h.write_u32(std::process::id());
    format!("bench-{:08x}", h.finish() as u32)
}

/// `sealbox bench --backend aws`: bootstraps a fresh stack, publishes a new keyset's JWKS to its
/// outbox, serves the sample model in-process as the SageMaker Runtime API, runs the pipeline of
/// `up --backend aws` in-process, writes `--jobs` request objects (inline text) as a buyer
/// would, and reports throughput, latency and the AWS calls per job after the warm-up.
/// The stack is deleted afterwards, whether the run succeeded or not.
pub async fn aws_scenario(args: &BenchArgs) -> anyhow::Result<AwsBenchResult> {
    let latency_ms = match args.model_latency_ms.as_slice() {
        [] => 0,
        [one] => *one,
        _ => anyhow::bail!("--backend aws runs one scenario: give --model-latency-ms at most once"),
    };
    if args.dir.is_some() {
        anyhow::bail!("--dir is for the embedded backend; --backend aws keeps no data directory");
    }
    let (result, deleted) =
        on_fresh_stack(async |name: String| aws_scenario_on(args, latency_ms, &name).await).await;
    let mut result = result?;
    result.stack_deleted = deleted;
    Ok(result)
}

/// Runs `run` on the name of a stack no earlier run used, then deletes that stack whether the
/// run succeeded or not; answers the run's result and whether the stack was deleted.
pub(crate) async fn on_fresh_stack<T>(
    run: impl AsyncFnOnce(String) -> anyhow::Result<T>,
) -> (anyhow::Result<T>, bool) {
    let name = fresh_stack_name();
    let result = run(name.clone()).await;
    let config = load_config().await;
    let deleted = sealbox_aws::teardown::teardown(&Clients::new(&config), &name, |_| {}).await;
    if let Err(e) = &deleted {
        eprintln!(
            "warning: the benchmark's stack {name} was not deleted ({e}); delete it with \
             `sealbox aws teardown --name {name}`"
        );
    }
    (result, deleted.is_ok())
}

/// A benchmark's pipeline on AWS: stack `name` bootstrapped, a new keyset's JWKS published to
/// its outbox, the sample model served in this process as the SageMaker Runtime API, and the
/// pipeline of `up --backend aws` running in this process.
pub(crate) struct AwsRig {
    /// The pipeline's clients; they count every call.
    pub clients: Clients,
    /// The buyers' clients, counted apart.
    pub buyer_clients: Clients,
    /// The buyers' object store (through `buyer_clients`).
    pub buyer_store: Arc<dyn ObjectStore>,
    /// The inbox bucket.
    pub inbox: String,
    /// Tokens of the buyers named at the start.
    pub ctx: CaseContext,
    /// The endpoint the AWS environment names, if any.
    pub endpoint_url: Option<String>,
    /// Every notification, as the pipeline publishes it.
    pub notes: mpsc::UnboundedReceiver<Notification>,
    /// Every job's report.
    pub reports: mpsc::UnboundedReceiver<sealbox_worker::JobReport>,
    pipeline: crate::aws::Pipeline,
    model_stop: tokio::sync::watch::Sender<bool>,
    model_task: tokio::task::JoinHandle<()>,
}

impl AwsRig {
    /// Starts it on stack `name`, with tokens for `buyers`.
    pub(crate) async fn start(
        args: &BenchArgs,
        latency_ms: u64,
        name: &str,
        buyers: [&str; 2],
    ) -> anyhow::Result<AwsRig> {
        let config = load_config().await;
        let (model_url, model_stop, model_task) =
            crate::stack::start_model(Duration::from_millis(latency_ms), 0).await?;
        // The pipeline's clients count every call; the buyer's uploads go through clients (and
        // a counter) of their own, so they are not counted as the pipeline's.
        let clients = Clients::with_sagemaker_endpoint(&config, &model_url);
        let buyer_clients = Clients::new(&config);
        let made = sealbox_aws::bootstrap::bootstrap(&clients, name)
            .await
            .with_context(|| format!("bootstrapping the stack {name:?} (is the AWS environment set, e.g. AWS_ENDPOINT_URL for an emulator?)"))?;
        let mut values: HashMap<&'static str, String> =
            made.into_iter().map(|(k, v)| (k.name(), v)).collect();
        let outbox = values
            .get(Var::OutboxBucket.name())
            .cloned()
            .unwrap_or_default();
        values.insert(Var::EndpointName.name(), AWS_ENDPOINT_NAME.into());
        values.insert(Var::Jwks.name(), format!("s3://{outbox}/{AWS_JWKS_KEY}"));
        values.insert(Var::Product.name(), DEFAULT_PRODUCT.into());
        values.insert(Var::Issuer.name(), DEFAULT_ISSUER.into());
        let settings = Settings::from_lookup(&Var::ALL, |n| values.get(n).cloned())?;

        // The seller: a new keyset, its published keys written with the S3 store.
        let keyset = Keyset::generate(DEFAULT_ISSUER, KeyAlg::EdDSA)?;
        let jwks = serde_json::to_vec_pretty(&sealbox_authz::jwks::publish(&keyset, &[])?)?;
        S3ObjectStore::new(clients.s3.clone())
            .put(&outbox, AWS_JWKS_KEY, Bytes::from(jwks), PutMode::Overwrite)
            .await
            .context("publishing the seller's keys")?;
        let ctx = CaseContext::new(&keyset, buyers[0], buyers[1], DEFAULT_PRODUCT)?;

        let (ntx, notes) = mpsc::unbounded_channel();
        let (jtx, reports) = mpsc::unbounded_channel();
        let pipeline = crate::aws::start_pipeline(
            &clients,
            &settings,
            &crate::aws::UpOptions {
                concurrency: usize::from(args.concurrency),
                jwks_refresh: Duration::from_secs(60),
                jwks_max_staleness: Duration::from_secs(15 * 60),
            },
            Observers {
                notifications: Some(ntx),
                jobs: Some(jtx),
            },
        )
        .await?;
        let buyer_store: Arc<dyn ObjectStore> =
            Arc::new(S3ObjectStore::new(buyer_clients.s3.clone()));
        Ok(AwsRig {
            clients,
            buyer_clients,
            buyer_store,
            inbox: settings.get(Var::InboxBucket).to_owned(),
            ctx,
            endpoint_url: config.endpoint_url().map(str::to_owned),
            notes,
            reports,
            pipeline,
            model_stop,
            model_task,
        })
    }

    /// Stops the pipeline and the model.
    pub(crate) async fn stop(self) {
        self.pipeline.stop().await;
        let _ = self.model_stop.send(true);
        let _ = self.model_task.await;
    }
}

/// [`aws_scenario`] on a new stack named `name`.
async fn aws_scenario_on(
    args: &BenchArgs,
    latency_ms: u64,
    name: &str,
) -> anyhow::Result<AwsBenchResult> {
    let mut rig = AwsRig::start(args, latency_ms, name, ["bench", "other"]).await?;
    let token = rig.ctx.token("bench")?;
    let (buyer_store, inbox) = (rig.buyer_store.clone(), rig.inbox.clone());
    let (notes, reports) = (&mut rig.notes, &mut rig.reports);
    let make = |prefix: &str, n: u32| -> Vec<(String, Vec<u8>)> {
        (0..n as usize)
            .map(|i| {
                let id = format!("{prefix}-{i:07}");
                let body = serde_json::to_vec(&text_request(&id, Some(&token), SAMPLE_ROWS[i % 3]))
                    .unwrap_or_default();
                (format!("bench/requests/{id}.json"), body)
            })
            .collect()
    };
    let warmup_jobs = args.jobs / 10;
    let measured_jobs = args.jobs - warmup_jobs;
    let mut kinds = HashMap::new();
    if warmup_jobs > 0 {
        let warm = drive(
            buyer_store.clone(),
            &inbox,
            make("warm", warmup_jobs),
            None,
            notes,
            reports,
        )
        .await?;
        kinds.extend(warm.kinds);
    }

    // Steady state: from here to the last notification of the measured jobs.
    let calls0 = rig.clients.calls.snapshot();
    let buyer0 = rig.buyer_clients.calls.snapshot();
    let cpu0 = cpu_time();
    let full = drive(
        buyer_store,
        &inbox,
        make("full", measured_jobs),
        None,
        notes,
        reports,
    )
    .await?;
    let cpu = cpu_time().saturating_sub(cpu0);
    let calls = calls_between(&calls0, &rig.clients.calls.snapshot());
    let excluded_buyer_calls = calls_between(&buyer0, &rig.buyer_clients.calls.snapshot());
    let endpoint_url = rig.endpoint_url.clone();
    rig.stop().await;

    kinds.extend(full.kinds.iter().map(|(k, v)| (k.clone(), *v)));
    let count = |kind: EventKind| kinds.values().filter(|k| **k == kind).count();
    let jobs = f64::from(measured_jobs);
    let aws_calls: u64 = calls.values().sum();
    let busy: Duration = full.invoke.values().sum();
    let mut latency: Vec<Duration> = full.e2e.values().copied().collect();
    let mut overhead: Vec<Duration> = full
        .e2e
        .iter()
        .map(|(id, e2e)| e2e.saturating_sub(full.invoke.get(id).copied().unwrap_or_default()))
        .collect();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let aws_calls_by_operation: BTreeMap<String, f64> = calls
        .into_iter()
        .map(|(op, n)| (op, n as f64 / jobs))
        .collect();
    let (usd_per_million_jobs, usd_per_million_jobs_by_operation, not_in_cost) =
        crate::prices::per_million_jobs(&aws_calls_by_operation);
    Ok(AwsBenchResult {
        backend: "aws",
        endpoint_url,
        stack: name.to_owned(),
        stack_deleted: false,
        model_latency_ms: latency_ms,
        concurrency: args.concurrency,
        jobs: args.jobs,
        warmup_jobs,
        measured_jobs,
        completed: count(EventKind::InferenceCompleted),
        failed: count(EventKind::InferenceFailed),
        rejected: count(EventKind::RequestRejected),
        seconds: full.seconds,
        jobs_per_sec: jobs / full.seconds,
        latency_ms_p50: ms(percentile(&mut latency, 50.0)),
        latency_ms_p99: ms(percentile(&mut latency, 99.0)),
        overhead_ms_p50: ms(percentile(&mut overhead, 50.0)),
        overhead_ms_p99: ms(percentile(&mut overhead, 99.0)),
        endpoint_busy_ratio: busy.as_secs_f64() / (f64::from(args.concurrency) * full.seconds),
        cpu_ms_per_job: cpu.as_secs_f64() * 1000.0 / jobs,
        peak_rss_mb: peak_rss_mb(),
        aws_calls,
        aws_calls_per_job: aws_calls as f64 / jobs,
        usd_per_million_jobs,
        usd_per_million_jobs_by_operation,
        not_in_cost,
        prices_as_of: crate::prices::PRICES_AS_OF,
        aws_calls_by_operation,
        excluded_buyer_calls,
    })
}

async fn run_aws(args: &BenchArgs) -> anyhow::Result<ExitCode> {
    let r = aws_scenario(args).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "aws, stack {} at {}: model {:>3} ms, concurrency {:>3}: {:>6} jobs in {:>6.2} s = {:>7.0} jobs/s (after {} warm-up jobs); latency p50 {:.2} ms, p99 {:.2} ms, overhead p50 {:.2} ms, p99 {:.2} ms (full load); endpoint busy {:.1}%; {:.3} cpu ms/job; peak RSS {:.0} MB",
        r.stack,
        r.endpoint_url
            .as_deref()
            .unwrap_or("the AWS default endpoints"),
        r.model_latency_ms,
        r.concurrency,
        r.measured_jobs,
        r.seconds,
        r.jobs_per_sec,
        r.warmup_jobs,
        r.latency_ms_p50,
        r.latency_ms_p99,
        r.overhead_ms_p50,
        r.overhead_ms_p99,
        r.endpoint_busy_ratio * 100.0,
        r.cpu_ms_per_job,
        r.peak_rss_mb
    );
    println!(
        "outcomes of all {} jobs: {} completed, {} failed, {} rejected",
        r.jobs, r.completed, r.failed, r.rejected
    );
    let excluded: Vec<String> = r
        .excluded_buyer_calls
        .iter()
        .map(|(op, n)| format!("{n} {op}"))
        .collect();
    println!(
        "AWS calls per job: {:.3} ({} calls by the pipeline for {} jobs, after the warm-up; not counted: the buyer's uploads, {})",
        r.aws_calls_per_job,
        r.aws_calls,
        r.measured_jobs,
        if excluded.is_empty() {
            "none".to_owned()
        } else {
            excluded.join(", ")
        }
    );
    for (op, per_job) in &r.aws_calls_by_operation {
        match r.usd_per_million_jobs_by_operation.get(op) {
            Some(usd) => println!("  {op:<40} {per_job:>7.3}   ${usd:>7.3} per million jobs"),
            None => println!("  {op:<40} {per_job:>7.3}   (not in the cost)"),
        }
    }
    println!(
        "cost of the pipeline's calls: ${:.2} per million jobs at the list prices of {} (us-east-1; endpoint excluded: {})",
        r.usd_per_million_jobs,
        r.prices_as_of,
        r.not_in_cost.join(", ")
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_missing_dir_is_made_and_one_that_cannot_be_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("not/yet");
        let dir = super::scenario_dir(Some(&base)).unwrap();
        assert!(dir.path().starts_with(&base) && dir.path().is_dir());
        let file = tmp.path().join("a-file");
        std::fs::write(&file, "").unwrap();
        let err = super::scenario_dir(Some(&file.join("b"))).unwrap_err();
        assert!(format!("{err:#}").contains("--dir "), "{err:#}");
    }

    #[test]
    fn cpu_time_counts_user_and_system_time_without_a_terminal() {
        // tpgid (field 8) is -1 for a process without a terminal, as under CI and in pipes.
        let stat = "4242 (sealbox) S 1 4242 4242 0 -1 4194560 900 0 0 0 250 50 0 0 20 0 3 0";
        assert_eq!(
            super::cpu_time_of(stat),
            std::time::Duration::from_millis(3000)
        );
    }
}
