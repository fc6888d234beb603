//! Conformance suite of the subscription registry port ([`SubscriptionRegistry`]), run by
//! every adapter's tests (SQLite in `sealbox-embedded`, DynamoDB in `sealbox-aws`) on a fresh,
//! empty registry:
//!
//! ```text
//! sealbox_authz::conformance::run_all(&registry).await;
//! ```
//!
//! Each check uses buyer and product names of its own, so they can share one registry and run
//! in any order (but [`run_all`] expects nobody else to write the products it uses). Each
//! panics, naming itself, where the adapter breaks a promise of the port.
//!
//! Decisions the port leaves open, fixed here so that every adapter behaves alike:
//! - **Times** are compared to the millisecond (two times agree when they are less than 1 ms
//!   apart): an adapter may store milliseconds, and both of ours store nanoseconds (SQLite
//!   integers, DynamoDB numbers, which hold 38 digits). The deny list only ever uses seconds.
//! - **Concurrent first grants** of the same new (buyer, product) all succeed, and all answer
//!   the same subscription: one grant id and one `created_at`, the first insert's. Losing the
//!   race to create the subscription makes a caller's grant a renewal, never an error (SQLite
//!   serializes the writes; DynamoDB's losing conditional put falls back to the conditional
//!   renewal update). One of the callers' secret hashes is the one kept.
//! - A revoke keeps the secret hash (it is the status that refuses the buyer), and a grant may
//!   set an expiry already past (the subscription is then expired at once).
// Test support: a panic is how a suite reports a broken port promise.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use time::{Duration, OffsetDateTime};

use crate::agreements::{
    AgreementEvent, AgreementRecord, AgreementStep, Outcome, ParsedEvent, parse_event,
};
use crate::error::AuthzError;
use crate::jwks::Denial;
use crate::subscriptions::{NO_SECRET, Subscription, SubscriptionRegistry, SubscriptionStatus};

/// Runs every check of the suite on `registry` (fresh and empty).
pub async fn run_all(registry: &dyn SubscriptionRegistry) {
    unknown_subscription_has_no_credentials_and_cannot_be_revoked(registry).await;
    grant_then_credentials_returns_the_secret_hash(registry).await;
    renewal_keeps_grant_id_created_at_and_revoked_at_and_replaces_hash_and_expiry(registry).await;
    revoke_then_grant_again_is_active_and_keeps_revoked_at(registry).await;
    distinct_subscriptions_get_distinct_grant_ids(registry).await;
    list_is_sorted_by_product_then_buyer(registry).await;
    denials_name_the_grant_id_not_the_buyer(registry).await;
    timestamps_round_trip_to_the_millisecond(registry).await;
    concurrent_first_grants_end_with_one_subscription_and_one_grant_id(registry).await;
    swap_stores_only_over_what_was_read(registry).await;
    agreement_events_grant_and_revoke_and_a_late_duplicate_changes_nothing(registry).await;
    hand_changes_and_agreement_events_live_side_by_side(registry).await;
}

/// True if `a` and `b` are less than 1 ms apart.
fn same_time(a: OffsetDateTime, b: OffsetDateTime) -> bool {
    (a - b).abs() < Duration::milliseconds(1)
}

fn same_opt_time(a: Option<OffsetDateTime>, b: Option<OffsetDateTime>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same_time(a, b),
        (a, b) => a.is_none() && b.is_none(),
    }
}

/// Panics unless `got` is `want`, times to the millisecond.
fn assert_same(check: &str, what: &str, got: &Subscription, want: &Subscription) {
    let same = got.buyer == want.buyer
        && got.product == want.product
        && got.grant_id == want.grant_id
        && got.status == want.status
        && same_opt_time(got.expires_at, want.expires_at)
        && same_opt_time(got.revoked_at, want.revoked_at)
        && same_time(got.created_at, want.created_at)
        && same_time(got.updated_at, want.updated_at);
    assert!(
        same,
        "{check}: {what}: got {got:?}, expected {want:?} (times to the millisecond)"
    );
}

/// Panics unless `time` lies within `[before, after]`, give or take a millisecond.
fn assert_between(
    check: &str,
    what: &str,
    time: OffsetDateTime,
    before: OffsetDateTime,
    after: OffsetDateTime,
) {
    let ms = Duration::milliseconds(1);
    assert!(
        before - ms <= time && time <= after + ms,
        "{check}: {what} is {time}, not between {before} and {after}"
    );
}

