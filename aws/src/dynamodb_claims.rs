//! Claims in a DynamoDB table: one item per (buyer, request_id), created with a conditional
//! `PutItem` (`attribute_not_exists`), so a claim costs one write request unit ($0.625 per
//! million on demand) instead of an S3 PUT ($5 per million). Items expire by the table's TTL on
//! `expires_at`, after the outcome's retention.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use sealbox_core::contract::ClaimDocument;
use sealbox_core::error::{Error, Result};
use sealbox_core::object_claims::{MovedClaims, ObjectClaims};
use sealbox_core::ports::{Claim, ClaimStore, ObjectStore};

use crate::config::{Settings, Var};
use crate::sdk::{Clients, storage_error};

const BUYER: &str = "buyer";
const REQUEST_ID: &str = "request_id";
const OWNER: &str = "owner";
const DOCUMENT: &str = "claim";
/// The item's expiry (epoch seconds), the table's TTL attribute.
pub const EXPIRES_AT: &str = "expires_at";

/// Claims kept in the DynamoDB table `table`.
#[derive(Debug, Clone)]
pub struct DynamoDbClaims {
    client: Client,
    table: String,
    retention: Duration,
}

impl DynamoDbClaims {
    /// Claims in `table`, each kept `retention` after it was made (the outbox's retention of
    /// outcomes: a request id may be answered again once its claim is gone).
    pub fn new(client: Client, table: impl Into<String>, retention: Duration) -> DynamoDbClaims {
        DynamoDbClaims {
            client,
            table: table.into(),
            retention,
        }
    }

    fn parse(&self, item: &HashMap<String, AttributeValue>) -> Result<ClaimDocument> {
        let body = item
            .get(DOCUMENT)
            .and_then(|v| v.as_s().ok())
            .ok_or_else(|| {
                Error::Task(format!("a claim in {} without its document", self.table))
            })?;
        serde_json::from_str(body)
            .map_err(|e| Error::json(format!("reading a claim in {}", self.table), e))
    }
}

fn key(buyer: &str, request_id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (BUYER.to_owned(), AttributeValue::S(buyer.to_owned())),
        (
            REQUEST_ID.to_owned(),
            AttributeValue::S(request_id.to_owned()),
        ),
    ])
}

#[async_trait]
impl ClaimStore for DynamoDbClaims {
    async fn claim(&self, claim: &ClaimDocument) -> Result<Claim> {
        let body = serde_json::to_string(claim).map_err(|e| Error::json("encoding a claim", e))?;
        let expires = claim.claimed_at.unix_timestamp()
            + i64::try_from(self.retention.as_secs()).unwrap_or(i64::MAX / 2);
        let mut item = key(&claim.buyer, &claim.request_id);
        item.insert(OWNER.into(), AttributeValue::S(claim.owner.clone()));
        item.insert(DOCUMENT.into(), AttributeValue::S(body));
        item.insert(EXPIRES_AT.into(), AttributeValue::N(expires.to_string()));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#buyer)")
            .expression_attribute_names("#buyer", BUYER)
            // The claim there comes back with the refusal: no second read.
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        let held = match put {
            Ok(_) => return Ok(Claim::Owned { fresh: true }),
            Err(e) => match e.into_service_error() {
                PutItemError::ConditionalCheckFailedException(refused) => match refused.item() {
                    Some(item) => self.parse(item)?,
                    None => self
                        .read(&claim.buyer, &claim.request_id)
                        .await?
                        .ok_or_else(|| {
                            Error::Task(format!(
                                "the claim of {}/{} vanished after a conflict",
                                claim.buyer, claim.request_id
                            ))
                        })?,
                },
                e => return Err(storage_error(format!("PutItem on {}", self.table), e)),
            },
        };
        if held.owner == claim.owner {
            Ok(Claim::Owned { fresh: false })
        } else {
            Ok(Claim::OwnedBy(Box::new(held)))
        }
    }

    async fn read(&self, buyer: &str, request_id: &str) -> Result<Option<ClaimDocument>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(buyer, request_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| storage_error(format!("GetItem on {}", self.table), e))?;
        out.item().map(|item| self.parse(item)).transpose()
    }
}

/// Creates the claims table (on demand; key `buyer` + `request_id`) if it is not there, and
/// waits until it is active. The buyer stack declares the same table with encryption, point-in-
/// time recovery, deletion protection and TTL; this is for development stacks and tests.
pub async fn create_table(client: &Client, table: &str) -> Result<()> {
    crate::dynamodb_table::ensure_table(client, table, BUYER, Some(REQUEST_ID))
        .await
        .map_err(|e| Error::storage(format!("making the claims table {table}"), e))
}

/// The claim store `settings` name: with `SEALBOX_CLAIMS_TABLE`, claims in that table, kept
/// `SEALBOX_CLAIM_RETENTION`, the claims earlier versions left in the outbox of `store` still
/// deciding their requests unless `SEALBOX_OUTBOX_CLAIMS=ignore`; without it, `None` (claims
/// stay objects in the outbox).
pub fn from_settings(
    clients: &Clients,
    settings: &Settings,
    store: Arc<dyn ObjectStore>,
) -> Option<Arc<dyn ClaimStore>> {
    let table = settings.optional(Var::ClaimsTable)?;
    let retention = settings
        .optional(Var::ClaimRetention)
        .and_then(|r| humantime::parse_duration(r).ok())
        .unwrap_or(DEFAULT_RETENTION);
    let table: Arc<dyn ClaimStore> = Arc::new(DynamoDbClaims::new(
        clients.dynamodb.clone(),
        table,
        retention,
    ));
    Some(if settings.optional(Var::OutboxClaims) == Some("ignore") {
        table
    } else {
        Arc::new(MovedClaims::new(
            ObjectClaims::new(store, settings.get(Var::OutboxBucket)),
            table,
        ))
    })
}

/// A claim's life when the setting says nothing usable (the outbox's default retention).
const DEFAULT_RETENTION: Duration = Duration::from_secs(90 * 86_400);
