//! Usage per inference, through the `sealbox` binary on the embedded stack: the sample model
//! meters the rows it scores, each notification carries the request's usage summed over all
//! its invocations, each result carries it in its own metadata and a failure in its document
//! (no object of its own), and `buyer usage` sums them per day so that the records equal the
//! rows sent.
// Test support: a panic is how a test reports a broken precondition.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use sealbox::cases::SAMPLE_ROWS;
use sealbox_core::contract::{
    CONTRACT_VERSION, EventKind, Notification, OutcomeDocument, USAGE_METADATA, Usage,
};
use sealbox_core::layout::{OUTBOX, failed_key, result_key};
use sealbox_core::ports::{Metadata, ObjectStore, PutMode, PutOptions};
use sealbox_embedded::fs_store::FsObjectStore;
use sealbox_tests::{Ran, run, sealbox, start_up, wait_until};

const BUYER: &str = "111122223333";

/// Rows of the large input: over the 6,000,000-byte payload limit at 16 bytes a row, so its
/// split takes more than one invocation.
const LARGE_ROWS: usize = 400_000;

fn sb(data: &Path, cwd: &Path, args: &[&str]) -> Ran {
    let mut c = sealbox(data);
    c.current_dir(cwd).args(args);
    run(c)
}

fn csv(rows: usize) -> String {
    (0..rows)
        .map(|i| format!("{}\n", SAMPLE_ROWS[i % SAMPLE_ROWS.len()]))
        .collect()
}

