//! The small commands: `up`, keys, seller tokens, status and dead letters.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use sealbox_authz::keyset::RETIRE_AFTER;
use sealbox_authz::subscriptions::SubscriptionRegistry as _;
use sealbox_authz::{KeyAlg, Keyset, TokenIssuer};
use sealbox_aws::config::Var;
use sealbox_core::contract::rfc3339;
use sealbox_core::ports::QueueAdmin;
use sealbox_embedded::sqlite_queue::SqliteQueue;
use serde_json::json;

use crate::output::{Backend, Table, emit, existing_data, io_sentence, store_error};
use crate::stack::{INBOX_EVENTS, JOBS, Paths, Stack, StackOptions};

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

/// Completes on Ctrl-C or SIGTERM.
pub async fn wait_for_signal() -> anyhow::Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Seller keys and tokens.

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
    // Loaded once before locking, so a missing keyset says `seller keys init` and the lock
    // file is never created in a folder without one.
    Keyset::load(&path)?;
    let lock_path = path.with_extension("lock");
    let lock = std::fs::File::create(&lock_path).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the keyset lock {}: {}",
            lock_path.display(),
            io_sentence(&e)
        )
    })?;
    lock.lock().map_err(|e| {
        anyhow::anyhow!(
            "cannot lock the keyset ({}): {}",
            lock_path.display(),
            io_sentence(&e)
        )
    })?;
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
    let paths = existing_data(data)?;
    let ks = Keyset::load(&paths.keyset)?;
    let rows: Vec<Vec<String>> = ks
        .keys
        .iter()
        .map(|k| {
            vec![
                k.kid.clone(),
                k.alg.as_str().to_owned(),
                format!("{:?}", k.state).to_lowercase(),
                rfc3339(k.created_at),
                k.retires_at.map(rfc3339).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let table = Table::new(&[
        ("kid", false),
        ("alg", false),
        ("state", false),
        ("created", false),
        ("retires-at", false),
    ]);
    emit(&table.render(&rows))
}

/// `sealbox seller token`: a token for `buyer`, signed here, for subscribed buyers only: a
/// buyer never granted, revoked or expired is refused alike (ingest would otherwise accept a
/// token the subscription registry knows nothing about).
pub async fn seller_token(
    data: &Path,
    buyer: &str,
    product: &str,
    ttl: Duration,
) -> anyhow::Result<String> {
    crate::access::check_buyer(buyer)?;
    // Arguments first: a lifetime out of range is wrong whoever the buyer.
    if ttl.is_zero() || ttl > sealbox_authz::token::MAX_TOKEN_LIFETIME {
        return Err(sealbox_authz::AuthzError::BadLifetime(ttl.as_secs()).into());
    }
    let paths = Paths::new(data);
    // Keys first: without them nothing can be signed, whoever the buyer.
    let ks = Keyset::load(&paths.keyset)?;
    let now = time::OffsetDateTime::now_utc();
    // No registry yet means no buyer was ever granted; opening it would create one.
    let credentials = if paths.subscriptions.exists() {
        crate::access::registry(data)?
            .credentials(buyer, product)
            .await?
    } else {
        None
    };
    match credentials {
        None => bail!(
            "{buyer} has no subscription to {product}: it was never granted one. Run \
             `sealbox seller grant {buyer}` first"
        ),
        Some(c) if !c.subscription.is_active(now) => bail!(
            "the subscription of {buyer} to {product} is {}. Run `sealbox seller grant {buyer}` \
             to renew it",
            c.subscription.status_at(now)
        ),
        Some(_) => {}
    }
    Ok(TokenIssuer::new(&ks)?.issue(buyer, product, ttl)?)
}

// ---------------------------------------------------------------------------------------------
// Operator: status and dead letters, over the `QueueAdmin` port on either backend.

/// A queue with a dead-letter queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum QueueName {
    /// Jobs for the worker.
    Jobs,
    /// Inbox events for ingest.
    InboxEvents,
}

impl QueueName {
    /// The queue's name, as the commands print it (the embedded queue's own name).
    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Jobs => JOBS,
            QueueName::InboxEvents => INBOX_EVENTS,
        }
    }

    /// The setting holding the queue's URL on AWS.
    fn setting(self) -> Var {
        match self {
            QueueName::Jobs => Var::JobsQueueUrl,
            QueueName::InboxEvents => Var::InboxEventsQueueUrl,
        }
    }
}

/// The queues of an existing data directory; creates nothing.
fn existing_queues(data: &Path) -> anyhow::Result<(SqliteQueue, SqliteQueue)> {
    let paths = existing_data(data)?;
    if !paths.queue_db.is_file() {
        bail!(
            "no queues at {}: the stack has not run in {} yet; start it with `sealbox up \
             --data-dir {}`",
            paths.queue_db.display(),
            data.display(),
            data.display()
        );
    }
    Ok(paths.queues(5)?)
}

