//! Buyers prove their AWS account to the token service with a signed `sts:GetCallerIdentity`
//! (issue 17), on moto: two accounts reached by `sts:AssumeRole`; the granted one gets a token
//! with `sealbox buyer token --backend aws` and no secret anywhere, and its request completes;
//! the other is refused; and every way a proof can be wrong is refused with its reason, with no
//! token issued. The token service is the one `sealbox up` serves for the seller's data
//! directory; it trusts the STS endpoint its environment names (moto's).

use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use base64::Engine as _;
use sealbox_authz::caller_identity::IdentityProof;
use sealbox_tests::aws_stack::{AwsStack, BUYER};

/// An account never granted.
const STRANGER: &str = "444455556666";
/// An account granted, then revoked.
const REVOKED: &str = "555566667777";
/// The seller's issuer (`seller keys init`'s default).
const ISSUER: &str = sealbox::stack::DEFAULT_ISSUER;

/// The environment of a buyer machine holding `creds` (and nothing of the seller's).
fn buyer_env(stack: &AwsStack, creds: &Credentials) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = stack
        .env
        .iter()
        .filter(|(k, _)| k != "AWS_ACCESS_KEY_ID" && k != "AWS_SECRET_ACCESS_KEY")
        .cloned()
        .collect();
    env.push(("AWS_ACCESS_KEY_ID".into(), creds.access_key_id().into()));
    env.push((
        "AWS_SECRET_ACCESS_KEY".into(),
        creds.secret_access_key().into(),
    ));
    env.push((
        "AWS_SESSION_TOKEN".into(),
        creds.session_token().unwrap_or_default().into(),
    ));
    env
}

/// Posts `body` to the token service; answers the status and the JSON answer.
fn post(url: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let resp = reqwest::Client::new()
            .post(format!("{url}/token"))
            .json(body)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(serde_json::Value::Null))
    })
}

/// A token's claims, unverified (the pipeline verifies; here only `sub` is read).
fn claims_of(token: &str) -> serde_json::Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn proof(creds: &Credentials, sts: &str, issuer: &str, at: SystemTime) -> IdentityProof {
    sealbox_aws::identity::sign_proof(creds.clone(), "us-east-1", sts, issuer, at).unwrap()
}

