//! A buyer's first contact, through the `sealbox` binary: a token that would be refused is
//! refused before anything is uploaded, a spent request id says why and how to send again,
//! `results` shows what is still pending and tells an unknown buyer apart, and a cached token
//! still good stands in for a token service that cannot be reached.
// Test support: a panic is how a test reports a broken precondition.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sealbox_core::contract::{OutcomeDocument, Reason};
use sealbox_tests::{Ran, run, sealbox, start_up, terminate, wait_until};

const BUYER: &str = "111122223333";

/// `sealbox --data-dir DATA ARGS` in `cwd`.
fn sb(data: &Path, cwd: &Path, args: &[&str]) -> Ran {
    let mut c = sealbox(data);
    c.current_dir(cwd).args(args);
    run(c)
}

/// Makes the seller's keys and grants [`BUYER`] with its secret in `dir/secret`; answers the
/// secret file's path.
fn grant(data: &Path, dir: &Path) -> String {
    let keys = sb(data, dir, &["seller", "keys", "init"]);
    assert!(keys.ok, "{}", keys.stderr);
    let secret = dir.join("secret");
    let secret = secret.to_str().unwrap().to_owned();
    let g = sb(
        data,
        dir,
        &["seller", "grant", BUYER, "--secret-out", &secret],
    );
    assert!(g.ok, "{}", g.stderr);
    secret
}

fn seller_token(data: &Path, dir: &Path, buyer: &str) -> String {
    let t = sb(data, dir, &["seller", "token", "--buyer", buyer]);
    assert!(t.ok, "{}", t.stderr);
    t.stdout.trim().to_owned()
}

