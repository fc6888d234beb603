//! The claim store conformance suite on moto: claims as S3 objects (what stacks use today) and
//! in a DynamoDB table (a conditional PutItem per claim).

use std::sync::Arc;
use std::time::Duration;

use sealbox_aws::dynamodb_claims::{self, DynamoDbClaims};
use sealbox_aws::s3::S3ObjectStore;
use sealbox_aws::sdk::Clients;
use sealbox_core::conformance::claim_store;
use sealbox_core::object_claims::ObjectClaims;
use sealbox_tests::moto::Moto;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_in_s3_and_in_dynamodb_pass_the_claim_store_conformance_suite() {
    let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
    let config = moto.sdk_config().await;

    let s3 = Clients::new(&config).s3;
    s3.create_bucket().bucket("claims").send().await.unwrap();
    let objects = ObjectClaims::new(Arc::new(S3ObjectStore::new(s3)), "claims");
    claim_store::run(Arc::new(objects)).await;

    let dynamodb = aws_sdk_dynamodb::Client::new(&config);
    dynamodb_claims::create_table(&dynamodb, "sealbox-claims")
        .await
        .unwrap();
    let table = DynamoDbClaims::new(
        dynamodb.clone(),
        "sealbox-claims",
        Duration::from_secs(90 * 86_400),
    );
    claim_store::run(Arc::new(table.clone())).await;
    // Twice in one table: each run claims ids of its own.
    claim_store::run(Arc::new(table)).await;

    // Each item carries its expiry for the table's TTL: the claim's time plus the retention.
    let items = dynamodb
        .scan()
        .table_name("sealbox-claims")
        .send()
        .await
        .unwrap();
    let item = &items.items()[0];
    let claimed: serde_json::Value = serde_json::from_str(item["claim"].as_s().unwrap()).unwrap();
    let at = time::OffsetDateTime::parse(
        claimed["claimed_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(
        item[dynamodb_claims::EXPIRES_AT].as_n().unwrap(),
        &(at.unix_timestamp() + 90 * 86_400).to_string()
    );
}
