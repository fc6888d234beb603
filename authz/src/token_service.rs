//! The token service: `POST /token` hands a subscribed buyer a short-lived token, and
//! `GET /.well-known/jwks.json` publishes the seller's keys with the deny list. One axum
//! router: served on loopback by `sealbox up`, and behind a Lambda function URL on AWS.
//!
//! Buyers authenticate one of two ways: with their AWS identity, a signed
//! `sts:GetCallerIdentity` request in the body (`{"aws_sts": {...}}`, see
//! [`crate::caller_identity`]), which the service forwards to STS and which proves the account
//! without any secret; or with HTTP Basic (RFC 7617): user = buyer id, password = the secret
//! from `sealbox seller grant --with-secret`. Errors are JSON `{"error": code, "message": words}`.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::buyer_secret::{hash_secret, verify_secret};
use crate::caller_identity::{IdentityProof, ProofRefusal, StsForwarder};
use crate::error::AuthzError;
use crate::jwks::{Denial, publish};
use crate::key_store::KeyStore;
use crate::keyset::Keyset;
use crate::subscriptions::SubscriptionRegistry;
use crate::token::{MAX_TOKEN_LIFETIME, issue_through};

/// The caller's address when no socket peer is there to tell it (behind API Gateway or a
/// function URL, from the request context): attempts are limited per address either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

/// Path of the published keys.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// Settings of the token service.
#[derive(Debug, Clone)]
pub struct TokenServiceConfig {
    /// Product id: the `aud` of every token.
    pub product: String,
    /// Longest lifetime handed out, and the lifetime when none is asked (at most 12 h).
    pub max_lifetime: Duration,
    /// `Cache-Control: max-age` of the published keys.
    pub jwks_max_age: Duration,
    /// Token requests per buyer per minute (a burst of a fifth of it, at least 1).
    pub per_buyer_per_minute: NonZeroU32,
    /// How long a keyset read from the key store is used before it is read again: how soon
    /// tokens are signed by the key a rotation made current, and retired keys leave.
    pub keys_refresh: Duration,
    /// How long the deny list read from the registry is used by the published document: a
    /// revocation reaches the document within it, and the registry is scanned at most once
    /// per it, however many verifiers fetch.
    pub deny_list_refresh: Duration,
}

impl TokenServiceConfig {
    /// Defaults: 1 h tokens, keys cacheable for 60 s, 60 requests per buyer per minute; keys
    /// and deny list read again after 1 s.
    pub fn new(product: &str) -> Self {
        TokenServiceConfig {
            product: product.to_owned(),
            max_lifetime: Duration::from_secs(3600),
            jwks_max_age: Duration::from_secs(60),
            per_buyer_per_minute: NonZeroU32::MIN.saturating_add(59),
            keys_refresh: Duration::from_secs(1),
            deny_list_refresh: Duration::from_secs(1),
        }
    }
}

/// Largest `POST /token` body read: a signed request with a role session's token fits.
const MAX_BODY_BYTES: usize = 8192;

/// The token service's state.
pub struct TokenService {
    config: TokenServiceConfig,
    keys: Arc<dyn KeyStore>,
    registry: Arc<dyn SubscriptionRegistry>,
    /// The keyset last read from `keys`, and when.
    keyset: tokio::sync::Mutex<Option<(Instant, Keyset)>>,
    /// The deny list last read from `registry`, and when.
    denied: tokio::sync::Mutex<Option<(Instant, Vec<Denial>)>>,
    /// Tokens issued per buyer: charged only once the secret is right, so nobody else can use
    /// up a buyer's allowance.
    per_buyer: DefaultKeyedRateLimiter<String>,
    /// Attempts per claimed buyer and client address, before the slow hash: guessing from one
    /// place is throttled without locking the buyer out everywhere.
    attempts: DefaultKeyedRateLimiter<(String, Option<IpAddr>)>,
    /// Bounds the argon2 runs at once (each takes ~19 MiB and a core for tens of ms).
    hashing: tokio::sync::Semaphore,
    /// Checked for unknown buyers, so an unknown id costs the same time as a wrong secret.
    dummy_hash: String,
    /// Where AWS identities are proven, when they are accepted.
    identity: Option<StsForwarder>,
}

