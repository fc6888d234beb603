//! Interoperability with an independent JWT implementation (PyJWT with `cryptography`, pinned in
//! scripts/requirements-test.txt and installed by `./scripts/test`): tokens PyJWT signs with a
//! key exported from the keyset verify in sealbox, and tokens from sealbox's token service verify
//! in PyJWT against the published keys.

// Helpers outside #[test] functions: a failed setup is a failed test.

use sealbox_authz::subscriptions::SubscriptionRegistry as _;
use sealbox_embedded::sqlite_subscriptions::SqliteSubscriptions;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use sealbox::access::{BuyerCredentials, buyer_token, grant};
use sealbox_authz::{KeyAlg, Keyset, Verifier, VerifierConfig};
use sealbox_core::contract::Reason;
use sealbox_tests::{Embedded, python};
use serde_json::{Value, json};

const BUYER: &str = "111122223333";

fn tool() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("scripts/pyjwt_tool.py")
}

/// Runs the PyJWT tool; its JSON answer, or its error line.
fn pyjwt(args: &[&str]) -> Result<Value, String> {
    let out = Command::new(python())
        .arg(tool())
        .args(args)
        .output()
        .expect("running the PyJWT tool");
    if out.status.success() {
        Ok(serde_json::from_slice(&out.stdout).expect("the tool prints JSON"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
    }
}

#[test]
fn tokens_signed_by_pyjwt_with_an_exported_key_verify_in_sealbox() {
    let dir = tempfile::tempdir().unwrap();
    for alg in [KeyAlg::EdDSA, KeyAlg::ES256] {
        let ks = Keyset::generate("seller", alg).unwrap();
        let key = ks.current().unwrap();
        let pem = dir.path().join(format!("{}.pem", alg.as_str()));
        std::fs::write(&pem, key.private_pkcs8_pem().unwrap()).unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let claims = json!({
            "iss": "seller", "sub": BUYER, "aud": "product", "iat": now, "nbf": now,
            "exp": now + 600, "jti": format!("py-{}", alg.as_str()), "scope": "invoke",
            "grant": "g-py"
        });
        let signed = pyjwt(&[
            "sign",
            "--private-pem",
            pem.to_str().unwrap(),
            "--alg",
            alg.as_str(),
            // `=`: a random kid may start with `-`, which argparse would take for an option.
            &format!("--kid={}", key.kid),
            "--claims",
            &claims.to_string(),
        ])
        .unwrap();
        let token = signed["token"].as_str().unwrap();
        let verifier =
            Verifier::from_keyset(VerifierConfig::new("seller", "product"), &ks).unwrap();
        let got = verifier.verify(token, BUYER).unwrap();
        assert_eq!(
            (got.jti.as_str(), got.exp),
            (claims["jti"].as_str().unwrap(), now + 600)
        );

        // The same PyJWT token under another key's kid does not verify.
        let other = &ks.keys[1];
        let forged = pyjwt(&[
            "sign",
            "--private-pem",
            pem.to_str().unwrap(),
            "--alg",
            alg.as_str(),
            &format!("--kid={}", other.kid),
            "--claims",
            &claims.to_string(),
        ])
        .unwrap();
        let r = verifier
            .verify(forged["token"].as_str().unwrap(), BUYER)
            .unwrap_err();
        assert_eq!(r.reason, Reason::TokenBadSignature, "{alg:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_from_the_token_service_verify_in_pyjwt_against_the_published_keys() {
    let e = Embedded::start(|_| {}).await;
    let data = e.dir.path();
    let secret = data.join("buyer.secret");
    grant(data, BUYER, &e.opts.product, None, Some(&secret))
        .await
        .unwrap();
    let creds = BuyerCredentials {
        secret_file: Some(secret),
        ..Default::default()
    };
    let token = buyer_token(
        data,
        BUYER,
        &creds,
        Some(Duration::from_secs(600)),
        false,
        false,
    )
    .await
    .unwrap();
    let jwks = reqwest::get(format!("{}/.well-known/jwks.json", e.stack.token_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let jwks_file = data.join("jwks.json");
    std::fs::write(&jwks_file, jwks).unwrap();
    let issuer = Keyset::load(&e.stack.paths.keyset).unwrap().issuer;
    let verify = |token: &str, audience: &str| {
        pyjwt(&[
            "verify",
            "--jwks",
            jwks_file.to_str().unwrap(),
            "--token",
            token,
            "--audience",
            audience,
            "--issuer",
            &issuer,
        ])
    };
    let claims = verify(&token, &e.opts.product).unwrap()["claims"].clone();
    assert_eq!(claims["sub"], BUYER);
    assert_eq!(claims["aud"], e.opts.product.as_str());
    assert_eq!(claims["scope"], "invoke");
    let granted = SqliteSubscriptions::open(&e.stack.paths.subscriptions)
        .unwrap()
        .credentials(BUYER, &e.opts.product)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        claims["grant"], granted.subscription.grant_id,
        "the token names its subscription by the opaque grant id"
    );
    assert!(
        verify(&token, "another-product").is_err(),
        "PyJWT checks aud"
    );
    // A signature character well inside (the last one carries padding bits).
    let mut chars: Vec<char> = token.chars().collect();
    let i = chars.len() - 10;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    assert!(verify(&tampered, &e.opts.product).is_err());
    e.stack.stop().await;
}
