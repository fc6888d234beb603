//! Who may send requests: the seller's subscription commands (`seller grant|revoke|
//! subscriptions`, `seller keys jwks`) and the buyer's token client (`buyer token`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::bail;
use bytes::Bytes;
use clap::Args;
use sealbox_authz::Keyset;
use sealbox_authz::buyer_secret::{hash_secret, new_secret};
use sealbox_authz::jwks::publish;
use sealbox_authz::subscriptions::{Subscription, SubscriptionRegistry};
use sealbox_core::contract::{is_valid_id, rfc3339};
use sealbox_core::ports::{ObjectStore, PutMode};
use sealbox_embedded::sqlite_subscriptions::SqliteSubscriptions;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::output::{Table, emit, existing_data, io_sentence};
use crate::stack::Paths;

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    sealbox_authz::private_file::write(path, bytes)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {}", path.display(), io_sentence(&e)))
}

/// `--until`: an RFC 3339 time, or a date meaning through the end of that day (UTC).
pub fn parse_until(s: &str) -> Result<OffsetDateTime, String> {
    if let Ok(t) = OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339) {
        return Ok(t);
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &format)
        .ok()
        .and_then(|d| d.next_day())
        .map(|d| d.midnight().assume_utc())
        .ok_or_else(|| format!("{s:?} is neither a date (2027-01-31) nor an RFC 3339 time"))
}

/// The subscription registry of a data directory.
pub(crate) fn registry(data: &Path) -> anyhow::Result<SqliteSubscriptions> {
    Ok(SqliteSubscriptions::open(&Paths::new(data).subscriptions)?)
}

pub(crate) fn check_buyer(buyer: &str) -> anyhow::Result<()> {
    if !is_valid_id(buyer) {
        bail!("invalid buyer id {buyer:?}: 1-64 of [A-Za-z0-9._-]");
    }
    Ok(())
}

/// Refuses a grant's arguments before any registry is opened (or created).
fn check_grant(buyer: &str, until: Option<OffsetDateTime>) -> anyhow::Result<()> {
    check_buyer(buyer)?;
    if let Some(t) = until
        && t <= OffsetDateTime::now_utc()
    {
        bail!("--until {} is in the past", rfc3339(t));
    }
    Ok(())
}

/// Subscribes `buyer` to `product` until `until` with a new secret; returns the subscription
/// and the secret (shown once: only its hash is kept).
pub async fn grant_secret(
    data: &Path,
    buyer: &str,
    product: &str,
    until: Option<OffsetDateTime>,
) -> anyhow::Result<(Subscription, String)> {
    check_grant(buyer, until)?;
    grant_secret_in(&registry(data)?, buyer, product, until).await
}

/// [`grant_secret`] in `registry`, whichever it is.
pub async fn grant_secret_in(
    registry: &dyn SubscriptionRegistry,
    buyer: &str,
    product: &str,
    until: Option<OffsetDateTime>,
) -> anyhow::Result<(Subscription, String)> {
    check_grant(buyer, until)?;
    let secret = new_secret()?;
    let hash = tokio::task::spawn_blocking({
        let secret = secret.clone();
        move || hash_secret(&secret)
    })
    .await??;
    let sub = registry.grant(buyer, product, until, &hash).await?;
    Ok((sub, secret))
}

/// Subscribes `buyer` in `registry` without handing out a secret: one proving its AWS account
/// needs none. A secret given earlier (`--with-secret`) keeps working; a first grant gets the
/// hash of a random secret nobody is told, so Basic credentials never match.
pub async fn grant_without_secret_in(
    registry: &dyn SubscriptionRegistry,
    buyer: &str,
    product: &str,
    until: Option<OffsetDateTime>,
) -> anyhow::Result<Subscription> {
    check_grant(buyer, until)?;
    let hash = match registry.credentials(buyer, product).await? {
        Some(earlier) => earlier.secret_hash,
        None => {
            let unknown = new_secret()?;
            tokio::task::spawn_blocking(move || hash_secret(&unknown)).await??
        }
    };
    Ok(registry.grant(buyer, product, until, &hash).await?)
}

