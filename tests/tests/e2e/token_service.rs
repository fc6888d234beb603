//! The token service over real HTTP on loopback: status codes, lifetimes, rate limits, the
//! published keys and their deny list, read back by a verifier.

// Test helpers outside #[test] functions: a failed setup is a failed test.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use sealbox_authz::AuthzError;
use sealbox_authz::buyer_secret::{hash_secret, new_secret};
use sealbox_authz::jwks_source::HttpJwks;
use sealbox_authz::key_store::file::FileKeyStore;
use sealbox_authz::subscriptions::{Credentials, Subscription, SubscriptionRegistry};
use sealbox_authz::token_service::{JWKS_PATH, TokenService, TokenServiceConfig};
use sealbox_authz::{JwksVerifier, KeyAlg, KeyStore as _, RefreshPolicy, VerifierConfig};
use sealbox_core::contract::Reason;
use sealbox_core::ports::NotAuthorized;
use sealbox_embedded::sqlite_subscriptions::SqliteSubscriptions;

const PRODUCT: &str = "iris-classifier";

struct Service {
    _dir: tempfile::TempDir,
    url: String,
    registry: SqliteSubscriptions,
    /// Scans of the registry (`list`), which the deny list is made from.
    scans: Arc<AtomicUsize>,
    http: reqwest::Client,
}

/// The registry, counting its scans.
struct Counting {
    inner: SqliteSubscriptions,
    scans: Arc<AtomicUsize>,
}

#[async_trait::async_trait]
impl SubscriptionRegistry for Counting {
    async fn grant(
        &self,
        buyer: &str,
        product: &str,
        until: Option<time::OffsetDateTime>,
        secret_hash: &str,
    ) -> Result<Subscription, AuthzError> {
        self.inner.grant(buyer, product, until, secret_hash).await
    }
    async fn revoke(&self, buyer: &str, product: &str) -> Result<Subscription, AuthzError> {
        self.inner.revoke(buyer, product).await
    }
    async fn credentials(
        &self,
        buyer: &str,
        product: &str,
    ) -> Result<Option<Credentials>, AuthzError> {
        self.inner.credentials(buyer, product).await
    }
    async fn list(&self) -> Result<Vec<Subscription>, AuthzError> {
        self.scans.fetch_add(1, Ordering::SeqCst);
        self.inner.list().await
    }
    async fn swap(
        &self,
        expected: Option<&Subscription>,
        next: &Subscription,
    ) -> Result<bool, AuthzError> {
        self.inner.swap(expected, next).await
    }
}

async fn start(per_minute: u32) -> Service {
    let dir = tempfile::tempdir().unwrap();
    let registry = SqliteSubscriptions::open(&dir.path().join("subscriptions.db")).unwrap();
    let keys = FileKeyStore::new(dir.path().join("keyset.json"));
    keys.init("seller", KeyAlg::EdDSA).await.unwrap();
    let mut config = TokenServiceConfig::new(PRODUCT);
    config.per_buyer_per_minute = NonZeroU32::new(per_minute).unwrap();
    let scans = Arc::new(AtomicUsize::new(0));
    let counting = Counting {
        inner: registry.clone(),
        scans: scans.clone(),
    };
    let svc = Arc::new(TokenService::new(config, Arc::new(keys), Arc::new(counting)).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let app = svc
            .router()
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        axum::serve(listener, app).await
    });
    Service {
        _dir: dir,
        url,
        registry,
        scans,
        http: reqwest::Client::new(),
    }
}

impl Service {
    async fn grant(&self, buyer: &str, until: Option<time::OffsetDateTime>) -> String {
        let secret = new_secret().unwrap();
        self.registry
            .grant(buyer, PRODUCT, until, &hash_secret(&secret).unwrap())
            .await
            .unwrap();
        secret
    }

