//! Objects S3 refuses to hand over are their requests' answers, never an outage: one buyer puts
//! request objects and input objects S3 will not give back (storage class GLACIER: GetObject
//! answers 403 `InvalidObjectState`, as for an object archived out of reach, a KMS key the
//! function may not use, or a policy that denies it), another buyer puts good requests. Every
//! request of the first gets its outcome with its reason, nothing is held or dead-lettered, and
//! the second buyer's requests complete. Both ways the AWS runtime runs: `sealbox up --backend
//! aws` and the Lambda functions under the runtime emulator. The second buyer's times, alone and
//! beside the first, are printed (numbers belong in benchmarks, not assertions).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sealbox_core::contract::InputSpec;
use sealbox_tests::aws_stack::{AwsStack, BUYER};
use sealbox_tests::granted_token;
use sealbox_tests::lambda_emulator::{LambdaEmulator, pump};

/// The second buyer, whose good requests must not wait for the first buyer's refused ones.
const OTHER: &str = "444455556666";
/// Request objects S3 refuses, and requests whose refused input object they name.
const REFUSED: usize = 40;
/// The second buyer's good requests.
const GOOD: usize = 20;

/// The first buyer's refused objects: `REFUSED` request objects in GLACIER, and `REFUSED`
/// good request objects each naming an input object in GLACIER.
fn put_refused(stack: &AwsStack) {
    let inbox = stack.get("SEALBOX_INBOX_BUCKET").to_owned();
    let mut locked = Vec::new();
    let mut requests = Vec::new();
    for i in 0..REFUSED {
        locked.push(stack.request(&format!("locked-request-{i}")));
        let input = format!("{BUYER}/inputs/locked-{i}.csv");
        locked.push((input.clone(), sealbox::cases::SAMPLE_ROWS[0].to_owned()));
        let mut r =
            sealbox::cases::text_request(&format!("locked-input-{i}"), Some(&stack.token), "");
        r.input = InputSpec {
            s3_key: Some(input),
            ..InputSpec::default()
        };
        requests.push((
            format!("{BUYER}/requests/locked-input-{i}.json"),
            serde_json::to_string(&r).unwrap(),
        ));
    }
    // Inputs first: a request must not be accepted before its input exists.
    stack.put_in_class(&inbox, "GLACIER", &locked);
    stack.put(&inbox, &requests);
}

/// `GOOD` good requests of the second buyer, named `prefix-<i>`.
fn put_good(stack: &AwsStack, token: &str, prefix: &str) {
    let objects: Vec<(String, String)> = (0..GOOD)
        .map(|i| {
            let id = format!("{prefix}-{i}");
            let r = sealbox::cases::text_request(&id, Some(token), sealbox::cases::SAMPLE_ROWS[0]);
            (
                format!("{OTHER}/requests/{id}.json"),
                serde_json::to_string(&r).unwrap(),
            )
        })
        .collect();
    stack.put(stack.get("SEALBOX_INBOX_BUCKET"), &objects);
}

/// The number of the second buyer's results named `prefix-*`.
fn good_done(stack: &AwsStack, prefix: &str) -> usize {
    stack
        .list(
            stack.get("SEALBOX_OUTBOX_BUCKET"),
            &format!("{OTHER}/results/{prefix}-"),
        )
        .len()
}