/// Writes a buyer secret to `path`, readable by its owner only.
pub fn write_secret(path: &Path, secret: &str) -> anyhow::Result<()> {
    write_private(path, format!("{secret}\n").as_bytes())
}

/// `sealbox seller grant`: subscribes `buyer` and prints (or writes) its new secret.
pub async fn grant(
    data: &Path,
    buyer: &str,
    product: &str,
    until: Option<OffsetDateTime>,
    secret_out: Option<&Path>,
) -> anyhow::Result<()> {
    let granted = grant_secret(data, buyer, product, until).await?;
    print_grant(granted, secret_out)
}

/// Tells what a grant did, and prints (or writes) the new secret.
pub fn print_grant(
    (sub, secret): (Subscription, String),
    secret_out: Option<&Path>,
) -> anyhow::Result<()> {
    let (buyer, product) = (&sub.buyer, &sub.product);
    let until = sub
        .expires_at
        .map(rfc3339)
        .unwrap_or_else(|| "no end".into());
    eprintln!(
        "granted {buyer} a subscription to {product} ({until}); a new secret replaces any earlier one"
    );
    match secret_out {
        Some(path) => {
            write_secret(path, &secret)?;
            eprintln!("secret written to {} (mode 0600)", path.display());
        }
        None => println!("{secret}"),
    }
    Ok(())
}

/// `sealbox seller revoke`.
pub async fn revoke(data: &Path, buyer: &str, product: &str) -> anyhow::Result<()> {
    check_buyer(buyer)?;
    let paths = existing_data(data)?;
    if !paths.subscriptions.exists() {
        bail!(
            "buyer {buyer} has no subscription to {product}: no buyer was ever granted one in {}; \
             see `sealbox seller subscriptions`",
            data.display()
        );
    }
    registry(data)?.revoke(buyer, product).await?;
    print_revoked(buyer, product);
    Ok(())
}

/// Tells what a revocation does.
pub fn print_revoked(buyer: &str, product: &str) {
    println!(
        "revoked {buyer}'s subscription to {product}: no new tokens; tokens already issued stop \
         working when verifiers next refresh the published keys"
    );
}

/// `sealbox seller subscriptions`.
pub async fn subscriptions(data: &Path, json: bool) -> anyhow::Result<()> {
    let paths = existing_data(data)?;
    // No registry yet: nobody was granted, and opening it would create it.
    let subs = if paths.subscriptions.exists() {
        registry(data)?.list().await?
    } else {
        Vec::new()
    };
    print_subscriptions(&subs, json)
}

/// Prints subscriptions as a table or JSON lines.
pub fn print_subscriptions(subs: &[Subscription], json: bool) -> anyhow::Result<()> {
    let now = OffsetDateTime::now_utc();
    if subs.is_empty() {
        eprintln!("no subscriptions yet: `sealbox seller grant BUYER` subscribes a buyer");
    }
    if json {
        let mut out = String::new();
        for s in subs {
            let mut v = serde_json::to_value(s)?;
            v["status"] = s.status_at(now).into();
            out.push_str(&format!("{v}\n"));
        }
        return emit(&out);
    }
    if subs.is_empty() {
        return Ok(());
    }
    let rows: Vec<Vec<String>> = subs
        .iter()
        .map(|s| {
            vec![
                s.buyer.clone(),
                s.product.clone(),
                s.status_at(now).to_string(),
                s.expires_at.map(rfc3339).unwrap_or_else(|| "-".into()),
                rfc3339(s.created_at),
                rfc3339(s.updated_at),
            ]
        })
        .collect();
    let table = Table::new(&[
        ("buyer", false),
        ("product", false),
        ("status", false),
        ("expires", false),
        ("created", false),
        ("updated", false),
    ]);
    emit(&table.render(&rows))
}