async fn grant(
    check: &str,
    registry: &dyn SubscriptionRegistry,
    buyer: &str,
    product: &str,
    until: Option<OffsetDateTime>,
    hash: &str,
) -> Subscription {
    registry
        .grant(buyer, product, until, hash)
        .await
        .unwrap_or_else(|e| panic!("{check}: grant({buyer}, {product}) failed: {e}"))
}

async fn revoke(
    check: &str,
    registry: &dyn SubscriptionRegistry,
    buyer: &str,
    product: &str,
) -> Subscription {
    registry
        .revoke(buyer, product)
        .await
        .unwrap_or_else(|e| panic!("{check}: revoke({buyer}, {product}) failed: {e}"))
}

/// The subscription and hash of (buyer, product), which must exist.
async fn stored(
    check: &str,
    registry: &dyn SubscriptionRegistry,
    buyer: &str,
    product: &str,
) -> (Subscription, String) {
    let creds = registry
        .credentials(buyer, product)
        .await
        .unwrap_or_else(|e| panic!("{check}: credentials({buyer}, {product}) failed: {e}"))
        .unwrap_or_else(|| panic!("{check}: credentials({buyer}, {product}) found nothing"));
    (creds.subscription, creds.secret_hash)
}

async fn list(check: &str, registry: &dyn SubscriptionRegistry) -> Vec<Subscription> {
    registry
        .list()
        .await
        .unwrap_or_else(|e| panic!("{check}: list failed: {e}"))
}

async fn denials(
    check: &str,
    registry: &dyn SubscriptionRegistry,
    product: &str,
    now: OffsetDateTime,
) -> Vec<Denial> {
    registry
        .denials(product, now)
        .await
        .unwrap_or_else(|e| panic!("{check}: denials({product}) failed: {e}"))
}

/// Unknown subscriptions (an unknown buyer, or a known buyer on another product) have no
/// credentials, cannot be revoked (`NoSubscription`), and a failed revoke creates nothing.
pub async fn unknown_subscription_has_no_credentials_and_cannot_be_revoked(
    registry: &dyn SubscriptionRegistry,
) {
    let check = "unknown_subscription_has_no_credentials_and_cannot_be_revoked";
    grant(check, registry, "unknown-known", "unknown-p", None, "h").await;
    for (buyer, product) in [
        ("unknown-nobody", "unknown-p"),
        ("unknown-known", "unknown-other"),
    ] {
        let creds = registry
            .credentials(buyer, product)
            .await
            .unwrap_or_else(|e| panic!("{check}: credentials({buyer}, {product}) failed: {e}"));
        assert!(
            creds.is_none(),
            "{check}: credentials({buyer}, {product}) found {:?}",
            creds.map(|c| c.subscription)
        );
        match registry.revoke(buyer, product).await {
            Err(AuthzError::NoSubscription {
                buyer: b,
                product: p,
            }) => assert_eq!(
                (b.as_str(), p.as_str()),
                (buyer, product),
                "{check}: NoSubscription names the wrong subscription"
            ),
            other => {
                panic!("{check}: revoke({buyer}, {product}) gave {other:?}, not NoSubscription")
            }
        }
        let after = registry
            .credentials(buyer, product)
            .await
            .unwrap_or_else(|e| panic!("{check}: credentials({buyer}, {product}) failed: {e}"));
        assert!(
            after.is_none(),
            "{check}: a failed revoke created {:?}",
            after.map(|c| c.subscription)
        );
    }
    let listed = list(check, registry).await;
    let ours: Vec<_> = listed
        .iter()
        .filter(|s| s.buyer.starts_with("unknown-"))
        .map(|s| (s.buyer.as_str(), s.product.as_str()))
        .collect();
    assert_eq!(
        ours,
        [("unknown-known", "unknown-p")],
        "{check}: list after failed revokes"
    );
}

