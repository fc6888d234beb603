//! `DynamoDbSubscriptions` against moto: the subscription registry's conformance suite, then
//! what only the DynamoDB adapter has to say (items written by something else, the table).
// Test support: a panic is how a test reports a broken precondition.

use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType,
};
use sealbox_authz::AuthzError;
use sealbox_authz::subscriptions::{SubscriptionRegistry, SubscriptionStatus};
use sealbox_aws::seller::dynamodb_subscriptions::{DynamoDbSubscriptions, create_table};
use sealbox_tests::moto::Moto;

/// A moto server and a DynamoDB client pointed at it.
struct Dynamo {
    client: aws_sdk_dynamodb::Client,
    // Last: dropping it stops the server.
    _moto: Moto,
}

impl Dynamo {
    async fn start() -> Dynamo {
        let moto = tokio::task::spawn_blocking(Moto::start).await.unwrap();
        let client = aws_sdk_dynamodb::Client::new(&moto.sdk_config().await);
        Dynamo {
            client,
            _moto: moto,
        }
    }

    /// A fresh, empty registry in a table of its own.
    async fn registry(&self) -> DynamoDbSubscriptions {
        let table = unique("subscriptions");
        create_table(&self.client, &table).await.unwrap();
        DynamoDbSubscriptions::new(self.client.clone(), table)
    }
}

/// A table name no other test of this process uses.
fn unique(prefix: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_subscriptions_pass_the_conformance_suite() {
    let dynamo = Dynamo::start().await;
    let registry = dynamo.registry().await;
    sealbox_authz::conformance::run_all(&registry).await;
}

#[tokio::test]
async fn a_renewal_after_a_revoke_keeps_the_grant_id_and_an_item_without_grant_id_is_a_registry_error()
 {
    let dynamo = Dynamo::start().await;
    let registry = dynamo.registry().await;

    let first = registry.grant("b1", "p", None, "h1").await.unwrap();
    let revoked = registry.revoke("b1", "p").await.unwrap();
    let again = registry.grant("b1", "p", None, "h2").await.unwrap();
    assert_eq!(again.grant_id, first.grant_id);
    assert_eq!(again.status, SubscriptionStatus::Active);
    assert_eq!(again.revoked_at, revoked.revoked_at);

    // An item some other writer left without its grant id.
    let s = |v: &str| AttributeValue::S(v.to_owned());
    let now = AttributeValue::N(
        time::OffsetDateTime::now_utc()
            .unix_timestamp_nanos()
            .to_string(),
    );
    dynamo
        .client
        .put_item()
        .table_name(registry.table())
        .item("product", s("p"))
        .item("buyer", s("b2"))
        .item("status", s("active"))
        .item("secret_hash", s("h"))
        .item("created_at", now.clone())
        .item("updated_at", now)
        .send()
        .await
        .unwrap();
    let named = |what: &str, result: Result<String, AuthzError>| match result {
        Err(AuthzError::Registry(m)) => assert!(
            m.contains("grant_id") && m.contains("\"b2\"") && m.contains(registry.table()),
            "{what}: {m}"
        ),
        other => panic!("{what}: {other:?}, not a registry error naming grant_id"),
    };
    named(
        "credentials",
        registry
            .credentials("b2", "p")
            .await
            .map(|c| format!("{c:?}")),
    );
    named("list", registry.list().await.map(|l| format!("{l:?}")));
    named(
        "renewal",
        registry
            .grant("b2", "p", None, "h2")
            .await
            .map(|s| format!("{s:?}")),
    );
    named(
        "revoke",
        registry.revoke("b2", "p").await.map(|s| format!("{s:?}")),
    );
    // The well-formed item is untouched by its neighbour.
    let creds = registry.credentials("b1", "p").await.unwrap().unwrap();
    assert_eq!(creds.subscription.grant_id, first.grant_id);
}

#[tokio::test]
async fn create_table_is_idempotent_and_refuses_a_table_keyed_otherwise() {
    let dynamo = Dynamo::start().await;
    let registry = dynamo.registry().await;
    registry.grant("b1", "p", None, "h").await.unwrap();
    create_table(&dynamo.client, registry.table())
        .await
        .unwrap();
    assert_eq!(
        registry.list().await.unwrap().len(),
        1,
        "the table was kept"
    );

    let other = unique("keyed-by-buyer");
    dynamo
        .client
        .create_table()
        .table_name(&other)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("buyer")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("buyer")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    match create_table(&dynamo.client, &other).await {
        Err(AuthzError::Registry(m)) => assert!(m.contains(&other) && m.contains("key"), "{m}"),
        got => panic!("{got:?}, not a registry error about the key schema"),
    }
}
