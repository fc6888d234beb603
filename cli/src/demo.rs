//! `sealbox demo`: a few hundred requests, some deliberately bad, through the whole embedded
//! flow; checks that each got the outcome it should and prints a summary.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use indicatif::{ProgressBar, ProgressStyle};
use sealbox_authz::Keyset;
use sealbox_core::contract::{EventKind, Notification, event_id};
use sealbox_core::layout::{INBOX, OUTBOX, failed_key, rejected_key, result_key};
use sealbox_core::ports::{ObjectStore, PutMode};
use tokio::sync::mpsc;

use crate::cases::{Case, CaseContext, Expect, bad_cases, good_cases};
use crate::stack::{Observers, Stack, StackOptions};

/// What became of a set of cases.
#[derive(Debug, Default)]
pub struct CaseReport {
    /// Cases whose outcome was not the expected one, in words.
    pub mismatches: Vec<String>,
    /// Completed requests.
    pub completed: usize,
    /// Failed requests by reason.
    pub failed: BTreeMap<String, usize>,
    /// Rejected requests by reason.
    pub rejected: BTreeMap<String, usize>,
    /// Time from the request object landing to its notification, per request.
    pub latencies: Vec<Duration>,
    /// Notifications seen in all (repeats included).
    pub notifications: usize,
}

impl CaseReport {
    /// True if every case got its expected outcome.
    pub fn ok(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Uploads inputs, then request objects (the duplicate ones twice) into the inbox.
pub async fn submit(
    store: &dyn ObjectStore,
    cases: &[Case],
    duplicates: usize,
) -> anyhow::Result<HashMap<(String, String), Instant>> {
    let mut written = HashMap::with_capacity(cases.len());
    for c in cases {
        for (key, bytes) in &c.inputs {
            store
                .put(INBOX, key, Bytes::from(bytes.clone()), PutMode::Overwrite)
                .await?;
        }
        c.put_request(store).await?;
        written.insert((c.buyer.clone(), c.request_id.clone()), Instant::now());
    }
    for c in cases
        .iter()
        .filter(|c| c.expect == Expect::Completed)
        .take(duplicates)
    {
        c.put_request(store).await?;
    }
    Ok(written)
}

/// Waits until every case has a notification (or `timeout`), then checks outcomes and objects.
pub async fn collect(
    store: &dyn ObjectStore,
    cases: &[Case],
    written: &HashMap<(String, String), Instant>,
    rx: &mut mpsc::UnboundedReceiver<Notification>,
    progress: &ProgressBar,
    timeout: Duration,
) -> anyhow::Result<CaseReport> {
    let mut seen: HashMap<(String, String), Vec<Notification>> = HashMap::new();
    let mut report = CaseReport::default();
    let deadline = tokio::time::Instant::now() + timeout;
    while seen.len() < cases.len() {
        let n = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(n)) => n,
            _ => break,
        };
        report.notifications += 1;
        let k = (n.buyer.clone(), n.request_id.clone());
        let list = seen.entry(k.clone()).or_default();
        if list.is_empty() {
            progress.inc(1);
            if let Some(t) = written.get(&k) {
                report.latencies.push(t.elapsed());
            }
        }
        list.push(n);
    }
    // Let repeats that are already on their way arrive before judging.
    while let Ok(n) = rx.try_recv() {
        report.notifications += 1;
        seen.entry((n.buyer.clone(), n.request_id.clone()))
            .or_default()
            .push(n);
    }
    for c in cases {
        let k = (c.buyer.clone(), c.request_id.clone());
        let Some(ns) = seen.get(&k) else {
            report.mismatches.push(format!(
                "{} ({}/{}): no notification",
                c.name, c.buyer, c.request_id
            ));
            continue;
        };
        let want_id = event_id(&c.buyer, &c.request_id);
        if ns
            .iter()
            .any(|n| n.event_id != want_id || n.event != ns[0].event)
        {
            report.mismatches.push(format!(
                "{} ({}): notifications disagree",
                c.name, c.request_id
            ));
        }
        let n = &ns[0];
        let got = match n.event {
            EventKind::InferenceCompleted => Expect::Completed,
            EventKind::InferenceFailed => Expect::Failed(
                n.reason
                    .unwrap_or(sealbox_core::contract::Reason::MalformedJob),
            ),
            _ => Expect::Rejected(
                n.reason
                    .unwrap_or(sealbox_core::contract::Reason::MalformedJob),
            ),
        };
        match got {
            Expect::Completed => report.completed += 1,
            Expect::Failed(r) => *report.failed.entry(r.to_string()).or_default() += 1,
            Expect::Rejected(r) => *report.rejected.entry(r.to_string()).or_default() += 1,
        }
        if got != c.expect {
            report.mismatches.push(format!(
                "{} ({}): expected {:?}, got {:?}",
                c.name, c.request_id, c.expect, got
            ));
        }
        let mut objects = 0;
        for key in [
            result_key(&c.buyer, &c.request_id),
            failed_key(&c.buyer, &c.request_id),
            rejected_key(&c.buyer, &c.request_id),
        ] {
            objects += usize::from(store.head(OUTBOX, &key).await?.is_some());
        }
        if objects != 1 {
            report.mismatches.push(format!(
                "{} ({}): {objects} outcome objects",
                c.name, c.request_id
            ));
        }
    }
    Ok(report)
}

