//! `sealbox up --backend aws` against moto: request objects written with boto3 reach ingest
//! through moto's real S3 -> SQS notifications, end with exactly one outcome each, and are
//! announced on the topic with the `event` and `buyer` attributes; SIGKILL loses nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sealbox_tests::aws_stack::{AwsStack, BUYER};
use sealbox_tests::wait_until;

/// Request id -> the outcome folders it has an object in (results, failed, rejected).
fn outcomes(stack: &AwsStack) -> BTreeMap<String, Vec<String>> {
    let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for kind in ["results", "failed", "rejected"] {
        for key in stack.list(
            stack.get("SEALBOX_OUTBOX_BUCKET"),
            &format!("{BUYER}/{kind}/"),
        ) {
            let name = key.rsplit('/').next().unwrap_or_default();
            let id = name.rsplit_once('.').map(|(id, _)| id).unwrap_or(name);
            by_id
                .entry(id.to_owned())
                .or_default()
                .push(kind.to_owned());
        }
    }
    by_id
}

fn wait_for_outcomes(stack: &AwsStack, n: usize) -> BTreeMap<String, Vec<String>> {
    let mut seen = BTreeMap::new();
    let done = wait_until(Duration::from_secs(60), || {
        seen = outcomes(stack);
        seen.len() >= n
    });
    assert!(done, "only {} of {n} outcomes: {seen:?}", seen.len());
    seen
}

#[test]
fn requests_uploaded_with_boto3_end_with_one_outcome_and_one_announcement_each() {
    let stack = AwsStack::start("up-one", &[]);
    let all = stack.subscribe("every-notification", None);
    let rejections = stack.subscribe("rejections-only", Some(r#"{"event": ["RequestRejected"]}"#));
    let daemon = stack.up(&[]);
    let mut objects: Vec<(String, String)> =
        (0..20).map(|i| stack.request(&format!("r{i}"))).collect();
    objects.push((format!("{BUYER}/requests/not-json.json"), "{nope".into()));
    let (key, body) = stack.request("wrong-buyer");
    objects.push((key.replace(BUYER, "444455556666"), body));
    stack.put(stack.get("SEALBOX_INBOX_BUCKET"), &objects);

    let seen = wait_for_outcomes(&stack, 21);
    for (id, kinds) in &seen {
        assert_eq!(kinds.len(), 1, "{id} has {kinds:?}");
    }
    assert!(
        (0..20).all(|i| seen[&format!("r{i}")] == ["results"]),
        "{seen:?}"
    );
    assert_eq!(seen["not-json"], ["rejected"]);
    let other = stack.list(stack.get("SEALBOX_OUTBOX_BUCKET"), "444455556666/rejected/");
    assert_eq!(other, ["444455556666/rejected/wrong-buyer.json"]);

    // One notification per outcome, with the attributes filter policies select on.
    let notes = stack.drain(&all, 2);
    let mut ids = BTreeMap::new();
    for n in &notes {
        let body = &n["body"];
        let attrs = &n["attributes"];
        assert_eq!(attrs["event"], body["event"], "{n}");
        assert_eq!(attrs["buyer"], body["buyer"], "{n}");
        *ids.entry(body["event_id"].as_str().unwrap().to_owned())
            .or_insert(0) += 1;
    }
    assert_eq!(ids.len(), 22, "{notes:?}");
    let rejected = stack.drain(&rejections, 1);
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    assert!(
        rejected
            .iter()
            .all(|n| n["body"]["event"] == "RequestRejected")
    );

    // Answered requests uploaded again add no outcome, and announce the same event ids.
    stack.put(stack.get("SEALBOX_INBOX_BUCKET"), &objects[..5]);
    let again = stack.drain(&all, 3);
    let before: BTreeSet<String> = ids.keys().cloned().collect();
    for n in &again {
        let id = n["body"]["event_id"].as_str().unwrap();
        assert!(
            before.contains(id),
            "a new event id {id} for an answered request"
        );
    }
    let after = outcomes(&stack);
    assert_eq!(after, seen, "re-uploading added or changed outcomes");
    drop(daemon);
}

#[test]
fn sigkill_twice_mid_run_then_a_restart_leaves_one_outcome_and_one_event_id_per_request() {
    let stack = AwsStack::start("up-kill", &["--latency-ms", "500"]);
    let all = stack.subscribe("every-notification", None);
    let objects: Vec<(String, String)> = (0..60).map(|i| stack.request(&format!("k{i}"))).collect();
    for round in 0..2 {
        // Four at a time, 500 ms each: the run lasts seconds, so the kills land mid-run.
        let mut daemon = stack.up(&["--concurrency", "4"]);
        if round == 0 {
            stack.put(stack.get("SEALBOX_INBOX_BUCKET"), &objects);
        }
        // Kill it once some work is done and some is not.
        let target = 10 + round * 20;
        assert!(
            wait_until(Duration::from_secs(60), || outcomes(&stack).len() >= target),
            "no progress before kill {round}"
        );
        daemon.kill().unwrap();
        daemon.wait().unwrap();
        let done = outcomes(&stack).len();
        assert!(
            done < 60,
            "kill {round} came after the run ({done} outcomes)"
        );
    }
    let daemon = stack.up(&[]);
    let seen = wait_for_outcomes(&stack, 60);
    for (id, kinds) in &seen {
        assert_eq!(kinds, &["results"], "{id}");
    }
    let notes = stack.drain(&all, 3);
    let mut by_request: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for n in &notes {
        by_request
            .entry(n["body"]["request_id"].as_str().unwrap().to_owned())
            .or_default()
            .insert(n["body"]["event_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(by_request.len(), 60, "every request announced");
    assert!(
        by_request.values().all(|ids| ids.len() == 1),
        "{by_request:?}"
    );
    drop(daemon);
}

#[test]
fn sigterm_drains_every_claimed_job_before_exiting() {
    let stack = AwsStack::start("up-term", &["--latency-ms", "500"]);
    let objects: Vec<(String, String)> = (0..80).map(|i| stack.request(&format!("t{i}"))).collect();
    let mut daemon = stack.up(&["--concurrency", "4"]);
    stack.put(stack.get("SEALBOX_INBOX_BUCKET"), &objects);
    assert!(
        wait_until(Duration::from_secs(60), || outcomes(&stack).len() >= 4),
        "no progress"
    );
    sealbox_tests::terminate(&daemon);
    let status = daemon.wait().unwrap();
    assert!(status.success(), "{status}");
    // Every job it had claimed was finished: no claim is left without its outcome.
    let claims: BTreeSet<String> = stack.claims(BUYER).into_keys().collect();
    let answered: BTreeSet<String> = outcomes(&stack).into_keys().collect();
    assert!(answered.len() < 80, "SIGTERM came after the run");
    assert_eq!(claims, answered);
}