impl TokenService {
    /// A service signing with the keys of `keys` for the subscriptions in `registry`.
    pub fn new(
        config: TokenServiceConfig,
        keys: Arc<dyn KeyStore>,
        registry: Arc<dyn SubscriptionRegistry>,
    ) -> Result<Self, AuthzError> {
        if config.max_lifetime.is_zero() || config.max_lifetime > MAX_TOKEN_LIFETIME {
            return Err(AuthzError::BadLifetime(config.max_lifetime.as_secs()));
        }
        let rate = config.per_buyer_per_minute;
        let burst = NonZeroU32::new(rate.get() / 5).unwrap_or(NonZeroU32::MIN);
        let attempts = rate.saturating_mul(NonZeroU32::MIN.saturating_add(1));
        let attempts_burst = NonZeroU32::new(attempts.get() * 2 / 5).unwrap_or(NonZeroU32::MIN);
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
        Ok(TokenService {
            per_buyer: RateLimiter::keyed(Quota::per_minute(rate).allow_burst(burst)),
            attempts: RateLimiter::keyed(Quota::per_minute(attempts).allow_burst(attempts_burst)),
            hashing: tokio::sync::Semaphore::new(cores),
            dummy_hash: hash_secret("sbx_not-a-buyer")?,
            config,
            keys,
            registry,
            keyset: tokio::sync::Mutex::new(None),
            denied: tokio::sync::Mutex::new(None),
            identity: None,
        })
    }

    /// Also accepts buyers proving their AWS account with a signed `sts:GetCallerIdentity`
    /// request, which `sts` checks and forwards.
    pub fn accepting_aws_identity(mut self, sts: StsForwarder) -> Self {
        self.identity = Some(sts);
        self
    }

    /// The keyset, read from the key store at most once per `keys_refresh`; keys past their
    /// retirement are left out even before the store drops them.
    pub async fn keyset(&self) -> Result<Keyset, AuthzError> {
        let mut cached = self.keyset.lock().await;
        if let Some((at, ks)) = cached.as_ref()
            && at.elapsed() < self.config.keys_refresh
        {
            return Ok(ks.clone());
        }
        let read_at = Instant::now();
        let mut ks = self.keys.load().await?;
        ks.retire_expired(OffsetDateTime::now_utc());
        *cached = Some((read_at, ks.clone()));
        Ok(ks)
    }

    /// The deny list, read from the registry at most once per `deny_list_refresh`.
    async fn denied(&self) -> Result<Vec<Denial>, AuthzError> {
        let mut cached = self.denied.lock().await;
        if let Some((at, denied)) = cached.as_ref()
            && at.elapsed() < self.config.deny_list_refresh
        {
            return Ok(denied.clone());
        }
        let read_at = Instant::now();
        let denied = self
            .registry
            .denials(&self.config.product, OffsetDateTime::now_utc())
            .await?;
        *cached = Some((read_at, denied.clone()));
        Ok(denied)
    }

    /// The router: `POST /token` and `GET /.well-known/jwks.json`. Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()` so attempts are limited per client
    /// address (without it, per buyer only).
    pub fn router(self: Arc<Self>) -> Router {
        Router::new()
            .route("/token", post(token))
            .route(JWKS_PATH, get(jwks))
            .with_state(self)
    }

    /// The published key document: keys of every state, revoked kids, denied grants.
    pub async fn published(&self) -> Result<serde_json::Value, AuthzError> {
        let denied = self.denied().await?;
        publish(&self.keyset().await?, &denied)
    }
}

/// An error answer.
fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({"error": code, "message": message.into()});
    let mut resp = (status, axum::Json(body)).into_response();
    if status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"sealbox\", charset=\"UTF-8\""),
        );
    }
    resp
}

