//! Fair share between buyers under `sealbox up --backend aws`: a buyer's few requests, written
//! right after another buyer's burst, are not run after the burst. The inbox-events queue
//! cannot be shared fairly (S3 sets no message group), so the hand-off reads through the burst
//! at the speed of ingest, runs the jobs of a buyer within its share of the slots at once and
//! sends the rest to the jobs queue. moto ignores message groups, so this shows the process's
//! own share, not SQS's; judged by the order of the notifications, not by time (`sealbox bench
//! --fair-share` measures the times).

use std::time::Duration;

use sealbox_tests::aws_stack::{AwsStack, BUYER};
use sealbox_tests::granted_token;

/// The buyer with a few requests, right after the burst.
const OTHER: &str = "444455556666";
/// The first buyer's burst: far more than the poller holds in hand.
const BURST: usize = 200;
/// The second buyer's requests.
const FEW: usize = 5;

fn results(stack: &AwsStack, buyer: &str) -> usize {
    stack
        .list(
            stack.get("SEALBOX_OUTBOX_BUCKET"),
            &format!("{buyer}/results/"),
        )
        .len()
}

#[test]
fn a_buyers_few_requests_are_not_run_after_another_buyers_burst_under_up() {
    // One invocation at a time, 100 ms each: the burst takes 20 s of the model; reading it
    // through takes a few seconds of moto.
    let stack = AwsStack::start("fair-up", &["--latency-ms", "100"]);
    let other_token = granted_token(stack.dir.path(), OTHER);
    let notes = stack.subscribe("fair-notes", None);
    let _daemon = stack.up(&["--concurrency", "1"]);

    let burst: Vec<(String, String)> = (0..BURST)
        .map(|i| stack.request(&format!("burst-{i:04}")))
        .collect();
    stack.put(stack.get("SEALBOX_INBOX_BUCKET"), &burst);
    let done_when_few_came = results(&stack, BUYER);
    let few: Vec<(String, String)> = (0..FEW)
        .map(|i| {
            let id = format!("few-{i}");
            let r = sealbox::cases::text_request(
                &id,
                Some(&other_token),
                sealbox::cases::SAMPLE_ROWS[0],
            );
            (
                format!("{OTHER}/requests/{id}.json"),
                serde_json::to_string(&r).unwrap(),
            )
        })
        .collect();
    stack.put(stack.get("SEALBOX_INBOX_BUCKET"), &few);
    assert!(
        sealbox_tests::wait_until(Duration::from_secs(180), || {
            results(&stack, BUYER) == BURST && results(&stack, OTHER) == FEW
        }),
        "not every request completed: {} of the burst, {} of the few",
        results(&stack, BUYER),
        results(&stack, OTHER)
    );

    // The order in which the outcomes were announced.
    let order: Vec<String> = stack
        .drain(&notes, 2)
        .iter()
        .map(|n| n["body"]["buyer"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(order.len(), BURST + FEW, "{order:?}");
    sealbox_tests::assert_not_behind_the_burst(&order, BUYER, OTHER, BURST, done_when_few_came);
}
