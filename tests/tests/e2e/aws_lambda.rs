//! The `ingest` and `worker` Lambda binaries themselves (built for the host) under a Lambda
//! Runtime API emulator, fed by an event-source-mapping loop over moto's SQS: receive up to 10,
//! invoke, delete the successes, leave the `batchItemFailures`.

use std::time::{Duration, Instant};

use sealbox_tests::aws_stack::{AwsStack, BUYER};
use sealbox_tests::lambda_emulator::{LambdaEmulator, pump};

async fn sqs_client(stack: &AwsStack) -> aws_sdk_sqs::Client {
    aws_sdk_sqs::Client::new(&stack.sdk_config().await)
}

async fn function(stack: &AwsStack, name: &str) -> LambdaEmulator {
    let extra = [
        ("SEALBOX_MAX_CONCURRENT_INVOCATIONS", "4"),
        ("RUST_LOG", "info"),
    ];
    stack.lambda(name, &extra).await
}

async fn visible(sqs: &aws_sdk_sqs::Client, url: &str) -> u64 {
    let a = sqs
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
        .send()
        .await
        .unwrap();
    a.attributes()
        .and_then(|m| m.get(&aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_functions_answer_partial_batches_retry_throttling_and_fail_model_rejections() {
    // One call at a time, each a second long: a batch of jobs run together is throttled.
    let stack = AwsStack::start("fns", &["--max-concurrency", "1", "--latency-ms", "1000"]);
    let sqs = sqs_client(&stack).await;
    let ingest = function(&stack, "ingest").await;
    let worker = function(&stack, "worker").await;
    let events_url = stack.get("SEALBOX_INBOX_EVENTS_QUEUE_URL").to_owned();
    let jobs_url = stack.get("SEALBOX_JOBS_QUEUE_URL").to_owned();

    let mut objects: Vec<(String, String)> =
        (0..3).map(|i| stack.request(&format!("ok{i}"))).collect();
    let mut bad = sealbox::cases::text_request("bad-csv", Some(&stack.token), "not,a,number,row");
    bad.content_type = "text/csv".into();
    objects.push((
        format!("{BUYER}/requests/bad-csv.json"),
        serde_json::to_string(&bad).unwrap(),
    ));
    stack.put(stack.get("SEALBOX_INBOX_BUCKET"), &objects);
    let poison = sqs
        .send_message()
        .queue_url(&events_url)
        .message_body("this is not an S3 event")
        .send()
        .await
        .unwrap()
        .message_id
        .unwrap();
    // The bootstrap's s3:TestEvent, four notifications and the poison.
    let end = Instant::now() + Duration::from_secs(30);
    while visible(&sqs, &events_url).await < 6 {
        assert!(Instant::now() < end, "the notifications did not arrive");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 1. One batch with one poisoned message: exactly that one is reported.
    let (batch, failures) = pump(&sqs, &ingest, &events_url).await;
    assert_eq!(batch.len(), 6, "{batch:?}");
    assert_eq!(failures, vec![poison.clone()]);

    // 2. The jobs through the worker until every request has its outcome; the throttled
    // ones come back (batch item failures) and complete.
    let mut retried = 0;
    let end = Instant::now() + Duration::from_secs(90);
    loop {
        let outcomes: Vec<String> = stack
            .list(stack.get("SEALBOX_OUTBOX_BUCKET"), &format!("{BUYER}/"))
            .into_iter()
            .filter(|k| !k.contains("/claims/"))
            .collect();
        if outcomes.len() == 4 {
            let expect = [
                format!("{BUYER}/failed/bad-csv.json"),
                format!("{BUYER}/results/ok0.out"),
                format!("{BUYER}/results/ok1.out"),
                format!("{BUYER}/results/ok2.out"),
            ];
            assert_eq!(outcomes, expect);
            break;
        }
        assert!(Instant::now() < end, "outcomes so far: {outcomes:?}");
        let (_, failed) = pump(&sqs, &worker, &jobs_url).await;
        retried += failed.len();
    }
    assert!(
        retried > 0,
        "no job was throttled: the test did not test retries"
    );
    let logs = worker.logs().join("\n");
    assert!(logs.contains("throttled"), "{logs}");

    // 3. The model's 4xx is a failure document naming the reason.
    let failed = stack.list(
        stack.get("SEALBOX_OUTBOX_BUCKET"),
        &format!("{BUYER}/failed/"),
    );
    assert_eq!(failed.len(), 1);
    let doc: serde_json::Value =
        serde_json::from_str(&stack.get_object(stack.get("SEALBOX_OUTBOX_BUCKET"), &failed[0]))
            .unwrap();
    assert_eq!(doc["reason"], "model_rejected_input", "{doc}");
    // Every log line is JSON, and the metrics are Embedded Metric Format documents.
    let worker_logs = worker.logs();
    assert!(
        worker_logs
            .iter()
            .any(|l| l.contains("\"CloudWatchMetrics\"") && l.contains("\"Completed\"")),
        "no EMF line in {worker_logs:?}"
    );
    let ingest_logs = ingest.logs();
    assert!(
        ingest_logs
            .iter()
            .any(|l| l.contains("\"Rejected\"") || l.contains("\"Accepted\"")),
        "{ingest_logs:?}"
    );
}
