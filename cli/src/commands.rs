//! The small commands: keys, tokens, submit, results, status, dead letters, and `up`.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::bail;
use clap::Args;
use sealbox_authz::keyset::RETIRE_AFTER;
use sealbox_authz::subscriptions::SubscriptionRegistry as _;
use sealbox_authz::{KeyAlg, Keyset, TokenIssuer};
use sealbox_core::contract::{
    InputSpec, MAX_REQUEST_OBJECT_BYTES, OutcomeDocument, RequestObject, Split, is_valid_id,
    rfc3339,
};
use sealbox_core::layout::{
    INBOX, OUTBOX, TEMP_PREFIX, check_key, failed_key, location, rejected_key, request_key,
    result_key,
};
use sealbox_core::ports::{DeadLetterQueue, JobQueue, ObjectStore, PutMode};
use serde_json::json;
use tokio::io::AsyncReadExt as _;

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

// ---------------------------------------------------------------------------------------------
// Shared by the commands: the data directory, plain-language errors, and output.

/// The layout of `data`, refusing a folder that holds no sealbox data (a mistyped
/// `--data-dir`, or a command run in the wrong folder). Creates nothing: read-only commands
/// must not leave an empty data directory behind that later looks like a healthy, idle one.
pub(crate) fn existing_data(data: &Path) -> anyhow::Result<Paths> {
    let paths = Paths::new(data);
    let markers = [
        &paths.queue_db,
        &paths.buckets,
        &paths.keyset,
        &paths.subscriptions,
        &paths.token_url,
    ];
    if data.is_dir() && markers.iter().any(|p| p.exists()) {
        return Ok(paths);
    }
    let shown = data.display();
    let what = if data.exists() && !data.is_dir() {
        "it is a file, not a folder"
    } else if data.exists() {
        "the folder holds no queues, buckets or seller keys"
    } else {
        "there is no such folder"
    };
    bail!(
        "no sealbox data at {shown} ({what}): start a stack there with `sealbox up --data-dir \
         {shown}`, or point --data-dir (or SEALBOX_DATA_DIR) at the folder `sealbox up` uses"
    )
}

/// What an I/O error means, in words a user can act on (instead of "os error 2").
pub(crate) fn io_sentence(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::NotFound => "there is no such file or folder; check the path".into(),
        K::PermissionDenied => {
            "permission denied; check the owner and mode of the file and its folders".into()
        }
        K::IsADirectory => "it is a folder, not a file".into(),
        K::NotADirectory => "a part of the path is a file, not a folder".into(),
        K::AlreadyExists => "something already exists there".into(),
        K::StorageFull => "the disk is full; free some space and try again".into(),
        K::ReadOnlyFilesystem => "the file system is read-only".into(),
        K::BrokenPipe => "the reader closed the pipe".into(),
        _ => format!("{e}"),
    }
}

/// A store error as a sentence: what was being done, and the cause in words.
pub(crate) fn store_error(doing: &str, e: sealbox_core::Error) -> anyhow::Error {
    match e {
        sealbox_core::Error::Io { context, source } => {
            anyhow::anyhow!("{doing}: {context}: {}", io_sentence(&source))
        }
        other => anyhow::anyhow!("{doing}: {other}"),
    }
}

/// Writes `text` to standard output at once. A reader that went away (`| head`) ends the
/// command quietly, as it does for other command-line tools.
pub(crate) fn emit(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => bail!("writing to standard output: {}", io_sentence(&e)),
    }
}

/// Columns of text whose widths fit their widest cell; numbers are right-aligned. Widths only
/// grow, so a table printed a page at a time stays aligned as far as it can.
pub(crate) struct Table {
    header: Vec<&'static str>,
    right: Vec<bool>,
    widths: Vec<usize>,
}

