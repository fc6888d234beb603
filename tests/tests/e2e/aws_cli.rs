//! The buyer's and operator's commands with `--backend aws`, against moto: `buyer submit` and
//! `buyer results` through S3 (printing what they print on the embedded backend), `status`
//! through SQS, `dlq list|redrive` on a dead-letter queue, and missing settings named.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sealbox_tests::aws_stack::{AwsStack, BUYER};
use sealbox_tests::{Ran, python, run, sealbox, start_up, wait_until};

/// `sealbox ARGS --backend aws` in `cwd` with the stack's environment.
fn aws(stack: &AwsStack, cwd: &Path, args: &[&str]) -> Ran {
    let mut c = stack.sealbox();
    c.current_dir(cwd).args(args).args(["--backend", "aws"]);
    run(c)
}

/// An SQS call with boto3 (a client sealbox did not write): `send URL BODY` sends a message;
/// `hold URL` receives one for five minutes (in flight).
fn sqs(stack: &AwsStack, args: &[&str]) {
    let script = r#"
import sys, boto3
sqs = boto3.client("sqs")
cmd, url = sys.argv[1], sys.argv[2]
if cmd == "send":
    sqs.send_message(QueueUrl=url, MessageBody=sys.argv[3])
else:
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=1, VisibilityTimeout=300, WaitTimeSeconds=5)
    assert len(got.get("Messages", [])) == 1, got
"#;
    let out = Command::new(python())
        .arg("-c")
        .arg(script)
        .args(args)
        .envs(stack.moto.env())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "sqs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `status --backend aws --json`, as (queue, backlog, in flight, dead letters, oldest age).
fn status(stack: &AwsStack, cwd: &Path) -> Vec<(String, u64, u64, u64, serde_json::Value)> {
    let out = aws(stack, cwd, &["status", "--json"]);
    assert!(out.ok, "{}", out.stderr);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&out.stdout).unwrap();
    rows.iter()
        .map(|r| {
            (
                r["queue"].as_str().unwrap().to_owned(),
                r["backlog"].as_u64().unwrap(),
                r["in_flight"].as_u64().unwrap(),
                r["dead_letters"].as_u64().unwrap(),
                r["oldest_age_seconds"].clone(),
            )
        })
        .collect()
}

