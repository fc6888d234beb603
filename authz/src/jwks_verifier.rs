//! A [`Verifier`] kept fed from a [`JwksSource`]: refreshed periodically, and at once (rate
//! limited) when a token names a key it does not know, such as a key rotated in since the last
//! refresh. A token with an unknown key is rejected only on keys fetched after its request
//! arrived; until then the request is deferred, so no rotation, however fast, causes a wrong
//! rejection. When refreshes keep failing, the keys age until the verifier fails closed.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Mutex, watch};

use crate::error::AuthzError;
use crate::jwks::PublishedKeys;
use crate::jwks_source::JwksSource;
use crate::token::TokenClaims;
use crate::verify::{Verifier, VerifierConfig};
use sealbox_core::contract::Reason;
use sealbox_core::ports::NotAuthorized;

/// A fetch counts as newer than a request only if it started this long after the request
/// arrived: the inbox's clock (S3's, or the file system's) and ours may differ a little.
pub const CLOCK_LEEWAY: Duration = Duration::from_secs(1);

/// How often the published keys are fetched.
#[derive(Debug, Clone, Copy)]
pub struct RefreshPolicy {
    /// Fetch this often (a revoked buyer or key stops working within this).
    pub interval: Duration,
    /// A token with an unknown `kid` fetches at most this often.
    pub unknown_kid_min_interval: Duration,
}

impl Default for RefreshPolicy {
    fn default() -> Self {
        RefreshPolicy {
            interval: Duration::from_secs(60),
            unknown_kid_min_interval: Duration::from_secs(10),
        }
    }
}

/// Verifies tokens with keys fetched from a JWKS source.
pub struct JwksVerifier {
    verifier: Verifier,
    source: Arc<dyn JwksSource>,
    policy: RefreshPolicy,
    // Held while fetching, so many tokens with one new kid cost one fetch.
    last_fetch: Mutex<Option<Instant>>,
    // When the fetch of the keys now loaded started, by the wall clock (requests' arrival
    // times are wall-clock times).
    loaded_fetch_started: std::sync::Mutex<Option<SystemTime>>,
}

impl JwksVerifier {
    /// A verifier over `source`; nothing is fetched until [`JwksVerifier::refresh`].
    pub fn new(config: VerifierConfig, source: Arc<dyn JwksSource>, policy: RefreshPolicy) -> Self {
        JwksVerifier {
            verifier: Verifier::new(config),
            source,
            policy,
            last_fetch: Mutex::new(None),
            loaded_fetch_started: std::sync::Mutex::new(None),
        }
    }

    /// The verifier inside, for its cache and key age.
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// Fetches and loads the published keys now.
    pub async fn refresh(&self) -> Result<(), AuthzError> {
        let mut last = self.last_fetch.lock().await;
        *last = Some(Instant::now());
        self.fetch_and_load().await
    }

    async fn fetch_and_load(&self) -> Result<(), AuthzError> {
        let started = SystemTime::now();
        let bytes = self.source.fetch().await?;
        let published = PublishedKeys::parse(&bytes)?;
        for why in &published.refused {
            tracing::warn!(source = %self.source.describe(), "published key refused: {why}");
        }
        self.verifier.load(published)?;
        if let Ok(mut at) = self.loaded_fetch_started.lock() {
            *at = Some(started);
        }
        Ok(())
    }

    /// Whether the keys loaded were fetched after a request that arrived at `arrived`.
    fn keys_newer_than(&self, arrived: SystemTime) -> bool {
        let Some(after) = arrived.checked_add(CLOCK_LEEWAY) else {
            return false;
        };
        self.loaded_fetch_started
            .lock()
            .ok()
            .and_then(|at| *at)
            .is_some_and(|started| started >= after)
    }

