//! The subscription registry in a DynamoDB table, every change a conditional write, every read
//! strongly consistent, so that the token service reads back what the seller's CLI just wrote.
//!
//! Table layout (see [`create_table`]): on-demand capacity, one item per subscription.
//!
//! | attribute     | type | meaning                                                    |
//! |---------------|------|------------------------------------------------------------|
//! | `product`     | S    | partition key: product id                                  |
//! | `buyer`       | S    | sort key: buyer id                                         |
//! | `grant_id`    | S    | made at the first grant, kept by renewals                  |
//! | `status`      | S    | `active` or `revoked`                                      |
//! | `secret_hash` | S    | PHC string of the buyer's secret                           |
//! | `created_at`  | N    | first grant                                                |
//! | `updated_at`  | N    | last change                                                |
//! | `expires_at`  | N    | end of the subscription; absent when it has none           |
//! | `revoked_at`  | N    | last revoke; absent when never revoked                     |
//! | `agreements`  | S    | the Marketplace agreements' ledger (JSON); absent if none  |
//! | `hand_at`     | N    | the seller's last grant or revoke by hand, if recorded     |
//!
//! Times are unix nanoseconds (19 digits; DynamoDB numbers hold 38), so they round-trip exactly,
//! like the SQLite registry's.
//!
//! A grant is a `PutItem` conditioned on `attribute_not_exists(product)` (the first grant, which
//! makes the grant id); when that condition fails, the subscription exists and the grant is an
//! `UpdateItem` conditioned on `attribute_exists(product)` that keeps `grant_id`, `created_at`
//! and `revoked_at`. Two first grants racing thus end with one subscription, and both callers
//! get its grant id. A revoke is an `UpdateItem` conditioned on `attribute_exists(product)`, so
//! it never creates an item. An agreement event's change ([`SubscriptionRegistry::swap`]) is a
//! `PutItem` conditioned on `attribute_not_exists(product)` for a new subscription, else an
//! `UpdateItem` conditioned on `updated_at` being what was read. An item missing an attribute (or with one of the wrong type) is a
//! registry error that names the item and the attribute.

use std::collections::HashMap;
use std::fmt::Debug;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
use time::OffsetDateTime;

use sealbox_authz::AuthzError;
use sealbox_authz::agreements::{ledger_from_json, ledger_to_json};
use sealbox_authz::subscriptions::{
    Credentials, NO_SECRET, Subscription, SubscriptionRegistry, SubscriptionStatus, new_grant_id,
};

const PRODUCT: &str = "product";
const BUYER: &str = "buyer";
const GRANT_ID: &str = "grant_id";
const STATUS: &str = "status";
const SECRET_HASH: &str = "secret_hash";
const CREATED_AT: &str = "created_at";
const UPDATED_AT: &str = "updated_at";
const EXPIRES_AT: &str = "expires_at";
const REVOKED_AT: &str = "revoked_at";
const AGREEMENTS: &str = "agreements";
const HAND_AT: &str = "hand_at";

/// A grant tries the first insert and the renewal this many times each: the item vanishing
/// between them (deleted by hand) sends it back to the insert.
const GRANT_ATTEMPTS: usize = 3;

type Item = HashMap<String, AttributeValue>;

/// Subscriptions in a DynamoDB table (layout in the module documentation).
#[derive(Debug, Clone)]
pub struct DynamoDbSubscriptions {
    client: Client,
    table: String,
}