#[test]
fn submit_and_results_on_aws_go_through_s3_and_print_what_they_print_embedded() {
    let stack = AwsStack::start("cli-submit", &[]);
    let inbox = stack.get("SEALBOX_INBOX_BUCKET").to_owned();
    let outbox = stack.get("SEALBOX_OUTBOX_BUCKET").to_owned();
    let files = tempfile::tempdir().unwrap();
    let cwd = files.path();
    let csv = "5.1,3.5,1.4,0.2\n6.3,3.3,6.0,2.5\n";
    std::fs::write(cwd.join("rows.csv"), csv).unwrap();
    std::fs::write(cwd.join("new.csv"), csv).unwrap();
    let daemon = stack.up(&[]);

    // Without a token there is no token service to ask on AWS: refused, naming --token.
    let tokenless = aws(
        &stack,
        cwd,
        &["buyer", "submit", "new.csv", "--buyer", BUYER],
    );
    assert!(!tokenless.ok, "{}", tokenless.stdout);
    assert!(
        tokenless.stderr.contains("--token") && tokenless.stderr.contains("Nothing was submitted"),
        "{}",
        tokenless.stderr
    );
    assert!(stack.list(&inbox, &format!("{BUYER}/")).is_empty());

    let token = stack.token.clone();
    let submit = ["buyer", "submit", "rows.csv", "--buyer", BUYER];
    let with_token: Vec<&str> = submit.iter().copied().chain(["--token", &token]).collect();
    let submitted = aws(&stack, cwd, &with_token);
    assert!(submitted.ok, "{}", submitted.stderr);
    assert_eq!(
        submitted.stdout,
        format!(
            "rows.csv: submitted as request rows; its result will be at \
             s3://{outbox}/{BUYER}/results/rows.out\n"
        )
    );
    // The same layout as embedded, read back with boto3.
    assert_eq!(
        stack.list(&inbox, &format!("{BUYER}/")),
        [
            format!("{BUYER}/inputs/rows/rows.csv"),
            format!("{BUYER}/requests/rows.json")
        ]
    );
    assert_eq!(
        stack.get_object(&inbox, &format!("{BUYER}/inputs/rows/rows.csv")),
        csv
    );
    let request: serde_json::Value =
        serde_json::from_str(&stack.get_object(&inbox, &format!("{BUYER}/requests/rows.json")))
            .unwrap();
    assert_eq!(request["request_id"], "rows");
    assert_eq!(request["token"], token.as_str());
    assert_eq!(request["content_type"], "text/csv");
    assert_eq!(
        request["input"]["s3_key"],
        format!("{BUYER}/inputs/rows/rows.csv")
    );

    // Answered by `up --backend aws` through S3's notification.
    let result_key = format!("{BUYER}/results/rows.out");
    assert!(
        wait_until(Duration::from_secs(60), || !stack
            .list(&outbox, &result_key)
            .is_empty()),
        "no result; outbox: {:?}",
        stack.list(&outbox, &format!("{BUYER}/"))
    );
    drop(daemon);
    // The usage rides in the result's own metadata, and the claim is in the claims table: the
    // outbox holds the result, nothing more.
    assert_eq!(
        stack.list(&outbox, &format!("{BUYER}/")),
        std::slice::from_ref(&result_key)
    );
    let claims = stack.claims(BUYER);
    assert!(claims["rows"].starts_with("job:"), "{claims:?}");
    // On AWS the model's units come back in its custom attributes (SageMaker keeps the
    // metering header): the two rows sent are the records scored, read from the result's
    // metadata by a HeadObject.
    let usage = aws(&stack, cwd, &["buyer", "usage", "--buyer", BUYER, "--json"]);
    assert!(usage.ok, "{}", usage.stderr);
    let days: Vec<serde_json::Value> = usage
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(days.len(), 1, "{}", usage.stdout);
    assert_eq!(
        (
            &days[0]["records"],
            &days[0]["invocations"],
            &days[0]["metered"]
        ),
        (
            &serde_json::json!(2),
            &serde_json::json!(1),
            &serde_json::json!(true)
        ),
        "{}",
        usage.stdout
    );
    let listed = aws(&stack, cwd, &["buyer", "results", "--buyer", BUYER]);
    assert!(listed.ok, "{}", listed.stderr);
    let rows: Vec<Vec<&str>> = listed
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{}", listed.stdout);
    assert_eq!(
        rows[0],
        ["request", "outcome", "reason", "bytes"],
        "{}",
        listed.stdout
    );
    assert_eq!(
        rows[1][..3],
        ["rows", "completed", "-"],
        "{}",
        listed.stdout
    );
    let json = aws(
        &stack,
        cwd,
        &["buyer", "results", "--buyer", BUYER, "--json"],
    );
    assert!(json.ok, "{}", json.stderr);
    let fetched = aws(
        &stack,
        cwd,
        &["buyer", "results", "--buyer", BUYER, "--fetch", "got"],
    );
    assert!(fetched.ok, "{}", fetched.stderr);
    assert_eq!(
        std::fs::read_to_string(cwd.join("got/results/rows.out")).unwrap(),
        stack.get_object(&outbox, &result_key)
    );
    // The same content again needs no token, and says where its answer is.
    let again = aws(&stack, cwd, &submit);
    assert!(again.ok, "{}", again.stderr);
    assert!(
        again.stdout.contains("answered: completed"),
        "{}",
        again.stdout
    );
    // A missing token was refused before anything was written.
    assert!(
        stack
            .list(&inbox, &format!("{BUYER}/inputs/new/"))
            .is_empty()
    );

    // The same commands on the embedded backend print the same, but for the bucket's name.
    let data = stack.dir.path();
    let embedded = |args: &[&str]| {
        let mut c = sealbox(data);
        c.current_dir(cwd).args(args);
        run(c)
    };
    let embedded_up = start_up(data, &[]);
    let e_submitted = embedded(&with_token);
    assert!(e_submitted.ok, "{}", e_submitted.stderr);
    let result = data.join(format!("buckets/outbox/{result_key}"));
    assert!(
        wait_until(Duration::from_secs(30), || result.is_file()),
        "no embedded result"
    );
    drop(embedded_up);
    let e_listed = embedded(&["buyer", "results", "--buyer", BUYER]);
    let e_json = embedded(&["buyer", "results", "--buyer", BUYER, "--json"]);
    let e_again = embedded(&submit);
    let named = |s: &str| s.replace(&format!("s3://{outbox}/"), "s3://outbox/");
    for (what, on_aws, on_embedded) in [
        ("submit", &submitted, &e_submitted),
        ("results", &listed, &e_listed),
        ("results --json", &json, &e_json),
        ("submit again", &again, &e_again),
    ] {
        assert!(on_embedded.ok, "{what}: {}", on_embedded.stderr);
        assert_eq!(named(&on_aws.stdout), on_embedded.stdout, "{what}");
    }
}

