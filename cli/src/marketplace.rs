//! `sealbox seller marketplace replay FILE`: saved AWS Marketplace agreement events through the
//! handler the `marketplace-events` function runs, on either backend's registry: a backfill of
//! agreements made before the function was deployed, or a repair after events went to its
//! dead-letter queue. Replaying is idempotent: events already applied are skipped.

use std::path::Path;

use anyhow::{Context as _, bail};
use sealbox_authz::agreements::{AgreementEvents, Handled, Outcome, ProductMap};
use sealbox_authz::subscriptions::SubscriptionRegistry;
use sealbox_aws::seller::marketplace::AgreementService;
use serde_json::Value;

/// Where the replay finds the products of the events.
pub struct ReplayProducts<'a> {
    /// `SEALBOX_MARKETPLACE_PRODUCTS` / `--products`: Marketplace product id to sealbox product.
    pub map: Option<&'a str>,
    /// `--product`: the product of every event that names none (no DescribeAgreement).
    pub unnamed: Option<&'a str>,
}

/// The events of `text`: a JSON array of events, one event, JSON lines, or what
/// `aws sqs receive-message` prints for the dead-letter queue (each message's body an event).
pub fn read_events(text: &str) -> anyhow::Result<Vec<Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Array(events)) => Ok(events),
        Ok(Value::Object(received)) if received.contains_key("Messages") => received
            .get("Messages")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let body = m.get("Body").and_then(Value::as_str).with_context(|| {
                    format!("Messages[{i}] has no Body: not receive-message output")
                })?;
                serde_json::from_str(body)
                    .with_context(|| format!("Messages[{i}].Body is not a JSON event"))
            })
            .collect(),
        Ok(event @ Value::Object(_)) => Ok(vec![event]),
        Ok(other) => bail!("expected agreement events (JSON objects), found {other}"),
        Err(_) => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).with_context(|| {
                    format!(
                        "line {}: not a JSON event (the file is neither a JSON array, one \
                         event, nor JSON lines)",
                        i + 1
                    )
                })
            })
            .collect(),
    }
}

/// `seller marketplace replay FILE` on the embedded registry under `data`.
pub async fn replay_embedded(
    data: &Path,
    file: &Path,
    products: ReplayProducts<'_>,
    json: bool,
) -> anyhow::Result<()> {
    let registry = crate::access::registry(data)?;
    replay(&registry, file, products, json).await?;
    Ok(())
}

/// Replays the events in `file` (`-`: standard input) into `registry`, in the file's order;
/// prints one line per event (or JSON lines); answers whether any subscription was revoked.
pub async fn replay(
    registry: &dyn SubscriptionRegistry,
    file: &Path,
    products: ReplayProducts<'_>,
    json: bool,
) -> anyhow::Result<bool> {
    let text = if file == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading events from stdin")?
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?
    };
    let events = read_events(&text).with_context(|| format!("{}", file.display()))?;
    let map = match products.map {
        Some(m) => ProductMap::parse(m).map_err(|e| anyhow::anyhow!("--products: {e}"))?,
        None if products.unnamed.is_some() => ProductMap::default(),
        None => bail!(
            "which products? set --products (or $SEALBOX_MARKETPLACE_PRODUCTS) to \
             prod-abc123=my-product pairs, or --product for a file about one product"
        ),
    };
    // The Agreement Service only when some event may need it.
    let directory = match products.unnamed {
        Some(_) => None,
        None => Some(AgreementService::from_config(
            &sealbox_aws::sdk::load_config().await,
        )),
    };
    let handler = AgreementEvents {
        registry,
        directory: directory
            .as_ref()
            .map(|d| d as &dyn sealbox_authz::agreements::AgreementDirectory),
        products: &map,
        unnamed: products.unnamed,
    };
    let (mut granted, mut revoked, mut skipped, mut ignored) = (0, 0, 0, 0);
    for (i, event) in events.iter().enumerate() {
        let handled = handler.handle(event).await.with_context(|| {
            format!(
                "event {} of {} (the ones before it are applied; replaying the file again \
                 skips them)",
                i + 1,
                events.len()
            )
        })?;
        match handled.outcome {
            Outcome::Granted => granted += 1,
            Outcome::Revoked => revoked += 1,
            Outcome::Recorded(_) | Outcome::Skipped(_) => skipped += 1,
            Outcome::Ignored(_) => ignored += 1,
        }
        let shown = if json {
            serde_json::to_string(&handled)?
        } else {
            line(&handled)
        };
        crate::output::emit(&format!("{shown}\n"))?;
    }
    eprintln!(
        "{} events: {granted} granted, {revoked} revoked, {skipped} recorded or skipped, \
         {ignored} ignored",
        events.len()
    );
    Ok(revoked > 0)
}

/// One event's line: what, for whom, and what it did.
fn line(h: &Handled) -> String {
    let who = match (&h.buyer, &h.agreement, &h.product) {
        (Some(b), Some(a), Some(p)) => format!("buyer {b} agreement {a} product {p}"),
        (Some(b), Some(a), None) => format!("buyer {b} agreement {a}"),
        _ => "-".into(),
    };
    let what = match &h.outcome {
        Outcome::Granted => "granted".to_owned(),
        Outcome::Revoked => "revoked".to_owned(),
        Outcome::Recorded(why) => format!("recorded: {why}"),
        Outcome::Skipped(why) => format!("skipped: {why}"),
        Outcome::Ignored(why) => format!("ignored: {why}"),
    };
    format!("{} {:?} {who}: {what}", h.event_id, h.detail_type)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_are_read_from_an_array_one_object_or_json_lines() {
        assert_eq!(read_events(r#"[{"a":1},{"a":2}]"#).unwrap().len(), 2);
        assert_eq!(read_events(r#"{"a":1}"#).unwrap().len(), 1);
        assert_eq!(read_events("{\"a\":1}\n\n{\"a\":2}\n").unwrap().len(), 2);
        let err = read_events("{\"a\":1}\nnot json\n").unwrap_err();
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
        assert!(read_events("3").is_err());
        assert!(
            read_events("").unwrap().is_empty(),
            "an empty queue's receive prints nothing"
        );
        let received = json!({"Messages": [{"MessageId": "m", "Body": "{\"id\":\"e1\"}"}]});
        assert_eq!(
            read_events(&received.to_string()).unwrap(),
            [json!({"id": "e1"})]
        );
        let bad = json!({"Messages": [{"MessageId": "m"}]});
        assert!(format!("{:#}", read_events(&bad.to_string()).unwrap_err()).contains("Body"));
    }
}
