//! The claim store conformance suite on moto (one server shared by the tests of the process),
//! each check a test: claims as S3 objects (what stacks made before the table use) and in a
//! DynamoDB table (a conditional PutItem per claim).

use std::sync::Arc;
use std::time::Duration;

use sealbox_aws::dynamodb_claims::{self, DynamoDbClaims};
use sealbox_aws::s3::S3ObjectStore;
use sealbox_aws::sdk::Clients;
use sealbox_core::conformance::Subject;
use sealbox_core::conformance::claim_store;
use sealbox_core::object_claims::ObjectClaims;
use sealbox_tests::moto::{self, MotoLease};

/// A name no other test of this process uses.
fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Claims as objects in a fresh bucket on the shared moto server.
async fn s3_claims() -> Subject<dyn sealbox_core::ports::ClaimStore> {
    let moto = tokio::task::spawn_blocking(moto::shared).await.unwrap();
    let s3 = Clients::new(&moto.sdk_config().await).s3;
    let bucket = unique("claims");
    s3.create_bucket().bucket(&bucket).send().await.unwrap();
    let claims = ObjectClaims::new(Arc::new(S3ObjectStore::new(s3)), bucket);
    Subject::new(Arc::new(claims) as _).keeping(moto)
}

/// Claims in a fresh table on the shared moto server, kept 90 days.
async fn dynamodb_claims(moto: &MotoLease) -> (aws_sdk_dynamodb::Client, String, DynamoDbClaims) {
    let dynamodb = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
    let table = unique("sealbox-claims");
    dynamodb_claims::create_table(&dynamodb, &table)
        .await
        .unwrap();
    let claims = DynamoDbClaims::new(dynamodb.clone(), &table, Duration::from_secs(90 * 86_400));
    (dynamodb, table, claims)
}

mod claims_in_s3 {
    sealbox_core::claim_store_conformance_tests!(super::s3_claims().await);
}

mod claims_in_dynamodb {
    use super::*;

    sealbox_core::claim_store_conformance_tests!({
        let moto = tokio::task::spawn_blocking(moto::shared).await.unwrap();
        let (_, _, claims) = dynamodb_claims(&moto).await;
        Subject::new(Arc::new(claims) as _).keeping(moto)
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_suite_runs_twice_in_one_table_whose_items_expire_after_the_retention() {
    let moto = tokio::task::spawn_blocking(moto::shared).await.unwrap();
    let (dynamodb, table, claims) = dynamodb_claims(&moto).await;
    claim_store::run(Arc::new(claims.clone())).await;
    // Twice in one table: each run claims ids of its own.
    claim_store::run(Arc::new(claims)).await;

    // Each item carries its expiry for the table's TTL: the claim's time plus the retention.
    let items = dynamodb.scan().table_name(&table).send().await.unwrap();
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