#[test]
fn status_on_aws_counts_backlog_in_flight_and_dead_letters_and_leaves_the_age_unknown() {
    let stack = AwsStack::start("cli-status", &[]);
    let cwd = stack.dir.path();
    let jobs = stack.get("SEALBOX_JOBS_QUEUE_URL").to_owned();
    let events = stack.get("SEALBOX_INBOX_EVENTS_QUEUE_URL").to_owned();
    // Whatever moto put on the inbox-events queue when the notification was configured.
    let before = status(&stack, cwd);
    assert_eq!(before.len(), 2, "{before:?}");
    let events_backlog = before[0].1;
    assert_eq!(
        before,
        [
            (
                "inbox-events".into(),
                events_backlog,
                0,
                0,
                serde_json::Value::Null
            ),
            ("jobs".into(), 0, 0, 0, serde_json::Value::Null)
        ]
    );

    for i in 0..3 {
        sqs(&stack, &["send", &jobs, &format!("{{\"job\": {i}}}")]);
    }
    sqs(&stack, &["hold", &jobs]);
    sqs(&stack, &["send", &format!("{jobs}-dlq"), "{\"dead\": 1}"]);
    for i in 0..2 {
        sqs(
            &stack,
            &["send", &format!("{events}-dlq"), &format!("{{\"e\": {i}}}")],
        );
    }
    let after = status(&stack, cwd);
    assert_eq!(
        after,
        [
            (
                "inbox-events".into(),
                events_backlog,
                0,
                2,
                serde_json::Value::Null
            ),
            ("jobs".into(), 2, 1, 1, serde_json::Value::Null)
        ]
    );

    // The table: the embedded columns, the age unknown rather than made up.
    let table = aws(&stack, cwd, &["status"]);
    assert!(table.ok, "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", table.stdout);
    assert!(
        lines[0].starts_with("queue ") && lines[0].ends_with("  dead letters  oldest (s)"),
        "{}",
        table.stdout
    );
    assert_eq!(
        lines[2].split_whitespace().collect::<Vec<_>>(),
        ["jobs", "2", "1", "1", "unknown"],
        "{}",
        table.stdout
    );
    // Right-aligned under its title, as embedded.
    assert!(
        lines.iter().all(|l| l.len() == lines[0].len()),
        "{}",
        table.stdout
    );
}

