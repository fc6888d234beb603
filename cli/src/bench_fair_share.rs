//! `sealbox bench --fair-share`: how long one buyer's few requests take alone, and right after
//! another buyer's burst, on the embedded stack or (`--backend aws`) the pipeline of `up
//! --backend aws` on a fresh stack. Fair share means the second figure stays close to the
//! first instead of growing with the burst.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sealbox_authz::Keyset;
use sealbox_core::contract::Notification;
use sealbox_core::layout::INBOX;
use sealbox_core::ports::{ObjectStore, PutMode};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::bench::BenchArgs;
use crate::cases::{CaseContext, SAMPLE_ROWS, text_request};
use crate::stack::{ModelSource, Observers, Stack, StackOptions};

/// The buyer whose burst comes first.
const BURSTING: &str = "buyer-a";
/// The buyer with a few requests, right after the burst.
const FEW: &str = "buyer-b";

/// The numbers of `sealbox bench --fair-share`.
#[derive(Debug, Clone, Serialize)]
pub struct FairShareResult {
    /// `embedded` or `aws`.
    pub backend: &'static str,
    /// With `aws`: whether the benchmark's stack was deleted afterwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stack_deleted: Option<bool>,
    /// Model latency.
    pub model_latency_ms: u64,
    /// Worker concurrency cap.
    pub concurrency: u16,
    /// Requests in the first buyer's burst.
    pub burst: u32,
    /// Requests of the second buyer.
    pub few: u32,
    /// Seconds for the second buyer's requests alone, from the first write to the last
    /// notification.
    pub few_alone_seconds: f64,
    /// The same, written right after the burst.
    pub few_after_burst_seconds: f64,
    /// Seconds from the burst's first write to its last notification.
    pub burst_seconds: f64,
}

impl FairShareResult {
    fn of(
        backend: &'static str,
        stack_deleted: Option<bool>,
        model_latency_ms: u64,
        args: &BenchArgs,
        burst: u32,
        times: Times,
    ) -> Self {
        FairShareResult {
            backend,
            stack_deleted,
            model_latency_ms,
            concurrency: args.concurrency,
            burst,
            few: FEW_REQUESTS,
            few_alone_seconds: times.alone,
            few_after_burst_seconds: times.beside,
            burst_seconds: times.burst,
        }
    }
}