fn internal(e: &AuthzError) -> Response {
    tracing::error!(error = %e, "token service failure");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "the token service could not answer; try again",
    )
}

/// The (buyer, secret) of an `Authorization: Basic` header.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (buyer, secret) = text.split_once(':')?;
    Some((buyer.to_owned(), secret.to_owned()))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    lifetime_seconds: Option<u64>,
    /// A signed `sts:GetCallerIdentity` request: the caller's AWS identity instead of Basic.
    aws_sts: Option<IdentityProof>,
}

/// The answer to a refused proof of identity.
fn refused_proof(e: &ProofRefusal) -> Response {
    let status = match e {
        ProofRefusal::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    tracing::info!(reason = e.code(), error = %e, "AWS identity refused");
    error(status, e.code(), e.to_string())
}

fn rate_limited(message: String, wait: Duration) -> Response {
    let mut resp = error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
    let secs = wait.as_secs().max(1).to_string();
    if let Ok(v) = HeaderValue::from_str(&secs) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

fn wait_of(not_until: &governor::NotUntil<governor::clock::QuantaInstant>) -> Duration {
    not_until.wait_time_from(governor::clock::Clock::now(
        &governor::clock::DefaultClock::default(),
    ))
}

/// The buyer and its registry entry, for Basic credentials whose secret is right.
async fn by_secret(
    svc: &TokenService,
    buyer: String,
    secret: String,
) -> Result<(String, crate::subscriptions::Credentials), Response> {
    let unknown = || {
        error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown buyer or wrong secret",
        )
    };
    if !sealbox_core::contract::is_valid_id(&buyer) {
        return Err(unknown());
    }
    let creds = svc
        .registry
        .credentials(&buyer, &svc.config.product)
        .await
        .map_err(|e| internal(&e))?;
    let known = creds.is_some();
    let hash = creds
        .as_ref()
        .map_or_else(|| svc.dummy_hash.clone(), |c| c.secret_hash.clone());
    let matches = {
        let Ok(_permit) = svc.hashing.acquire().await else {
            return Err(internal(&AuthzError::Crypto("hashing pool closed".into())));
        };
        tokio::task::spawn_blocking(move || verify_secret(&secret, &hash))
            .await
            .unwrap_or(false)
    };
    match creds.filter(|_| matches && known) {
        Some(creds) => Ok((buyer, creds)),
        None => Err(unknown()),
    }
}

/// The account STS answers for a signed `GetCallerIdentity` request, and its registry entry.
async fn by_aws_identity(
    svc: &TokenService,
    proof: &IdentityProof,
) -> Result<(String, crate::subscriptions::Credentials), Response> {
    let Some(sts) = &svc.identity else {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "aws_identity_not_accepted",
            "this token service does not take AWS identities; use the buyer id and secret",
        ));
    };
    let issuer = svc.keyset().await.map_err(|e| internal(&e))?.issuer;
    let caller = sts
        .caller(proof, &issuer, OffsetDateTime::now_utc())
        .await
        .map_err(|e| refused_proof(&e))?;
    let creds = svc
        .registry
        .credentials(&caller.account, &svc.config.product)
        .await
        .map_err(|e| internal(&e))?;
    match creds {
        Some(creds) => {
            tracing::info!(account = %caller.account, arn = %caller.arn, "AWS identity proven");
            Ok((caller.account, creds))
        }
        None => Err(error(
            StatusCode::FORBIDDEN,
            "not_subscribed",
            format!(
                "the AWS account {} ({}) has no subscription to {}",
                caller.account, caller.arn, svc.config.product
            ),
        )),
    }
}