/// A first grant is active with a fresh grant id and no revocation; its credentials carry the
/// hash given, and `list` shows it.
pub async fn grant_then_credentials_returns_the_secret_hash(registry: &dyn SubscriptionRegistry) {
    let check = "grant_then_credentials_returns_the_secret_hash";
    let (buyer, product) = ("first-b", "first-p");
    let before = OffsetDateTime::now_utc();
    let until = before + Duration::days(30);
    let s = grant(
        check,
        registry,
        buyer,
        product,
        Some(until),
        "$argon2id$first",
    )
    .await;
    let after = OffsetDateTime::now_utc();
    assert_eq!(
        (s.buyer.as_str(), s.product.as_str()),
        (buyer, product),
        "{check}"
    );
    assert_eq!(s.status, SubscriptionStatus::Active, "{check}: status");
    assert!(s.is_active(after), "{check}: not active: {s:?}");
    assert!(
        same_opt_time(s.expires_at, Some(until)),
        "{check}: expires_at {:?}, expected {until}",
        s.expires_at
    );
    assert_eq!(s.revoked_at, None, "{check}: revoked_at of a first grant");
    assert_between(check, "created_at", s.created_at, before, after);
    assert!(
        same_time(s.updated_at, s.created_at),
        "{check}: a first grant's updated_at {} is not its created_at {}",
        s.updated_at,
        s.created_at
    );
    assert_eq!(
        s.grant_id.len(),
        22,
        "{check}: grant id {:?} is not new_grant_id's (128 bits, base64url)",
        s.grant_id
    );
    assert!(
        s.grant_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{check}: grant id {:?} is not base64url",
        s.grant_id
    );

    let (got, hash) = stored(check, registry, buyer, product).await;
    assert_eq!(hash, "$argon2id$first", "{check}: secret hash");
    assert_same(check, "credentials after the grant", &got, &s);

    let listed = list(check, registry).await;
    let found = listed
        .iter()
        .find(|l| l.buyer == buyer && l.product == product)
        .unwrap_or_else(|| panic!("{check}: list does not show the grant: {listed:?}"));
    assert_same(check, "list after the grant", found, &s);
}

/// A renewal keeps the grant id, `created_at` and `revoked_at` (none here), replaces the hash
/// and the expiry (`None` clears it), and moves `updated_at` on.
pub async fn renewal_keeps_grant_id_created_at_and_revoked_at_and_replaces_hash_and_expiry(
    registry: &dyn SubscriptionRegistry,
) {
    let check = "renewal_keeps_grant_id_created_at_and_revoked_at_and_replaces_hash_and_expiry";
    let (buyer, product) = ("renew-b", "renew-p");
    let now = OffsetDateTime::now_utc();
    let first = grant(
        check,
        registry,
        buyer,
        product,
        Some(now + Duration::days(1)),
        "h1",
    )
    .await;

    let until = now + Duration::days(60);
    let renewed = grant(check, registry, buyer, product, Some(until), "h2").await;
    assert_eq!(
        renewed.grant_id, first.grant_id,
        "{check}: grant id changed"
    );
    assert!(
        same_time(renewed.created_at, first.created_at),
        "{check}: created_at changed from {} to {}",
        first.created_at,
        renewed.created_at
    );
    assert_eq!(renewed.revoked_at, None, "{check}: revoked_at appeared");
    assert_eq!(renewed.status, SubscriptionStatus::Active, "{check}");
    assert!(
        same_opt_time(renewed.expires_at, Some(until)),
        "{check}: expires_at {:?}, expected {until}",
        renewed.expires_at
    );
    assert!(
        renewed.updated_at >= first.updated_at,
        "{check}: updated_at went back from {} to {}",
        first.updated_at,
        renewed.updated_at
    );
    let (got, hash) = stored(check, registry, buyer, product).await;
    assert_eq!(hash, "h2", "{check}: the renewal's hash replaces the first");
    assert_same(check, "credentials after the renewal", &got, &renewed);

    let forever = grant(check, registry, buyer, product, None, "h3").await;
    assert_eq!(
        forever.grant_id, first.grant_id,
        "{check}: grant id changed"
    );
    assert_eq!(
        forever.expires_at, None,
        "{check}: a renewal without an end clears expires_at"
    );
    let (got, hash) = stored(check, registry, buyer, product).await;
    assert_eq!(hash, "h3", "{check}: secret hash after the second renewal");
    assert_same(
        check,
        "credentials after the second renewal",
        &got,
        &forever,
    );
}