#[test]
fn a_token_that_ingest_would_refuse_is_refused_before_anything_is_uploaded() {
    let dir = tempfile::tempdir().unwrap();
    let (cwd, data) = (dir.path(), dir.path().join("data"));
    grant(&data, cwd);
    let other = "444455556666";
    let g = sb(&data, cwd, &["seller", "grant", other]);
    assert!(g.ok, "{}", g.stderr);
    std::fs::write(cwd.join("rows.csv"), "5.1,3.5,1.4,0.2\n").unwrap();
    let good = seller_token(&data, cwd, BUYER);
    let mut parts = good.split('.');
    let (h, _, s) = (parts.next().unwrap(), parts.next(), parts.next().unwrap());
    use base64::Engine as _;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let expired = format!(
        "{h}.{}.{s}",
        b64(serde_json::json!({"sub": BUYER, "aud": "iris-classifier", "exp": now - 10}))
    );
    let cases = [
        (
            "abc".to_owned(),
            "it is not a JWT: it has 1 dot-separated part",
        ),
        (expired, "it expired at"),
        (
            seller_token(&data, cwd, other),
            "it is for buyer 444455556666, not 111122223333",
        ),
    ];
    for (token, why) in cases {
        let args = [
            "buyer", "submit", "rows.csv", "--buyer", BUYER, "--token", &token,
        ];
        let r = sb(&data, cwd, &args);
        assert!(!r.ok, "{why}: {}", r.stdout);
        assert!(r.stderr.contains(why), "{why}: {}", r.stderr);
        assert!(r.stderr.contains("nothing was uploaded"), "{}", r.stderr);
        assert!(
            !data.join(format!("buckets/inbox/{BUYER}")).exists(),
            "{why}: something was uploaded"
        );
    }
    let product = sb(
        &data,
        cwd,
        &[
            "buyer",
            "submit",
            "rows.csv",
            "--buyer",
            BUYER,
            "--token",
            &good,
            "--product",
            "x",
        ],
    );
    assert!(
        product
            .stderr
            .contains("it is for product iris-classifier, not x"),
        "{}",
        product.stderr
    );
    // A `Bearer ` prefix is removed with a warning, and the token is sent as the JWT alone.
    let bearer = format!("Bearer {good}");
    let sent = sb(
        &data,
        cwd,
        &[
            "buyer", "submit", "rows.csv", "--buyer", BUYER, "--token", &bearer,
        ],
    );
    assert!(sent.ok, "{}", sent.stderr);
    assert!(
        sent.stderr.contains("starts with `Bearer `"),
        "{}",
        sent.stderr
    );
    let request: serde_json::Value = serde_json::from_slice(
        &std::fs::read(data.join(format!("buckets/inbox/{BUYER}/requests/rows.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(request["token"], good.as_str());
}

#[test]
fn a_spent_request_id_exits_non_zero_with_the_reason_the_hint_and_a_command_that_sends_it_again() {
    let dir = tempfile::tempdir().unwrap();
    let (cwd, data) = (dir.path(), dir.path().join("data"));
    let secret = grant(&data, cwd);
    let _up = start_up(&data, &[]);
    std::fs::write(cwd.join("rows.csv"), "5.1,3.5,1.4,0.2\n").unwrap();
    // Well formed and for this buyer, so only ingest (which checks the signature) refuses it.
    let good = seller_token(&data, cwd, BUYER);
    let (signed, _) = good.rsplit_once('.').unwrap();
    let tampered = format!("{signed}.AAAA");
    let first = sb(
        &data,
        cwd,
        &[
            "buyer", "submit", "rows.csv", "--buyer", BUYER, "--token", &tampered,
        ],
    );
    assert!(first.ok, "{}", first.stderr);
    let rejected = data.join(format!("buckets/outbox/{BUYER}/rejected/rows.json"));
    assert!(
        wait_until(Duration::from_secs(30), || rejected.is_file()),
        "not rejected"
    );
    let doc: OutcomeDocument = serde_json::from_slice(&std::fs::read(&rejected).unwrap()).unwrap();
    assert_eq!(doc.reason, Reason::TokenBadSignature);
    assert_eq!(doc.hint.as_deref(), Some(Reason::TokenBadSignature.hint()));

    let again = sb(
        &data,
        cwd,
        &[
            "buyer",
            "submit",
            "rows.csv",
            "--buyer",
            BUYER,
            "--secret-file",
            &secret,
        ],
    );
    assert!(!again.ok, "a spent id must not exit 0: {}", again.stdout);
    for needed in [
        "request id rows is spent",
        "token_bad_signature",
        &format!("hint: {}", Reason::TokenBadSignature.hint()),
        "--request-id rows-2",
        "Nothing was submitted",
    ] {
        assert!(
            again.stderr.contains(needed),
            "{needed:?} in {}",
            again.stderr
        );
    }
    let command = again
        .stderr
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("sealbox "))
        .expect("the command to send it again");
    // The printed command, run as printed (the data directory is named since it is not the
    // default), sends the file under the new id, which gets a result.
    let words: Vec<&str> = command.split_whitespace().skip(1).collect();
    assert!(words.contains(&"--data-dir"), "{command}");
    let mut c = Command::new(sealbox_tests::sealbox_bin());
    c.current_dir(cwd).args(&words);
    let resent = run(c);
    assert!(resent.ok, "{command}: {}", resent.stderr);
    let result = data.join(format!("buckets/outbox/{BUYER}/results/rows-2.out"));
    assert!(
        wait_until(Duration::from_secs(30), || result.is_file()),
        "rows-2 not answered"
    );
}

#[test]
fn results_lists_pending_requests_with_their_age_and_tells_an_unknown_buyer_apart() {
    let dir = tempfile::tempdir().unwrap();
    let (cwd, data) = (dir.path(), dir.path().join("data"));
    grant(&data, cwd);
    let token = seller_token(&data, cwd, BUYER);
    std::fs::write(cwd.join("rows.csv"), "5.1,3.5,1.4,0.2\n").unwrap();
    // No `up` runs: the request waits.
    let sent = sb(
        &data,
        cwd,
        &[
            "buyer", "submit", "rows.csv", "--buyer", BUYER, "--token", &token,
        ],
    );
    assert!(sent.ok, "{}", sent.stderr);

    let listed = sb(&data, cwd, &["buyer", "results", "--buyer", BUYER]);
    assert!(listed.ok, "{}", listed.stderr);
    let rows: Vec<Vec<&str>> = listed
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["request", "outcome", "reason", "bytes"],
        "{}",
        listed.stdout
    );
    assert_eq!(
        rows[1][..3],
        ["rows", "pending", "submitted"],
        "{}",
        listed.stdout
    );
    assert!(listed.stdout.contains(" ago"), "{}", listed.stdout);
    assert!(
        listed
            .stderr
            .contains("nothing finished yet for buyer 111122223333: 1 pending"),
        "{}",
        listed.stderr
    );
    let json = sb(
        &data,
        cwd,
        &["buyer", "results", "--buyer", BUYER, "--json"],
    );
    let line: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(line["outcome"], "pending");
    assert_eq!(line["request_id"], "rows");
    assert!(line["age_seconds"].as_i64().is_some(), "{line}");

    let unknown = sb(&data, cwd, &["buyer", "results", "--buyer", "111122223334"]);
    assert!(unknown.ok, "{}", unknown.stderr);
    assert!(unknown.stdout.is_empty(), "{}", unknown.stdout);
    assert!(
        unknown
            .stderr
            .contains("no request was ever submitted under buyer 111122223334"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn with_the_token_service_stopped_a_cached_token_still_good_is_used_and_fresh_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cwd, data) = (dir.path(), dir.path().join("data"));
    let secret = grant(&data, cwd);
    let mut up = start_up(&data, &[]);
    let token_args = ["buyer", "token", "--buyer", BUYER, "--secret-file", &secret];
    let first = sb(&data, cwd, &token_args);
    assert!(first.ok, "{}", first.stderr);
    // The service's URL as a buyer is often shown it, with its route: accepted as well.
    let url = std::fs::read_to_string(data.join("token-service.url")).unwrap();
    let route = format!("{}/token", url.trim());
    let routed = sb(
        &data,
        cwd,
        &[&token_args[..], &["--token-url", &route, "--fresh"]].concat(),
    );
    assert!(routed.ok, "--token-url {route}: {}", routed.stderr);
    let missing = format!("{}/nothing-here", url.trim());
    let wrong = sb(
        &data,
        cwd,
        &[&token_args[..], &["--token-url", &missing, "--fresh"]].concat(),
    );
    assert!(wrong.stderr.contains("404"), "{}", wrong.stderr);

    terminate(&up);
    assert!(up.wait().unwrap().success());
    let cached = sb(&data, cwd, &token_args);
    assert!(
        cached.ok,
        "the cached token must stand in: {}",
        cached.stderr
    );
    assert_eq!(cached.stdout.trim(), routed.stdout.trim());
    assert!(
        cached.stderr.contains("using the cached token"),
        "{}",
        cached.stderr
    );
    let fresh = sb(&data, cwd, &[&token_args[..], &["--fresh"]].concat());
    assert!(!fresh.ok, "--fresh asks the service and nothing else");

    // `submit` takes it too; the request waits for the next `up`.
    std::fs::write(cwd.join("rows.csv"), "5.1,3.5,1.4,0.2\n").unwrap();
    let sent = sb(
        &data,
        cwd,
        &[
            "buyer",
            "submit",
            "rows.csv",
            "--buyer",
            BUYER,
            "--secret-file",
            &secret,
        ],
    );
    assert!(sent.ok, "{}", sent.stderr);
    assert!(
        sent.stderr.contains("using the cached token"),
        "{}",
        sent.stderr
    );
    assert!(
        data.join(format!("buckets/inbox/{BUYER}/requests/rows.json"))
            .is_file()
    );
}

#[test]
fn keys_list_json_prints_one_object_per_key_like_every_listing() {
    let dir = tempfile::tempdir().unwrap();
    let (cwd, data) = (dir.path(), dir.path().join("data"));
    grant(&data, cwd);
    let table = sb(&data, cwd, &["seller", "keys", "list"]);
    let listed = sb(&data, cwd, &["seller", "keys", "list", "--json"]);
    assert!(listed.ok, "{}", listed.stderr);
    let keys: Vec<serde_json::Value> = listed
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        keys.len(),
        table.stdout.lines().count() - 1,
        "{}",
        listed.stdout
    );
    for k in &keys {
        assert!(table.stdout.contains(k["kid"].as_str().unwrap()), "{k}");
        for member in ["alg", "state", "created_at"] {
            assert!(k[member].is_string(), "{member}: {k}");
        }
    }
}

#[test]
fn seller_help_names_what_the_seller_uses_on_aws_and_not_the_buyers_buckets() {
    let dir = tempfile::tempdir().unwrap();
    let help = sb(
        dir.path(),
        dir.path(),
        &["seller", "keys", "list", "--help"],
    );
    assert!(help.ok, "{}", help.stderr);
    for needed in ["KMS", "DynamoDB", "SEALBOX_JWKS_OBJECT"] {
        assert!(help.stdout.contains(needed), "{needed}: {}", help.stdout);
    }
    for buyers in ["SEALBOX_INBOX_BUCKET", "SageMaker", "SQS"] {
        assert!(!help.stdout.contains(buyers), "{buyers}: {}", help.stdout);
    }
}