impl Table {
    /// A table with these columns: `(title, right-aligned)`.
    pub(crate) fn new(columns: &[(&'static str, bool)]) -> Table {
        Table {
            header: columns.iter().map(|c| c.0).collect(),
            right: columns.iter().map(|c| c.1).collect(),
            widths: columns.iter().map(|c| c.0.chars().count()).collect(),
        }
    }

    /// Widens the columns to fit `rows`.
    pub(crate) fn fit(&mut self, rows: &[Vec<String>]) {
        for row in rows {
            for (w, cell) in self.widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
    }

    fn line(&self, cells: &[&str], out: &mut String) {
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            let width = self.widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count());
            let right = self.right.get(i).copied().unwrap_or(false);
            if i > 0 {
                out.push_str("  ");
            }
            if right {
                out.extend(std::iter::repeat_n(' ', pad));
                out.push_str(cell);
            } else {
                out.push_str(cell);
                if i < last {
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
        }
        out.push('\n');
    }

    /// The header line.
    pub(crate) fn header(&self, out: &mut String) {
        let cells = self.header.clone();
        self.line(&cells, out);
    }

    /// One line per row.
    pub(crate) fn rows(&self, rows: &[Vec<String>], out: &mut String) {
        for row in rows {
            let cells: Vec<&str> = row.iter().map(String::as_str).collect();
            self.line(&cells, out);
        }
    }

    /// The whole table, header first, fitted to `rows`.
    pub(crate) fn render(mut self, rows: &[Vec<String>]) -> String {
        self.fit(rows);
        let mut out = String::new();
        self.header(&mut out);
        self.rows(rows, &mut out);
        out
    }
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
// Buyer: submit.

/// Arguments of `sealbox buyer submit`.
#[derive(Args)]
pub struct SubmitArgs {
    /// Input files; each becomes one request whose id is derived from its file name (its
    /// name without the extension, e.g. `batch` for `day1/batch.csv`).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Buyer id (the inbox prefix).
    #[arg(long)]
    pub buyer: String,
    /// Request id to use instead of the file name (one file only). A request id is answered
    /// once: to send new content under a name already submitted, pick a new id.
    #[arg(long, value_parser = parse_request_id, conflicts_with = "id_prefix")]
    pub request_id: Option<String>,
    /// Put this before each request id derived from a file name (e.g. `2025-06-02-` makes
    /// `2025-06-02-batch`), to submit files whose names were used before.
    #[arg(long, value_parser = parse_id_prefix)]
    pub id_prefix: Option<String>,
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

const ID_RULE: &str = "1-64 of A-Z a-z 0-9 . _ -, not starting with a dot";

fn parse_request_id(s: &str) -> Result<String, String> {
    if is_valid_id(s) && !s.starts_with('.') {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a request id: {ID_RULE}"))
    }
}

fn parse_id_prefix(s: &str) -> Result<String, String> {
    if s.len() < 64 && parse_request_id(s).is_ok() {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not a request id prefix: 1-63 of A-Z a-z 0-9 . _ -, not starting with a dot"
        ))
    }
}

/// A request id from a file name: its stem, cut to the allowed characters and length.
pub fn request_id_for(path: &Path) -> Option<String> {
    request_id_with_prefix(path, "")
}

fn request_id_with_prefix(path: &Path, prefix: &str) -> Option<String> {
    let stem = path.file_stem()?.to_string_lossy();
    let id: String = prefix
        .chars()
        .chain(stem.chars())
        .enumerate()
        .map(|(i, c)| {
            // A leading dot would make the request object a hidden file, which ingest skips.
            if (c.is_ascii_alphanumeric() || "._-".contains(c)) && !(i == 0 && c == '.') {
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

/// One input to submit, after the checks that need no store.
struct Planned {
    file: PathBuf,
    id: String,
    size: u64,
    content_type: String,
    accept: String,
    split: Split,
}

/// What the store already holds under a request id.
enum Existing {
    /// Nothing: a new request.
    New,
    /// A request with the same input and options (answered or not): nothing to do.
    Same,
}

/// Checks that `file` is a regular file this process can read; the problem in words if not.
fn check_input(file: &Path) -> Result<u64, String> {
    let shown = file.display();
    let md =
        std::fs::metadata(file).map_err(|e| format!("cannot read {shown}: {}", io_sentence(&e)))?;
    if md.is_dir() {
        return Err(format!("{shown} is a folder; give the files in it instead"));
    }
    if !md.is_file() {
        return Err(format!(
            "{shown} is not a regular file (a device, socket or pipe); copy its content to a file"
        ));
    }
    std::fs::File::open(file).map_err(|e| format!("cannot read {shown}: {}", io_sentence(&e)))?;
    Ok(md.len())
}

/// SHA-256 of everything `reader` yields, read 64 KiB at a time.
async fn digest_of(
    mut reader: impl tokio::io::AsyncRead + Unpin,
) -> std::io::Result<aws_lc_rs::digest::Digest> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return Ok(ctx.finish());
        }
        ctx.update(&buf[..n]);
    }
}

async fn file_digest(file: &Path) -> anyhow::Result<aws_lc_rs::digest::Digest> {
    let f = tokio::fs::File::open(file)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read {}: {}", file.display(), io_sentence(&e)))?;
    digest_of(f)
        .await
        .map_err(|e| anyhow::anyhow!("cannot read {}: {}", file.display(), io_sentence(&e)))
}

/// Compares `p` with what the store holds under its request id: a new id, the same request
/// again, or (as `Err`) a different request that would be answered with the earlier one's
/// outcome.
async fn compare_with_stored(
    store: &dyn ObjectStore,
    buyer: &str,
    p: &Planned,
) -> anyhow::Result<Result<Existing, String>> {
    let id = &p.id;
    let shown = p.file.display();
    let key = request_key(buyer, id);
    let read = |e: sealbox_core::Error| store_error(&format!("reading the stored request {id}"), e);
    let new_id_hint = "pass --request-id NEW_ID (one file) or --id-prefix PREFIX to submit it as \
                       a new request";
    let Some(meta) = store.head(INBOX, &key).await.map_err(read)? else {
        // No request object; an answer without one still takes the id.
        for answer in [
            result_key(buyer, id),
            failed_key(buyer, id),
            rejected_key(buyer, id),
        ] {
            if store.head(OUTBOX, &answer).await.map_err(read)?.is_some() {
                return Ok(Err(format!(
                    "{shown}: request id {id} was already answered ({}) and its request object \
                     is gone, so it cannot be compared with this file; {new_id_hint}",
                    location(OUTBOX, &answer)
                )));
            }
        }
        return Ok(Ok(Existing::New));
    };
    let when = rfc3339(meta.last_modified);
    let stored_at = location(INBOX, &key);
    let stored = match store.get(INBOX, &key, MAX_REQUEST_OBJECT_BYTES).await {
        Ok((_, body)) => serde_json::from_slice::<RequestObject>(&body).ok(),
        Err(sealbox_core::Error::TooLarge { .. }) => None,
        Err(sealbox_core::Error::NotFound { .. }) => return Ok(Ok(Existing::New)),
        Err(e) => return Err(read(e)),
    };
    let Some(stored) = stored else {
        return Ok(Err(format!(
            "{shown}: request id {id} is already taken by a request object that sealbox did not \
             write ({stored_at}, {when}); {new_id_hint}"
        )));
    };
    if stored.content_type != p.content_type || stored.accept != p.accept || stored.split != p.split
    {
        let split = |s: Split| match s {
            Split::None => "whole",
            Split::Line => "split into lines",
        };
        return Ok(Err(format!(
            "{shown}: request id {id} was already submitted at {when} with other options \
             ({}, accept {}, {}; now {}, accept {}, {}); it would be answered as submitted \
             then; {new_id_hint}",
            stored.content_type,
            stored.accept,
            split(stored.split),
            p.content_type,
            p.accept,
            split(p.split)
        )));
    }
    let different = |earlier: &str| -> anyhow::Result<Result<Existing, String>> {
        Ok(Err(format!(
            "{shown}: request id {id} was already submitted at {when} from {earlier}, with \
             different content; it would get that request's answer, not one for this file; \
             {new_id_hint}"
        )))
    };
    let earlier_text = match (
        &stored.input.s3_key,
        &stored.input.text,
        &stored.input.base64,
    ) {
        (Some(input_key), _, _) => {
            let earlier = format!(
                "a file named {} (stored at {})",
                input_key.rsplit('/').next().unwrap_or(input_key),
                location(INBOX, input_key)
            );
            let Some(input) = store.head(INBOX, input_key).await.map_err(read)? else {
                return different(&format!("{earlier}, since removed"));
            };
            if input.size != p.size {
                return different(&earlier);
            }
            let (_, body) = match store.get_stream(INBOX, input_key).await {
                Ok(got) => got,
                Err(sealbox_core::Error::NotFound { .. }) => {
                    return different(&format!("{earlier}, since removed"));
                }
                Err(e) => return Err(read(e)),
            };
            let stored_digest = digest_of(body)
                .await
                .map_err(|e| anyhow::anyhow!("reading {input_key}: {}", io_sentence(&e)))?;
            if stored_digest.as_ref() != file_digest(&p.file).await?.as_ref() {
                return different(&earlier);
            }
            return Ok(Ok(Existing::Same));
        }
        (None, Some(text), _) => text.as_bytes().to_vec(),
        (None, None, Some(b64)) => {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default()
        }
        (None, None, None) => Vec::new(),
    };
    let inline = "an inline input";
    if earlier_text.len() as u64 != p.size {
        return different(inline);
    }
    let mine = file_digest(&p.file).await?;
    let theirs = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &earlier_text);
    if mine.as_ref() != theirs.as_ref() {
        return different(inline);
    }
    Ok(Ok(Existing::Same))
}

/// Where the answer to request `id` of `buyer` is, if there is one yet: its outcome and place.
async fn answer_of(store: &dyn ObjectStore, buyer: &str, id: &str) -> Option<(String, String)> {
    if let Ok(Some(_)) = store.head(OUTBOX, &result_key(buyer, id)).await {
        return Some(("completed".into(), location(OUTBOX, &result_key(buyer, id))));
    }
    for (key, outcome) in [
        (failed_key(buyer, id), "failed"),
        (rejected_key(buyer, id), "rejected"),
    ] {
        if let Ok((_, body)) = store.get(OUTBOX, &key, DOCUMENT_CAP).await {
            let reason = serde_json::from_slice::<OutcomeDocument>(&body)
                .map(|d| format!("{outcome} ({})", d.reason))
                .unwrap_or_else(|_| outcome.to_owned());
            return Some((reason, location(OUTBOX, &key)));
        }
    }
    None
}

/// `sealbox buyer submit`: checks every input first (files, ids, and what the store already
/// holds under each id), so nothing is uploaded unless every input can be; then uploads each
/// input and its request object and prints where each answer will be.
pub async fn submit(data: &Path, a: SubmitArgs) -> anyhow::Result<ExitCode> {
    crate::access::check_buyer(&a.buyer)?;
    if a.request_id.is_some() && a.files.len() > 1 {
        bail!(
            "--request-id names one request but {} files were given; submit them one at a time, \
             or use --id-prefix PREFIX",
            a.files.len()
        );
    }
    // Local checks first: a missing file is the first thing to fix, whatever else is wrong.
    let mut problems = Vec::new();
    let mut planned = Vec::new();
    let mut ids = std::collections::HashMap::new();
    for file in &a.files {
        let size = match check_input(file) {
            Ok(size) => size,
            Err(p) => {
                problems.push(p);
                continue;
            }
        };
        let id = match &a.request_id {
            Some(id) => Some(id.clone()),
            None => request_id_with_prefix(file, a.id_prefix.as_deref().unwrap_or_default()),
        };
        let Some(id) = id else {
            problems.push(format!(
                "{}: its file name gives no request id ({ID_RULE}); pass --request-id ID",
                file.display()
            ));
            continue;
        };
        // Two files whose names map to one id would be one request: refuse the second.
        if let Some(first) = ids.insert(id.clone(), file.clone()) {
            problems.push(format!(
                "{}: its request id {id} is also the id of {}; rename one of them or submit \
                 them separately",
                file.display(),
                first.display()
            ));
            continue;
        }
        let content_type = a
            .content_type
            .clone()
            .unwrap_or_else(|| media_type_for(file).into());
        planned.push(Planned {
            file: file.clone(),
            id,
            size,
            accept: a.accept.clone().unwrap_or_else(|| content_type.clone()),
            content_type,
            split: if a.split_lines {
                Split::Line
            } else {
                Split::None
            },
        });
    }
    if problems.is_empty() {
        let paths = existing_data(data)?;
        let store = paths.store(false);
        let mut existing = Vec::with_capacity(planned.len());
        for p in &planned {
            match compare_with_stored(&store, &a.buyer, p).await? {
                Ok(e) => existing.push(e),
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() {
            submit_checked(data, &store, &a, &planned, &existing).await?;
            return Ok(ExitCode::SUCCESS);
        }
    }
    if let [only] = problems.as_slice() {
        bail!("{only}. Nothing was submitted");
    }
    for p in &problems {
        eprintln!("{p}");
    }
    bail!(
        "{} of {} inputs cannot be submitted (above). Nothing was submitted",
        problems.len(),
        a.files.len()
    )
}

async fn submit_checked(
    data: &Path,
    store: &sealbox_core::adapters::fs_store::FsObjectStore,
    a: &SubmitArgs,
    planned: &[Planned],
    existing: &[Existing],
) -> anyhow::Result<()> {
    let buyer = &a.buyer;
    let any_new = existing.iter().any(|e| matches!(e, Existing::New));
    // A token only when something is sent: the same request again needs none.
    let token = match (&a.token, any_new) {
        (_, false) => None,
        (Some(t), true) => Some(t.clone()),
        (None, true) => {
            Some(crate::access::buyer_token(data, buyer, &a.credentials, None, false).await?)
        }
    };
    for (p, e) in planned.iter().zip(existing) {
        let id = &p.id;
        let shown = p.file.display();
        let result_at = location(OUTBOX, &result_key(buyer, id));
        if let Existing::Same = e {
            let line = match answer_of(store, buyer, id).await {
                Some((outcome, at)) => format!(
                    "{shown}: request {id} was already submitted with this content and is \
                     answered: {outcome}, {at}\n"
                ),
                None => format!(
                    "{shown}: request {id} was already submitted with this content; its result \
                     will be at {result_at}\n"
                ),
            };
            emit(&line)?;
            continue;
        }
        let name = p
            .file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut input_key = format!("{buyer}/inputs/{id}/{name}");
        if name.starts_with(TEMP_PREFIX) || check_key(&input_key).is_err() {
            input_key = format!("{buyer}/inputs/{id}/input");
        }
        let file = tokio::fs::File::open(&p.file)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read {shown}: {}", io_sentence(&e)))?;
        store
            .put_stream(INBOX, &input_key, Box::pin(file), PutMode::Overwrite)
            .await
            .map_err(|e| {
                store_error(
                    &format!("uploading {shown} to {}", location(INBOX, &input_key)),
                    e,
                )
            })?;
        let request = RequestObject {
            version: 1,
            request_id: id.clone(),
            token: token.clone(),
            input: InputSpec {
                s3_key: Some(input_key),
                ..InputSpec::default()
            },
            content_type: p.content_type.clone(),
            accept: p.accept.clone(),
            custom_attributes: None,
            ttl_seconds: None,
            split: p.split,
        };
        let key = request_key(buyer, id);
        // Create-only: a request written by someone else since the check is not replaced.
        match store
            .put(
                INBOX,
                &key,
                bytes::Bytes::from(serde_json::to_vec(&request)?),
                PutMode::CreateNew,
            )
            .await
        {
            Ok(_) => {}
            Err(sealbox_core::Error::AlreadyExists { .. }) => bail!(
                "{shown}: another request {id} arrived while this one was being submitted; run \
                 the command again to compare them"
            ),
            Err(e) => {
                return Err(store_error(
                    &format!("writing the request object {}", location(INBOX, &key)),
                    e,
                ));
            }
        }
        emit(&format!(
            "{shown}: submitted as request {id}; its result will be at {result_at}\n"
        ))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Buyer: results.

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

/// Largest failure or rejection document read for its reason (they are a few hundred bytes).
const DOCUMENT_CAP: u64 = 64 * 1024;
/// Outcomes listed, and printed, at a time.
const RESULTS_PAGE: usize = 1000;

/// `sealbox buyer results`: one line per outcome, printed a page at a time; only one page of
/// listings and one document are held at once.
pub async fn results(data: &Path, a: ResultsArgs) -> anyhow::Result<ExitCode> {
    crate::access::check_buyer(&a.buyer)?;
    let store = existing_data(data)?.store(false);
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
                .list(OUTBOX, &prefix, after.as_deref(), RESULTS_PAGE)
                .await
                .map_err(|e| store_error(&format!("listing {}", location(OUTBOX, &prefix)), e))?;
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
                    Some(match store.get(OUTBOX, &m.key, DOCUMENT_CAP).await {
                        Ok((_, body)) => serde_json::from_slice::<OutcomeDocument>(&body)
                            .map(|d| d.reason.to_string())
                            .unwrap_or_else(|_| "unreadable-document".into()),
                        // Removed since the listing: nothing to report for it.
                        Err(sealbox_core::Error::NotFound { .. }) => continue,
                        Err(sealbox_core::Error::TooLarge { .. }) => "unreadable-document".into(),
                        Err(e) => {
                            return Err(store_error(
                                &format!("reading {}", location(OUTBOX, &m.key)),
                                e,
                            ));
                        }
                    })
                };
                if let Some(dest) = &a.fetch {
                    fetch_one(&store, &m.key, &dest.join(dir).join(&file)).await?;
                }
                if a.json {
                    json_out.push_str(
                        &json!({"request_id": id, "outcome": outcome, "reason": reason, "key": m.key, "location": location(OUTBOX, &m.key), "bytes": m.size})
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
            location(OUTBOX, &format!("{}/", a.buyer))
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Copies one outcome object to `path`, streaming.
async fn fetch_one(
    store: &sealbox_core::adapters::fs_store::FsObjectStore,
    key: &str,
    path: &Path,
) -> anyhow::Result<()> {
    let cannot =
        |e: std::io::Error| anyhow::anyhow!("cannot write {}: {}", path.display(), io_sentence(&e));
    let (_, mut body) = match store.get_stream(OUTBOX, key).await {
        Ok(got) => got,
        Err(sealbox_core::Error::NotFound { .. }) => return Ok(()),
        Err(e) => {
            return Err(store_error(
                &format!("reading {}", location(OUTBOX, key)),
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

// ---------------------------------------------------------------------------------------------
// Operator: status and dead letters.

/// The queues of an existing data directory; creates nothing.
fn existing_queues(
    data: &Path,
) -> anyhow::Result<(
    sealbox_core::adapters::sqlite_queue::SqliteQueue,
    sealbox_core::adapters::sqlite_queue::SqliteQueue,
)> {
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
    paths.queues(5)
}

/// `sealbox status`.
pub async fn status(data: &Path, as_json: bool) -> anyhow::Result<()> {
    let (events, jobs) = existing_queues(data)?;
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
                    .unwrap_or_else(|| "-".into()),
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
    let (events, jobs) = existing_queues(data)?;
    Ok(match name {
        QueueName::Jobs => jobs,
        QueueName::InboxEvents => events,
    })
}

/// `sealbox dlq list`.
pub async fn dlq_list(data: &Path, name: QueueName, max: usize) -> anyhow::Result<()> {
    let q = queue_of(data, name)?;
    let dead = q.list_dead(max).await?;
    if dead.is_empty() {
        eprintln!("no dead letters in the {} queue", q.name());
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
pub async fn dlq_redrive(data: &Path, name: QueueName, max: usize) -> anyhow::Result<()> {
    let q = queue_of(data, name)?;
    let n = q.redrive(max).await?;
    println!("moved {n} messages back to the {} queue", q.name());
    Ok(())
}