/// Writes `objects` into `bucket` (four writers at once) and answers when the writes began.
async fn write_all(
    store: Arc<dyn ObjectStore>,
    bucket: &str,
    objects: Vec<(String, Vec<u8>)>,
) -> Instant {
    let started = Instant::now();
    let mut chunks: Vec<Vec<(String, Vec<u8>)>> = (0..4).map(|_| Vec::new()).collect();
    for (i, o) in objects.into_iter().enumerate() {
        chunks[i % 4].push(o);
    }
    let mut writers = Vec::new();
    for chunk in chunks {
        let (store, bucket) = (store.clone(), bucket.to_owned());
        writers.push(tokio::spawn(async move {
            for (key, body) in chunk {
                store
                    .put(&bucket, &key, Bytes::from(body), PutMode::Overwrite)
                    .await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in writers {
        // A failed write shows as a request that never finishes: reported by `wait_for`.
        if let Ok(Err(e)) = w.await {
            eprintln!("writing a request object failed: {e}");
        }
    }
    started
}

/// Waits until every id in `want` (by prefix of its request id) has a notification; answers
/// when each prefix's last one came.
async fn wait_for(
    notes: &mut mpsc::UnboundedReceiver<Notification>,
    want: &[(&str, usize)],
) -> anyhow::Result<HashMap<String, Instant>> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut last = HashMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(600);
    while want
        .iter()
        .any(|(p, n)| seen.get(*p).copied().unwrap_or(0) < *n)
    {
        let note = match tokio::time::timeout_at(deadline, notes.recv()).await {
            Ok(Some(n)) => n,
            _ => anyhow::bail!("not every request finished in time: {seen:?} of {want:?}"),
        };
        if let Some((p, _)) = want.iter().find(|(p, _)| note.request_id.starts_with(p)) {
            *seen.entry((*p).to_owned()).or_default() += 1;
            last.insert((*p).to_owned(), Instant::now());
        }
    }
    Ok(last)
}

/// What the scenario measures, in seconds: the few alone, the few after the burst, the burst.
struct Times {
    alone: f64,
    beside: f64,
    burst: f64,
}

/// Warms both buyers' paths, then times the few alone, then the burst and the few right after
/// it; requests are written into `bucket` of `store`, and their notifications come on `notes`.
async fn measure(
    store: Arc<dyn ObjectStore>,
    bucket: &str,
    notes: &mut mpsc::UnboundedReceiver<Notification>,
    ctx: &CaseContext,
    burst: u32,
    few: u32,
) -> anyhow::Result<Times> {
    let make = |buyer: &str, prefix: &str, n: u32| -> anyhow::Result<Vec<(String, Vec<u8>)>> {
        let token = ctx.token(buyer)?;
        (0..n)
            .map(|i| {
                let id = format!("{prefix}-{i:07}");
                let r = text_request(&id, Some(&token), SAMPLE_ROWS[i as usize % 3]);
                Ok((
                    format!("{buyer}/requests/{id}.json"),
                    serde_json::to_vec(&r)?,
                ))
            })
            .collect()
    };

    // Warm up both buyers' paths (token verification, connections, caches) first.
    let mut warm = make(BURSTING, "warm-a", few)?;
    warm.extend(make(FEW, "warm-b", few)?);
    write_all(store.clone(), bucket, warm).await;
    wait_for(notes, &[("warm-a", few as usize), ("warm-b", few as usize)]).await?;

    let started = write_all(store.clone(), bucket, make(FEW, "alone", few)?).await;
    let done = wait_for(notes, &[("alone", few as usize)]).await?;
    let alone = done["alone"] - started;

    let burst_started = write_all(store.clone(), bucket, make(BURSTING, "burst", burst)?).await;
    let few_started = write_all(store, bucket, make(FEW, "beside", few)?).await;
    let done = wait_for(
        notes,
        &[("burst", burst as usize), ("beside", few as usize)],
    )
    .await?;
    Ok(Times {
        alone: alone.as_secs_f64(),
        beside: (done["beside"] - few_started).as_secs_f64(),
        burst: (done["burst"] - burst_started).as_secs_f64(),
    })
}

/// The second buyer's requests.
const FEW_REQUESTS: u32 = 20;

/// Runs the fair-share scenario on a fresh embedded stack in `dir`.
pub async fn run(
    args: &BenchArgs,
    burst: u32,
    dir: &tempfile::TempDir,
) -> anyhow::Result<FairShareResult> {
    let latency_ms = args.model_latency_ms.first().copied().unwrap_or(20);
    let mut opts = StackOptions::new(dir.path());
    opts.model = ModelSource::InProcess {
        latency: Duration::from_millis(latency_ms),
        port: 0,
    };
    opts.concurrency = usize::from(args.concurrency);
    let (ntx, mut notes) = mpsc::unbounded_channel();
    let stack = Stack::start(
        opts.clone(),
        Observers {
            notifications: Some(ntx),
            jobs: None,
        },
    )
    .await?;
    let keyset = Keyset::load(&stack.paths.keyset)?;
    let ctx = CaseContext::new(&keyset, BURSTING, FEW, &opts.product)?;
    let store: Arc<dyn ObjectStore> = Arc::new(stack.store.clone());
    let times = measure(store, INBOX, &mut notes, &ctx, burst, FEW_REQUESTS).await;
    stack.stop().await;
    Ok(FairShareResult::of(
        "embedded", None, latency_ms, args, burst, times?,
    ))
}

/// Runs the fair-share scenario with the pipeline of `up --backend aws` on a fresh stack at the
/// endpoint the AWS environment names, and deletes the stack afterwards.
pub async fn run_aws(args: &BenchArgs, burst: u32) -> anyhow::Result<FairShareResult> {
    let latency_ms = args.model_latency_ms.first().copied().unwrap_or(20);
    let (times, deleted) = crate::bench::on_fresh_stack(async |name: String| {
        let mut rig = crate::bench::AwsRig::start(args, latency_ms, &name, [BURSTING, FEW]).await?;
        let (store, inbox) = (rig.buyer_store.clone(), rig.inbox.clone());
        let times = measure(store, &inbox, &mut rig.notes, &rig.ctx, burst, FEW_REQUESTS).await;
        rig.stop().await;
        times
    })
    .await;
    Ok(FairShareResult::of(
        "aws",
        Some(deleted),
        latency_ms,
        args,
        burst,
        times?,
    ))
}