#[test]
fn buyer_usage_counts_every_row_of_split_inputs_as_a_record_scored() {
    let dir = tempfile::tempdir().unwrap();
    let (cwd, data) = (dir.path(), dir.path().join("data"));
    assert!(sb(&data, cwd, &["seller", "keys", "init"]).ok);
    let g = sb(&data, cwd, &["seller", "grant", BUYER]);
    assert!(g.ok, "{}", g.stderr);
    let t = sb(&data, cwd, &["seller", "token", "--buyer", BUYER]);
    assert!(t.ok, "{}", t.stderr);
    let token = t.stdout.trim().to_owned();
    let inputs = [
        ("large", LARGE_ROWS, true),
        ("small", 7, true),
        ("whole", 3, false),
    ];
    for (name, rows, _) in inputs {
        std::fs::write(cwd.join(format!("{name}.csv")), csv(rows)).unwrap();
    }
    // The model refuses this one after it was sent: a failure that used the endpoint.
    std::fs::write(cwd.join("bad.csv"), "1,2,3,four\n").unwrap();
    let _up = start_up(&data, &[]);
    let bad = sb(
        &data,
        cwd,
        &[
            "buyer", "submit", "bad.csv", "--buyer", BUYER, "--token", &token,
        ],
    );
    assert!(bad.ok, "bad: {}", bad.stderr);
    for (name, _, split) in inputs {
        let file = format!("{name}.csv");
        let mut args = vec![
            "buyer", "submit", &file, "--buyer", BUYER, "--token", &token,
        ];
        if split {
            args.push("--split-lines");
        }
        let sent = sb(&data, cwd, &args);
        assert!(sent.ok, "{name}: {}", sent.stderr);
    }
    let outbox = data.join(format!("buckets/outbox/{BUYER}"));
    assert!(
        wait_until(Duration::from_secs(120), || inputs.iter().all(
            |(name, _, _)| outbox.join(format!("results/{name}.out")).is_file()
        ) && outbox
            .join("failed/bad.json")
            .is_file()),
        "not every request was answered"
    );

    // Each notification carries its request's usage, summed over its invocations.
    let events = std::fs::read_to_string(data.join("events.ndjson")).unwrap();
    let notes: Vec<Notification> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for (name, rows, _) in inputs {
        let n = notes.iter().find(|n| n.request_id == name).unwrap();
        assert_eq!(n.version, CONTRACT_VERSION);
        let usage = n.usage.expect("a completed request announces its usage");
        assert_eq!(usage.records, rows as u64, "{name}: {usage:?}");
        assert!(
            usage.metered,
            "{name}: the sample model meters every answer"
        );
        let sent = std::fs::metadata(cwd.join(format!("{name}.csv")))
            .unwrap()
            .len();
        assert_eq!(usage.bytes_in, sent, "{name}: {usage:?}");
        assert_eq!(usage.bytes_out, n.bytes, "{name}: {usage:?}");
    }
    // The usage lives in the outcomes themselves: the result's metadata, the failure's
    // document; the outbox holds nothing else for it.
    let store = FsObjectStore::new(data.join("buckets"), false);
    for (name, _, _) in inputs {
        let head = runtime().block_on(store.head(OUTBOX, &result_key(BUYER, name)));
        let metadata = head.unwrap().expect("the result").metadata;
        let n = notes.iter().find(|n| n.request_id == name).unwrap();
        assert_eq!(Usage::from_metadata(&metadata).unwrap(), n.usage, "{name}");
    }
    let failed = notes.iter().find(|n| n.request_id == "bad").unwrap();
    assert_eq!(failed.event, EventKind::InferenceFailed);
    let failed_usage = failed
        .usage
        .expect("a failure after a call carries its usage");
    assert_eq!((failed_usage.invocations, failed_usage.records), (1, 0));
    let doc = std::fs::read(data.join("buckets/outbox").join(failed_key(BUYER, "bad"))).unwrap();
    let doc: OutcomeDocument = serde_json::from_slice(&doc).unwrap();
    assert_eq!(doc.usage, Some(failed_usage));
    let folders: Vec<String> = std::fs::read_dir(&outbox)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        folders
            .iter()
            .all(|f| ["results", "failed", "claims"].contains(&f.as_str())),
        "{folders:?}"
    );

    let large = notes.iter().find(|n| n.request_id == "large").unwrap();
    assert!(
        large.usage.unwrap().invocations >= 2,
        "the large input is split into several invocations: {:?}",
        large.usage
    );

    // `buyer usage --json`: one line per day; the records are the rows sent.
    let listed = sb(&data, cwd, &["buyer", "usage", "--buyer", BUYER, "--json"]);
    assert!(listed.ok, "{}", listed.stderr);
    let days: Vec<serde_json::Value> = listed
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let rows_sent: u64 = inputs.iter().map(|(_, rows, _)| *rows as u64).sum();
    let sum = |member: &str| {
        days.iter()
            .map(|d| d[member].as_u64().unwrap())
            .sum::<u64>()
    };
    assert_eq!(sum("records"), rows_sent, "{}", listed.stdout);
    assert_eq!(
        sum("requests"),
        inputs.len() as u64 + 1,
        "the failure counts too"
    );
    let invocations: u64 = notes
        .iter()
        .filter_map(|n| n.usage.map(|u| u64::from(u.invocations)))
        .sum();
    assert_eq!(sum("invocations"), invocations);
    assert!(
        days.iter()
            .all(|d| d["buyer"] == BUYER && d["metered"] == true)
    );

    // The table ends with the total; a day after every recorded one lists nothing.
    let table = sb(&data, cwd, &["buyer", "usage", "--buyer", BUYER]);
    assert!(table.ok, "{}", table.stderr);
    let total = table.stdout.lines().last().unwrap_or_default().to_owned();
    let cells: Vec<&str> = total.split_whitespace().collect();
    assert_eq!(cells.first(), Some(&"total"), "{}", table.stdout);
    assert_eq!(
        cells.get(3),
        Some(&rows_sent.to_string().as_str()),
        "{total}"
    );
    let later = sb(
        &data,
        cwd,
        &["buyer", "usage", "--buyer", BUYER, "--since", "2999-01-01"],
    );
    assert!(later.ok, "{}", later.stderr);
    assert!(later.stdout.is_empty(), "{}", later.stdout);
    assert!(
        later.stderr.contains("no usage recorded"),
        "{}",
        later.stderr
    );

    // An old result (2020) whose usage metadata is not a usage: without --since it is read
    // and named as not counted; --since 2021-01-01 skips it on the listing's date, unread.
    let old = result_key(BUYER, "old");
    let bad = Metadata::from([(USAGE_METADATA.to_owned(), "not a usage".to_owned())]);
    let opts = PutOptions {
        mode: PutMode::CreateNew,
        metadata: bad,
    };
    let put = store.put_opts(OUTBOX, &old, Bytes::from_static(b"x\n"), opts);
    runtime().block_on(put).unwrap();
    let in_2020 = std::time::UNIX_EPOCH + Duration::from_secs(1_590_000_000);
    std::fs::File::options()
        .write(true)
        .open(data.join("buckets/outbox").join(&old))
        .unwrap()
        .set_modified(in_2020)
        .unwrap();
    let all = sb(&data, cwd, &["buyer", "usage", "--buyer", BUYER, "--json"]);
    assert!(all.ok, "{}", all.stderr);
    assert!(
        all.stderr.contains("1 outcomes") && all.stderr.contains("not counted"),
        "{}",
        all.stderr
    );
    let since = sb(
        &data,
        cwd,
        &[
            "buyer",
            "usage",
            "--buyer",
            BUYER,
            "--since",
            "2021-01-01",
            "--json",
        ],
    );
    assert!(since.ok, "{}", since.stderr);
    assert!(!since.stderr.contains("not counted"), "{}", since.stderr);
    assert_eq!(
        since.stdout, listed.stdout,
        "the same days as before the old result"
    );
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}