/// `sealbox seller keys jwks`: the published document (keys and deny list), printed or put
/// into an object of the embedded store (`BUCKET/KEY`) for buyers who read it from there.
pub async fn publish_keys(data: &Path, product: &str, object: Option<&str>) -> anyhow::Result<()> {
    let paths = existing_data(data)?;
    let mut keyset = Keyset::load(&paths.keyset)?;
    let now = OffsetDateTime::now_utc();
    keyset.retire_expired(now);
    // No registry yet: nobody is denied, and opening it would create it.
    let denied = if paths.subscriptions.exists() {
        registry(data)?.denials(product, now).await?
    } else {
        Default::default()
    };
    let doc = serde_json::to_string_pretty(&publish(&keyset, &denied)?)?;
    match object {
        None => emit(&format!("{doc}\n"))?,
        Some(location) => {
            let location = location.strip_prefix("s3://").unwrap_or(location);
            let Some((bucket, key)) = location.split_once('/') else {
                bail!("--object must be BUCKET/KEY, got {location:?}");
            };
            let meta = paths
                .store(false)
                .put(bucket, key, Bytes::from(doc), PutMode::Overwrite)
                .await?;
            println!(
                "published keys written to {}",
                sealbox_core::layout::location(bucket, &meta.key)
            );
        }
    }
    Ok(())
}

/// How a buyer authenticates to the token service.
#[derive(Args, Clone, Debug, Default)]
pub struct BuyerCredentials {
    /// File holding the buyer secret from `sealbox seller grant` (else $SEALBOX_BUYER_SECRET).
    /// With `--backend aws` and no secret, the buyer proves its AWS account instead.
    #[arg(long, env = "SEALBOX_BUYER_SECRET_FILE")]
    pub secret_file: Option<PathBuf>,
    /// Token service URL (default: the running `sealbox up` of the data directory).
    #[arg(long, env = "SEALBOX_TOKEN_URL")]
    pub token_url: Option<String>,
    /// The seller's issuer, which a proof of the buyer's AWS account names (the token service
    /// refuses a proof made for another).
    #[arg(long, env = "SEALBOX_ISSUER", default_value = crate::stack::DEFAULT_ISSUER)]
    pub issuer: String,
}

/// What a buyer proves itself with.
enum Proof {
    /// The secret of `sealbox seller grant --with-secret` (HTTP Basic).
    Secret(String),
    /// Its AWS account: a signed `sts:GetCallerIdentity`, naming this issuer.
    AwsIdentity(String),
}

impl Proof {
    /// What the token cache keys its entries by: a token asked with another proof is not reused.
    fn digest(&self) -> String {
        match self {
            Proof::Secret(s) => secret_digest(s),
            Proof::AwsIdentity(issuer) => format!("aws-identity:{issuer}"),
        }
    }
}

impl BuyerCredentials {
    /// A secret when one is given; else, with `aws`, the buyer's AWS identity.
    fn proof(&self, aws: bool) -> anyhow::Result<Proof> {
        let secret_given = self.secret_file.is_some()
            || std::env::var("SEALBOX_BUYER_SECRET").is_ok_and(|s| !s.trim().is_empty());
        if aws && !secret_given {
            return Ok(Proof::AwsIdentity(self.issuer.clone()));
        }
        self.secret().map(Proof::Secret)
    }

    fn secret(&self) -> anyhow::Result<String> {
        if let Some(f) = &self.secret_file {
            let s = std::fs::read_to_string(f).map_err(|e| {
                anyhow::anyhow!(
                    "cannot read the buyer secret from {}: {}",
                    f.display(),
                    io_sentence(&e)
                )
            })?;
            return Ok(s.trim().to_owned());
        }
        match std::env::var("SEALBOX_BUYER_SECRET") {
            Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            _ => bail!(
                "no buyer secret: pass --secret-file FILE or set SEALBOX_BUYER_SECRET (the \
                 seller's `sealbox seller grant` prints it); or, with AWS credentials, prove the \
                 buyer's AWS account with --backend aws"
            ),
        }
    }

    /// True when the token service's URL was given (`--token-url` or $SEALBOX_TOKEN_URL).
    pub fn has_url(&self) -> bool {
        self.token_url
            .as_deref()
            .is_some_and(|u| !u.trim().is_empty())
    }

    fn url(&self, data: &Path) -> anyhow::Result<String> {
        if let Some(u) = self.token_url.as_deref().filter(|u| !u.trim().is_empty()) {
            return Ok(service_base(u));
        }
        let file = Paths::new(data).token_url;
        match std::fs::read_to_string(&file) {
            Ok(url) => Ok(url.trim().to_owned()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "no token service: `sealbox up` is not running on {} (there is no {}); start \
                 it, or pass --token-url URL",
                data.display(),
                file.display()
            ),
            Err(e) => bail!(
                "cannot read the token service URL from {}: {}",
                file.display(),
                io_sentence(&e)
            ),
        }
    }
}