async fn token(State(svc): State<Arc<TokenService>>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ClientAddr>()
        .map(|c| c.0)
        .or_else(|| {
            request
                .extensions()
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0.ip())
        });
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let basic = basic_credentials(&headers);
    // Before anything slow: guessing costs a map lookup, not an argon2 run or a call to STS.
    let claimed = basic
        .as_ref()
        .map_or("aws_sts", |(b, _)| b.as_str())
        .to_owned();
    if let Err(not_until) = svc.attempts.check_key(&(claimed.clone(), peer)) {
        return rate_limited(
            format!("too many token requests for {claimed} from this address"),
            wait_of(&not_until),
        );
    }
    if svc.attempts.len() > 100_000 {
        svc.attempts.retain_recent();
        svc.per_buyer.retain_recent();
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("body must be at most {MAX_BODY_BYTES} bytes"),
        );
    };
    let request: TokenRequest = if body.iter().all(u8::is_ascii_whitespace) {
        TokenRequest::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!(
                        "body must be {{\"lifetime_seconds\": N, \"aws_sts\": {{…}}}} (both optional) or empty: {e}"
                    ),
                );
            }
        }
    };
    let found = match (basic, &request.aws_sts) {
        (Some(_), Some(_)) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "send Basic credentials or aws_sts, not both",
            );
        }
        (None, None) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send a signed sts:GetCallerIdentity request as aws_sts (`sealbox buyer token \
                 --backend aws` does), or the buyer id and secret as HTTP Basic credentials",
            );
        }
        (Some((buyer, secret)), None) => by_secret(&svc, buyer, secret).await,
        (None, Some(proof)) => by_aws_identity(&svc, proof).await,
    };
    let (buyer, creds) = match found {
        Ok(found) => found,
        Err(answer) => return answer,
    };
    if let Err(not_until) = svc.per_buyer.check_key(&buyer) {
        return rate_limited(
            format!(
                "too many tokens for {buyer}; reuse a token until it expires (`sealbox buyer token` does)"
            ),
            wait_of(&not_until),
        );
    }
    let now = OffsetDateTime::now_utc();
    let sub = &creds.subscription;
    if !sub.is_active(now) {
        return error(
            StatusCode::FORBIDDEN,
            "not_subscribed",
            format!(
                "the subscription of {buyer} to {} is {}",
                svc.config.product,
                sub.status_at(now)
            ),
        );
    }
    let max = svc.config.max_lifetime;
    let mut lifetime = match request.lifetime_seconds {
        Some(0) => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "lifetime_seconds must be at least 1",
            );
        }
        Some(s) => Duration::from_secs(s).min(max),
        None => max,
    };
    // A token never outlives the subscription.
    if let Some(end) = sub.expires_at {
        let left = Duration::try_from(end - now).unwrap_or(Duration::ZERO);
        lifetime = lifetime.min(left.max(Duration::from_secs(1)));
    }
    let issued = match svc.keyset().await {
        Ok(ks) => {
            issue_through(
                svc.keys.as_ref(),
                &ks,
                &buyer,
                &svc.config.product,
                &sub.grant_id,
                lifetime,
            )
            .await
        }
        Err(e) => Err(e),
    };
    match issued {
        Ok(token) => {
            let expires_at = now + lifetime;
            tracing::info!(buyer = %buyer, lifetime_s = lifetime.as_secs(), "token issued");
            axum::Json(serde_json::json!({
                "token": token,
                "token_type": "Bearer",
                "expires_at": sealbox_core::contract::rfc3339(expires_at),
                "expires_in": lifetime.as_secs(),
            }))
            .into_response()
        }
        Err(e) => internal(&e),
    }
}

async fn jwks(State(svc): State<Arc<TokenService>>, headers: HeaderMap) -> Response {
    let doc = match svc.published().await {
        Ok(d) => d,
        Err(e) => return internal(&e),
    };
    let body = serde_json::to_vec(&doc).unwrap_or_default();
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &body);
    let etag = format!(
        "\"{}\"",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
    );
    let cache = format!("public, max-age={}", svc.config.jwks_max_age.as_secs());
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let status = if fresh {
        StatusCode::NOT_MODIFIED
    } else {
        StatusCode::OK
    };
    let mut resp = if fresh {
        status.into_response()
    } else {
        (status, body).into_response()
    };
    let h = resp.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "application/jwk-set+json".to_owned()),
        (header::CACHE_CONTROL, cache),
        (header::ETAG, etag),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    resp
}