/// A revoke makes the subscription revoked (`revoked_at` = `updated_at` = then, hash and grant
/// id kept); granting again makes it active, and keeps `revoked_at`, the grant id and
/// `created_at`, so tokens issued before the revoke stay refused.
pub async fn revoke_then_grant_again_is_active_and_keeps_revoked_at(
    registry: &dyn SubscriptionRegistry,
) {
    let check = "revoke_then_grant_again_is_active_and_keeps_revoked_at";
    let (buyer, product) = ("again-b", "again-p");
    let first = grant(check, registry, buyer, product, None, "h1").await;

    let before = OffsetDateTime::now_utc();
    let revoked = revoke(check, registry, buyer, product).await;
    let after = OffsetDateTime::now_utc();
    assert_eq!(revoked.status, SubscriptionStatus::Revoked, "{check}");
    assert!(
        !revoked.is_active(after),
        "{check}: a revoked one is active"
    );
    assert_eq!(revoked.status_at(after), "revoked", "{check}");
    assert_eq!(
        revoked.grant_id, first.grant_id,
        "{check}: grant id changed"
    );
    assert!(
        same_time(revoked.created_at, first.created_at),
        "{check}: created_at changed"
    );
    let revoked_at = revoked
        .revoked_at
        .unwrap_or_else(|| panic!("{check}: a revoke left no revoked_at: {revoked:?}"));
    assert_between(check, "revoked_at", revoked_at, before, after);
    assert!(
        same_time(revoked.updated_at, revoked_at),
        "{check}: updated_at {} is not revoked_at {revoked_at}",
        revoked.updated_at
    );
    let (got, hash) = stored(check, registry, buyer, product).await;
    assert_eq!(hash, "h1", "{check}: a revoke keeps the secret hash");
    assert_same(check, "credentials after the revoke", &got, &revoked);

    // Revoking twice is allowed: the later time is the one kept.
    let twice = revoke(check, registry, buyer, product).await;
    assert_eq!(twice.status, SubscriptionStatus::Revoked, "{check}");
    assert!(
        twice.revoked_at >= revoked.revoked_at,
        "{check}: a second revoke moved revoked_at back"
    );

    let until = OffsetDateTime::now_utc() + Duration::days(30);
    let again = grant(check, registry, buyer, product, Some(until), "h2").await;
    assert_eq!(again.status, SubscriptionStatus::Active, "{check}");
    assert!(again.is_active(OffsetDateTime::now_utc()), "{check}");
    assert!(
        same_opt_time(again.revoked_at, twice.revoked_at),
        "{check}: granting again changed revoked_at from {:?} to {:?} (earlier tokens must stay denied)",
        twice.revoked_at,
        again.revoked_at
    );
    assert_eq!(again.grant_id, first.grant_id, "{check}: grant id changed");
    assert!(
        same_time(again.created_at, first.created_at),
        "{check}: created_at changed"
    );
    let (got, hash) = stored(check, registry, buyer, product).await;
    assert_eq!(hash, "h2", "{check}: secret hash after granting again");
    assert_same(check, "credentials after granting again", &got, &again);
}

/// Every subscription has its own grant id: two buyers on one product, and one buyer on two
/// products, make three ids; none is the buyer's name.
pub async fn distinct_subscriptions_get_distinct_grant_ids(registry: &dyn SubscriptionRegistry) {
    let check = "distinct_subscriptions_get_distinct_grant_ids";
    let mut ids = Vec::new();
    for (buyer, product) in [
        ("distinct-b1", "distinct-p"),
        ("distinct-b2", "distinct-p"),
        ("distinct-b1", "distinct-q"),
    ] {
        let s = grant(check, registry, buyer, product, None, "h").await;
        assert_ne!(s.grant_id, buyer, "{check}: the grant id is the buyer");
        assert!(!s.grant_id.is_empty(), "{check}: empty grant id");
        ids.push(s.grant_id);
    }
    let mut unique = ids.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(
        unique.len(),
        ids.len(),
        "{check}: grant ids repeat: {ids:?}"
    );
}

