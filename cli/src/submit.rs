//! `sealbox buyer submit`: checks every input, refuses new content under a request id already
//! submitted, uploads inputs and request objects, and says where each result will land.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use clap::Args;
use sealbox_aws::config::Var;
use sealbox_core::contract::{
    InputSpec, MAX_REQUEST_OBJECT_BYTES, OutcomeDocument, RequestObject, Split, is_valid_id,
    rfc3339,
};
use sealbox_core::layout::{
    INBOX, OUTBOX, TEMP_PREFIX, check_key, failed_key, location, rejected_key, request_key,
    result_key,
};
use sealbox_core::ports::{ObjectStore, PutMode};
use tokio::io::AsyncReadExt as _;

use crate::output::{Backend, emit, existing_data, io_sentence, store_error};
use crate::results::DOCUMENT_CAP;

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
    /// Token to send (default: one from the token service, see `sealbox buyer token`; with
    /// --backend aws, from the service at --token-url). It is checked before anything is
    /// uploaded: shape, `typ`, not expired, `sub` the buyer, `aud` the product.
    #[arg(long, env = "SEALBOX_TOKEN")]
    pub token: Option<String>,
    /// How to get a token when none is given.
    #[command(flatten)]
    pub credentials: crate::access::BuyerCredentials,
    /// Product id the token must be issued for (its `aud`).
    #[arg(long, env = "SEALBOX_PRODUCT", default_value = crate::stack::DEFAULT_PRODUCT)]
    pub product: String,
    /// MIME type of the inputs (default: from the file extension).
    #[arg(long)]
    pub content_type: Option<String>,
    /// MIME type wanted back (default: the content type).
    #[arg(long)]
    pub accept: Option<String>,
    /// Split each input into lines, batched into invocations.
    #[arg(long)]
    pub split_lines: bool,
    /// Where to submit: the inbox of the data directory, or on AWS the bucket
    /// $SEALBOX_INBOX_BUCKET (and $SEALBOX_OUTBOX_BUCKET, where answers are looked for).
    #[arg(long, value_enum, default_value_t = Backend::Embedded)]
    pub backend: Backend,
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

