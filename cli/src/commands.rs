//! The small commands: `up`, keys, seller tokens, status and dead letters.

use std::path::Path;
use std::time::Duration;

use anyhow::bail;
use sealbox_authz::key_store::file::FileKeyStore;
use sealbox_authz::subscriptions::SubscriptionRegistry;
use sealbox_authz::token::issue_through;
use sealbox_authz::{KeyAlg, KeyStore, Keyset};
use sealbox_aws::config::Var;
use sealbox_core::contract::rfc3339;
use sealbox_core::ports::QueueAdmin;
use sealbox_embedded::sqlite_queue::SqliteQueue;
use serde_json::json;

use crate::output::{Backend, Table, emit, existing_data, store_error};
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

fn file_keys(data: &Path) -> FileKeyStore {
    FileKeyStore::new(Paths::new(data).keyset)
}

/// `sealbox seller keys rotate`.
pub async fn keys_rotate(data: &Path) -> anyhow::Result<()> {
    keys_rotate_in(&file_keys(data)).await
}

/// Rotates the keys of `store` once, from the current key it has now.
pub async fn keys_rotate_in(store: &dyn KeyStore) -> anyhow::Result<()> {
    let from = store.load().await?.current()?.kid.clone();
    let r = store.rotate(&from, time::OffsetDateTime::now_utc()).await?;
    let now_signing = &r.keyset.current()?.kid;
    if r.rotated {
        println!("rotated: {now_signing} now signs");
    } else {
        println!(
            "another rotation changed the keyset first; {now_signing} now signs (not rotated again)"
        );
    }
    Ok(())
}

/// `sealbox seller keys revoke KID`.
pub async fn keys_revoke(data: &Path, kid: &str) -> anyhow::Result<()> {
    keys_revoke_in(&file_keys(data), kid).await
}

/// Revokes key `kid` of `store`.
pub async fn keys_revoke_in(store: &dyn KeyStore, kid: &str) -> anyhow::Result<()> {
    let (ks, was) = store.revoke(kid, time::OffsetDateTime::now_utc()).await?;
    println!("revoked {kid} (was {was:?}); {} signs", ks.current()?.kid);
    Ok(())
}

/// `sealbox seller keys list`.
pub fn keys_list(data: &Path, json: bool) -> anyhow::Result<()> {
    let paths = existing_data(data)?;
    print_keys(&Keyset::load(&paths.keyset)?, json)
}

/// Prints kid, algorithm, state, created and retires-at of each key, as a table or as JSON
/// lines (one object per key, the form of every listing's `--json`).
pub fn print_keys(ks: &Keyset, json: bool) -> anyhow::Result<()> {
    if json {
        let mut out = String::new();
        for k in &ks.keys {
            let line = json!({
                "kid": k.kid,
                "alg": k.alg.as_str(),
                "state": format!("{:?}", k.state).to_lowercase(),
                "created_at": rfc3339(k.created_at),
                "retires_at": k.retires_at.map(rfc3339),
            });
            out.push_str(&format!("{line}\n"));
        }
        return emit(&out);
    }
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
    let paths = Paths::new(data);
    // No registry yet means no buyer was ever granted; opening it would create one.
    let registry = if paths.subscriptions.exists() {
        Some(crate::access::registry(data)?)
    } else {
        None
    };
    let registry = registry.as_ref().map(|r| r as &dyn SubscriptionRegistry);
    seller_token_in(&file_keys(data), registry, buyer, product, ttl).await
}

/// A token for `buyer`, signed through `keys`, if `registry` holds an active subscription.
pub async fn seller_token_in(
    keys: &dyn KeyStore,
    registry: Option<&dyn SubscriptionRegistry>,
    buyer: &str,
    product: &str,
    ttl: Duration,
) -> anyhow::Result<String> {
    crate::access::check_buyer(buyer)?;
    // Arguments first: a lifetime out of range is wrong whoever the buyer.
    if ttl.is_zero() || ttl > sealbox_authz::token::MAX_TOKEN_LIFETIME {
        return Err(sealbox_authz::AuthzError::BadLifetime(ttl.as_secs()).into());
    }
    // Keys first: without them nothing can be signed, whoever the buyer.
    let ks = keys.load().await?;
    let now = time::OffsetDateTime::now_utc();
    let credentials = match registry {
        Some(r) => r.credentials(buyer, product).await?,
        None => None,
    };
    let grant = match credentials {
        None => bail!(
            "{buyer} has no subscription to {product}: it was never granted one. Run \
             `sealbox seller grant {buyer}` first"
        ),
        Some(c) if !c.subscription.is_active(now) => bail!(
            "the subscription of {buyer} to {product} is {}. Run `sealbox seller grant {buyer}` \
             to renew it",
            c.subscription.status_at(now)
        ),
        Some(c) => c.subscription.grant_id,
    };
    Ok(issue_through(keys, &ks, buyer, product, &grant, ttl).await?)
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
    json: bool,
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
        if json {
            // The body is the queue's JSON message when it is one, else the text as received.
            let body = serde_json::from_str::<serde_json::Value>(&d.body)
                .unwrap_or_else(|_| serde_json::Value::String(d.body.clone()));
            let line =
                json!({"message_id": d.message_id, "receive_count": d.receive_count, "body": body});
            out.push_str(&format!("{line}\n"));
            continue;
        }
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