#[test]
fn a_granted_aws_account_gets_a_token_with_no_secret_and_every_bad_proof_is_refused_with_its_reason()
 {
    let stack = AwsStack::start("identity", &[]);
    // The seller's side: BUYER is granted (by `AwsStack`), REVOKED granted then revoked.
    for args in [
        &["seller", "grant", REVOKED][..],
        &["seller", "revoke", REVOKED][..],
    ] {
        let ran = sealbox_tests::run({
            let mut c = stack.sealbox();
            c.args(args);
            c
        });
        assert!(ran.ok, "{args:?}: {}", ran.stderr);
    }
    let (_seller, token_url) = stack.token_service();
    let _pipeline = stack.up(&[]);

    // The granted account: `buyer token --backend aws`, no secret anywhere.
    let granted = stack.assume_role(BUYER);
    let buyer_dir = tempfile::tempdir().unwrap();
    // `sealbox buyer token --backend aws` as `account`, holding `creds` and no secret.
    let token_as = |account: &str, creds: &Credentials| {
        let mut c = sealbox_tests::sealbox(buyer_dir.path());
        c.args(["buyer", "token", "--backend", "aws", "--fresh"])
            .args(["--buyer", account, "--token-url", &token_url])
            .envs(buyer_env(&stack, creds));
        sealbox_tests::run(c)
    };
    let ran = token_as(BUYER, &granted);
    assert!(ran.ok, "{}", ran.stderr);
    let token = ran.stdout.trim().to_owned();
    let claims = claims_of(&token);
    assert_eq!(claims["sub"], BUYER, "{claims}");
    // Its request completes. (Uploaded with the buyer stack's own credentials: moto keeps
    // the stack in its default account, and would not announce an object another account's
    // role puts; on AWS the buyer's stack and its role are in the same account.)
    let input = buyer_dir.path().join("flower.csv");
    std::fs::write(&input, sealbox::cases::SAMPLE_ROWS[0]).unwrap();
    let ran = sealbox_tests::run({
        let mut c = sealbox_tests::sealbox(buyer_dir.path());
        c.args([
            "buyer",
            "submit",
            "--backend",
            "aws",
            "--buyer",
            BUYER,
            "--token",
            &token,
            "--request-id",
            "by-identity",
            input.to_str().unwrap(),
        ])
        .envs(stack.env.iter().cloned());
        c
    });
    assert!(ran.ok, "{}{}", ran.stdout, ran.stderr);
    let outbox = stack.get("SEALBOX_OUTBOX_BUCKET").to_owned();
    assert!(
        sealbox_tests::wait_until(Duration::from_secs(60), || {
            !stack
                .list(&outbox, &format!("{BUYER}/results/by-identity"))
                .is_empty()
        }),
        "the request of the proven account did not complete: {}; {:?}",
        ran.stdout,
        stack.list(&outbox, BUYER)
    );

    // An account never granted: refused, with its account named.
    let stranger = stack.assume_role(STRANGER);
    let ran = token_as(STRANGER, &stranger);
    assert!(!ran.ok, "{}", ran.stdout);
    assert!(
        ran.stderr.contains("not_subscribed") && ran.stderr.contains(STRANGER),
        "{}",
        ran.stderr
    );

    // Every way a proof can be wrong, each refused with its reason and no token.
    let now = SystemTime::now();
    let sts = format!("{}/", stack.moto.endpoint);
    let good = proof(&granted, &sts, ISSUER, now);
    let mut not_gci = good.clone();
    not_gci.body = "Action=AssumeRole&Version=2011-06-15&RoleArn=arn:aws:iam::1:role/x".into();
    let oversize =
        serde_json::json!({"aws_sts": {"headers": good.headers, "body": "x".repeat(9000)}});
    let cases: Vec<(&str, serde_json::Value, u16, &str)> = vec![
        (
            "signed for another token service",
            serde_json::json!({"aws_sts": proof(&granted, &sts, "another-seller", now)}),
            401,
            "wrong_audience",
        ),
        (
            "replayed after its date",
            serde_json::json!({"aws_sts": proof(&granted, &sts, ISSUER, now - Duration::from_secs(20 * 60))}),
            401,
            "stale_signature",
        ),
        (
            "signed for a host that is not STS",
            serde_json::json!({"aws_sts": proof(&granted, "https://evil.example/", ISSUER, now)}),
            401,
            "untrusted_sts",
        ),
        (
            "a body that is not GetCallerIdentity",
            serde_json::json!({"aws_sts": not_gci}),
            401,
            "not_get_caller_identity",
        ),
        ("oversize", oversize, 400, "bad_request"),
    ];
    for (what, body, status, code) in &cases {
        let (got, answer) = post(&token_url, body);
        assert_eq!(
            (got, answer["error"].as_str()),
            (*status, Some(*code)),
            "{what}: {answer}"
        );
        assert!(answer.get("token").is_none(), "{what}: {answer}");
        println!("{what}: HTTP {got} {code}: {}", answer["message"]);
    }
    // Accounts STS vouches for, but that may not have a token.
    for (what, account) in [("never granted", STRANGER), ("revoked", REVOKED)] {
        let body =
            serde_json::json!({"aws_sts": proof(&stack.assume_role(account), &sts, ISSUER, now)});
        let (got, answer) = post(&token_url, &body);
        assert_eq!(
            (got, answer["error"].as_str()),
            (403, Some("not_subscribed")),
            "{what}: {answer}"
        );
        assert!(answer.get("token").is_none(), "{what}: {answer}");
        println!("{what}: HTTP {got} not_subscribed: {}", answer["message"]);
    }
    // And the good proof, posted by hand: a token for the account STS answered.
    let (got, answer) = post(&token_url, &serde_json::json!({"aws_sts": good}));
    assert_eq!(got, 200, "{answer}");
    let claims = claims_of(answer["token"].as_str().unwrap());
    assert_eq!(claims["sub"], BUYER);
}