/// `list` shows every subscription, revoked ones too, by product then buyer (byte order).
pub async fn list_is_sorted_by_product_then_buyer(registry: &dyn SubscriptionRegistry) {
    let check = "list_is_sorted_by_product_then_buyer";
    // Granted out of order, so that an adapter listing in insertion (or hash) order fails.
    let mut granted = Vec::new();
    for (buyer, product) in [
        ("list-b", "list-p2"),
        ("list-a", "list-p2"),
        ("list-c", "list-p1"),
        ("list-a", "list-p1"),
        ("list-B", "list-p1"),
        ("list-b", "list-p1"),
    ] {
        granted.push(grant(check, registry, buyer, product, None, "h").await);
    }
    let revoked = revoke(check, registry, "list-c", "list-p1").await;

    let listed = list(check, registry).await;
    let keys: Vec<(&str, &str)> = listed
        .iter()
        .map(|s| (s.product.as_str(), s.buyer.as_str()))
        .collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "{check}: not sorted by product then buyer, or repeated: {keys:?}"
    );
    let ours: Vec<&Subscription> = listed
        .iter()
        .filter(|s| s.product.starts_with("list-"))
        .collect();
    let want = [
        ("list-p1", "list-B"),
        ("list-p1", "list-a"),
        ("list-p1", "list-b"),
        ("list-p1", "list-c"),
        ("list-p2", "list-a"),
        ("list-p2", "list-b"),
    ];
    assert_eq!(
        ours.iter()
            .map(|s| (s.product.as_str(), s.buyer.as_str()))
            .collect::<Vec<_>>(),
        want,
        "{check}"
    );
    for s in ours {
        let expected = if s.buyer == "list-c" {
            &revoked
        } else {
            granted
                .iter()
                .find(|g| g.buyer == s.buyer && g.product == s.product)
                .unwrap_or_else(|| panic!("{check}: listed {s:?} was never granted"))
        };
        assert_same(check, "listed subscription", s, expected);
    }
}

/// After a revoke, the product's deny list names the subscription by grant id (never by buyer)
/// with the revoke's second, and keeps it after a new grant; other products' lists do not name
/// it; an active subscription has no entry, an expired one has.
pub async fn denials_name_the_grant_id_not_the_buyer(registry: &dyn SubscriptionRegistry) {
    let check = "denials_name_the_grant_id_not_the_buyer";
    let (buyer, product, other) = ("deny-b", "deny-p", "deny-q");
    let s = grant(check, registry, buyer, product, None, "h").await;
    grant(check, registry, buyer, other, None, "h").await;
    let now = OffsetDateTime::now_utc();
    let denied = denials(check, registry, product, now).await;
    assert!(
        denied.is_empty(),
        "{check}: an active subscription is denied: {denied:?}"
    );

    let revoked = revoke(check, registry, buyer, product).await;
    let revoked_at = revoked
        .revoked_at
        .unwrap_or_else(|| panic!("{check}: a revoke left no revoked_at"));
    let want = Denial {
        grant: s.grant_id.clone(),
        before: revoked_at.unix_timestamp(),
    };
    let now = OffsetDateTime::now_utc();
    let denied = denials(check, registry, product, now).await;
    assert_eq!(
        denied,
        std::slice::from_ref(&want),
        "{check}: deny list after the revoke"
    );
    assert!(
        denied.iter().all(|d| d.grant != buyer),
        "{check}: the deny list names the buyer"
    );
    let elsewhere = denials(check, registry, other, now).await;
    assert!(
        elsewhere.is_empty(),
        "{check}: another product's deny list names it: {elsewhere:?}"
    );

    grant(check, registry, buyer, product, None, "h2").await;
    assert_eq!(
        denials(check, registry, product, OffsetDateTime::now_utc()).await,
        [want],
        "{check}: granting again must keep earlier tokens denied"
    );

    // An expiry already past: expired at once, and denied from its end.
    let ended = now - Duration::seconds(10);
    let expired = grant(check, registry, "deny-expired", other, Some(ended), "h").await;
    assert_eq!(expired.status_at(now), "expired", "{check}");
    assert_eq!(
        denials(check, registry, other, OffsetDateTime::now_utc()).await,
        [Denial {
            grant: expired.grant_id,
            before: ended.unix_timestamp(),
        }],
        "{check}: deny list of an expired subscription"
    );
}

/// Times come back as they went in (to the millisecond): an expiry with nanoseconds, one far
/// ahead, the registry's own `created_at`, `updated_at` and `revoked_at`, through
/// `credentials` and `list` alike.
pub async fn timestamps_round_trip_to_the_millisecond(registry: &dyn SubscriptionRegistry) {
    let check = "timestamps_round_trip_to_the_millisecond";
    let product = "time-p";
    let near = OffsetDateTime::now_utc() + Duration::days(3) + Duration::nanoseconds(123_456_789);
    let far = time::macros::datetime!(2100-01-01 00:00:00.987_654_321 UTC);
    let mut subs = Vec::new();
    for (buyer, until) in [("time-near", near), ("time-far", far)] {
        let s = grant(check, registry, buyer, product, Some(until), "h").await;
        assert!(
            same_opt_time(s.expires_at, Some(until)),
            "{check}: grant answered expires_at {:?} for {until}",
            s.expires_at
        );
        subs.push(s);
    }
    let revoked = revoke(check, registry, "time-near", product).await;
    subs[0] = revoked;

    let listed = list(check, registry).await;
    for want in &subs {
        let (got, _) = stored(check, registry, &want.buyer, product).await;
        assert_same(check, "read back by credentials", &got, want);
        let found = listed
            .iter()
            .find(|l| l.buyer == want.buyer && l.product == product)
            .unwrap_or_else(|| panic!("{check}: list lacks {}", want.buyer));
        assert_same(check, "read back by list", found, want);
        assert_eq!(
            got.expires_at.map(OffsetDateTime::unix_timestamp),
            want.expires_at.map(OffsetDateTime::unix_timestamp),
            "{check}: expiry seconds"
        );
    }
}

