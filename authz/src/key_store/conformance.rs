//! Conformance suite of the [`KeyStore`] port, run by every adapter's tests (the file in
//! `key_store/file.rs`, KMS and DynamoDB in `tests/tests/e2e/aws_seller.rs` on moto). Each check
//! takes a fresh, empty store from `fresh` and panics, naming itself, where the adapter breaks a
//! promise of the port. Keys are ES256: the one algorithm every adapter (moto's KMS too) signs.
//!
//! ```text
//! sealbox_authz::key_store::conformance::run(|| async { Arc::new(MyStore::new()) as _ }).await;
//! ```

// Test support: a panic is how a suite reports a broken port promise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::sync::Arc;

use time::OffsetDateTime;

use super::KeyStore;
use crate::error::AuthzError;
use crate::keyset::{KeyAlg, KeyState};
use crate::verify::{Verifier, VerifierConfig};

const ISSUER: &str = "conformance-seller";

/// Runs every check, each on a store of its own from `fresh`.
pub async fn run<F, Fut>(fresh: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn KeyStore>>,
{
    nothing_is_there_before_init_and_init_is_once(fresh().await.as_ref()).await;
    a_rotation_moves_each_key_one_step(fresh().await.as_ref()).await;
    racing_rotations_from_one_key_rotate_once(fresh().await).await;
    a_revoked_key_is_gone_and_listed_and_the_next_one_takes_over(fresh().await.as_ref()).await;
    tokens_signed_through_the_store_verify_with_its_keyset(fresh().await.as_ref()).await;
}

/// `load` of an empty store is `NoKeyset`; `init` makes one current and one next key, `load`
/// answers the same keyset, and a second `init` is `Exists` and changes nothing.
pub async fn nothing_is_there_before_init_and_init_is_once(store: &dyn KeyStore) {
    const CHECK: &str = "nothing_is_there_before_init_and_init_is_once";
    let empty = store.load().await;
    assert!(
        matches!(empty, Err(AuthzError::NoKeyset(_))),
        "{CHECK}: load before init answered {empty:?}"
    );
    let made = store.init(ISSUER, KeyAlg::ES256).await.unwrap();
    assert_eq!(made.issuer, ISSUER, "{CHECK}: the issuer");
    assert_eq!(made.kids(KeyState::Current).len(), 1, "{CHECK}: {made:?}");
    assert_eq!(made.kids(KeyState::Next).len(), 1, "{CHECK}: {made:?}");
    let loaded = store.load().await.unwrap();
    assert_eq!(
        loaded.kids(KeyState::Current),
        made.kids(KeyState::Current),
        "{CHECK}: load answers what init made"
    );
    let again = store.init(ISSUER, KeyAlg::ES256).await;
    assert!(
        matches!(again, Err(AuthzError::Exists(_))),
        "{CHECK}: a second init answered {again:?}"
    );
    let after = store.load().await.unwrap();
    assert_eq!(
        after.keys.len(),
        made.keys.len(),
        "{CHECK}: init changed the keys"
    );
}

/// A rotation from the current key makes the next key current, the current one previous, and a
/// new next; `load` answers the same.
pub async fn a_rotation_moves_each_key_one_step(store: &dyn KeyStore) {
    const CHECK: &str = "a_rotation_moves_each_key_one_step";
    let before = store.init(ISSUER, KeyAlg::ES256).await.unwrap();
    let from = before.current().unwrap().kid.clone();
    let r = store
        .rotate(&from, OffsetDateTime::now_utc())
        .await
        .unwrap();
    assert!(
        r.rotated,
        "{CHECK}: a rotation from the current key rotates"
    );
    let after = store.load().await.unwrap();
    for ks in [&r.keyset, &after] {
        assert_eq!(
            ks.kids(KeyState::Current),
            before.kids(KeyState::Next),
            "{CHECK}: next became current"
        );
        assert_eq!(
            ks.kids(KeyState::Previous),
            before.kids(KeyState::Current),
            "{CHECK}: current became previous"
        );
        assert_eq!(ks.kids(KeyState::Next).len(), 1, "{CHECK}: a new next");
        assert_eq!(ks.keys.len(), before.keys.len() + 1, "{CHECK}: {ks:?}");
    }
}

/// Of rotations started at once from the same current key, exactly one rotates; the others
/// answer the winner's keyset. Five times over.
pub async fn racing_rotations_from_one_key_rotate_once(store: Arc<dyn KeyStore>) {
    const CHECK: &str = "racing_rotations_from_one_key_rotate_once";
    store.init(ISSUER, KeyAlg::ES256).await.unwrap();
    for round in 0..5 {
        let before = store.load().await.unwrap();
        let from = before.current().unwrap().kid.clone();
        let now = OffsetDateTime::now_utc();
        let racers: Vec<_> = (0..3)
            .map(|_| {
                let (store, from) = (store.clone(), from.clone());
                tokio::spawn(async move { store.rotate(&from, now).await })
            })
            .collect();
        let mut rotated = 0;
        for r in racers {
            let r = r.await.unwrap().unwrap();
            rotated += usize::from(r.rotated);
            assert_eq!(
                r.keyset.kids(KeyState::Current),
                before.kids(KeyState::Next),
                "{CHECK}: round {round}: every racer answers the winner's keyset"
            );
        }
        assert_eq!(rotated, 1, "{CHECK}: round {round}: exactly one rotates");
        let after = store.load().await.unwrap();
        assert_eq!(
            after.keys.len(),
            before.keys.len() + 1,
            "{CHECK}: {after:?}"
        );
    }
}

/// Revoking the current key removes it, lists it as revoked, makes the next key current and
/// a new next.
pub async fn a_revoked_key_is_gone_and_listed_and_the_next_one_takes_over(store: &dyn KeyStore) {
    const CHECK: &str = "a_revoked_key_is_gone_and_listed_and_the_next_one_takes_over";
    let before = store.init(ISSUER, KeyAlg::ES256).await.unwrap();
    let kid = before.current().unwrap().kid.clone();
    let (after, state) = store.revoke(&kid, OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(state, KeyState::Current, "{CHECK}: the state it had");
    let loaded = store.load().await.unwrap();
    for ks in [&after, &loaded] {
        assert!(ks.keys.iter().all(|k| k.kid != kid), "{CHECK}: {ks:?}");
        assert!(
            ks.revoked.iter().any(|r| r.kid == kid),
            "{CHECK}: not listed: {ks:?}"
        );
        assert_eq!(
            ks.kids(KeyState::Current),
            before.kids(KeyState::Next),
            "{CHECK}: next took over"
        );
        assert_eq!(ks.kids(KeyState::Next).len(), 1, "{CHECK}: a new next");
    }
    let unknown = store.revoke("no-such-kid", OffsetDateTime::now_utc()).await;
    assert!(
        matches!(unknown, Err(AuthzError::UnknownKey(_))),
        "{CHECK}: revoking an unknown kid answered {unknown:?}"
    );
}

/// A token signed through the store (`token::issue_through`) verifies with the keyset's public
/// keys, and names the current key.
pub async fn tokens_signed_through_the_store_verify_with_its_keyset(store: &dyn KeyStore) {
    const CHECK: &str = "tokens_signed_through_the_store_verify_with_its_keyset";
    let ks = store.init(ISSUER, KeyAlg::ES256).await.unwrap();
    let ttl = std::time::Duration::from_secs(600);
    let token = crate::token::issue_through(store, &ks, "b1", "p", "g-1", ttl)
        .await
        .unwrap_or_else(|e| panic!("{CHECK}: signing through the store: {e}"));
    let verifier = Verifier::from_keyset(VerifierConfig::new(ISSUER, "p"), &ks).unwrap();
    let claims = verifier
        .verify(&token, "b1")
        .unwrap_or_else(|e| panic!("{CHECK}: the token does not verify: {e:?}"));
    assert_eq!(claims.sub, "b1", "{CHECK}");
    let header = jsonwebtoken::decode_header(&token).unwrap();
    assert_eq!(
        header.kid.as_deref(),
        Some(ks.current().unwrap().kid.as_str()),
        "{CHECK}: the token names the current key"
    );
}
