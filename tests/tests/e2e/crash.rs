//! Crash safety: `sealbox up` killed with SIGKILL mid-run and restarted loses nothing and
//! duplicates nothing.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use sealbox_core::contract::event_id;
use sealbox_embedded::event_log::read_event_log;
use sealbox_tests::{sealbox, start_up, wait_until};

const REQUESTS: usize = 1_000;
const BUYER: &str = "111122223333";

fn outcome_count(outbox: &Path, id: &str) -> usize {
    ["results/{id}.out", "failed/{id}.json", "rejected/{id}.json"]
        .iter()
        .filter(|p| outbox.join(BUYER).join(p.replace("{id}", id)).is_file())
        .count()
}

fn request(id: &str, token: &str) -> String {
    let bad_token = id.ends_with('7');
    serde_json::json!({
        "version": 1,
        "request_id": id,
        "token": if bad_token { "not-a-token" } else { token },
        "input": {"text": "5.1,3.5,1.4,0.2\n6.3,3.3,6.0,2.5"},
        "content_type": "text/csv",
        "accept": "text/csv"
    })
    .to_string()
}

#[test]
fn a_sigkilled_daemon_restarts_without_losing_or_duplicating_outcomes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    // A 20 ms model with two invocations at a time (about 100 jobs/s) keeps the run long enough
    // to be killed in the middle of it even on a loaded machine.
    let slow = ["--model-latency-ms", "20", "--concurrency", "2"];
    let mut up = start_up(data, &slow);
    let token = sealbox_tests::granted_token(data, BUYER);

    let requests = data.join("buckets/inbox").join(BUYER).join("requests");
    std::fs::create_dir_all(&requests).unwrap();
    let events = data.join("events.ndjson");
    let ids: Vec<String> = (0..REQUESTS).map(|i| format!("req-{i:05}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let path = requests.join(format!("{id}.json"));
        if i % 2 == 0 {
            // Like `cp`: written in place.
            std::fs::write(&path, request(id, &token)).unwrap();
        } else {
            // Like an editor or `aws s3 cp`: written aside, renamed into place.
            let tmp = requests.join(format!(".{id}.partial"));
            std::fs::write(&tmp, request(id, &token)).unwrap();
            std::fs::rename(&tmp, &path).unwrap();
        }
    }
    let lines = |p: &Path| {
        std::fs::read(p)
            .map(|b| b.iter().filter(|c| **c == b'\n').count())
            .unwrap_or(0)
    };
    let some_done = wait_until(Duration::from_secs(60), || lines(&events) >= REQUESTS / 4);
    assert!(some_done, "the daemon made no progress before the kill");
    up.kill().unwrap(); // SIGKILL
    up.wait().unwrap();
    let before = read_event_log(&events).unwrap().len();
    eprintln!("killed after {before} of {REQUESTS} notifications");
    assert!(
        before < REQUESTS,
        "killed too late to test anything ({before} notifications)"
    );

    let mut up = start_up(data, &slow);
    let outbox = data.join("buckets/outbox");
    let all_done = wait_until(Duration::from_secs(120), || {
        let notes = read_event_log(&events).unwrap_or_default();
        let announced: std::collections::HashSet<_> =
            notes.iter().map(|n| n.request_id.clone()).collect();
        announced.len() >= REQUESTS && ids.iter().all(|id| outcome_count(&outbox, id) >= 1)
    });
    sealbox_tests::terminate(&up);
    let stopped = wait_until(Duration::from_secs(30), || {
        matches!(up.try_wait(), Ok(Some(_)))
    });
    if !stopped {
        let _ = up.kill();
    }
    assert!(
        all_done,
        "not every request got an outcome and a notification after the restart"
    );

    let mut by_id: HashMap<String, Vec<String>> = HashMap::new();
    for n in read_event_log(&events).unwrap() {
        by_id
            .entry(n.request_id.clone())
            .or_default()
            .push(n.event_id);
    }
    for id in &ids {
        assert_eq!(
            outcome_count(&outbox, id),
            1,
            "{id} must have exactly one outcome object"
        );
        let notes = by_id
            .get(id)
            .unwrap_or_else(|| panic!("{id} was never announced"));
        assert!(
            notes.iter().all(|e| *e == event_id(BUYER, id)),
            "{id}: {notes:?}"
        );
    }
    // Only the requests with a bad token are rejected: none was judged half-written.
    let not_results: Vec<_> = ids
        .iter()
        .filter(|id| {
            let result = outbox.join(BUYER).join(format!("results/{id}.out"));
            id.ends_with('7') == result.is_file()
        })
        .collect();
    let documents: Vec<String> = not_results
        .iter()
        .flat_map(|id| {
            ["failed", "rejected"].map(|kind| {
                let doc = outbox.join(BUYER).join(format!("{kind}/{id}.json"));
                std::fs::read_to_string(doc).unwrap_or_default()
            })
        })
        .filter(|d| !d.is_empty())
        .collect();
    assert!(
        not_results.is_empty(),
        "wrong outcome for {not_results:?}: {documents:?}"
    );
    assert!(stopped, "sealbox up did not stop on SIGTERM");
}

#[test]
fn requests_dropped_while_the_daemon_was_down_are_picked_up_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    assert!(
        sealbox(data)
            .args(["seller", "keys", "init"])
            .status()
            .unwrap()
            .success()
    );
    let token = sealbox_tests::granted_token(data, BUYER);
    let requests = data.join("buckets/inbox").join(BUYER).join("requests");
    std::fs::create_dir_all(&requests).unwrap();
    let ids: Vec<String> = (0..50).map(|i| format!("offline-{i:03}")).collect();
    for id in &ids {
        std::fs::write(requests.join(format!("{id}.json")), request(id, &token)).unwrap();
    }
    let mut up = start_up(data, &[]);
    let outbox = data.join("buckets/outbox");
    let done = wait_until(Duration::from_secs(60), || {
        ids.iter().all(|id| outcome_count(&outbox, id) == 1)
    });
    sealbox_tests::terminate(&up);
    let _ = up.wait();
    assert!(
        done,
        "requests written while sealbox was down were not all answered"
    );
    // A restart finds nothing new: no request is ingested twice.
    let before = read_event_log(&data.join("events.ndjson")).unwrap().len();
    let mut up = start_up(data, &[]);
    std::thread::sleep(Duration::from_millis(1500));
    sealbox_tests::terminate(&up);
    let _ = up.wait();
    assert_eq!(
        read_event_log(&data.join("events.ndjson")).unwrap().len(),
        before
    );
}
