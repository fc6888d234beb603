//! Making the DynamoDB tables sealbox keeps state in, for development stacks and tests (the
//! CloudFormation templates declare the same tables for deployments): on demand, string keys.

use std::time::Duration;

use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType, TableStatus,
};
use aws_smithy_types::error::display::DisplayErrorContext;

/// How long a new table may take to become active.
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(300);

/// Creates `table` (on demand; partition key `hash`, sort key `range` if given, both strings)
/// unless it exists, and waits until it serves. A table of that name already there is fine if
/// its key schema is this one. The error is a sentence naming the table.
pub async fn ensure_table(
    client: &Client,
    table: &str,
    hash: &str,
    range: Option<&str>,
) -> Result<(), String> {
    let keys: Vec<(&str, KeyType)> = std::iter::once((hash, KeyType::Hash))
        .chain(range.map(|r| (r, KeyType::Range)))
        .collect();
    let mut create = client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest);
    for (name, key_type) in &keys {
        let built = |e: aws_sdk_dynamodb::error::BuildError| {
            format!("DynamoDB table {table}: CreateTable request: {e}")
        };
        create = create
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(*name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()
                    .map_err(built)?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(*name)
                    .key_type(key_type.clone())
                    .build()
                    .map_err(built)?,
            );
    }
    match create.send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|e| e.is_resource_in_use_exception()) => {}
        Err(e) => {
            return Err(format!(
                "DynamoDB table {table}: CreateTable failed: {}",
                DisplayErrorContext(e)
            ));
        }
    }
    let deadline = tokio::time::Instant::now() + TABLE_ACTIVE_TIMEOUT;
    loop {
        let described = client
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "DynamoDB table {table}: DescribeTable failed: {}",
                    DisplayErrorContext(e)
                )
            })?;
        let description = described
            .table()
            .ok_or_else(|| format!("DynamoDB table {table}: DescribeTable returned no table"))?;
        let schema = description.key_schema();
        let matches = schema.len() == keys.len()
            && keys.iter().all(|(name, key_type)| {
                schema
                    .iter()
                    .any(|k| k.attribute_name() == *name && k.key_type() == key_type)
            });
        if !matches {
            return Err(format!(
                "DynamoDB table {table} exists with the key schema {schema:?}; sealbox needs \
                 partition key {hash}{}",
                range
                    .map(|r| format!(" and sort key {r}"))
                    .unwrap_or_default()
            ));
        }
        match description.table_status() {
            // An updating table serves reads and writes.
            Some(TableStatus::Active | TableStatus::Updating) => return Ok(()),
            None | Some(TableStatus::Creating) => {}
            Some(other) => {
                return Err(format!(
                    "DynamoDB table {table} is {}, not ACTIVE",
                    other.as_str()
                ));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "DynamoDB table {table} is still being created after {TABLE_ACTIVE_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
