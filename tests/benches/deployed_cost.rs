//! What a million jobs cost on the deployed path, beside the one-process path: the `ingest` and
//! `worker` Lambda binaries under the Lambda Runtime API emulator on moto, fed by
//! event-source-mapping loops that receive and delete as AWS's would and are billed the same
//! way; then `sealbox bench --backend aws` (the one-process path, `up --backend aws`) on the
//! same moto, as many jobs; both reported side by side, by operation:
//! `cargo build --release --bins && cargo bench -p sealbox-tests --bench deployed_cost [-- --json]`.
//!
//! - The mappings: batches of up to 10; the inbox-events mapping waits up to 1 s to fill a batch
//!   (`MaximumBatchingWindowInSeconds: 1` in buyer.yaml), the jobs mapping does not. Each
//!   receive that returns messages is one `SQS.ReceiveMessage`, each batch's deletion one
//!   `SQS.DeleteMessageBatch`. Receives that find nothing are counted apart (idle polling,
//!   which AWS bills per queue and hour, not per job).
//! - The functions' own calls come from their logs: each invocation logs its AWS calls by
//!   operation (`sealbox_aws::lambda::log_calls`).
//! - Lambda: one `Lambda.Invoke` request per invocation, and GB-seconds from each invocation's
//!   time here times the function's memory in buyer.yaml (256 MB ingest, 512 MB worker). That
//!   time is a local build's on moto, not AWS's: the duration figure is an order of magnitude.
//!
//! The requests are dropped at once (a backlog, so batches fill): the steady state of a busy
//! stack. Prices: `sealbox::prices` (the one table, with its sources and date). The endpoint is
//! the model's cost, not the pipeline's, and is left out.
//!
//! `cargo bench` passes `--bench`: a full run of `SEALBOX_BENCH_JOBS` requests (default 500).
//! Without it (`cargo test --all-targets`) this is a smoke run of 12 requests whose numbers mean
//! little, but it takes every step. moto comes from the test Python (`$SEALBOX_TEST_PYTHON`,
//! else `.venv-test/bin/python`); without it the run panics, saying how to install it.

// A benchmark harness: a failed step ends the run, saying which.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, MessageSystemAttributeName};
use sealbox_tests::aws_stack::{AwsStack, BUYER};
use sealbox_tests::lambda_emulator::{LambdaEmulator, batch_item_failures, records_of, sqs_event};
use sealbox_tests::moto::Moto;
use serde_json::{Value, json};

/// What one event source mapping did.
#[derive(Debug, Default)]
struct Mapping {
    receives: u64,
    empty_receives: u64,
    deletes: u64,
    invocations: u64,
    messages: u64,
    busy: Duration,
}

/// Receives batches of `url` for `f` until `done`, as an event source mapping does.
async fn map(
    sqs: &aws_sdk_sqs::Client,
    f: &LambdaEmulator,
    url: &str,
    window: Duration,
    done: &AtomicBool,
) -> Mapping {
    let mut m = Mapping::default();
    while !done.load(Ordering::SeqCst) {
        let mut batch = Vec::new();
        let until = Instant::now() + window;
        loop {
            let wait = if batch.is_empty() {
                1
            } else {
                until.saturating_duration_since(Instant::now()).as_secs() as i32
            };
            let got = sqs
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10 - batch.len() as i32)
                .wait_time_seconds(wait)
                .visibility_timeout(60)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .expect("receiving for the event source mapping")
                .messages
                .unwrap_or_default();
            if got.is_empty() {
                m.empty_receives += 1;
                // moto answers an empty long poll at once: do not spin.
                tokio::time::sleep(Duration::from_millis(100)).await;
            } else {
                m.receives += 1;
            }
            batch.extend(got);
            if batch.is_empty() || batch.len() >= 10 || Instant::now() >= until {
                break;
            }
        }
        if batch.is_empty() {
            continue;
        }
        let records = records_of(&batch, url);
        let started = Instant::now();
        let answer = f
            .invoke(sqs_event(records))
            .await
            .expect("the function answers its invocation");
        m.busy += started.elapsed();
        m.invocations += 1;
        m.messages += batch.len() as u64;
        let failures = batch_item_failures(&answer);
        let entries: Vec<DeleteMessageBatchRequestEntry> = batch
            .iter()
            .filter(|msg| {
                !failures
                    .iter()
                    .any(|id| Some(id.as_str()) == msg.message_id())
            })
            .enumerate()
            .filter_map(|(i, msg)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(msg.receipt_handle().unwrap_or_default())
                    .build()
                    .ok()
            })
            .collect();
        if !entries.is_empty() {
            sqs.delete_message_batch()
                .queue_url(url)
                .set_entries(Some(entries))
                .send()
                .await
                .expect("deleting a handled batch");
            m.deletes += 1;
        }
    }
    m
}