    /// Refreshes when the keys are due (absent, or older than the interval) and no fetch was
    /// tried within the unknown-kid interval: a host that cannot keep [`JwksVerifier::run`]
    /// going between requests (a Lambda function) stays fed by its requests, and a failing
    /// source is not asked again by every token.
    async fn refresh_on_use(&self) {
        let due = || {
            self.verifier
                .keys_age()
                .is_none_or(|age| age >= self.policy.interval)
        };
        if !due() {
            return;
        }
        let mut last = self.last_fetch.lock().await;
        let tried_lately = last.is_some_and(|t| t.elapsed() < self.policy.unknown_kid_min_interval);
        // Another caller may have refreshed while this one waited for the lock.
        if !due() || tried_lately {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch_and_load().await {
            tracing::warn!(error = %e, "refreshing the published keys failed; keeping the last copy");
        }
    }

    /// Fetches the keys for an unknown kid if the rate limit allows; returns how long until
    /// the next fetch it allows.
    async fn fetch_for_unknown_kid(&self) -> Duration {
        let min = self.policy.unknown_kid_min_interval;
        let mut last = self.last_fetch.lock().await;
        match *last {
            Some(t) if t.elapsed() < min => min - t.elapsed(),
            _ => {
                *last = Some(Instant::now());
                if let Err(e) = self.fetch_and_load().await {
                    tracing::warn!(error = %e, "refreshing keys for an unknown kid failed");
                }
                min
            }
        }
    }

    /// Verifies `token` for a request under the prefix of `buyer` that arrived at `arrived`.
    /// A token naming an unknown key fetches the keys (rate limited) and is rejected only if
    /// the keys loaded then were fetched after the request arrived; otherwise the request is
    /// [`NotAuthorized::Deferred`] until such a fetch can be made.
    pub async fn verify(
        &self,
        token: &str,
        buyer: &str,
        arrived: SystemTime,
    ) -> Result<TokenClaims, NotAuthorized> {
        self.refresh_on_use().await;
        match self.verifier.verify(token, buyer) {
            Err(r) if r.reason == Reason::TokenUnknownKid => {
                if self.keys_newer_than(arrived) {
                    return Err(r.into());
                }
            }
            other => return Ok(other?),
        }
        let next_fetch = self.fetch_for_unknown_kid().await;
        match self.verifier.verify(token, buyer) {
            Err(r) if r.reason == Reason::TokenUnknownKid => {
                if self.keys_newer_than(arrived) {
                    return Err(r.into());
                }
                // Wait for the first fetch that can come, by the rate limit or by the periodic
                // refresh, and that starts late enough.
                let periodic = self.verifier.keys_age().map_or(Duration::ZERO, |age| {
                    self.policy.interval.saturating_sub(age)
                });
                let late_enough = arrived
                    .checked_add(CLOCK_LEEWAY)
                    .and_then(|t| t.duration_since(SystemTime::now()).ok())
                    .unwrap_or_default();
                Err(NotAuthorized::Deferred {
                    retry_after: next_fetch
                        .min(periodic)
                        .max(late_enough)
                        .max(Duration::from_secs(1)),
                })
            }
            other => Ok(other?),
        }
    }

    /// Refreshes every interval until `shutdown` turns true. A failed fetch keeps the keys it
    /// has (they age towards the staleness limit) and is tried again sooner.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let retry = (self.policy.interval / 4).max(Duration::from_millis(200));
        // Until keys have loaded once, every token is refused: try again soon, not in a minute.
        let mut wait = if self.verifier.keys_age().is_some() {
            self.policy.interval
        } else {
            retry.min(Duration::from_secs(1))
        };
        loop {
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            // A fetch made meanwhile for an unknown kid counts as this refresh: the interval
            // runs from the last fetch, so a flood of made-up kids never doubles the fetches.
            let since = self.last_fetch.lock().await.map(|t| t.elapsed());
            if let Some(since) = since
                && since < self.policy.interval
                && self.verifier.keys_age().is_some()
            {
                wait = self.policy.interval - since;
                continue;
            }
            wait = match self.refresh().await {
                Ok(()) => self.policy.interval,
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        keys_age_s = self.verifier.keys_age().map(|a| a.as_secs()),
                        "refreshing the published keys failed; keeping the last copy"
                    );
                    if self.verifier.keys_age().is_some() {
                        retry
                    } else {
                        retry.min(Duration::from_secs(1))
                    }
                }
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TokenIssuer;
    use crate::jwks::{Denial, publish};
    use crate::jwks_source::FileJwks;
    use crate::keyset::{KeyAlg, Keyset, RETIRE_AFTER};

    struct Fixture {
        _dir: tempfile::TempDir,
        path: std::path::PathBuf,
        keyset: Keyset,
        verifier: JwksVerifier,
    }

    fn fixture(staleness: Duration) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let keyset = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        let mut config = VerifierConfig::new("seller", "product");
        config.max_staleness = staleness;
        let policy = RefreshPolicy {
            interval: Duration::from_secs(3600),
            unknown_kid_min_interval: Duration::ZERO,
        };
        let verifier = JwksVerifier::new(config, Arc::new(FileJwks::new(&path)), policy);
        let f = Fixture {
            _dir: dir,
            path,
            keyset,
            verifier,
        };
        f.publish(&[]);
        f
    }

