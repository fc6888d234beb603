//! The `marketplace-events` Lambda binary under the Runtime API emulator, with the seller's
//! KMS keys, DynamoDB registry and published keys on moto, fed events shaped like AWS's
//! published examples (AWS Marketplace Seller Guide, "Amazon EventBridge events", "Events for
//! agreements": `Purchase Agreement Created - Manufacturer` and `... Ended - Manufacturer`,
//! kept in `sealbox_authz::conformance::{created_event, ended_event}`).
//!
//! moto has no Marketplace Agreement Service, so `DescribeAgreement` is answered by a stand-in
//! here speaking the service's protocol (rpcv2Cbor, encoded with the SDK's own CBOR crate); the
//! function reaches it through `AWS_ENDPOINT_URL_MARKETPLACE_AGREEMENT`, as the SDK documents.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use sealbox_authz::conformance::{created_event, ended_event};
use sealbox_tests::aws_stack::{AwsStack, BUYER, SellerSide};
use sealbox_tests::lambda_emulator::{InvokeError, LambdaEmulator};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Our product's id on AWS Marketplace, mapped to the stack's product.
const OURS: &str = "prod-ours1234567";

/// The agreements the stand-in knows: id → product id; `agmt-flaky` answers 500.
struct AgreementService {
    url: String,
    asked: Arc<Mutex<Vec<String>>>,
}

