//! AWS Marketplace agreements: the events Marketplace puts on the seller's default EventBridge
//! bus when a buyer's purchase agreement is created, amended or ends, and what each does to the
//! buyer's subscription. One handler serves the `marketplace-events` Lambda function and
//! `sealbox seller marketplace replay`.
//!
//! Events arrive at least once and in any order, and a replay may feed old ones again, so the
//! subscription keeps a ledger: each agreement's id, its last event (kind and time) and its end.
//! - An event not newer than the last one applied for its agreement changes nothing (a
//!   duplicate, or an older event arriving late). At the same second, ended outranks amended,
//!   which outranks created.
//! - An ended agreement stays ended: no later event of it grants again.
//! - The subscription is active while any agreement in the ledger is live, until the latest of
//!   their ends; when the last one ends, it is revoked. An agreement that ended because it was
//!   renewed or replaced does not revoke: its successor's created event follows.
//! - The seller's own `grant` and `revoke` stay in charge: an event older than the seller's last
//!   hand change is recorded in the ledger but does not change the status.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::error::AuthzError;
use crate::subscriptions::{Subscription, SubscriptionRegistry, SubscriptionStatus, new_grant_id};

/// EventBridge `source` of Marketplace's agreement events.
pub const EVENT_SOURCE: &str = "aws.agreement-marketplace";

/// How many times [`apply`] re-reads and retries when another change lands in between.
const SWAP_ATTEMPTS: usize = 5;

/// What an agreement event says happened, in the order that breaks ties at the same second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AgreementStep {
    /// `Purchase Agreement Created` (new, renewed or replacing another).
    Created,
    /// `Purchase Agreement Amended`.
    Amended,
    /// `Purchase Agreement Ended` (cancelled, expired, terminated, renewed or replaced).
    Ended,
}

/// One agreement in a subscription's ledger: its last event applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgreementRecord {
    /// Marketplace agreement id (`agmt-...`).
    pub id: String,
    /// The kind of its last event applied.
    pub step: AgreementStep,
    /// The time of that event (EventBridge's `time`).
    #[serde(with = "time::serde::rfc3339")]
    pub event_at: OffsetDateTime,
    /// When the agreement ends by itself; none for pay-as-you-go agreements.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
}

impl AgreementRecord {
    fn is_live(&self) -> bool {
        self.step != AgreementStep::Ended
    }
}

/// The ledger as stored: a JSON array of [`AgreementRecord`]s.
pub fn ledger_to_json(ledger: &[AgreementRecord]) -> String {
    serde_json::to_string(ledger).unwrap_or_else(|_| "[]".into())
}

/// The ledger from its stored JSON.
pub fn ledger_from_json(json: &str) -> Result<Vec<AgreementRecord>, String> {
    serde_json::from_str(json).map_err(|e| format!("agreement ledger is not valid: {e}"))
}

/// An agreement event, read from EventBridge's envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AgreementEvent {
    /// EventBridge event id (the same for a redelivered event).
    pub event_id: String,
    /// EventBridge `detail-type`.
    pub detail_type: String,
    /// What happened.
    pub step: AgreementStep,
    /// Marketplace agreement id.
    pub agreement: String,
    /// The buyer: the agreement's acceptor account.
    pub buyer: String,
    /// The Marketplace product id, when the event names one (most do not).
    pub marketplace_product: Option<String>,
    /// EventBridge `time`: when it happened.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// When the agreement ends, when the event says.
    #[serde(with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    /// The agreement's status as the event gives it (`ACTIVE`, `CANCELLED`, `RENEWED`, ...).
    pub status: Option<String>,
}

impl AgreementEvent {
    /// True for an end whose successor agreement takes over (renewed or replaced).
    pub fn has_successor(&self) -> bool {
        self.step == AgreementStep::Ended
            && matches!(self.status.as_deref(), Some("RENEWED" | "REPLACED"))
    }
}

/// What [`parse_event`] makes of one EventBridge event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParsedEvent {
    /// An agreement event to apply.
    Agreement(AgreementEvent),
    /// A Marketplace event this handler does not act on (e.g. `Purchase Agreement Ending`,
    /// `License Updated`): its detail type.
    Ignored(String),
}

