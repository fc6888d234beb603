//! `sealbox buyer results`: the outcomes of a buyer, a page at a time, optionally fetched.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Args;
use sealbox_aws::config::Var;
use sealbox_core::contract::{OutcomeDocument, is_valid_id, rfc3339};
use sealbox_core::layout::{INBOX, OUTBOX, location};
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
    /// $SEALBOX_OUTBOX_BUCKET (and $SEALBOX_INBOX_BUCKET, for the requests still pending).
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
        Backend::Embedded => {
            let store = existing_data(data)?.store(false);
            print_outcomes(&store, INBOX, OUTBOX, &a).await
        }
        Backend::Aws => {
            let (store, settings) =
                crate::aws::object_store(&[Var::InboxBucket, Var::OutboxBucket]).await?;
            let (inbox, outbox) = (
                settings.get(Var::InboxBucket),
                settings.get(Var::OutboxBucket),
            );
            print_outcomes(&store, inbox, outbox, &a).await
        }
    }
}

/// Table rows held until a page is full: a listing of up to a page is one aligned table, a
/// longer one is printed a page at a time (aligned as far as widths allow).
struct Paged {
    table: Table,
    held: Vec<Vec<String>>,
    header_done: bool,
}

impl Paged {
    fn push(&mut self, rows: Vec<Vec<String>>) -> anyhow::Result<()> {
        self.held.extend(rows);
        if self.held.len() >= RESULTS_PAGE {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> anyhow::Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        self.table.fit(&self.held);
        let mut out = String::new();
        if !self.header_done {
            self.table.header(&mut out);
            self.header_done = true;
        }
        self.table.rows(&self.held, &mut out);
        self.held.clear();
        emit(&out)
    }
}

/// The outcomes of `a.buyer` in the bucket `outbox` of `store`, one line per outcome, then
/// the requests in `inbox` that have none yet (pending, with their age), printed a page at a
/// time; one page of listings, one document and the answered ids (to tell pending requests
/// apart) are held at once.
async fn print_outcomes(
    store: &dyn ObjectStore,
    inbox: &str,
    outbox: &str,
    a: &ResultsArgs,
) -> anyhow::Result<ExitCode> {
    let mut answered = std::collections::HashSet::new();
    let mut table = Paged {
        table: Table::new(&[
            ("request", false),
            ("outcome", false),
            ("reason", false),
            ("bytes", true),
        ]),
        held: Vec::new(),
        header_done: false,
    };
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
                answered.insert(id.clone());
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
                table.push(rows)?;
            }
        }
    }
    let finished = printed;
    // Then the requests with no outcome yet. The same id can be listed as answered above
    // and as a request here (both exist once it is answered): the outcome wins.
    let prefix = format!("{}/requests/", a.buyer);
    let now = time::OffsetDateTime::now_utc();
    let (mut submitted, mut pending) = (0usize, 0usize);
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list(inbox, &prefix, after.as_deref(), RESULTS_PAGE)
            .await
            .map_err(|e| store_error(&format!("listing {}", location(inbox, &prefix)), e))?;
        let Some(last) = page.last() else { break };
        after = Some(last.key.clone());
        let mut rows = Vec::new();
        let mut json_out = String::new();
        for m in &page {
            // Only `<buyer>/requests/<id>.json` is a request object, as on S3.
            let Some(id) = m
                .key
                .strip_prefix(&prefix)
                .and_then(|name| name.strip_suffix(".json"))
                .filter(|id| is_valid_id(id))
            else {
                continue;
            };
            submitted += 1;
            if answered.contains(id) {
                continue;
            }
            let waited = (now - m.last_modified).whole_seconds();
            if a.json {
                json_out.push_str(
                    &json!({"request_id": id, "outcome": "pending", "reason": null,
                            "key": m.key, "location": location(inbox, &m.key),
                            "submitted_at": rfc3339(m.last_modified), "age_seconds": waited.max(0)})
                    .to_string(),
                );
                json_out.push('\n');
            } else {
                rows.push(vec![
                    id.to_owned(),
                    "pending".to_owned(),
                    format!("submitted {} ago", crate::output::short_duration(waited)),
                    "-".to_owned(),
                ]);
            }
            pending += 1;
        }
        if a.json {
            emit(&json_out)?;
        } else {
            table.push(rows)?;
        }
    }
    table.flush()?;
    let buyer = &a.buyer;
    if finished == 0 && submitted == 0 {
        eprintln!(
            "no request was ever submitted under buyer {buyer}: nothing under {} or {}; check \
             the buyer id (and --data-dir or --backend)",
            location(inbox, &prefix),
            location(outbox, &format!("{buyer}/"))
        );
    } else if finished == 0 {
        eprintln!("nothing finished yet for buyer {buyer}: {pending} pending");
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