impl DynamoDbSubscriptions {
    /// The registry in `table` (made by [`create_table`]), through `client`.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        DynamoDbSubscriptions {
            client,
            table: table.into(),
        }
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    fn sdk_error<E, R>(&self, operation: &str, err: SdkError<E, R>) -> AuthzError
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
        R: Debug,
    {
        sdk_error(&self.table, operation, err)
    }

    /// The first grant: `Some` if it made the item, `None` if the item already exists.
    async fn first_grant(
        &self,
        subscription: &Subscription,
        secret_hash: &str,
    ) -> Result<Option<Subscription>, AuthzError> {
        let mut item = key(&subscription.buyer, &subscription.product);
        item.insert(GRANT_ID.into(), s(&subscription.grant_id));
        item.insert(STATUS.into(), s(subscription.status.as_str()));
        item.insert(SECRET_HASH.into(), s(secret_hash));
        item.insert(CREATED_AT.into(), n(subscription.created_at));
        item.insert(UPDATED_AT.into(), n(subscription.updated_at));
        if let Some(t) = subscription.expires_at {
            item.insert(EXPIRES_AT.into(), n(t));
        }
        if let Some(t) = subscription.revoked_at {
            item.insert(REVOKED_AT.into(), n(t));
        }
        if let Some(t) = subscription.hand_at {
            item.insert(HAND_AT.into(), n(t));
        }
        if !subscription.agreements.is_empty() {
            item.insert(
                AGREEMENTS.into(),
                s(&ledger_to_json(&subscription.agreements)),
            );
        }
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#product)")
            .expression_attribute_names("#product", PRODUCT)
            .send()
            .await;
        match put {
            Ok(_) => Ok(Some(subscription.clone())),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.sdk_error("PutItem (first grant)", e)),
        }
    }

    /// A renewal: `Some` with the item after it, `None` if there is no item to renew.
    async fn renewal(
        &self,
        buyer: &str,
        product: &str,
        until: Option<OffsetDateTime>,
        secret_hash: &str,
        now: OffsetDateTime,
    ) -> Result<Option<Subscription>, AuthzError> {
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(buyer, product)))
            .condition_expression("attribute_exists(#product)")
            .expression_attribute_names("#product", PRODUCT)
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#secret_hash", SECRET_HASH)
            .expression_attribute_names("#updated_at", UPDATED_AT)
            .expression_attribute_names("#expires_at", EXPIRES_AT)
            .expression_attribute_names("#hand_at", HAND_AT)
            .expression_attribute_values(":active", s(SubscriptionStatus::Active.as_str()))
            .expression_attribute_values(":hash", s(secret_hash))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew);
        let set = "SET #status = :active, #secret_hash = :hash, #updated_at = :now, \
                   #hand_at = :now";
        update = match until {
            Some(t) => update
                .update_expression(format!("{set}, #expires_at = :until"))
                .expression_attribute_values(":until", n(t)),
            None => update.update_expression(format!("{set} REMOVE #expires_at")),
        };
        match update.send().await {
            Ok(out) => {
                let item = out.attributes().ok_or_else(|| {
                    self.malformed(buyer, product, "UpdateItem returned no attributes")
                })?;
                Ok(Some(self.parse(item)?.subscription))
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.sdk_error("UpdateItem (renewal)", e)),
        }
    }

    fn malformed(&self, buyer: &str, product: &str, what: &str) -> AuthzError {
        AuthzError::Registry(format!(
            "DynamoDB table {}: item (product {product:?}, buyer {buyer:?}): {what}",
            self.table
        ))
    }

    /// An item as credentials; a missing or mistyped attribute is an error naming both.
    fn parse(&self, item: &Item) -> Result<Credentials, AuthzError> {
        let fields = Fields {
            table: &self.table,
            item,
        };
        let status = match fields.string(STATUS)? {
            "active" => SubscriptionStatus::Active,
            "revoked" => SubscriptionStatus::Revoked,
            other => {
                return Err(fields.bad(STATUS, &format!("is {other:?}, not active or revoked")));
            }
        };
        Ok(Credentials {
            subscription: Subscription {
                buyer: fields.string(BUYER)?.to_owned(),
                product: fields.string(PRODUCT)?.to_owned(),
                grant_id: fields.string(GRANT_ID)?.to_owned(),
                status,
                expires_at: fields.optional_time(EXPIRES_AT)?,
                revoked_at: fields.optional_time(REVOKED_AT)?,
                created_at: fields.time(CREATED_AT)?,
                updated_at: fields.time(UPDATED_AT)?,
                agreements: match item.get(AGREEMENTS) {
                    None => Vec::new(),
                    Some(AttributeValue::S(json)) => {
                        ledger_from_json(json).map_err(|e| fields.bad(AGREEMENTS, &e))?
                    }
                    Some(_) => return Err(fields.bad(AGREEMENTS, "is not a string (S)")),
                },
                hand_at: fields.optional_time(HAND_AT)?,
            },
            secret_hash: fields.string(SECRET_HASH)?.to_owned(),
        })
    }
}

#[async_trait]
impl SubscriptionRegistry for DynamoDbSubscriptions {
    async fn grant(
        &self,
        buyer: &str,
        product: &str,
        until: Option<OffsetDateTime>,
        secret_hash: &str,
    ) -> Result<Subscription, AuthzError> {
        let now = OffsetDateTime::now_utc();
        // Used only if this grant is the first: a renewal keeps the stored one.
        let first = Subscription {
            buyer: buyer.to_owned(),
            product: product.to_owned(),
            grant_id: new_grant_id()?,
            status: SubscriptionStatus::Active,
            expires_at: until,
            revoked_at: None,
            created_at: now,
            updated_at: now,
            agreements: Vec::new(),
            hand_at: Some(now),
        };
        for _ in 0..GRANT_ATTEMPTS {
            if let Some(made) = self.first_grant(&first, secret_hash).await? {
                return Ok(made);
            }
            // It exists (maybe made a moment ago by a grant racing this one): renew it.
            if let Some(renewed) = self
                .renewal(buyer, product, until, secret_hash, now)
                .await?
            {
                return Ok(renewed);
            }
        }
        Err(self.malformed(
            buyer,
            product,
            &format!(
                "the item kept appearing and vanishing: neither a first grant nor a renewal \
                 succeeded in {GRANT_ATTEMPTS} attempts"
            ),
        ))
    }

