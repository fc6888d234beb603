//! The seller's Lambda binaries (built for the host) under the Lambda Runtime API emulator, on
//! moto: `token-service` answers function URL events (payload 2.0) for `POST /token` and the
//! published keys; `rotate-keys`, invoked twice in a row, rotates once and publishes.

use std::time::Duration;

use base64::Engine as _;
use sealbox_authz::jwks::PublishedKeys;
use sealbox_authz::{Verifier, VerifierConfig};
use sealbox_tests::aws_stack::{AwsStack, BUYER, SellerSide};
use serde_json::{Value, json};

/// A function URL event (payload format 2.0) from `source_ip`.
fn url_event(
    method: &str,
    path: &str,
    headers: Value,
    body: Option<&str>,
    source_ip: &str,
) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abcdefghij",
            "domainName": "abcdefghij.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abcdefghij",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": "sealbox-tests"
            },
            "requestId": "req-1",
            "routeKey": "$default",
            "stage": "$default",
            "time": "26/Nov/2026:17:00:00 +0000",
            "timeEpoch": 1_795_712_400_000_u64
        },
        "body": body,
        "isBase64Encoded": false
    })
}

/// The status and JSON body of a function URL response.
fn answer(response: &Value) -> (u64, Value) {
    let status = response["statusCode"].as_u64().unwrap();
    let text = response["body"].as_str().unwrap_or_default();
    let bytes = if response["isBase64Encoded"].as_bool() == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap()
    } else {
        text.as_bytes().to_vec()
    };
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_service_function_issues_tokens_and_serves_the_published_keys() {
    let stack = AwsStack::start_with("token-fn", &[], SellerSide::Aws);
    let secret_file = stack.dir.path().join("buyer.secret");
    stack.sealbox_aws(&[
        "seller",
        "grant",
        BUYER,
        "--secret-out",
        secret_file.to_str().unwrap(),
    ]);
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let basic = |secret: &str| {
        let pair = format!("{BUYER}:{}", secret.trim());
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    let f = stack.lambda("token-service", &[]).await;

    let ok = f
        .invoke(url_event(
            "POST",
            "/token",
            json!({"authorization": basic(&secret), "content-type": "application/json"}),
            Some(r#"{"lifetime_seconds": 600}"#),
            "203.0.113.9",
        ))
        .await
        .unwrap();
    let (status, body) = answer(&ok);
    assert_eq!(status, 200, "{ok}");
    assert_eq!(body["expires_in"], 600);
    let token = body["token"].as_str().unwrap();
    // Signed in KMS, verified against the document the seller published to S3.
    let verifier = Verifier::new(VerifierConfig::new("sealbox-seller", "iris-classifier"));
    verifier
        .load(PublishedKeys::parse(stack.published_keys().as_bytes()).unwrap())
        .unwrap();
    let claims = verifier.verify(token, BUYER).unwrap();
    assert_eq!(claims.sub, BUYER);

    let wrong = f
        .invoke(url_event(
            "POST",
            "/token",
            json!({"authorization": basic("sbx_wrong")}),
            None,
            "203.0.113.9",
        ))
        .await
        .unwrap();
    let (status, body) = answer(&wrong);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );

    let jwks = f
        .invoke(url_event(
            "GET",
            "/.well-known/jwks.json",
            json!({}),
            None,
            "198.51.100.4",
        ))
        .await
        .unwrap();
    let (status, doc) = answer(&jwks);
    assert_eq!(status, 200, "{jwks}");
    assert_eq!(doc["keys"].as_array().unwrap().len(), 2, "{doc}");
    let cache = jwks["headers"]["cache-control"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(cache, "public, max-age=60", "{jwks}");
    assert!(!doc.to_string().contains(BUYER), "no buyer id is published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rotate_keys_function_invoked_twice_in_a_row_rotates_once() {
    let stack = AwsStack::start_with("rotate-fn", &[], SellerSide::Aws);
    let f = stack
        .lambda("rotate-keys", &[("SEALBOX_ROTATE_EVERY", "1s")])
        .await;
    // The first key must have signed for the whole period.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let first = f.invoke(json!({"source": "aws.scheduler"})).await.unwrap();
    let second = f.invoke(json!({"source": "aws.scheduler"})).await.unwrap();
    assert_eq!(first["rotated"], true, "{first}");
    assert_eq!(second["rotated"], false, "{second}");
    assert_eq!(first["current"], second["current"]);

    let doc: Value = serde_json::from_str(&stack.published_keys()).unwrap();
    let kids: Vec<&str> = doc["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(
        kids.len(),
        3,
        "previous, current and next are published: {doc}"
    );
    assert!(kids.contains(&first["current"].as_str().unwrap()));
    let logs = f.logs().join("\n");
    assert!(logs.contains("\"KeysRotated\""), "EMF metrics: {logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_service_function_issues_a_token_to_a_proven_aws_account_granted_without_a_secret()
 {
    let stack = AwsStack::start_with("token-iam", &[], SellerSide::Aws);
    let granted = stack.sealbox_aws(&["seller", "grant", BUYER]);
    assert!(granted.trim().is_empty(), "no secret is printed: {granted}");
    // The function trusts the STS its environment names: moto's.
    let f = stack.lambda("token-service", &[]).await;
    let sts = format!("{}/", stack.moto.endpoint);
    let ask = |account: &str| {
        let proof = sealbox_aws::identity::sign_proof(
            stack.assume_role(account),
            "us-east-1",
            &sts,
            "sealbox-seller",
            std::time::SystemTime::now(),
        )
        .unwrap();
        url_event(
            "POST",
            "/token",
            json!({"content-type": "application/json"}),
            Some(&json!({"aws_sts": proof}).to_string()),
            "203.0.113.9",
        )
    };
    let (status, body) = answer(&f.invoke(ask(BUYER)).await.unwrap());
    assert_eq!(status, 200, "{body}");
    let verifier = Verifier::new(VerifierConfig::new("sealbox-seller", "iris-classifier"));
    verifier
        .load(PublishedKeys::parse(stack.published_keys().as_bytes()).unwrap())
        .unwrap();
    let claims = verifier
        .verify(body["token"].as_str().unwrap(), BUYER)
        .unwrap();
    assert_eq!(claims.sub, BUYER);

    let (status, body) = answer(&f.invoke(ask("444455556666")).await.unwrap());
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("not_subscribed")),
        "{body}"
    );
    assert!(body.get("token").is_none(), "{body}");
}
