//! A buyer's first contact with `--backend aws`, against moto: `buyer submit` takes its token
//! from the seller's token service named by `--token-url` (base URL or `/token` route) with
//! `--secret-file`, reuses the cached token while that service is down, and `buyer
//! results` lists what is still pending in the inbox bucket.

use sealbox_tests::aws_stack::{AwsStack, BUYER};
use sealbox_tests::{Ran, run, start_up, terminate};

/// `sealbox ARGS --backend aws` in `cwd` with the stack's environment and no token but those
/// the test gives.
fn aws(stack: &AwsStack, cwd: &std::path::Path, args: &[&str]) -> Ran {
    let mut c = stack.sealbox();
    c.current_dir(cwd).args(args).args(["--backend", "aws"]);
    run(c)
}

#[test]
fn submit_on_aws_gets_its_token_from_the_token_url_with_the_secret_file_and_caches_it() {
    let stack = AwsStack::start("first-contact", &[]);
    let inbox = stack.get("SEALBOX_INBOX_BUCKET").to_owned();
    let files = tempfile::tempdir().unwrap();
    let cwd = files.path();
    std::fs::write(cwd.join("rows.csv"), "5.1,3.5,1.4,0.2\n").unwrap();
    std::fs::write(cwd.join("more.csv"), "6.3,3.3,6.0,2.5\n").unwrap();
    // The seller's token service: the embedded one over the seller's keys and subscriptions.
    let secret = cwd.join("buyer.secret");
    let secret = secret.to_str().unwrap();
    let granted = stack
        .sealbox()
        .args(["seller", "grant", BUYER, "--secret-out", secret])
        .output()
        .unwrap();
    assert!(granted.status.success());
    let mut service = start_up(stack.dir.path(), &[]);
    let url = std::fs::read_to_string(stack.dir.path().join("token-service.url")).unwrap();
    let route = format!("{}/token", url.trim());

    let submit = |file: &str| {
        let args = [
            "buyer",
            "submit",
            file,
            "--buyer",
            BUYER,
            "--token-url",
            &route,
            "--secret-file",
            secret,
        ];
        aws(&stack, cwd, &args)
    };
    let sent = submit("rows.csv");
    assert!(sent.ok, "{}", sent.stderr);
    let request: serde_json::Value =
        serde_json::from_str(&stack.get_object(&inbox, &format!("{BUYER}/requests/rows.json")))
            .unwrap();
    let token = request["token"].as_str().unwrap().to_owned();
    assert_eq!(token.split('.').count(), 3, "{token}");

    // The service goes away; the cached token, still good, is used without asking it.
    terminate(&service);
    let stopped = service.wait().unwrap();
    assert!(stopped.success(), "{stopped:?}");
    let cached = submit("more.csv");
    assert!(cached.ok, "{}", cached.stderr);
    let request: serde_json::Value =
        serde_json::from_str(&stack.get_object(&inbox, &format!("{BUYER}/requests/more.json")))
            .unwrap();
    assert_eq!(request["token"], token.as_str());

    // No `up --backend aws` runs: both wait, and `results` says so.
    let listed = aws(&stack, cwd, &["buyer", "results", "--buyer", BUYER]);
    assert!(listed.ok, "{}", listed.stderr);
    let pending: Vec<&str> = listed
        .stdout
        .lines()
        .filter(|l| l.contains(" pending "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(pending, ["more", "rows"], "{}", listed.stdout);
    assert!(
        listed.stderr.contains("nothing finished yet") && listed.stderr.contains("2 pending"),
        "{}",
        listed.stderr
    );
}

#[test]
fn aws_teardown_deletes_every_resource_bootstrap_made_even_with_objects_and_runs_again_harmlessly()
{
    let moto = sealbox_tests::moto::Moto::start();
    let cli = sealbox_tests::aws_cli::AwsCli::new(&moto);
    let dir = tempfile::tempdir().unwrap();
    let sealbox = |args: &[&str]| {
        let out = sealbox_tests::sealbox(&dir.path().join("unused"))
            .args(args)
            .envs(moto.env())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = sealbox(&["aws", "bootstrap", "--name", "td-one"]);
    assert!(ok, "{err}");
    // Another stack's resources are not this one's.
    let (ok, _, err) = sealbox(&["aws", "bootstrap", "--name", "td-two"]);
    assert!(ok, "{err}");
    let file = dir.path().join("r.json");
    std::fs::write(&file, "{}").unwrap();
    let file = file.to_str().unwrap();
    cli.text(&[
        "s3",
        "cp",
        file,
        "s3://td-one-inbox/111122223333/requests/r.json",
    ]);
    cli.text(&[
        "s3",
        "cp",
        file,
        "s3://td-one-outbox/111122223333/rejected/r.json",
    ]);

    let (ok, out, err) = sealbox(&["aws", "teardown", "--name", "td-one"]);
    assert!(ok, "{err}");
    let deleted: Vec<&str> = out.lines().collect();
    assert_eq!(
        deleted[..6],
        [
            "deleted bucket td-one-inbox (1 objects)",
            "deleted bucket td-one-outbox (1 objects)",
            "deleted queue td-one-inbox-events",
            "deleted queue td-one-inbox-events-dlq",
            "deleted queue td-one-jobs",
            "deleted queue td-one-jobs-dlq",
        ],
        "{out}"
    );
    assert!(
        deleted[6].starts_with("deleted topic arn:")
            && deleted[6].ends_with(":td-one-notifications"),
        "{out}"
    );
    assert_eq!(deleted[7], "deleted table td-one-claims", "{out}");
    assert_eq!(deleted.len(), 8, "{out}");

    let buckets = cli.json(&["s3api", "list-buckets"]).to_string();
    let queues = cli.json(&["sqs", "list-queues"]).to_string();
    let topics = cli.json(&["sns", "list-topics"]).to_string();
    let tables = cli.json(&["dynamodb", "list-tables"]).to_string();
    for listing in [&buckets, &queues, &topics, &tables] {
        assert!(!listing.contains("td-one"), "{listing}");
        assert!(listing.contains("td-two"), "{listing}");
    }
    let (ok, out, err) = sealbox(&["aws", "teardown", "--name", "td-one"]);
    assert!(ok, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("nothing of the stack \"td-one\" exists"),
        "{err}"
    );
}

#[test]
fn aws_teardown_empties_a_bucket_of_more_than_one_listing_page() {
    let moto = sealbox_tests::moto::Moto::start();
    let cli = sealbox_tests::aws_cli::AwsCli::new(&moto);
    let dir = tempfile::tempdir().unwrap();
    let sealbox = |args: &[&str]| {
        sealbox_tests::sealbox(&dir.path().join("unused"))
            .args(args)
            .envs(moto.env())
            .output()
            .unwrap()
    };
    let out = sealbox(&["aws", "bootstrap", "--name", "td-big"]);
    assert!(out.status.success(), "{out:?}");
    // More objects than one ListObjectVersions page (1,000) holds.
    let objects = dir.path().join("objects");
    std::fs::create_dir(&objects).unwrap();
    for i in 0..1100 {
        std::fs::write(objects.join(format!("r{i:04}.json")), "{}").unwrap();
    }
    cli.text(&[
        "s3",
        "sync",
        "--quiet",
        objects.to_str().unwrap(),
        "s3://td-big-inbox/111122223333/requests/",
    ]);
    let out = sealbox(&["aws", "teardown", "--name", "td-big"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("deleted bucket td-big-inbox (1100 objects)"),
        "{stdout}"
    );
    let buckets = cli.json(&["s3api", "list-buckets"]).to_string();
    assert!(!buckets.contains("td-big"), "{buckets}");
}
