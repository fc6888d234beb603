//! `sealbox bench --backend aws` against moto: it bootstraps its own stack, serves the model
//! in-process, runs every job to its outcome and reports the AWS calls the pipeline made per
//! job, by operation (no timing assertions: numbers come from benchmarks, not tests).

use std::process::Command;

use sealbox_tests::moto::Moto;

#[test]
fn bench_on_moto_completes_every_job_and_counts_the_pipelines_calls_by_operation() {
    let moto = Moto::start();
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(sealbox_tests::sealbox_bin())
        .arg("--data-dir")
        .arg(data.path())
        .args(["bench", "--backend", "aws", "--jobs", "50", "--json"])
        .envs(moto.env())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not one JSON object ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });

    assert_eq!(r["backend"], "aws", "{r}");
    assert_eq!(r["endpoint_url"], moto.endpoint.as_str(), "{r}");
    let stack = r["stack"].as_str().unwrap();
    assert!(stack.starts_with("bench-"), "{r}");
    // What the benchmark made, it deletes.
    assert_eq!(r["stack_deleted"], true, "{r}");
    let buckets = sealbox_tests::aws_cli::AwsCli::new(&moto).json(&["s3api", "list-buckets"]);
    assert!(!buckets.to_string().contains(stack), "{buckets}");
    assert_eq!(r["jobs"], 50, "{r}");
    let warmup = r["warmup_jobs"].as_u64().unwrap();
    let measured = r["measured_jobs"].as_u64().unwrap();
    assert_eq!(warmup + measured, 50, "{r}");
    assert!(warmup > 0, "{r}");
    assert_eq!(r["completed"], 50, "every job completed: {r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["rejected"], 0, "{r}");

    let per_job = r["aws_calls_per_job"].as_f64().unwrap();
    assert!(per_job > 0.0, "{r}");
    let by_op = r["aws_calls_by_operation"].as_object().unwrap();
    // The counter's keys are the SDK's "service.Operation" (e.g. "S3.PutObject").
    for op in [
        "S3.PutObject",
        "S3.GetObject",
        "SQS.ReceiveMessage",
        "SQS.DeleteMessageBatch",
        "SNS.PublishBatch",
        "SageMaker Runtime.InvokeEndpoint",
    ] {
        let n = by_op.get(op).and_then(|v| v.as_f64()).unwrap_or(0.0);
        assert!(n > 0.0, "no {op} in {r}");
    }
    let sum: f64 = by_op.values().map(|v| v.as_f64().unwrap()).sum();
    assert!(
        (sum - per_job).abs() < 1e-6,
        "the breakdown sums to {sum}, not {per_job}: {r}"
    );
    assert_eq!(
        r["aws_calls"].as_f64().unwrap(),
        (per_job * measured as f64).round(),
        "{r}"
    );
    // What a million jobs cost: every call but the endpoint's priced, summing to the total;
    // the result's own PutObject ($5 per million) is the floor.
    let usd = r["usd_per_million_jobs"].as_f64().unwrap();
    let usd_by_op = r["usd_per_million_jobs_by_operation"].as_object().unwrap();
    let usd_sum: f64 = usd_by_op.values().map(|v| v.as_f64().unwrap()).sum();
    assert!((usd - usd_sum).abs() < 1e-6, "{r}");
    assert!(usd >= 5.0, "{r}");
    assert_eq!(
        r["not_in_cost"],
        serde_json::json!(["SageMaker Runtime.InvokeEndpoint"]),
        "{r}"
    );
    assert_eq!(usd_by_op.len() + 1, by_op.len(), "{r}");
    // The bench's own uploads of the measured request objects are the buyer's calls: counted
    // apart, not in the pipeline's figures.
    assert_eq!(r["excluded_buyer_calls"]["S3.PutObject"], measured, "{r}");
    // Bootstrapping (CreateBucket, CreateQueue, ...) happened before the window.
    for op in by_op.keys() {
        assert!(
            !op.contains("Create") && !op.contains("SetQueueAttributes"),
            "set-up call {op} counted: {r}"
        );
    }
}

#[test]
fn fair_share_bench_on_moto_times_both_buyers_and_deletes_its_stack() {
    let moto = Moto::start();
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(sealbox_tests::sealbox_bin())
        .arg("--data-dir")
        .arg(data.path())
        .args([
            "bench",
            "--fair-share",
            "--backend",
            "aws",
            "--burst",
            "60",
            "--model-latency-ms",
            "0",
            "--json",
        ])
        .envs(moto.env())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["backend"], "aws", "{r}");
    assert_eq!(r["burst"], 60, "{r}");
    assert_eq!(r["few"], 20, "{r}");
    for figure in [
        "few_alone_seconds",
        "few_after_burst_seconds",
        "burst_seconds",
    ] {
        assert!(r[figure].as_f64().unwrap() > 0.0, "{figure}: {r}");
    }
    assert_eq!(r["stack_deleted"], true, "{r}");
    let buckets = sealbox_tests::aws_cli::AwsCli::new(&moto).json(&["s3api", "list-buckets"]);
    assert!(!buckets.to_string().contains("bench-"), "{buckets}");
}