/// Reads one EventBridge event (the envelope AWS documents, `detail` included). An event of
/// another source, or missing what the handler needs, is an error naming what is wrong.
pub fn parse_event(event: &Value) -> Result<ParsedEvent, String> {
    let text = |v: &Value, path: &str| -> Result<String, String> {
        let mut at = v;
        for part in path.split('.') {
            at = at
                .get(part)
                .ok_or_else(|| format!("the event has no {path}"))?;
        }
        at.as_str()
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("{path} is not a non-empty string"))
    };
    let source = text(event, "source")?;
    if source != EVENT_SOURCE {
        return Err(format!(
            "source is {source:?}, not {EVENT_SOURCE:?}: not a Marketplace agreement event"
        ));
    }
    let detail_type = text(event, "detail-type")?;
    // "Purchase Agreement Created - Manufacturer" and "... - Proposer" mean the same here: a
    // seller who is both gets only the proposer's event.
    let kind = detail_type
        .rsplit_once(" - ")
        .map_or(detail_type.as_str(), |(kind, _role)| kind);
    let step = match kind {
        "Purchase Agreement Created" => AgreementStep::Created,
        "Purchase Agreement Amended" => AgreementStep::Amended,
        "Purchase Agreement Ended" => AgreementStep::Ended,
        _ => return Ok(ParsedEvent::Ignored(detail_type)),
    };
    let time = |path: &str, v: &str| {
        OffsetDateTime::parse(v, &Rfc3339).map_err(|e| format!("{path} {v:?} is not RFC 3339: {e}"))
    };
    let at = time("time", &text(event, "time")?)?;
    let detail = event
        .get("detail")
        .filter(|d| d.is_object())
        .ok_or("the event has no detail object")?;
    let buyer = text(detail, "acceptor.accountId")?;
    if buyer.len() != 12 || !buyer.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "detail.acceptor.accountId {buyer:?} is not a 12-digit AWS account id"
        ));
    }
    let agreement = text(detail, "agreement.id")?;
    if agreement.len() > 64
        || !agreement
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_/-".contains(&b))
    {
        return Err(format!(
            "detail.agreement.id {agreement:?} is not an agreement id"
        ));
    }
    let until = match detail.pointer("/agreement/endTime").and_then(Value::as_str) {
        Some(t) => Some(time("detail.agreement.endTime", t)?),
        None => None,
    };
    Ok(ParsedEvent::Agreement(AgreementEvent {
        event_id: text(event, "id").unwrap_or_default(),
        detail_type,
        step,
        agreement,
        buyer,
        marketplace_product: text(detail, "product.id").ok(),
        at,
        until,
        status: text(detail, "agreement.status").ok(),
    }))
}

/// Which sealbox product each Marketplace product id is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProductMap(BTreeMap<String, String>);

impl ProductMap {
    /// Reads `prod-a=product-a,prod-b=product-b` (the form of `SEALBOX_MARKETPLACE_PRODUCTS`).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut map = BTreeMap::new();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (marketplace, product) = pair
                .split_once('=')
                .map(|(m, p)| (m.trim(), p.trim()))
                .filter(|(m, p)| !m.is_empty() && !p.is_empty())
                .ok_or_else(|| format!("{pair:?} is not MARKETPLACE_PRODUCT_ID=SEALBOX_PRODUCT"))?;
            if map
                .insert(marketplace.to_owned(), product.to_owned())
                .is_some()
            {
                return Err(format!("Marketplace product {marketplace} is mapped twice"));
            }
        }
        if map.is_empty() {
            return Err("no Marketplace product is mapped (e.g. prod-abc123=my-product)".into());
        }
        Ok(ProductMap(map))
    }

    /// The sealbox product of the first of `ids` that is mapped.
    pub fn product_of<'a>(&self, ids: impl IntoIterator<Item = &'a str>) -> Option<&str> {
        ids.into_iter()
            .find_map(|id| self.0.get(id))
            .map(String::as_str)
    }
}

/// What the Agreement Service says of one agreement (`DescribeAgreement`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Described {
    /// The agreement: the ids of the resources (products) it covers, and its end.
    Found {
        /// Resource ids of the proposal (`prod-...`).
        products: Vec<String>,
        /// Its end, if it has one.
        until: Option<OffsetDateTime>,
    },
    /// The service refused in a way waiting will not change (not found, access denied): why.
    Refused(String),
}

/// The Marketplace Agreement Service: the product of an agreement whose event names none.
#[async_trait]
pub trait AgreementDirectory: Send + Sync {
    /// Describes agreement `id`. An outage or throttling is an error (the event is retried).
    async fn describe(&self, id: &str) -> Result<Described, AuthzError>;
}