/// The token service's base URL from what a user typed: the base URL itself or its `/token`
/// route (the URL a buyer is usually shown), with or without a trailing slash.
pub fn service_base(url: &str) -> String {
    let u = url.trim().trim_end_matches('/');
    u.strip_suffix("/token")
        .unwrap_or(u)
        .trim_end_matches('/')
        .to_owned()
}

/// A token kept for reuse until shortly before it expires, for the secret and the lifetime it
/// was asked with (a new grant or another lifetime asks again).
#[derive(Serialize, Deserialize)]
struct CachedToken {
    token: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
    token_url: String,
    /// SHA-256 of the secret, base64url.
    #[serde(default)]
    secret_sha256: String,
    #[serde(default)]
    lifetime_seconds: Option<u64>,
}

fn secret_digest(secret: &str) -> String {
    use base64::Engine as _;
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(d.as_ref())
}

/// A token is reused while it has at least this long to live.
const REUSE_MARGIN: Duration = Duration::from_secs(120);

/// Why the token service gave no token.
enum FetchError {
    /// Nothing answered (not running, wrong host or port, too slow): a cached token that is
    /// still good may stand in.
    Unreachable(anyhow::Error),
    /// It answered, and refused or said something else: the answer stands.
    Refused(anyhow::Error),
}

/// `sealbox buyer token`: a token for `buyer` from the token service, reused from the cache in
/// the data directory until two minutes before it expires. When the service cannot be reached
/// (`sealbox up` stopped, no network), a cached token for the same secret that is still good
/// for two minutes is used instead, with a warning; `fresh` asks the service and nothing else.
/// With `aws` and no secret given, the buyer proves its AWS account (the default credential
/// chain) instead of a secret.
pub async fn buyer_token(
    data: &Path,
    buyer: &str,
    creds: &BuyerCredentials,
    lifetime: Option<Duration>,
    fresh: bool,
    aws: bool,
) -> anyhow::Result<String> {
    check_buyer(buyer)?;
    // The secret first: a mistyped --secret-file is the user's to fix, whatever runs.
    let proof = creds.proof(aws)?;
    let digest = proof.digest();
    let lifetime_seconds = lifetime.map(|l| l.as_secs());
    let cache = Paths::new(data).buyers.join(buyer).join("token.json");
    let now = OffsetDateTime::now_utc();
    // Only a token asked for with this secret: a new grant (a new secret) must not keep using
    // a token of the old one.
    let cached = std::fs::read(&cache)
        .ok()
        .and_then(|b| serde_json::from_slice::<CachedToken>(&b).ok())
        .filter(|c| !fresh && c.secret_sha256 == digest && c.expires_at - now > REUSE_MARGIN);
    let fallback = |why: &str, c: &CachedToken| {
        eprintln!(
            "warning: using the cached token, good until {} ({} from now): {why}",
            rfc3339(c.expires_at.replace_nanosecond(0).unwrap_or(c.expires_at)),
            humantime::format_duration(Duration::from_secs(
                (c.expires_at - now).whole_seconds().max(0) as u64
            ))
        );
        crate::token_check::strip_bearer(&c.token, "the token cache")
    };
    let url = match creds.url(data) {
        Ok(url) => url,
        Err(e) => match &cached {
            Some(c) => return Ok(fallback(&format!("{e:#}"), c)),
            None => return Err(e),
        },
    };
    if let Some(c) = &cached
        && c.token_url == url
        && c.lifetime_seconds == lifetime_seconds
    {
        return Ok(crate::token_check::strip_bearer(
            &c.token,
            "the token cache",
        ));
    }
    let (token, expires_at) = match fetch_token(&url, buyer, &proof, lifetime).await {
        Ok(got) => got,
        Err(FetchError::Unreachable(e)) => match &cached {
            Some(c) => return Ok(fallback(&format!("{e:#}"), c)),
            None => return Err(e),
        },
        Err(FetchError::Refused(e)) => return Err(e),
    };
    let cached = CachedToken {
        token,
        expires_at,
        token_url: url,
        secret_sha256: digest,
        lifetime_seconds,
    };
    write_private(&cache, &serde_json::to_vec(&cached)?)?;
    Ok(cached.token)
}