/// Eight grants of the same new (buyer, product) in flight at once (polled together, so each
/// sends its first write before any answer is read) all succeed and answer the same
/// subscription: one grant id, one `created_at`; exactly one subscription results, holding one
/// of the eight hashes.
pub async fn concurrent_first_grants_end_with_one_subscription_and_one_grant_id(
    registry: &dyn SubscriptionRegistry,
) {
    let check = "concurrent_first_grants_end_with_one_subscription_and_one_grant_id";
    let (b, p) = ("race-b", "race-p");
    let results = tokio::join!(
        registry.grant(b, p, None, "race-h0"),
        registry.grant(b, p, None, "race-h1"),
        registry.grant(b, p, None, "race-h2"),
        registry.grant(b, p, None, "race-h3"),
        registry.grant(b, p, None, "race-h4"),
        registry.grant(b, p, None, "race-h5"),
        registry.grant(b, p, None, "race-h6"),
        registry.grant(b, p, None, "race-h7"),
    );
    let answers: Vec<Subscription> = [
        results.0, results.1, results.2, results.3, results.4, results.5, results.6, results.7,
    ]
    .into_iter()
    .enumerate()
    .map(|(i, r)| {
        r.unwrap_or_else(|e| {
            panic!("{check}: grant {i} failed: {e} (a lost first insert must become a renewal)")
        })
    })
    .collect();

    let (stored_sub, hash) = stored(check, registry, b, p).await;
    for (i, a) in answers.iter().enumerate() {
        assert_eq!(
            a.grant_id, stored_sub.grant_id,
            "{check}: grant {i} answered another grant id"
        );
        assert!(
            same_time(a.created_at, stored_sub.created_at),
            "{check}: grant {i} answered created_at {}, stored {}",
            a.created_at,
            stored_sub.created_at
        );
        assert_eq!(a.status, SubscriptionStatus::Active, "{check}: grant {i}");
        assert_eq!(a.revoked_at, None, "{check}: grant {i}");
    }
    assert!(
        (0..8).any(|i| hash == format!("race-h{i}")),
        "{check}: stored hash {hash:?} is none of the callers'"
    );
    let listed = list(check, registry).await;
    let ours = listed
        .iter()
        .filter(|s| s.buyer == b && s.product == p)
        .count();
    assert_eq!(ours, 1, "{check}: {ours} subscriptions of ({b}, {p})");
}

