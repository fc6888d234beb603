//! What a user types gets an honest answer: the `sealbox` binary refuses what it cannot do
//! truthfully, says why in a sentence, and creates nothing it was not asked to.

// Helpers outside #[test] functions: a failed setup is a failed test.

use std::path::Path;
use std::time::Duration;

use sealbox_core::contract::{OutcomeDocument, OutcomeKind, Reason, Violation};
use sealbox_tests::{sealbox, start_up, terminate, wait_until};

const BUYER: &str = "111122223333";

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(data: &Path, args: &[&str]) -> Run {
    let out = sealbox(data)
        .args(args)
        .env_remove("SEALBOX_TOKEN")
        .env_remove("SEALBOX_TOKEN_URL")
        .env_remove("SEALBOX_BUYER_SECRET")
        .env_remove("SEALBOX_BUYER_SECRET_FILE")
        .output()
        .unwrap();
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Lines of a table whose last column is right-aligned all have the same width.
fn assert_aligned(table: &str) {
    assert!(table.ends_with('\n'), "no final newline: {table:?}");
    let widths: Vec<usize> = table.lines().map(|l| l.chars().count()).collect();
    assert!(
        widths.windows(2).all(|w| w[0] == w[1]),
        "columns not aligned:\n{table}"
    );
}

#[test]
fn a_file_whose_name_was_submitted_before_with_other_content_is_refused_unless_given_a_new_request_id()
 {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = dir.path().join("secret");
    let secret_arg = secret.to_str().unwrap();
    let granted = run(
        &data,
        &["seller", "grant", BUYER, "--secret-out", secret_arg],
    );
    assert!(granted.ok, "{}", granted.stderr);
    let mut up = start_up(&data, &[]);

    std::fs::create_dir_all(dir.path().join("day1")).unwrap();
    std::fs::create_dir_all(dir.path().join("day2")).unwrap();
    let day1 = dir.path().join("day1/batch.csv");
    let day2 = dir.path().join("day2/batch.csv");
    std::fs::write(&day1, "5.1,3.5,1.4,0.2\n").unwrap();
    std::fs::write(&day2, "6.3,3.3,6.0,2.5\n").unwrap();
    let submit = |file: &Path, extra: &[&str]| {
        let mut args = vec![
            "buyer",
            "submit",
            "--buyer",
            BUYER,
            "--secret-file",
            secret_arg,
        ];
        args.extend_from_slice(extra);
        args.push(file.to_str().unwrap());
        run(&data, &args)
    };

    let first = submit(&day1, &[]);
    assert!(first.ok, "{}", first.stderr);
    let result_at = format!("s3://outbox/{BUYER}/results/batch.out");
    assert!(
        first.stdout.contains("request batch") && first.stdout.contains(&result_at),
        "the request id and where its result lands: {}",
        first.stdout
    );
    let result = data.join(format!("buckets/outbox/{BUYER}/results/batch.out"));
    assert!(
        wait_until(Duration::from_secs(30), || result.is_file()),
        "day1's request was not answered"
    );

    let again = submit(&day1, &[]);
    assert!(again.ok, "the same file again is a no-op: {}", again.stderr);
    assert!(
        again.stdout.contains("already submitted") && again.stdout.contains(&result_at),
        "{}",
        again.stdout
    );

    let other = submit(&day2, &[]);
    assert!(
        !other.ok,
        "other content under a used request id must be refused"
    );
    for needed in ["request id batch", "batch.csv", "--request-id"] {
        assert!(other.stderr.contains(needed), "{needed}: {}", other.stderr);
    }
    let stored = data.join(format!("buckets/inbox/{BUYER}/inputs/batch/batch.csv"));
    assert_eq!(
        std::fs::read_to_string(&stored).unwrap(),
        "5.1,3.5,1.4,0.2\n",
        "a refused submission must not replace the stored input"
    );

    let renamed = submit(&day2, &["--request-id", "batch-day2"]);
    assert!(renamed.ok, "{}", renamed.stderr);
    assert!(
        renamed
            .stdout
            .contains(&format!("s3://outbox/{BUYER}/results/batch-day2.out")),
        "{}",
        renamed.stdout
    );
    let second = data.join(format!("buckets/outbox/{BUYER}/results/batch-day2.out"));
    assert!(
        wait_until(Duration::from_secs(30), || second.is_file()),
        "the renamed request was not answered"
    );
    assert_ne!(
        std::fs::read(&result).unwrap(),
        std::fs::read(&second).unwrap(),
        "day2 got an answer of its own"
    );

    let status = run(&data, &["status"]);
    assert!(status.ok, "{}", status.stderr);
    assert!(status.stdout.contains("inbox-events"), "{}", status.stdout);
    assert_aligned(&status.stdout);
    let results = run(&data, &["buyer", "results", "--buyer", BUYER]);
    assert!(results.ok, "{}", results.stderr);
    assert_eq!(results.stdout.lines().count(), 3, "{}", results.stdout);
    assert_aligned(&results.stdout);

    terminate(&up);
    assert!(up.wait().unwrap().success());
}

#[test]
fn a_missing_or_unreadable_input_is_reported_before_anything_else_in_plain_words() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let missing = dir.path().join("missing.csv");
    let out = run(
        &data,
        &[
            "buyer",
            "submit",
            "--buyer",
            BUYER,
            missing.to_str().unwrap(),
        ],
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains("missing.csv") && out.stderr.contains("no such file"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("token") && !out.stderr.contains("os error"),
        "{}",
        out.stderr
    );

    let folder = dir.path().join("inputs");
    std::fs::create_dir_all(&folder).unwrap();
    let good = dir.path().join("good.csv");
    std::fs::write(&good, "5.1,3.5,1.4,0.2\n").unwrap();
    let out = run(
        &data,
        &[
            "buyer",
            "submit",
            "--buyer",
            BUYER,
            good.to_str().unwrap(),
            folder.to_str().unwrap(),
            missing.to_str().unwrap(),
        ],
    );
    assert!(!out.ok);
    assert!(
        out.stderr.contains("is a folder") && out.stderr.contains("missing.csv"),
        "each problem is named: {}",
        out.stderr
    );
    assert!(
        out.stderr.contains("Nothing was submitted"),
        "{}",
        out.stderr
    );
    assert!(
        !data.exists(),
        "nothing is created for a refused submission"
    );
}

#[test]
fn a_seller_token_for_a_buyer_never_granted_is_refused_like_one_for_a_revoked_buyer() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    assert!(run(data, &["seller", "keys", "init"]).ok);
    let never = run(data, &["seller", "token", "--buyer", BUYER]);
    assert!(!never.ok, "a never-granted buyer got a token");
    assert!(never.stdout.is_empty(), "{}", never.stdout);
    assert!(
        never
            .stderr
            .contains(&format!("sealbox seller grant {BUYER}")),
        "{}",
        never.stderr
    );
    assert!(
        !data.join("seller/subscriptions.db").exists(),
        "asking for a token creates no registry"
    );
    let too_long = run(data, &["seller", "token", "--buyer", BUYER, "--ttl", "13h"]);
    assert!(
        !too_long.ok && too_long.stderr.contains("12 h"),
        "a bad lifetime is reported first: {}",
        too_long.stderr
    );

    let secret = data.join("secret");
    assert!(
        run(
            data,
            &[
                "seller",
                "grant",
                BUYER,
                "--secret-out",
                secret.to_str().unwrap()
            ]
        )
        .ok
    );
    let granted = run(data, &["seller", "token", "--buyer", BUYER]);
    assert!(granted.ok, "{}", granted.stderr);
    assert_eq!(granted.stdout.trim().split('.').count(), 3);

    assert!(run(data, &["seller", "revoke", BUYER]).ok);
    let revoked = run(data, &["seller", "token", "--buyer", BUYER]);
    assert!(!revoked.ok, "a revoked buyer got a token");
    assert!(
        revoked.stderr.contains("revoked")
            && revoked
                .stderr
                .contains(&format!("sealbox seller grant {BUYER}")),
        "{}",
        revoked.stderr
    );
}