/// What applying one event did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "outcome", content = "detail")]
pub enum Outcome {
    /// The subscription is (or stays) active.
    Granted,
    /// The subscription was revoked: the deny list must be published again.
    Revoked,
    /// Recorded in the ledger; the status did not change (why).
    Recorded(String),
    /// Nothing changed (why: a duplicate, an older event, an ended agreement).
    Skipped(String),
    /// Not applied: the event is not for one of our products, or is not an agreement event
    /// we act on (why).
    Ignored(String),
}

/// The result of one event: what it was and what it did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Handled {
    /// EventBridge event id, if any.
    pub event_id: String,
    /// EventBridge detail type, if any.
    pub detail_type: String,
    /// The buyer account, if the event names one.
    pub buyer: Option<String>,
    /// The agreement, if the event names one.
    pub agreement: Option<String>,
    /// What happened to the agreement, if the event is one acted on.
    pub step: Option<AgreementStep>,
    /// The sealbox product, once known.
    pub product: Option<String>,
    /// What it did.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The decision for one event on the stored subscription: what to store, and the outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The subscription to store in place of the current one; none when nothing changes.
    pub next: Option<Subscription>,
    /// What the event does.
    pub outcome: Outcome,
}

/// Decides what `event` does to `current` (the stored subscription of its buyer to `product`,
/// if any) at `now`. Pure: [`apply`] stores the result.
pub fn decide(
    current: Option<&Subscription>,
    event: &AgreementEvent,
    product: &str,
    now: OffsetDateTime,
) -> Result<Decision, AuthzError> {
    let skip = |why: String| Decision {
        next: None,
        outcome: Outcome::Skipped(why),
    };
    let mut ledger = current.map(|s| s.agreements.clone()).unwrap_or_default();
    if let Some(last) = ledger.iter().find(|r| r.id == event.agreement) {
        if !last.is_live() {
            return Ok(skip(format!(
                "agreement {} ended at {}; no later event of it grants again",
                last.id,
                crate_rfc3339(last.event_at)
            )));
        }
        if (event.at, event.step) <= (last.event_at, last.step) {
            return Ok(skip(format!(
                "not newer than the last event of agreement {} applied ({:?} at {})",
                last.id,
                last.step,
                crate_rfc3339(last.event_at)
            )));
        }
    }
    let record = AgreementRecord {
        id: event.agreement.clone(),
        step: event.step,
        event_at: event.at,
        until: event.until,
    };
    match ledger.iter_mut().find(|r| r.id == event.agreement) {
        Some(r) => {
            // An amendment or end without an end time keeps the one known.
            let until = record.until.or(r.until);
            *r = AgreementRecord { until, ..record };
        }
        None => ledger.push(record),
    }

    let mut next = match current {
        Some(s) => s.clone(),
        None => Subscription {
            buyer: event.buyer.clone(),
            product: product.to_owned(),
            grant_id: new_grant_id()?,
            // Made active or revoked below; a first event that ends never grants.
            status: SubscriptionStatus::Revoked,
            expires_at: None,
            revoked_at: None,
            created_at: now,
            updated_at: now,
            agreements: Vec::new(),
            hand_at: None,
        },
    };
    next.agreements = ledger;
    next.updated_at = now;

    if let Some(hand) = current.and_then(Subscription::hand_changed_at)
        && event.at <= hand
    {
        return Ok(Decision {
            next: Some(next),
            outcome: Outcome::Recorded(format!(
                "the seller's own grant or revoke at {} is newer than this event",
                crate_rfc3339(hand)
            )),
        });
    }

    let live: Vec<&AgreementRecord> = next.agreements.iter().filter(|r| r.is_live()).collect();
    let outcome = if !live.is_empty() {
        next.expires_at = if live.iter().any(|r| r.until.is_none()) {
            None
        } else {
            live.iter().filter_map(|r| r.until).max()
        };
        next.status = SubscriptionStatus::Active;
        Outcome::Granted
    } else if event.has_successor() && current.is_some() {
        Outcome::Recorded(format!(
            "agreement {} ended as {}: its successor's created event takes over",
            event.agreement,
            event.status.as_deref().unwrap_or_default()
        ))
    } else if next.status == SubscriptionStatus::Active && current.is_some() {
        next.status = SubscriptionStatus::Revoked;
        next.revoked_at = Some(now);
        Outcome::Revoked
    } else {
        Outcome::Recorded("no live agreement; the subscription stays revoked".into())
    };
    Ok(Decision {
        next: Some(next),
        outcome,
    })
}