    impl Fixture {
        fn publish(&self, denied: &[Denial]) {
            let doc = publish(&self.keyset, denied).unwrap();
            std::fs::write(&self.path, serde_json::to_vec(&doc).unwrap()).unwrap();
        }
        /// Two rotations, published: the new current key was never published before.
        fn rotate_twice_and_publish(&mut self) {
            for _ in 0..2 {
                self.keyset
                    .rotate(time::OffsetDateTime::now_utc(), RETIRE_AFTER)
                    .unwrap();
            }
            self.publish(&[]);
        }
        fn token(&self, buyer: &str) -> String {
            TokenIssuer::new(&self.keyset)
                .unwrap()
                .issue(
                    buyer,
                    "product",
                    &format!("g-{buyer}"),
                    Duration::from_secs(600),
                )
                .unwrap()
        }
    }

    #[tokio::test]
    async fn nothing_verifies_before_the_keys_are_fetched() {
        let f = fixture(Duration::from_secs(60));
        let t = f.token("b1");
        let r = f.verifier.verifier().verify(&t, "b1").unwrap_err();
        assert_eq!(r.reason, Reason::SigningKeysStale);
        f.verifier.refresh().await.unwrap();
        assert!(f.verifier.verify(&t, "b1", SystemTime::now()).await.is_ok());
    }

    #[tokio::test]
    async fn a_key_rotated_in_after_the_last_fetch_is_fetched_on_first_sight() {
        let mut f = fixture(Duration::from_secs(60));
        f.verifier.refresh().await.unwrap();
        f.rotate_twice_and_publish();
        let t = f.token("b1");
        assert!(f.verifier.verify(&t, "b1", SystemTime::now()).await.is_ok());
    }

    #[tokio::test]
    async fn unknown_kids_fetch_at_most_once_per_interval() {
        let mut f = fixture(Duration::from_secs(60));
        f.verifier.policy.unknown_kid_min_interval = Duration::from_secs(3600);
        f.verifier.refresh().await.unwrap();
        f.rotate_twice_and_publish();
        let t = f.token("b1");
        // Arrived after the last fetch, within the interval: no fetch, and no verdict yet.
        let r = f.verifier.verify(&t, "b1", SystemTime::now()).await;
        let Err(NotAuthorized::Deferred { retry_after }) = r else {
            panic!("{r:?}")
        };
        assert!(retry_after > Duration::from_secs(3000), "{retry_after:?}");
    }

    #[tokio::test]
    async fn an_unknown_kid_is_rejected_only_on_keys_fetched_after_the_request_arrived() {
        let f = fixture(Duration::from_secs(60));
        let arrived = SystemTime::now() - Duration::from_secs(5);
        f.verifier.refresh().await.unwrap();
        // Another seller's keys: kids this verifier has never seen.
        let other = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        let t = TokenIssuer::new(&other)
            .unwrap()
            .issue("b1", "product", "g-b1", Duration::from_secs(600))
            .unwrap();
        let r = rejected(f.verifier.verify(&t, "b1", arrived).await);
        assert_eq!(r.reason, Reason::TokenUnknownKid);
    }

    #[tokio::test]
    async fn a_key_published_after_a_deferral_is_accepted_at_the_next_allowed_fetch() {
        let mut f = fixture(Duration::from_secs(60));
        f.verifier.policy.unknown_kid_min_interval = Duration::from_millis(300);
        f.verifier.refresh().await.unwrap();
        // Two rotations come faster than the rate limit allows a fetch.
        f.rotate_twice_and_publish();
        let t = f.token("b1");
        let arrived = SystemTime::now();
        let r = f.verifier.verify(&t, "b1", arrived).await;
        assert!(matches!(r, Err(NotAuthorized::Deferred { .. })), "{r:?}");
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(f.verifier.verify(&t, "b1", arrived).await.is_ok());
    }