/// Where requests go: a store, its inbox and outbox buckets, and the data directory whose
/// token service gives a token when none is given (none on AWS).
struct Destination<'a> {
    store: &'a dyn ObjectStore,
    inbox: &'a str,
    outbox: &'a str,
    token_service: Option<&'a Path>,
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
    to: &Destination<'_>,
    buyer: &str,
    p: &Planned,
) -> anyhow::Result<Result<Existing, String>> {
    let (store, inbox, outbox) = (to.store, to.inbox, to.outbox);
    let id = &p.id;
    let shown = p.file.display();
    let key = request_key(buyer, id);
    let read = |e: sealbox_core::Error| store_error(&format!("reading the stored request {id}"), e);
    let new_id_hint = "pass --request-id NEW_ID (one file) or --id-prefix PREFIX to submit it as \
                       a new request";
    let Some(meta) = store.head(inbox, &key).await.map_err(read)? else {
        // No request object; an answer without one still takes the id.
        for answer in [
            result_key(buyer, id),
            failed_key(buyer, id),
            rejected_key(buyer, id),
        ] {
            if store.head(outbox, &answer).await.map_err(read)?.is_some() {
                return Ok(Err(format!(
                    "{shown}: request id {id} was already answered ({}) and its request object \
                     is gone, so it cannot be compared with this file; {new_id_hint}",
                    location(outbox, &answer)
                )));
            }
        }
        return Ok(Ok(Existing::New));
    };
    let when = rfc3339(meta.last_modified);
    let stored_at = location(inbox, &key);
    let stored = match store.get(inbox, &key, MAX_REQUEST_OBJECT_BYTES).await {
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
                location(inbox, input_key)
            );
            let Some(input) = store.head(inbox, input_key).await.map_err(read)? else {
                return different(&format!("{earlier}, since removed"));
            };
            if input.size != p.size {
                return different(&earlier);
            }
            let (_, body) = match store.get_stream(inbox, input_key).await {
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
async fn answer_of(
    store: &dyn ObjectStore,
    outbox: &str,
    buyer: &str,
    id: &str,
) -> Option<(String, String)> {
    if let Ok(Some(_)) = store.head(outbox, &result_key(buyer, id)).await {
        return Some(("completed".into(), location(outbox, &result_key(buyer, id))));
    }
    for (key, outcome) in [
        (failed_key(buyer, id), "failed"),
        (rejected_key(buyer, id), "rejected"),
    ] {
        if let Ok((_, body)) = store.get(outbox, &key, DOCUMENT_CAP).await {
            let reason = serde_json::from_slice::<OutcomeDocument>(&body)
                .map(|d| format!("{outcome} ({})", d.reason))
                .unwrap_or_else(|_| outcome.to_owned());
            return Some((reason, location(outbox, &key)));
        }
    }
    None
}

/// `sealbox buyer submit`: checks every input first (files, ids, and what the store already
/// holds under each id), so nothing is uploaded unless every input can be; then uploads each
/// input and its request object and prints where each answer will be. The same on both
/// backends: only the store, its buckets and where a missing token comes from differ.
pub async fn submit(data: &Path, a: SubmitArgs) -> anyhow::Result<ExitCode> {
    crate::access::check_buyer(&a.buyer)?;
    if a.request_id.is_some() && a.files.len() > 1 {
        bail!(
            "--request-id names one request but {} files were given; submit them one at a time, \
             or use --id-prefix PREFIX",
            a.files.len()
        );
    }
    // A `Bearer ` prefix is a paste error, not part of the token.
    let a = SubmitArgs {
        token: a
            .token
            .as_deref()
            .map(|t| crate::token_check::strip_bearer(t, "--token (or $SEALBOX_TOKEN)")),
        ..a
    };
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
    // Then the store: the data directory, or the settings, only once every file is good.
    let mut resubmit = None;
    if problems.is_empty() {
        let refusal = match a.backend {
            Backend::Embedded => {
                let store = existing_data(data)?.store(false);
                let to = Destination {
                    store: &store,
                    inbox: INBOX,
                    outbox: OUTBOX,
                    token_service: Some(data),
                };
                check_and_submit(&to, &a, &planned).await?
            }
            Backend::Aws => {
                let (store, settings) =
                    crate::aws::object_store(&[Var::InboxBucket, Var::OutboxBucket]).await?;
                let to = Destination {
                    store: &store,
                    inbox: settings.get(Var::InboxBucket),
                    outbox: settings.get(Var::OutboxBucket),
                    // No local service on AWS: the seller's, when its URL is given.
                    token_service: a.credentials.has_url().then_some(data),
                };
                check_and_submit(&to, &a, &planned).await?
            }
        };
        if refusal.problems.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        problems = refusal.problems;
        resubmit = refusal.resubmit;
    }
    if let [only] = problems.as_slice()
        && resubmit.is_none()
    {
        bail!("{only}. Nothing was submitted");
    }
    for p in &problems {
        eprintln!("{p}");
    }
    if let Some(command) = resubmit {
        eprintln!("to submit again under a new request id:\n  {command}");
    }
    bail!(
        "{} of {} inputs cannot be submitted (above). Nothing was submitted",
        problems.len(),
        a.files.len()
    )
}

/// Why nothing was submitted: one problem per input, and the command that submits the inputs
/// under new request ids when some of their ids are spent.
#[derive(Default)]
struct Refusal {
    problems: Vec<String>,
    resubmit: Option<String>,
}

/// Refuses a token ingest would certainly refuse, naming the reason and where it came from.
fn check_token(token: &str, a: &SubmitArgs, from: &str) -> anyhow::Result<()> {
    crate::token_check::precheck(token, &a.buyer, &a.product, time::OffsetDateTime::now_utc())
        .map_err(|why| {
            anyhow::anyhow!(
                "the token from {from} would be refused, so nothing was uploaded: {why}. Get a \
                 token for buyer {buyer} from the token service (`sealbox buyer token --buyer \
                 {buyer} --fresh`) and submit again",
                buyer = a.buyer
            )
        })
}

/// Compares each planned input with what `to` holds under its request id and, if none of them
/// is a problem, submits them; nothing refused if everything was submitted. An id answered
/// with a rejection or a failure is spent: the same request again would only repeat that
/// answer, so it is refused with the reason, the hint and a command that uses a new id.
async fn check_and_submit(
    to: &Destination<'_>,
    a: &SubmitArgs,
    planned: &[Planned],
) -> anyhow::Result<Refusal> {
    // A token given by hand is judged before the store is asked anything: a bad one would
    // spend every request id it is sent with.
    if let Some(t) = &a.token {
        check_token(t, a, "--token (or $SEALBOX_TOKEN)")?;
    }
    let mut refusal = Refusal::default();
    let mut existing = Vec::with_capacity(planned.len());
    let mut to_resend = Vec::new();
    for p in planned {
        match compare_with_stored(to, &a.buyer, p).await? {
            Ok(Existing::Same) => match spent(to, &a.buyer, &p.id).await? {
                Some(problem) => {
                    refusal
                        .problems
                        .push(format!("{}: {problem}", p.file.display()));
                    to_resend.push(p);
                }
                None => existing.push(Existing::Same),
            },
            Ok(Existing::New) => {
                to_resend.push(p);
                existing.push(Existing::New);
            }
            Err(problem) => {
                to_resend.push(p);
                refusal.problems.push(problem);
            }
        }
    }
    if refusal.problems.is_empty() {
        submit_checked(to, a, planned, &existing).await?;
    } else {
        // Every problem found here is about an id already used: new ids settle them all.
        refusal.resubmit = resubmit_command(to, a, &to_resend).await?;
    }
    Ok(refusal)
}

/// The rejection or failure that answered request `id`, as words for the user (reason, what
/// happened, the hint); none if it completed or is not answered yet.
async fn spent(to: &Destination<'_>, buyer: &str, id: &str) -> anyhow::Result<Option<String>> {
    for (key, outcome) in [
        (rejected_key(buyer, id), "rejected"),
        (failed_key(buyer, id), "failed"),
    ] {
        let body = match to.store.get(to.outbox, &key, DOCUMENT_CAP).await {
            Ok((_, body)) => body,
            Err(sealbox_core::Error::NotFound { .. }) => continue,
            Err(e) => {
                return Err(store_error(
                    &format!("reading {}", location(to.outbox, &key)),
                    e,
                ));
            }
        };
        let at = location(to.outbox, &key);
        let Ok(doc) = serde_json::from_slice::<OutcomeDocument>(&body) else {
            return Ok(Some(format!(
                "request id {id} is spent: it was {outcome} ({at})"
            )));
        };
        // Documents of earlier builds have no hint; the reason still has one.
        let hint = doc.hint.unwrap_or_else(|| doc.reason.hint().to_owned());
        return Ok(Some(format!(
            "request id {id} is spent: it was {outcome}, {} ({}), {at}\n  hint: {hint}",
            doc.reason, doc.message
        )));
    }
    Ok(None)
}

/// True if nothing in `to` uses request id `id`: no request object, no outcome.
async fn id_is_free(to: &Destination<'_>, buyer: &str, id: &str) -> anyhow::Result<bool> {
    let read = |e| store_error(&format!("looking up request {id}"), e);
    if to
        .store
        .head(to.inbox, &request_key(buyer, id))
        .await
        .map_err(read)?
        .is_some()
    {
        return Ok(false);
    }
    for key in [
        result_key(buyer, id),
        failed_key(buyer, id),
        rejected_key(buyer, id),
    ] {
        if to
            .store
            .head(to.outbox, &key)
            .await
            .map_err(read)?
            .is_some()
        {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A shell word: as is when it needs no quoting, else in single quotes.
fn shell_word(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/=:@%+,".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// The `sealbox buyer submit` command that sends `files` again under request ids nothing uses
/// yet: `--request-id ID-N` for one file, `--id-prefix rN-` for several (the first N free).
async fn resubmit_command(
    to: &Destination<'_>,
    a: &SubmitArgs,
    files: &[&Planned],
) -> anyhow::Result<Option<String>> {
    let mut new_id = None;
    'n: for n in 2..100 {
        let candidate = |id: &str| -> Option<String> {
            let id = if files.len() == 1 {
                let suffix = format!("-{n}");
                format!("{}{suffix}", &id[..id.len().min(64 - suffix.len())])
            } else {
                format!("r{n}-{id}").chars().take(64).collect()
            };
            is_valid_id(&id).then_some(id)
        };
        for p in files {
            let Some(id) = candidate(&p.id) else {
                continue 'n;
            };
            if !id_is_free(to, &a.buyer, &id).await? {
                continue 'n;
            }
        }
        new_id = Some(match files {
            [one] => format!("--request-id {}", candidate(&one.id).unwrap_or_default()),
            _ => format!("--id-prefix r{n}-"),
        });
        break;
    }
    let Some(new_id) = new_id else {
        return Ok(None);
    };
    let mut words = vec!["sealbox".to_owned()];
    if let Some(data) = to.token_service.filter(|_| a.backend == Backend::Embedded) {
        let default = std::path::absolute("./sealbox-data").unwrap_or_default();
        if data != default {
            words.extend(["--data-dir".into(), shell_word(&data.display().to_string())]);
        }
    }
    words.extend(["buyer".into(), "submit".into()]);
    words.extend(
        files
            .iter()
            .map(|p| shell_word(&p.file.display().to_string())),
    );
    words.extend(["--buyer".into(), shell_word(&a.buyer)]);
    if a.backend == Backend::Aws {
        words.extend(["--backend".into(), "aws".into()]);
    }
    if a.product != crate::stack::DEFAULT_PRODUCT {
        words.extend(["--product".into(), shell_word(&a.product)]);
    }
    for (flag, value) in [("--content-type", &a.content_type), ("--accept", &a.accept)] {
        if let Some(v) = value {
            words.extend([flag.into(), shell_word(v)]);
        }
    }
    if a.split_lines {
        words.push("--split-lines".into());
    }
    if let Some(f) = &a.credentials.secret_file {
        words.extend(["--secret-file".into(), shell_word(&f.display().to_string())]);
    }
    if let Some(u) = a.credentials.token_url.as_deref() {
        words.extend(["--token-url".into(), shell_word(u)]);
    }
    if a.token.is_some() {
        // Never echoed: it is a credential, and may be why the request was refused.
        words.extend(["--token".into(), "\"$TOKEN\"".into()]);
    }
    words.push(new_id);
    Ok(Some(words.join(" ")))
}

async fn submit_checked(
    to: &Destination<'_>,
    a: &SubmitArgs,
    planned: &[Planned],
    existing: &[Existing],
) -> anyhow::Result<()> {
    let (store, inbox, outbox) = (to.store, to.inbox, to.outbox);
    let buyer = &a.buyer;
    let any_new = existing.iter().any(|e| matches!(e, Existing::New));
    // A token only when something is sent: the same request again needs none.
    let token = match (&a.token, any_new, to.token_service) {
        (_, false, _) => None,
        (Some(t), true, _) => Some(t.clone()),
        (None, true, Some(data)) => {
            let aws = a.backend == Backend::Aws;
            let token =
                crate::access::buyer_token(data, buyer, &a.credentials, None, false, aws).await?;
            check_token(&token, a, "the token service")?;
            Some(token)
        }
        (None, true, None) => bail!(
            "no token: with --backend aws there is no local token service to ask; pass the \
             seller's token service with --token-url URL (the buyer's AWS credentials prove its \
             account; or --secret-file FILE or $SEALBOX_BUYER_SECRET), or a token with --token \
             TOKEN (or $SEALBOX_TOKEN). Nothing was submitted"
        ),
    };
    for (p, e) in planned.iter().zip(existing) {
        let id = &p.id;
        let shown = p.file.display();
        let result_at = location(outbox, &result_key(buyer, id));
        if let Existing::Same = e {
            let line = match answer_of(store, outbox, buyer, id).await {
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
            .put_stream(inbox, &input_key, Box::pin(file), PutMode::Overwrite)
            .await
            .map_err(|e| {
                store_error(
                    &format!("uploading {shown} to {}", location(inbox, &input_key)),
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
                inbox,
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
                    &format!("writing the request object {}", location(inbox, &key)),
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