fn crate_rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

/// Applies `event` to its buyer's subscription to `product` in `registry`: reads, decides,
/// and stores with [`SubscriptionRegistry::swap`], again if another change came in between.
pub async fn apply(
    registry: &dyn SubscriptionRegistry,
    event: &AgreementEvent,
    product: &str,
) -> Result<Outcome, AuthzError> {
    for _ in 0..SWAP_ATTEMPTS {
        let current = registry
            .credentials(&event.buyer, product)
            .await?
            .map(|c| c.subscription);
        let decision = decide(current.as_ref(), event, product, OffsetDateTime::now_utc())?;
        let Some(next) = decision.next else {
            return Ok(decision.outcome);
        };
        if registry.swap(current.as_ref(), &next).await? {
            return Ok(decision.outcome);
        }
    }
    Err(AuthzError::Registry(format!(
        "the subscription of {} to {product} kept changing while agreement event {} was \
         applied ({SWAP_ATTEMPTS} attempts); it will be retried",
        event.buyer, event.event_id
    )))
}

/// The one handler of agreement events: reads the event, finds its product, applies it.
pub struct AgreementEvents<'a> {
    /// Where subscriptions live.
    pub registry: &'a dyn SubscriptionRegistry,
    /// The Agreement Service, for events that name no product; none: such events are skipped.
    pub directory: Option<&'a dyn AgreementDirectory>,
    /// Marketplace product id to sealbox product.
    pub products: &'a ProductMap,
    /// The product of events that name none, instead of asking the Agreement Service (a
    /// replay of a file the seller knows is all about one product).
    pub unnamed: Option<&'a str>,
}