async fn start_agreement_service() -> AgreementService {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let seen = asked.clone();
    let app = axum::Router::new().route(
        "/service/AWSMPCommerceService_v20200301/operation/DescribeAgreement",
        axum::routing::post(move |body: Bytes| {
            let seen = seen.clone();
            async move {
                let id = agreement_id(&body);
                seen.lock().unwrap().push(id.clone());
                describe(&id)
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    AgreementService { url, asked }
}

/// The `agreementId` of a DescribeAgreement request body.
fn agreement_id(body: &[u8]) -> String {
    let mut d = aws_smithy_cbor::Decoder::new(body);
    let entries = d.map().unwrap();
    let mut id = String::new();
    let mut read = 0;
    loop {
        if entries.is_some_and(|n| read == n) {
            break;
        }
        if entries.is_none() && d.datatype().unwrap() == aws_smithy_cbor::data::Type::Break {
            break;
        }
        let key = d.str().unwrap().into_owned();
        if key == "agreementId" {
            id = d.str().unwrap().into_owned();
        } else {
            d.skip().unwrap();
        }
        read += 1;
    }
    id
}

fn describe(id: &str) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", "application/cbor".parse().unwrap());
    headers.insert("smithy-protocol", "rpc-v2-cbor".parse().unwrap());
    let mut e = aws_smithy_cbor::Encoder::new(Vec::new());
    let status = match id {
        "agmt-flaky" => {
            e.map(2)
                .str("__type")
                .str("InternalServerException")
                .str("message")
                .str("try again");
            StatusCode::INTERNAL_SERVER_ERROR
        }
        "agmt-unknown" => {
            e.map(2)
                .str("__type")
                .str("ResourceNotFoundException")
                .str("message")
                .str("no such agreement");
            StatusCode::BAD_REQUEST
        }
        _ => {
            let product = if id.starts_with("agmt-other") {
                "prod-notours0000"
            } else {
                OURS
            };
            e.map(4)
                .str("agreementId")
                .str(id)
                .str("status")
                .str("ACTIVE")
                .str("endTime")
                .timestamp(&aws_smithy_types::DateTime::from_secs(4_102_444_800))
                .str("proposalSummary")
                .map(2)
                .str("offerId")
                .str("offer-1234567890123")
                .str("resources")
                .array(1)
                .map(2)
                .str("id")
                .str(product)
                .str("type")
                .str("MachineLearningProduct");
            StatusCode::OK
        }
    };
    (status, headers, e.into_writer())
}

fn at(offset: Duration) -> String {
    (OffsetDateTime::now_utc() + offset)
        .format(&Rfc3339)
        .unwrap()
}

fn outcome(v: &Value) -> &str {
    v["outcome"].as_str().unwrap_or_default()
}

fn subscription(stack: &AwsStack, buyer: &str) -> Option<Value> {
    stack
        .sealbox_aws(&["seller", "subscriptions", "--json"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|s| s["buyer"] == buyer)
}

/// A stack with the seller on AWS, the Agreement Service's stand-in, and the function under the
/// emulator, mapping [`OURS`] to the stack's product.
async fn start(name: &str) -> (AwsStack, AgreementService, LambdaEmulator) {
    let stack = AwsStack::start_with(name, &[], SellerSide::Aws);
    let service = start_agreement_service().await;
    let products = format!("{OURS}={}", sealbox_aws::config::DEFAULT_PRODUCT);
    let f = stack
        .lambda(
            "marketplace-events",
            &[
                ("SEALBOX_MARKETPLACE_PRODUCTS", &products),
                ("AWS_ENDPOINT_URL_MARKETPLACE_AGREEMENT", &service.url),
            ],
        )
        .await;
    (stack, service, f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_then_ended_then_a_late_duplicate_created_leaves_the_buyer_revoked_and_its_tokens_refused()
 {
    let (stack, service, f) = start("mkt").await;
    let daemon = stack.up(&["--jwks-refresh", "1s"]);
    let inbox = stack.get("SEALBOX_INBOX_BUCKET").to_owned();
    stack.put(&inbox, &[stack.request("while-subscribed")]);
    assert_eq!(stack.outcome_of("while-subscribed"), "results");

    // The buyer of the stack was granted by hand when it started; these events are newer.
    let created = created_event(
        &at(Duration::from_secs(1)),
        BUYER,
        "agmt-1",
        "2100-01-01T00:00:00Z",
    );
    let ended = ended_event(&at(Duration::from_secs(2)), BUYER, "agmt-1", "CANCELLED");

    let first = f.invoke(created.clone()).await.unwrap();
    eprintln!("created: {first}");
    assert_eq!(outcome(&first), "granted", "{first}");
    assert_eq!(
        first["product"],
        sealbox_aws::config::DEFAULT_PRODUCT,
        "{first}"
    );
    let second = f.invoke(ended.clone()).await.unwrap();
    eprintln!("ended: {second}");
    assert_eq!(outcome(&second), "revoked", "{second}");
    let late = f.invoke(created).await.unwrap();
    eprintln!("late duplicate created: {late}");
    assert_eq!(outcome(&late), "skipped", "{late}");
    let again = f.invoke(ended).await.unwrap();
    assert_eq!(outcome(&again), "skipped", "a duplicate end: {again}");

    let sub = subscription(&stack, BUYER).unwrap();
    eprintln!("subscription: {sub}");
    assert_eq!(sub["status"], "revoked", "{sub}");
    assert_eq!(sub["agreements"][0]["id"], "agmt-1", "{sub}");
    assert_eq!(sub["agreements"][0]["step"], "ended", "{sub}");
    assert_eq!(
        service.asked.lock().unwrap().as_slice(),
        ["agmt-1", "agmt-1", "agmt-1", "agmt-1"],
        "each event named no product, so each asked DescribeAgreement"
    );

    // The function published the deny list: after one refresh the buyer's token is refused.
    let doc: Value = serde_json::from_str(&stack.published_keys()).unwrap();
    assert_eq!(doc["denied_grants"].as_array().unwrap().len(), 1, "{doc}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stack.put(&inbox, &[stack.request("after-the-end")]);
    assert_eq!(stack.outcome_of("after-the-end"), "rejected");
    let rejection = stack.get_object(
        stack.get("SEALBOX_OUTBOX_BUCKET"),
        &format!("{BUYER}/rejected/after-the-end.json"),
    );
    eprintln!("rejection: {rejection}");
    assert!(rejection.contains("token_buyer_revoked"), "{rejection}");
    // And no new token is issued.
    let refused = stack
        .sealbox()
        .args(["seller", "token", "--buyer", BUYER, "--backend", "aws"])
        .output()
        .unwrap();
    assert!(!refused.status.success());
    drop(daemon);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_products_malformed_events_and_out_of_order_ends_grant_nothing_and_an_outage_is_retried()
 {
    let (stack, service, f) = start("mkt-edge").await;

    // Another seller's product: answered, nothing granted.
    let other = "210000000001";
    let got = f
        .invoke(created_event(
            &at(Duration::ZERO),
            other,
            "agmt-other-1",
            "2100-01-01T00:00:00Z",
        ))
        .await
        .unwrap();
    assert_eq!(outcome(&got), "ignored", "{got}");
    assert!(
        got["detail"]
            .as_str()
            .unwrap()
            .contains("none of the mapped"),
        "{got}"
    );
    assert_eq!(subscription(&stack, other), None);

    // An agreement the service does not know: answered with the service's reason.
    let got = f
        .invoke(created_event(
            &at(Duration::ZERO),
            other,
            "agmt-unknown",
            "2100-01-01T00:00:00Z",
        ))
        .await
        .unwrap();
    assert_eq!(outcome(&got), "ignored", "{got}");
    assert!(
        got["detail"]
            .as_str()
            .unwrap()
            .contains("ResourceNotFoundException"),
        "{got}"
    );

    // Malformed: answered, not retried.
    let mut bad = created_event(
        &at(Duration::ZERO),
        "12345",
        "agmt-2",
        "2100-01-01T00:00:00Z",
    );
    bad["detail"]["acceptor"]["accountId"] = json!("12345");
    let got = f.invoke(bad).await.unwrap();
    assert_eq!(outcome(&got), "ignored", "{got}");
    assert!(
        got["detail"].as_str().unwrap().contains("12-digit"),
        "{got}"
    );

    // The end arrives before the creation: the buyer never gets in.
    let late_buyer = "210000000002";
    let end = ended_event(
        &at(Duration::from_secs(2)),
        late_buyer,
        "agmt-3",
        "CANCELLED",
    );
    let start = created_event(
        &at(Duration::from_secs(1)),
        late_buyer,
        "agmt-3",
        "2100-01-01T00:00:00Z",
    );
    assert_eq!(outcome(&f.invoke(end).await.unwrap()), "recorded");
    assert_eq!(outcome(&f.invoke(start).await.unwrap()), "skipped");
    assert_eq!(
        subscription(&stack, late_buyer).unwrap()["status"],
        "revoked"
    );

    // The Agreement Service failing is an outage: the invocation fails, so Lambda retries.
    match f
        .invoke(created_event(
            &at(Duration::ZERO),
            other,
            "agmt-flaky",
            "2100-01-01T00:00:00Z",
        ))
        .await
    {
        Err(InvokeError::Function { error_message, .. }) => {
            assert!(
                error_message.contains("DescribeAgreement"),
                "{error_message}"
            );
        }
        other => panic!("an outage must fail the invocation: {other:?}"),
    }
    assert_eq!(subscription(&stack, other), None);
    let asked = service.asked.lock().unwrap().clone();
    for id in ["agmt-other-1", "agmt-unknown", "agmt-3", "agmt-flaky"] {
        assert!(
            asked.iter().any(|a| a == id),
            "DescribeAgreement {id}: {asked:?}"
        );
    }
    assert!(
        !asked.iter().any(|a| a == "agmt-2"),
        "a malformed event asks nothing: {asked:?}"
    );
}
