//! The ingest function under `TokenSource: iam` (issue 17), on moto: a request object without a
//! token is authorized with a token the function gets from the seller's token service by
//! proving its own AWS account (a `sts:GetCallerIdentity` signed with its role's credentials).
//! The real `ingest` and `worker` binaries run under the Lambda Runtime API emulator; the token
//! service is the one `sealbox up` serves for the seller's data directory, trusting moto as STS.

use std::time::{Duration, Instant};

use sealbox_tests::aws_stack::{AwsStack, BUYER};
use sealbox_tests::lambda_emulator::pump;

/// The account of the stack's credentials: moto's default account, where the stack lives
/// (on AWS, the buyer's stack and the function's role are in the buyer's account).
const OWN: &str = "123456789012";

/// Feeds `function` from `queue` until `done`, or fails after a minute saying `what`.
async fn pump_until(
    stack: &AwsStack,
    sqs: &aws_sdk_sqs::Client,
    functions: &[(&sealbox_tests::lambda_emulator::LambdaEmulator, &str)],
    what: &str,
    done: impl Fn(&AwsStack) -> bool,
) {
    let end = Instant::now() + Duration::from_secs(60);
    while !done(stack) {
        assert!(Instant::now() < end, "{what}: not within a minute");
        for (f, queue) in functions {
            pump(sqs, f, queue).await;
        }
    }
}

fn put_request(stack: &AwsStack, buyer: &str, id: &str, token: Option<&str>) {
    let request = sealbox::cases::text_request(id, token, sealbox::cases::SAMPLE_ROWS[0]);
    stack.put(
        stack.get("SEALBOX_INBOX_BUCKET"),
        &[(
            format!("{buyer}/requests/{id}.json"),
            serde_json::to_string(&request).unwrap(),
        )],
    );
}

fn outcomes(stack: &AwsStack, buyer: &str) -> Vec<String> {
    stack
        .list(stack.get("SEALBOX_OUTBOX_BUCKET"), &format!("{buyer}/"))
        .into_iter()
        .filter(|k| !k.contains("/claims/"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_token_source_iam_a_request_without_a_token_is_answered_by_the_functions_own_account()
{
    let stack = AwsStack::start("ingest-iam", &[]);
    let (_seller, token_url) = stack.token_service();
    let sqs = aws_sdk_sqs::Client::new(&stack.sdk_config().await);
    let ingest = stack
        .lambda(
            "ingest",
            &[
                ("SEALBOX_TOKEN_SOURCE", "iam"),
                ("SEALBOX_TOKEN_SERVICE_URL", &token_url),
                ("RUST_LOG", "info"),
            ],
        )
        .await;
    let worker = stack.lambda("worker", &[]).await;
    let events = stack.get("SEALBOX_INBOX_EVENTS_QUEUE_URL").to_owned();
    let jobs = stack.get("SEALBOX_JOBS_QUEUE_URL").to_owned();
    let feed = [(&ingest, events.as_str()), (&worker, jobs.as_str())];

    // 1. The function's account is not subscribed: the token service's refusal is the
    // request's answer, naming why.
    put_request(&stack, OWN, "before-grant", None);
    pump_until(&stack, &sqs, &feed, "the refusal", |s| {
        !outcomes(s, OWN).is_empty()
    })
    .await;
    assert_eq!(
        outcomes(&stack, OWN),
        [format!("{OWN}/rejected/before-grant.json")]
    );
    let doc: serde_json::Value = serde_json::from_str(&stack.get_object(
        stack.get("SEALBOX_OUTBOX_BUCKET"),
        &format!("{OWN}/rejected/before-grant.json"),
    ))
    .unwrap();
    assert_eq!(doc["reason"], "token_refused", "{doc}");
    assert_eq!(doc["field"], "token", "{doc}");
    let message = doc["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("not_subscribed") && message.contains(OWN),
        "{doc}"
    );

    // 2. The seller grants the account: the next request without a token completes, with no
    // secret and no token anywhere on the buyer's side.
    let ran = sealbox_tests::run({
        let mut c = stack.sealbox();
        c.args(["seller", "grant", OWN]);
        c
    });
    assert!(ran.ok, "{}", ran.stderr);
    put_request(&stack, OWN, "after-grant", None);
    pump_until(&stack, &sqs, &feed, "the result", |s| {
        outcomes(s, OWN).len() == 2
    })
    .await;
    assert_eq!(
        outcomes(&stack, OWN),
        [
            format!("{OWN}/rejected/before-grant.json"),
            format!("{OWN}/results/after-grant.out"),
        ]
    );
    let logs = ingest.logs().join("\n");
    assert!(
        logs.contains("got a token from the token service"),
        "{logs}"
    );

    // 3. A request object that carries its token is taken as always, and a request under
    // another buyer's prefix gets no token of this account's (`sub` is the account).
    put_request(&stack, BUYER, "own-token", Some(&stack.token));
    put_request(&stack, BUYER, "no-token", None);
    pump_until(&stack, &sqs, &feed, "the other buyer's answers", |s| {
        outcomes(s, BUYER).len() == 2
    })
    .await;
    assert_eq!(
        outcomes(&stack, BUYER),
        [
            format!("{BUYER}/rejected/no-token.json"),
            format!("{BUYER}/results/own-token.out"),
        ]
    );
    assert_eq!(stack.outcome_of("no-token"), "rejected");
    let doc = stack.get_object(
        stack.get("SEALBOX_OUTBOX_BUCKET"),
        &format!("{BUYER}/rejected/no-token.json"),
    );
    assert!(doc.contains("token_subject_mismatch"), "{doc}");
    // One token served both requests without one: it is kept until near its expiry.
    let logs = ingest.logs().join("\n");
    assert_eq!(
        logs.matches("got a token from the token service").count(),
        1,
        "{logs}"
    );
}
