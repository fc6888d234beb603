//! `sealbox buyer usage`: what a buyer's requests used of the model endpoint, per UTC day, from
//! the usage documents in the outbox, to reconcile against the AWS Marketplace bill.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;

use clap::Args;
use sealbox_aws::config::Var;
use sealbox_core::contract::{Usage, UsageDocument};
use sealbox_core::layout::{OUTBOX, location};
use sealbox_core::ports::ObjectStore;
use serde_json::json;
use time::Date;

use crate::output::{Backend, Table, emit, existing_data, store_error};
use crate::results::DOCUMENT_CAP;

/// Arguments of `sealbox buyer usage`.
#[derive(Args)]
pub struct UsageArgs {
    /// Buyer id.
    #[arg(long)]
    pub buyer: String,
    /// Only days from this one on (UTC, `YYYY-MM-DD`).
    #[arg(long, value_parser = parse_day)]
    pub since: Option<Date>,
    /// Print JSON lines (one object per day).
    #[arg(long)]
    pub json: bool,
    /// Where the usage documents are: the outbox of the data directory, or on AWS the bucket
    /// $SEALBOX_OUTBOX_BUCKET.
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,
}

/// Usage documents listed at a time.
const USAGE_PAGE: usize = 1000;

/// A UTC day written `YYYY-MM-DD`.
fn parse_day(s: &str) -> Result<Date, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s.trim(), format).map_err(|e| format!("expected a day as YYYY-MM-DD: {e}"))
}

/// `sealbox buyer usage`: the usage in the outbox of the backend `a` names.
pub async fn usage(data: &Path, a: UsageArgs) -> anyhow::Result<ExitCode> {
    crate::access::check_buyer(&a.buyer)?;
    let days = match a.backend {
        Backend::Embedded => {
            let store = existing_data(data)?.store(false);
            usage_by_day(&store, OUTBOX, &a).await?
        }
        Backend::Aws => {
            let (store, settings) = crate::aws::object_store(&[Var::OutboxBucket]).await?;
            usage_by_day(&store, settings.get(Var::OutboxBucket), &a).await?
        }
    };
    print(&a, &days)?;
    Ok(ExitCode::SUCCESS)
}

/// Requests and their summed usage, on one day.
#[derive(Default)]
struct Day {
    requests: u64,
    usage: Usage,
}

/// Sums the usage documents of `a.buyer` in the bucket `outbox` by the UTC day they were
/// recorded; one page of the listing and one document are held at once, besides the days.
async fn usage_by_day(
    store: &dyn ObjectStore,
    outbox: &str,
    a: &UsageArgs,
) -> anyhow::Result<BTreeMap<Date, Day>> {
    let prefix = format!("{}/usage/", a.buyer);
    let mut days: BTreeMap<Date, Day> = BTreeMap::new();
    let mut unreadable = 0usize;
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list(outbox, &prefix, after.as_deref(), USAGE_PAGE)
            .await
            .map_err(|e| store_error(&format!("listing {}", location(outbox, &prefix)), e))?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        for m in &page {
            let doc = match store.get(outbox, &m.key, DOCUMENT_CAP).await {
                Ok((_, body)) => serde_json::from_slice::<UsageDocument>(&body).ok(),
                // Removed since the listing: nothing to count.
                Err(sealbox_core::Error::NotFound { .. }) => continue,
                Err(sealbox_core::Error::TooLarge { .. }) => None,
                Err(e) => {
                    return Err(store_error(
                        &format!("reading {}", location(outbox, &m.key)),
                        e,
                    ));
                }
            };
            let Some(doc) = doc else {
                unreadable += 1;
                continue;
            };
            let day = doc.recorded_at.to_offset(time::UtcOffset::UTC).date();
            if a.since.is_some_and(|since| day < since) {
                continue;
            }
            let entry = days.entry(day).or_insert_with(|| Day {
                requests: 0,
                usage: Usage::none(),
            });
            entry.requests += 1;
            entry.usage.add(&doc.usage);
        }
    }
    if unreadable > 0 {
        eprintln!(
            "{unreadable} usage documents under {} could not be read and are not counted",
            location(outbox, &prefix)
        );
    }
    Ok(days)
}

/// One line per day (JSON lines with `--json`), then a total line in the table.
fn print(a: &UsageArgs, days: &BTreeMap<Date, Day>) -> anyhow::Result<()> {
    if days.is_empty() {
        eprintln!(
            "no usage recorded for buyer {}{}",
            a.buyer,
            a.since.map(|d| format!(" since {d}")).unwrap_or_default()
        );
        return Ok(());
    }
    if a.json {
        let mut out = String::new();
        for (day, d) in days {
            let u = &d.usage;
            out.push_str(
                &json!({"buyer": a.buyer, "day": day.to_string(), "requests": d.requests,
                        "invocations": u.invocations, "records": u.records,
                        "metered": u.metered, "bytes_in": u.bytes_in,
                        "bytes_out": u.bytes_out, "model_ms": u.model_ms})
                .to_string(),
            );
            out.push('\n');
        }
        return emit(&out);
    }
    let row = |label: String, d: &Day| {
        let u = &d.usage;
        vec![
            label,
            d.requests.to_string(),
            u.invocations.to_string(),
            u.records.to_string(),
            if u.metered { "yes" } else { "no" }.to_owned(),
            u.bytes_in.to_string(),
            u.bytes_out.to_string(),
            u.model_ms.to_string(),
        ]
    };
    let mut total = Day {
        requests: 0,
        usage: Usage::none(),
    };
    let mut rows = Vec::with_capacity(days.len() + 1);
    for (day, d) in days {
        total.requests += d.requests;
        total.usage.add(&d.usage);
        rows.push(row(day.to_string(), d));
    }
    rows.push(row("total".to_owned(), &total));
    let table = Table::new(&[
        ("day (UTC)", false),
        ("requests", true),
        ("invocations", true),
        ("records", true),
        ("metered", false),
        ("bytes_in", true),
        ("bytes_out", true),
        ("model_ms", true),
    ]);
    emit(&table.render(&rows))?;
    if !total.usage.metered {
        eprintln!(
            "metered: no means some answers carried no X-Amzn-Inference-Metering units; each \
             of those counts as one record, as AWS Marketplace bills it by default"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_day_is_read_as_year_month_day_and_anything_else_is_refused() {
        assert_eq!(
            parse_day("2026-11-25").ok(),
            Date::from_calendar_date(2026, time::Month::November, 25).ok()
        );
        for bad in ["2026-13-01", "25/11/2026", "yesterday", ""] {
            assert!(parse_day(bad).is_err(), "{bad}");
        }
    }
}