#[test]
fn read_only_commands_on_a_folder_without_sealbox_data_say_so_and_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let typo = dir.path().join("sealbox-dta");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let commands: [&[&str]; 7] = [
        &["status"],
        &["status", "--json"],
        &["dlq", "list"],
        &["buyer", "results", "--buyer", BUYER],
        &["seller", "subscriptions"],
        &["seller", "keys", "list"],
        &["seller", "keys", "jwks"],
    ];
    for args in commands {
        for data in [&typo, &empty] {
            let out = run(data, args);
            assert!(!out.ok, "{args:?} on {} succeeded", data.display());
            assert!(
                out.stderr.contains("no sealbox data") && out.stderr.contains("sealbox up"),
                "{args:?}: {}",
                out.stderr
            );
            assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        }
        assert!(!typo.exists(), "{args:?} created {}", typo.display());
        assert_eq!(
            std::fs::read_dir(&empty).unwrap().count(),
            0,
            "{args:?} wrote into an empty folder"
        );
    }
}

#[test]
fn results_over_many_pages_print_every_outcome_aligned_and_survive_an_unreadable_document() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let failed = data.join(format!("buckets/outbox/{BUYER}/failed"));
    std::fs::create_dir_all(&failed).unwrap();
    let violation = Violation::new(Reason::ModelRejectedInput, "input", "not a number");
    let total = 2100;
    for i in 0..total {
        let id = format!("r-{i:05}");
        let doc = OutcomeDocument::new(
            OutcomeKind::Failed,
            BUYER,
            &id,
            &format!("{BUYER}/requests/{id}.json"),
            &violation,
        );
        std::fs::write(
            failed.join(format!("{id}.json")),
            serde_json::to_vec(&doc).unwrap(),
        )
        .unwrap();
    }
    // Far larger than any document sealbox writes: listed, not read whole.
    std::fs::write(failed.join("huge.json"), vec![b' '; 2 * 1024 * 1024]).unwrap();

    let out = run(data, &["buyer", "results", "--buyer", BUYER]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.stdout.lines().count(),
        total + 2,
        "header and one line each"
    );
    assert_aligned(&out.stdout);
    assert_eq!(
        out.stdout
            .lines()
            .filter(|l| l.contains("model_rejected_input"))
            .count(),
        total
    );
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("huge ") && l.contains("unreadable")),
        "{}",
        out.stdout.lines().last().unwrap_or_default()
    );

    let json = run(data, &["buyer", "results", "--buyer", BUYER, "--json"]);
    assert!(json.ok, "{}", json.stderr);
    assert!(json.stdout.ends_with('\n'));
    let parsed = json
        .stdout
        .lines()
        .filter(|l| serde_json::from_str::<serde_json::Value>(l).is_ok())
        .count();
    assert_eq!(parsed, total + 1);
}