/// The operators' side of the queues `names` on `backend`, in that order. Embedded: the
/// queues of an existing data directory (creates nothing). AWS: the queues whose URLs are the
/// settings of `names` (each missing one named); each finds its dead-letter queue from its
/// redrive policy.
async fn admin_queues(
    backend: Backend,
    data: &Path,
    names: &[QueueName],
) -> anyhow::Result<Vec<Box<dyn QueueAdmin>>> {
    Ok(match backend {
        Backend::Embedded => {
            let (events, jobs) = existing_queues(data)?;
            names
                .iter()
                .map(|name| -> Box<dyn QueueAdmin> {
                    match name {
                        QueueName::Jobs => Box::new(jobs.clone()),
                        QueueName::InboxEvents => Box::new(events.clone()),
                    }
                })
                .collect()
        }
        Backend::Aws => {
            let settings: Vec<Var> = names.iter().map(|n| n.setting()).collect();
            crate::aws::queues(&settings)
                .await?
                .into_iter()
                .map(|q| -> Box<dyn QueueAdmin> { Box::new(q) })
                .collect()
        }
    })
}

/// What a queue operation failed at, in words.
fn queue_error(doing: &str, name: QueueName, e: sealbox_core::Error) -> anyhow::Error {
    store_error(&format!("{doing} the {} queue", name.as_str()), e)
}

/// `sealbox status`: backlog, in flight, dead letters and the age of the oldest message of the
/// inbox-events and jobs queues. The age is unknown on AWS (SQS publishes it only as a
/// CloudWatch metric): `null` in JSON, `unknown` in the table.
pub async fn status(backend: Backend, data: &Path, as_json: bool) -> anyhow::Result<()> {
    let names = [QueueName::InboxEvents, QueueName::Jobs];
    let queues = admin_queues(backend, data, &names).await?;
    // Embedded, no age means an empty queue; on AWS, that it is not known.
    let age_unknown = match backend {
        Backend::Embedded => "-",
        Backend::Aws => "unknown",
    };
    let mut rows = Vec::new();
    for (name, q) in names.into_iter().zip(&queues) {
        let s = q
            .stats()
            .await
            .map_err(|e| queue_error("reading the counts of", name, e))?;
        let dead = q
            .dead_count()
            .await
            .map_err(|e| queue_error("counting the dead letters of", name, e))?;
        rows.push(json!({
            "queue": name.as_str(),
            "backlog": s.visible + s.delayed,
            "in_flight": s.in_flight,
            "dead_letters": dead,
            "oldest_age_seconds": s.oldest_age.map(|d| d.as_secs_f64()),
        }));
    }
    if as_json {
        return emit(&format!("{}\n", serde_json::to_string_pretty(&rows)?));
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r["queue"].as_str().unwrap_or_default().to_owned(),
                r["backlog"].to_string(),
                r["in_flight"].to_string(),
                r["dead_letters"].to_string(),
                r["oldest_age_seconds"]
                    .as_f64()
                    .map(|s| format!("{s:.1}"))
                    .unwrap_or_else(|| age_unknown.into()),
            ]
        })
        .collect();
    let table = Table::new(&[
        ("queue", false),
        ("backlog", true),
        ("in flight", true),
        ("dead letters", true),
        ("oldest (s)", true),
    ]);
    emit(&table.render(&cells))
}

/// The operators' side of one queue on `backend`.
async fn admin_queue(
    backend: Backend,
    data: &Path,
    name: QueueName,
) -> anyhow::Result<Box<dyn QueueAdmin>> {
    admin_queues(backend, data, &[name])
        .await?
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no {} queue", name.as_str()))
}

/// `sealbox dlq list`.
pub async fn dlq_list(
    backend: Backend,
    data: &Path,
    name: QueueName,
    max: usize,
) -> anyhow::Result<()> {
    let q = admin_queue(backend, data, name).await?;
    let dead = q
        .list_dead(max)
        .await
        .map_err(|e| queue_error("listing the dead letters of", name, e))?;
    if dead.is_empty() {
        eprintln!("no dead letters in the {} queue", name.as_str());
    }
    let mut out = String::new();
    for d in dead {
        out.push_str(&format!(
            "{}\treceives={}\t{}\n",
            d.message_id, d.receive_count, d.body
        ));
    }
    emit(&out)
}

/// `sealbox dlq redrive`.
pub async fn dlq_redrive(
    backend: Backend,
    data: &Path,
    name: QueueName,
    max: usize,
) -> anyhow::Result<()> {
    let q = admin_queue(backend, data, name).await?;
    let n = q
        .redrive(max)
        .await
        .map_err(|e| queue_error("moving the dead letters back to", name, e))?;
    println!("moved {n} messages back to the {} queue", name.as_str());
    Ok(())
}