/// `swap` creates only where there is nothing, updates only over the subscription it was given
/// (by `updated_at`), stores every field but the secret hash, and gives a new subscription
/// [`NO_SECRET`].
pub async fn swap_stores_only_over_what_was_read(registry: &dyn SubscriptionRegistry) {
    let check = "swap_stores_only_over_what_was_read";
    let (b, p) = ("swap-b", "swap-p");
    let now = OffsetDateTime::now_utc();
    let ledger = vec![AgreementRecord {
        id: "agmt-swap".into(),
        step: AgreementStep::Created,
        event_at: now - Duration::days(1),
        until: Some(now + Duration::days(30)),
    }];
    let new = Subscription {
        buyer: b.into(),
        product: p.into(),
        grant_id: crate::subscriptions::new_grant_id().unwrap(),
        status: SubscriptionStatus::Active,
        expires_at: Some(now + Duration::days(30)),
        revoked_at: None,
        created_at: now,
        updated_at: now,
        agreements: ledger.clone(),
        hand_at: None,
    };
    assert!(
        registry.swap(None, &new).await.unwrap(),
        "{check}: a first swap over nothing must store"
    );
    assert!(
        !registry.swap(None, &new).await.unwrap(),
        "{check}: a swap over nothing must not store over an existing subscription"
    );
    let (got, hash) = stored(check, registry, b, p).await;
    assert_same(check, "after the first swap", &got, &new);
    assert_eq!(got.agreements, ledger, "{check}: the ledger round-trips");
    assert_eq!(got.hand_at, None, "{check}");
    assert_eq!(
        hash, NO_SECRET,
        "{check}: a subscription made by swap has no secret"
    );

    let mut revoked = got.clone();
    revoked.status = SubscriptionStatus::Revoked;
    revoked.revoked_at = Some(now + Duration::seconds(1));
    revoked.expires_at = None;
    revoked.updated_at = now + Duration::seconds(1);
    assert!(
        registry.swap(Some(&got), &revoked).await.unwrap(),
        "{check}"
    );
    let mut stale = got.clone();
    stale.status = SubscriptionStatus::Active;
    stale.updated_at = now + Duration::seconds(2);
    assert!(
        !registry.swap(Some(&got), &stale).await.unwrap(),
        "{check}: a swap over a subscription changed since it was read must not store"
    );
    let (after, _) = stored(check, registry, b, p).await;
    assert_same(check, "after the second swap", &after, &revoked);

    // A hand grant keeps the ledger and its hash replaces NO_SECRET.
    let renewed = grant(check, registry, b, p, None, "swap-h").await;
    assert_eq!(
        renewed.agreements, ledger,
        "{check}: a hand grant keeps the ledger"
    );
    assert!(
        renewed.hand_at.is_some(),
        "{check}: a hand grant sets hand_at"
    );
    let (_, hash) = stored(check, registry, b, p).await;
    assert_eq!(hash, "swap-h", "{check}");
}

/// AWS's published `Purchase Agreement Created - Manufacturer` example, with this time, buyer
/// and agreement (Seller Guide, "Amazon EventBridge events", "Events for agreements").
pub fn created_event(time: &str, buyer: &str, agreement: &str, end: &str) -> serde_json::Value {
    serde_json::json!({
      "version": "0",
      "id": format!("created-{agreement}-{time}"),
      "detail-type": "Purchase Agreement Created - Manufacturer",
      "source": "aws.agreement-marketplace",
      "account": "123456789012",
      "time": time,
      "region": "us-east-1",
      "resources": [format!("arn:aws:aws-marketplace::aws:agreement:{agreement}")],
      "detail": {
        "requestId": "3d4c9f9b-b809-4f5e-9fac-a9ae98b05cbb",
        "catalog": "AWSMarketplace",
        "agreement": {
          "id": agreement,
          "intent": "NEW",
          "status": "ACTIVE",
          "acceptanceTime": time,
          "startTime": time,
          "endTime": end
        },
        "resaleAuthorization": { "id": "resaleauthz-yaxjqxiskysxa" },
        "acceptor": { "accountId": buyer },
        "proposer": { "accountId": "123456512334" },
        "offer": { "id": "offer-1234567890123" }
      }
    })
}

/// AWS's published `Purchase Agreement Ended - Manufacturer` example, with this time, buyer,
/// agreement and status.
pub fn ended_event(time: &str, buyer: &str, agreement: &str, status: &str) -> serde_json::Value {
    serde_json::json!({
      "version": "0",
      "id": format!("ended-{agreement}-{time}"),
      "detail-type": "Purchase Agreement Ended - Manufacturer",
      "source": "aws.agreement-marketplace",
      "account": "123456789012",
      "time": time,
      "region": "us-east-1",
      "resources": [format!("arn:aws:aws-marketplace::aws:agreement:{agreement}")],
      "detail": {
        "requestId": "3d4c9f9b-b809-4f5e-9fac-a9ae98b05cbb",
        "catalog": "AWSMarketplace",
        "agreement": { "id": agreement, "status": status },
        "resaleAuthorization": { "id": "resaleauthz-yaxjqxiskysxa" },
        "acceptor": { "accountId": buyer },
        "proposer": { "accountId": "123456512334" },
        "offer": { "id": "offer-1234567890123" }
      }
    })
}

fn agreement_event(check: &str, v: &serde_json::Value) -> AgreementEvent {
    match parse_event(v) {
        Ok(ParsedEvent::Agreement(e)) => e,
        other => panic!("{check}: {v} did not parse as an agreement event: {other:?}"),
    }
}