/// Checks the first buyer's outcomes: each refused request object rejected with
/// `request_unreadable`, each refused input failed with `input_unreadable`, one outcome each.
fn assert_refused_answered(stack: &AwsStack) {
    let outbox = stack.get("SEALBOX_OUTBOX_BUCKET").to_owned();
    let mut reasons: BTreeMap<String, (String, String)> = BTreeMap::new();
    for kind in ["rejected", "failed", "results"] {
        for (key, body) in stack.bodies(&outbox, &format!("{BUYER}/{kind}/")) {
            let id = key
                .rsplit('/')
                .next()
                .unwrap()
                .split(".json")
                .next()
                .unwrap();
            let reason = match kind {
                "results" => "completed".to_owned(),
                _ => serde_json::from_str::<serde_json::Value>(&body).unwrap()["reason"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            };
            let before = reasons.insert(id.to_owned(), (kind.to_owned(), reason));
            assert!(before.is_none(), "{id} has two outcomes");
        }
    }
    for i in 0..REFUSED {
        let request = &reasons[&format!("locked-request-{i}")];
        assert_eq!(request, &("rejected".into(), "request_unreadable".into()));
        let input = &reasons[&format!("locked-input-{i}")];
        assert_eq!(input, &("failed".into(), "input_unreadable".into()));
    }
    assert_eq!(reasons.len(), 2 * REFUSED, "{reasons:?}");
    // The reason documents say what S3 answered.
    let doc = stack.get_object(&outbox, &format!("{BUYER}/failed/locked-input-0.json"));
    assert!(doc.contains("InvalidObjectState"), "{doc}");
}

fn refused_count(stack: &AwsStack) -> usize {
    let outbox = stack.get("SEALBOX_OUTBOX_BUCKET");
    stack.list(outbox, &format!("{BUYER}/rejected/")).len()
        + stack.list(outbox, &format!("{BUYER}/failed/")).len()
}

fn assert_nothing_dead_lettered(stack: &AwsStack) {
    let status: Vec<serde_json::Value> =
        serde_json::from_str(&stack.sealbox_aws(&["status", "--json"])).unwrap();
    for q in &status {
        assert_eq!(q["dead_letters"], 0, "{status:?}");
    }
}

#[test]
fn refused_objects_are_answered_at_once_and_never_stall_another_buyer_under_up() {
    let stack = AwsStack::start("refused-up", &[]);
    let other_token = granted_token(stack.dir.path(), OTHER);
    let _daemon = stack.up(&[]);

    let start = Instant::now();
    put_good(&stack, &other_token, "alone");
    assert!(sealbox_tests::wait_until(Duration::from_secs(60), || {
        good_done(&stack, "alone") == GOOD
    }));
    let alone = start.elapsed();

    put_refused(&stack);
    let start = Instant::now();
    put_good(&stack, &other_token, "beside");
    assert!(
        sealbox_tests::wait_until(Duration::from_secs(60), || good_done(&stack, "beside")
            == GOOD),
        "the second buyer's requests got no outcome beside the first buyer's refused objects"
    );
    let beside = start.elapsed();
    assert!(
        sealbox_tests::wait_until(Duration::from_secs(60), || refused_count(&stack)
            == 2 * REFUSED),
        "the refused objects did not all get their outcome within a minute: {}",
        refused_count(&stack)
    );
    let all = start.elapsed();
    assert_refused_answered(&stack);
    assert_nothing_dead_lettered(&stack);
    println!(
        "up --backend aws: the second buyer's {GOOD} requests took {alone:.1?} alone and \
         {beside:.1?} beside {} refused objects of the first buyer, which were all answered \
         within {all:.1?}",
        2 * REFUSED
    );
}

/// The event source mappings of both functions over moto's queues.
struct Mappings<'a> {
    sqs: &'a aws_sdk_sqs::Client,
    ingest: &'a LambdaEmulator,
    worker: &'a LambdaEmulator,
    events: &'a str,
    jobs: &'a str,
}

impl Mappings<'_> {
    /// Rounds of both mappings until `done`; answers the time taken and every message a
    /// function reported as failed (given back to retry).
    async fn run(
        &self,
        stack: &AwsStack,
        done: impl Fn(&AwsStack) -> bool,
    ) -> (Duration, Vec<String>) {
        let start = Instant::now();
        let mut retried = Vec::new();
        while !done(stack) {
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "no outcome in time"
            );
            retried.extend(pump(self.sqs, self.ingest, self.events).await.1);
            retried.extend(pump(self.sqs, self.worker, self.jobs).await.1);
        }
        (start.elapsed(), retried)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_objects_are_answered_at_once_and_never_stall_another_buyer_in_the_lambda_functions()
 {
    let stack = AwsStack::start("refused-fns", &[]);
    let other_token = granted_token(stack.dir.path(), OTHER);
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config().await);
    let extra = [("SEALBOX_MAX_CONCURRENT_INVOCATIONS", "4")];
    let ingest = stack.lambda("ingest", &extra).await;
    let worker = stack.lambda("worker", &extra).await;
    let events = stack.get("SEALBOX_INBOX_EVENTS_QUEUE_URL").to_owned();
    let jobs = stack.get("SEALBOX_JOBS_QUEUE_URL").to_owned();

    let fns = Mappings {
        sqs: &sqs,
        ingest: &ingest,
        worker: &worker,
        events: &events,
        jobs: &jobs,
    };
    put_good(&stack, &other_token, "alone");
    let (alone, retried) = fns.run(&stack, |s| good_done(s, "alone") == GOOD).await;
    assert!(retried.is_empty(), "{retried:?}");

    put_refused(&stack);
    put_good(&stack, &other_token, "beside");
    let (beside, retried) = fns.run(&stack, |s| good_done(s, "beside") == GOOD).await;
    let (all, more) = fns.run(&stack, |s| refused_count(s) == 2 * REFUSED).await;
    assert!(
        retried.is_empty() && more.is_empty(),
        "a refused object was retried instead of answered: {retried:?} {more:?}"
    );
    assert_refused_answered(&stack);
    assert_nothing_dead_lettered(&stack);
    println!(
        "Lambda functions: the second buyer's {GOOD} requests took {alone:.1?} alone and \
         {beside:.1?} beside {} refused objects of the first buyer, all answered {all:.1?} later",
        2 * REFUSED
    );
}
