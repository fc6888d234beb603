//! A [`Verifier`] kept fed from a [`JwksSource`]: refreshed periodically, and at once (rate
//! limited) when a token names a key it does not know, such as a key rotated in since the last
//! refresh. When refreshes keep failing, the keys age until the verifier fails closed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, watch};

use crate::error::AuthzError;
use crate::jwks::PublishedKeys;
use crate::jwks_source::JwksSource;
use crate::token::Claims;
use crate::verify::{TokenRejection, Verifier, VerifierConfig};
use sealbox_core::contract::Reason;

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
}

impl JwksVerifier {
    /// A verifier over `source`; nothing is fetched until [`JwksVerifier::refresh`].
    pub fn new(config: VerifierConfig, source: Arc<dyn JwksSource>, policy: RefreshPolicy) -> Self {
        JwksVerifier {
            verifier: Verifier::new(config),
            source,
            policy,
            last_fetch: Mutex::new(None),
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

    /// Refreshes when the keys are absent or older than the refresh interval: for hosts that
    /// cannot keep a background task running between requests, such as a Lambda function.
    pub async fn refresh_if_due(&self) -> Result<(), AuthzError> {
        let due = self
            .verifier
            .keys_age()
            .is_none_or(|age| age >= self.policy.interval);
        if due { self.refresh().await } else { Ok(()) }
    }

    async fn fetch_and_load(&self) -> Result<(), AuthzError> {
        let bytes = self.source.fetch().await?;
        let published = PublishedKeys::parse(&bytes)?;
        for why in &published.refused {
            tracing::warn!(source = %self.source.describe(), "published key refused: {why}");
        }
        self.verifier.load(published)
    }

    /// Verifies `token` for a request under the prefix of `buyer`, fetching the keys first if
    /// it names an unknown key and the last fetch is old enough.
    pub async fn verify(&self, token: &str, buyer: &str) -> Result<Claims, TokenRejection> {
        match self.verifier.verify(token, buyer) {
            Err(r) if r.reason == Reason::TokenUnknownKid => {
                {
                    let mut last = self.last_fetch.lock().await;
                    let due =
                        last.is_none_or(|t| t.elapsed() >= self.policy.unknown_kid_min_interval);
                    if due {
                        *last = Some(Instant::now());
                        if let Err(e) = self.fetch_and_load().await {
                            tracing::warn!(error = %e, "refreshing keys for an unknown kid failed");
                        }
                    }
                }
                self.verifier.verify(token, buyer)
            }
            other => other,
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
                .issue(buyer, "product", Duration::from_secs(600))
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
        assert!(f.verifier.verify(&t, "b1").await.is_ok());
    }

    #[tokio::test]
    async fn a_key_rotated_in_after_the_last_fetch_is_fetched_on_first_sight() {
        let mut f = fixture(Duration::from_secs(60));
        f.verifier.refresh().await.unwrap();
        f.rotate_twice_and_publish();
        let t = f.token("b1");
        assert!(f.verifier.verify(&t, "b1").await.is_ok());
    }

    #[tokio::test]
    async fn unknown_kids_fetch_at_most_once_per_interval() {
        let mut f = fixture(Duration::from_secs(60));
        f.verifier.policy.unknown_kid_min_interval = Duration::from_secs(3600);
        f.verifier.refresh().await.unwrap();
        f.rotate_twice_and_publish();
        let t = f.token("b1");
        let r = f.verifier.verify(&t, "b1").await.unwrap_err();
        assert_eq!(
            r.reason,
            Reason::TokenUnknownKid,
            "no fetch within the interval"
        );
    }

    #[tokio::test]
    async fn a_revoked_buyer_and_a_revoked_key_stop_at_the_next_refresh() {
        let mut f = fixture(Duration::from_secs(60));
        f.verifier.refresh().await.unwrap();
        let t1 = f.token("b1");
        let t2 = f.token("b2");
        assert!(f.verifier.verify(&t1, "b1").await.is_ok());
        assert!(f.verifier.verify(&t2, "b2").await.is_ok());
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        f.publish(&[Denial {
            sub: "b1".into(),
            before: now,
        }]);
        f.verifier.refresh().await.unwrap();
        let r = f.verifier.verify(&t1, "b1").await.unwrap_err();
        assert_eq!(r.reason, Reason::TokenBuyerRevoked);
        assert!(f.verifier.verify(&t2, "b2").await.is_ok());

        let kid = f.keyset.current().unwrap().kid.clone();
        f.keyset
            .revoke(&kid, time::OffsetDateTime::now_utc(), RETIRE_AFTER)
            .unwrap();
        f.publish(&[]);
        f.verifier.refresh().await.unwrap();
        let r = f.verifier.verify(&t2, "b2").await.unwrap_err();
        assert_eq!(r.reason, Reason::TokenKeyRevoked);
    }

    #[tokio::test]
    async fn keys_older_than_the_staleness_limit_refuse_even_cached_tokens() {
        let f = fixture(Duration::from_millis(300));
        f.verifier.refresh().await.unwrap();
        let t = f.token("b1");
        assert!(f.verifier.verify(&t, "b1").await.is_ok());
        std::fs::remove_file(&f.path).unwrap();
        assert!(f.verifier.refresh().await.is_err());
        assert!(
            f.verifier.verify(&t, "b1").await.is_ok(),
            "the last copy still serves"
        );
        tokio::time::sleep(Duration::from_millis(400)).await;
        let r = f.verifier.verify(&t, "b1").await.unwrap_err();
        assert_eq!(r.reason, Reason::SigningKeysStale);
        f.publish(&[]);
        f.verifier.refresh().await.unwrap();
        assert!(
            f.verifier.verify(&t, "b1").await.is_ok(),
            "recovers with the source"
        );
    }
}