    async fn token(
        &self,
        buyer: &str,
        secret: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let mut req = self
            .http
            .post(format!("{}/token", self.url))
            .body(body.to_owned());
        if let Some(s) = secret {
            req = req.basic_auth(buyer, Some(s));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    fn verifier(&self) -> JwksVerifier {
        let source = HttpJwks::new(&format!("{}{JWKS_PATH}", self.url), Duration::from_secs(5));
        JwksVerifier::new(
            VerifierConfig::new("seller", PRODUCT),
            Arc::new(source.unwrap()),
            RefreshPolicy::default(),
        )
    }
}

#[tokio::test]
async fn a_subscribed_buyer_gets_a_token_that_verifies_against_the_published_keys() {
    let s = start(60).await;
    let secret = s.grant("111122223333", None).await;
    let (status, body) = s.token("111122223333", Some(&secret), "").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["expires_in"], 3600,
        "default lifetime is the maximum, 1 h"
    );
    let token = body["token"].as_str().unwrap();
    let v = s.verifier();
    v.refresh().await.unwrap();
    let claims = v
        .verify(token, "111122223333", SystemTime::now())
        .await
        .unwrap();
    assert_eq!(claims.aud, PRODUCT);
    assert_eq!(claims.exp - claims.iat, 3600);
}

#[tokio::test]
async fn lifetimes_are_clamped_to_the_maximum_and_to_the_subscription() {
    let s = start(60).await;
    let secret = s.grant("b1", None).await;
    let (_, long) = s
        .token("b1", Some(&secret), r#"{"lifetime_seconds": 86400}"#)
        .await;
    assert_eq!(long["expires_in"], 3600);
    let (_, short) = s
        .token("b1", Some(&secret), r#"{"lifetime_seconds": 120}"#)
        .await;
    assert_eq!(short["expires_in"], 120);

    let until = time::OffsetDateTime::now_utc() + time::Duration::seconds(300);
    let secret = s.grant("b2", Some(until)).await;
    let (_, ending) = s.token("b2", Some(&secret), "").await;
    let left = ending["expires_in"].as_u64().unwrap();
    assert!((290..=300).contains(&left), "{left}");
}

#[tokio::test]
async fn bad_credentials_get_401_and_bad_bodies_400() {
    let s = start(60).await;
    let secret = s.grant("b1", None).await;
    for (buyer, secret, why) in [
        ("b1", None, "no credentials"),
        ("b1", Some("sbx_wrong"), "wrong secret"),
        ("nobody", Some(secret.as_str()), "unknown buyer"),
        ("../b1", Some(secret.as_str()), "not a buyer id"),
    ] {
        let (status, body) = s.token(buyer, secret, "").await;
        assert_eq!(status, 401, "{why}: {body}");
        assert_eq!(body["error"], "unauthorized", "{why}");
    }
    for body in [
        "{",
        r#"{"lifetime_seconds": 0}"#,
        r#"{"lifetime": 5}"#,
        "[]",
    ] {
        let (status, answer) = s.token("b1", Some(&secret), body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], "bad_request");
    }
}

#[tokio::test]
async fn revoked_and_expired_buyers_get_403_and_their_tokens_stop_at_the_next_refresh() {
    let s = start(60).await;
    let secret = s.grant("b1", None).await;
    let (_, body) = s.token("b1", Some(&secret), "").await;
    let token = body["token"].as_str().unwrap().to_owned();
    let v = s.verifier();
    v.refresh().await.unwrap();
    assert!(v.verify(&token, "b1", SystemTime::now()).await.is_ok());

    s.registry.revoke("b1", PRODUCT).await.unwrap();
    let (status, body) = s.token("b1", Some(&secret), "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("not_subscribed"))
    );
    assert!(body["message"].as_str().unwrap().contains("revoked"));
    assert!(
        v.verify(&token, "b1", SystemTime::now()).await.is_ok(),
        "cached until the refresh"
    );
    // The service reads the deny list again after 1 s; verifiers refresh after that.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    v.refresh().await.unwrap();
    let r = v.verify(&token, "b1", SystemTime::now()).await;
    assert!(
        matches!(&r, Err(NotAuthorized::Rejected(r)) if r.reason == Reason::TokenBuyerRevoked),
        "{r:?}"
    );

    // Granted again: new tokens work, the old one stays refused.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let secret = s.grant("b1", None).await;
    let (_, body) = s.token("b1", Some(&secret), "").await;
    let fresh = body["token"].as_str().unwrap();
    v.refresh().await.unwrap();
    assert!(v.verify(fresh, "b1", SystemTime::now()).await.is_ok());
    assert!(v.verify(&token, "b1", SystemTime::now()).await.is_err());

    let past = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let secret = s.grant("b2", Some(past)).await;
    let (status, body) = s.token("b2", Some(&secret), "").await;
    assert_eq!(status, 403);
    assert!(body["message"].as_str().unwrap().contains("expired"));
}

#[tokio::test]
async fn a_buyer_asking_too_often_gets_429_with_retry_after() {
    let s = start(10).await; // burst of 2
    let secret = s.grant("b1", None).await;
    let other = s.grant("b2", None).await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(s.token("b1", Some(&secret), "").await.0);
    }
    assert_eq!(statuses, [200, 200, 429, 429]);
    let resp = s
        .http
        .post(format!("{}/token", s.url))
        .basic_auth("b1", Some(&secret))
        .send()
        .await
        .unwrap();
    assert!(resp.headers().contains_key("retry-after"));
    assert_eq!(s.token("b2", Some(&other), "").await.0, 200, "per buyer");
}

/// A buyer id too long to turn up by chance in the document's random base64url (a two-letter
/// id, "b1", did in one CI run).
const WIDGET_BUYER: &str = "widget-buyer-0451";

#[tokio::test]
async fn the_published_keys_carry_cache_headers_and_answer_304_when_unchanged() {
    let s = start(60).await;
    let url = format!("{}{JWKS_PATH}", s.url);
    let resp = s.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["cache-control"], "public, max-age=60");
    assert_eq!(h["content-type"], "application/jwk-set+json");
    let etag = h["etag"].to_str().unwrap().to_owned();
    let doc: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(doc["keys"].as_array().unwrap().len(), 2);
    for k in doc["keys"].as_array().unwrap() {
        assert!(k.get("d").is_none(), "no private part");
    }
    let again = s
        .http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 304);

    // Verifiers fetching at once cost one registry scan per refresh of the deny list.
    let scans = s.scans.load(Ordering::SeqCst);
    for _ in 0..20 {
        assert_eq!(s.http.get(&url).send().await.unwrap().status(), 200);
    }
    assert!(
        s.scans.load(Ordering::SeqCst) - scans <= 1,
        "the deny list is cached, not read from the registry per request"
    );

    s.grant(WIDGET_BUYER, None).await;
    s.registry.revoke(WIDGET_BUYER, PRODUCT).await.unwrap();
    // Within one refresh of the deny list (1 s), the document has it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let changed = s
        .http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(
        changed.status().as_u16(),
        200,
        "a new deny list is a new document"
    );
    let doc: serde_json::Value = changed.json().await.unwrap();
    let grant_id = s
        .registry
        .credentials(WIDGET_BUYER, PRODUCT)
        .await
        .unwrap()
        .unwrap()
        .subscription
        .grant_id;
    assert_eq!(doc["denied_grants"][0]["grant"], grant_id.as_str());
    assert!(
        !doc.to_string().contains(WIDGET_BUYER),
        "no buyer id is published"
    );
}

#[tokio::test]
async fn guessing_a_secret_is_throttled_before_the_slow_hash_and_uses_no_token_allowance() {
    let s = start(10).await; // 2 tokens in a burst; 8 attempts per address in a burst
    s.grant("b1", None).await;
    let mut statuses = Vec::new();
    for _ in 0..9 {
        statuses.push(s.token("b1", Some("sbx_guess"), "").await.0);
    }
    assert_eq!(&statuses[..8], &[401; 8]);
    assert_eq!(statuses[8], 429, "guesses from one address are throttled");
    let (status, body) = s.token("nobody", Some("sbx_guess"), "").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    // Failed guesses used none of b1's token allowance (only its attempts from this address).
    let s2 = start(10).await;
    let secret2 = s2.grant("b1", None).await;
    for _ in 0..5 {
        s2.token("b1", Some("sbx_guess"), "").await;
    }
    assert_eq!(s2.token("b1", Some(&secret2), "").await.0, 200);
    assert_eq!(s2.token("b1", Some(&secret2), "").await.0, 200);
}
