//! `sealbox bench`: drives request objects through the same path `up` uses (written into the
//! inbox, until the notification) and reports throughput, overhead and endpoint utilisation.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Args;
use sealbox_authz::Keyset;
use sealbox_core::layout::INBOX;
use sealbox_core::ports::{ObjectStore, PutMode};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::cases::{CaseContext, SAMPLE_ROWS, text_request};
use crate::demo::percentile;
use crate::stack::{ModelSource, Observers, Stack, StackOptions};

/// Arguments of `sealbox bench`.
#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Jobs in the throughput run of each scenario.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub jobs: u32,
    /// Model latency scenarios in milliseconds (repeat the flag; default: 0 and 20).
    #[arg(long = "model-latency-ms")]
    pub model_latency_ms: Vec<u64>,
    /// Model invocations in flight at once (the worker's cap).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,
    /// Seconds of the half-load run that measures overhead.
    #[arg(long, default_value_t = 3.0)]
    pub half_load_seconds: f64,
    /// Put the scenarios' data directories under this folder (default: the system temp folder).
    #[arg(long)]
    pub dir: Option<std::path::PathBuf>,
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
    // utime + stime from /proc/self/stat, in clock ticks (100 per second on Linux).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, s)| s).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // Fields after the command: state(3) is not numeric, so utime/stime sit at 10 and 11 here.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
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
}

/// Writes `ids` into the inbox (at `rate` per second, or as fast as possible) and waits for
/// every notification.
async fn drive(
    stack: &Stack,
    bodies: Vec<(String, Vec<u8>)>,
    rate: Option<f64>,
    notes: &mut mpsc::UnboundedReceiver<sealbox_core::contract::Notification>,
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
        let store = stack.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut written = HashMap::with_capacity(chunk.len());
            let mut tick = rate.map(|r| tokio::time::interval(Duration::from_secs_f64(1.0 / r)));
            for (key, body) in chunk {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                store
                    .put(INBOX, &key, Bytes::from(body), PutMode::Overwrite)
                    .await?;
                written.insert(key, Instant::now());
            }
            anyhow::Ok(written)
        }));
    }
    let mut arrived = HashMap::with_capacity(n);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while arrived.len() < n {
        match tokio::time::timeout_at(deadline, notes.recv()).await {
            Ok(Some(note)) => {
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
    drive(&stack, make("warm", 200), None, &mut notes, &mut reports).await?;

    let cpu0 = cpu_time();
    let full = drive(
        &stack,
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
        &stack,
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

/// `sealbox bench`.
pub async fn run(mut args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.model_latency_ms.is_empty() {
        args.model_latency_ms = vec![0, 20];
    }
    let mut results = Vec::new();
    // Data directories are removed only at the end: freeing many inodes just before a scenario
    // makes the file system's inode allocation slower for minutes, which would skew it.
    let mut dirs = Vec::new();
    for latency in args.model_latency_ms.clone() {
        let dir = match &args.dir {
            Some(base) => tempfile::tempdir_in(base)?,
            None => tempfile::tempdir()?,
        };
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
