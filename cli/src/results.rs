//! `sealbox buyer results`: the outcomes of a buyer, a page at a time, optionally fetched.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use sealbox_aws::config::Var;
use sealbox_core::contract::OutcomeDocument;
use sealbox_core::layout::{OUTBOX, location};
use sealbox_core::ports::ObjectStore;
use serde_json::json;

use crate::output::{Backend, Table, emit, existing_data, io_sentence, store_error};

/// Arguments of `sealbox buyer results`.
#[derive(Args)]
pub struct ResultsArgs {
    /// Buyer id.
    #[arg(long)]
    pub buyer: String,
    /// Copy each result and document into this folder.
    #[arg(long)]
    pub fetch: Option<PathBuf>,
    /// Print JSON lines.
    #[arg(long)]
    pub json: bool,
    /// Where the outcomes are: the outbox of the data directory, or on AWS the bucket
    /// $SEALBOX_OUTBOX_BUCKET.
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,
}

/// Largest failure or rejection document read for its reason (they are a few hundred bytes).
pub(crate) const DOCUMENT_CAP: u64 = 64 * 1024;
/// Outcomes listed, and printed, at a time.
const RESULTS_PAGE: usize = 1000;

/// `sealbox buyer results`: the outcomes in the outbox of the backend `a` names.
pub async fn results(data: &Path, a: ResultsArgs) -> anyhow::Result<ExitCode> {
    crate::access::check_buyer(&a.buyer)?;
    match a.backend {
        Backend::Embedded => print_outcomes(&existing_data(data)?.store(false), OUTBOX, &a).await,
        Backend::Aws => {
            let (store, settings) = crate::aws::object_store(&[Var::OutboxBucket]).await?;
            print_outcomes(&store, settings.get(Var::OutboxBucket), &a).await
        }
    }
}

/// The outcomes of `a.buyer` in the bucket `outbox` of `store`, one line per outcome, printed
/// a page at a time; only one page of listings and one document are held at once.
async fn print_outcomes(
    store: &dyn ObjectStore,
    outbox: &str,
    a: &ResultsArgs,
) -> anyhow::Result<ExitCode> {
    let mut table = Table::new(&[
        ("request", false),
        ("outcome", false),
        ("reason", false),
        ("bytes", true),
    ]);
    let mut printed = 0usize;
    for (dir, outcome) in [
        ("results", "completed"),
        ("failed", "failed"),
        ("rejected", "rejected"),
    ] {
        let prefix = format!("{}/{dir}/", a.buyer);
        let mut after: Option<String> = None;
        loop {
            let page = store
                .list(outbox, &prefix, after.as_deref(), RESULTS_PAGE)
                .await
                .map_err(|e| store_error(&format!("listing {}", location(outbox, &prefix)), e))?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            let mut rows = Vec::with_capacity(page.len());
            let mut json_out = String::new();
            for m in &page {
                let file = m.key.rsplit('/').next().unwrap_or_default().to_owned();
                let id = file
                    .rsplit_once('.')
                    .map(|(s, _)| s.to_owned())
                    .unwrap_or(file.clone());
                let reason = if outcome == "completed" {
                    None
                } else {
                    Some(match store.get(outbox, &m.key, DOCUMENT_CAP).await {
                        Ok((_, body)) => serde_json::from_slice::<OutcomeDocument>(&body)
                            .map(|d| d.reason.to_string())
                            .unwrap_or_else(|_| "unreadable-document".into()),
                        // Removed since the listing: nothing to report for it.
                        Err(sealbox_core::Error::NotFound { .. }) => continue,
                        Err(sealbox_core::Error::TooLarge { .. }) => "unreadable-document".into(),
                        Err(e) => {
                            return Err(store_error(
                                &format!("reading {}", location(outbox, &m.key)),
                                e,
                            ));
                        }
                    })
                };
                if let Some(dest) = &a.fetch {
                    fetch_one(store, outbox, &m.key, &dest.join(dir).join(&file)).await?;
                }
                if a.json {
                    json_out.push_str(
                        &json!({"request_id": id, "outcome": outcome, "reason": reason, "key": m.key, "location": location(outbox, &m.key), "bytes": m.size})
                            .to_string(),
                    );
                    json_out.push('\n');
                } else {
                    rows.push(vec![
                        id,
                        outcome.to_owned(),
                        reason.unwrap_or_else(|| "-".into()),
                        m.size.to_string(),
                    ]);
                }
            }
            printed += if a.json {
                json_out.lines().count()
            } else {
                rows.len()
            };
            if a.json {
                emit(&json_out)?;
            } else {
                table.fit(&rows);
                let mut out = String::new();
                if printed == rows.len() && !rows.is_empty() {
                    table.header(&mut out);
                }
                table.rows(&rows, &mut out);
                emit(&out)?;
            }
        }
    }
    if printed == 0 {
        eprintln!(
            "no outcomes yet for buyer {} (under {})",
            a.buyer,
            location(outbox, &format!("{}/", a.buyer))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies the object `key` of the bucket `outbox` to `path`, streaming.
async fn fetch_one(
    store: &dyn ObjectStore,
    outbox: &str,
    key: &str,
    path: &Path,
) -> anyhow::Result<()> {
    let cannot =
        |e: std::io::Error| anyhow::anyhow!("cannot write {}: {}", path.display(), io_sentence(&e));
    let (_, mut body) = match store.get_stream(outbox, key).await {
        Ok(got) => got,
        Err(sealbox_core::Error::NotFound { .. }) => return Ok(()),
        Err(e) => {
            return Err(store_error(
                &format!("reading {}", location(outbox, key)),
                e,
            ));
        }
    };
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await.map_err(cannot)?;
    }
    let mut out = tokio::fs::File::create(path).await.map_err(cannot)?;
    tokio::io::copy(&mut body, &mut out).await.map_err(cannot)?;
    Ok(())
}