    #[tokio::test]
    async fn a_flood_of_made_up_kids_fetches_once_per_interval_then_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        let keyset = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        std::fs::write(
            &path,
            serde_json::to_vec(&publish(&keyset, &[]).unwrap()).unwrap(),
        )
        .unwrap();
        let source = Arc::new(Counting {
            inner: FileJwks::new(&path),
            fetches: std::sync::atomic::AtomicUsize::new(0),
        });
        let policy = RefreshPolicy {
            interval: Duration::from_secs(3600),
            unknown_kid_min_interval: Duration::from_millis(400),
        };
        let verifier = JwksVerifier::new(
            VerifierConfig::new("seller", "product"),
            source.clone(),
            policy,
        );
        verifier.refresh().await.unwrap();
        let made_up = Keyset::generate("seller", KeyAlg::EdDSA).unwrap();
        let t = TokenIssuer::new(&made_up)
            .unwrap()
            .issue("b1", "product", "g-b1", Duration::from_secs(600))
            .unwrap();
        let arrived = SystemTime::now();
        for _ in 0..200 {
            let r = verifier.verify(&t, "b1", arrived).await;
            assert!(matches!(r, Err(NotAuthorized::Deferred { .. })), "{r:?}");
        }
        assert_eq!(source.fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
        // Once a fetch newer than the request is allowed, the verdict is final.
        tokio::time::sleep(CLOCK_LEEWAY + Duration::from_millis(100)).await;
        let r = rejected(verifier.verify(&t, "b1", arrived).await);
        assert_eq!(r.reason, Reason::TokenUnknownKid);
        assert_eq!(source.fetches.load(std::sync::atomic::Ordering::SeqCst), 2);
    }

    /// A source that counts its fetches.
    struct Counting {
        inner: FileJwks,
        fetches: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl JwksSource for Counting {
        async fn fetch(&self) -> Result<Vec<u8>, AuthzError> {
            self.fetches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.fetch().await
        }
        fn describe(&self) -> String {
            self.inner.describe()
        }
    }

    /// The rejection of a refused token (a deferral or an acceptance fails the test).
    fn rejected(r: Result<TokenClaims, NotAuthorized>) -> crate::verify::TokenRejection {
        match r {
            Err(NotAuthorized::Rejected(r)) => r,
            other => panic!("not a rejection: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_revoked_buyer_and_a_revoked_key_stop_at_the_next_refresh() {
        let mut f = fixture(Duration::from_secs(60));
        f.verifier.refresh().await.unwrap();
        let t1 = f.token("b1");
        let t2 = f.token("b2");
        assert!(
            f.verifier
                .verify(&t1, "b1", SystemTime::now())
                .await
                .is_ok()
        );
        assert!(
            f.verifier
                .verify(&t2, "b2", SystemTime::now())
                .await
                .is_ok()
        );
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        f.publish(&[Denial {
            grant: "g-b1".into(),
            before: now,
        }]);
        f.verifier.refresh().await.unwrap();
        let r = rejected(f.verifier.verify(&t1, "b1", SystemTime::now()).await);
        assert_eq!(r.reason, Reason::TokenBuyerRevoked);
        assert!(
            f.verifier
                .verify(&t2, "b2", SystemTime::now())
                .await
                .is_ok()
        );

        let kid = f.keyset.current().unwrap().kid.clone();
        f.keyset
            .revoke(&kid, time::OffsetDateTime::now_utc(), RETIRE_AFTER)
            .unwrap();
        f.publish(&[]);
        f.verifier.refresh().await.unwrap();
        let r = rejected(f.verifier.verify(&t2, "b2", SystemTime::now()).await);
        assert_eq!(r.reason, Reason::TokenKeyRevoked);
    }

    #[tokio::test]
    async fn keys_older_than_the_staleness_limit_refuse_even_cached_tokens() {
        let f = fixture(Duration::from_millis(300));
        f.verifier.refresh().await.unwrap();
        let t = f.token("b1");
        assert!(f.verifier.verify(&t, "b1", SystemTime::now()).await.is_ok());
        std::fs::remove_file(&f.path).unwrap();
        assert!(f.verifier.refresh().await.is_err());
        assert!(
            f.verifier.verify(&t, "b1", SystemTime::now()).await.is_ok(),
            "the last copy still serves"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = rejected(f.verifier.verify(&t, "b1", SystemTime::now()).await);
        assert_eq!(r.reason, Reason::SigningKeysStale);
        f.publish(&[]);
        f.verifier.refresh().await.unwrap();
        assert!(
            f.verifier.verify(&t, "b1", SystemTime::now()).await.is_ok(),
            "recovers with the source"
        );
    }
}