#[test]
fn a_dead_lettered_job_is_listed_then_redriven_to_the_jobs_queue_on_aws() {
    let stack = AwsStack::start("cli-dlq", &[]);
    let cwd = stack.dir.path();
    let jobs = stack.get("SEALBOX_JOBS_QUEUE_URL").to_owned();
    let body = r#"{"not": "a job"}"#;
    // No `up` runs: nothing consumes the jobs queue, so what is redriven stays there.
    sqs(&stack, &["send", &format!("{jobs}-dlq"), body]);

    let listed = aws(&stack, cwd, &["dlq", "list"]);
    assert!(listed.ok, "{}", listed.stderr);
    let lines: Vec<&str> = listed.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{}", listed.stdout);
    let fields: Vec<&str> = lines[0].split('\t').collect();
    assert_eq!(fields.len(), 3, "{}", lines[0]);
    assert!(fields[1].starts_with("receives="), "{}", lines[0]);
    assert_eq!(fields[2], body);
    // --json: one object per line, the body as the JSON it is.
    let json = aws(&stack, cwd, &["dlq", "list", "--json"]);
    assert!(json.ok, "{}", json.stderr);
    let line: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(line["body"], serde_json::json!({"not": "a job"}), "{line}");
    assert_eq!(line["message_id"].as_str(), Some(fields[0]), "{line}");
    assert!(line["receive_count"].is_u64(), "{line}");
    // The other queue's dead letters are its own.
    let events = aws(&stack, cwd, &["dlq", "list", "--queue", "inbox-events"]);
    assert!(events.ok, "{}", events.stderr);
    assert!(events.stdout.is_empty(), "{}", events.stdout);
    assert!(
        events
            .stderr
            .contains("no dead letters in the inbox-events queue"),
        "{}",
        events.stderr
    );

    let redriven = aws(&stack, cwd, &["dlq", "redrive"]);
    assert!(redriven.ok, "{}", redriven.stderr);
    assert_eq!(redriven.stdout, "moved 1 messages back to the jobs queue\n");
    let after = aws(&stack, cwd, &["dlq", "list"]);
    assert!(after.ok, "{}", after.stderr);
    assert!(after.stdout.is_empty(), "{}", after.stdout);
    assert!(
        after.stderr.contains("no dead letters in the jobs queue"),
        "{}",
        after.stderr
    );
    let rows = status(&stack, cwd);
    assert_eq!(
        (rows[1].0.as_str(), rows[1].1, rows[1].3),
        ("jobs", 1, 0),
        "{rows:?}"
    );
}

#[test]
fn aws_commands_name_each_missing_setting_they_need_and_touch_no_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("no-data-here");
    std::fs::write(dir.path().join("rows.csv"), "5.1,3.5,1.4,0.2\n").unwrap();
    let cases: [(&[&str], &[&str]); 6] = [
        (
            &["status"],
            &["SEALBOX_INBOX_EVENTS_QUEUE_URL", "SEALBOX_JOBS_QUEUE_URL"],
        ),
        (
            &["status", "--json"],
            &["SEALBOX_INBOX_EVENTS_QUEUE_URL", "SEALBOX_JOBS_QUEUE_URL"],
        ),
        (&["dlq", "list"], &["SEALBOX_JOBS_QUEUE_URL"]),
        (
            &["dlq", "redrive", "--queue", "inbox-events"],
            &["SEALBOX_INBOX_EVENTS_QUEUE_URL"],
        ),
        (
            &["buyer", "results", "--buyer", BUYER],
            &["SEALBOX_INBOX_BUCKET", "SEALBOX_OUTBOX_BUCKET"],
        ),
        (
            &[
                "buyer", "submit", "rows.csv", "--buyer", BUYER, "--token", "t",
            ],
            &["SEALBOX_INBOX_BUCKET", "SEALBOX_OUTBOX_BUCKET"],
        ),
    ];
    let all = sealbox_aws::config::Var::ALL.map(|v| v.name());
    for (args, needed) in cases {
        let mut c = sealbox(&data);
        c.current_dir(dir.path())
            .args(args)
            .args(["--backend", "aws"]);
        for var in all {
            c.env_remove(var);
        }
        let out = run(c);
        assert!(!out.ok, "{args:?} succeeded: {}", out.stdout);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
        assert!(
            out.stderr
                .contains(&format!("missing settings: {}", needed.join(", "))),
            "{args:?}: {}",
            out.stderr
        );
        // Only what the command needs.
        for var in all.iter().filter(|v| !needed.contains(v)) {
            assert!(
                !out.stderr.contains(var),
                "{args:?} asks for {var}: {}",
                out.stderr
            );
        }
        assert!(!data.exists(), "{args:?} created {}", data.display());
    }
}