impl AgreementEvents<'_> {
    /// Handles one EventBridge event. An error is ours or the service's to wait out (the
    /// registry or the Agreement Service failing): the event is worth retrying. Everything
    /// about the event itself (malformed, another product, a refusal that waiting will not
    /// change) is an [`Outcome::Ignored`] naming the reason.
    pub async fn handle(&self, event: &Value) -> Result<Handled, AuthzError> {
        let envelope = |field: &str| {
            event
                .get(field)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let mut handled = Handled {
            event_id: envelope("id"),
            detail_type: envelope("detail-type"),
            buyer: None,
            agreement: None,
            step: None,
            product: None,
            outcome: Outcome::Ignored(String::new()),
        };
        let parsed = match parse_event(event) {
            Ok(ParsedEvent::Agreement(e)) => e,
            Ok(ParsedEvent::Ignored(kind)) => {
                handled.outcome =
                    Outcome::Ignored(format!("{kind:?} is not an agreement event acted on"));
                return Ok(handled);
            }
            Err(why) => {
                handled.outcome = Outcome::Ignored(format!("malformed event: {why}"));
                return Ok(handled);
            }
        };
        handled.buyer = Some(parsed.buyer.clone());
        handled.agreement = Some(parsed.agreement.clone());
        handled.step = Some(parsed.step);

        let mut event = parsed;
        let product = match event.marketplace_product.as_deref() {
            Some(id) => self.products.product_of([id]).map(str::to_owned),
            None if self.unnamed.is_some() => self.unnamed.map(str::to_owned),
            None => match self.directory {
                None => {
                    handled.outcome = Outcome::Ignored(
                        "the event names no product and the Agreement Service is not in use".into(),
                    );
                    return Ok(handled);
                }
                Some(directory) => match directory.describe(&event.agreement).await? {
                    Described::Found { products, until } => {
                        event.until = event.until.or(until);
                        self.products
                            .product_of(products.iter().map(String::as_str))
                            .map(str::to_owned)
                    }
                    Described::Refused(why) => {
                        handled.outcome = Outcome::Ignored(format!(
                            "DescribeAgreement {}: {why}",
                            event.agreement
                        ));
                        return Ok(handled);
                    }
                },
            },
        };
        let Some(product) = product else {
            handled.outcome = Outcome::Ignored(format!(
                "agreement {} is for none of the mapped Marketplace products",
                event.agreement
            ));
            return Ok(handled);
        };
        handled.product = Some(product.clone());
        handled.outcome = apply(self.registry, &event, &product).await?;
        Ok(handled)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::conformance::{created_event, ended_event};
    use serde_json::json;

    const BUYER: &str = "845735284135";

    /// AWS's published example of `Purchase Agreement Created - Manufacturer`, with this time
    /// and agreement.
    fn created(time: &str, agreement: &str) -> Value {
        created_event(time, BUYER, agreement, "2125-05-30T21:36:03Z")
    }

    fn ended(time: &str, agreement: &str, status: &str) -> Value {
        ended_event(time, BUYER, agreement, status)
    }

    fn event(v: &Value) -> AgreementEvent {
        match parse_event(v).unwrap() {
            ParsedEvent::Agreement(e) => e,
            other => panic!("{other:?}"),
        }
    }

    /// Applies events in order to an in-memory subscription, as a registry would.
    fn run(events: &[Value]) -> (Option<Subscription>, Vec<Outcome>) {
        let mut current: Option<Subscription> = None;
        let mut outcomes = Vec::new();
        for v in events {
            let d = decide(current.as_ref(), &event(v), "p", OffsetDateTime::now_utc()).unwrap();
            if let Some(next) = d.next {
                current = Some(next);
            }
            outcomes.push(d.outcome);
        }
        (current, outcomes)
    }

    #[test]
    fn the_published_examples_parse_into_what_the_handler_needs() {
        let e = event(&created("2024-08-30T21:36:03Z", "agmt-1"));
        assert_eq!(e.step, AgreementStep::Created);
        assert_eq!(e.buyer, BUYER);
        assert_eq!(e.agreement, "agmt-1");
        assert_eq!(
            e.marketplace_product, None,
            "agreement events name no product"
        );
        assert_eq!(e.until.map(|t| t.year()), Some(2125));
        let e = event(&ended("2024-08-30T21:36:03Z", "agmt-1", "CANCELLED"));
        assert_eq!(
            (e.step, e.until, e.has_successor()),
            (AgreementStep::Ended, None, false)
        );
        let mut proposer = created("2024-08-30T21:36:03Z", "agmt-1");
        proposer["detail-type"] = json!("Purchase Agreement Created - Proposer");
        assert_eq!(event(&proposer).step, AgreementStep::Created);
        let mut ending = created("2024-08-30T21:36:03Z", "agmt-1");
        ending["detail-type"] = json!("Purchase Agreement Ending - Manufacturer");
        assert!(matches!(parse_event(&ending), Ok(ParsedEvent::Ignored(_))));
    }

    #[test]
    fn a_malformed_event_is_refused_naming_what_is_wrong() {
        let mut bad = created("2024-08-30T21:36:03Z", "agmt-1");
        bad["detail"]["acceptor"]["accountId"] = json!("8457");
        assert!(parse_event(&bad).unwrap_err().contains("12-digit"));
        let mut bad = created("yesterday", "agmt-1");
        bad["source"] = json!("aws.agreement-marketplace");
        assert!(parse_event(&bad).unwrap_err().contains("time"));
        let mut bad = created("2024-08-30T21:36:03Z", "agmt-1");
        bad["source"] = json!("aws.s3");
        assert!(parse_event(&bad).unwrap_err().contains("not a Marketplace"));
        assert!(parse_event(&json!([1])).unwrap_err().contains("source"));
    }

    #[test]
    fn created_then_ended_then_a_late_duplicate_created_ends_revoked() {
        let (s, outcomes) = run(&[
            created("2026-01-01T00:00:00Z", "agmt-1"),
            ended("2026-02-01T00:00:00Z", "agmt-1", "CANCELLED"),
            created("2026-01-01T00:00:00Z", "agmt-1"),
        ]);
        assert_eq!(outcomes[0], Outcome::Granted);
        assert_eq!(outcomes[1], Outcome::Revoked);
        assert!(matches!(&outcomes[2], Outcome::Skipped(w) if w.contains("ended")));
        let s = s.unwrap();
        assert_eq!(s.status, SubscriptionStatus::Revoked);
        assert!(s.revoked_at.is_some());
    }

    #[test]
    fn an_end_that_arrives_before_its_creation_keeps_the_buyer_out() {
        let (s, outcomes) = run(&[
            ended("2026-02-01T00:00:00Z", "agmt-1", "CANCELLED"),
            created("2026-01-01T00:00:00Z", "agmt-1"),
        ]);
        assert!(matches!(outcomes[0], Outcome::Recorded(_)));
        assert!(matches!(outcomes[1], Outcome::Skipped(_)));
        let s = s.unwrap();
        assert_eq!(s.status, SubscriptionStatus::Revoked);
        assert_eq!(s.revoked_at, None, "never active, nothing to deny");
    }

    #[test]
    fn a_duplicate_changes_nothing_and_ties_go_to_the_end() {
        let (_, outcomes) = run(&[
            created("2026-01-01T00:00:00Z", "agmt-1"),
            created("2026-01-01T00:00:00Z", "agmt-1"),
            ended("2026-01-01T00:00:00Z", "agmt-1", "CANCELLED"),
        ]);
        assert!(matches!(&outcomes[1], Outcome::Skipped(w) if w.contains("not newer")));
        assert_eq!(outcomes[2], Outcome::Revoked);
    }

    #[test]
    fn a_replacement_in_either_order_leaves_the_buyer_granted_until_the_new_end() {
        let mut new = created("2026-03-01T00:00:00Z", "agmt-2");
        new["detail"]["agreement"]["endTime"] = json!("2127-01-01T00:00:00Z");
        for events in [
            vec![
                created("2026-01-01T00:00:00Z", "agmt-1"),
                new.clone(),
                ended("2026-03-01T00:00:00Z", "agmt-1", "REPLACED"),
            ],
            vec![
                created("2026-01-01T00:00:00Z", "agmt-1"),
                ended("2026-03-01T00:00:00Z", "agmt-1", "REPLACED"),
                new.clone(),
            ],
        ] {
            let (s, outcomes) = run(&events);
            let s = s.unwrap();
            assert_eq!(s.status, SubscriptionStatus::Active, "{outcomes:?}");
            assert_eq!(
                s.revoked_at, None,
                "{outcomes:?}: no token refused on the way"
            );
            assert_eq!(s.expires_at.map(|t| t.year()), Some(2127));
        }
    }

    #[test]
    fn a_cancelled_agreement_with_another_live_one_keeps_the_grant() {
        let (s, outcomes) = run(&[
            created("2026-01-01T00:00:00Z", "agmt-1"),
            created("2026-01-02T00:00:00Z", "agmt-2"),
            ended("2026-01-03T00:00:00Z", "agmt-1", "CANCELLED"),
        ]);
        assert_eq!(outcomes[2], Outcome::Granted);
        assert_eq!(s.unwrap().status, SubscriptionStatus::Active);
    }

    #[test]
    fn an_event_older_than_the_sellers_hand_change_is_recorded_only() {
        let now = OffsetDateTime::now_utc();
        let hand_revoked = Subscription {
            buyer: BUYER.into(),
            product: "p".into(),
            grant_id: "g".into(),
            status: SubscriptionStatus::Revoked,
            expires_at: None,
            revoked_at: Some(now),
            created_at: now,
            updated_at: now,
            agreements: Vec::new(),
            hand_at: None,
        };
        let d = decide(
            Some(&hand_revoked),
            &event(&created("2026-01-01T00:00:00Z", "agmt-1")),
            "p",
            now,
        )
        .unwrap();
        assert!(matches!(d.outcome, Outcome::Recorded(ref w) if w.contains("seller")));
        let next = d.next.unwrap();
        assert_eq!(next.status, SubscriptionStatus::Revoked);
        assert_eq!(next.agreements.len(), 1);
    }

    #[test]
    fn the_product_map_reads_pairs_and_refuses_what_is_not_one() {
        let m = ProductMap::parse("prod-a=alpha, prod-b=beta").unwrap();
        assert_eq!(m.product_of(["prod-x", "prod-b"]), Some("beta"));
        assert_eq!(m.product_of(["prod-x"]), None);
        assert!(ProductMap::parse("prod-a").is_err());
        assert!(ProductMap::parse("prod-a=x,prod-a=y").is_err());
        assert!(ProductMap::parse(" ").is_err());
    }

    #[test]
    fn the_ledger_round_trips_through_its_json() {
        let (s, _) = run(&[created("2026-01-01T00:00:00Z", "agmt-1")]);
        let ledger = s.unwrap().agreements;
        assert_eq!(ledger_from_json(&ledger_to_json(&ledger)).unwrap(), ledger);
        assert!(ledger_from_json("{").is_err());
    }
}