    async fn revoke(&self, buyer: &str, product: &str) -> Result<Subscription, AuthzError> {
        let now = OffsetDateTime::now_utc();
        let revoked = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(buyer, product)))
            .condition_expression("attribute_exists(#product)")
            .update_expression(
                "SET #status = :revoked, #revoked_at = :now, #updated_at = :now, #hand_at = :now",
            )
            .expression_attribute_names("#product", PRODUCT)
            .expression_attribute_names("#hand_at", HAND_AT)
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#revoked_at", REVOKED_AT)
            .expression_attribute_names("#updated_at", UPDATED_AT)
            .expression_attribute_values(":revoked", s(SubscriptionStatus::Revoked.as_str()))
            .expression_attribute_values(":now", n(now))
            .return_values(ReturnValue::AllNew)
            .send()
            .await;
        match revoked {
            Ok(out) => {
                let item = out.attributes().ok_or_else(|| {
                    self.malformed(buyer, product, "UpdateItem returned no attributes")
                })?;
                Ok(self.parse(item)?.subscription)
            }
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(AuthzError::NoSubscription {
                    buyer: buyer.to_owned(),
                    product: product.to_owned(),
                })
            }
            Err(e) => Err(self.sdk_error("UpdateItem (revoke)", e)),
        }
    }

    async fn credentials(
        &self,
        buyer: &str,
        product: &str,
    ) -> Result<Option<Credentials>, AuthzError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(buyer, product)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| self.sdk_error("GetItem", e))?;
        out.item().map(|item| self.parse(item)).transpose()
    }

    async fn swap(
        &self,
        expected: Option<&Subscription>,
        next: &Subscription,
    ) -> Result<bool, AuthzError> {
        let Some(was) = expected else {
            return Ok(self.first_grant(next, NO_SECRET).await?.is_some());
        };
        let mut set = vec!["#status = :status", "#updated_at = :now"];
        let mut remove = Vec::new();
        let mut update = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&next.buyer, &next.product)))
            .condition_expression("#updated_at = :was")
            .expression_attribute_names("#status", STATUS)
            .expression_attribute_names("#updated_at", UPDATED_AT)
            .expression_attribute_values(":status", s(next.status.as_str()))
            .expression_attribute_values(":now", n(next.updated_at))
            .expression_attribute_values(":was", n(was.updated_at));
        let optional = [
            (
                "#expires_at",
                EXPIRES_AT,
                ":expires_at",
                next.expires_at.map(n),
            ),
            (
                "#revoked_at",
                REVOKED_AT,
                ":revoked_at",
                next.revoked_at.map(n),
            ),
            ("#hand_at", HAND_AT, ":hand_at", next.hand_at.map(n)),
            (
                "#agreements",
                AGREEMENTS,
                ":agreements",
                (!next.agreements.is_empty()).then(|| s(&ledger_to_json(&next.agreements))),
            ),
        ];
        let mut assignments = Vec::new();
        for (name, attribute, placeholder, value) in optional {
            update = update.expression_attribute_names(name, attribute);
            match value {
                Some(v) => {
                    update = update.expression_attribute_values(placeholder, v);
                    assignments.push(format!("{name} = {placeholder}"));
                }
                None => remove.push(name),
            }
        }
        set.extend(assignments.iter().map(String::as_str));
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        match update.update_expression(expression).send().await {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.sdk_error("UpdateItem (agreement event)", e)),
        }
    }

    async fn list(&self) -> Result<Vec<Subscription>, AuthzError> {
        let mut all = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .scan()
                .table_name(&self.table)
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(|e| self.sdk_error("Scan", e))?;
            for item in page.items() {
                all.push(self.parse(item)?.subscription);
            }
            match page.last_evaluated_key() {
                Some(last) if !last.is_empty() => start = Some(last.clone()),
                _ => break,
            }
        }
        all.sort_by(|a, b| (&a.product, &a.buyer).cmp(&(&b.product, &b.buyer)));
        Ok(all)
    }
}