/// `POST {url}/token` with the buyer's proof: the token and when it expires.
async fn fetch_token(
    url: &str,
    buyer: &str,
    proof: &Proof,
    lifetime: Option<Duration>,
) -> Result<(String, OffsetDateTime), FetchError> {
    let refused = |e: anyhow::Error| FetchError::Refused(e);
    let mut body = serde_json::Map::new();
    if let Some(l) = lifetime {
        body.insert("lifetime_seconds".into(), l.as_secs().into());
    }
    if let Proof::AwsIdentity(issuer) = proof {
        let config = sealbox_aws::sdk::load_config().await;
        let signed = sealbox_aws::identity::signed_proof(&config, issuer)
            .await
            .map_err(|e| {
                refused(anyhow::anyhow!(
                    "{e} (or pass --secret-file for a buyer secret)"
                ))
            })?;
        let signed = serde_json::to_value(signed).map_err(|e| refused(e.into()))?;
        body.insert("aws_sts".into(), signed);
    }
    let route = format!("{url}/token");
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(|e| refused(e.into()))?;
    let mut request = client.post(&route).json(&body);
    if let Proof::Secret(secret) = proof {
        request = request.basic_auth(buyer, Some(secret));
    }
    let resp = request.send().await.map_err(|e| {
        let (why, unreachable) = if e.is_connect() {
            (
                "nothing answers there; is `sealbox up` running? (or pass --token-url URL)",
                true,
            )
        } else if e.is_timeout() {
            ("it did not answer within 30 s; try again", true)
        } else {
            ("the request failed; check the URL", false)
        };
        let e = anyhow::anyhow!("cannot get a token from the token service at {url}: {why}");
        if unreachable {
            FetchError::Unreachable(e)
        } else {
            FetchError::Refused(e)
        }
    })?;
    let status = resp.status();
    if status == reqwest::StatusCode::NOT_FOUND {
        return Err(refused(anyhow::anyhow!(
            "the token service answered 404 Not Found for {route}: --token-url is the service's \
             base URL or its /token URL; check it"
        )));
    }
    let answer: serde_json::Value = resp.json().await.map_err(|_| {
        refused(anyhow::anyhow!(
            "the answer of {route} (HTTP {status}) is not JSON: is --token-url a sealbox token \
             service?"
        ))
    })?;
    if !status.is_success() {
        return Err(refused(anyhow::anyhow!(
            "the token service refused (HTTP {}, {}): {}",
            status.as_u16(),
            answer["error"].as_str().unwrap_or("?"),
            answer["message"].as_str().unwrap_or("")
        )));
    }
    let (Some(token), Some(expires_at)) = (
        answer["token"].as_str(),
        answer["expires_at"].as_str().and_then(|s| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
        }),
    ) else {
        return Err(refused(anyhow::anyhow!(
            "the token service answered without a token: {answer}"
        )));
    };
    let token = crate::token_check::strip_bearer(token, "the token service");
    Ok((token, expires_at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_takes_a_date_through_its_end_or_an_exact_time() {
        let end = parse_until("2027-01-31").unwrap();
        assert_eq!(rfc3339(end), "2027-02-01T00:00:00Z");
        let exact = parse_until("2027-01-31T12:00:00Z").unwrap();
        assert_eq!(rfc3339(exact), "2027-01-31T12:00:00Z");
        assert!(parse_until("next tuesday").is_err());
    }

    #[test]
    fn the_token_url_may_be_the_base_url_or_its_token_route() {
        for typed in [
            "http://127.0.0.1:5555",
            "http://127.0.0.1:5555/",
            "http://127.0.0.1:5555/token",
            "http://127.0.0.1:5555/token/",
            " http://127.0.0.1:5555/token\n",
        ] {
            assert_eq!(service_base(typed), "http://127.0.0.1:5555", "{typed:?}");
        }
        assert_eq!(
            service_base("https://x.example/prod/token"),
            "https://x.example/prod"
        );
    }
}
