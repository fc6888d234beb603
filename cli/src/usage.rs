//! `sealbox buyer usage`: what a buyer's requests used of the model endpoint, per UTC day, from
//! the outbox, to reconcile against the AWS Marketplace bill. A result carries its usage in its
//! own metadata (`sealbox-usage`), so reading it costs one HEAD per result, here, at read time,
//! and nothing per job; a failure document carries it in its body. The day is the object's
//! LastModified, which the listing gives, so `--since` skips older objects without a HEAD.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use sealbox_aws::config::Var;
use sealbox_core::contract::{OutcomeDocument, Usage};
use sealbox_core::layout::{OUTBOX, location};
use sealbox_core::ports::{ObjectMeta, ObjectStore};
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
    /// Where the outcomes are: the outbox of the data directory, or on AWS the bucket
    /// $SEALBOX_OUTBOX_BUCKET.
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,
}

/// Outcomes listed at a time.
const USAGE_PAGE: usize = 1000;

/// HEADs (or failure document reads) in flight at once: S3 answers each in milliseconds, so a
/// month of results reads in minutes, not hours.
const READS_AT_ONCE: usize = 32;

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
            let store = Arc::new(existing_data(data)?.store(false));
            usage_by_day(store, OUTBOX, &a).await?
        }
        Backend::Aws => {
            let (store, settings) = crate::aws::object_store(&[Var::OutboxBucket]).await?;
            usage_by_day(Arc::new(store), settings.get(Var::OutboxBucket), &a).await?
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

/// Where an outcome keeps its usage.
#[derive(Clone, Copy)]
enum Kind {
    /// A result: in its metadata (a HEAD).
    Result,
    /// A failure document: in its body (a GET).
    Failed,
}

/// What reading one outcome's usage found.
enum Found {
    /// Its usage.
    Usage(Usage),
    /// It carries none: a result written before usage was kept, a failure before any call.
    Nothing,
    /// Gone since the listing.
    Gone,
    /// Metadata or a document that is not what sealbox writes.
    Unreadable,
}

/// Counts of outcomes whose usage is not in the days, to say so.
#[derive(Default)]
struct Missed {
    results_without_usage: usize,
    unreadable: usize,
}

/// Sums the usage of `a.buyer`'s results and failures in the bucket `outbox` by the UTC day of
/// their LastModified; one page of the listing is held at once, besides the days.
async fn usage_by_day(
    store: Arc<dyn ObjectStore>,
    outbox: &str,
    a: &UsageArgs,
) -> anyhow::Result<BTreeMap<Date, Day>> {
    let mut days: BTreeMap<Date, Day> = BTreeMap::new();
    let mut missed = Missed::default();
    for (folder, kind) in [("results", Kind::Result), ("failed", Kind::Failed)] {
        let prefix = format!("{}/{folder}/", a.buyer);
        let mut after: Option<String> = None;
        loop {
            let page = store
                .list(outbox, &prefix, after.as_deref(), USAGE_PAGE)
                .await
                .map_err(|e| store_error(&format!("listing {}", location(outbox, &prefix)), e))?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            // Older than --since: skipped on the listing's word, without a read.
            let wanted = page
                .into_iter()
                .filter(|m| a.since.is_none_or(|since| day_of(m) >= since));
            for (meta, found) in read_all(&store, outbox, kind, wanted).await? {
                match found {
                    Found::Usage(usage) => {
                        let entry = days.entry(day_of(&meta)).or_insert_with(|| Day {
                            requests: 0,
                            usage: Usage::none(),
                        });
                        entry.requests += 1;
                        entry.usage.add(&usage);
                    }
                    Found::Nothing if matches!(kind, Kind::Result) => {
                        missed.results_without_usage += 1;
                    }
                    Found::Nothing | Found::Gone => {}
                    Found::Unreadable => missed.unreadable += 1,
                }
            }
        }
    }
    let under = location(outbox, &format!("{}/", a.buyer));
    if missed.results_without_usage > 0 {
        eprintln!(
            "{} results under {under} carry no usage (written before sealbox kept it) and are \
             not counted",
            missed.results_without_usage
        );
    }
    if missed.unreadable > 0 {
        eprintln!(
            "{} outcomes under {under} have usage that could not be read and are not counted",
            missed.unreadable
        );
    }
    Ok(days)
}

/// The UTC day an outcome counts for: when it was written.
fn day_of(meta: &ObjectMeta) -> Date {
    meta.last_modified.to_offset(time::UtcOffset::UTC).date()
}

/// Reads the usage of each listed outcome, [`READS_AT_ONCE`] at a time, in listing order.
async fn read_all(
    store: &Arc<dyn ObjectStore>,
    outbox: &str,
    kind: Kind,
    listed: impl Iterator<Item = ObjectMeta>,
) -> anyhow::Result<Vec<(ObjectMeta, Found)>> {
    let mut found = Vec::new();
    let mut reads = tokio::task::JoinSet::new();
    let mut listed = listed.enumerate();
    loop {
        while reads.len() < READS_AT_ONCE {
            let Some((n, meta)) = listed.next() else {
                break;
            };
            let (store, outbox) = (store.clone(), outbox.to_owned());
            reads.spawn(async move {
                let read = read_one(store.as_ref(), &outbox, kind, &meta.key).await;
                (n, meta, read)
            });
        }
        let Some(done) = reads.join_next().await else {
            break;
        };
        let (n, meta, read) = done?;
        let read =
            read.map_err(|e| store_error(&format!("reading {}", location(outbox, &meta.key)), e))?;
        found.push((n, meta, read));
    }
    found.sort_unstable_by_key(|(n, _, _)| *n);
    Ok(found.into_iter().map(|(_, m, f)| (m, f)).collect())
}

/// The usage one outcome carries.
async fn read_one(
    store: &dyn ObjectStore,
    outbox: &str,
    kind: Kind,
    key: &str,
) -> sealbox_core::Result<Found> {
    use sealbox_core::Error;
    let found =
        match kind {
            Kind::Result => store.head(outbox, key).await.map(|head| match head {
                None => Found::Gone,
                Some(meta) => match Usage::from_metadata(&meta.metadata) {
                    Ok(Some(usage)) => Found::Usage(usage),
                    Ok(None) => Found::Nothing,
                    Err(_) => Found::Unreadable,
                },
            }),
            Kind::Failed => store.get(outbox, key, DOCUMENT_CAP).await.map(|(_, body)| {
                match serde_json::from_slice::<OutcomeDocument>(&body) {
                    Ok(doc) => doc.usage.map_or(Found::Nothing, Found::Usage),
                    Err(_) => Found::Unreadable,
                }
            }),
        };
    match found {
        Err(Error::NotFound { .. }) => Ok(Found::Gone),
        // An answer about this one object (a hand-placed file, hand-set metadata): not counted,
        // and said so, rather than stopping the sum.
        Err(Error::TooLarge { .. } | Error::NotAFile { .. } | Error::Unreadable { .. }) => {
            Ok(Found::Unreadable)
        }
        other => other,
    }
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