/// The AWS calls a function's invocations logged, summed by operation.
fn logged_calls(f: &LambdaEmulator) -> BTreeMap<String, u64> {
    let mut calls = BTreeMap::new();
    for line in f.logs() {
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let Some(counts) = v["fields"]["aws_calls"].as_str() else {
            continue;
        };
        let counts: BTreeMap<String, u64> = serde_json::from_str(counts).unwrap_or_default();
        for (op, n) in counts {
            *calls.entry(op).or_default() += n;
        }
    }
    calls
}

async fn results(s3: &aws_sdk_s3::Client, bucket: &str) -> usize {
    let mut n = 0;
    let mut pages = s3
        .list_objects_v2()
        .bucket(bucket)
        .prefix(format!("{BUYER}/results/"))
        .into_paginator()
        .send();
    while let Some(Ok(page)) = pages.next().await {
        n += page.contents().len();
    }
    n
}

/// `sealbox bench --backend aws --json` of `jobs` jobs on `moto`: the one-process path's report
/// (it makes its own stack and deletes it).
fn one_process(moto: &Moto, jobs: usize) -> Value {
    let data = tempfile::tempdir().expect("a temporary folder");
    let out = std::process::Command::new(sealbox_tests::sealbox_bin())
        .arg("--data-dir")
        .arg(data.path())
        .args(["bench", "--backend", "aws", "--json", "--jobs"])
        .arg(jobs.to_string())
        .envs(moto.env())
        .output()
        .expect("running sealbox bench --backend aws");
    assert!(
        out.status.success(),
        "sealbox bench --backend aws failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("sealbox bench --json prints one JSON object")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let as_json =
        args.iter().any(|a| a == "--json") || std::env::var_os("SEALBOX_BENCH_JSON").is_some();
    let jobs: usize = if full {
        std::env::var("SEALBOX_BENCH_JOBS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(500)
    } else {
        12
    };
    let stack = AwsStack::start("cost", &[]);
    let config = stack.sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&config);
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build(),
    );
    let extra = [
        ("SEALBOX_MAX_CONCURRENT_INVOCATIONS", "4"),
        ("RUST_LOG", "info"),
    ];
    let ingest = stack.lambda("ingest", &extra).await;
    let worker = stack.lambda("worker", &extra).await;
    let events_url = stack.get("SEALBOX_INBOX_EVENTS_QUEUE_URL").to_owned();
    let jobs_url = stack.get("SEALBOX_JOBS_QUEUE_URL").to_owned();
    let outbox = stack.get("SEALBOX_OUTBOX_BUCKET").to_owned();

    let objects: Vec<(String, String)> = (0..jobs)
        .map(|i| stack.request(&format!("cost{i:05}")))
        .collect();
    stack.put(stack.get("SEALBOX_INBOX_BUCKET"), &objects);

    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let watch = async {
        let end = Instant::now() + Duration::from_secs(600);
        while results(&s3, &outbox).await < jobs {
            assert!(
                Instant::now() < end,
                "the jobs did not finish in 10 minutes"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        done.store(true, Ordering::SeqCst);
    };
    let (events, jobs_mapping, ()) = tokio::join!(
        map(&sqs, &ingest, &events_url, Duration::from_secs(1), &done),
        map(&sqs, &worker, &jobs_url, Duration::ZERO, &done),
        watch,
    );
    let took = started.elapsed();

    let mut calls: BTreeMap<String, u64> = BTreeMap::new();
    for (op, n) in logged_calls(&ingest)
        .into_iter()
        .chain(logged_calls(&worker))
    {
        *calls.entry(op).or_default() += n;
    }
    *calls.entry("SQS.ReceiveMessage".into()).or_default() +=
        events.receives + jobs_mapping.receives;
    *calls.entry("SQS.DeleteMessageBatch".into()).or_default() +=
        events.deletes + jobs_mapping.deletes;
    calls.insert(
        "Lambda.Invoke".into(),
        events.invocations + jobs_mapping.invocations,
    );
    let per_job: BTreeMap<String, f64> = calls
        .iter()
        .map(|(op, n)| (op.clone(), *n as f64 / jobs as f64))
        .collect();
    let (requests_usd, by_operation, not_in_cost) = sealbox::prices::per_million_jobs(&per_job);
    let gb_seconds =
        (events.busy.as_secs_f64() * 0.25 + jobs_mapping.busy.as_secs_f64() * 0.5) / jobs as f64;
    let duration_usd = gb_seconds * sealbox::prices::LAMBDA_ARM64_USD_PER_GB_SECOND * 1e6;
    let report = json!({
        "path": "deployed: ingest and worker functions, event source mappings",
        "jobs": jobs,
        "seconds": took.as_secs_f64(),
        "aws_calls_per_job": per_job.values().sum::<f64>(),
        "aws_calls_by_operation": per_job,
        "usd_per_million_jobs": requests_usd + duration_usd,
        "usd_per_million_jobs_by_operation": by_operation,
        "lambda_gb_seconds_per_job": gb_seconds,
        "usd_per_million_jobs_lambda_duration": duration_usd,
        "not_in_cost": not_in_cost,
        "messages_per_invocation": {
            "ingest": events.messages as f64 / events.invocations.max(1) as f64,
            "worker": jobs_mapping.messages as f64 / jobs_mapping.invocations.max(1) as f64,
        },
        "idle_receives": events.empty_receives + jobs_mapping.empty_receives,
        "prices_as_of": sealbox::prices::PRICES_AS_OF,
    });
    assert!(
        calls.get("S3.PutObject").copied().unwrap_or(0) >= jobs as u64,
        "every job writes its result: {calls:?}"
    );
    // The one-process path after the deployed one, so neither slows the other.
    drop(ingest);
    drop(worker);
    let local = one_process(&stack.moto, jobs.max(20));
    if as_json {
        println!("{}", json!({ "deployed": report, "one_process": local }));
        return;
    }
    println!("AWS calls per job by operation, and USD per million jobs (endpoint excluded)");
    let local_calls = local["aws_calls_by_operation"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let ops: std::collections::BTreeSet<&String> =
        per_job.keys().chain(local_calls.keys()).collect();
    println!(
        "  {:<34} {:>10} {:>12}",
        "operation", "deployed", "one process"
    );
    for op in ops {
        let here = per_job.get(op).copied().unwrap_or(0.0);
        let there = local_calls.get(op).and_then(Value::as_f64).unwrap_or(0.0);
        println!("  {op:<34} {here:>10.3} {there:>12.3}");
    }
    println!(
        "  {:<34} {:>10.3} {:>12.3}",
        "calls per job",
        per_job.values().sum::<f64>(),
        local["aws_calls_per_job"].as_f64().unwrap_or_default()
    );
    println!(
        "  {:<34} {:>10.2} {:>12.2}",
        "USD per million jobs",
        requests_usd + duration_usd,
        local["usd_per_million_jobs"].as_f64().unwrap_or_default()
    );
    println!();
    println!("deployed path: {jobs} jobs in {:.1} s", took.as_secs_f64());
    for (op, n) in &per_job {
        let usd = by_operation.get(op).map_or("not priced".to_owned(), |u| {
            format!("${u:.3} per million jobs")
        });
        println!("  {op:<34} {n:>6.3} calls/job  {usd}");
    }
    println!(
        "  {:<34} {gb_seconds:>6.4} GB-s/job   ${duration_usd:.3} per million jobs (local timing)",
        "Lambda duration"
    );
    println!(
        "  {:<34} {:>6.3} calls/job  ${:.2} per million jobs",
        "total",
        per_job.values().sum::<f64>(),
        requests_usd + duration_usd
    );
    println!(
        "  messages per invocation: ingest {:.1}, worker {:.1}; idle receives {}",
        report["messages_per_invocation"]["ingest"]
            .as_f64()
            .unwrap_or_default(),
        report["messages_per_invocation"]["worker"]
            .as_f64()
            .unwrap_or_default(),
        report["idle_receives"]
    );
}