/// Created, then ended, then the created event again (a late duplicate): granted, revoked,
/// and still revoked; an end arriving before its creation keeps the buyer out.
pub async fn agreement_events_grant_and_revoke_and_a_late_duplicate_changes_nothing(
    registry: &dyn SubscriptionRegistry,
) {
    let check = "agreement_events_grant_and_revoke_and_a_late_duplicate_changes_nothing";
    let (b, p) = ("111100002222", "agreement-p");
    let created = created_event("2026-01-01T00:00:00Z", b, "agmt-c1", "2126-01-01T00:00:00Z");
    let ended = ended_event("2026-02-01T00:00:00Z", b, "agmt-c1", "CANCELLED");
    let apply = |v: serde_json::Value| async move {
        crate::agreements::apply(registry, &agreement_event(check, &v), p)
            .await
            .unwrap_or_else(|e| panic!("{check}: applying {v} failed: {e}"))
    };
    assert_eq!(apply(created.clone()).await, Outcome::Granted, "{check}");
    let (s, hash) = stored(check, registry, b, p).await;
    assert!(s.is_active(OffsetDateTime::now_utc()), "{check}: {s:?}");
    assert_eq!(s.expires_at.map(|t| t.year()), Some(2126), "{check}");
    assert_eq!(
        hash, NO_SECRET,
        "{check}: an agreement's grant has no secret"
    );
    assert!(
        matches!(apply(created.clone()).await, Outcome::Skipped(_)),
        "{check}"
    );
    assert_eq!(apply(ended.clone()).await, Outcome::Revoked, "{check}");
    assert!(
        matches!(apply(created).await, Outcome::Skipped(_)),
        "{check}: late duplicate"
    );
    assert!(
        matches!(apply(ended).await, Outcome::Skipped(_)),
        "{check}: duplicate end"
    );
    let (s, _) = stored(check, registry, b, p).await;
    assert_eq!(s.status, SubscriptionStatus::Revoked, "{check}");
    let denied = denials(check, registry, p, OffsetDateTime::now_utc()).await;
    assert!(
        denied.iter().any(|d| d.grant == s.grant_id),
        "{check}: the revoked grant is on the deny list: {denied:?}"
    );

    let b2 = "111100003333";
    let early_end = ended_event("2026-02-01T00:00:00Z", b2, "agmt-c2", "CANCELLED");
    let late_start = created_event(
        "2026-01-01T00:00:00Z",
        b2,
        "agmt-c2",
        "2126-01-01T00:00:00Z",
    );
    assert!(
        matches!(apply(early_end).await, Outcome::Recorded(_)),
        "{check}"
    );
    assert!(
        matches!(apply(late_start).await, Outcome::Skipped(_)),
        "{check}"
    );
    let (s, _) = stored(check, registry, b2, p).await;
    assert_eq!(
        s.status,
        SubscriptionStatus::Revoked,
        "{check}: end before start"
    );
}

/// A hand revoke outranks an older agreement event (replayed from a file, say); a newer
/// agreement event outranks an older hand change; a hand grant keeps the ledger.
pub async fn hand_changes_and_agreement_events_live_side_by_side(
    registry: &dyn SubscriptionRegistry,
) {
    let check = "hand_changes_and_agreement_events_live_side_by_side";
    let (b, p) = ("111100004444", "agreement-hand-p");
    grant(check, registry, b, p, None, "hand-h").await;
    revoke(check, registry, b, p).await;
    let old = created_event("2026-01-01T00:00:00Z", b, "agmt-h1", "2126-01-01T00:00:00Z");
    let outcome = crate::agreements::apply(registry, &agreement_event(check, &old), p)
        .await
        .unwrap();
    assert!(
        matches!(outcome, Outcome::Recorded(_)),
        "{check}: {outcome:?}"
    );
    let (s, hash) = stored(check, registry, b, p).await;
    assert_eq!(
        s.status,
        SubscriptionStatus::Revoked,
        "{check}: the hand revoke stands"
    );
    assert_eq!(s.agreements.len(), 1, "{check}: the event is in the ledger");
    assert_eq!(hash, "hand-h", "{check}: the buyer's own secret is kept");

    let newer = created_event("2126-01-01T00:00:00Z", b, "agmt-h2", "2127-01-01T00:00:00Z");
    let outcome = crate::agreements::apply(registry, &agreement_event(check, &newer), p)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        Outcome::Granted,
        "{check}: a newer agreement grants"
    );
    let (s, _) = stored(check, registry, b, p).await;
    assert_eq!(s.status, SubscriptionStatus::Active, "{check}");
    assert_eq!(s.agreements.len(), 2, "{check}");
}
