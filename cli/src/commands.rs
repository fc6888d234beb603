//! The small commands: keys, tokens, submit, results, status, dead letters, and `up`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use sealbox_authz::keyset::RETIRE_AFTER;
use sealbox_authz::subscriptions::SubscriptionRegistry as _;
use sealbox_authz::{KeyAlg, Keyset, TokenIssuer};
use sealbox_core::contract::{InputSpec, OutcomeDocument, RequestObject, Split, is_valid_id};
use sealbox_core::layout::{INBOX, OUTBOX, request_key};
use sealbox_core::ports::{DeadLetterQueue, JobQueue, ObjectStore, PutMode};
use serde_json::json;

use crate::demo::progress_bar;
use crate::stack::{Paths, Stack, StackOptions};

/// `sealbox up`: runs until Ctrl-C or SIGTERM, then drains in-flight jobs.
pub async fn up(opts: StackOptions) -> anyhow::Result<()> {
    let stack = Stack::start(opts, Default::default()).await?;
    println!(
        "sealbox ready: drop request objects into {}/<buyer>/requests/ (model {}, tokens and keys {}, notifications in {})",
        stack.inbox_dir().display(),
        stack.model_url,
        stack.token_url,
        stack.paths.events.display()
    );
    tokio::select! {
        r = wait_for_signal() => r?,
        _ = stack.failed() => {
            stack.stop().await;
            anyhow::bail!("a pipeline task stopped unexpectedly; see the log; restart `sealbox up`");
        }
    }
    eprintln!("sealbox: stopping; finishing the jobs in flight");
    stack.stop().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

/// `sealbox seller keys init`.
pub fn keys_init(data: &Path, issuer: &str, alg: KeyAlg) -> anyhow::Result<()> {
    let paths = Paths::new(data);
    let ks = Keyset::init(&paths.keyset, issuer, alg)?;
    println!(
        "keyset created at {} (issuer {}, current key {})",
        paths.keyset.display(),
        ks.issuer,
        ks.current()?.kid
    );
    Ok(())
}

/// Loads the keyset, changes it and saves it under an exclusive lock, so two key commands at
/// once cannot undo each other (a revocation lost to a concurrent rotation).
fn change_keyset<T>(
    data: &Path,
    change: impl FnOnce(&mut Keyset) -> anyhow::Result<T>,
) -> anyhow::Result<(Keyset, T)> {
    let path = Paths::new(data).keyset;
    let lock_path = path.with_extension("lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("creating {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("locking {}", lock_path.display()))?;
    let mut ks = Keyset::load(&path)?;
    let out = change(&mut ks)?;
    ks.save(&path)?;
    Ok((ks, out))
}

/// `sealbox seller keys rotate`.
pub fn keys_rotate(data: &Path) -> anyhow::Result<()> {
    let (ks, ()) = change_keyset(data, |ks| {
        Ok(ks.rotate(time::OffsetDateTime::now_utc(), RETIRE_AFTER)?)
    })?;
    println!("rotated: {} now signs", ks.current()?.kid);
    Ok(())
}

/// `sealbox seller keys revoke KID`.
pub fn keys_revoke(data: &Path, kid: &str) -> anyhow::Result<()> {
    let (ks, was) = change_keyset(data, |ks| {
        Ok(ks.revoke(kid, time::OffsetDateTime::now_utc(), RETIRE_AFTER)?)
    })?;
    println!("revoked {kid} (was {was:?}); {} signs", ks.current()?.kid);
    Ok(())
}

/// `sealbox seller keys list`.
pub fn keys_list(data: &Path) -> anyhow::Result<()> {
    let ks = Keyset::load(&Paths::new(data).keyset)?;
    let fmt = |t: time::OffsetDateTime| sealbox_core::contract::rfc3339(t);
    println!(
        "{:<18} {:<6} {:<9} {:<22} retires-at",
        "kid", "alg", "state", "created"
    );
    for k in &ks.keys {
        println!(
            "{:<18} {:<6} {:<9} {:<22} {}",
            k.kid,
            k.alg.as_str(),
            format!("{:?}", k.state).to_lowercase(),
            fmt(k.created_at),
            k.retires_at.map(fmt).unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

/// `sealbox seller token`: a token for `buyer`, signed here. Refused for a buyer whose
/// subscription is revoked or expired (its tokens would be denied anyway); a buyer with no
/// subscription at all may get one (tests, trials).
pub async fn seller_token(
    data: &Path,
    buyer: &str,
    product: &str,
    ttl: Duration,
) -> anyhow::Result<String> {
    if let Some(c) = crate::access::registry(data)?
        .credentials(buyer, product)
        .await?
    {
        let now = time::OffsetDateTime::now_utc();
        if !c.subscription.is_active(now) {
            anyhow::bail!(
                "the subscription of {buyer} to {product} is {}; `sealbox seller grant {buyer}` first",
                c.subscription.status_at(now)
            );
        }
    }
    let ks = Keyset::load(&Paths::new(data).keyset)?;
    Ok(TokenIssuer::new(&ks)?.issue(buyer, product, ttl)?)
}

/// Arguments of `sealbox buyer submit`.
#[derive(Args)]
pub struct SubmitArgs {
    /// Input files; each becomes one request whose id is derived from its file name.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Buyer id (the inbox prefix).
    #[arg(long)]
    pub buyer: String,
    /// Token to send (default: one from the token service, see `sealbox buyer token`).
    #[arg(long, env = "SEALBOX_TOKEN")]
    pub token: Option<String>,
    /// How to get a token when none is given.
    #[command(flatten)]
    pub credentials: crate::access::BuyerCredentials,
    /// MIME type of the inputs (default: from the file extension).
    #[arg(long)]
    pub content_type: Option<String>,
    /// MIME type wanted back (default: the content type).
    #[arg(long)]
    pub accept: Option<String>,
    /// Split each input into lines, batched into invocations.
    #[arg(long)]
    pub split_lines: bool,
}

/// A request id from a file name: its stem, cut to the allowed characters and length.
pub fn request_id_for(path: &Path) -> Option<String> {
    let stem = path.file_stem()?.to_string_lossy();
    let id: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    is_valid_id(&id).then_some(id)
}

fn media_type_for(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("csv") => "text/csv",
        Some("json") => "application/json",
        Some("txt") => "text/plain",
        _ => "application/octet-stream",
    }
}

/// `sealbox buyer submit`.
pub async fn submit(data: &Path, a: SubmitArgs) -> anyhow::Result<ExitCode> {
    let store = Paths::new(data).store(false);
    let token = match &a.token {
        Some(t) => t.clone(),
        None => crate::access::buyer_token(data, &a.buyer, &a.credentials, None, false).await?,
    };
    let pb = progress_bar(a.files.len() as u64, a.files.len() < 2);
    let mut failed = 0;
    let mut ids = std::collections::HashMap::new();
    for file in &a.files {
        let Some(id) = request_id_for(file) else {
            eprintln!("{}: no usable request id in the file name", file.display());
            failed += 1;
            continue;
        };
        // Two files whose names map to one id would be one request: refuse the second.
        if let Some(first) = ids.insert(id.clone(), file.clone()) {
            eprintln!(
                "{}: its request id {id} is already used by {}; rename one of them",
                file.display(),
                first.display()
            );
            failed += 1;
            continue;
        }
        let bytes = match tokio::fs::read(file).await {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                failed += 1;
                continue;
            }
        };
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let input_key = format!("{}/inputs/{id}/{}", a.buyer, name.replace('/', "_"));
        store
            .put(INBOX, &input_key, Bytes::from(bytes), PutMode::Overwrite)
            .await?;
        let content_type = a
            .content_type
            .clone()
            .unwrap_or_else(|| media_type_for(file).into());
        let request = RequestObject {
            version: 1,
            request_id: id.clone(),
            token: Some(token.clone()),
            input: InputSpec {
                s3_key: Some(input_key),
                ..InputSpec::default()
            },
            accept: a.accept.clone().unwrap_or_else(|| content_type.clone()),
            content_type,
            custom_attributes: None,
            ttl_seconds: None,
            split: if a.split_lines {
                Split::Line
            } else {
                Split::None
            },
        };
        let key = request_key(&a.buyer, &id);
        store
            .put(
                INBOX,
                &key,
                Bytes::from(serde_json::to_vec(&request)?),
                PutMode::Overwrite,
            )
            .await?;
        pb.inc(1);
        pb.println(format!("{id}\t{}", file.display()));
    }
    pb.finish_and_clear();
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

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
}

/// `sealbox buyer results`.
pub async fn results(data: &Path, a: ResultsArgs) -> anyhow::Result<ExitCode> {
    let store = Paths::new(data).store(false);
    for (dir, outcome) in [
        ("results", "completed"),
        ("failed", "failed"),
        ("rejected", "rejected"),
    ] {
        let prefix = format!("{}/{dir}/", a.buyer);
        let mut after: Option<String> = None;
        loop {
            let page = store.list(OUTBOX, &prefix, after.as_deref(), 1000).await?;
            let Some(last) = page.last() else { break };
            after = Some(last.key.clone());
            for m in &page {
                let file = m.key.rsplit('/').next().unwrap_or_default().to_owned();
                let id = file
                    .rsplit_once('.')
                    .map(|(s, _)| s.to_owned())
                    .unwrap_or(file.clone());
                let reason = if outcome == "completed" {
                    None
                } else {
                    let (_, body) = store.get(OUTBOX, &m.key, 1024 * 1024).await?;
                    serde_json::from_slice::<OutcomeDocument>(&body)
                        .ok()
                        .map(|d| d.reason.to_string())
                };
                if a.json {
                    println!(
                        "{}",
                        json!({"request_id": id, "outcome": outcome, "reason": reason, "key": m.key, "bytes": m.size})
                    );
                } else {
                    println!(
                        "{id}\t{outcome}\t{}\t{} bytes",
                        reason.unwrap_or_default(),
                        m.size
                    );
                }
                if let Some(dest) = &a.fetch {
                    let (_, mut body) = store.get_stream(OUTBOX, &m.key).await?;
                    let path = dest.join(dir).join(&file);
                    if let Some(parent) = path.parent() {
                        tokio::fs::create_dir_all(parent).await?;
                    }
                    let mut out = tokio::fs::File::create(&path)
                        .await
                        .with_context(|| format!("writing {}", path.display()))?;
                    tokio::io::copy(&mut body, &mut out)
                        .await
                        .with_context(|| format!("writing {}", path.display()))?;
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `sealbox status`.
pub async fn status(data: &Path, as_json: bool) -> anyhow::Result<()> {
    let (events, jobs) = Paths::new(data).queues(5)?;
    let mut rows = Vec::new();
    for q in [&events, &jobs] {
        let s = q.stats().await?;
        let dead = q.dead_count().await?;
        rows.push(json!({
            "queue": q.name(),
            "backlog": s.visible + s.delayed,
            "in_flight": s.in_flight,
            "dead_letters": dead,
            "oldest_age_seconds": s.oldest_age.map(|d| d.as_secs_f64()),
        }));
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        println!(
            "{:<14} {:>8} {:>10} {:>13} {:>12}",
            "queue", "backlog", "in flight", "dead letters", "oldest (s)"
        );
        for r in &rows {
            println!(
                "{:<14} {:>8} {:>10} {:>13} {:>12}",
                r["queue"].as_str().unwrap_or_default(),
                r["backlog"],
                r["in_flight"],
                r["dead_letters"],
                r["oldest_age_seconds"]
                    .as_f64()
                    .map(|s| format!("{s:.1}"))
                    .unwrap_or_else(|| "-".into()),
            );
        }
    }
    Ok(())
}

/// A queue with a dead-letter queue.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum QueueName {
    /// Jobs for the worker.
    Jobs,
    /// Inbox events for ingest.
    InboxEvents,
}

fn queue_of(
    data: &Path,
    name: QueueName,
) -> anyhow::Result<sealbox_core::adapters::sqlite_queue::SqliteQueue> {
    let (events, jobs) = Paths::new(data).queues(5)?;
    Ok(match name {
        QueueName::Jobs => jobs,
        QueueName::InboxEvents => events,
    })
}

/// `sealbox dlq list`.
pub async fn dlq_list(data: &Path, name: QueueName, max: usize) -> anyhow::Result<()> {
    for d in queue_of(data, name)?.list_dead(max).await? {
        println!("{}\treceives={}\t{}", d.message_id, d.receive_count, d.body);
    }
    Ok(())
}

/// `sealbox dlq redrive`.
pub async fn dlq_redrive(data: &Path, name: QueueName, max: usize) -> anyhow::Result<()> {
    let q = queue_of(data, name)?;
    let n = q.redrive(max).await?;
    println!("moved {n} messages back to the {} queue", q.name());
    Ok(())
}