/// Percentile `p` (0-100) of `values`, which it sorts.
pub fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort_unstable();
    let i = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[i.min(values.len() - 1)]
}

/// A progress bar on stderr (hidden when `hidden`).
pub fn progress_bar(len: u64, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} {bar:40} {pos}/{len} outcomes {elapsed}")
    {
        pb.set_style(style);
    }
    pb
}

/// Runs the demo in `data_dir` (which should be fresh); returns the report.
pub async fn run(data_dir: &Path, good: usize, quiet: bool) -> anyhow::Result<CaseReport> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let opts = StackOptions::new(data_dir);
    let stack = Stack::start(
        opts.clone(),
        Observers {
            notifications: Some(tx),
            jobs: None,
        },
    )
    .await?;
    let keyset = Keyset::load(&stack.paths.keyset)?;
    let mut ctx = CaseContext::new(&keyset, "111122223333", "444455556666", &opts.product)?;
    // The seller subscribes both buyers; each gets its token from the token service, the way
    // `sealbox seller grant` and `sealbox buyer token` do it.
    for buyer in [ctx.buyer.clone(), ctx.other_buyer.clone()] {
        let (_, secret) =
            crate::access::grant_secret(data_dir, &buyer, &opts.product, None).await?;
        let secret_file = stack.paths.buyers.join(&buyer).join("secret");
        crate::access::write_secret(&secret_file, &secret)?;
        let creds = crate::access::BuyerCredentials {
            secret_file: Some(secret_file),
            token_url: Some(stack.token_url.clone()),
            ..Default::default()
        };
        let token =
            crate::access::buyer_token(data_dir, &buyer, &creds, None, false, false).await?;
        ctx.buyer_tokens.insert(buyer, token);
    }
    if !quiet {
        println!(
            "buyers {} and {} subscribed; their tokens come from the token service at {}",
            ctx.buyer, ctx.other_buyer, stack.token_url
        );
    }
    let mut cases = good_cases(&ctx, good)?;
    cases.extend(bad_cases(&ctx)?);
    let pb = progress_bar(cases.len() as u64, quiet);
    let written = submit(&stack.store, &cases, 5).await?;
    let report = collect(
        &stack.store,
        &cases,
        &written,
        &mut rx,
        &pb,
        Duration::from_secs(120),
    )
    .await;
    pb.finish_and_clear();
    stack.stop().await;
    report
}

/// Prints the summary table.
pub fn print_summary(report: &mut CaseReport, total: usize) {
    println!("{:<40} {:>8}", "outcome", "requests");
    println!("{:<40} {:>8}", "completed", report.completed);
    for (r, n) in &report.failed {
        println!("{:<40} {:>8}", format!("failed: {r}"), n);
    }
    for (r, n) in &report.rejected {
        println!("{:<40} {:>8}", format!("rejected: {r}"), n);
    }
    println!("{:<40} {:>8}", "total", total);
    println!(
        "{:<40} {:>8}",
        "notifications (repeats included)", report.notifications
    );
    let l = &mut report.latencies;
    println!(
        "latency from inbox to notification: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(percentile(l, 50.0)),
        ms(percentile(l, 90.0)),
        ms(percentile(l, 99.0)),
        ms(percentile(l, 100.0)),
    );
    for m in &report.mismatches {
        println!("MISMATCH {m}");
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