/// Creates the registry's table (on-demand, partition key `product`, sort key `buyer`) and waits
/// until it is active. A table of that name already there is fine if its key schema is this one.
pub async fn create_table(client: &Client, table: &str) -> Result<(), AuthzError> {
    crate::dynamodb_table::ensure_table(client, table, PRODUCT, Some(BUYER))
        .await
        .map_err(AuthzError::Registry)
}

/// An SDK failure as a registry error: the table, the operation and what the service said (or,
/// without an answer, the SDK's chain of causes).
fn sdk_error<E, R>(table: &str, operation: &str, err: SdkError<E, R>) -> AuthzError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    R: Debug,
{
    AuthzError::Registry(format!(
        "DynamoDB table {table}: {operation} failed: {}",
        super::sdk_sentence(&err)
    ))
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_owned())
}

/// A time as unix nanoseconds.
fn n(time: OffsetDateTime) -> AttributeValue {
    AttributeValue::N(time.unix_timestamp_nanos().to_string())
}

fn key(buyer: &str, product: &str) -> Item {
    HashMap::from([(PRODUCT.into(), s(product)), (BUYER.into(), s(buyer))])
}

/// The attributes of one item, read with errors that name the item and the attribute.
struct Fields<'a> {
    table: &'a str,
    item: &'a Item,
}

impl Fields<'_> {
    fn bad(&self, attribute: &str, what: &str) -> AuthzError {
        let part = |name: &str| match self.item.get(name) {
            Some(AttributeValue::S(v)) => format!("{v:?}"),
            _ => "?".to_owned(),
        };
        AuthzError::Registry(format!(
            "DynamoDB table {}: item (product {}, buyer {}): attribute {attribute} {what}",
            self.table,
            part(PRODUCT),
            part(BUYER)
        ))
    }

    fn string(&self, attribute: &str) -> Result<&str, AuthzError> {
        match self.item.get(attribute) {
            Some(AttributeValue::S(v)) => Ok(v),
            Some(_) => Err(self.bad(attribute, "is not a string (S)")),
            None => Err(self.bad(attribute, "is missing")),
        }
    }

    fn optional_time(&self, attribute: &str) -> Result<Option<OffsetDateTime>, AuthzError> {
        let Some(value) = self.item.get(attribute) else {
            return Ok(None);
        };
        let AttributeValue::N(digits) = value else {
            return Err(self.bad(attribute, "is not a number (N)"));
        };
        digits
            .parse::<i128>()
            .ok()
            .and_then(|ns| OffsetDateTime::from_unix_timestamp_nanos(ns).ok())
            .map(Some)
            .ok_or_else(|| self.bad(attribute, &format!("is {digits}, not unix nanoseconds")))
    }

    fn time(&self, attribute: &str) -> Result<OffsetDateTime, AuthzError> {
        self.optional_time(attribute)?
            .ok_or_else(|| self.bad(attribute, "is missing"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item() -> Item {
        let now = OffsetDateTime::now_utc();
        let mut item = key("b1", "p");
        item.insert(GRANT_ID.into(), s("g"));
        item.insert(STATUS.into(), s("active"));
        item.insert(SECRET_HASH.into(), s("h"));
        item.insert(CREATED_AT.into(), n(now));
        item.insert(UPDATED_AT.into(), n(now));
        item
    }

    fn registry() -> DynamoDbSubscriptions {
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .build();
        DynamoDbSubscriptions::new(Client::from_conf(config), "subs")
    }

    #[test]
    fn an_item_round_trips_its_times_to_the_nanosecond() {
        let t = OffsetDateTime::from_unix_timestamp_nanos(1_700_000_000_123_456_789).unwrap();
        let mut item = item();
        item.insert(EXPIRES_AT.into(), n(t));
        let got = registry().parse(&item).unwrap();
        assert_eq!(got.subscription.expires_at, Some(t));
        assert_eq!(got.subscription.revoked_at, None);
        assert_eq!(got.secret_hash, "h");
    }

    #[test]
    fn a_missing_or_mistyped_attribute_is_a_registry_error_naming_item_and_attribute() {
        for (attribute, value) in [
            (GRANT_ID, None),
            (CREATED_AT, None),
            (STATUS, Some(s("paused"))),
            (UPDATED_AT, Some(s("yesterday"))),
            (REVOKED_AT, Some(AttributeValue::N("1.5e3".into()))),
        ] {
            let mut item = item();
            match value {
                Some(v) => item.insert(attribute.into(), v),
                None => item.remove(attribute),
            };
            match registry().parse(&item) {
                Err(AuthzError::Registry(m)) => {
                    assert!(m.contains(attribute), "{m}");
                    assert!(m.contains("\"b1\"") && m.contains("\"p\"") && m.contains("subs"));
                }
                other => panic!("{attribute}: {other:?}"),
            }
        }
    }
}
